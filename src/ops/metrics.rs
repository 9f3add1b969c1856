//! Prometheus metrics: every series authgate exports, registered once on a registry passed in
//! (no globals, so tests and embedders can run several gateways in one process).
//!
//! Label values are bounded by construction: route and provider names come from config, and
//! every other label is one of a fixed set of `&'static str` (method classes, status classes,
//! the README's reasons, result kinds). A path, host, subject or token never becomes a label.
//! The hot path never formats or hashes a label: per-route and per-provider handles are
//! resolved at snapshot build and, for the route × method × status-class grid, on first use
//! (a `OnceLock` per cell, so 10,000 routes do not pre-create 400,000 empty series). Only
//! refusals, which are counted by reason, go through a label lookup.

use std::sync::{Arc, OnceLock};

use http::{Method, StatusCode};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `route` label of a request that matched no route.
pub const NO_ROUTE: &str = "-";
/// The `provider` label of an auth decision taken before a provider was known.
pub const NO_PROVIDER: &str = "-";

const METHOD_CLASSES: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Seconds, from 0.5 ms (a cached decision) to 30 s (a slow upstream).
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    auth_decisions: IntCounterVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_last_success: GaugeVec,
    pub jwks_age: GaugeVec,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub denylist_entries: IntGaugeVec,
    denylist_hits: IntCounterVec,
    login_events: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_loaded_at: Gauge,
    pub config_info: IntGaugeVec,
    pub connections_open: IntGauge,
    pub tunnels_open: IntGauge,
    pub tls_handshake_failures: IntCounterVec,
    headers_removed: IntCounterVec,
    pub revocation_redis_connected: IntGauge,
    pub revocation_last_sync_age: Gauge,
    pub revocation_entries: IntGaugeVec,
    revocation_apply_lag: Histogram,
    revocation_data_loss: IntCounter,
    revocation_resyncs: IntCounter,
    revocation_api_requests: IntCounterVec,
}

