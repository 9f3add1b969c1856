//! The foundation end to end: real gateways, real echo upstreams, real sockets on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(15);

fn listener_plain() -> &'static str {
    "[[listener]]\naddress = \"127.0.0.1:0\"\n"
}

async fn raw_get(addr: std::net::SocketAddr, target: &str) -> String {
    let request = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes(), LONG).await
}

#[tokio::test]
async fn routes_by_host_path_and_method() {
    let a = echo().await;
    let b = echo().await;
    let c = echo().await;
    let gw = start(&format!(
        r#"{}
[[route]]
name = "any-root"
path_prefix = "/"
upstream = "http://{a}"
auth = "public"

[[route]]
name = "wild"
host = "*.example.com"
path_prefix = "/"
upstream = "http://{b}"
auth = "public"

[[route]]
name = "exact-api"
host = "api.example.com"
path_prefix = "/v1"
methods = ["GET", "POST"]
upstream = "http://{c}"
auth = "public"

[[route]]
name = "exact-api-delete"
host = "api.example.com"
path_prefix = "/v1"
methods = ["DELETE"]
upstream = "http://{a}"
auth = "public"
"#,
        listener_plain()
    ))
    .await;
    let gw_addr = gw.addrs[0];
    let client = h1_client();
    let call = |host: &'static str, method: &'static str, path: &'static str| {
        let client = client.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{gw_addr}{path}"))
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send(&client, req).await
        }
    };
    // The Host the upstream sees names the upstream, so it tells which route was taken.
    let cases: [(&str, &str, &str, String); 7] = [
        ("api.example.com", "GET", "/v1/users", c.to_string()),
        ("API.Example.com:443", "POST", "/v1", c.to_string()),
        ("api.example.com", "DELETE", "/v1/users/1", a.to_string()),
        ("api.example.com", "GET", "/v2", b.to_string()),
        ("www.example.com", "GET", "/v1", b.to_string()),
        ("example.com", "GET", "/v1", a.to_string()),
        ("other.test", "PUT", "/anything", a.to_string()),
    ];
    for (host, method, path, upstream) in cases {
        let reply = call(host, method, path).await;
        assert_eq!(reply.status, 200, "{method} {host}{path}");
        assert_eq!(
            reply.upstream_header("host"),
            vec![upstream],
            "{method} {host}{path}"
        );
        assert_eq!(reply.upstream_path(), path);
    }
    let reply = call("api.example.com", "PATCH", "/v1/users").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.reason(), "method_not_allowed");
    assert_eq!(reply.headers["allow"], "DELETE, GET, HEAD, POST");
}

