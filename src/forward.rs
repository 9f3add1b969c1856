//! Forwarding to the route's upstream: URI rewrite, hop-by-hop removal, `X-Forwarded-*`, the
//! Host policy, timeouts, and the pooled client.
//!
//! The request and response bodies are streamed, never collected. Headers that describe the
//! client (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are believed only from a configured trusted
//! proxy; from anyone else they are replaced. Headers that ask a back end to route on a
//! different path (`X-Original-URL`, `X-Rewrite-URL`) are always removed, since the gateway
//! routed on the path it forwards. This step never decides an error response itself.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::body::{is_body_idle_timeout, Body, IdleTimeoutBody};
use crate::config::file::UpstreamProtocol;
use crate::config::UpstreamDefaults;
use crate::error::GatewayError;
use crate::route::Route;
use crate::tunnel::ConnectionGuard;

/// What the gateway knows about the TCP peer of a request.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The standard hop-by-hop fields (RFC 9110 §7.6.1) plus the legacy ones still seen in the wild.
/// `Trailer` is not among them: it announces the trailers HTTP/1.1 peers will send, and hyper
/// writes only declared trailers.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Ask a back end to treat the request as another method than the one the route allowed.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Describe the client and are believed only from a trusted proxy; the `x-forwarded-` family is
/// matched by prefix (Prefix, Port, Server, Ssl, Scheme...).
const CLIENT_DESCRIBING: [&str; 6] = [
    "front-end-https",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-real-ip",
];

/// Asks a back end to route on another path than the one the gateway matched.
const PATH_OVERRIDES: [&str; 4] = [
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-http-destination-url",
];

/// Removes hop-by-hop headers, including every name listed in `Connection`. `te: trailers` is the
/// one hop-by-hop value that HTTP/2 allows and gRPC needs, so it alone survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Read first: a client that lists TE in Connection (as RFC 9110 asks) keeps `te: trailers`.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

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
        let tls = crate::tls::client_config(key.ca_bundle.as_deref())?;
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
        .get_all("x-forwarded-for")
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
    /// The host the client addressed, with its port, as received.
    pub original_host: Option<&'a str>,
    /// A WebSocket handshake, recognised before hop-by-hop removal.
    pub upgrade: Option<Upgrade>,
    pub upgrade_idle_timeout: Duration,
}

/// A WebSocket handshake the gateway will pass on. The upstream always gets an HTTP/1.1
/// `Upgrade: websocket`; an HTTP/2 client's extended CONNECT (RFC 8441) is translated to it.
#[derive(Debug, Clone)]
pub enum Upgrade {
    /// `Connection: upgrade` + `Upgrade: websocket` on HTTP/1.1.
    Http1,
    /// `CONNECT` with `:protocol = websocket` on HTTP/2.
    H2ExtendedConnect,
}

/// Recognises a WebSocket handshake; any other upgrade (e.g. `h2c`) is not passed on.
pub fn websocket_upgrade(req: &Request<Incoming>) -> Option<Upgrade> {
    if req.version() == Version::HTTP_2 {
        let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
        let websocket = req.method() == http::Method::CONNECT
            && protocol.as_str().eq_ignore_ascii_case("websocket");
        return websocket.then_some(Upgrade::H2ExtendedConnect);
    }
    // RFC 6455 §4.1: the opening handshake is a GET; any other method's Upgrade is dropped.
    if req.version() != Version::HTTP_11 || req.method() != http::Method::GET {
        return None;
    }
    let headers = req.headers();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(header::UPGRADE)?;
    let websocket = upgrade.to_str().is_ok_and(|v| {
        v.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    });
    (connection_upgrade && websocket).then_some(Upgrade::Http1)
}

