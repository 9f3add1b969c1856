//! Browsers and other clients: session-cookie credentials, the CSRF origin matrix, CORS
//! preflight, login redirects, and gRPC-shaped denials.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Site {
    gw: Gateway,
    token: String,
    expired: String,
    issuer: String,
    key: SigningKey,
}

const PUBLIC_ORIGIN: &str = "https://app.example.com";

async fn site() -> Site {
    let up = echo().await;
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k")).await;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[auth]
session_cookie = "sess"
{provider}[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://{up}"
public_origin = "{PUBLIC_ORIGIN}"
allowed_origins = ["{PUBLIC_ORIGIN}", "https://admin.example.com:8443"]
login_url = "https://login.example.com/start?client=app"
[[route]]
name = "own-origin"
path_prefix = "/own"
upstream = "http://{up}"
[[route]]
name = "private-cookie"
path_prefix = "/private"
upstream = "http://{up}"
session_cookie = "inner"
forward_session_cookie = false
[[route]]
name = "cors"
path_prefix = "/cors"
upstream = "http://{up}"
pass_cors_preflight = true
[[route]]
name = "scoped"
path_prefix = "/scoped"
upstream = "http://{up}"
[route.policy]
scopes_all = ["admin"]
"#,
        provider = provider_toml("p", &idp, "\"ES256\""),
    ))
    .await;
    let issuer = idp.issuer();
    let token = key.token(&claims(&issuer, "alice"));
    let mut old = claims(&issuer, "alice");
    old["exp"] = serde_json::json!(now() - 3600);
    let expired = key.token(&old);
    std::mem::forget(idp);
    Site {
        gw,
        token,
        expired,
        issuer,
        key,
    }
}

impl Site {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.gw.addrs[0]));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    }
}

#[tokio::test]
async fn session_cookie_is_a_credential_over_http1_and_http2() {
    let s = site().await;
    let cookie = format!("theme=dark; sess={}", s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/app/x", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    // HTTP/2 clients may send each cookie in its own field.
    let sess = format!("sess={}", s.token);
    let req = s.request(
        "GET",
        "/app/x",
        &[
            ("cookie", "theme=dark"),
            ("cookie", &sess),
            ("cookie", "lang=en"),
        ],
    );
    let reply = send(&h2c_client(), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    // Forwarded by default, as one field for the HTTP/1.1 upstream.
    assert_eq!(
        reply.upstream_header("cookie"),
        vec![format!("theme=dark; {sess}; lang=en")]
    );

    let twice = format!("sess={}; sess={}", s.token, s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/app/x", &[("cookie", &twice)]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (400, "duplicate_session_cookie")
    );
    let other = s.key.token(&claims(&s.issuer, "bob"));
    let bearer_other = format!("Bearer {other}");
    let reply = send(
        &h1_client(),
        s.request(
            "GET",
            "/app/x",
            &[("cookie", &sess), ("authorization", &bearer_other)],
        ),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (400, "multiple_credentials")
    );
    let bearer_same = format!("Bearer {}", s.token);
    let reply = send(
        &h1_client(),
        s.request(
            "GET",
            "/app/x",
            &[("cookie", &sess), ("authorization", &bearer_same)],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);

    // A route may keep the session cookie from its upstream; other cookies still pass.
    let inner = format!("a=1; inner={}; b=2", s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/private/x", &[("cookie", &inner)]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("cookie"), vec!["a=1; b=2"]);
    // The route's own cookie name replaces the default one.
    let reply = send(
        &h1_client(),
        s.request("GET", "/private/x", &[("cookie", &sess)]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );
}

#[tokio::test]
async fn csrf_origin_matrix() {
    let s = site().await;
    let cookie = format!("sess={}", s.token);
    let bearer = format!("Bearer {}", s.token);
    let own = format!("http://{}", s.gw.addrs[0]);
    let client = h1_client();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        // (path, extra headers, expected status)
        type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16);
        let cases: Vec<Case> = vec![
            ("/app/x", vec![("origin", PUBLIC_ORIGIN.into())], 200),
            (
                "/app/x",
                vec![("origin", "https://APP.example.com:443".into())],
                200,
            ),
            (
                "/app/x",
                vec![("origin", "https://admin.example.com:8443".into())],
                200,
            ),
            (
                "/app/x",
                vec![("origin", "https://evil.example".into())],
                403,
            ),
            (
                "/app/x",
                vec![("origin", "https://app.example.com.evil.example".into())],
                403,
            ),
            (
                "/app/x",
                vec![("origin", "http://app.example.com".into())],
                403,
            ),
            ("/app/x", vec![("origin", "null".into())], 403),
            // An opaque origin is refused even when a Referer would pass.
            (
                "/app/x",
                vec![
                    ("origin", "null".into()),
                    ("referer", format!("{PUBLIC_ORIGIN}/")),
                ],
                403,
            ),
            (
                "/app/x",
                vec![("origin", "https://admin.example.com".into())],
                403,
            ),
            ("/app/x", vec![], 403),
            (
                "/app/x",
                vec![("referer", format!("{PUBLIC_ORIGIN}/page?x=1"))],
                200,
            ),
            (
                "/app/x",
                vec![("referer", "https://evil.example/app".into())],
                403,
            ),
            (
                "/app/x",
                vec![
                    ("origin", "https://evil.example".into()),
                    ("referer", format!("{PUBLIC_ORIGIN}/")),
                ],
                403,
            ),
            // Without public_origin the request's own origin is the allowed one.
            ("/own/x", vec![("origin", own.clone())], 200),
            ("/own/x", vec![("origin", PUBLIC_ORIGIN.into())], 403),
        ];
        for (path, extra, status) in cases {
            let mut headers: Vec<(&str, &str)> = vec![("cookie", &cookie)];
            headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
            let reply = send(&client, s.request(method, path, &headers)).await;
            assert_eq!(reply.status, status, "{method} {path} {extra:?}");
            if status == 403 {
                assert_eq!(reply.reason(), "csrf_origin");
                assert!(reply.headers.get("www-authenticate").is_none());
            }
        }
        // Bearer-authenticated requests are not subject to the origin check.
        let reply = send(
            &client,
            s.request(
                method,
                "/app/x",
                &[
                    ("authorization", &bearer),
                    ("origin", "https://evil.example"),
                ],
            ),
        )
        .await;
        assert_eq!(reply.status, 200, "{method} with Bearer");
    }
    // Safe methods with a cookie need no origin.
    for method in ["GET", "HEAD", "OPTIONS"] {
        let reply = send(
            &client,
            s.request(
                method,
                "/app/x",
                &[("cookie", &cookie), ("origin", "https://evil.example")],
            ),
        )
        .await;
        assert_eq!(reply.status, 200, "{method}");
    }
    // A WebSocket handshake is state-changing: cross-site WebSocket hijacking is refused.
    let ws_url = format!("ws://{}/app/socket", s.gw.addrs[0]);
    for (origin, refused) in [("https://evil.example", true), (PUBLIC_ORIGIN, false)] {
        let mut request = ws_url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            // The echo upstream speaks no WebSocket, so a handshake that passed the gateway gets
            // the echo's 200: what matters is whether the gateway refused it with 403.
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status() == 403,
                    refused,
                    "{origin}: {}",
                    response.status()
                );
            }
            Err(other) => assert!(!refused, "{origin}: {other:?}"),
            Ok((mut ws, _)) => {
                assert!(!refused, "{origin}: upgrade accepted");
                let _ = ws.close(None).await;
            }
        }
    }
}

