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
    /// The OpenID Connect session id (`sid`): which IdP login session the token belongs to, so
    /// one denylist entry can revoke every token and gateway session of that login.
    pub sid: Option<Box<str>>,
    /// The `kid` of the key that verified the signature, if the key had one.
    pub kid: Option<String>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub not_before: Option<i64>,
    /// Every claim, for policy and identity headers.
    pub claims: Arc<Map<String, Value>>,
}

impl VerifiedToken {
    /// A token with these claims, as if verified, for unit tests of the steps after verification.
    #[cfg(test)]
    pub(crate) fn with_claims(claims: Value) -> Self {
        let Value::Object(map) = claims else {
            panic!("claims must be an object")
        };
        VerifiedToken {
            provider: Arc::from("test"),
            issuer: Arc::from("https://issuer.example"),
            subject: map.get("sub").and_then(Value::as_str).map(String::from),
            jti: None,
            sid: map.get("sid").and_then(Value::as_str).map(Box::from),
            kid: None,
            issued_at: None,
            expires_at: None,
            not_before: None,
            claims: Arc::new(map),
        }
    }
}

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use prometheus::IntCounter;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::auth::algorithms::algorithm_name;
use crate::auth::jwks::{JwksCache, KeyError};
use crate::auth::keys::{KeySet, VerifyKey};

/// Why a token was refused. Each maps to one stable `reason` and one fixed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    TooLarge,
    DuplicateMember,
    AlgNone,
    AlgorithmNotAllowed,
    UnsupportedCrit,
    UnknownIssuer,
    ProviderNotAccepted,
    TypMismatch,
    UnknownKid,
    MissingKid,
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingClaim(&'static str),
    InvalidClaimType(&'static str),
    AudienceMismatch,
    MissingRequiredClaim,
}

/// The verification rules in the order [`Verifier::verify`] applies them; a failure names
/// its rule through [`TokenError::rule`], so `authgate explain` can say which passed.
pub const RULES: [&str; 12] = [
    "size within max_token_bytes",
    "three base64url JSON segments, no duplicate members, kid a short string",
    "alg is not \"none\"",
    "no critical header extensions (crit)",
    "iss names a configured provider",
    "the route accepts that provider",
    "alg is in the provider's allowlist",
    "typ matches the provider's",
    "a key chosen by kid that fits the algorithm",
    "signature",
    "claims: types, exp present, aud, required claims",
    "times: exp, nbf, iat within leeway",
];

impl TokenError {
    /// The index in [`RULES`] of the rule this error breaks.
    pub fn rule(&self) -> usize {
        match self {
            TokenError::TooLarge => 0,
            TokenError::Malformed | TokenError::DuplicateMember => 1,
            TokenError::AlgNone => 2,
            TokenError::UnsupportedCrit => 3,
            TokenError::UnknownIssuer
            | TokenError::MissingClaim("iss")
            | TokenError::InvalidClaimType("iss") => 4,
            TokenError::ProviderNotAccepted => 5,
            TokenError::AlgorithmNotAllowed => 6,
            TokenError::TypMismatch => 7,
            TokenError::UnknownKid | TokenError::MissingKid | TokenError::KeyMismatch => 8,
            TokenError::BadSignature => 9,
            TokenError::MissingClaim(_)
            | TokenError::InvalidClaimType(_)
            | TokenError::AudienceMismatch
            | TokenError::MissingRequiredClaim => 10,
            TokenError::Expired | TokenError::NotYetValid | TokenError::IssuedInFuture => 11,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::TooLarge => "token_too_large",
            TokenError::DuplicateMember => "duplicate_member",
            TokenError::AlgNone => "alg_none",
            TokenError::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenError::UnsupportedCrit => "unsupported_crit",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::ProviderNotAccepted => "provider_not_accepted",
            TokenError::TypMismatch => "typ_mismatch",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::MissingKid => "missing_kid",
            TokenError::KeyMismatch => "key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::MissingClaim(_) | TokenError::MissingRequiredClaim => "missing_claim",
            TokenError::InvalidClaimType(_) => "invalid_claim_type",
            TokenError::AudienceMismatch => "audience_mismatch",
        }
    }

    /// The RFC 6750 `error_description`: fixed, short, and free of token content.
    pub fn description(self) -> &'static str {
        match self {
            TokenError::Expired => "The access token expired",
            TokenError::NotYetValid | TokenError::IssuedInFuture => {
                "The access token is not valid yet"
            }
            TokenError::AudienceMismatch => "The access token is not meant for this service",
            TokenError::UnknownIssuer | TokenError::ProviderNotAccepted => {
                "The access token issuer is not accepted here"
            }
            _ => "The access token is invalid",
        }
    }

    /// The claim involved, for the log line.
    pub fn claim(self) -> Option<&'static str> {
        match self {
            TokenError::MissingClaim(name) | TokenError::InvalidClaimType(name) => Some(name),
            _ => None,
        }
    }
}

