//! Forwarding to the route's upstream: URI rewrite, hop-by-hop removal, `X-Forwarded-*`, the
//! Host policy, timeouts, and the pooled client.
//!
//! The request and response bodies are streamed, never collected. Headers that describe the
//! client (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are believed only from a configured trusted
//! proxy; from anyone else they are replaced. Headers that ask a back end to route on a
//! different path (`X-Original-URL`, `X-Rewrite-URL`) are always removed, since the gateway
//! routed on the path it forwards. This step never decides an error response itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::identity::IdentityRules;
use crate::config::file::UpstreamProtocol;
use crate::config::UpstreamDefaults;
use crate::edge::body::{is_body_idle_timeout, is_client_body_error, Body, IdleTimeoutBody};
use crate::edge::headers::{
    has_prefix, is_hop_by_hop, is_one_of, remove_where, strip_hop_by_hop, CLIENT_DESCRIBING,
    METHOD_OVERRIDES, PATH_OVERRIDES, SET_WHEN_FORWARDING,
};
use crate::edge::server::PeerInfo;
use crate::edge::tunnel::ConnectionGuard;
use crate::error::GatewayError;
use crate::ops::metrics::Metrics;
use crate::proxy::route::Route;
use crate::proxy::upgrade::{self, Upgrade};

// Parsed once: a name given as text is parsed (and hashed) again on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled client for the routes that share connect timeout and CA bundle.
#[derive(Clone)]
pub struct UpstreamClient {
    client: HttpsClient,
    protocol: UpstreamProtocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub connect_timeout: Duration,
    pub ca_bundle: Option<PathBuf>,
    pub protocol: UpstreamProtocol,
}

impl ClientKey {
    pub fn of(route: &Route) -> Self {
        ClientKey {
            connect_timeout: route.connect_timeout,
            ca_bundle: route.ca_bundle.clone(),
            protocol: route.upstream_protocol,
        }
    }
}

impl UpstreamClient {
    pub fn new(key: &ClientKey, defaults: &UpstreamDefaults) -> Result<Self, String> {
        let tls = crate::edge::tls::client_config(key.ca_bundle.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(key.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // An h2 route offers only h2 in ALPN, so it never falls back to HTTP/1.1; an http1 route
        // offers no ALPN at all.
        let connector = match key.protocol {
            UpstreamProtocol::Http1 => connector.enable_http1().wrap_connector(http),
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                connector.enable_http2().wrap_connector(http)
            }
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(defaults.pool_idle_timeout)
            .pool_max_idle_per_host(defaults.max_idle_per_host);
        if key.protocol != UpstreamProtocol::Http1 {
            // One multiplexed connection per upstream; pings find a dead peer between requests.
            builder
                .http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .http2_adaptive_window(true);
        }
        Ok(UpstreamClient {
            client: builder.build(connector),
            protocol: key.protocol,
        })
    }
}

/// The parts of the server settings forwarding needs.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    pub body_idle_timeout: Duration,
}

impl ForwardSettings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the peer, or, behind trusted proxies, the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for_list(headers).iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical_ip(ip);
                    if !self.is_trusted(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn forwarded_for_list(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Everything `send` needs about the request besides the request itself.
pub struct Outbound<'a> {
    pub route: &'a Route,
    pub client: &'a UpstreamClient,
    pub settings: &'a ForwardSettings,
    pub peer: PeerInfo,
    /// The normalised path that was routed on.
    pub path: &'a str,
    /// The host the client addressed, with its port, in canonical form (`proxy::host`).
    pub host: Option<&'a str>,
    /// A WebSocket handshake, recognised before hop-by-hop removal.
    pub upgrade: Option<Upgrade>,
    pub upgrade_idle_timeout: Duration,
    /// The identity namespace, also removed from request trailers.
    pub identity: &'a Arc<IdentityRules>,
    pub metrics: &'a Arc<Metrics>,
}

/// The upstream URI: the route's base path, the matched path (prefix stripped if configured)
/// and the original query string.
pub fn upstream_uri(route: &Route, path: &str, query: Option<&str>) -> Result<Uri, GatewayError> {
    // With strip_prefix, `/api` leaves "" and `/api/` leaves "/": the trailing slash survives.
    let rest = if route.strip_prefix {
        path.strip_prefix(route.prefix.as_str()).unwrap_or(path)
    } else {
        path
    };
    let mut path_and_query = String::with_capacity(
        route.upstream.base_path.len() + rest.len() + 2 + query.map_or(0, str::len),
    );
    path_and_query.push_str(&route.upstream.base_path);
    path_and_query.push_str(rest);
    if path_and_query.is_empty() {
        path_and_query.push('/');
    }
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| GatewayError::BadRequest {
            reason: "bad_request_target",
        })
}

fn set_forwarding_headers(out: &Outbound<'_>, headers: &mut HeaderMap) {
    if out.settings.is_trusted(out.peer.addr.ip()) {
        // Only the exact spellings are read from a trusted proxy below; another spelling would
        // reach an upstream that folds `_` into `-` unchecked.
        remove_where(headers, |name| {
            name.contains('_') && is_one_of(name, &SET_WHEN_FORWARDING)
        });
    } else {
        remove_where(headers, |name| {
            has_prefix(name, "x-forwarded-") || is_one_of(name, &CLIENT_DESCRIBING)
        });
    }
    let peer_ip = canonical_ip(out.peer.addr.ip());
    let trusted = out.settings.is_trusted(peer_ip);
    let proto = if out.peer.tls { "https" } else { "http" };
    let client_ip = out.settings.client_ip(headers, peer_ip);

    let mut xff = if trusted {
        forwarded_for_list(headers).join(", ")
    } else {
        String::new()
    };
    if !xff.is_empty() {
        xff.push_str(", ");
    }
    xff.push_str(&peer_ip.to_string());
    headers.remove(X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, value);
    }

