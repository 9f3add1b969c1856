//! Route bypass and identity spoofing through the edges of HTTP: hosts that a framework reads
//! differently from the gateway, header names that CGI/WSGI fold (`_` for `-`), and request
//! trailers. Each case checks the status, the reason, and what the upstream received.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const LONG: Duration = Duration::from_secs(15);

/// Two routes on one listener: `admin.example.com` goes to `admin`, every other host to
/// `public`. A host the gateway cannot read exactly must reach neither.
async fn two_upstreams() -> (Gateway, String, String) {
    let admin = echo().await;
    let public = echo().await;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "admin"
host = "admin.example.com"
path_prefix = "/"
upstream = "http://{admin}"
auth = "public"

[[route]]
name = "fallback"
path_prefix = "/"
upstream = "http://{public}"
auth = "public"
"#
    ))
    .await;
    (gw, admin.to_string(), public.to_string())
}

/// Every shape from the security review, as a Host header; `raw` bytes are sent as they are.
const BAD_HOSTS: [&str; 17] = [
    "admin.example.com:80:",
    "admin.example.com:",
    "[x],admin.example.com",
    "[x]\\",
    "[::1]x",
    "[::1]:80:",
    "[v1.x]",
    ".example.com",
    ".admin.example.com",
    "admin..example.com",
    "a,admin.example.com",
    "admin.example.com:65536",
    "admin.example.com:+80",
    "admin.example.com:8x",
    "exa%6Dple.com",
    "user@admin.example.com",
    "admin.example.com/x",
];

fn assert_bad_host(response: &str, what: &str) {
    assert_eq!(raw_status(response), 400, "{what}: {response:?}");
    // hyper refuses some request targets itself, before the pipeline, with an empty body; when
    // the pipeline answered, it must be for this reason.
    if response.contains("application/json") {
        assert_eq!(raw_json(response)["reason"], "bad_host", "{what}");
    }
}

#[tokio::test]
async fn malformed_hosts_are_refused_over_http1_and_absolute_form() {
    let (gw, _, _) = two_upstreams().await;
    let addr = gw.addrs[0];
    for host in BAD_HOSTS {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(addr, request.as_bytes(), LONG).await;
        assert_eq!(raw_status(&response), 400, "Host: {host}: {response:?}");
        assert_eq!(raw_json(&response)["reason"], "bad_host", "Host: {host}");

        if host.contains('/') {
            // In a target the slash starts the path: a different, well-formed URL.
            continue;
        }
        let request = format!(
            "GET http://{host}/x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n"
        );
        let response = raw_exchange(addr, request.as_bytes(), LONG).await;
        assert_bad_host(&response, &format!("absolute-form http://{host}/x"));
    }
    // Non-ASCII bytes in Host.
    let response = raw_exchange(
        addr,
        b"GET /x HTTP/1.1\r\nHost: adm\xc3\xafn.example.com\r\nConnection: close\r\n\r\n",
        LONG,
    )
    .await;
    assert_eq!(raw_json(&response)["reason"], "bad_host");
    // An absolute-form target and a Host header that name different hosts.
    let response = raw_exchange(
        addr,
        b"GET http://admin.example.com/x HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n",
        LONG,
    )
    .await;
    assert_eq!(raw_json(&response)["reason"], "bad_host");
}

#[tokio::test]
async fn hosts_are_forwarded_in_canonical_form() {
    let (gw, admin, public) = two_upstreams().await;
    let addr = gw.addrs[0];
    for (host, upstream, forwarded) in [
        ("ADMIN.Example.COM.:080", &admin, "admin.example.com:80"),
        ("admin.example.com", &admin, "admin.example.com"),
        ("[0:0::1]:8080", &public, "[::1]:8080"),
        ("other.example.com", &public, "other.example.com"),
    ] {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(addr, request.as_bytes(), LONG).await;
        assert_eq!(raw_status(&response), 200, "Host: {host}: {response:?}");
        let seen = raw_json(&response);
        assert_eq!(
            seen["headers"]["host"][0],
            upstream.as_str(),
            "Host: {host}"
        );
        assert_eq!(seen["headers"]["x-forwarded-host"][0], forwarded);
        let forwarded_header = seen["headers"]["forwarded"][0].as_str().unwrap();
        assert!(
            forwarded_header.ends_with(&format!("host=\"{forwarded}\"")),
            "{forwarded_header}"
        );
    }
}

