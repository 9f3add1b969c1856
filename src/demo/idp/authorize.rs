//! `GET|POST /authorize`: the authorization-code request (RFC 6749 §4.1, OIDC Core §3.1.2 and
//! PKCE, RFC 7636). A request naming an unknown client or an unregistered `redirect_uri` gets an
//! error page and is never redirected; any other fault goes back to the client as `error=` with
//! `state` and `iss` (RFC 9207). A browser with an IdP session gets a code at once (SSO);
//! otherwise a login form asks for a username (no password: this is a demo).

use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::form::{
    cookie, error_page, escape_html, method_not_allowed, page, random_value, read_form, redirect,
    set_cookie, with_query, Params,
};
use super::state::{CodeGrant, Grant, OpenIdProvider, CODE_LIFETIME, SESSION_COOKIE};
use crate::edge::body::Body;

/// The parameters of an authorization request, once checked.
struct AuthRequest {
    issuer: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    scope: String,
    code_challenge: String,
    prompt: Option<String>,
    login_hint: Option<String>,
}

/// Why an authorization request is refused: an error page when the client or its redirect_uri
/// cannot be trusted, else a redirect back to the client carrying the error.
enum Refusal {
    Page(String),
    Back(String),
}

impl Refusal {
    fn into_response(self) -> Response<Body> {
        match self {
            Refusal::Page(message) => error_page(StatusCode::BAD_REQUEST, &message),
            Refusal::Back(location) => redirect(&location),
        }
    }
}

/// Parameters that must not be repeated (RFC 6749 §3.1).
const SINGLE: &[&str] = &[
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "login_hint",
    "action",
    "username",
];

pub async fn answer(op: &OpenIdProvider, req: Request<Incoming>) -> Response<Body> {
    op.authorize_requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let (params, posted) = match parts.method {
        Method::GET => (Params::parse(parts.uri.query().unwrap_or_default()), false),
        Method::POST => match read_form(&parts.headers, body).await {
            Ok(params) => (params, true),
            Err(why) => return error_page(StatusCode::BAD_REQUEST, why),
        },
        _ => return method_not_allowed("GET, POST"),
    };
    let request = match validate(op, &params) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let session_cookie = cookie(&parts.headers, SESSION_COOKIE);
    if posted {
        return match params.get("action") {
            Some("deny") => request.refuse("access_denied", "the user denied the request"),
            Some("sign_in") => match params.get("username").map(str::trim) {
                Some(username) if valid_username(username) => {
                    sign_in(op, &request, session_cookie, username)
                }
                _ => login_form(
                    &request,
                    Some("Enter a username: 1 to 64 characters, no control characters."),
                ),
            },
            _ => login_form(&request, Some("Choose Sign in or Deny.")),
        };
    }
    let prompts: Vec<&str> = request
        .prompt
        .as_deref()
        .map(|p| p.split_whitespace().collect())
        .unwrap_or_default();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return request.refuse("invalid_request", "prompt=none cannot be combined");
    }
    let auto_login = op.lock().auto_login.clone();
    let has_session = session_cookie
        .as_ref()
        .is_some_and(|c| op.lock().sessions.contains_key(c));
    if has_session && !prompts.contains(&"login") {
        if let Some(location) = code_for_session(op, &request, session_cookie.as_deref()) {
            return redirect(&location);
        }
    }
    if let Some(username) = auto_login {
        return sign_in(op, &request, session_cookie, &username);
    }
    if prompts.contains(&"none") {
        return request.refuse("login_required", "the user is not signed in");
    }
    login_form(&request, None)
}

fn validate(op: &OpenIdProvider, params: &Params) -> Result<AuthRequest, Refusal> {
    let page = |message: &str| Refusal::Page(message.to_string());
    if let Some(name) = params.repeated(&["client_id", "redirect_uri"]) {
        return Err(page(&format!("The parameter {name} is repeated.")));
    }
    let client_id = params
        .get("client_id")
        .ok_or_else(|| page("The request has no client_id."))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| page("The request has no redirect_uri."))?;
    {
        let state = op.lock();
        let client = state
            .clients
            .get(client_id)
            .ok_or_else(|| page("The client_id is not registered here."))?;
        if !client.redirect_uris.iter().any(|uri| uri == redirect_uri) {
            return Err(page(
                "The redirect_uri is not one registered for this client.",
            ));
        }
    }
    // From here on the client is known and the redirect_uri is its own, so errors go back there.
    let mut request = AuthRequest {
        issuer: op.issuer.clone(),
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        state: String::new(),
        nonce: String::new(),
        scope: String::new(),
        code_challenge: String::new(),
        prompt: None,
        login_hint: None,
    };
    if params.repeated(&["state"]).is_none() {
        request.state = params.get("state").unwrap_or_default().to_string();
    }
    let refuse = |request: &AuthRequest, error: &str, description: &str| {
        Err(Refusal::Back(request.refusal(error, description)))
    };
    if let Some(name) = params.repeated(SINGLE) {
        return refuse(&request, "invalid_request", &format!("{name} is repeated"));
    }
    if params.get("request").is_some() {
        return refuse(
            &request,
            "request_not_supported",
            "request objects are not supported",
        );
    }
    if params.get("request_uri").is_some() {
        return refuse(
            &request,
            "request_uri_not_supported",
            "request_uri is not supported",
        );
    }
    match params.get("response_type") {
        None => return refuse(&request, "invalid_request", "response_type is missing"),
        Some("code") => {}
        Some(_) => {
            return refuse(
                &request,
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    let scope = params.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return refuse(&request, "invalid_scope", "scope must include openid");
    }
    let mut scopes: Vec<&str> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    request.scope = scopes.join(" ");
    let Some(challenge) = params.get("code_challenge") else {
        return refuse(
            &request,
            "invalid_request",
            "code_challenge is required (PKCE)",
        );
    };
    if params.get("code_challenge_method") != Some("S256") {
        return refuse(
            &request,
            "invalid_request",
            "code_challenge_method must be S256",
        );
    }
    // An S256 challenge is the base64url of 32 bytes: exactly 43 characters.
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return refuse(
            &request,
            "invalid_request",
            "code_challenge is not a base64url SHA-256",
        );
    }
    request.code_challenge = challenge.to_string();
    if request.state.is_empty() {
        return refuse(&request, "invalid_request", "state is required");
    }
    let Some(nonce) = params.get("nonce") else {
        return refuse(&request, "invalid_request", "nonce is required");
    };
    request.nonce = nonce.to_string();
    request.prompt = params.get("prompt").map(str::to_string);
    request.login_hint = params.get("login_hint").map(str::to_string);
    Ok(request)
}

