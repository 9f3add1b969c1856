//! The one place that turns a failed request into a response.
//!
//! Every step of the pipeline returns a [`GatewayError`]; only [`GatewayError::into_response`]
//! chooses the status code, the `WWW-Authenticate` / `Allow` headers and the body. The body is
//! small JSON with a stable machine-readable `reason`; library error text never reaches the
//! client (it goes to the log through `detail`). gRPC callers get the same decision as
//! `grpc-status` so that their client libraries can act on it.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::edge::body::{full, Body};

#[derive(Debug)]
pub enum GatewayError {
    /// The request target or Host cannot be routed safely; `reason` is a stable code.
    BadRequest {
        reason: &'static str,
    },
    NoRoute,
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    /// The client stopped sending the request body for longer than the body idle timeout.
    RequestBodyTimeout,
    /// The client's request body broke its own framing (a bad chunk, a length it did not
    /// keep): the exchange with the upstream was abandoned mid-request.
    RequestBodyInvalid,
    /// The upstream could not be reached (refused, reset, DNS, TLS).
    UpstreamUnreachable {
        detail: String,
    },
    UpstreamConnectTimeout,
    UpstreamTimeout,
    /// The upstream closed or broke the exchange after the connection was made.
    UpstreamFailed {
        detail: String,
    },
    /// A route that requires authentication got no credential.
    MissingCredential,
    /// The credential cannot be read without guessing (RFC 6750 `invalid_request`).
    InvalidRequest {
        reason: &'static str,
    },
    /// The token is invalid, expired, revoked, or unusable (RFC 6750 `invalid_token`).
    InvalidToken {
        reason: &'static str,
        description: &'static str,
        claim: Option<&'static str>,
    },
    /// The token is valid but the route's policy refuses it (RFC 6750 `insufficient_scope`).
    Forbidden {
        reason: &'static str,
        scopes: Vec<String>,
    },
    /// No usable keys (IdP down, or an unknown kid whose refetch failed): retry, don't discard.
    KeysUnavailable,
    /// The shared revocation list is out of reach on a route that fails closed.
    RevocationsUnavailable,
    /// A browser without a valid session is sent to the route's login page.
    LoginRedirect {
        location: String,
        /// The login attempt's state cookie, when the gateway logs the browser in itself.
        set_cookies: Vec<HeaderValue>,
    },
    /// A browser login could not be completed (bad or replayed state, IdP refusal, failed code
    /// exchange, bad ID token): a page saying why, never another redirect that could loop.
    LoginFailed(Box<LoginFailure>),
    /// The request's gateway session cannot be used (expired, tampered, refresh failed): a 401
    /// that also removes the cookie.
    SessionRefused {
        reason: &'static str,
        set_cookies: Vec<HeaderValue>,
    },
    /// The session could not be checked now (its store, or its refresh at the IdP, is out of
    /// reach): retry, and keep the cookie.
    SessionUnavailable {
        reason: &'static str,
    },
    /// A cookie-authenticated state-changing request from another (or no) origin.
    CsrfOrigin,
    /// A forward-auth request from a peer outside `server.trusted_proxies`: the headers that
    /// describe the original request are believed only from a trusted proxy.
    ForwardAuthUntrustedPeer,
}

#[derive(Debug)]
pub struct LoginFailure {
    pub reason: &'static str,
    /// The IdP's error code, when it gave one (safe alphabet only).
    pub detail: Option<String>,
    pub set_cookies: Vec<HeaderValue>,
}

