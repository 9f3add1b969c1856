//! Per-provider signing keys: a JWKS (or a configured secret) parsed once per fetch, shared by
//! every request, refreshed in the background and on an unknown `kid`.
//!
//! Fetches are coalesced (concurrent callers await one shared fetch) and rate-limited per
//! provider (`jwks_unknown_kid_interval`): a caller that needs a fetch inside the floor waits for
//! the next window instead of starting another, so a flood of random `kid`s costs at most one
//! fetch per window, while a key the IdP has just started signing with is picked up within it.
//! Kids still unknown after a fetch are remembered for one window and refused at once. A failed
//! fetch never replaces good keys: the last good set serves until `jwks_max_staleness`. No lock
//! is held across network I/O. This step never trusts anything from the token but its `kid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{header, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;

use crate::body::{empty, Body};

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

pub struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: the token's `alg` must then equal it.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    /// Identifies the key material, so a cached verification is dropped when its key goes.
    pub fingerprint: [u8; 32],
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
        Some(Value::String(name)) => Some(
            crate::jwt::algorithm_from_name(name)
                .ok_or_else(|| format!("unsupported key alg {name:?}"))?,
        ),
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
            (KeyKind::Ed25519, key, sha256(&[b"OKP", &x]))
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg {
        if !kind.fits(alg) {
            return Err(format!("key alg {alg:?} does not fit its kty"));
        }
    }
    Ok(VerifyKey {
        kid,
        kind,
        alg,
        key,
        fingerprint,
    })
}

/// Where a provider's JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    Uri(Uri),
    /// `{issuer}/.well-known/openid-configuration`, whose `issuer` must equal this one.
    Discovery {
        issuer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwksSettings {
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub max_refresh_interval: Duration,
    pub unknown_kid_interval: Duration,
    pub max_staleness: Duration,
    pub fetch_timeout: Duration,
    pub max_bytes: usize,
    pub allow_insecure_http: bool,
}

/// Why keys could not be had.
#[derive(Debug, Clone)]
pub struct FetchError(pub String);

/// Whether `uri` may be fetched: https, or http to a loopback host, or http when opted in.
pub fn check_fetch_uri(uri: &Uri, allow_insecure_http: bool) -> Result<(), String> {
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_insecure_http {
                Ok(())
            } else {
                Err(format!(
                    "{uri} is plain http; use https (or allow_insecure_http = true)"
                ))
            }
        }
        _ => Err(format!("{uri} is not an http(s) URL")),
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

struct Fetched {
    set: Arc<KeySet>,
    at: Instant,
}

/// One fetch, awaited by everyone who needs it.
type SharedFetch = Shared<BoxFuture<'static, Result<Arc<KeySet>, FetchError>>>;

struct RefreshState {
    in_flight: Option<SharedFetch>,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    /// From the last good response's Cache-Control, clamped to the configured bounds.
    next_refresh_after: Duration,
}

pub struct JwksCache {
    provider: Arc<str>,
    source: JwksSource,
    settings: JwksSettings,
    client: HttpClient,
    /// The last good set with the moment it was fetched: read on every request, so its age
    /// is checked without taking the refresh lock.
    keys: ArcSwapOption<Fetched>,
    state: Mutex<RefreshState>,
    unknown_kids: moka::sync::Cache<String, ()>,
}

/// What a key lookup can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    UnknownKid,
    MissingKid,
    Mismatch,
    /// No usable keys: never fetched, too stale, or the fetch for an unknown kid failed.
    Unavailable,
}

