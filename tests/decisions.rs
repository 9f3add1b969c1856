//! Decisions without proxying: a real nginx with `auth_request` in front of the echo upstream,
//! asking authgate's forward-auth listener; Traefik ForwardAuth and Envoy `ext_authz` request
//! shapes at the HTTP level.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;

const LONG: Duration = Duration::from_secs(20);

/// A gateway with a forward-auth listener trusting `trusted`, a provider, and three routes:
/// `/api` needs scope `write`, `/public` is public, `/app` sends browsers to a login page.
async fn decider(
    idp: &authgate::demo::issuer::JwksServer,
    up: SocketAddr,
    trusted: &str,
) -> Gateway {
    start(&format!(
        r#"[server]
trusted_proxies = ["{trusted}"]

[[listener]]
address = "127.0.0.1:0"

[forward_auth]
address = "127.0.0.1:0"

{provider}
[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://{up}"
[route.policy]
scopes_all = ["write"]

[[route]]
name = "public"
path_prefix = "/public"
upstream = "http://{up}"
auth = "public"

[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://{up}"
public_origin = "https://app.example.com"
login_url = "https://login.example.com/start"
"#,
        provider = provider_toml("main", idp, "\"ES256\"")
    ))
    .await
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// The documented nginx snippet (README "Forward-auth"), in a throw-away prefix.
fn nginx_conf(dir: &Path, listen: u16, decider: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{listen};
        location = /_authgate {{
            internal;
            proxy_pass http://{decider}/nginx;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $host;
        }}
        location / {{
            auth_request /_authgate;
            auth_request_set $authgate_subject $upstream_http_x_auth_subject;
            auth_request_set $authgate_issuer $upstream_http_x_auth_issuer;
            auth_request_set $authgate_request_id $upstream_http_x_request_id;
            auth_request_set $authgate_location $upstream_http_location;
            proxy_set_header X-Auth-Subject $authgate_subject;
            proxy_set_header X-Auth-Issuer $authgate_issuer;
            proxy_set_header X-Request-Id $authgate_request_id;
            error_page 401 = @authgate_401;
            proxy_pass http://{upstream};
        }}
        location @authgate_401 {{
            if ($authgate_location) {{
                return 302 $authgate_location;
            }}
            add_header WWW-Authenticate $upstream_http_www_authenticate always;
            return 401;
        }}
    }}
}}
"#
    )
}

async fn start_nginx(decider: SocketAddr, upstream: SocketAddr) -> Option<Nginx> {
    let Some(binary) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install nginx (see .ci/run)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
        return None;
    };
    let dir = temp_dir("nginx");
    let listen = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, listen, decider, upstream)).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let up = eventually_async(LONG, || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "nginx never listened");
    Some(Nginx { child, addr })
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn nginx_auth_request_asks_authgate_and_forwards_its_identity() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let gw = decider(&idp, up, "127.0.0.1").await;
    let Some(nginx) = start_nginx(gw.forward_auth_addr.unwrap(), up).await else {
        return;
    };
    let base = format!("http://{}", nginx.addr);
    let mut scoped = claims(&idp.issuer(), "alice");
    scoped["scope"] = "write".into();
    let good = format!("Bearer {}", key.token(&scoped));
    let unscoped = format!("Bearer {}", key.token(&claims(&idp.issuer(), "bob")));
    let client = h1_client();
    let call = |path: &str, headers: &[(&str, &str)]| {
        send(&client, request(&format!("{base}{path}"), headers))
    };

    // Allowed: the upstream sees the gateway's identity.
    let reply = call("/api/orders?x=1", &[("authorization", &good)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_path(), "/api/orders?x=1");
    assert_eq!(reply.upstream_header("x-auth-subject"), ["alice"]);
    assert_eq!(reply.upstream_header("x-auth-issuer"), [idp.issuer()]);
    assert_eq!(reply.upstream_header("x-request-id")[0].len(), 32);

    // No credential: 401 with the RFC 6750 challenge; the upstream is never reached.
    let reply = call("/api/orders", &[]).await;
    assert_eq!(reply.status, 401);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("\"headers\""));

    // Valid token, insufficient scope: 403.
    assert_eq!(
        call("/api/orders", &[("authorization", &unscoped)])
            .await
            .status,
        403
    );

    // Public route: allowed, with no identity at the upstream.
    let reply = call("/public/x", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.upstream_header("x-auth-subject").is_empty());
    // nginx forwards the client's own headers: one the gateway would have stripped (identity in
    // any spelling, a path or method override) is refused, never passed on.
    for spoof in [
        ("x-auth-subject", "root"),
        ("X-AUTH-ROLES", "admin"),
        ("x-original-url", "/api/admin"),
        ("x-http-method-override", "DELETE"),
    ] {
        for path in ["/public/x", "/api/orders"] {
            let reply = call(path, &[("authorization", &good), spoof]).await;
            assert_eq!(reply.status, 403, "{spoof:?} on {path}");
            assert!(!String::from_utf8_lossy(&reply.body).contains("\"headers\""));
        }
    }
    // An underscore spelling never gets that far: nginx drops such names itself by default.
    let reply = call("/public/x", &[("x_auth_roles", "admin")]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["headers"].get("x_auth_roles").is_none());

    // Path tricks: the original URI is normalised exactly as a proxied request's would be.
    let raw = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    };
    // An encoded slash is refused by the gateway (400 encoded_slash, which nginx sees as 403).
    let response = raw_exchange(nginx.addr, raw("/public/..%2Fapi/orders").as_bytes(), LONG).await;
    assert_eq!(raw_status(&response), 403);
    // A dot segment climbs out of /public into /api, which needs a token.
    let response = raw_exchange(nginx.addr, raw("/public/../api/orders").as_bytes(), LONG).await;
    assert_eq!(raw_status(&response), 401);

    // A browser navigation on a login route: nginx turns the decision into the redirect.
    let reply = call("/app/home", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, 302);
    let location = reply.headers["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://login.example.com/start?"),
        "{location}"
    );
}