    if !(trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(X_FORWARDED_HOST)) {
        headers.remove(X_FORWARDED_HOST);
        if let Some(value) = out.host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(X_FORWARDED_HOST, value);
        }
    }

    let node = match peer_ip {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = out
        .host
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
    {
        element.push_str(&format!(";host=\"{host}\""));
    }
    let mut forwarded = if trusted {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    if !forwarded.is_empty() {
        forwarded.push_str(", ");
    }
    forwarded.push_str(&element);
    headers.remove(header::FORWARDED);
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, value);
    }

    headers.remove(X_REAL_IP);
    if let Ok(value) = HeaderValue::from_str(&client_ip.to_string()) {
        headers.insert(X_REAL_IP, value);
    }
}

/// HTTP/2 may split `cookie` into several fields; an HTTP/1.1 upstream needs one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
        value.set_sensitive(true);
        headers.insert(header::COOKIE, value);
    }
}

/// Sends the request upstream and returns its response, streaming both bodies.
pub async fn send(
    out: Outbound<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let client_upgrade = out.upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let guard = parts.extensions.remove::<Arc<ConnectionGuard>>();
    let mut send_body = true;
    parts.uri = upstream_uri(out.route, out.path, parts.uri.query())?;
    parts.version = match out.client.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
    };
    let mut expected_accept = None;
    if let Some(upgrade) = &out.upgrade {
        if out.client.protocol != UpstreamProtocol::Http1 {
            return Err(GatewayError::BadRequest {
                reason: "upgrade_unsupported",
            });
        }
        expected_accept = Some(upgrade::request_upstream(upgrade, &mut parts)?);
        send_body = matches!(upgrade, Upgrade::Http1);
    }
    remove_where(&mut parts.headers, |name| {
        is_one_of(name, &PATH_OVERRIDES) || is_one_of(name, &METHOD_OVERRIDES)
    });
    set_forwarding_headers(&out, &mut parts.headers);
    join_cookies(&mut parts.headers);
    // Credentials are never indexed by HPACK on an HTTP/2 upstream (RFC 7541 §7.1.3).
    for name in [header::AUTHORIZATION, header::COOKIE] {
        if let header::Entry::Occupied(mut entry) = parts.headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
    if out.route.preserve_host {
        if let Some(value) = out.host.and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(header::HOST, value);
        }
    } else if let Ok(value) = HeaderValue::from_str(out.route.upstream.authority.as_str()) {
        parts.headers.insert(header::HOST, value);
    }
    if parts.headers.contains_key(header::CONTENT_LENGTH) {
        // The upstream must frame the body by the length the gateway framed it by: a value such
        // as `0005` would otherwise pass verbatim, and parsers disagree on such spellings.
        match http_body::Body::size_hint(&body).exact() {
            Some(length) => {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            None => {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
        }
    }
    let allow_underscore = out.route.allow_underscore_headers;
    keep_allowed_trailer_names(&mut parts.headers, out.identity, allow_underscore);
    // A request without a body (most GETs) skips the idle timer and the trailer filter: it
    // can carry neither a frame nor a trailer.
    let body = if send_body && !body.is_end_stream() {
        let identity = out.identity.clone();
        let metrics = out.metrics.clone();
        // Trailers arrive after this function returned, polled by the upstream connection's
        // task: the request's span comes along so the log line names the request.
        let span = tracing::Span::current();
        IdleTimeoutBody::new(body, out.settings.body_idle_timeout)
            .map_frame(move |mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    let _in_request = span.enter();
                    let removed = scrub_trailers(trailers, &identity, allow_underscore);
                    metrics.headers_removed("trailer", removed);
                }
                frame
            })
            .boxed()
    } else {
        crate::edge::body::empty()
    };
    let request = Request::from_parts(parts, body);

    let response = match tokio::time::timeout(
        out.route.response_timeout,
        out.client.client.request(request),
    )
    .await
    {
        Err(_) => return Err(GatewayError::UpstreamTimeout),
        Ok(Err(error)) => return Err(classify(&error)),
        Ok(Ok(response)) => response,
    };
    let h2_tunnel = matches!(out.upgrade, Some(Upgrade::H2ExtendedConnect));
    if h2_tunnel && response.status().is_success() {
        // A 2xx to an extended CONNECT means "tunnel open" to the client, but the upstream did
        // not switch protocols: nothing would feed that tunnel.
        return Err(GatewayError::UpstreamFailed {
            detail: format!(
                "upstream answered a WebSocket handshake with {}",
                response.status()
            ),
        });
    }
    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
        (client_upgrade, response.status())
    {
        upgrade::check_switch(response.headers(), expected_accept.as_deref())?;
        return Ok(upgrade::tunnel(
            client_upgrade,
            response,
            out.upgrade_idle_timeout,
            h2_tunnel,
            guard,
            out.metrics.tunnels_open.clone(),
        ));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

/// Fields RFC 9110 §6.5.1 forbids in trailers (framing, routing, authentication, content
/// description): an upstream that merges trailers into headers must not meet them there.
const FORBIDDEN_IN_TRAILERS: [&str; 13] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "trailer",
    "te",
    "expect",
    "max-forwards",
];

