//! JWT verification (RFC 7519, RFC 7515, RFC 8725): `token → VerifiedToken` or a precise reason.
//!
//! Everything that decides validity comes from the provider's config, never from the token: the
//! algorithm must be in the provider's allowlist, the key is chosen by `kid` among the provider's
//! keys and must fit the algorithm, and header fields that point elsewhere (`jku`, `x5u`, `jwk`,
//! `x5c`) are never followed. Header and claims are parsed strictly (duplicate member names,
//! wrong claim types and unknown `crit` are refused). This step never logs a token.

use std::sync::Arc;

use serde_json::{Map, Value};

/// A token that passed every check of its provider.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The provider's configured name.
    pub provider: Arc<str>,
    pub issuer: Arc<str>,
    pub subject: Option<String>,
    pub jti: Option<String>,
    /// The `kid` of the key that verified the signature, if the key had one.
    pub kid: Option<String>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub not_before: Option<i64>,
    /// Every claim, for policy and identity headers.
    pub claims: Arc<Map<String, Value>>,
}