/// Sends a forward-auth request from `local` (a loopback address the test binds).
async fn ask(
    local: &str,
    decider: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(decider).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut builder =
        Request::get(format!("http://{decider}{path}")).header("host", "auth.internal");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let reply = collect(response).await;
    (
        reply.status,
        reply.headers,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// A decider trusting 127.0.0.1, and a Bearer header for a token with the `write` scope.
async fn decider_with_token() -> (Gateway, String) {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let gw = decider(&idp, up, "127.0.0.1").await;
    let mut scoped = claims(&idp.issuer(), "alice");
    scoped["scope"] = "write".into();
    (gw, format!("Bearer {}", key.token(&scoped)))
}

#[tokio::test]
async fn only_a_trusted_proxy_may_describe_a_request() {
    let (gw, good) = decider_with_token().await;
    let decider = gw.forward_auth_addr.unwrap();
    let forged = [
        ("x-original-uri", "/public/x"),
        ("x-original-method", "GET"),
        ("authorization", good.as_str()),
    ];
    // 127.0.0.2 is loopback but not trusted: its description of a request is not believed.
    let (status, headers, body) = ask("127.0.0.2", decider, "/nginx", &forged).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(headers["x-authgate-reason"], "forward_auth_untrusted_peer");
    let (status, headers, _) = ask("127.0.0.1", decider, "/nginx", &forged).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-auth-subject").is_none(), "public route");
    // Unknown paths on the forward-auth listener decide nothing.
    let (status, _, _) = ask("127.0.0.1", decider, "/elsewhere", &forged).await;
    assert_eq!(status, 404);
    // The decision listener is not the proxy listener: the proxy still proxies.
    let reply = send(
        &h1_client(),
        get(&format!("http://{}/public/x", gw.addrs[0])),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn traefik_and_envoy_request_shapes_get_the_same_decisions() {
    let (gw, good) = decider_with_token().await;
    let decider = gw.forward_auth_addr.unwrap();
    let traefik = |uri: &'static str, method: &'static str| {
        vec![
            ("x-forwarded-method", method),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example.com"),
            ("x-forwarded-uri", uri),
        ]
    };

    let mut allowed = traefik("/api/orders?id=7", "POST");
    allowed.push(("authorization", &good));
    let (status, headers, _) = ask("127.0.0.1", decider, "/traefik", &allowed).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-auth-subject"], "alice");
    assert_eq!(headers["x-request-id"].len(), 32);
    // Counted and logged as the request decided on (a POST to "api"), not the proxy's GET.
    let text = gw.metrics.encode().unwrap();
    assert!(
        text.contains(r#"authgate_requests_total{method="POST",route="api",status_class="2xx"} 1"#),
        "{text}"
    );

    let (status, headers, body) = ask(
        "127.0.0.1",
        decider,
        "/traefik",
        &traefik("/api/orders", "GET"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert!(body.contains("missing_credential"));

    // Traefik relays a redirect as is.
    let mut browser = traefik("/app/home", "GET");
    browser.push(("accept", "text/html"));
    let (status, headers, _) = ask("127.0.0.1", decider, "/traefik", &browser).await;
    assert_eq!(status, 302);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.contains("return_to=https%3A%2F%2Fapp.example.com%2Fapp%2Fhome")
            || location.contains("https%3A%2F%2Fapp.example.com%2Fapp%2Fhome"),
        "{location}"
    );
    // nginx cannot relay a 302 from auth_request: it gets a 401 carrying the Location.
    let nginx_browser = [
        ("x-original-uri", "/app/home"),
        ("x-original-method", "GET"),
        ("accept", "text/html"),
    ];
    let (status, headers, _) = ask("127.0.0.1", decider, "/nginx", &nginx_browser).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("location"));

    // Missing or malformed descriptions are refused, never guessed.
    let (status, headers, _) = ask(
        "127.0.0.1",
        decider,
        "/traefik",
        &[("x-forwarded-method", "GET")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-authgate-reason"], "forward_auth_incomplete");
    for bad_uri in [
        "http://evil.example/api",
        "//evil.example/api",
        "api/orders",
    ] {
        let (status, headers, _) =
            ask("127.0.0.1", decider, "/traefik", &traefik(bad_uri, "GET")).await;
        assert_eq!(status, 400, "{bad_uri}");
        assert_eq!(headers["x-authgate-reason"], "forward_auth_bad_target");
    }
    let (status, headers, _) = ask(
        "127.0.0.1",
        decider,
        "/traefik",
        &traefik("/public/..%2Fapi/orders", "GET"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-authgate-reason"], "encoded_slash");

    // Envoy ext_authz: the original path follows the prefix, the method and Host are the
    // original request's.
    let (status, headers, _) = ask(
        "127.0.0.1",
        decider,
        "/envoy/api/orders?id=7",
        &[("authorization", &good)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-auth-subject"], "alice");
    let (status, _, _) = ask("127.0.0.1", decider, "/envoy/api/orders", &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = ask("127.0.0.1", decider, "/envoy/nowhere", &[]).await;
    assert_eq!(status, 404);
    // Envoy removes what the answer lists: every identity header this request did not get.
    let (status, headers, _) = ask("127.0.0.1", decider, "/envoy/public/x", &[]).await;
    assert_eq!(status, 200);
    let removed = headers["x-envoy-auth-headers-to-remove"].to_str().unwrap();
    assert!(
        removed.contains("x-auth-subject") && removed.contains("x-auth-issuer"),
        "{removed}"
    );
    // Describing a spoof is refused whatever the caller.
    let mut spoofed = traefik("/public/x", "GET");
    spoofed.push(("x-auth-subject", "root"));
    let (status, headers, _) = ask("127.0.0.1", decider, "/traefik", &spoofed).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-authgate-reason"], "forward_auth_unsafe_header");
}

#[tokio::test]
async fn a_cross_site_websocket_handshake_is_refused_even_without_upgrade() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let gw = start(&format!(
        r#"[server]
trusted_proxies = ["127.0.0.1"]

[[listener]]
address = "127.0.0.1:0"

[forward_auth]
address = "127.0.0.1:0"

[auth]
session_cookie = "sess"

{provider}
[[route]]
name = "ws"
path_prefix = "/ws"
upstream = "http://{up}"
"#,
        provider = provider_toml("main", &idp, "\"ES256\"")
    ))
    .await;
    let decider = gw.forward_auth_addr.unwrap();
    let cookie = format!("sess={}", key.token(&claims(&idp.issuer(), "alice")));
    // The proxy's subrequest keeps the key and the origin but drops Upgrade (hop-by-hop).
    let handshake = |origin: &'static str| {
        vec![
            ("x-original-uri", "/ws/chat"),
            ("x-original-method", "GET"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", origin),
        ]
    };
    let mut evil = handshake("https://evil.example");
    evil.push(("cookie", &cookie));
    let (status, headers, _) = ask("127.0.0.1", decider, "/nginx", &evil).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-authgate-reason"], "csrf_origin");
    let mut own = handshake("http://auth.internal");
    own.push(("cookie", &cookie));
    let (status, headers, _) = ask("127.0.0.1", decider, "/nginx", &own).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-auth-subject"], "alice");
}

#[tokio::test]
async fn envoy_over_http2_names_the_host_in_its_authority() {
    let (_key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let gw = decider(&idp, up, "127.0.0.1").await;
    let stream = tokio::net::TcpStream::connect(gw.forward_auth_addr.unwrap())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://shop.example.com/envoy/public/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.headers);
}

#[test]
fn forward_auth_config_errors_are_located() {
    let refused = |section: &str| {
        let toml = format!(
            "[[listener]]\naddress = \"127.0.0.1:18080\"\n[admin]\naddress = \"127.0.0.1:18081\"\n{section}"
        );
        authgate::config::load_str(std::path::Path::new("fa.toml"), &toml)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{section}"))
            .to_string()
    };
    let cases = [
        (
            "[forward_auth]\naddress = \"127.0.0.1:18080\"\n",
            "fa.toml:5:1: forward_auth address 127.0.0.1:18080 is already a listener or the admin address",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:18081\"\n",
            "is already a listener or the admin address",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\nnginx_path = \"nginx\"\n",
            "fa.toml:7:14: nginx_path \"nginx\" must be an absolute path",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\ntraefik_path = \"/t/\"\n",
            "traefik_path \"/t/\" must be an absolute path",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\nenvoy_prefix = \"/a//b\"\n",
            "envoy_prefix \"/a//b\" must be an absolute path",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\nnginx_path = \"/envoy/n\"\n",
            "forward_auth paths overlap",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\ntraefik_path = \"/nginx\"\n",
            "forward_auth paths overlap",
        ),
        (
            "[forward_auth]\naddress = \"127.0.0.1:0\"\nnginx = \"/n\"\n",
            "unknown field `nginx`",
        ),
        (
            "[forward_auth]\nnginx_path = \"/n\"\n",
            "missing field `address`",
        ),
    ];
    for (section, expected) in cases {
        let errors = refused(section);
        assert!(errors.contains(expected), "{section}\n=> {errors}");
    }
}