impl JwksCache {
    pub fn new(
        provider: Arc<str>,
        source: JwksSource,
        settings: JwksSettings,
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Arc<Self>, String> {
        let tls = crate::tls::client_config(ca_bundle)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.fetch_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let unknown_kids = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(settings.unknown_kid_interval)
            .build();
        Ok(Arc::new(JwksCache {
            provider,
            source,
            settings,
            client,
            keys: ArcSwapOption::empty(),
            state: Mutex::new(RefreshState {
                in_flight: None,
                last_attempt: None,
                last_success: None,
                next_refresh_after: Duration::ZERO,
            }),
            unknown_kids,
        }))
    }

    /// The current key set if it is fresh enough to use.
    pub fn usable(&self) -> Option<Arc<KeySet>> {
        let fetched = self.keys.load();
        let fetched = fetched.as_ref()?;
        (fetched.at.elapsed() <= self.settings.max_staleness).then(|| fetched.set.clone())
    }

    pub fn is_ready(&self) -> bool {
        self.usable().is_some()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, RefreshState> {
        // A panic while holding this lock cannot leave the state inconsistent (plain fields).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Finds the key for a token, refetching once (coalesced, rate-limited) for an unknown kid.
    pub async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, KeyError> {
        let current = self.usable();
        if let Some(set) = &current {
            match set.select(kid, alg) {
                Selection::Found(key) => return Ok(key),
                Selection::MissingKid => return Err(KeyError::MissingKid),
                Selection::Mismatch => return Err(KeyError::Mismatch),
                Selection::UnknownKid => {}
            }
            if kid.is_some_and(|kid| self.unknown_kids.contains_key(kid)) {
                return Err(KeyError::UnknownKid);
            }
        }
        if current.is_none() && self.failed_recently() {
            // Waiting for the next window would only delay a 503 during an outage.
            return Err(KeyError::Unavailable);
        }
        let refreshed = self.refresh().await.map_err(|_| KeyError::Unavailable)?;
        match refreshed.select(kid, alg) {
            Selection::Found(key) => Ok(key),
            Selection::MissingKid => Err(KeyError::MissingKid),
            Selection::Mismatch => Err(KeyError::Mismatch),
            Selection::UnknownKid => {
                if let Some(kid) = kid {
                    self.unknown_kids.insert(kid.to_string(), ());
                }
                Err(KeyError::UnknownKid)
            }
        }
    }

    fn failed_recently(&self) -> bool {
        let state = self.lock_state();
        state.in_flight.is_none()
            && state
                .last_attempt
                .is_some_and(|last| last.elapsed() < self.settings.unknown_kid_interval)
            && state
                .last_success
                .is_none_or(|ok| ok < state.last_attempt.unwrap_or(ok))
    }

    /// Joins the fetch in flight, or starts one at the earliest moment the rate limit allows.
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<KeySet>, FetchError> {
        self.fetch_coalesced(true).await
    }

    /// The scheduled refresh: not held to the unknown-kid window, which exists to bound fetches
    /// that requests trigger, not the ones the configured interval asks for.
    async fn scheduled_refresh(self: &Arc<Self>) -> Result<Arc<KeySet>, FetchError> {
        self.fetch_coalesced(false).await
    }

    async fn fetch_coalesced(
        self: &Arc<Self>,
        rate_limited: bool,
    ) -> Result<Arc<KeySet>, FetchError> {
        let shared = {
            let mut state = self.lock_state();
            match &state.in_flight {
                Some(in_flight) => in_flight.clone(),
                None => {
                    let wait = state.last_attempt.filter(|_| rate_limited).map_or(
                        Duration::ZERO,
                        |last| {
                            (last + self.settings.unknown_kid_interval)
                                .saturating_duration_since(Instant::now())
                        },
                    );
                    let this = self.clone();
                    let fetch = async move {
                        tokio::time::sleep(wait).await;
                        let result = this.fetch_and_store().await;
                        this.lock_state().in_flight = None;
                        result
                    }
                    .boxed()
                    .shared();
                    state.in_flight = Some(fetch.clone());
                    fetch
                }
            }
        };
        shared.await
    }

    async fn fetch_and_store(&self) -> Result<Arc<KeySet>, FetchError> {
        self.lock_state().last_attempt = Some(Instant::now());
        let outcome =
            tokio::time::timeout(self.settings.fetch_timeout.saturating_mul(2), self.fetch()).await;
        match outcome {
            Ok(Ok((set, max_age))) => {
                let set = Arc::new(set);
                self.keys.store(Some(Arc::new(Fetched {
                    set: set.clone(),
                    at: Instant::now(),
                })));
                let mut state = self.lock_state();
                state.last_success = Some(Instant::now());
                state.next_refresh_after = max_age.map_or(self.settings.refresh_interval, |age| {
                    age.clamp(
                        self.settings.min_refresh_interval,
                        self.settings.max_refresh_interval,
                    )
                });
                drop(state);
                self.unknown_kids.invalidate_all();
                tracing::info!(provider = %self.provider, keys = set.len(), "JWKS loaded");
                Ok(set)
            }
            Ok(Err(error)) => {
                tracing::warn!(provider = %self.provider, error = %error.0, "JWKS fetch failed; keeping the last good keys");
                Err(error)
            }
            Err(_) => {
                tracing::warn!(provider = %self.provider, "JWKS fetch timed out; keeping the last good keys");
                Err(FetchError("JWKS fetch timed out".into()))
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let uri = match &self.source {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery { issuer } => {
                let discovery: Uri = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                )
                .parse()
                .map_err(|e| FetchError(format!("bad discovery URL: {e}")))?;
                let (body, _) = self.get(&discovery).await?;
                let document: Value = serde_json::from_slice(&body)
                    .map_err(|e| FetchError(format!("discovery document is not JSON: {e}")))?;
                if document.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err(FetchError("discovery document names another issuer".into()));
                }
                let jwks_uri: Uri = document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FetchError("discovery document has no jwks_uri".into()))?
                    .parse()
                    .map_err(|e| FetchError(format!("discovery jwks_uri is not a URL: {e}")))?;
                check_fetch_uri(&jwks_uri, self.settings.allow_insecure_http)
                    .map_err(FetchError)?;
                jwks_uri
            }
        };
        let (body, max_age) = self.get(&uri).await?;
        let set = KeySet::parse(&body).map_err(FetchError)?;
        if set.is_empty() {
            return Err(FetchError("JWKS holds no usable signing key".into()));
        }
        Ok((set, max_age))
    }

    /// GET with a timeout and a size limit; returns the body and Cache-Control max-age.
    async fn get(&self, uri: &Uri) -> Result<(Bytes, Option<Duration>), FetchError> {
        let request = Request::get(uri.clone())
            .header(header::ACCEPT, "application/json")
            .body(empty())
            .map_err(|e| FetchError(format!("bad request: {e}")))?;
        let response =
            tokio::time::timeout(self.settings.fetch_timeout, self.client.request(request))
                .await
                .map_err(|_| FetchError(format!("{uri}: timed out")))?
                .map_err(|e| FetchError(format!("{uri}: {e}")))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError(format!("{uri}: status {}", response.status())));
        }
        let max_age = response
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|directive| {
                let (name, value) = directive.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("max-age")
                    .then_some(value.trim())
            })
            .find_map(|seconds| seconds.trim_matches('"').parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = response.into_body();
        let mut collected = Vec::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchError(format!("{uri}: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > self.settings.max_bytes {
                        return Err(FetchError(format!(
                            "{uri}: larger than {} bytes",
                            self.settings.max_bytes
                        )));
                    }
                    collected.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.settings.fetch_timeout, read)
            .await
            .map_err(|_| FetchError(format!("{uri}: body timed out")))??;
        Ok((Bytes::from(collected), max_age))
    }

    /// Fetches now and then keeps the keys fresh until the cache is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let Some(this) = weak.upgrade() else { return };
                let delay = match this.scheduled_refresh().await {
                    Ok(_) => {
                        failures = 0;
                        this.lock_state().next_refresh_after
                    }
                    Err(_) => {
                        failures = failures.saturating_add(1);
                        let backoff =
                            Duration::from_millis(250u64.saturating_mul(1 << failures.min(8)));
                        backoff
                            .min(this.settings.refresh_interval)
                            .max(this.settings.unknown_kid_interval)
                    }
                };
                drop(this);
                tokio::time::sleep(delay).await;
            }
        })
    }
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
    fn fetch_uris() {
        let ok = |u: &str, opt: bool| check_fetch_uri(&u.parse().expect("uri"), opt).is_ok();
        assert!(ok("https://idp.example/jwks", false));
        assert!(ok("http://127.0.0.1:8080/jwks", false));
        assert!(ok("http://[::1]:8080/jwks", false));
        assert!(ok("http://localhost/jwks", false));
        assert!(!ok("http://idp.example/jwks", false));
        assert!(ok("http://idp.example/jwks", true));
        assert!(!ok("ftp://idp.example/jwks", true));
    }
}
