//! The decision: everything the gateway decides about a request from its head alone, in the
//! order the request meets the steps: host → path → route → header hygiene (underscore names,
//! hop-by-hop, identity namespace) → credential (+ CSRF origin for cookies) → verify →
//! denylist → policy → identity inject. Proxying (`handler.rs`), forward-auth and `explain` all
//! call [`decide`], so the three can never disagree. It reads and rewrites only the head; it
//! never touches a body, never forwards and never answers the client itself.

use std::sync::Arc;

use http::request::Parts;

use crate::auth::credential::{self, Credential, Source};
use crate::auth::jwt::{now_unix, TokenError, VerifiedToken, VerifyError};
use crate::config::file::{AuthMode, IdentityFrom};
use crate::edge::headers;
use crate::error::GatewayError;
use crate::login::sessions::SessionProblem;
use crate::proxy::host::RequestHost;
use crate::proxy::path;
use crate::proxy::route::{Route, RouteMiss};
use crate::proxy::upgrade::{self, Upgrade};
use crate::state::Snapshot;

/// What the access log, the metrics and `explain` learn from the decision besides its outcome.
#[derive(Default)]
pub struct Trace {
    pub route: Option<usize>,
    /// Canonical `host[:port]`.
    pub host: Option<String>,
    /// The method decided on, when it is not the method the gateway received (forward-auth
    /// describes another request).
    pub method: Option<http::Method>,
    /// The normalised path that was routed on (never the query string).
    pub path: Option<String>,
    pub provider: Option<usize>,
    /// The credential's source, once one was found.
    pub credential: Option<Source>,
    /// The token went to verification (nothing before it refused the request).
    pub verify_attempted: bool,
    /// Set once the token passed the denylist and the route's policy.
    pub authenticated: Option<Arc<VerifiedToken>>,
    /// Request headers removed before anything read them, by kind.
    pub removed_underscore: Vec<http::HeaderName>,
    pub removed_identity: usize,
}

/// A request the gateway lets through: where it goes, and as whom.
pub struct Decision {
    pub route: usize,
    pub host: Option<RequestHost>,
    /// The normalised path: the path routed on is the path forwarded.
    pub path: String,
    pub upgrade: Option<Upgrade>,
    pub token: Option<Arc<VerifiedToken>>,
    /// `Set-Cookie` values for the response (a refreshed session).
    pub set_cookies: Vec<http::HeaderValue>,
}

