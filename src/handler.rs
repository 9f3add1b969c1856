//! THE pipeline. [`handle`] runs the steps in the order a request meets them and turns any
//! error into a response in one place (`error.rs`), logging and counting the outcome once.
//!
//! listen → decide (host → path → route → header hygiene → credential (+ CSRF origin for
//! cookies) → verify → denylist → policy → identity inject; `decide/decision.rs`) → forward.
//! No step answers the client itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::decide::decision::{self, decide};
use crate::decide::forward_auth::{self, Caller};
use crate::edge::body::Body;
use crate::edge::headers;
use crate::edge::server::{PeerInfo, RequestHandler};
use crate::error::{ErrorFlavor, GatewayError};
use crate::login;
use crate::ops::metrics::NO_PROVIDER;
use crate::ops::request_id;
use crate::proxy::forward::{self, Outbound};
use crate::state::{SharedState, Snapshot};

/// What the access log and the metrics need besides the outcome: the decision's trace and
/// the upstream's time.
#[derive(Default)]
struct Trace {
    decision: decision::Trace,
    upstream: Option<Duration>,
    /// `Set-Cookie` values the decision owes the browser (a refreshed session), whatever the
    /// upstream answers: the old refresh token may already be spent.
    set_cookies: Vec<HeaderValue>,
}

impl RequestHandler for Arc<SharedState> {
    fn handle(
        self,
        req: Request<Incoming>,
        peer: PeerInfo,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        handle(self, req, peer)
    }
}

/// The forward-auth listener: the same decisions, answered instead of forwarded.
#[derive(Clone)]
pub struct ForwardAuthService {
    pub state: Arc<SharedState>,
}

impl RequestHandler for ForwardAuthService {
    fn handle(
        self,
        req: Request<Incoming>,
        peer: PeerInfo,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        respond(self.state, req, peer, Mode::ForwardAuth)
    }
}

/// What the gateway does with an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward it to the route's upstream.
    Proxy,
    /// Answer the proxy that asked, which forwards it itself.
    ForwardAuth,
}

pub async fn handle(
    state: Arc<SharedState>,
    req: Request<Incoming>,
    peer: PeerInfo,
) -> Response<Body> {
    respond(state, req, peer, Mode::Proxy).await
}

async fn respond(
    state: Arc<SharedState>,
    req: Request<Incoming>,
    peer: PeerInfo,
    mode: Mode,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = state.load();
    let caller = snapshot
        .forward_auth
        .as_ref()
        .filter(|_| mode == Mode::ForwardAuth)
        .and_then(|settings| Caller::of(settings, req.uri().path()));
    let flavor = match caller {
        Some(Caller::Nginx) => ErrorFlavor::NginxAuthRequest,
        Some(_) => ErrorFlavor::ForwardAuth,
        None => ErrorFlavor::of(req.version(), req.method(), req.headers()),
    };
    let method = req.method().clone();
    let version = req.version();
    let trusted = snapshot.forward.is_trusted(peer.addr.ip());
    let request_id = req
        .headers()
        .get(request_id::NAME)
        .filter(|_| trusted)
        .and_then(request_id::accept)
        .unwrap_or_else(request_id::generate);
    let client_ip = snapshot.forward.client_ip(req.headers(), peer.addr.ip());
    let id = request_id.to_str().unwrap_or_default();
    // Every log line about this request, in any step, carries its id. The span is at the
    // access log's level: when access lines are off there is no line to correlate with, and an
    // enabled span costs a formatting pass on every request.
    let span = tracing::info_span!("request", request_id = id);
    let mut trace = Trace::default();
    let outcome = match mode {
        Mode::Proxy => {
            pipeline(&snapshot, req, peer, &request_id, &mut trace)
                .instrument(span)
                .await
        }
        Mode::ForwardAuth => {
            decide_only(&snapshot, req, peer, caller, &request_id, &mut trace)
                .instrument(span)
                .await
        }
    };
    let elapsed = started.elapsed();
    let route_metrics = trace
        .decision
        .route
        .and_then(|i| snapshot.route_metrics.get(i))
        .unwrap_or(&snapshot.unrouted);
    let provider_metrics = trace
        .decision
        .provider
        .and_then(|i| snapshot.provider_metrics.get(i));
    if let Some(upstream) = trace.upstream {
        route_metrics.upstream_answered(upstream.as_secs_f64());
    }
    let (mut response, reason, detail) = match outcome {
        Ok(response) => (response, "ok", None),
        Err(error) => {
            let reason = error.reason();
            if error.is_upstream() {
                route_metrics.upstream_failed(reason);
            }
            if error.is_auth_refusal() {
                match provider_metrics {
                    Some(provider) => provider.denied(reason),
                    None => snapshot.metrics.auth_refused(NO_PROVIDER, reason),
                }
            }
            let detail = error.detail().map(str::to_string);
            if error.is_server_side() {
                tracing::warn!(target: "authgate::access", request_id = id, reason, detail, "request failed");
            }
            (error.into_response(flavor, &snapshot.realm), reason, detail)
        }
    };
    let status = response.status();
    if let (Some(_), Some(provider)) = (&trace.decision.authenticated, provider_metrics) {
        provider.allowed();
    }
    // Forward-auth: the method of the request decided on, not the proxy's GET.
    let method = trace.decision.method.take().unwrap_or(method);
    route_metrics.observe(&method, status, elapsed.as_secs_f64());
    response
        .headers_mut()
        .insert(request_id::NAME, request_id.clone());
    for cookie in std::mem::take(&mut trace.set_cookies) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, cookie);
    }
    let route = route_metrics.name();
    let provider = trace
        .decision
        .provider
        .and_then(|i| snapshot.verifier.providers().get(i))
        .map_or("-", |p| &*p.name);
    let subject = trace
        .decision
        .authenticated
        .as_ref()
        .and_then(|t| t.subject.as_deref())
        .unwrap_or("-");
    let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let upstream_us = trace
        .upstream
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    tracing::info!(
        target: "authgate::access",
        request_id = id,
        mode = match mode {
            Mode::Proxy => "proxy",
            Mode::ForwardAuth => "forward_auth",
        },
        route,
        %method,
        host = trace.decision.host.as_deref().unwrap_or("-"),
        path = trace.decision.path.as_deref().unwrap_or("-"),
        ?version,
        status = status.as_u16(),
        reason,
        detail = detail.as_deref().unwrap_or(""),
        duration_us,
        upstream_us,
        provider,
        subject,
        %client_ip,
        "request"
    );
    response
}