/// HTTP/2 `:authority`, sent on a raw h2c connection so the client's own pool cannot rewrite it.
async fn h2_with_authority(addr: std::net::SocketAddr, authority: &str) -> Option<Reply> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/x")
        .build()
        .ok()?;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(LONG, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    Some(collect(response).await)
}

#[tokio::test]
async fn malformed_authorities_are_refused_over_http2() {
    let (gw, admin, _) = two_upstreams().await;
    let addr = gw.addrs[0];
    let mut sent = 0;
    for host in BAD_HOSTS {
        match h2_with_authority(addr, host).await {
            // http's authority parser, which the HTTP/2 server applies to `:authority` before
            // the pipeline, refuses it: such a stream is reset and never reaches a route.
            None => assert!(host.parse::<http::uri::Authority>().is_err()),
            Some(reply) => {
                sent += 1;
                assert_eq!(reply.status, 400, ":authority {host}");
                assert_eq!(reply.reason(), "bad_host", ":authority {host}");
            }
        }
    }
    // The shapes that matter most are expressible in HTTP/2 and reach the pipeline.
    assert!(
        sent >= 8,
        "only {sent} shapes reached the gateway over HTTP/2"
    );
    let reply = h2_with_authority(addr, "Admin.Example.com.:443")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("host"), [admin]);
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        ["admin.example.com:443"]
    );
}

/// A WSGI upstream (Python's wsgiref, as CGI-style servers read headers: `_` and `-` become the
/// same `HTTP_*` variable), answering with every `HTTP_*` variable it saw.
struct Wsgi {
    child: Child,
    port: u16,
}

impl Drop for Wsgi {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const WSGI_APP: &str = r#"
import json
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k == "REQUEST_METHOD"}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;

async fn wsgi() -> Wsgi {
    let mut child = Command::new("python3")
        .args(["-c", WSGI_APP])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed for the WSGI upstream");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(LONG, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the WSGI upstream did not start")
        .unwrap();
    let port = line.trim().parse().unwrap();
    Wsgi { child, port }
}

#[tokio::test]
async fn underscore_spellings_never_reach_a_wsgi_upstream() {
    let app = wsgi().await;
    let port = app.port;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "default"
path_prefix = "/default"
methods = ["POST"]
upstream = "http://127.0.0.1:{port}"
auth = "public"

[[route]]
name = "underscores"
path_prefix = "/underscores"
methods = ["POST"]
upstream = "http://127.0.0.1:{port}"
auth = "public"
allow_underscore_headers = true
"#
    ))
    .await;
    let addr = gw.addrs[0];
    let spoofed = [
        ("X_HTTP_Method_Override", "DELETE"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Forwarded_Proto", "https"),
        ("X_Forwarded_Host", "admin.example.com"),
        ("X_Forwarded_Prefix", "/admin"),
        ("X_Original_URL", "/admin/delete"),
        ("X_Client_IP", "6.6.6.6"),
        ("X_Real_IP", "6.6.6.6"),
        ("X_Auth_Subject", "root"),
        ("Keep_Alive", "timeout=1"),
    ];
    for route in ["default", "underscores"] {
        let mut request = format!(
            "POST /{route}/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nConnection: close\r\nX_Custom_Thing: kept\r\n"
        );
        for (name, value) in spoofed {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let response = raw_exchange(addr, request.as_bytes(), LONG).await;
        assert_eq!(raw_status(&response), 200, "{route}: {response:?}");
        let environ = raw_json(&response);
        assert_eq!(environ["REQUEST_METHOD"], "POST");
        // The upstream reads only what the gateway set, in the spelling it set.
        assert_eq!(environ["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{route}");
        assert_eq!(environ["HTTP_X_FORWARDED_PROTO"], "http", "{route}");
        assert_eq!(environ["HTTP_X_FORWARDED_HOST"], "gw.test", "{route}");
        assert_eq!(environ["HTTP_X_REAL_IP"], "127.0.0.1", "{route}");
        for absent in [
            "HTTP_X_HTTP_METHOD_OVERRIDE",
            "HTTP_X_FORWARDED_PREFIX",
            "HTTP_X_ORIGINAL_URL",
            "HTTP_X_CLIENT_IP",
            "HTTP_X_AUTH_SUBJECT",
            "HTTP_KEEP_ALIVE",
        ] {
            assert!(
                environ.get(absent).is_none(),
                "{route}: {absent} reached the upstream"
            );
        }
        // A header the gateway has no rule for passes only where the route allows `_`.
        let custom = environ.get("HTTP_X_CUSTOM_THING").and_then(|v| v.as_str());
        match route {
            "default" => assert_eq!(custom, None),
            _ => assert_eq!(custom, Some("kept")),
        }
    }
}

#[tokio::test]
async fn underscore_headers_from_a_trusted_proxy_are_not_read_either() {
    let app = wsgi().await;
    let port = app.port;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
name = "underscores"
path_prefix = "/"
upstream = "http://127.0.0.1:{port}"
auth = "public"
allow_underscore_headers = true
"#
    ))
    .await;
    let request = "GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nX-Forwarded-For: 10.1.1.1\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil.test\r\n\r\n";
    let response = raw_exchange(gw.addrs[0], request.as_bytes(), LONG).await;
    let environ = raw_json(&response);
    assert_eq!(environ["HTTP_X_FORWARDED_FOR"], "10.1.1.1, 127.0.0.1");
    assert_eq!(environ["HTTP_X_FORWARDED_HOST"], "gw.test");
}

