//! The gateway's own browser endpoints under `/.authgate/`, and the start of a login:
//! - a browser without a session on a login route is sent to the IdP ([`start`]);
//! - `/.authgate/callback` finishes the login: the login-state cookie must hold the `state`
//!   (once only), the code is exchanged, the ID token checked (nonce included), and the browser
//!   sent back to where it was going (never elsewhere: `redirect.rs`);
//! - `/.authgate/logout` ends the session here, in the store and in the shared denylist, then
//!   at the IdP (RP-initiated logout).
//!
//! No route can serve these paths (the config refuses it). This step answers with a redirect
//! or a refusal; `error.rs` shapes both.

use std::sync::Arc;

use http::request::Parts;
use http::HeaderValue;

use crate::auth::jwt::now_unix;
use crate::config::build_login::{LoginSettings, RESERVED_PREFIX};
use crate::error::{GatewayError, LoginFailure};
use crate::login::login_state::{self, LoginState, LOGIN_STATE_TTL};
use crate::login::oidc::{LoginError, OidcClient};
use crate::login::pkce::random_token;
use crate::login::redirect::return_target_or_root;
use crate::login::session::Session;
use crate::login::sessions::{SessionProblem, Sessions};
use crate::state::Snapshot;

/// The browser login machinery of one snapshot.
pub struct Logins {
    /// Indexed like the config's `[[login]]` clients.
    pub clients: Vec<Arc<OidcClient>>,
    pub sessions: Option<Arc<Sessions>>,
    /// Digests of the `state` values already used at the callback: a callback URL replayed
    /// within the login-state cookie's lifetime is refused.
    used_states: moka::sync::Cache<String, ()>,
    /// `iss` + `jti` of the logout tokens already acted on: a replayed one is refused.
    pub(crate) seen_logout_tokens: moka::sync::Cache<String, ()>,
    metrics: Arc<crate::ops::metrics::Metrics>,
    /// `authgate explain`: decide as the proxy would, but never spend a refresh token.
    pub explain_only: bool,
}