/// Why verification could not decide: keys were not available (a 503, not a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    Token(TokenError),
    KeysUnavailable,
}

impl From<TokenError> for VerifyError {
    fn from(error: TokenError) -> Self {
        VerifyError::Token(error)
    }
}

/// Where a provider's keys come from.
pub enum ProviderKeys {
    Jwks(Arc<JwksCache>),
    /// A configured HMAC secret: one key, whatever `kid` the token names.
    Secret(Arc<KeySet>),
    /// A key set given whole and chosen from by `kid` exactly as a fetched JWKS is: what
    /// `authgate explain --jwks FILE` uses instead of fetching.
    Fixed(Arc<KeySet>),
}

/// A configured token issuer, validated.
pub struct Provider {
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    pub require_exp: bool,
    /// Lower-case, without an `application/` prefix.
    pub typ: Option<String>,
    pub keys: ProviderKeys,
    /// Changes whenever anything that decides validity changes; cached verifications of
    /// another fingerprint are not trusted.
    pub fingerprint: [u8; 32],
}

impl Provider {
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, VerifyError> {
        let selected = match &self.keys {
            ProviderKeys::Secret(set) => match set.select(None, alg) {
                crate::auth::keys::Selection::Found(key) => Ok(key),
                _ => Err(KeyError::Mismatch),
            },
            ProviderKeys::Fixed(set) => match set.select(kid, alg) {
                crate::auth::keys::Selection::Found(key) => Ok(key),
                crate::auth::keys::Selection::UnknownKid => Err(KeyError::UnknownKid),
                crate::auth::keys::Selection::MissingKid => Err(KeyError::MissingKid),
                crate::auth::keys::Selection::Mismatch => Err(KeyError::Mismatch),
            },
            ProviderKeys::Jwks(cache) => cache.key_for(kid, alg).await,
        };
        selected.map_err(|error| match error {
            KeyError::UnknownKid => VerifyError::Token(TokenError::UnknownKid),
            KeyError::MissingKid => VerifyError::Token(TokenError::MissingKid),
            KeyError::Mismatch => VerifyError::Token(TokenError::KeyMismatch),
            KeyError::Unavailable => VerifyError::KeysUnavailable,
        })
    }