/// RFC 6455 §4.2.2: the accept value the upstream must answer a key with.
fn websocket_accept(key: &str) -> String {
    use base64::Engine;
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
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
    if !out.settings.is_trusted(out.peer.addr.ip()) {
        let spoofable: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                name.as_str().starts_with("x-forwarded-")
                    || CLIENT_DESCRIBING.contains(&name.as_str())
            })
            .cloned()
            .collect();
        for name in spoofable {
            headers.remove(name);
        }
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
    headers.remove("x-forwarded-for");
    if let Ok(value) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", value);
    }

    if !(trusted && headers.contains_key("x-forwarded-proto")) {
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key("x-forwarded-host")) {
        headers.remove("x-forwarded-host");
        if let Some(value) = out
            .original_host
            .and_then(|h| HeaderValue::from_str(h).ok())
        {
            headers.insert("x-forwarded-host", value);
        }
    }

    let node = match peer_ip {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = out
        .original_host
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

    headers.remove("x-real-ip");
    if let Ok(value) = HeaderValue::from_str(&client_ip.to_string()) {
        headers.insert("x-real-ip", value);
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
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        match upgrade {
            Upgrade::Http1 => {
                // Only websocket goes upstream, whatever else the client listed (an h2c upgrade
                // would open a connection that bypasses routing and authentication).
                parts
                    .headers
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                let key = parts
                    .headers
                    .get(header::SEC_WEBSOCKET_KEY)
                    .and_then(|k| k.to_str().ok())
                    .ok_or(GatewayError::BadRequest {
                        reason: "bad_websocket_handshake",
                    })?;
                expected_accept = Some(websocket_accept(key));
            }
            Upgrade::H2ExtendedConnect => {
                // The HTTP/2 stream is the tunnel: the upstream gets a body-less GET handshake
                // with a key of our own, and must prove it speaks WebSocket with the accept.
                use base64::Engine;
                let mut nonce = [0u8; 16];
                aws_lc_rs::rand::fill(&mut nonce).map_err(|_| GatewayError::UpstreamFailed {
                    detail: "no randomness for a WebSocket key".into(),
                })?;
                let key = base64::engine::general_purpose::STANDARD.encode(nonce);
                expected_accept = Some(websocket_accept(&key));
                parts.method = http::Method::GET;
                parts
                    .headers
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                if let Ok(value) = HeaderValue::from_str(&key) {
                    parts.headers.insert(header::SEC_WEBSOCKET_KEY, value);
                }
                parts
                    .headers
                    .entry(header::SEC_WEBSOCKET_VERSION)
                    .or_insert(HeaderValue::from_static("13"));
                send_body = false;
            }
        }
    }
    for name in PATH_OVERRIDES.iter().chain(&METHOD_OVERRIDES) {
        parts.headers.remove(*name);
    }
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
        if let Some(value) = out
            .original_host
            .and_then(|h| HeaderValue::from_str(h).ok())
        {
            parts.headers.insert(header::HOST, value);
        }
    } else if let Ok(value) = HeaderValue::from_str(out.route.upstream.authority.as_str()) {
        parts.headers.insert(header::HOST, value);
    }
    let body = if send_body {
        IdleTimeoutBody::new(body, out.settings.body_idle_timeout).boxed()
    } else {
        crate::body::empty()
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
        // The tunnel opens only onto a WebSocket that proved it read this handshake.
        let switched_to_websocket = response
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
        let accepted = expected_accept
            .as_ref()
            .is_some_and(|expected| accept.is_some_and(|a| a.as_bytes() == expected.as_bytes()));
        if !switched_to_websocket || !accepted {
            return Err(GatewayError::UpstreamFailed {
                detail: "upstream switched protocols without a valid WebSocket handshake".into(),
            });
        }
        let h2 = h2_tunnel;
        return Ok(tunnel(
            client_upgrade,
            response,
            out.upgrade_idle_timeout,
            h2,
            guard,
        ));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

/// Answers the client's handshake with the upstream's `101` and splices the two upgraded
/// connections once both sides have switched.
fn tunnel(
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut response: Response<Incoming>,
    idle: Duration,
    client_is_h2: bool,
    guard: Option<Arc<ConnectionGuard>>,
) -> Response<Body> {
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if client_is_h2 {
        // RFC 8441 §5: an extended CONNECT succeeds with a 200 and no upgrade headers.
        parts.status = StatusCode::OK;
        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    } else {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(upgrade) = upgrade {
            parts.headers.insert(header::UPGRADE, upgrade);
        }
    }
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let splice = crate::tunnel::splice(TokioIo::new(client), TokioIo::new(upstream), idle);
        // Held for the tunnel's life: it counts against max_connections and the drain, and a
        // WebSocket cannot be drained gracefully, so shutdown closes it.
        let stopping = async {
            match &guard {
                Some(guard) => guard.stopping().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = splice => outcome,
            () = stopping => Err(std::io::Error::other("gateway shutting down")),
        };
        match outcome {
            Ok((up, down)) => {
                tracing::debug!(
                    bytes_to_upstream = up,
                    bytes_to_client = down,
                    "tunnel closed"
                )
            }
            Err(error) => tracing::debug!(%error, "tunnel ended"),
        }
    });
    Response::from_parts(parts, crate::body::empty())
}

fn classify(error: &hyper_util::client::legacy::Error) -> GatewayError {
    if is_body_idle_timeout(error) {
        return GatewayError::RequestBodyTimeout;
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
    use crate::route::PathRules;

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
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
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
            "x-forwarded-for",
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
