//! Unguessable values for the login flow: random tokens (`state`, `nonce`) and the PKCE pair
//! (RFC 7636, `S256` only). Everything comes from the system CSPRNG; when it fails, this step
//! fails, and never falls back to anything predictable. Verifiers never reach `Debug` or logs.

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The only PKCE method the gateway sends; `plain` protects nothing.
pub const CHALLENGE_METHOD: &str = "S256";

/// Random bytes behind a verifier: 32, which encodes to 43 characters, RFC 7636's minimum.
const VERIFIER_BYTES: usize = 32;

/// The system random generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomUnavailable;

impl RandomUnavailable {
    pub fn reason(&self) -> &'static str {
        "randomness_unavailable"
    }
}

impl std::fmt::Display for RandomUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the system random generator failed")
    }
}

impl std::error::Error for RandomUnavailable {}

/// `bytes` random bytes from the CSPRNG in base64url without padding.
pub fn random_token(bytes: usize) -> Result<String, RandomUnavailable> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| RandomUnavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A PKCE verifier and its `S256` challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkce {
    /// Sent only in the token request, from the gateway to the IdP.
    pub verifier: String,
    /// Sent in the authorization URL, with `code_challenge_method=S256`.
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &"<redacted>")
            .field("challenge", &self.challenge)
            .finish()
    }
}

impl Pkce {
    /// A fresh pair: 32 random bytes as a 43-character verifier.
    pub fn generate() -> Result<Pkce, RandomUnavailable> {
        Ok(Pkce::from_verifier(random_token(VERIFIER_BYTES)?))
    }

    /// The pair for a known verifier (from the login-state cookie, or a test vector).
    pub fn from_verifier(verifier: String) -> Pkce {
        let challenge = challenge_for(&verifier);
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))`, RFC 7636 §4.2.
pub fn challenge_for(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_pairs() {
        let a = Pkce::generate().unwrap();
        let b = Pkce::generate().unwrap();
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(a.verifier.len(), 43);
        assert_eq!(a.challenge.len(), 43);
        assert_eq!(a.challenge, challenge_for(&a.verifier));
        // RFC 7636 §4.1: unreserved characters only.
        assert!(a
            .verifier
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')));
        assert!(!format!("{a:?}").contains(&a.verifier));
    }

    #[test]
    fn tokens() {
        assert_eq!(random_token(32).unwrap().len(), 43);
        assert_eq!(random_token(16).unwrap().len(), 22);
        assert_eq!(random_token(0).unwrap(), "");
        assert_ne!(random_token(32).unwrap(), random_token(32).unwrap());
        assert_eq!(RandomUnavailable.reason(), "randomness_unavailable");
    }
}