    fn still_has_key(&self, fingerprint: &[u8; 32]) -> bool {
        match &self.keys {
            ProviderKeys::Secret(set) | ProviderKeys::Fixed(set) => set.contains(fingerprint),
            ProviderKeys::Jwks(cache) => {
                cache.usable().is_some_and(|set| set.contains(fingerprint))
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        match &self.keys {
            ProviderKeys::Secret(_) | ProviderKeys::Fixed(_) => true,
            ProviderKeys::Jwks(cache) => cache.is_ready(),
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    token: Arc<VerifiedToken>,
    provider_fingerprint: [u8; 32],
    key_fingerprint: [u8; 32],
    ttl: Duration,
}

const MAX_KID_BYTES: usize = 256;

/// The longest a verified token stays cached, even with a distant (or no) `exp`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

/// Remembered expired tokens: a bound of their own, so a burst of stale tokens cannot evict
/// the verified ones.
const MAX_EXPIRED_ENTRIES: u64 = 10_000;

struct CacheExpiry;

impl moka::Expiry<[u8; 32], CachedToken> for CacheExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &CachedToken,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Every provider, the issuer index, and the verified-token cache.
pub struct Verifier {
    providers: Vec<Arc<Provider>>,
    by_issuer: HashMap<Arc<str>, usize>,
    cache: moka::sync::Cache<[u8; 32], CachedToken>,
    /// Tokens whose signature held but which had expired, by hash, with the fingerprint of the
    /// provider that judged them. Expiry never reverts, so a client retrying a stale token (a
    /// common failure loop) is refused without another signature check; only a token that
    /// passed the signature check can get in, so forged strings cannot fill it.
    expired: moka::sync::Cache<[u8; 32], [u8; 32]>,
    cache_entries: u64,
    max_token_bytes: usize,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
}

/// Which providers a route accepts, by index into the verifier's providers.
pub type Accepted = [usize];

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Verifier {
    /// `previous` is the verifier a reload replaces: its token cache is kept when its size is
    /// unchanged. That is safe because every hit is re-checked against the provider's current
    /// fingerprint and key set, so an entry from a changed provider is never used.
    pub fn new(
        providers: Vec<Arc<Provider>>,
        max_token_bytes: usize,
        cache_entries: u64,
        previous: Option<&Verifier>,
        cache_hits: IntCounter,
        cache_misses: IntCounter,
    ) -> Self {
        let by_issuer = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.issuer.clone(), i))
            .collect();
        let cache = match previous {
            Some(previous) if previous.cache_entries == cache_entries => previous.cache.clone(),
            _ => moka::sync::Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(CacheExpiry)
                .build(),
        };
        let expired = match previous {
            Some(previous) if previous.cache_entries == cache_entries => previous.expired.clone(),
            _ => moka::sync::Cache::builder()
                .max_capacity(cache_entries.min(MAX_EXPIRED_ENTRIES))
                .time_to_live(MAX_CACHE_TTL)
                .build(),
        };
        Verifier {
            providers,
            by_issuer,
            cache,
            expired,
            cache_entries,
            max_token_bytes,
            cache_hits,
            cache_misses,
        }
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| &*p.name == name)
    }

    /// The provider a refused token's `iss` named, once verification had got that far (past
    /// [`RULES`]' issuer rule): for metrics and logs, so an expired or badly signed token is
    /// counted under its provider. Only the refusal path pays for this second read.
    pub fn provider_of_refused(&self, token: &str, error: &VerifyError) -> Option<usize> {
        let past_issuer = match error {
            VerifyError::Token(error) => error.rule() > 4,
            VerifyError::KeysUnavailable => true,
        };
        if !past_issuer {
            return None;
        }
        let claims = decode_object(token.split('.').nth(1)?).ok()?;
        let issuer = claims.get("iss")?.as_str()?;
        self.by_issuer.get(issuer).copied()
    }

    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Whether this exact token string has an entry in the verified-token cache. Entries are
    /// keyed by the string, and two strings may carry one token (an ECDSA signature `(r, s)`
    /// also verifies as `(r, n - s)`), so nothing may rely on one entry per token: revocation
    /// matches claims and keys, never strings.
    pub fn is_cached(&self, token: &str) -> bool {
        self.cache
            .contains_key(&crate::auth::keys::sha256(&[token.as_bytes()]))
    }

    /// Verifies `token` for a route accepting `accepted` providers.
    pub async fn verify(
        &self,
        token: &str,
        accepted: &Accepted,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge.into());
        }
        let now = now_unix();
        let cache_key = crate::auth::keys::sha256(&[token.as_bytes()]);
        if let Some(hit) = self.cache.get(&cache_key) {
            if let Some(index) = self.provider_index(&hit.token.provider) {
                let provider = &self.providers[index];
                if provider.fingerprint == hit.provider_fingerprint
                    && provider.still_has_key(&hit.key_fingerprint)
                {
                    if !accepted.contains(&index) {
                        return Err(TokenError::ProviderNotAccepted.into());
                    }
                    check_times(provider, &hit.token, now)?;
                    self.cache_hits.inc();
                    return Ok(hit.token);
                }
            }
            self.cache.invalidate(&cache_key);
        }
        if let Some(judge) = self.expired.get(&cache_key) {
            // A reload that changed the provider (its leeway, say) judges the token afresh.
            if let Some(index) = self.providers.iter().position(|p| p.fingerprint == judge) {
                if !accepted.contains(&index) {
                    return Err(TokenError::ProviderNotAccepted.into());
                }
                return Err(TokenError::Expired.into());
            }
            self.expired.invalidate(&cache_key);
        }
        self.cache_misses.inc();
        let (verified, provider_index, key) = self.verify_uncached(token, accepted).await?;
        let provider = &self.providers[provider_index];
        check_times(provider, &verified, now).inspect_err(|error| {
            if *error == TokenError::Expired {
                self.expired.insert(cache_key, provider.fingerprint);
            }
        })?;
        let leeway = i64::try_from(provider.leeway.as_secs()).unwrap_or(0);
        let ttl = verified
            .expires_at
            .map_or(MAX_CACHE_TTL, |exp| {
                Duration::from_secs(
                    u64::try_from(exp.saturating_add(leeway).saturating_sub(now)).unwrap_or(0),
                )
            })
            .min(MAX_CACHE_TTL);
        let verified = Arc::new(verified);
        if !ttl.is_zero() {
            self.cache.insert(
                cache_key,
                CachedToken {
                    token: verified.clone(),
                    provider_fingerprint: provider.fingerprint,
                    key_fingerprint: key.fingerprint,
                    ttl,
                },
            );
        }
        Ok(verified)
    }

    /// Every check but the time checks, which the caller makes (they decide what is cached).
    async fn verify_uncached(
        &self,
        token: &str,
        accepted: &Accepted,
    ) -> Result<(VerifiedToken, usize, Arc<VerifyKey>), VerifyError> {
        let jws = Jws::parse(token)?;
        let issuer = match jws.claims.get("iss") {
            None => return Err(TokenError::MissingClaim("iss").into()),
            Some(Value::String(issuer)) => issuer.as_str(),
            Some(_) => return Err(TokenError::InvalidClaimType("iss").into()),
        };
        let &index = self
            .by_issuer
            .get(issuer)
            .ok_or(TokenError::UnknownIssuer)?;
        if !accepted.contains(&index) {
            return Err(TokenError::ProviderNotAccepted.into());
        }
        let provider = &self.providers[index];
        let alg = provider.allowed_algorithm(&jws)?;
        if let Some(expected) = &provider.typ {
            let typ = jws
                .header
                .get("typ")
                .and_then(Value::as_str)
                .map(normalize_typ);
            if typ.as_deref() != Some(expected.as_str()) {
                return Err(TokenError::TypMismatch.into());
            }
        }
        let key = provider.signature_key(&jws, alg).await?;
        let kid = key.kid.clone();
        let verified = check_claims(provider, jws.claims, kid)?;
        Ok((verified, index, key))
    }

    /// A JWS from `provider`'s issuer, signed with one of its keys under one of its algorithms,
    /// and nothing more: what is not an access token (an ID token, a logout token) gets its
    /// audience, type and time rules from its own specification, checked by the caller.
    pub async fn verify_signed(
        &self,
        token: &str,
        provider: usize,
    ) -> Result<SignedToken, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge.into());
        }
        let provider = self
            .providers
            .get(provider)
            .ok_or(TokenError::UnknownIssuer)?;
        let jws = Jws::parse(token)?;
        match jws.claims.get("iss") {
            None => return Err(TokenError::MissingClaim("iss").into()),
            Some(Value::String(issuer)) if **issuer == *provider.issuer => {}
            Some(Value::String(_)) => return Err(TokenError::UnknownIssuer.into()),
            Some(_) => return Err(TokenError::InvalidClaimType("iss").into()),
        }
        let alg = provider.allowed_algorithm(&jws)?;
        let key = provider.signature_key(&jws, alg).await?;
        Ok(SignedToken {
            header: jws.header,
            claims: jws.claims,
            kid: key.kid.clone(),
        })
    }
}