impl LoginFailure {
    fn status(&self) -> StatusCode {
        match self.reason {
            "idp_refused_login" => StatusCode::FORBIDDEN,
            "idp_discovery_failed"
            | "token_endpoint_unreachable"
            | "token_endpoint_refused"
            | "token_endpoint_failed"
            | "token_response_invalid" => StatusCode::BAD_GATEWAY,
            "keys_unavailable" | "session_store_unavailable" | "randomness_unavailable" => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The gateway's own faults (a cookie it cannot write), not the browser's.
            "client_key_unusable"
            | "session_seal_failed"
            | "login_state_too_large"
            | "login_state_cookie_name"
            | "session_cookie_too_large"
            | "cookie_value_invalid" => StatusCode::INTERNAL_SERVER_ERROR,
            reason if reason.starts_with("revoked_") => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A login endpoint's success: the browser goes on to `location` with `set_cookies`.
pub fn login_redirect(location: &str, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    let mut response = Response::new(crate::edge::body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in set_cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /.authgate/logout`: the page whose button posts the logout (same origin, so the CSRF
/// rule of the POST holds).
pub fn confirm_logout() -> Response<Body> {
    let page = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign out</title></head>\
                <body><form method=\"post\" action=\"/.authgate/logout\">\
                <button type=\"submit\" id=\"sign-out\">Sign out</button></form></body></html>\n";
    let mut response = Response::new(full(Bytes::from_static(page.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not framed by another site, which could trick the button.
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// A back-channel logout carried out (Back-Channel Logout 1.0 §2.8: `200`, not cached).
pub fn logged_out() -> Response<Body> {
    let mut response = Response::new(crate::edge::body::empty());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How the client wants errors shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFlavor {
    Json,
    Grpc,
    /// A forward-auth answer to Traefik or Envoy: JSON, plus `X-Authgate-Reason`; the proxy
    /// relays the status (a login redirect stays a 302).
    ForwardAuth,
    /// A forward-auth answer to nginx `auth_request`, which understands only 2xx, 401 and 403:
    /// a login redirect is a 401 carrying `Location`, and other client errors are 403.
    NginxAuthRequest,
}

impl ErrorFlavor {
    /// gRPC runs over HTTP/2 POST only; anything else asking for a gRPC-shaped answer gets JSON,
    /// so a refused plain request can never look like a 200 to caches and monitors.
    pub fn of(version: http::Version, method: &Method, headers: &http::HeaderMap) -> Self {
        if version != http::Version::HTTP_2 || method != Method::POST {
            return ErrorFlavor::Json;
        }
        let is_grpc = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.to_ascii_lowercase();
                v == "application/grpc"
                    || v.starts_with("application/grpc+")
                    || v.starts_with("application/grpc;")
            });
        if is_grpc {
            ErrorFlavor::Grpc
        } else {
            ErrorFlavor::Json
        }
    }
}

/// gRPC status codes used by the gateway (grpc/doc/statuscodes.md).
mod grpc_code {
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::RequestBodyInvalid => StatusCode::BAD_REQUEST,
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamConnectTimeout | GatewayError::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::MissingCredential | GatewayError::InvalidToken { .. } => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::KeysUnavailable | GatewayError::RevocationsUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::LoginRedirect { .. } => StatusCode::FOUND,
            GatewayError::LoginFailed(failure) => failure.status(),
            GatewayError::SessionRefused { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::SessionUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::CsrfOrigin => StatusCode::FORBIDDEN,
            GatewayError::ForwardAuthUntrustedPeer => StatusCode::FORBIDDEN,
        }
    }

    /// The stable, machine-readable reason sent to the client and logged.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { reason } => reason,
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::RequestBodyTimeout => "request_body_timeout",
            GatewayError::RequestBodyInvalid => "bad_request_body",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamConnectTimeout => "upstream_connect_timeout",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamFailed { .. } => "upstream_failed",
            GatewayError::MissingCredential => "missing_credential",
            GatewayError::InvalidRequest { reason } => reason,
            GatewayError::InvalidToken { reason, .. } => reason,
            GatewayError::Forbidden { reason, .. } => reason,
            GatewayError::KeysUnavailable => "keys_unavailable",
            GatewayError::RevocationsUnavailable => "revocations_unavailable",
            GatewayError::LoginRedirect { .. } => "login_required",
            GatewayError::LoginFailed(failure) => failure.reason,
            GatewayError::SessionRefused { reason, .. } => reason,
            GatewayError::SessionUnavailable { reason } => reason,
            GatewayError::CsrfOrigin => "csrf_origin",
            GatewayError::ForwardAuthUntrustedPeer => "forward_auth_untrusted_peer",
        }
    }

    /// Whether the fault is ours or the upstream's (logged at warn) rather than the client's.
    /// The upstream exchange failed (counted per route and kind).
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            GatewayError::UpstreamUnreachable { .. }
                | GatewayError::UpstreamFailed { .. }
                | GatewayError::UpstreamConnectTimeout
                | GatewayError::UpstreamTimeout
                | GatewayError::RequestBodyTimeout
                | GatewayError::RequestBodyInvalid
        )
    }

    /// Authentication or authorization refused the request (counted as an auth decision).
    pub fn is_auth_refusal(&self) -> bool {
        matches!(
            self,
            GatewayError::MissingCredential
                | GatewayError::InvalidRequest { .. }
                | GatewayError::InvalidToken { .. }
                | GatewayError::Forbidden { .. }
                | GatewayError::KeysUnavailable
                | GatewayError::RevocationsUnavailable
                | GatewayError::LoginRedirect { .. }
                | GatewayError::LoginFailed(_)
                | GatewayError::SessionRefused { .. }
                | GatewayError::SessionUnavailable { .. }
                | GatewayError::CsrfOrigin
        )
    }

    pub fn is_server_side(&self) -> bool {
        self.status().is_server_error()
    }

    /// Internal detail for the log line; never sent to the client.
    pub fn detail(&self) -> Option<&str> {
        match self {
            GatewayError::UpstreamUnreachable { detail }
            | GatewayError::UpstreamFailed { detail } => Some(detail),
            GatewayError::InvalidToken { claim, .. } => *claim,
            GatewayError::LoginFailed(failure) => failure.detail.as_deref(),
            _ => None,
        }
    }

    fn grpc_code(&self) -> u32 {
        match self {
            GatewayError::BadRequest { .. } => grpc_code::INVALID_ARGUMENT,
            GatewayError::NoRoute => grpc_code::UNIMPLEMENTED,
            GatewayError::MethodNotAllowed { .. } => grpc_code::UNIMPLEMENTED,
            GatewayError::RequestBodyTimeout => grpc_code::DEADLINE_EXCEEDED,
            GatewayError::RequestBodyInvalid => grpc_code::INVALID_ARGUMENT,
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamFailed { .. } => {
                grpc_code::UNAVAILABLE
            }
            GatewayError::UpstreamConnectTimeout | GatewayError::UpstreamTimeout => {
                grpc_code::DEADLINE_EXCEEDED
            }
            GatewayError::MissingCredential | GatewayError::InvalidToken { .. } => {
                grpc_code::UNAUTHENTICATED
            }
            GatewayError::InvalidRequest { .. } => grpc_code::INVALID_ARGUMENT,
            GatewayError::Forbidden { .. } => grpc_code::PERMISSION_DENIED,
            GatewayError::KeysUnavailable | GatewayError::RevocationsUnavailable => {
                grpc_code::UNAVAILABLE
            }
            GatewayError::LoginRedirect { .. }
            | GatewayError::LoginFailed(_)
            | GatewayError::SessionRefused { .. } => grpc_code::UNAUTHENTICATED,
            GatewayError::SessionUnavailable { .. } => grpc_code::UNAVAILABLE,
            GatewayError::CsrfOrigin | GatewayError::ForwardAuthUntrustedPeer => {
                grpc_code::PERMISSION_DENIED
            }
        }
    }

    /// The RFC 6750 challenge for errors about the credential; `realm` is from config.
    fn challenge(&self, realm: &str) -> Option<String> {
        let realm: String = realm.chars().filter(|c| *c != '"' && *c != '\\').collect();
        let error = match self {
            GatewayError::MissingCredential => return Some(format!("Bearer realm=\"{realm}\"")),
            GatewayError::InvalidRequest { .. } => "error=\"invalid_request\"".to_string(),
            GatewayError::InvalidToken { description, .. } => {
                format!("error=\"invalid_token\", error_description=\"{description}\"")
            }
            GatewayError::SessionRefused { .. } => {
                "error=\"invalid_token\", error_description=\"The session has ended\"".to_string()
            }
            GatewayError::Forbidden { scopes, .. } if !scopes.is_empty() => {
                format!(
                    "error=\"insufficient_scope\", scope=\"{}\"",
                    scopes.join(" ")
                )
            }
            GatewayError::Forbidden { .. } => "error=\"insufficient_scope\"".to_string(),
            _ => return None,
        };
        Some(format!("Bearer realm=\"{realm}\", {error}"))
    }

    pub fn into_response(self, flavor: ErrorFlavor, realm: &str) -> Response<Body> {
        let reason = self.reason();
        if flavor == ErrorFlavor::Grpc {
            // A gRPC error is a "trailers-only" response: HTTP 200 with the status in headers.
            let mut response = Response::new(full(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert("grpc-status", HeaderValue::from(self.grpc_code()));
            headers.insert("grpc-message", HeaderValue::from_static(reason));
            return response;
        }
        let status = match (flavor, self.status()) {
            (ErrorFlavor::NginxAuthRequest, StatusCode::FOUND) => StatusCode::UNAUTHORIZED,
            (ErrorFlavor::NginxAuthRequest, status)
                if status.is_client_error() && status != StatusCode::UNAUTHORIZED =>
            {
                StatusCode::FORBIDDEN
            }
            (_, status) => status,
        };
        let body = format!(
            "{{\"status\":{},\"reason\":\"{}\"}}\n",
            status.as_u16(),
            reason
        );
        let mut response = Response::new(full(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let GatewayError::MethodNotAllowed { allow } = &self {
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(header::ALLOW, value);
            }
        }
        if let Some(challenge) = self
            .challenge(realm)
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let GatewayError::LoginRedirect { location, .. } = &self {
            if let Ok(value) = HeaderValue::from_str(location) {
                headers.insert(header::LOCATION, value);
            }
        }

        if matches!(
            flavor,
            ErrorFlavor::ForwardAuth | ErrorFlavor::NginxAuthRequest
        ) {
            headers.insert("x-authgate-reason", HeaderValue::from_static(reason));
        }
        if matches!(
            self,
            GatewayError::KeysUnavailable
                | GatewayError::RevocationsUnavailable
                | GatewayError::SessionUnavailable { .. }
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if matches!(
            self,
            GatewayError::RequestBodyTimeout | GatewayError::RequestBodyInvalid
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let cookies = match self {
            GatewayError::LoginRedirect { set_cookies, .. }
            | GatewayError::SessionRefused { set_cookies, .. } => set_cookies,
            GatewayError::LoginFailed(failure) => {
                let failure = *failure;
                let status = failure.status();
                // A person reads this page: say what failed and offer a fresh start, which is
                // a new login attempt rather than a loop back into the one that failed.
                let page = format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
                     <body><h1>Sign-in failed</h1><p>Reason: <code>{}</code>{}</p>\
                     <p><a href=\"/\">Start again</a></p></body></html>\n",
                    failure.reason,
                    failure
                        .detail
                        .as_deref()
                        .map(|d| format!(" (identity provider said <code>{d}</code>)"))
                        .unwrap_or_default()
                );
                *response.body_mut() = full(Bytes::from(page));
                *response.status_mut() = status;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                failure.set_cookies
            }
            _ => Vec::new(),
        };
        let headers = response.headers_mut();
        for cookie in cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        response
    }
}
