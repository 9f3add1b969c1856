//! The algorithm table: every JWS algorithm authgate verifies, by name, and which kind of key
//! may verify each. Config, JWKS parsing and token verification all read this one table, so
//! they cannot disagree; `none` is not in it and never will be.

use jsonwebtoken::Algorithm;

/// Every algorithm authgate verifies, by its JWS name (RFC 7518). `none` is not among them.
const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
];

/// Every algorithm of the table.
pub const ALL: [Algorithm; 12] = {
    let mut all = [Algorithm::HS256; 12];
    let mut i = 0;
    while i < ALGORITHMS.len() {
        all[i] = ALGORITHMS[i].1;
        i += 1;
    }
    all
};

/// The algorithm with this exact (case-sensitive) JWS name.
pub fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, alg)| *alg)
}

pub fn algorithm_name(alg: Algorithm) -> &'static str {
    // Algorithms outside the table are never in an allowlist, so their empty name matches nothing.
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("", |(name, _)| name)
}

/// What a key is, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::EcP256, ES256)
                | (KeyKind::EcP384, ES384)
                | (KeyKind::Ed25519, EdDSA)
                | (KeyKind::Hmac, HS256 | HS384 | HS512)
        )
    }
}