/// Whether a request trailer named `name` is removed: every name the gateway removes from
/// request headers (identity namespace, hop-by-hop, forwarding and override names, `_` spellings
/// unless the route allows them), whatever the peer, since trailers are never read here.
fn trailer_removed(name: &str, identity: &IdentityRules, allow_underscore: bool) -> bool {
    (!allow_underscore && name.contains('_'))
        || identity.in_namespace(name)
        || is_hop_by_hop(name)
        || has_prefix(name, "x-forwarded-")
        || is_one_of(name, &SET_WHEN_FORWARDING)
        || is_one_of(name, &CLIENT_DESCRIBING)
        || is_one_of(name, &PATH_OVERRIDES)
        || is_one_of(name, &METHOD_OVERRIDES)
        || is_one_of(name, &FORBIDDEN_IN_TRAILERS)
}

/// Returns how many trailers were removed.
fn scrub_trailers(
    trailers: &mut HeaderMap,
    identity: &IdentityRules,
    allow_underscore: bool,
) -> usize {
    let removed = remove_where(trailers, |name| {
        trailer_removed(name, identity, allow_underscore)
    });
    if !removed.is_empty() {
        let names: Vec<&str> = removed.iter().take(8).map(|n| n.as_str()).collect();
        tracing::warn!(trailers = %names.join(","), count = removed.len(),
            "stripped request trailers the gateway does not pass (likely spoof)");
    }
    removed.len()
}