/// Trailers spelled like identity, forwarding and override headers, in every spelling.
const SPOOFED_TRAILERS: [(&str, &str); 8] = [
    ("x-auth-subject", "root"),
    ("x-user-id", "0"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-original-url", "/admin"),
    ("x_auth_subject", "root"),
    ("x_forwarded_for", "6.6.6.6"),
    ("authorization", "Bearer forged"),
    ("x-keep", "yes"),
];

async fn trailer_gateway(protocol: &str) -> Gateway {
    let up = echo().await;
    start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"

[auth.identity]
strip = ["x-user-id"]

[[route]]
name = "trailers"
path_prefix = "/"
upstream = "http://{up}"
upstream_protocol = "{protocol}"
auth = "public"
"#
    ))
    .await
}

fn assert_only_kept(seen: &serde_json::Value) {
    let trailers = seen["trailers"].as_object().unwrap();
    let names: Vec<&String> = trailers.keys().collect();
    assert_eq!(names, ["x-keep"], "trailers at the upstream: {trailers:?}");
    assert_eq!(trailers["x-keep"][0], "yes");
}

#[tokio::test]
async fn chunked_request_trailers_are_scrubbed_for_every_upstream_protocol() {
    for protocol in ["h2c", "http1"] {
        let gw = trailer_gateway(protocol).await;
        let names: Vec<&str> = SPOOFED_TRAILERS.iter().map(|(n, _)| *n).collect();
        let mut request = format!(
            "POST /x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close, te\r\nTrailer: {}\r\n\r\n5\r\nhello\r\n0\r\n",
            names.join(", ")
        );
        for (name, value) in SPOOFED_TRAILERS {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let response = raw_exchange(gw.addrs[0], request.as_bytes(), LONG).await;
        assert_eq!(raw_status(&response), 200, "{protocol}: {response:?}");
        let seen = raw_json(&response);
        assert_eq!(seen["body_bytes"], 5);
        assert_only_kept(&seen);
        if protocol == "http1" {
            // The announcement names only what is sent.
            assert_eq!(seen["headers"]["trailer"][0], "x-keep");
        }
    }
}

#[tokio::test]
async fn grpc_request_trailers_over_http2_are_scrubbed() {
    let gw = trailer_gateway("h2c").await;
    let mut trailers = HeaderMap::new();
    for (name, value) in SPOOFED_TRAILERS {
        trailers.append(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let stream = TcpStream::connect(gw.addrs[0]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/pkg.Service/Method", gw.addrs[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(LONG, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let reply = collect(response).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["body_bytes"], 5);
    assert_only_kept(&seen);
}