#[tokio::test]
async fn cors_preflight_passes_only_where_enabled() {
    let s = site().await;
    let preflight = [
        ("origin", PUBLIC_ORIGIN),
        ("access-control-request-method", "POST"),
    ];
    let reply = send(&h1_client(), s.request("OPTIONS", "/cors/x", &preflight)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["method"], "OPTIONS");
    assert!(reply.upstream_header("x-auth-subject").is_empty());
    // Only a real preflight: an OPTIONS without Access-Control-Request-Method still needs auth.
    let reply = send(
        &h1_client(),
        s.request("OPTIONS", "/cors/x", &[("origin", PUBLIC_ORIGIN)]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );
    // Off by default.
    let reply = send(&h1_client(), s.request("OPTIONS", "/app/x", &preflight)).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );
}

#[tokio::test]
async fn login_redirect_only_for_browsers_and_never_from_host() {
    let s = site().await;
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let expected = "https://login.example.com/start?client=app&rd=https%3A%2F%2Fapp.example.com%2Fapp%2Fpage%3Fa%3D1";
    let reply = send(
        &h1_client(),
        s.request(
            "GET",
            "/app/page?a=1",
            &[("accept", html), ("host", "evil.example")],
        ),
    )
    .await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.headers["location"], expected);
    let expired = format!("sess={}", s.expired);
    let reply = send(
        &h1_client(),
        s.request(
            "GET",
            "/app/page?a=1",
            &[("accept", html), ("cookie", &expired)],
        ),
    )
    .await;
    assert_eq!(
        reply.status, 302,
        "an expired session goes to the login page too"
    );
    assert_eq!(reply.headers["location"], expected);
    // API clients get the RFC 6750 answer.
    for accept in ["application/json", "*/*"] {
        let reply = send(
            &h1_client(),
            s.request("GET", "/app/page", &[("accept", accept)]),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (401, "missing_credential"),
            "{accept}"
        );
        assert!(reply.headers.contains_key("www-authenticate"));
    }
    let reply = send(
        &h1_client(),
        s.request("POST", "/app/page", &[("accept", html)]),
    )
    .await;
    assert_eq!(reply.status, 401, "only GET navigations are redirected");
    // A route without login_url never redirects.
    let reply = send(
        &h1_client(),
        s.request("GET", "/own/page", &[("accept", html)]),
    )
    .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn grpc_denials_use_grpc_status() {
    let s = site().await;
    let grpc = |path: &str, token: Option<&str>| {
        let mut builder = Request::post(format!("http://{}{path}", s.gw.addrs[0]))
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap()
    };
    let client = h2c_client();
    for (path, token, code, reason) in [
        ("/app/pkg.Svc/Call", None, "16", "missing_credential"),
        (
            "/app/pkg.Svc/Call",
            Some(s.expired.as_str()),
            "16",
            "token_expired",
        ),
        (
            "/scoped/pkg.Svc/Call",
            Some(s.token.as_str()),
            "7",
            "insufficient_scope",
        ),
    ] {
        let reply = send(&client, grpc(path, token)).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.headers["grpc-status"], code, "{path}");
        assert_eq!(reply.headers["grpc-message"], reason, "{path}");
        assert_eq!(reply.headers["content-type"], "application/grpc");
    }
}

