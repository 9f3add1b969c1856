//! Per-provider signing keys: a JWKS (or a configured secret) parsed once per fetch, shared by
//! every request, refreshed in the background and on an unknown `kid`.
//!
//! Fetches are coalesced (concurrent callers await one shared fetch) and rate-limited per
//! provider (`jwks_unknown_kid_interval`). A request never waits for a fetch the rate limit has
//! not yet allowed: it joins the fetch in flight, or starts one when the window allows it, or
//! else gets its answer at once (`unknown_kid` after a good fetch, `keys_unavailable` after a
//! failed one). Waiting for the next window would hold every token from another environment for
//! up to a window, hold every request for a window during an outage, and let a client sending
//! unknown kids one by one keep the gateway fetching once per window. The price: a key first
//! used inside the window that follows an unrelated fetch is refused until the next fetch. IdPs
//! publish a key before they sign with it, so in practice the scheduled refresh or the first
//! allowed fetch has it by then. Kids still unknown after a fetch are remembered for one window
//! and refused at once. A failed fetch never replaces good keys: the last good set serves until
//! `jwks_max_staleness`. No lock is held across network I/O. This step never trusts anything
//! from the token but its `kid`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{header, Request, StatusCode, Uri};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::time::Instant;

use crate::auth::idp_http::{self, HttpClient, ReadError, USER_AGENT};
use crate::auth::keys::{KeySet, Selection, VerifyKey};
use crate::edge::body::empty;
use crate::ops::metrics::{unix_now, JwksMetrics};
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
    metrics: JwksMetrics,
}

/// The rate limit did not allow a fetch now; says how the last one ended.
struct Refused {
    last_fetch_ok: bool,
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
        metrics: JwksMetrics,
    ) -> Result<Arc<Self>, String> {
        let client = idp_http::client(ca_bundle, settings.fetch_timeout)?;
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
            metrics,
        }))
    }

    /// The current key set if it is fresh enough to use.
    pub fn usable(&self) -> Option<Arc<KeySet>> {
        let fetched = self.keys.load();
        let fetched = fetched.as_ref()?;
        (fetched.at.elapsed() <= self.settings.max_staleness).then(|| fetched.set.clone())
    }

    /// How long ago the key set in hand was fetched; `None` before the first success.
    pub fn age(&self) -> Option<Duration> {
        self.keys
            .load()
            .as_ref()
            .map(|fetched| fetched.at.elapsed())
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
        let fetch = match self.join_or_start(true) {
            Ok(fetch) => fetch,
            // Not negative-cached: the kid was not looked up, and caching it would keep refusing
            // a just-published key after the window reopens.
            Err(Refused { last_fetch_ok }) => {
                return Err(if last_fetch_ok && current.is_some() {
                    KeyError::UnknownKid
                } else {
                    KeyError::Unavailable
                });
            }
        };
        let refreshed = fetch.await.map_err(|_| KeyError::Unavailable)?;
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

    /// The scheduled refresh: not held to the unknown-kid window, which exists to bound fetches
    /// that requests trigger, not the ones the configured interval asks for.
    async fn scheduled_refresh(self: &Arc<Self>) -> Result<Arc<KeySet>, FetchError> {
        match self.join_or_start(false) {
            Ok(fetch) => fetch.await,
            Err(_) => Err(FetchError("refresh refused".into())),
        }
    }

    /// The fetch in flight, or a new one when the rate limit (if it applies) allows it now.
    fn join_or_start(self: &Arc<Self>, rate_limited: bool) -> Result<SharedFetch, Refused> {
        let mut state = self.lock_state();
        if let Some(in_flight) = &state.in_flight {
            return Ok(in_flight.clone());
        }
        let now = Instant::now();
        if rate_limited {
            if let Some(last) = state.last_attempt {
                if now.saturating_duration_since(last) < self.settings.unknown_kid_interval {
                    return Err(Refused {
                        last_fetch_ok: state.last_success.is_some_and(|ok| ok >= last),
                    });
                }
            }
        }
        // Recorded under the same lock as `in_flight`, so no second caller can slip past the
        // rate limit between the check and the start.
        state.last_attempt = Some(now);
        let this = self.clone();
        let fetch = async move {
            let result = this.fetch_and_store().await;
            this.lock_state().in_flight = None;
            result
        }
        .boxed()
        .shared();
        state.in_flight = Some(fetch.clone());
        Ok(fetch)
    }

    async fn fetch_and_store(&self) -> Result<Arc<KeySet>, FetchError> {
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
                self.metrics.fetched.inc();
                self.metrics
                    .keys
                    .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
                self.metrics.last_success.set(unix_now());
                tracing::info!(provider = %self.provider, keys = set.len(), "JWKS loaded");
                Ok(set)
            }
            Ok(Err(error)) => {
                self.metrics.failed.inc();
                tracing::warn!(provider = %self.provider, error = %error.0, "JWKS fetch failed; keeping the last good keys");
                Err(error)
            }
            Err(_) => {
                self.metrics.failed.inc();
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
            .header(header::USER_AGENT, USER_AGENT)
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
        let body = idp_http::read_limited(
            response.into_body(),
            self.settings.max_bytes,
            self.settings.fetch_timeout,
        )
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => FetchError(format!(
                "{uri}: larger than {} bytes",
                self.settings.max_bytes
            )),
            ReadError::TimedOut => FetchError(format!("{uri}: body timed out")),
            ReadError::Broken => FetchError(format!("{uri}: the body broke off")),
        })?;
        Ok((body, max_age))
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