impl AuthRequest {
    /// An error redirect to the client (RFC 6749 §4.1.2.1).
    fn refuse(&self, error: &str, description: &str) -> Response<Body> {
        redirect(&self.refusal(error, description))
    }

    /// Where an error redirect goes.
    fn refusal(&self, error: &str, description: &str) -> String {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if !self.state.is_empty() {
            pairs.push(("state", &self.state));
        }
        pairs.push(("iss", &self.issuer));
        with_query(&self.redirect_uri, &pairs)
    }
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

/// A code for the browser's existing session, or `None` when that session is gone.
fn code_for_session(
    op: &OpenIdProvider,
    request: &AuthRequest,
    session_cookie: Option<&str>,
) -> Option<String> {
    let mut state = op.lock();
    let session = state.sessions.get(session_cookie?)?.clone();
    state.purge();
    let code = random_value();
    state.codes.insert(
        code.clone(),
        CodeGrant {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            grant: Grant {
                sid: session.sid,
                subject: session.subject,
                scope: request.scope.clone(),
                auth_time: session.auth_time,
                family: random_value(),
            },
            expires_at: Instant::now() + CODE_LIFETIME,
            used: false,
        },
    );
    Some(with_query(
        &request.redirect_uri,
        &[
            ("code", &code),
            ("state", &request.state),
            ("iss", &request.issuer),
        ],
    ))
}

/// `username` has just authenticated: keep the browser's session when it is theirs (with a
/// fresh `auth_time`), else end it and start a new one; then redirect with a code.
fn sign_in(
    op: &OpenIdProvider,
    request: &AuthRequest,
    session_cookie: Option<String>,
    username: &str,
) -> Response<Body> {
    let (cookie_value, fresh) = {
        let mut state = op.lock();
        let previous = session_cookie.and_then(|c| {
            let subject = state.sessions.get(&c)?.subject.clone();
            Some((c, subject))
        });
        let current = match previous {
            Some((cookie_value, subject)) if subject == username => Some(cookie_value),
            Some((cookie_value, _)) => {
                // Another user signs in on this browser: the previous user's session ends.
                if let Some(sid) = state.sessions.get(&cookie_value).map(|s| s.sid.clone()) {
                    state.end_sessions(Some(&sid), None);
                }
                None
            }
            None => None,
        };
        match current {
            Some(cookie_value) => {
                if let Some(session) = state.sessions.get_mut(&cookie_value) {
                    session.auth_time = crate::auth::jwt::now_unix();
                }
                (cookie_value, false)
            }
            None => (state.create_session(username), true),
        }
    };
    let Some(location) = code_for_session(op, request, Some(&cookie_value)) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "The session vanished.");
    };
    let mut response = redirect(&location);
    if fresh {
        set_cookie(
            &mut response,
            &format!("{SESSION_COOKIE}={cookie_value}; Path=/; HttpOnly; SameSite=Lax"),
        );
    }
    response
}

fn login_form(request: &AuthRequest, problem: Option<&str>) -> Response<Body> {
    let hidden = [
        ("client_id", request.client_id.as_str()),
        ("redirect_uri", &request.redirect_uri),
        ("response_type", "code"),
        ("scope", &request.scope),
        ("state", &request.state),
        ("nonce", &request.nonce),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(name, value)| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape_html(value)
        )
    })
    .collect::<String>();
    let problem = problem
        .map(|p| format!("<p role=\"alert\"><b>{}</b></p>\n", escape_html(p)))
        .unwrap_or_default();
    let body = format!(
        "<p>The application <b>{client}</b> asks you to sign in.</p>\n{problem}\
         <form method=\"post\" action=\"/authorize\">\n{hidden}\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" autofocus required value=\"{hint}\"></label></p>\n\
         <p><button type=\"submit\" name=\"action\" value=\"sign_in\">Sign in</button>\n\
         <button type=\"submit\" name=\"action\" value=\"deny\" formnovalidate>Deny</button></p>\n\
         </form>\n<p><small>authgate demo IdP: any username, no password.</small></p>",
        client = escape_html(&request.client_id),
        hint = escape_html(request.login_hint.as_deref().unwrap_or_default()),
    );
    page(StatusCode::OK, "Sign in", &body)
}