#[tokio::test]
async fn cookie_spellings_and_bytes_the_gateway_cannot_read_are_refused() {
    let s = site().await;
    let forged = s.key.token(&claims(&s.issuer, "mallory"));
    let bearer = format!("Bearer {}", s.token);
    // Another spelling of the session cookie next to a Bearer header: a credential the gateway
    // did not check would otherwise reach a case-insensitive or decoding upstream.
    for spelling in ["SESS", "Sess", "%73ess"] {
        let cookie = format!("{spelling}={forged}");
        let reply = send(
            &h1_client(),
            s.request(
                "GET",
                "/app/x",
                &[("authorization", &bearer), ("cookie", &cookie)],
            ),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (400, "multiple_credentials"),
            "{spelling}"
        );
        let both = format!("sess={}; {cookie}", s.token);
        let reply = send(
            &h1_client(),
            s.request("GET", "/app/x", &[("cookie", &both)]),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (400, "duplicate_session_cookie"),
            "{spelling}"
        );
    }
    // A Cookie field that is not visible ASCII cannot be read the way the upstream reads it.
    let req = Request::get(format!("http://{}/app/x", s.gw.addrs[0]))
        .header("authorization", bearer.as_str())
        .header(
            "cookie",
            http::HeaderValue::from_bytes(
                [b"x=\xff; sess=".as_slice(), forged.as_bytes()]
                    .concat()
                    .as_slice(),
            )
            .unwrap(),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (400, "malformed_cookie")
    );
}

#[tokio::test]
async fn a_passed_preflight_carries_no_credentials_upstream() {
    let s = site().await;
    let forged = format!("Bearer {}", s.expired);
    let cookie = format!("theme=dark; sess={}", s.expired);
    let reply = send(
        &h1_client(),
        s.request(
            "OPTIONS",
            "/cors/x",
            &[
                ("origin", PUBLIC_ORIGIN),
                ("access-control-request-method", "POST"),
                ("authorization", &forged),
                ("cookie", &cookie),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.upstream_header("authorization").is_empty());
    assert_eq!(reply.upstream_header("cookie"), vec!["theme=dark"]);
}

#[tokio::test]
async fn a_comma_never_hides_a_session_cookie() {
    let s = site().await;
    let forged = s.key.token(&claims(&s.issuer, "mallory"));
    // Lenient parsers (Python's SimpleCookie) also split on `,`: they would read `sess=forged`.
    for cookie in [
        format!("sess={}; a=1, sess={forged}", s.token),
        format!("sess={}; a=1,SESS={forged}", s.token),
        format!("a=1, sess={forged}"),
    ] {
        let reply = send(
            &h1_client(),
            s.request("GET", "/app/x", &[("cookie", &cookie)]),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (400, "duplicate_session_cookie"),
            "{cookie}"
        );
    }
    // An ordinary comma in a value is no second cookie; forwarded as sent.
    let cookie = format!("sess={}; prefs=a,b", s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/app/x", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    assert_eq!(reply.upstream_header("cookie"), vec![cookie]);
    // Where the gateway removes the session cookie, a pair a comma could split is removed too.
    let cookie = format!("a=1, b=2; inner={}; prefs=a,b; c=3,INNER=x", s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/private/x", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (400, "duplicate_session_cookie")
    );
    let cookie = format!("a=1, b=2; inner={}; prefs=a,b", s.token);
    let reply = send(
        &h1_client(),
        s.request("GET", "/private/x", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    assert_eq!(reply.upstream_header("cookie"), vec!["prefs=a,b"]);
    // A passed preflight reads no credential, yet still loses every hidden session cookie.
    let cookie = format!("theme=dark; a=1, sess={forged}");
    let reply = send(
        &h1_client(),
        s.request(
            "OPTIONS",
            "/cors/x",
            &[
                ("origin", PUBLIC_ORIGIN),
                ("access-control-request-method", "POST"),
                ("cookie", &cookie),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("cookie"), vec!["theme=dark"]);
}