impl Logins {
    /// `previous` is the snapshot's a reload replaces: its used states carry over, so a reload
    /// never reopens a replay window.
    pub fn build(
        settings: &LoginSettings,
        previous: Option<&Logins>,
        metrics: &Arc<crate::ops::metrics::Metrics>,
    ) -> Result<Self, String> {
        let clients = settings
            .clients
            .iter()
            .map(|c| {
                OidcClient::new(Arc::new(c.clone()))
                    .map(Arc::new)
                    .map_err(|e| format!("login {:?}: {e}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sessions = settings
            .session
            .clone()
            .map(Sessions::new)
            .transpose()?
            .map(Arc::new);
        let used_states = previous.map_or_else(
            || {
                moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(LOGIN_STATE_TTL)
                    .build()
            },
            |p| p.used_states.clone(),
        );
        let seen_logout_tokens = previous.map_or_else(
            || {
                moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(std::time::Duration::from_secs(1800))
                    .build()
            },
            |p| p.seen_logout_tokens.clone(),
        );
        Ok(Logins {
            clients,
            sessions,
            used_states,
            seen_logout_tokens,
            metrics: metrics.clone(),
            explain_only: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Counts one event of login client `login` (`authgate_login_events_total`).
    pub fn event(&self, login: &str, event: &'static str) {
        self.metrics.login_event(login, event);
    }
}

/// A path under the reserved prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Callback,
    Logout,
    BackchannelLogout,
    Unknown,
}

impl Endpoint {
    pub fn of(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(RESERVED_PREFIX)?;
        Some(match rest {
            "callback" => Endpoint::Callback,
            "logout" => Endpoint::Logout,
            "backchannel-logout" => Endpoint::BackchannelLogout,
            _ => Endpoint::Unknown,
        })
    }
}

/// What a login endpoint answers when it succeeds: a redirect, with cookies.
pub struct Redirect {
    pub location: String,
    pub set_cookies: Vec<HeaderValue>,
}

/// A login endpoint's success.
pub enum Answer {
    Redirect(Redirect),
    /// `GET /.authgate/logout`: a page whose button posts the logout, so another site cannot
    /// log the user out (and out of the IdP) with a link.
    ConfirmLogout,
    /// The back-channel logout was carried out (`200`, RFC-wise an empty body).
    LoggedOut,
}

/// The longest return target remembered through a login; a longer one returns to `/`.
const MAX_RETURN_TO: usize = 512;

/// Logout tokens are a few hundred bytes; the form is bounded well above that.
const MAX_BACKCHANNEL_BODY: usize = 16 * 1024;

fn failure(reason: &'static str, set_cookies: Vec<HeaderValue>) -> GatewayError {
    GatewayError::LoginFailed(Box::new(LoginFailure {
        reason,
        detail: None,
        set_cookies,
    }))
}

fn login_error(error: &LoginError, set_cookies: Vec<HeaderValue>) -> GatewayError {
    GatewayError::LoginFailed(Box::new(LoginFailure {
        reason: error.reason(),
        detail: error.detail().map(str::to_string),
        set_cookies,
    }))
}

/// The value of `name` in a query string, percent-decoded; `Err` when it appears twice (a
/// parameter with two readings is refused, as everywhere in the gateway).
fn query_param(query: &str, name: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return Err(());
            }
            let value = value.replace('+', " ");
            found = Some(crate::auth::credential::percent_decode(&value));
        }
    }
    Ok(found)
}

/// Sends a browser without a session to `client`'s IdP, remembering where it was going.
pub async fn start(
    logins: &Logins,
    client: usize,
    head: &Parts,
    path: &str,
) -> Result<Redirect, GatewayError> {
    let (Some(client), Some(sessions)) = (logins.clients.get(client), &logins.sessions) else {
        return Err(GatewayError::MissingCredential);
    };
    let mut return_to = path.to_string();
    if let Some(query) = head.uri.query() {
        return_to.push('?');
        return_to.push_str(query);
    }
    let public = &client.settings.public_origin;
    // The login-state cookie is set on the host the browser asked, and the callback is on
    // `public_origin`: a browser elsewhere first goes to the same page there, or its login
    // could never find its state.
    let own_authority = public.split_once("://").map_or("", |(_, a)| a);
    let asked = crate::proxy::host::RequestHost::of(head)
        .ok()
        .flatten()
        .map(|h| h.authority);
    if asked.as_deref() != Some(own_authority) {
        let target = crate::login::redirect::return_target_or_root(&return_to, public, &[]);
        return Ok(Redirect {
            location: format!("{public}{target}"),
            set_cookies: Vec::new(),
        });
    }
    // Kept small: it rides in a cookie on every attempt, and a page too deep to come back to
    // exactly is better reached from the start than not at all.
    if return_to.len() > MAX_RETURN_TO
        || crate::login::redirect::return_target(&return_to, public, &[]).is_err()
    {
        return_to = "/".to_string();
    }
    let attempt = LoginState::new(&client.settings.name, &return_to, now_unix())
        .map_err(|e| failure(e.reason(), Vec::new()))?;
    let location = client
        .authorization_url(&attempt)
        .await
        .map_err(|e| login_error(&e, Vec::new()))?;
    let (_, cookie) = attempt
        .seal_cookie(&sessions.settings.keys, &sessions.login_state)
        .map_err(|e| failure(e.reason(), Vec::new()))?;
    let mut set_cookies = login_state::crowded_out(&head.headers, &sessions.login_state);
    set_cookies.push(cookie);
    logins.event(&client.settings.name, "started");
    Ok(Redirect {
        location,
        set_cookies,
    })
}

/// Answers a request under `/.authgate/`.
pub async fn serve(
    snapshot: &Snapshot,
    endpoint: Endpoint,
    head: &Parts,
    body: hyper::body::Incoming,
) -> Result<Answer, GatewayError> {
    let logins = &snapshot.logins;
    let Some(sessions) = logins.sessions.as_ref().filter(|_| !logins.is_empty()) else {
        return Err(GatewayError::NoRoute);
    };
    match endpoint {
        Endpoint::Callback => {
            let outcome = callback(snapshot, sessions, head).await;
            // Which client a refused callback belonged to is not always known: "-" then.
            let (login, event) = match &outcome {
                Ok((login, _)) => (login.as_str(), "completed"),
                Err(_) => ("-", "failed"),
            };
            logins.event(login, event);
            outcome.map(|(_, redirect)| Answer::Redirect(redirect))
        }
        Endpoint::Logout if head.method == http::Method::GET => Ok(Answer::ConfirmLogout),
        Endpoint::Logout => logout(snapshot, sessions, head).await.map(Answer::Redirect),
        Endpoint::BackchannelLogout => backchannel_logout(snapshot, head, body).await,
        Endpoint::Unknown => Err(GatewayError::NoRoute),
    }
}

/// `POST /.authgate/backchannel-logout` from the IdP, server to server: no cookies, no CSRF
/// check (the signed logout token is the authentication).
async fn backchannel_logout(
    snapshot: &Snapshot,
    head: &Parts,
    body: hyper::body::Incoming,
) -> Result<Answer, GatewayError> {
    if head.method != http::Method::POST {
        return Err(GatewayError::MethodNotAllowed {
            allow: vec![http::Method::POST],
        });
    }
    let bad = |reason: &'static str| GatewayError::BadRequest { reason };
    let form = crate::auth::idp_http::read_limited(
        body,
        MAX_BACKCHANNEL_BODY,
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(|_| bad("logout_request_malformed"))?;
    let form = std::str::from_utf8(&form).map_err(|_| bad("logout_request_malformed"))?;
    let token = query_param(form, "logout_token")
        .map_err(|()| bad("logout_request_malformed"))?
        .ok_or_else(|| bad("logout_token_missing"))?;
    let now = now_unix();
    let order = crate::login::revoke::check_logout_token(snapshot, &token, now)
        .await
        .map_err(|e| {
            tracing::warn!(reason = e.reason(), "back-channel logout token refused");
            if e == crate::login::revoke::LogoutTokenError::KeysUnavailable {
                GatewayError::KeysUnavailable
            } else {
                bad(e.reason())
            }
        })?;
    if crate::login::revoke::backchannel(snapshot, &order, now)
        .await
        .is_err()
    {
        // Not carried out: the IdP's retry of this same token must be accepted.
        snapshot
            .logins
            .seen_logout_tokens
            .invalidate(&order.jti_key);
        return Err(GatewayError::RevocationsUnavailable);
    }
    for client in snapshot
        .logins
        .clients
        .iter()
        .filter(|c| c.settings.issuer == order.issuer)
    {
        snapshot
            .logins
            .event(&client.settings.name, "backchannel_logout");
    }
    Ok(Answer::LoggedOut)
}

/// The login client's name and the redirect that completes its login.
async fn callback(
    snapshot: &Snapshot,
    sessions: &Sessions,
    head: &Parts,
) -> Result<(String, Redirect), GatewayError> {
    if head.method != http::Method::GET {
        return Err(GatewayError::MethodNotAllowed {
            allow: vec![http::Method::GET],
        });
    }
    let query = head.uri.query().unwrap_or_default();
    let param = |name: &str| {
        query_param(query, name).map_err(|()| failure("login_callback_malformed", Vec::new()))
    };
    let state = param("state")?.ok_or_else(|| failure("login_state_missing", Vec::new()))?;
    // Whatever happens next, this attempt's cookie is spent.
    let clear = login_state::clear_cookie(&sessions.login_state, &state);
    let now = now_unix();
    let attempt = login_state::open_for_state(
        &head.headers,
        &sessions.settings.keys,
        &sessions.login_state,
        &state,
        now,
    )
    .map_err(|e| failure(e.reason(), clear.clone()))?;
    let first_use = snapshot
        .logins
        .used_states
        .entry(attempt.state_digest())
        .or_insert(())
        .is_fresh();
    if !first_use {
        return Err(failure("login_state_reused", clear));
    }
    let client = snapshot
        .logins
        .clients
        .iter()
        .find(|c| *c.settings.name == *attempt.login)
        .ok_or_else(|| failure("login_state_invalid", clear.clone()))?;
    // RFC 9207: an `iss` that names another IdP is a mix-up attack; an IdP that promises `iss`
    // must send it, on errors too.
    let advertised = client
        .endpoints()
        .await
        .map(|e| e.iss_parameter)
        .unwrap_or(false);
    match param("iss")? {
        Some(iss) if iss != client.settings.issuer => {
            return Err(failure("login_issuer_mismatch", clear));
        }
        None if advertised => return Err(failure("login_issuer_mismatch", clear)),
        _ => {}
    }
    if let Some(error) = param("error")? {
        // The IdP refused (the user denied consent, the session was not allowed): a page, not
        // another redirect to the IdP, which would loop.
        let code = if error.len() <= 64
            && error
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            error
        } else {
            "invalid".to_string()
        };
        tracing::info!(login = %client.settings.name, error = %code, "the IdP refused the login");
        return Err(GatewayError::LoginFailed(Box::new(LoginFailure {
            reason: "idp_refused_login",
            detail: Some(code),
            set_cookies: clear,
        })));
    }
    let code = param("code")?.ok_or_else(|| failure("login_code_missing", clear.clone()))?;
    let tokens = client
        .exchange_code(&code, &attempt.pkce_verifier)
        .await
        .map_err(|e| login_error(&e, clear.clone()))?;
    let id_token = tokens
        .id_token
        .ok_or_else(|| login_error(&LoginError::TokenResponseInvalid, clear.clone()))?;
    let provider = &snapshot.verifier.providers()[client.settings.provider];
    let leeway = i64::try_from(provider.leeway.as_secs()).unwrap_or(0);
    let signed = client
        .check_id_token(
            &snapshot.verifier,
            &id_token,
            Some(&attempt.nonce),
            leeway,
            now,
        )
        .await
        .map_err(|e| login_error(&e, clear.clone()))?;
    let id = random_token(32).map_err(|e| failure(e.reason(), clear.clone()))?;
    let session = Session::new(
        id,
        &client.settings.name,
        id_token,
        signed.kid,
        tokens.access_token,
        tokens.refresh_token,
        tokens.access_expires_at,
        now,
        sessions.settings.lifetime,
    );
    // A login through an IdP session or user revoked meanwhile ends here with a page, never
    // with a session the next request would refuse (and send back to the IdP, in a loop).
    if let Some(revocation) = session
        .identity(provider)
        .and_then(|identity| snapshot.revocations.check(&identity, now))
    {
        return Err(failure(revocation.reason(), clear));
    }
    let mut set_cookies = sessions
        .save(&session, &head.headers, false)
        .await
        .map_err(|e| failure(e.reason(), clear.clone()))?;
    set_cookies.extend(clear);
    tracing::info!(login = %client.settings.name, "browser login completed");
    Ok((
        client.settings.name.to_string(),
        Redirect {
            location: return_target_or_root(
                &attempt.return_to,
                &client.settings.public_origin,
                &client.settings.allowed_return_origins,
            ),
            set_cookies,
        },
    ))
}

async fn logout(
    snapshot: &Snapshot,
    sessions: &Sessions,
    head: &Parts,
) -> Result<Redirect, GatewayError> {
    if head.method != http::Method::POST {
        return Err(GatewayError::MethodNotAllowed {
            allow: vec![http::Method::GET, http::Method::POST],
        });
    }
    // A cookie that cannot be opened is removed all the same; but while the store is out of
    // reach the logout could not end the session there, so it is refused (and can be retried)
    // rather than pretended.
    let session = match sessions.load(&head.headers).await {
        Ok(session) => session,
        Err(SessionProblem::StoreUnavailable) => {
            return Err(GatewayError::SessionUnavailable {
                reason: SessionProblem::StoreUnavailable.reason(),
            })
        }
        Err(_) => None,
    };
    let client = session.as_ref().and_then(|s| {
        snapshot
            .logins
            .clients
            .iter()
            .find(|c| *c.settings.name == *s.login)
    });
    // Only a page of the gateway's own origin may post the logout: the session's login
    // client's, or, for a session whose client a reload removed, any login client's.
    if session.is_some() {
        let origin = crate::auth::credential::request_origin(&head.headers);
        let allowed = |c: &&Arc<OidcClient>| {
            origin.is_some()
                && origin == crate::auth::credential::parse_origin(&c.settings.public_origin)
        };
        let same_origin = match client {
            Some(client) => allowed(&client),
            None => snapshot.logins.clients.iter().any(|c| allowed(&c)),
        };
        if !same_origin {
            return Err(GatewayError::CsrfOrigin);
        }
    }
    if let (Some(session), Some(client)) = (&session, client) {
        let provider = &snapshot.verifier.providers()[client.settings.provider];
        if let Some(identity) = session.identity(provider) {
            crate::login::revoke::session_ended(snapshot, &identity, session.expires_at).await;
        }
    }
    let set_cookies = sessions.forget(session.as_ref(), &head.headers).await;
    let location = match (client, &session) {
        (Some(client), Some(session)) => client
            .end_session_url(Some(&session.id_token))
            .await
            .unwrap_or_else(|| client.settings.post_logout_redirect_uri.clone()),
        _ => "/".to_string(),
    };
    tracing::info!(had_session = session.is_some(), "browser logout");
    if let Some(client) = client {
        snapshot.logins.event(&client.settings.name, "logout");
    }
    Ok(Redirect {
        location,
        set_cookies,
    })
}