/// Decides about the request whose head is `head`, rewriting its headers as the upstream must
/// see them (client identity headers out, trusted ones in). `scheme` is how the client reached
/// the gateway (`http` or `https`), for the CSRF origin check.
pub async fn decide(
    snapshot: &Snapshot,
    head: &mut Parts,
    scheme: &str,
    trace: &mut Trace,
) -> Result<Decision, GatewayError> {
    let host =
        RequestHost::of(head).map_err(|e| GatewayError::BadRequest { reason: e.reason() })?;
    trace.host = host.as_ref().map(|h| h.authority.clone());
    // Read before hop-by-hop removal; forward re-requests the upgrade from the upstream.
    let upgrade = upgrade::websocket_upgrade(head);
    if head.method == http::Method::CONNECT && upgrade.is_none() {
        // A gateway to services is no forward proxy: only WebSocket extended CONNECT passes.
        return Err(GatewayError::BadRequest {
            reason: "connect_unsupported",
        });
    }
    // A WebSocket handshake routes as the GET it is in either protocol.
    let method = match upgrade {
        Some(_) => http::Method::GET,
        None => head.method.clone(),
    };
    let normalized = path::normalize(head.uri.path())
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
        let dropped = headers::drop_underscored(&mut head.headers);
        snapshot
            .metrics
            .headers_removed("underscore", dropped.len());
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().take(8).map(|n| n.as_str()).collect();
            tracing::debug!(headers = %names.join(","), count = dropped.len(),
                "dropped request headers whose names hold '_'");
        }
        trace.removed_underscore = dropped;
    }
    // Hop-by-hop first, so `Connection: x-auth-subject` cannot remove an injected header.
    headers::strip_hop_by_hop(&mut head.headers);
    let spoofed = snapshot.identity.strip(&mut head.headers);
    snapshot.metrics.headers_removed("identity", spoofed);
    trace.removed_identity = spoofed;
    let auth = &route.auth;
    // Browsers never attach credentials to a CORS preflight, so a route may let it through.
    let preflight = auth.pass_cors_preflight
        && head.method == http::Method::OPTIONS
        && head.headers.contains_key(http::header::ORIGIN)
        && head
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    let credential = match auth.mode {
        AuthMode::Public => None,
        _ if preflight => None,
        AuthMode::Optional | AuthMode::Required => {
            credential::extract(&head.headers, auth.session_cookie.as_deref())
                .map_err(|e| GatewayError::InvalidRequest { reason: e.reason() })?
        }
    };
    // A login route's browsers carry the gateway's own session instead of a token.
    let mut session = None;
    if let (None, Some(client), false) = (&credential, auth.login_client, preflight) {
        // Boxed, like every login step: hyper keeps room for the whole request future in each
        // connection, so rare large branches inline would cost every idle connection memory.
        session = Box::pin(login_session(
            snapshot,
            index,
            client,
            head,
            &normalized.path,
        ))
        .await?;
    }
    trace.credential = match (&credential, &session) {
        (Some(credential), _) => Some(credential.source),
        (None, Some(_)) => Some(Source::Cookie),
        (None, None) => None,
    };
    if trace.credential == Some(Source::Cookie) {
        // A cookie rides along on cross-site requests; only a same-origin caller may change state.
        // A WebSocket handshake changes state whatever its method; a forward-auth caller drops
        // `Upgrade` (hop-by-hop) but the key still says what the request is.
        let state_changing = !credential::is_safe_method(&head.method)
            || upgrade.is_some()
            || head.headers.contains_key(http::header::SEC_WEBSOCKET_KEY);
        if state_changing {
            check_origin(head, route, scheme, host.as_ref())?;
        }
    }
    trace.verify_attempted = credential.is_some() || session.is_some();
    let mut set_cookies = Vec::new();
    let mut access_token = None;
    let token = match (&credential, session) {
        (Some(credential), _) => Some(
            authenticate(snapshot, index, credential, trace)
                .await
                .map_err(|error| login_instead(error, head, route, &normalized.path))?,
        ),
        (None, Some(found)) => {
            trace.provider = snapshot.verifier.provider_index(&found.token.provider);
            // Checked again after a refresh, whose new ID token could name another session.
            if let (Err(error), Some(client)) = (
                check_revocation(snapshot, index, &found.token),
                auth.login_client,
            ) {
                return Err(Box::pin(session_check_failed(
                    snapshot,
                    client,
                    error,
                    head,
                    &normalized.path,
                ))
                .await);
            }
            set_cookies = found.set_cookies;
            access_token = Some(found.access_token);
            Some(found.token)
        }
        (None, None) if auth.mode == AuthMode::Required && !preflight => {
            return Err(match auth.login_client {
                Some(client) => {
                    Box::pin(start_login(
                        snapshot,
                        client,
                        GatewayError::MissingCredential,
                        head,
                        &normalized.path,
                        Vec::new(),
                    ))
                    .await
                }
                None => login_instead(
                    GatewayError::MissingCredential,
                    head,
                    route,
                    &normalized.path,
                ),
            })
        }
        (None, None) => None,
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
            .inject(&mut head.headers, token)
            .map_err(|e| GatewayError::InvalidToken {
                reason: e.reason(),
                description: "The access token carries a claim that cannot be forwarded",
                claim: None,
            })?;
    }
    if !route.auth.forward_authorization {
        // Whatever the scheme: an upstream must not mistake an unverified header for a token
        // the gateway checked.
        head.headers.remove(http::header::AUTHORIZATION);
    }
    if let (false, Some(cookie)) = (auth.forward_session_cookie, &auth.session_cookie) {
        credential::remove_cookie(&mut head.headers, cookie);
    }
    if let Some(sessions) = &snapshot.logins.sessions {
        // The gateway's own cookies are for the gateway alone, on every route.
        sessions.remove_from_request(&mut head.headers);
    }
    if let (true, Some(access_token)) = (auth.forward_access_token, access_token) {
        let value =
            http::HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
                GatewayError::SessionRefused {
                    reason: "session_invalid",
                    set_cookies: Vec::new(),
                }
            })?;
        head.headers.insert(http::header::AUTHORIZATION, value);
    }
    if preflight && auth.mode != AuthMode::Public {
        // Browsers never attach credentials to a preflight, so any here are not the browser's,
        // and none of them was verified.
        head.headers.remove(http::header::AUTHORIZATION);
        if let Some(cookie) = &auth.session_cookie {
            credential::remove_cookie(&mut head.headers, cookie);
        }
    }
    Ok(Decision {
        route: index,
        host,
        path: normalized.path,
        upgrade,
        token,
        set_cookies,
    })
}

