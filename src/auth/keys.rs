//! Signing keys: one JWK (or a configured secret) parsed once into a verification key, and a
//! key set that selects a key by the token's `kid`. A key must fit the algorithm the provider
//! allows (type, curve, size, the JWK's own `alg` and `use`); nothing here fetches anything.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::auth::algorithms::{algorithm_from_name, KeyKind};

pub struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: the token's `alg` must then equal it.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    /// The key parsed once, for each algorithm it may verify: a signature check then starts
    /// from parsed key material instead of re-parsing the JWK's components every time.
    pub parsed: Vec<(Algorithm, ParsedPublicKey)>,
    /// Identifies the key material, so a cached verification is dropped when its key goes.
    pub fingerprint: [u8; 32],
}

/// aws-lc's verifier for a JWS algorithm; `None` for HMAC, which is not a public-key check.
fn verifier(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    use aws_lc_rs::signature as sig;
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    })
}

/// DER of a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`), the form aws-lc parses.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(value: &[u8], out: &mut Vec<u8>) {
        let value = &value[value.iter().take_while(|&&b| b == 0).count()..];
        let pad = value.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        length(value.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(n, &mut body);
    integer(e, &mut body);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    length(body.len(), &mut der);
    der.extend_from_slice(&body);
    der
}

/// Parses `public` once for every algorithm the key may verify. A parse aws-lc refuses only
/// leaves that algorithm to the slower path, which then refuses or accepts as before.
fn parse_for(
    kind: KeyKind,
    only: Option<Algorithm>,
    public: &[u8],
) -> Vec<(Algorithm, ParsedPublicKey)> {
    crate::auth::algorithms::ALL
        .iter()
        .copied()
        .filter(|alg| kind.fits(*alg) && only.is_none_or(|own| own == *alg))
        .filter_map(|alg| {
            let parsed = ParsedPublicKey::new(verifier(alg)?, public).ok()?;
            Some((alg, parsed))
        })
        .collect()
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        VerifyKey {
            kid: None,
            kind: KeyKind::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
            parsed: Vec::new(),
            fingerprint: sha256(&[b"oct", secret]),
        }
    }
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// How a token's `kid` resolved against a key set.
pub enum Selection {
    Found(Arc<VerifyKey>),
    UnknownKid,
    /// No `kid` in the token and more than one key to choose from.
    MissingKid,
    /// The key exists but its type or `alg` does not fit the token's algorithm.
    Mismatch,
}

#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<String, Vec<usize>>,
}

/// The smallest RSA modulus accepted (RFC 7518 §3.3 requires 2048 bits).
const MIN_RSA_MODULUS_BITS: usize = 2048;

impl KeySet {
    pub fn single(key: VerifyKey) -> Self {
        KeySet {
            keys: vec![Arc::new(key)],
            by_kid: HashMap::new(),
        }
    }

    /// Parses a JWK Set. Keys that are not usable for signature verification (encryption keys,
    /// unknown types or curves, short RSA moduli, bad encodings) are skipped, not fatal.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let document: Value =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut set = KeySet {
            keys: Vec::new(),
            by_kid: HashMap::new(),
        };
        for jwk in keys {
            match parse_jwk(jwk) {
                Ok(key) => {
                    if let Some(kid) = &key.kid {
                        set.by_kid
                            .entry(kid.clone())
                            .or_default()
                            .push(set.keys.len());
                    }
                    set.keys.push(Arc::new(key));
                }
                Err(why) => tracing::debug!(why, "skipping a JWKS key"),
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        let candidates: Vec<&Arc<VerifyKey>> = match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(indices) => indices.iter().map(|&i| &self.keys[i]).collect(),
                None => return Selection::UnknownKid,
            },
            None if self.keys.len() == 1 => vec![&self.keys[0]],
            None if self.keys.is_empty() => return Selection::UnknownKid,
            None => return Selection::MissingKid,
        };
        match candidates.into_iter().find(|key| key.fits(alg)) {
            Some(key) => Selection::Found(key.clone()),
            None => Selection::Mismatch,
        }
    }

    pub fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| &k.fingerprint == fingerprint)
    }
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("key has no string \"{name}\""))
}

fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    if let Some(usage) = jwk.get("use") {
        if usage.as_str() != Some("sig") {
            return Err("key \"use\" is not \"sig\"".into());
        }
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            Some(algorithm_from_name(name).ok_or_else(|| format!("unsupported key alg {name:?}"))?)
        }
        Some(_) => return Err("key \"alg\" is not a string".into()),
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("key \"kid\" is not a string".into()),
    };
    let decode = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(member(jwk, name)?)
            .map_err(|_| format!("key member \"{name}\" is not base64url"))
    };
    let kty = member(jwk, "kty")?;
    let public: Vec<u8>;
    let (kind, key, fingerprint) = match kty {
        "RSA" => {
            let n = decode("n")?;
            let e = decode("e")?;
            let significant: Vec<u8> = n.iter().copied().skip_while(|&b| b == 0).collect();
            let bits = significant.len() * 8
                - significant
                    .first()
                    .map_or(0, |b| b.leading_zeros() as usize);
            if bits < MIN_RSA_MODULUS_BITS {
                return Err(format!("RSA modulus of {bits} bits is too short"));
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            public = rsa_public_key_der(&n, &e);
            (KeyKind::Rsa, key, sha256(&[b"RSA", &n, &e]))
        }
        "EC" => {
            let (kind, size) = match member(jwk, "crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let x = decode("x")?;
            let y = decode("y")?;
            if x.len() != size || y.len() != size {
                return Err("EC point has the wrong size for its curve".into());
            }
            let key = DecodingKey::from_ec_components(member(jwk, "x")?, member(jwk, "y")?)
                .map_err(|e| format!("bad EC key: {e}"))?;
            // SEC 1 uncompressed point.
            public = [&[0x04], x.as_slice(), y.as_slice()].concat();
            (kind, key, sha256(&[b"EC", &x, &y]))
        }
        "OKP" => {
            if member(jwk, "crv")? != "Ed25519" {
                return Err("unsupported OKP curve".into());
            }
            let x = decode("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key has the wrong size".into());
            }
            let key = DecodingKey::from_ed_components(member(jwk, "x")?)
                .map_err(|e| format!("bad OKP key: {e}"))?;
            public = x.clone();
            (KeyKind::Ed25519, key, sha256(&[b"OKP", &x]))
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg {
        if !kind.fits(alg) {
            return Err(format!("key alg {alg:?} does not fit its kty"));
        }
    }
    let parsed = parse_for(kind, alg, &public);
    Ok(VerifyKey {
        kid,
        kind,
        alg,
        key,
        parsed,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(bits: usize, extra: Value) -> Value {
        // Not a real key: parsing only checks structure and size.
        let mut n = vec![0xff_u8; bits.div_ceil(8)];
        if bits % 8 != 0 {
            n[0] = 0xff >> (8 - bits % 8);
        }
        let mut jwk = json!({"kty": "RSA", "n": b64(&n), "e": b64(&[1, 0, 1])});
        for (k, v) in extra.as_object().into_iter().flatten() {
            jwk[k] = v.clone();
        }
        jwk
    }

    fn parsed(keys: Vec<Value>) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).expect("a JWKS")
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let ec = json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32]), "kid": "ec"});
        let set = parsed(vec![
            rsa(2048, json!({"kid": "ok"})),
            rsa(2047, json!({"kid": "short"})),
            rsa(2048, json!({"kid": "enc", "use": "enc"})),
            rsa(2048, json!({"kid": "ops", "key_ops": ["encrypt"]})),
            rsa(2048, json!({"kid": "wrong-alg", "alg": "ES256"})),
            rsa(2048, json!({"kid": 5})),
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
            json!({"kty": "EC", "crv": "P-521", "x": b64(&[1; 66]), "y": b64(&[1; 66])}),
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[2; 32])}),
            ec,
        ]);
        assert_eq!(set.len(), 2);
        assert!(matches!(
            set.select(Some("ok"), Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("ok"), Algorithm::PS512),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("ok"), Algorithm::ES256),
            Selection::Mismatch
        ));
        assert!(matches!(
            set.select(Some("ec"), Algorithm::ES384),
            Selection::Mismatch
        ));
        assert!(matches!(
            set.select(Some("short"), Algorithm::RS256),
            Selection::UnknownKid
        ));
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::MissingKid
        ));
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    #[test]
    fn key_alg_must_equal_the_token_alg() {
        let set = parsed(vec![rsa(2048, json!({"alg": "RS256"}))]);
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(None, Algorithm::RS512),
            Selection::Mismatch
        ));
        // The only key serves tokens without a kid; a token naming a kid needs a key of that kid.
        assert!(matches!(
            set.select(Some("any"), Algorithm::RS256),
            Selection::UnknownKid
        ));
    }

    #[test]
    fn public_keys_are_parsed_once_and_verify_real_signatures() {
        use crate::demo::issuer::SigningKey;
        for alg in [
            Algorithm::RS256,
            Algorithm::PS384,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let signer = SigningKey::generate(alg, Some("k")).expect("a key");
            // Without `alg` on the JWK, every algorithm of its kind is parsed.
            let key = parse_jwk(&signer.public_jwk(false).expect("a public half")).expect("a key");
            assert!(
                key.parsed.iter().any(|(a, _)| *a == alg),
                "{alg:?} was not parsed"
            );
            let token = signer.token(&json!({"sub": "x"}));
            let (input, signature) = token.rsplit_once('.').expect("three parts");
            let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
            let (_, parsed) = key
                .parsed
                .iter()
                .find(|(a, _)| *a == alg)
                .expect("parsed for alg");
            assert!(
                parsed.verify_sig(input.as_bytes(), &signature).is_ok(),
                "{alg:?}"
            );
            let mut tampered = signature.clone();
            tampered[0] ^= 1;
            assert!(
                parsed.verify_sig(input.as_bytes(), &tampered).is_err(),
                "{alg:?}"
            );
        }
    }
}