/// The `Trailer` announcement keeps only names that will be sent, so an HTTP/1.1 upstream is
/// not told to expect a trailer that was removed.
fn keep_allowed_trailer_names(
    headers: &mut HeaderMap,
    identity: &IdentityRules,
    allow_underscore: bool,
) {
    if !headers.contains_key(header::TRAILER) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && !trailer_removed(name, identity, allow_underscore))
        .collect();
    headers.remove(header::TRAILER);
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        if !kept.is_empty() {
            headers.insert(header::TRAILER, value);
        }
    }
}

fn classify(error: &hyper_util::client::legacy::Error) -> GatewayError {
    if is_body_idle_timeout(error) {
        return GatewayError::RequestBodyTimeout;
    }
    if is_client_body_error(error) {
        return GatewayError::RequestBodyInvalid;
    }
    let detail = error_chain(error);
    if error.is_connect() {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return GatewayError::UpstreamConnectTimeout;
            }
            source = e.source();
        }
        return GatewayError::UpstreamUnreachable { detail };
    }
    GatewayError::UpstreamFailed { detail }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::UpstreamUrl;
    use crate::proxy::route::PathRules;

    fn route(prefix: &str, base: &str, strip: bool) -> Route {
        Route {
            name: Arc::from("r"),
            host: None,
            prefix: prefix.into(),
            methods: None,
            upstream: UpstreamUrl {
                scheme: http::uri::Scheme::HTTP,
                authority: http::uri::Authority::from_static("up:80"),
                base_path: base.into(),
            },
            strip_prefix: strip,
            preserve_host: false,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            ca_bundle: None,
            path_rules: PathRules::default(),
            upstream_protocol: Default::default(),
            allow_underscore_headers: false,
            auth: Default::default(),
        }
    }

    #[test]
    fn uri_rewrite() {
        let cases = [
            (
                "/api",
                "",
                false,
                "/api/x",
                Some("a=1"),
                "http://up:80/api/x?a=1",
            ),
            ("/api", "", true, "/api/x", None, "http://up:80/x"),
            ("/api", "", true, "/api", None, "http://up:80/"),
            ("/api", "", true, "/api/", None, "http://up:80/"),
            ("/api", "/base", true, "/api", None, "http://up:80/base"),
            (
                "/api",
                "/base",
                true,
                "/api/x/",
                None,
                "http://up:80/base/x/",
            ),
            (
                "/api",
                "/base",
                false,
                "/api/x",
                None,
                "http://up:80/base/api/x",
            ),
            ("/", "/base", false, "/", None, "http://up:80/base/"),
            ("/", "", false, "/", None, "http://up:80/"),
        ];
        for (prefix, base, strip, path, query, expected) in cases {
            let uri = upstream_uri(&route(prefix, base, strip), path, query).expect("valid uri");
            assert_eq!(
                uri.to_string(),
                expected,
                "prefix {prefix} base {base} strip {strip} path {path}"
            );
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret, X-Other"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("gzip, trailers"));
        headers.insert("upgrade", HeaderValue::from_static("h2c"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept", "te"]);
        assert_eq!(
            headers.get("te").map(HeaderValue::as_bytes),
            Some(&b"trailers"[..])
        );
        // RFC 9110 asks a client sending TE to list it in Connection: trailers must survive.
        let mut listed = HeaderMap::new();
        listed.insert("connection", HeaderValue::from_static("te"));
        listed.insert("te", HeaderValue::from_static("trailers"));
        listed.insert("trailer", HeaderValue::from_static("grpc-status"));
        strip_hop_by_hop(&mut listed);
        assert_eq!(
            listed.get("te").map(HeaderValue::as_bytes),
            Some(&b"trailers"[..])
        );
        assert!(listed.contains_key("trailer"));
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let settings = ForwardSettings {
            trusted_proxies: Arc::from(vec!["10.0.0.0/8".parse::<ipnet::IpNet>().expect("cidr")]),
            body_idle_timeout: Duration::from_secs(1),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.7"),
        );
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(settings.client_ip(&headers, peer).to_string(), "2.2.2.2");
        let stranger: IpAddr = "8.8.8.8".parse().expect("ip");
        assert_eq!(
            settings.client_ip(&headers, stranger).to_string(),
            "8.8.8.8"
        );
    }
}