/// A token whose signature and issuer held; see [`Verifier::verify_signed`].
pub struct SignedToken {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub kid: Option<String>,
}

/// A compact JWS split and decoded, before any key is involved.
struct Jws<'t> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    alg_name: String,
    kid: Option<String>,
    signing_input: &'t str,
    signature_b64: &'t str,
}

impl<'t> Jws<'t> {
    fn parse(token: &'t str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = decode_object(header_b64)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?
            .to_string();
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        if header.contains_key("crit") {
            // No JWS extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
            return Err(TokenError::UnsupportedCrit);
        }
        let kid = match header.get("kid") {
            None => None,
            // A kid is an identifier, not a payload: a long one only costs memory in the
            // unknown-kid cache.
            Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
            Some(_) => return Err(TokenError::Malformed),
        };
        let claims = decode_object(payload_b64)?;
        Ok(Jws {
            header,
            claims,
            alg_name,
            kid,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            signature_b64,
        })
    }
}

impl Provider {
    /// The algorithm is the provider's, never the token's: the token's `alg` only picks among
    /// those configured.
    fn allowed_algorithm(&self, jws: &Jws<'_>) -> Result<Algorithm, TokenError> {
        self.algorithms
            .iter()
            .copied()
            .find(|a| algorithm_name(*a) == jws.alg_name)
            .ok_or(TokenError::AlgorithmNotAllowed)
    }