/// The CSRF rule for cookie credentials: `Origin` (else `Referer`) must be an allowed origin,
/// by default the route's public origin or, without one, the origin the request was sent to.
fn check_origin(
    head: &Parts,
    route: &Route,
    scheme: &str,
    host: Option<&RequestHost>,
) -> Result<(), GatewayError> {
    let origin = credential::request_origin(&head.headers).ok_or(GatewayError::CsrfOrigin)?;
    let allowed = match &route.auth.allowed_origins {
        Some(list) => list.contains(&origin),
        None => {
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
fn login_instead(error: GatewayError, head: &Parts, route: &Route, path: &str) -> GatewayError {
    let (Some(login), Some(origin)) = (&route.auth.login, &route.auth.public_origin) else {
        return error;
    };
    let unauthenticated = matches!(
        error,
        GatewayError::MissingCredential | GatewayError::InvalidToken { .. }
    );
    if !unauthenticated
        || head.method != http::Method::GET
        || !credential::prefers_html(&head.headers)
    {
        return error;
    }
    let mut original = format!("{origin}{path}");
    if let Some(query) = head.uri.query() {
        original.push('?');
        original.push_str(query);
    }
    let separator = if login.url.contains('?') { '&' } else { '?' };
    GatewayError::LoginRedirect {
        set_cookies: Vec::new(),
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
        .inspect_err(|error| {
            trace.provider = snapshot
                .verifier
                .provider_of_refused(&credential.token, error);
        })
        .map_err(verification_refused)?;
    trace.provider = snapshot.verifier.provider_index(&token.provider);
    check_revocation(snapshot, route_index, &token)?;
    Ok(token)
}

/// A token verification's refusal as the client hears it.
fn verification_refused(error: VerifyError) -> GatewayError {
    match error {
        VerifyError::KeysUnavailable => GatewayError::KeysUnavailable,
        VerifyError::Token(error) => GatewayError::InvalidToken {
            reason: error.reason(),
            description: error.description(),
            claim: error.claim(),
        },
    }
}

/// denylist: a token (or session) no one has revoked, checked against a list that can be relied
/// on.
fn check_revocation(
    snapshot: &Snapshot,
    route_index: usize,
    token: &VerifiedToken,
) -> Result<(), GatewayError> {
    if let Some(revocation) = snapshot.revocations.check(token, now_unix()) {
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
    Ok(())
}

/// A session the revocation check refused. A revoked one (a logout elsewhere, an IdP
/// back-channel logout) sends a browser to log in again, without the cookie that no longer
/// works; anything else keeps `error`. A list that cannot be relied on just now says nothing
/// against the session: it is kept, and the 503 stands, since a new login would meet the same
/// check (a browser with an IdP session would loop through the IdP, logged out each time).
async fn session_check_failed(
    snapshot: &Snapshot,
    client: usize,
    error: GatewayError,
    head: &Parts,
    path: &str,
) -> GatewayError {
    if matches!(error, GatewayError::RevocationsUnavailable) {
        return error;
    }
    let clear = snapshot
        .logins
        .sessions
        .as_ref()
        .map(|s| s.clear(&head.headers))
        .unwrap_or_default();
    start_login(snapshot, client, error, head, path, clear).await
}

/// The gateway session a login route's request carries, refreshed when due. A session that
/// cannot be used is removed from the browser: a navigation starts a new login, anything else
/// gets a 401. A revoked session is refused before any refresh: the gateway never presents the
/// refresh token of a session that a logout or the IdP has ended.
async fn login_session(
    snapshot: &Snapshot,
    route_index: usize,
    client_index: usize,
    head: &Parts,
    path: &str,
) -> Result<Option<SessionFound>, GatewayError> {
    let (Some(sessions), Some(client)) = (
        &snapshot.logins.sessions,
        snapshot.logins.clients.get(client_index),
    ) else {
        return Ok(None);
    };
    let refused = |problem: SessionProblem| async move {
        if problem == SessionProblem::StoreUnavailable {
            // The session may be fine: nothing is cleared, and the client may retry.
            return GatewayError::SessionUnavailable {
                reason: problem.reason(),
            };
        }
        tracing::info!(reason = problem.reason(), "session refused");
        let clear = sessions.clear(&head.headers);
        let error = GatewayError::SessionRefused {
            reason: problem.reason(),
            set_cookies: clear.clone(),
        };
        start_login(snapshot, client_index, error, head, path, clear).await
    };
    let session = match sessions.load(&head.headers).await {
        Ok(Some(session)) if *session.login == *client.settings.name => session,
        // Another login client's session is no session here.
        Ok(_) => return Ok(None),
        Err(problem) => return Err(refused(problem).await),
    };
    let provider = &snapshot.verifier.providers()[client.settings.provider];
    if let Some(identity) = session.identity(provider) {
        if let Err(error) = check_revocation(snapshot, route_index, &identity) {
            return Err(session_check_failed(snapshot, client_index, error, head, path).await);
        }
    }
    let now = now_unix();
    let mut set_cookies = Vec::new();
    let login = &*client.settings.name;
    let due = session.refresh_due(now, client.settings.refresh_margin);
    let session = if due && !snapshot.logins.explain_only {
        let leeway = i64::try_from(provider.leeway.as_secs()).unwrap_or(0);
        match sessions
            .refresh(&session, client, &snapshot.verifier, leeway)
            .await
        {
            Ok(refreshed) => {
                snapshot.logins.event(login, "refreshed");
                set_cookies = match sessions.save(&refreshed, &head.headers, true).await {
                    Ok(cookies) => cookies,
                    Err(problem) => return Err(refused(problem).await),
                };
                refreshed
            }
            // The IdP or the way to it failed, not the session: it lives on while its access
            // token does, and the next request tries again. One IdP outage must not log every
            // user out at once.
            Err(SessionProblem::RefreshFailed(error)) if error.is_transient() => {
                snapshot.logins.event(login, "refresh_deferred");
                tracing::warn!(login = %client.settings.name, reason = error.reason(), "session refresh failed for now; retried on the next request");
                if session.access_expired(now) {
                    return Err(GatewayError::SessionUnavailable {
                        reason: "session_refresh_unavailable",
                    });
                }
                Arc::new(session)
            }
            Err(problem) => {
                snapshot.logins.event(login, "refresh_failed");
                if let SessionProblem::RefreshFailed(error) = &problem {
                    tracing::info!(login = %client.settings.name, reason = error.reason(), "session refresh refused; the session ends");
                }
                return Err(refused(problem).await);
            }
        }
    } else if due {
        // `authgate explain`: the proxy would refresh here; explaining must not spend the token.
        Arc::new(session)
    } else if session.access_expired(now) {
        // No refresh token: the session ends with its access token (a new login, usually
        // silent at the IdP).
        return Err(refused(SessionProblem::AccessExpired).await);
    } else {
        Arc::new(session)
    };
    let identity = session
        .identity(provider)
        .ok_or(GatewayError::SessionRefused {
            reason: "session_invalid",
            set_cookies: sessions.clear(&head.headers),
        })?;
    let token = match client.settings.identity_from {
        IdentityFrom::IdToken => Arc::new(identity),
        IdentityFrom::AccessToken | IdentityFrom::Both => {
            // Verified like a Bearer token (cached): its scopes and audience are the API's.
            // The session's own revocations were checked above; the token's are checked with
            // the decision's.
            let access = match snapshot
                .verifier
                .verify(&session.access_token, &snapshot.accepted[route_index])
                .await
            {
                Ok(access) => access,
                // An access token past its exp, with nothing to renew it: the session ends
                // (a browser logs in again) rather than answering 401 until the hard stop.
                Err(VerifyError::Token(TokenError::Expired)) => {
                    return Err(refused(SessionProblem::AccessExpired).await)
                }
                Err(error) => return Err(verification_refused(error)),
            };
            if client.settings.identity_from == IdentityFrom::Both {
                let mut merged = (*access).clone();
                let mut claims = (*merged.claims).clone();
                for (name, value) in identity.claims.iter() {
                    claims.entry(name.clone()).or_insert_with(|| value.clone());
                }
                merged.claims = Arc::new(claims);
                Arc::new(merged)
            } else {
                access
            }
        }
    };
    Ok(Some(SessionFound {
        token,
        access_token: session.access_token.clone(),
        set_cookies,
    }))
}

struct SessionFound {
    token: Arc<VerifiedToken>,
    access_token: String,
    set_cookies: Vec<http::HeaderValue>,
}

/// A browser navigation without a usable session on a login route starts a login at the IdP;
/// anything else keeps `error`. `clear` removes a session cookie that could not be used.
async fn start_login(
    snapshot: &Snapshot,
    client: usize,
    error: GatewayError,
    head: &Parts,
    path: &str,
    clear: Vec<http::HeaderValue>,
) -> GatewayError {
    if head.method != http::Method::GET || !credential::prefers_html(&head.headers) {
        return error;
    }
    match crate::login::endpoints::start(&snapshot.logins, client, head, path).await {
        Ok(redirect) => {
            let mut set_cookies = clear;
            set_cookies.extend(redirect.set_cookies);
            GatewayError::LoginRedirect {
                location: redirect.location,
                set_cookies,
            }
        }
        Err(failure) => failure,
    }
}
