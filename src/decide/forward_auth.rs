//! Forward-auth: another proxy (nginx `auth_request`, Traefik ForwardAuth, Envoy `ext_authz`)
//! asks "may this request pass, and as whom?" and the gateway answers with the same decision it
//! would take as a proxy. This file rebuilds the head of the original request from the calling
//! proxy's headers and presents an allowed decision; the decision itself is `decide`'s.
//!
//! The headers that describe the original request are believed only from a peer in
//! `server.trusted_proxies` (the caller checks). The original path goes through the same
//! normalisation and routing as a proxied request: a target that is not an origin-form path is
//! refused, never guessed.

use std::str::FromStr;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version,
};

use crate::auth::identity::IdentityRules;
use crate::config::build::ForwardAuthSettings;
use crate::edge::body::{empty, Body};
use crate::edge::headers::{is_one_of, METHOD_OVERRIDES, PATH_OVERRIDES};
use crate::error::GatewayError;

/// Which proxy is asking, by the path it called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`, `Host`.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`.
    Traefik,
    /// Envoy `ext_authz` (HTTP service): the original path after the prefix, the method and
    /// `Host` as sent.
    Envoy,
}

impl Caller {
    /// The caller a forward-auth request path names, if any.
    pub fn of(settings: &ForwardAuthSettings, path: &str) -> Option<Caller> {
        if path == settings.nginx_path {
            Some(Caller::Nginx)
        } else if path == settings.traefik_path {
            Some(Caller::Traefik)
        } else if path
            .strip_prefix(settings.envoy_prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
        {
            Some(Caller::Envoy)
        } else {
            None
        }
    }
}

fn incomplete() -> GatewayError {
    GatewayError::BadRequest {
        reason: "forward_auth_incomplete",
    }
}

fn bad_target() -> GatewayError {
    GatewayError::BadRequest {
        reason: "forward_auth_bad_target",
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two copies of a header that says what the request was: refuse rather than pick one.
    if values.next().is_some() {
        return Err(bad_target());
    }
    value.to_str().map(Some).map_err(|_| bad_target())
}

/// An origin-form target (`/path?query`), exactly as the client sent it.
fn origin_form(raw: &str) -> Result<PathAndQuery, GatewayError> {
    if !raw.starts_with('/') || raw.starts_with("//") {
        return Err(bad_target());
    }
    PathAndQuery::from_str(raw).map_err(|_| bad_target())
}

/// The headers this file consumed: they describe the proxy's hop, not the original request.
const DESCRIBING: [&str; 6] = [
    "x-original-uri",
    "x-original-method",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Rebuilds the original request's head from `head`, the forward-auth request's; returns it
/// with the scheme the client used (for the CSRF origin check).
pub fn reconstruct(
    caller: Caller,
    settings: &ForwardAuthSettings,
    mut head: Parts,
) -> Result<(Parts, &'static str), GatewayError> {
    let headers = &head.headers;
    let scheme = match text(headers, "x-forwarded-proto")? {
        None | Some("http") => "http",
        Some("https") => "https",
        Some(_) => return Err(bad_target()),
    };
    let (method, target, host) = match caller {
        Caller::Nginx => (
            text(headers, "x-original-method")?.ok_or_else(incomplete)?,
            text(headers, "x-original-uri")?
                .ok_or_else(incomplete)?
                .to_string(),
            None,
        ),
        Caller::Traefik => (
            text(headers, "x-forwarded-method")?.ok_or_else(incomplete)?,
            text(headers, "x-forwarded-uri")?
                .ok_or_else(incomplete)?
                .to_string(),
            Some(text(headers, "x-forwarded-host")?.ok_or_else(incomplete)?),
        ),
        Caller::Envoy => {
            let path = head.uri.path();
            let original = path
                .strip_prefix(settings.envoy_prefix.as_str())
                .ok_or_else(bad_target)?;
            let target = match head.uri.query() {
                Some(query) => format!("{original}?{query}"),
                None => original.to_string(),
            };
            (head.method.as_str(), target, None)
        }
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad_target())?;
    let target = origin_form(&target)?;
    let host = host
        .map(HeaderValue::from_str)
        .transpose()
        .map_err(|_| bad_target())?;
    // HTTP/2 callers (Envoy) name the host in `:authority`, not in a Host header.
    let authority = head
        .uri
        .authority()
        .filter(|_| !head.headers.contains_key(header::HOST))
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let (mut original, ()) = http::Request::new(()).into_parts();
    original.method = method;
    original.uri = Uri::from(target);
    // Routed like an HTTP/1.1 request: a host is required and is parsed strictly.
    original.version = Version::HTTP_11;
    original.headers = std::mem::take(&mut head.headers);
    if let Some(host) = host.or(authority) {
        original.headers.insert(header::HOST, host);
    }
    for name in DESCRIBING {
        original.headers.remove(name);
    }
    Ok((original, scheme))
}

/// The first header the calling proxy would forward to the upstream as the client sent it and
/// the proxy pipeline would have removed: an identity header (in any spelling), or a header
/// asking the back end to route on another path or method.
pub fn unsafe_header(headers: &HeaderMap, identity: &IdentityRules) -> Option<HeaderName> {
    headers
        .keys()
        .find(|name| {
            let name = name.as_str();
            identity.in_namespace(name)
                || is_one_of(name, &PATH_OVERRIDES)
                || is_one_of(name, &METHOD_OVERRIDES)
        })
        .cloned()
}

/// The answer to an allowed request: 200 with the identity headers the proxy copies onto the
/// request it forwards (nginx `auth_request_set`, Traefik `authResponseHeaders`, Envoy
/// `allowed_upstream_headers`), and the request id.
pub fn allowed(
    identity: &IdentityRules,
    decided: &HeaderMap,
    request_id: &HeaderValue,
) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let mut absent = Vec::new();
    for name in identity.injected_names() {
        let mut set = false;
        for value in decided.get_all(name) {
            headers.append(name.clone(), value.clone());
            set = true;
        }
        if !set {
            absent.push(name.as_str());
        }
    }
    absent.extend(identity.strip_names());
    // Envoy copies only the headers named in this answer; these it removes from the request it
    // forwards, so a client's own value of an identity header this request did not get is gone.
    if let Ok(value) = HeaderValue::from_str(&absent.join(",")) {
        if !absent.is_empty() {
            headers.insert("x-envoy-auth-headers-to-remove", value);
        }
    }
    headers.insert(crate::ops::request_id::NAME, request_id.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