    async fn signature_key(
        &self,
        jws: &Jws<'_>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, VerifyError> {
        let key = self.key(jws.kid.as_deref(), alg).await?;
        if !signature_holds(&key, alg, jws.signature_b64, jws.signing_input.as_bytes()) {
            return Err(TokenError::BadSignature.into());
        }
        Ok(key)
    }
}

pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// `exp`, `nbf` and `iat` must be smaller than this in magnitude, written as integers or floats
/// alike (10^15 s is some 31 million years). It is below 2^53, so every whole second under it is
/// exact as a float and the two forms of one date are the same number; a date beyond it is no
/// real date, and refusing it keeps the time arithmetic far from overflow.
const MAX_NUMERIC_DATE: i64 = 1_000_000_000_000_000;

fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(TokenError::InvalidClaimType(name));
    };
    // Integers beyond i64 (serde_json reads them as u64 or f64) take the float path and fail.
    let date = match n.as_i64() {
        Some(i) => (i.unsigned_abs() < MAX_NUMERIC_DATE.unsigned_abs()).then_some(i),
        None => n
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < MAX_NUMERIC_DATE as f64)
            .map(|f| f.floor() as i64),
    };
    date.map(Some).ok_or(TokenError::InvalidClaimType(name))
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::InvalidClaimType(name)),
    }
}

/// The key parsed at load when it has one for `alg` (public-key algorithms), else
/// jsonwebtoken's check (HMAC secrets).
fn signature_holds(key: &VerifyKey, alg: Algorithm, signature_b64: &str, message: &[u8]) -> bool {
    match key.parsed.iter().find(|(a, _)| *a == alg) {
        Some((_, parsed)) => URL_SAFE_NO_PAD
            .decode(signature_b64)
            .is_ok_and(|signature| parsed.verify_sig(message, &signature).is_ok()),
        None => {
            jsonwebtoken::crypto::verify(signature_b64, message, &key.key, alg).unwrap_or(false)
        }
    }
}

