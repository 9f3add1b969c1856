//! THE pipeline. [`handle`] runs the steps in the order a request meets them and turns any
//! error into a response in one place (`error.rs`), logging the outcome once.
//!
//! listen → route → hop-by-hop removal → identity strip (every route) → credential (+ CSRF
//! origin for cookies) → verify → denylist → policy → identity inject → forward.
//! No step answers the client itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::credential::{self, Credential, Source};
use crate::auth::jwt::{now_unix, VerifiedToken, VerifyError};
use crate::config::file::AuthMode;
use crate::edge::body::Body;
use crate::edge::headers;
use crate::edge::server::{PeerInfo, RequestHandler};
use crate::error::{ErrorFlavor, GatewayError};
use crate::ops::metrics::NO_PROVIDER;
use crate::ops::request_id;
use crate::proxy::forward::{self, Outbound};
use crate::proxy::host::RequestHost;
use crate::proxy::path;
use crate::proxy::route::RouteMiss;
use crate::proxy::upgrade;
use crate::state::{SharedState, Snapshot};

/// What the access log and the metrics need from the pipeline besides the outcome.
#[derive(Default)]
struct Trace {
    route: Option<usize>,
    /// Canonical `host[:port]`.
    host: Option<String>,
    /// The normalised path that was routed on (never the query string).
    path: Option<String>,
    provider: Option<usize>,
    /// Set once the token passed the denylist and the route's policy.
    authenticated: Option<Arc<VerifiedToken>>,
    upstream: Option<Duration>,
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

pub async fn handle(
    state: Arc<SharedState>,
    req: Request<Incoming>,
    peer: PeerInfo,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = state.load();
    let flavor = ErrorFlavor::of(req.version(), req.method(), req.headers());
    let method = req.method().clone();
    let version = req.version();
    let trusted = snapshot.forward.is_trusted(peer.addr.ip());
    let request_id = req
        .headers()
        .get(request_id::HEADER)
        .filter(|_| trusted)
        .and_then(request_id::accept)
        .unwrap_or_else(request_id::generate);
    let client_ip = snapshot.forward.client_ip(req.headers(), peer.addr.ip());
    let id = request_id.to_str().unwrap_or_default();
    // Every log line about this request, in any step, carries its id. An error-level span is
    // enabled whenever any logging is, so no level setting loses the correlation.
    let span = tracing::error_span!("request", request_id = id);
    let mut trace = Trace::default();
    let outcome = pipeline(&snapshot, req, peer, &request_id, &mut trace)
        .instrument(span)
        .await;
    let elapsed = started.elapsed();
    let route_metrics = trace
        .route
        .and_then(|i| snapshot.route_metrics.get(i))
        .unwrap_or(&snapshot.unrouted);
    let provider_metrics = trace
        .provider
        .and_then(|i| snapshot.provider_metrics.get(i));
    if let Some(upstream) = trace.upstream {
        route_metrics.upstream_answered(upstream.as_secs_f64());
    }
    let (mut response, status, reason, detail) = match outcome {
        Ok(response) => {
            let status = response.status();
            (response, status, "ok", None)
        }
        Err(error) => {
            let status = error.status();
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
            (
                error.into_response(flavor, &snapshot.realm),
                status,
                reason,
                detail,
            )
        }
    };
    if let (Some(_), Some(provider)) = (&trace.authenticated, provider_metrics) {
        provider.allowed();
    }
    route_metrics.observe(&method, status, elapsed.as_secs_f64());
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id.clone());
    let route = route_metrics.name();
    let provider = trace
        .provider
        .and_then(|i| snapshot.verifier.providers().get(i))
        .map_or("-", |p| &*p.name);
    let subject = trace
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
        route,
        %method,
        host = trace.host.as_deref().unwrap_or("-"),
        path = trace.path.as_deref().unwrap_or("-"),
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

async fn pipeline(
    snapshot: &Snapshot,
    mut req: Request<Incoming>,
    peer: PeerInfo,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<Body>, GatewayError> {
    let host =
        RequestHost::of(&req).map_err(|e| GatewayError::BadRequest { reason: e.reason() })?;
    trace.host = host.as_ref().map(|h| h.authority.clone());
    // Read before hop-by-hop removal; forward re-requests the upgrade from the upstream.
    let upgrade = upgrade::websocket_upgrade(&req);
    if req.method() == http::Method::CONNECT && upgrade.is_none() {
        // A gateway to services is no forward proxy: only WebSocket extended CONNECT passes.
        return Err(GatewayError::BadRequest {
            reason: "connect_unsupported",
        });
    }
    // A WebSocket handshake routes as the GET it is in either protocol.
    let method = match upgrade {
        Some(_) => http::Method::GET,
        None => req.method().clone(),
    };
    let normalized = path::normalize(req.uri().path())
        .map_err(|e| GatewayError::BadRequest { reason: e.reason() })?;
    trace.path = Some(normalized.path.clone());
    let (index, route) = snapshot
        .routes
        .find(
            host.as_ref().map(|h| h.name.as_str()),
            &normalized.path,
            &method,
        )
        .map_err(|miss| match miss {
            RouteMiss::NotFound => GatewayError::NoRoute,
            RouteMiss::MethodNotAllowed(allow) => GatewayError::MethodNotAllowed { allow },
        })?;
    trace.route = Some(index);
    let rules = route.path_rules;
    for (present, allowed, reason) in [
        (
            normalized.has_encoded_slash,
            rules.allow_encoded_slash,
            "encoded_slash",
        ),
        (
            normalized.has_encoded_backslash,
            rules.allow_encoded_backslash,
            "encoded_backslash",
        ),
        (
            normalized.has_encoded_nul,
            rules.allow_encoded_nul,
            "encoded_nul",
        ),
        (
            normalized.has_path_parameters,
            rules.allow_path_parameters,
            "path_parameters",
        ),
    ] {
        if present && !allowed {
            return Err(GatewayError::BadRequest { reason });
        }
    }
    if !route.allow_underscore_headers {
        let dropped = headers::drop_underscored(req.headers_mut());
        snapshot
            .metrics
            .headers_removed("underscore", dropped.len());
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().take(8).map(|n| n.as_str()).collect();
            tracing::debug!(headers = %names.join(","), count = dropped.len(),
                "dropped request headers whose names hold '_'");
        }
    }
    // Hop-by-hop first, so `Connection: x-auth-subject` cannot remove an injected header.
    headers::strip_hop_by_hop(req.headers_mut());
    let spoofed = snapshot.identity.strip(req.headers_mut());
    snapshot.metrics.headers_removed("identity", spoofed);
    // The one id the logs carry goes upstream, whatever the client sent in any spelling.
    headers::remove_where(req.headers_mut(), |name| {
        headers::is_one_of(name, &[request_id::HEADER])
    });
    req.headers_mut()
        .insert(request_id::HEADER, request_id.clone());
    let auth = &route.auth;
    // Browsers never attach credentials to a CORS preflight, so a route may let it through.
    let preflight = auth.pass_cors_preflight
        && req.method() == http::Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    let credential = match auth.mode {
        AuthMode::Public => None,
        _ if preflight => None,
        AuthMode::Optional | AuthMode::Required => {
            credential::extract(req.headers(), auth.session_cookie.as_deref())
                .map_err(|e| GatewayError::InvalidRequest { reason: e.reason() })?
        }
    };
    if let Some(credential) = &credential {
        // A cookie rides along on cross-site requests; only a same-origin caller may change state.
        let state_changing = !credential::is_safe_method(req.method()) || upgrade.is_some();
        if credential.source == Source::Cookie && state_changing {
            check_origin(&req, route, peer, host.as_ref())?;
        }
    }
    let token = match &credential {
        Some(credential) => Some(
            authenticate(snapshot, index, credential, trace)
                .await
                .map_err(|error| login_instead(error, &req, route, &normalized.path))?,
        ),
        None if auth.mode == AuthMode::Required && !preflight => {
            return Err(login_instead(
                GatewayError::MissingCredential,
                &req,
                route,
                &normalized.path,
            ))
        }
        None => None,
    };
    if let Some(token) = &token {
        route
            .auth
            .policy
            .check(token)
            .map_err(|denied| GatewayError::Forbidden {
                reason: denied.reason,
                scopes: denied.required_scopes,
            })?;
        trace.authenticated = Some(token.clone());
        snapshot
            .identity
            .inject(req.headers_mut(), token)
            .map_err(|e| GatewayError::InvalidToken {
                reason: e.reason(),
                description: "The access token carries a claim that cannot be forwarded",
                claim: None,
            })?;
    }
    if !route.auth.forward_authorization {
        // Whatever the scheme: an upstream must not mistake an unverified header for a token
        // the gateway checked.
        req.headers_mut().remove(http::header::AUTHORIZATION);
    }
    if let (false, Some(cookie)) = (auth.forward_session_cookie, &auth.session_cookie) {
        credential::remove_cookie(req.headers_mut(), cookie);
    }
    if preflight && auth.mode != AuthMode::Public {
        // Browsers never attach credentials to a preflight, so any here are not the browser's,
        // and none of them was verified.
        req.headers_mut().remove(http::header::AUTHORIZATION);
        if let Some(cookie) = &auth.session_cookie {
            credential::remove_cookie(req.headers_mut(), cookie);
        }
    }
    let outbound = Outbound {
        route,
        client: &snapshot.clients[index],
        settings: &snapshot.forward,
        peer,
        path: &normalized.path,
        host: host.as_ref().map(|h| h.authority.as_str()),
        upgrade,
        upgrade_idle_timeout: snapshot.upgrade_idle_timeout,
        identity: &snapshot.identity,
        metrics: &snapshot.metrics,
    };
    let sent = Instant::now();
    let response = forward::send(outbound, req).await;
    if response.is_ok() {
        trace.upstream = Some(sent.elapsed());
    }
    response
}

/// The CSRF rule for cookie credentials: `Origin` (else `Referer`) must be an allowed origin,
/// by default the route's public origin or, without one, the origin the request was sent to.
fn check_origin(
    req: &Request<Incoming>,
    route: &crate::proxy::route::Route,
    peer: PeerInfo,
    host: Option<&RequestHost>,
) -> Result<(), GatewayError> {
    let origin = credential::request_origin(req.headers()).ok_or(GatewayError::CsrfOrigin)?;
    let allowed = match &route.auth.allowed_origins {
        Some(list) => list.contains(&origin),
        None => {
            let scheme = if peer.tls { "https" } else { "http" };
            let own =
                host.and_then(|h| credential::parse_origin(&format!("{scheme}://{}", h.authority)));
            own.is_some_and(|own| own == origin)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(GatewayError::CsrfOrigin)
    }
}

/// A browser navigation that failed authentication goes to the route's login page instead of
/// a 401. The return URL is built from the configured public origin, never from `Host`.
fn login_instead(
    error: GatewayError,
    req: &Request<Incoming>,
    route: &crate::proxy::route::Route,
    path: &str,
) -> GatewayError {
    let (Some(login), Some(origin)) = (&route.auth.login, &route.auth.public_origin) else {
        return error;
    };
    let unauthenticated = matches!(
        error,
        GatewayError::MissingCredential | GatewayError::InvalidToken { .. }
    );
    if !unauthenticated
        || req.method() != http::Method::GET
        || !credential::prefers_html(req.headers())
    {
        return error;
    }
    let mut original = format!("{origin}{path}");
    if let Some(query) = req.uri().query() {
        original.push('?');
        original.push_str(query);
    }
    let separator = if login.url.contains('?') { '&' } else { '?' };
    GatewayError::LoginRedirect {
        location: format!(
            "{}{separator}{}={}",
            login.url,
            login.param,
            credential::encode_query_value(&original)
        ),
    }
}

/// verify → denylist: a token that is valid for this route and not revoked.
async fn authenticate(
    snapshot: &Snapshot,
    route_index: usize,
    credential: &Credential,
    trace: &mut Trace,
) -> Result<Arc<VerifiedToken>, GatewayError> {
    let accepted = &snapshot.accepted[route_index];
    let token = snapshot
        .verifier
        .verify(&credential.token, accepted)
        .await
        .map_err(|error| match error {
            VerifyError::KeysUnavailable => GatewayError::KeysUnavailable,
            VerifyError::Token(error) => GatewayError::InvalidToken {
                reason: error.reason(),
                description: error.description(),
                claim: error.claim(),
            },
        })?;
    trace.provider = snapshot.verifier.provider_index(&token.provider);
    if let Some(revocation) = snapshot.revocations.check(&token, now_unix()) {
        snapshot.metrics.denylist_hit(revocation.kind());
        return Err(GatewayError::InvalidToken {
            reason: revocation.reason(),
            description: "The access token has been revoked",
            claim: None,
        });
    }
    // A token the last known list does not revoke may still have been revoked since.
    if snapshot.routes.routes()[route_index]
        .auth
        .revocation_required
        && !snapshot.revocations.available()
    {
        return Err(GatewayError::RevocationsUnavailable);
    }
    Ok(token)
}
