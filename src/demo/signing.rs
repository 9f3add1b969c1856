//! Signing keys for the demo issuer: ephemeral key pairs for every supported algorithm (and
//! HMAC secrets), their public JWKs, and a signer that writes whatever header and payload text
//! it is given, so tests can also craft tokens no honest issuer would produce. Nothing here
//! verifies a token for the gateway; `verify` only lets the demo IdP recognise its own tokens.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A private key with its algorithm and `kid`.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    signer: Signer,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh key for `alg`. HMAC algorithms get a random secret of the hash's length.
    pub fn generate(alg: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        use Algorithm::*;
        let failed = |_| format!("cannot generate a {alg:?} key");
        let signer = match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?)
            }
            ES256 => Signer::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(failed)?,
            ),
            ES384 => Signer::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(failed)?,
            ),
            EdDSA => Signer::Ed(Ed25519KeyPair::generate().map_err(failed)?),
            HS256 | HS384 | HS512 => {
                let len = match alg {
                    HS384 => 48,
                    HS512 => 64,
                    _ => 32,
                };
                let mut secret = vec![0u8; len];
                aws_lc_rs::rand::fill(&mut secret).map_err(failed)?;
                Signer::Hmac(secret)
            }
            _ => return Err(format!("{alg:?} is not supported")),
        };
        Ok(SigningKey {
            alg,
            kid: kid.map(str::to_string),
            signer,
        })
    }

    /// An HMAC key with a given secret (a provider's `secret` is text, so tests choose it).
    pub fn hmac(alg: Algorithm, secret: &[u8], kid: Option<&str>) -> Self {
        SigningKey {
            alg,
            kid: kid.map(str::to_string),
            signer: Signer::Hmac(secret.to_vec()),
        }
    }

    /// The public JWK (with `kid`, `alg` and `use` when `annotate`); `None` for HMAC.
    pub fn public_jwk(&self, annotate: bool) -> Option<Value> {
        let mut jwk = match &self.signer {
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = if size == 32 { "P-256" } else { "P-384" };
                json!({ "kty": "EC", "crv": crv, "x": b64(&point[1..=size]), "y": b64(&point[1 + size..]) })
            }
            Signer::Ed(pair) => {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()) })
            }
            Signer::Hmac(_) => return None,
        };
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        if annotate {
            jwk["alg"] = json!(crate::auth::algorithms::algorithm_name(self.alg));
            jwk["use"] = json!("sig");
        }
        Some(jwk)
    }

    /// Signs `header.payload` given as JSON texts (written as given, so they may be unusual).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let signature = self.signature(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }

    fn signature(&self, message: &[u8]) -> Vec<u8> {
        use Algorithm::*;
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    RS384 => &signature::RSA_PKCS1_SHA384,
                    RS512 => &signature::RSA_PKCS1_SHA512,
                    PS256 => &signature::RSA_PSS_SHA256,
                    PS384 => &signature::RSA_PSS_SHA384,
                    PS512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                // Signing with a freshly generated key into a correctly sized buffer cannot fail.
                let _ = pair.sign(padding, &rng, message, &mut out);
                out
            }
            Signer::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let algorithm = match self.alg {
                    HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(algorithm, secret), message)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// The standard header for this key: `alg`, `typ`, and `kid` when the key has one.
    pub fn header(&self, typ: &str) -> Value {
        let mut header =
            json!({ "alg": crate::auth::algorithms::algorithm_name(self.alg), "typ": typ });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        header
    }

    /// A token with the standard header and the given claims.
    pub fn token(&self, claims: &Value) -> String {
        self.sign_raw(&self.header("JWT").to_string(), &claims.to_string())
    }
    /// The claims of `token` when this key signed it (header `alg` must be this key's); claims
    /// are not checked here, so an expired token of ours is still recognised as ours.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (message, signature) = token.rsplit_once('.')?;
        let (header, payload) = message.split_once('.')?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header["alg"].as_str() != Some(crate::auth::algorithms::algorithm_name(self.alg)) {
            return None;
        }
        let key = match &self.signer {
            Signer::Hmac(secret) => jsonwebtoken::DecodingKey::from_secret(secret),
            _ => {
                let jwk = serde_json::from_value(self.public_jwk(false)?).ok()?;
                jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()?
            }
        };
        if !jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, self.alg)
            .unwrap_or(false)
        {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// OIDC's `at_hash`/`c_hash` of `value`: the left half of the hash matching this key's
    /// algorithm (SHA-512 for EdDSA), base64url.
    pub fn half_hash(&self, value: &str) -> String {
        use aws_lc_rs::digest;
        use Algorithm::*;
        let algorithm = match self.alg {
            RS384 | PS384 | ES384 | HS384 => &digest::SHA384,
            RS512 | PS512 | HS512 | EdDSA => &digest::SHA512,
            _ => &digest::SHA256,
        };
        let hash = digest::digest(algorithm, value.as_bytes());
        let bytes = hash.as_ref();
        b64(&bytes[..bytes.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_recognises_its_own_tokens_and_nothing_else() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::HS256,
        ] {
            let key = SigningKey::generate(alg, Some("k")).expect("a key");
            let other = SigningKey::generate(alg, Some("k")).expect("a key");
            let token = key.token(&json!({"sub": "a"}));
            assert_eq!(key.verify(&token), Some(json!({"sub": "a"})), "{alg:?}");
            assert_eq!(other.verify(&token), None, "{alg:?}");
            let (input, _) = token.rsplit_once('.').expect("three parts");
            assert_eq!(key.verify(&format!("{input}.")), None, "{alg:?}");
        }
        let es = SigningKey::generate(Algorithm::ES256, None).expect("a key");
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"a"}"#));
        assert_eq!(es.verify(&none), None);
    }
}