fn check_claims(
    provider: &Provider,
    claims: Map<String, Value>,
    kid: Option<String>,
) -> Result<VerifiedToken, TokenError> {
    let expires_at = numeric_date(&claims, "exp")?;
    let not_before = numeric_date(&claims, "nbf")?;
    let issued_at = numeric_date(&claims, "iat")?;
    if provider.require_exp && expires_at.is_none() {
        return Err(TokenError::MissingClaim("exp"));
    }
    let subject = optional_string(&claims, "sub")?;
    let jti = optional_string(&claims, "jti")?;
    let sid = optional_string(&claims, "sid")?.map(String::into_boxed_str);
    match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(aud)) => {
            if !provider.audiences.iter().any(|a| a == aud) {
                return Err(TokenError::AudienceMismatch);
            }
        }
        Some(Value::Array(items)) => {
            let mut matched = false;
            for item in items {
                let aud = item.as_str().ok_or(TokenError::InvalidClaimType("aud"))?;
                matched |= provider.audiences.iter().any(|a| a == aud);
            }
            if !matched {
                return Err(TokenError::AudienceMismatch);
            }
        }
        Some(_) => return Err(TokenError::InvalidClaimType("aud")),
    }
    if provider
        .required_claims
        .iter()
        .any(|name| !claims.contains_key(name))
    {
        return Err(TokenError::MissingRequiredClaim);
    }
    Ok(VerifiedToken {
        provider: provider.name.clone(),
        issuer: provider.issuer.clone(),
        subject,
        jti,
        sid,
        kid,
        issued_at,
        expires_at,
        not_before,
        claims: Arc::new(claims),
    })
}

/// Time checks, repeated on every cache hit.
fn check_times(provider: &Provider, token: &VerifiedToken, now: i64) -> Result<(), TokenError> {
    let leeway = i64::try_from(provider.leeway.as_secs()).unwrap_or(0);
    if let Some(exp) = token.expires_at {
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
    }
    if let Some(nbf) = token.not_before {
        if now.saturating_add(leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = token.issued_at {
        if now.saturating_add(leeway) < iat {
            return Err(TokenError::IssuedInFuture);
        }
    }
    Ok(())
}

/// Base64url (no padding) → a JSON object, refusing duplicate member names at any depth.
fn decode_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    if part.is_empty() {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice::<StrictValue>(&bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        Ok(_) => Err(TokenError::Malformed),
        Err(e) if e.to_string().starts_with(DUPLICATE_MEMBER) => Err(TokenError::DuplicateMember),
        Err(_) => Err(TokenError::Malformed),
    }
}

const DUPLICATE_MEMBER: &str = "duplicate member";

/// A JSON value whose objects may not repeat a member name (RFC 7515 §5.2, RFC 8725 §3.6).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE_MEMBER));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numeric_dates_share_one_bound_as_integers_and_floats() {
        let bound = MAX_NUMERIC_DATE;
        for name in ["exp", "nbf", "iat"] {
            let date = |value: Value| {
                let Value::Object(claims) = json!({ name: value }) else {
                    unreachable!()
                };
                numeric_date(&claims, name)
            };
            let refused = Err(TokenError::InvalidClaimType(name));
            // Below the bound, in either form and sign.
            assert_eq!(date(json!(bound - 1)), Ok(Some(bound - 1)), "{name}");
            assert_eq!(date(json!(1 - bound)), Ok(Some(1 - bound)), "{name}");
            assert_eq!(date(json!(999_999_999_999_999.5)), Ok(Some(bound - 1)));
            assert_eq!(date(json!(1_700_000_000.9)), Ok(Some(1_700_000_000)));
            assert_eq!(date(json!(0)), Ok(Some(0)));
            // At, just above and far above the bound: integers as floats are.
            for value in [
                json!(bound),
                json!(bound + 1),
                json!(-bound),
                json!(10_000_000_000_000_000_i64),
                json!(i64::MAX),
                json!(i64::MIN),
                json!(u64::MAX),
                json!(1e15),
                json!(1_000_000_000_000_000.5),
                json!(-1e15),
                json!(1e16),
                json!(1e300),
            ] {
                assert_eq!(date(value.clone()), refused, "{name} = {value}");
            }
            assert_eq!(date(json!("1")), refused, "{name}");
            assert_eq!(date(Value::Null), refused, "{name}");
        }
        // Integers beyond u64 arrive as floats.
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"exp": 100000000000000000000000}"#).unwrap_or_default();
        assert_eq!(
            numeric_date(&claims, "exp"),
            Err(TokenError::InvalidClaimType("exp"))
        );
    }
}
