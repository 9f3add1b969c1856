//! The admin listener: `/healthz` (the process answers), `/readyz` (config loaded, every
//! provider's keys fetched, not shutting down) and `/metrics` (Prometheus text). It runs on its
//! own address and serves nothing else; no route of the public listeners can reach it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::jwt::ProviderKeys;
use crate::auth::revocations::Shared;
use crate::edge::body::{full, json, Body};
use crate::edge::server::{PeerInfo, RequestHandler};
use crate::ops::metrics::Metrics;
use crate::state::{SharedState, Snapshot};

/// What readiness knows beyond the snapshot.
#[derive(Default)]
pub struct Health {
    shutting_down: AtomicBool,
}

impl Health {
    /// From now on `/readyz` answers 503, so load balancers stop sending before the drain.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct Admin {
    pub state: Arc<SharedState>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl RequestHandler for Admin {
    fn handle(
        self,
        req: Request<Incoming>,
        _peer: PeerInfo,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let response = self.answer(&req);
        async move { response }
    }
}

/// Why the gateway is not ready, as the JSON `/readyz` answers with.
pub fn readiness(snapshot: &Snapshot, health: &Health) -> Result<(), serde_json::Value> {
    if health.shutting_down() {
        return Err(serde_json::json!({"status": "not_ready", "reason": "shutting_down"}));
    }
    let waiting: Vec<&str> = snapshot
        .verifier
        .providers()
        .iter()
        .filter(|p| !p.is_ready())
        .map(|p| &*p.name)
        .collect();
    if !waiting.is_empty() {
        return Err(serde_json::json!({
            "status": "not_ready",
            "reason": "keys_unavailable",
            "providers": waiting,
        }));
    }
    if snapshot.revocations.redis_synced() == Some(false) {
        return Err(serde_json::json!({"status": "not_ready", "reason": "revocations_not_synced"}));
    }
    Ok(())
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"status": 404, "reason": "no_route"}),
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"status": 405, "reason": "method_not_allowed"}),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/readyz" => match readiness(&self.state.load(), &self.health) {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
                Err(why) => json(StatusCode::SERVICE_UNAVAILABLE, &why),
            },
            _ => self.scrape(),
        }
    }

    fn scrape(&self) -> Response<Body> {
        let snapshot = self.state.load();
        // State that is cheaper to read at scrape time than to keep current on every change.
        for provider in snapshot.verifier.providers() {
            if let ProviderKeys::Jwks(cache) = &provider.keys {
                if let Some(age) = cache.age() {
                    self.metrics
                        .jwks_age
                        .with_label_values(&[&provider.name])
                        .set(age.as_secs_f64());
                }
            }
        }
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(denylist) = &snapshot.revocations.file {
            let list = denylist.current();
            for (kind, count) in list.counts() {
                self.metrics
                    .denylist_entries
                    .with_label_values(&[kind])
                    .set(gauge(count));
            }
            self.metrics
                .revocation_entries
                .with_label_values(&["file"])
                .set(gauge(list.len()));
        }
        if let Some(shared) = &snapshot.revocations.shared {
            self.metrics
                .revocation_entries
                .with_label_values(&[shared.source()])
                .set(gauge(shared.list().len()));
            if let Shared::Redis(redis) = shared {
                if let Some(age) = redis.last_sync_age() {
                    self.metrics.revocation_last_sync_age.set(age.as_secs_f64());
                }
            }
        }
        match self.metrics.encode() {
            Ok(text) => {
                let mut response = Response::new(full(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(error) => {
                tracing::error!(%error, "cannot encode metrics");
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"status": 500, "reason": "metrics_unavailable"}),
                )
            }
        }
    }
}