/// Seconds from a change's publication to its application here; sub-millisecond on one host,
/// the pub/sub hop plus clock skew across hosts.
const LAG_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates every series on `registry`. Fails only if a name is already registered there.
    pub fn register(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                labels,
            )
        };
        let metrics = Metrics {
            registry: registry.clone(),
            requests: IntCounterVec::new(
                opts(
                    "authgate_requests_total",
                    "Requests answered, by route, method class and status class.",
                ),
                &["route", "method", "status_class"],
            )?,
            request_duration: histogram(
                "authgate_request_duration_seconds",
                "Time from the request head to the response head, by route.",
                &["route"],
            )?,
            upstream_duration: histogram(
                "authgate_upstream_duration_seconds",
                "Time the upstream took to answer with its response head, by route.",
                &["route"],
            )?,
            upstream_errors: IntCounterVec::new(
                opts(
                    "authgate_upstream_errors_total",
                    "Upstream exchanges that failed, by route and kind (the response reason).",
                ),
                &["route", "kind"],
            )?,
            auth_decisions: IntCounterVec::new(
                opts(
                    "authgate_auth_decisions_total",
                    "Authentication and authorization decisions, by provider, result and reason.",
                ),
                &["provider", "result", "reason"],
            )?,
            jwks_fetches: IntCounterVec::new(
                opts(
                    "authgate_jwks_fetches_total",
                    "JWKS (and discovery) fetches, by provider and result.",
                ),
                &["provider", "result"],
            )?,
            jwks_keys: IntGaugeVec::new(
                opts(
                    "authgate_jwks_keys",
                    "Usable signing keys held, by provider.",
                ),
                &["provider"],
            )?,
            jwks_last_success: GaugeVec::new(
                opts(
                    "authgate_jwks_last_success_timestamp_seconds",
                    "Unix time of the last successful JWKS fetch, by provider.",
                ),
                &["provider"],
            )?,
            jwks_age: GaugeVec::new(
                opts(
                    "authgate_jwks_last_success_age_seconds",
                    "Seconds since the last successful JWKS fetch, by provider (at scrape time).",
                ),
                &["provider"],
            )?,
            token_cache_hits: IntCounter::new(
                "authgate_token_cache_hits_total",
                "Verified-token cache hits.",
            )?,
            token_cache_misses: IntCounter::new(
                "authgate_token_cache_misses_total",
                "Verified-token cache misses (a signature was checked).",
            )?,
            denylist_entries: IntGaugeVec::new(
                opts(
                    "authgate_denylist_entries",
                    "Denylist entries in force, by kind (at scrape time).",
                ),
                &["kind"],
            )?,
            denylist_hits: IntCounterVec::new(
                opts(
                    "authgate_denylist_hits_total",
                    "Tokens refused by the denylist, by kind.",
                ),
                &["kind"],
            )?,
            login_events: IntCounterVec::new(
                opts(
                    "authgate_login_events_total",
                    "Browser login and session events, by login client and event (started, \
                     completed, failed, refreshed, refresh_deferred, refresh_failed, logout, \
                     backchannel_logout).",
                ),
                &["login", "event"],
            )?,
            config_reloads: IntCounterVec::new(
                opts(
                    "authgate_config_reloads_total",
                    "Config reload attempts, by result (success, failure).",
                ),
                &["result"],
            )?,
            config_loaded_at: Gauge::new(
                "authgate_config_last_load_timestamp_seconds",
                "Unix time the config in force was loaded.",
            )?,
            config_info: IntGaugeVec::new(
                opts(
                    "authgate_config_info",
                    "The config in force: 1, labelled with the first 16 hex digits of its SHA-256.",
                ),
                &["sha256"],
            )?,
            connections_open: IntGauge::new(
                "authgate_connections_open",
                "Client connections open (public listeners).",
            )?,
            tunnels_open: IntGauge::new(
                "authgate_tunnels_open",
                "Upgraded connections (WebSockets) being spliced.",
            )?,
            tls_handshake_failures: IntCounterVec::new(
                opts(
                    "authgate_tls_handshake_failures_total",
                    "TLS handshakes that failed, by reason (error, timeout).",
                ),
                &["reason"],
            )?,
            headers_removed: IntCounterVec::new(
                opts(
                    "authgate_request_headers_removed_total",
                    "Request headers and trailers removed before forwarding, by kind \
                     (underscore, identity, trailer).",
                ),
                &["kind"],
            )?,
            revocation_redis_connected: IntGauge::new(
                "authgate_revocation_redis_connected",
                "1 while the shared revocation list's Redis connection is up and in sync.",
            )?,
            revocation_last_sync_age: Gauge::new(
                "authgate_revocation_last_sync_age_seconds",
                "Seconds since Redis last confirmed the revocation list in sync (at scrape time).",
            )?,
            revocation_entries: IntGaugeVec::new(
                opts(
                    "authgate_revocation_entries",
                    "Revocation entries held in memory, by source (file, redis, local; at scrape time).",
                ),
                &["source"],
            )?,
            revocation_apply_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "authgate_revocation_apply_lag_seconds",
                    "Time from a revocation change's publication to its application here.",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )?,
            revocation_data_loss: IntCounter::new(
                "authgate_revocation_data_loss_total",
                "Times Redis was found to have lost the revocation list (epoch marker missing or changed).",
            )?,
            revocation_resyncs: IntCounter::new(
                "authgate_revocation_resyncs_total",
                "Full loads of the revocation list from Redis (startup and every reconnection).",
            )?,
            revocation_api_requests: IntCounterVec::new(
                opts(
                    "authgate_revocation_api_requests_total",
                    "Revocation API requests, by operation (add, remove, list, other) and result \
                     (ok, unauthorized, invalid, unavailable).",
                ),
                &["op", "result"],
            )?,
        };
        metrics.register_all()?;
        Ok(Arc::new(metrics))
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let collectors: [Box<dyn prometheus::core::Collector>; 28] = [
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.auth_decisions.clone()),
            Box::new(self.jwks_fetches.clone()),
            Box::new(self.jwks_keys.clone()),
            Box::new(self.jwks_last_success.clone()),
            Box::new(self.jwks_age.clone()),
            Box::new(self.token_cache_hits.clone()),
            Box::new(self.token_cache_misses.clone()),
            Box::new(self.denylist_entries.clone()),
            Box::new(self.denylist_hits.clone()),
            Box::new(self.login_events.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_loaded_at.clone()),
            Box::new(self.config_info.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(self.tunnels_open.clone()),
            Box::new(self.tls_handshake_failures.clone()),
            Box::new(self.headers_removed.clone()),
            Box::new(self.revocation_redis_connected.clone()),
            Box::new(self.revocation_last_sync_age.clone()),
            Box::new(self.revocation_entries.clone()),
            Box::new(self.revocation_apply_lag.clone()),
            Box::new(self.revocation_data_loss.clone()),
            Box::new(self.revocation_resyncs.clone()),
            Box::new(self.revocation_api_requests.clone()),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The Prometheus text exposition of every registered series.
    pub fn encode(&self) -> Result<String, String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    pub fn route(self: &Arc<Self>, name: &str) -> RouteMetrics {
        RouteMetrics {
            name: Arc::from(name),
            metrics: self.clone(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
        }
    }

    pub fn provider(self: &Arc<Self>, name: &str) -> ProviderMetrics {
        ProviderMetrics {
            name: Arc::from(name),
            metrics: self.clone(),
            allowed: self
                .auth_decisions
                .with_label_values(&[name, "allowed", "ok"]),
        }
    }

    /// A refusal by reason, before any provider was chosen (no credential, a malformed one).
    pub fn auth_refused(&self, provider: &str, reason: &str) {
        self.auth_decisions
            .with_label_values(&[provider, "denied", reason])
            .inc();
    }

    pub fn denylist_hit(&self, kind: &'static str) {
        self.denylist_hits.with_label_values(&[kind]).inc();
    }

    /// One browser-login event of `login` (labels bounded: configured names, fixed events).
    pub fn login_event(&self, login: &str, event: &'static str) {
        self.login_events.with_label_values(&[login, event]).inc();
    }

    pub fn headers_removed(&self, kind: &'static str, count: usize) {
        if count > 0 {
            self.headers_removed
                .with_label_values(&[kind])
                .inc_by(count as u64);
        }
    }

    /// Handles for one provider's JWKS cache.
    pub fn jwks(&self, provider: &str) -> JwksMetrics {
        JwksMetrics {
            fetched: self.jwks_fetches.with_label_values(&[provider, "success"]),
            failed: self.jwks_fetches.with_label_values(&[provider, "failure"]),
            keys: self.jwks_keys.with_label_values(&[provider]),
            last_success: self.jwks_last_success.with_label_values(&[provider]),
        }
    }

    /// Handles for the Redis revocation source.
    pub fn revocation(&self) -> RevocationMetrics {
        RevocationMetrics {
            connected: self.revocation_redis_connected.clone(),
            apply_lag: self.revocation_apply_lag.clone(),
            data_loss: self.revocation_data_loss.clone(),
            resyncs: self.revocation_resyncs.clone(),
        }
    }

    /// One revocation API request; `op` and `result` are fixed sets.
    pub fn revocation_api(&self, op: &'static str, result: &'static str) {
        self.revocation_api_requests
            .with_label_values(&[op, result])
            .inc();
    }

    /// Marks `sha256` as the config in force, loaded now.
    pub fn config_loaded(&self, sha256: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[sha256]).set(1);
        self.config_loaded_at.set(unix_now());
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One route's series; cheap to keep one per route in the snapshot.
pub struct RouteMetrics {
    name: Arc<str>,
    metrics: Arc<Metrics>,
    requests: [OnceLock<IntCounter>; METHOD_CLASSES.len() * STATUS_CLASSES.len()],
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
}

impl RouteMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one answered request and its duration.
    pub fn observe(&self, method: &Method, status: StatusCode, seconds: f64) {
        let method_class = method_class(method);
        let status_class = usize::from(status.as_u16() / 100)
            .saturating_sub(1)
            .min(STATUS_CLASSES.len() - 1);
        let cell = method_class * STATUS_CLASSES.len() + status_class;
        if let Some(slot) = self.requests.get(cell) {
            slot.get_or_init(|| {
                self.metrics.requests.with_label_values(&[
                    &self.name,
                    METHOD_CLASSES[method_class],
                    STATUS_CLASSES[status_class],
                ])
            })
            .inc();
        }
        self.duration
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .with_label_values(&[&self.name])
            })
            .observe(seconds);
    }

    pub fn upstream_answered(&self, seconds: f64) {
        self.upstream
            .get_or_init(|| {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[&self.name])
            })
            .observe(seconds);
    }

    pub fn upstream_failed(&self, kind: &'static str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }
}

fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// One provider's auth decisions.
pub struct ProviderMetrics {
    name: Arc<str>,
    metrics: Arc<Metrics>,
    allowed: IntCounter,
}

impl ProviderMetrics {
    pub fn allowed(&self) {
        self.allowed.inc();
    }

    pub fn denied(&self, reason: &str) {
        self.metrics.auth_refused(&self.name, reason);
    }
}

/// What a JWKS cache reports about its fetches.
#[derive(Clone)]
pub struct JwksMetrics {
    pub fetched: IntCounter,
    pub failed: IntCounter,
    pub keys: IntGauge,
    pub last_success: Gauge,
}

/// What the Redis revocation source reports.
#[derive(Clone)]
pub struct RevocationMetrics {
    pub connected: IntGauge,
    pub apply_lag: Histogram,
    pub data_loss: IntCounter,
    pub resyncs: IntCounter,
}