/// Forward-auth: rebuild the original request from the calling proxy's headers, decide, and
/// answer with the identity to copy. Only a trusted proxy may describe a request.
async fn decide_only(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    peer: PeerInfo,
    caller: Option<Caller>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<Body>, GatewayError> {
    let (Some(caller), Some(settings)) = (caller, &snapshot.forward_auth) else {
        return Err(GatewayError::NoRoute);
    };
    if !snapshot.forward.is_trusted(peer.addr.ip()) {
        return Err(GatewayError::ForwardAuthUntrustedPeer);
    }
    let (head, _body) = req.into_parts();
    let (mut original, scheme) = forward_auth::reconstruct(caller, settings, head)?;
    trace.decision.method = Some(original.method.clone());
    // The calling proxy forwards the client's own request, not the cleaned copy decided on
    // here: a header the proxy pipeline would remove cannot be removed, so it is refused.
    if let Some(name) = forward_auth::unsafe_header(&original.headers, &snapshot.identity) {
        tracing::warn!(header = %name, "forward-auth request carries a header the proxy would pass on unchecked; refused");
        return Err(GatewayError::BadRequest {
            reason: "forward_auth_unsafe_header",
        });
    }
    decide(snapshot, &mut original, scheme, &mut trace.decision).await?;
    Ok(forward_auth::allowed(
        &snapshot.identity,
        &original.headers,
        request_id,
    ))
}

async fn pipeline(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    peer: PeerInfo,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<Body>, GatewayError> {
    let (mut head, body) = req.into_parts();
    if let Some(endpoint) = login_endpoint(snapshot, &head) {
        return Ok(
            // Boxed: rare, and large; unboxed it would sit in every connection's request future.
            match Box::pin(login::endpoints::serve(snapshot, endpoint, &head, body)).await? {
                login::endpoints::Answer::Redirect(redirect) => {
                    crate::error::login_redirect(&redirect.location, redirect.set_cookies)
                }
                login::endpoints::Answer::LoggedOut => crate::error::logged_out(),
                login::endpoints::Answer::ConfirmLogout => crate::error::confirm_logout(),
            },
        );
    }
    let scheme = if peer.tls { "https" } else { "http" };
    let mut decision = decide(snapshot, &mut head, scheme, &mut trace.decision).await?;
    trace.set_cookies = std::mem::take(&mut decision.set_cookies);
    // The one id the logs carry goes upstream, whatever the client sent in any spelling.
    headers::remove_where(&mut head.headers, |name| {
        headers::is_one_of(name, &[request_id::HEADER])
    });
    head.headers.insert(request_id::NAME, request_id.clone());
    let route = &snapshot.routes.routes()[decision.route];
    let outbound = Outbound {
        route,
        client: &snapshot.clients[decision.route],
        settings: &snapshot.forward,
        peer,
        path: &decision.path,
        host: decision.host.as_ref().map(|h| h.authority.as_str()),
        upgrade: decision.upgrade,
        upgrade_idle_timeout: snapshot.upgrade_idle_timeout,
        identity: &snapshot.identity,
        metrics: &snapshot.metrics,
    };
    let sent = Instant::now();
    let mut response = forward::send(outbound, Request::from_parts(head, body)).await;
    if let Ok(response) = &mut response {
        trace.upstream = Some(sent.elapsed());
        for cookie in decision.set_cookies {
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, cookie);
        }
    }
    response
}

/// The gateway's own endpoint this request names, judged on the normalised path so that no
/// spelling of `/.authgate/...` can reach a route; only when browser logins are configured.
fn login_endpoint(
    snapshot: &Snapshot,
    head: &http::request::Parts,
) -> Option<login::endpoints::Endpoint> {
    let raw = head.uri.path();
    // Only a path naming `.authgate`, or one with escapes that might spell it, can normalise to
    // an endpoint: every other request is spared a second normalisation (decide makes its own).
    if snapshot.logins.is_empty() || !(raw.contains(".authgate") || raw.contains('%')) {
        return None;
    }
    let normalized = crate::proxy::path::normalize(raw).ok()?;
    login::endpoints::Endpoint::of(&normalized.path)
}