#[tokio::test]
async fn path_table_status_and_forwarded_path() {
    let up = echo().await;
    let gw = start(&format!(
        r#"{}
[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://{up}"
auth = "public"

[[route]]
name = "admin"
path_prefix = "/admin"
upstream = "http://{up}/internal"
auth = "public"
strip_prefix = true

[[route]]
name = "files"
path_prefix = "/files"
upstream = "http://{up}"
auth = "public"
allow_encoded_slash = true
allow_path_parameters = true
"#,
        listener_plain()
    ))
    .await;
    let addr = gw.addrs[0];
    // (request target, status, reason or path the upstream received)
    let table: &[(&str, u16, &str)] = &[
        ("/api", 200, "/api"),
        ("/api/", 200, "/api/"),
        ("/api/x", 200, "/api/x"),
        ("/apix", 404, "no_route"),
        ("/administrator", 404, "no_route"),
        ("/ApI/x", 404, "no_route"),
        ("/", 404, "no_route"),
        ("/api/x/../y", 200, "/api/y"),
        ("/api/../admin/panel", 200, "/internal/panel"),
        ("/api/%2e%2e/admin", 200, "/internal"),
        ("/api/%2E%2E/%2e%2e/admin/", 200, "/internal/"),
        ("/api/./x/.", 200, "/api/x/"),
        ("/../../api/etc", 200, "/api/etc"),
        ("//api//x", 200, "/api/x"),
        ("//admin", 200, "/internal"),
        ("/api/%61%62c", 200, "/api/abc"),
        ("/api/a%3fb", 200, "/api/a%3Fb"),
        ("/api/x?q=%2F..&r=1", 200, "/api/x?q=%2F..&r=1"),
        ("/api/a%2Fb", 400, "encoded_slash"),
        ("/api/a%2fb", 400, "encoded_slash"),
        ("/api/..%2fadmin", 400, "encoded_slash"),
        ("/api/a%5Cb", 400, "encoded_backslash"),
        ("/api/a\\b", 400, "encoded_backslash"),
        ("/api/a%00b", 400, "encoded_nul"),
        // The segment is "api;jsessionid=1", which no prefix matches.
        ("/api;jsessionid=1/x", 404, "no_route"),
        ("/api/x;jsessionid=1/y", 400, "path_parameters"),
        ("/api/x;y", 400, "path_parameters"),
        ("/api/a%zz", 400, "bad_percent_encoding"),
        ("/api/a%2", 400, "bad_percent_encoding"),
        ("/files/a%2Fb", 200, "/files/a%2Fb"),
        ("/files/a;v=1/b", 200, "/files/a;v=1/b"),
        ("/files/a%5Cb", 400, "encoded_backslash"),
    ];
    for &(target, status, expected) in table {
        let response = raw_get(addr, target).await;
        assert_eq!(raw_status(&response), status, "{target}: {response}");
        let json = raw_json(&response);
        if status == 200 {
            assert_eq!(json["path"], expected, "{target}");
        } else {
            assert_eq!(json["reason"], expected, "{target}");
        }
    }
}

#[tokio::test]
async fn raw_utf8_in_the_path_is_routed_and_forwarded_percent_encoded() {
    let up = echo().await;
    let gw = start(&format!(
        r#"{}
[[route]]
name = "cafe"
path_prefix = "/api/caf%C3%A9"
upstream = "http://{up}/base"
auth = "public"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://{up}/other"
auth = "public"
"#,
        listener_plain()
    ))
    .await;
    // Raw bytes on the wire (curl would encode them first); (target, path the upstream received).
    let table: &[(&[u8], &str)] = &[
        (b"/api/caf\xc3\xa9", "/base/api/caf%C3%A9"),
        (b"/api/caf%c3%a9", "/base/api/caf%C3%A9"),
        (b"/api/caf%C3%A9", "/base/api/caf%C3%A9"),
        (b"/api/caf\xc3\xa9/x/../y", "/base/api/caf%C3%A9/y"),
        (b"/api/caf\xc3\xa9s", "/other/api/caf%C3%A9s"),
        // Byte for byte: the decomposed spelling of the same word is another path.
        (b"/api/cafe\xcc\x81", "/other/api/cafe%CC%81"),
    ];
    for &(target, expected) in table {
        let request = [
            b"GET ".as_slice(),
            target,
            b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let response = raw_exchange(gw.addrs[0], &request, LONG).await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!(raw_status(&response), 200, "{shown}: {response}");
        assert_eq!(raw_json(&response)["path"], expected, "{shown}");
    }
}

#[tokio::test]
async fn not_found_and_no_host() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"only\"\nhost = \"svc.test\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let addr = gw.addrs[0];
    let response = raw_get(addr, "/x").await;
    assert_eq!(raw_status(&response), 404);
    assert!(response
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    assert_eq!(raw_json(&response)["reason"], "no_route");
    let response = raw_exchange(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", LONG).await;
    assert_eq!(raw_status(&response), 400);
    assert_eq!(raw_json(&response)["reason"], "missing_host");
    let two_hosts =
        b"GET / HTTP/1.1\r\nHost: svc.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(addr, two_hosts, LONG).await;
    assert_eq!(raw_status(&response), 400);
    assert_eq!(raw_json(&response)["reason"], "bad_host");
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_with_reasons() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let gw = start(&format!(
        r#"{}
[[route]]
name = "down"
path_prefix = "/down"
upstream = "http://{closed}"
auth = "public"

[[route]]
name = "slow"
path_prefix = "/slow"
upstream = "http://{silent_addr}"
auth = "public"
response_timeout = "300ms"
"#,
        listener_plain()
    ))
    .await;
    let client = h1_client();
    let reply = send(&client, get(&format!("http://{}/down", gw.addrs[0]))).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.reason(), "upstream_unreachable");
    let reply = send(&client, get(&format!("http://{}/slow", gw.addrs[0]))).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.reason(), "upstream_timeout");

    // gRPC callers get the same decisions as grpc-status in an HTTP 200.
    let grpc = |path: &str| {
        Request::post(format!("http://{}{path}", gw.addrs[0]))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let h2c = h2c_client();
    for (path, code) in [("/down", "14"), ("/slow", "4"), ("/nothing", "12")] {
        let reply = send(&h2c, grpc(path)).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.headers["grpc-status"], code, "{path}");
        assert!(reply.headers.contains_key("grpc-message"), "{path}");
    }
}

#[tokio::test]
async fn hop_by_hop_and_spoofable_headers_are_removed() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let req = Request::get(format!("http://{}/x", gw.addrs[0]))
        .header("connection", "x-secret, keep-alive")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-original-url", "/admin")
        .header("x-rewrite-url", "/admin")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(reply.upstream_header("x-kept"), vec!["yes"]);
    assert_eq!(reply.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(reply.upstream_header("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(reply.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        vec![gw.addrs[0].to_string()]
    );
    assert_eq!(
        reply.upstream_header("forwarded"),
        vec![format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addrs[0])]
    );
    // The default Host policy: the upstream's own authority.
    assert_eq!(reply.upstream_header("host"), vec![up.to_string()]);
}

#[tokio::test]
async fn trusted_proxy_headers_are_kept_and_extended() {
    let up = echo().await;
    let gw = start(&format!(
        r#"[server]
trusted_proxies = ["127.0.0.1/32"]
{}
[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
auth = "public"
preserve_host = true
"#,
        listener_plain()
    ))
    .await;
    let req = Request::get(format!("http://{}/x", gw.addrs[0]))
        .header("host", "public.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(
        reply.upstream_header("x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(reply.upstream_header("x-real-ip"), vec!["203.0.113.9"]);
    assert_eq!(reply.upstream_header("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        reply.upstream_header("x-forwarded-host"),
        vec!["www.example.com"]
    );
    assert_eq!(reply.upstream_header("host"), vec!["public.example.com"]);
}

#[tokio::test]
async fn tls_http1_and_http2_and_plaintext_h2c() {
    let up = echo().await;
    let dir = temp_dir("tls");
    let cert = make_cert(&dir);
    let gw = start_in(
        &dir,
        &format!(
            r#"
[[listener]]
address = "127.0.0.1:0"
tls = {{ cert = "cert.pem", key = "key.pem" }}

[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "r"
path_prefix = "/svc"
upstream = "http://{up}"
auth = "public"
strip_prefix = true
"#
        ),
    )
    .await;
    let (tls_addr, plain_addr) = (gw.addrs[0], gw.addrs[1]);
    let port = tls_addr.port();
    for http2 in [false, true] {
        let reply = send(
            &tls_client(&cert, http2),
            get(&format!("https://localhost:{port}/svc/hello?a=b")),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.version,
            if http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(reply.upstream_path(), "/hello?a=b");
        assert_eq!(reply.upstream_header("x-forwarded-proto"), vec!["https"]);
    }
    let reply = send(&h2c_client(), get(&format!("http://{plain_addr}/svc/h2c"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.upstream_path(), "/h2c");
    assert_eq!(reply.upstream_header("x-forwarded-proto"), vec!["http"]);
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_ca_bundle() {
    let up = echo().await;
    let dir = temp_dir("upstream-tls");
    make_cert(&dir);
    // A TLS gateway in front of the echo server plays the HTTPS upstream.
    let tls_front = start_in(
        &dir,
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\
             [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
        ),
    )
    .await;
    let port = tls_front.addrs[0].port();
    let gw = start_in(
        &dir,
        &format!(
            r#"{}
[[route]]
name = "trusted"
path_prefix = "/trusted"
upstream = "https://localhost:{port}"
auth = "public"
ca_bundle = "cert.pem"

[[route]]
name = "untrusted"
path_prefix = "/untrusted"
upstream = "https://localhost:{port}"
auth = "public"
"#,
            listener_plain()
        ),
    )
    .await;
    let client = h1_client();
    let reply = send(&client, get(&format!("http://{}/trusted/x", gw.addrs[0]))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_path(), "/trusted/x");
    let reply = send(&client, get(&format!("http://{}/untrusted/x", gw.addrs[0]))).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.reason(), "upstream_unreachable");
}

#[tokio::test]
async fn large_bodies_stream_both_ways_over_http1_and_h2c() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    const SIZE: usize = 24 * 1024 * 1024;
    for client in [h1_client(), h2c_client()] {
        let req = Request::post(format!("http://{}/upload", gw.addrs[0]))
            .body(Full::new(Bytes::from(vec![b'a'; SIZE])))
            .unwrap();
        let reply = send(&client, req).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["body_bytes"], SIZE as u64);
        let reply = send(
            &client,
            get(&format!("http://{}/download?bytes={SIZE}", gw.addrs[0])),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), SIZE);
    }
}

#[tokio::test]
async fn http2_cookie_fields_are_joined_for_http1_upstreams() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let req = Request::get(format!("http://{}/c", gw.addrs[0]))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h2c_client(), req).await;
    assert_eq!(reply.upstream_header("cookie"), vec!["a=1; b=2"]);
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let up = echo().await;
    let gw = start(&format!(
        r#"[server]
header_read_timeout = "300ms"
body_idle_timeout = "300ms"
{}
[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
auth = "public"
"#,
        listener_plain()
    ))
    .await;
    let addr = gw.addrs[0];

    // Slow headers: the request line and part of the headers, then silence.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(LONG, stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a slow-header client kept its connection");

    // Slow body: headers promise 1000 bytes, 10 arrive, then silence.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(LONG, stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a slow-body client kept its connection");
    let response = String::from_utf8_lossy(&buf);
    assert_eq!(raw_status(&response), 408, "{response}");
    assert_eq!(raw_json(&response)["reason"], "request_body_timeout");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = echo().await;
    let gw = start(&format!(
        "[server]\nidle_timeout = \"400ms\"\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addrs[0]).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive connection, now idle: the gateway must close it on its own.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(LONG, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was never closed"
    );
}

#[tokio::test]
async fn connection_limit_holds_extra_clients_until_a_slot_frees() {
    let up = echo().await;
    let gw = start(&format!(
        "[server]\nmax_connections = 1\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let addr = gw.addrs[0];
    let first = TcpStream::connect(addr).await.unwrap();
    // Give the accept loop a moment to take the only permit for `first`.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(async move { raw_get(addr, "/second").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past max_connections = 1"
    );
    drop(first);
    let response = tokio::time::timeout(LONG, second).await.unwrap().unwrap();
    assert_eq!(raw_status(&response), 200);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let addr = gw.addrs[0];
    let client = h1_client();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            send(&client, get(&format!("http://{addr}/slow?delay_ms=800"))).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.shutdown(LONG).await, "drain did not finish");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let up = echo().await;
    let gw = start(&format!(
        "[server]\nmax_header_bytes = 16384\nh2_max_header_list_bytes = 16384\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n",
        listener_plain()
    ))
    .await;
    let big = "x".repeat(64 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(gw.addrs[0], request.as_bytes(), LONG).await;
    assert_eq!(
        raw_status(&response),
        431,
        "{}",
        &response[..response.len().min(200)]
    );
    // HTTP/2: the header list limit refuses the stream, and the connection keeps serving.
    let client = h2c_client();
    let req = Request::get(format!("http://{}/big", gw.addrs[0]))
        .header("x-big", big.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let refused = tokio::time::timeout(LONG, client.request(req))
        .await
        .unwrap();
    assert!(
        refused.as_ref().map_or(true, |r| r.status() == 431),
        "an oversized HTTP/2 header list was served: {:?}",
        refused.map(|r| r.status())
    );
    let reply = send(&client, get(&format!("http://{}/small", gw.addrs[0]))).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn client_describing_and_override_headers_are_dropped_from_untrusted_peers() {
    let up = echo().await;
    let gw = start(&format!(
        "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\nmethods = [\"GET\", \"POST\"]\n",
        listener_plain()
    ))
    .await;
    let req = Request::post(format!("http://{}/x", gw.addrs[0]))
        .header("x-forwarded-prefix", "//evil.example")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-ssl", "on")
        .header("front-end-https", "on")
        .header("true-client-ip", "6.6.6.6")
        .header("x-client-ip", "6.6.6.6")
        .header("x-http-method-override", "DELETE")
        .header("x-http-method", "DELETE")
        .header("x-method-override", "DELETE")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    for gone in [
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "front-end-https",
        "true-client-ip",
        "x-client-ip",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(headers.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(reply.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
}
