//! `authgate demo`: an echo upstream and a token issuer on loopback, and the gateway in front of
//! them, configured by the embedded `config/demo.toml` and started through the same code as
//! `authgate run`. It prints ready-to-paste curl commands with tokens it minted.
//!
//! The echo upstream is also what the integration tests forward to: it answers with the method,
//! path, version, headers and body size it received, so a test can see exactly what the gateway
//! sent upstream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{full, Body, BoxError};
use crate::issuer::{JwksServer, SigningKey};
use jsonwebtoken::Algorithm;

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
const ECHO_BODY_LIMIT: usize = 64 * 1024;

/// Starts an echo server (HTTP/1.1 and h2c) on an ephemeral loopback port.
pub async fn spawn_echo() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(addr)
}

fn query_number(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The echo handler. `?delay_ms=N` waits before answering; `?bytes=N` answers with N bytes of
/// body instead of the JSON description.
pub async fn echo(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query = req.uri().query().map(str::to_string);
    if let Some(delay) = query_number(query.as_deref(), "delay_ms") {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let version = format!("{:?}", req.version());
    let mut body = req.into_body();
    let mut body_bytes: u64 = 0;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            body_bytes += data.len() as u64;
            if kept.len() < ECHO_BODY_LIMIT {
                kept.extend_from_slice(&data[..data.len().min(ECHO_BODY_LIMIT - kept.len())]);
            }
        }
    }
    if let Some(total) = query_number(query.as_deref(), "bytes") {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                let frame: Result<Frame<Bytes>, BoxError> =
                    Ok(Frame::data(chunk.slice(..n as usize)));
                Some((frame, left - n))
            }
        });
        return Ok(Response::new(StreamBody::new(chunks).boxed()));
    }
    let description = serde_json::json!({
        "method": method,
        "path": path,
        "version": version,
        "headers": headers,
        "body_bytes": body_bytes,
        "body": String::from_utf8_lossy(&kept),
    });
    let mut response = Response::new(full(description.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(listen: SocketAddr) -> Result<(), String> {
    let echo = spawn_echo()
        .await
        .map_err(|e| format!("cannot start the echo upstream: {e}"))?;
    let key = SigningKey::generate(Algorithm::ES256, Some("demo-1"))?;
    let idp = JwksServer::start(vec![key
        .public_jwk(true)
        .ok_or("the demo key has no public half")?])
    .await
    .map_err(|e| format!("cannot start the demo issuer: {e}"))?;
    let dir = std::env::temp_dir().join(format!("authgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let denylist = dir.join("denylist.toml");
    let issuer = idp.issuer();
    std::fs::write(
        &denylist,
        format!("# Written by authgate demo.\n[[token]]\nissuer = \"{issuer}\"\njti = \"demo-revoked\"\nreason = \"demo\"\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", denylist.display()))?;
    let text = DEMO_CONFIG
        .replace("{{listen}}", &listen.to_string())
        .replace("{{echo_upstream}}", &format!("http://{echo}"))
        .replace("{{issuer}}", &issuer)
        .replace("{{jwks_uri}}", &idp.jwks_uri())
        .replace("{{denylist}}", &denylist.display().to_string());
    let config =
        crate::config::load_str(Path::new("config/demo.toml"), &text).map_err(|e| e.to_string())?;

    let now = crate::jwt::now_unix();
    let token = |sub: &str, jti: &str, scope: &str, exp: i64| {
        key.token(&serde_json::json!({
            "iss": issuer, "aud": "demo-api", "sub": sub, "jti": jti, "scope": scope,
            "email": format!("{sub}@example.com"), "iat": now - 60, "exp": exp,
        }))
    };
    let valid = token("alice", "demo-valid", "profile orders:read", now + 3600);
    let expired = token("alice", "demo-expired", "profile orders:read", now - 3600);
    let revoked = token("mallory", "demo-revoked", "profile orders:read", now + 3600);
    let unscoped = token("bob", "demo-unscoped", "profile", now + 3600);
    let base = format!("http://{listen}");
    idp.set_login("authgate_session", &valid, &base);
    println!(
        "authgate demo: gateway on {base}\n  echo upstream http://{echo}, token issuer {issuer} (JWKS {}), denylist {}\n\n\
         Tokens (valid for an hour):\n  \
           VALID={valid}\n  \
           EXPIRED={expired}\n  \
           REVOKED={revoked}\n  \
           UNSCOPED={unscoped}\n\n\
         Try:\n  \
           curl -s -H \"Authorization: Bearer $VALID\" {base}/echo/hello         # 200: x-auth-subject, x-auth-email echoed back\n  \
           curl -si {base}/echo/hello                                        # 401, WWW-Authenticate: Bearer realm=...\n  \
           curl -si -H \"Authorization: Bearer $EXPIRED\" {base}/echo/hello     # 401 token_expired\n  \
           curl -si -H \"Authorization: Bearer $REVOKED\" {base}/echo/hello     # 401 revoked_token (see the denylist)\n  \
           curl -si -H \"Authorization: Bearer $UNSCOPED\" {base}/orders/1      # 403 insufficient_scope\n  \
           curl -s -H \"Authorization: Bearer $VALID\" {base}/orders/1          # 200\n  \
           curl -s -H \"X-Auth-Subject: root\" {base}/public/x                  # public route: the spoofed header is stripped\n  \
           curl -si -X DELETE {base}/readonly/x                              # 405 with Allow\n  \
           curl -si --path-as-is {base}/public/../echo                       # normalised to /echo before routing: 401\n  \
           curl -s --http2-prior-knowledge -H \"Authorization: Bearer $VALID\" {base}/echo/h2c\n\n\
         Browser route (session cookie, login redirect, CSRF origin check):\n  \
           open {base}/app/ in a browser: it goes to the demo login, gets a cookie, comes back\n  \
           curl -s -L -c /tmp/authgate-jar -b /tmp/authgate-jar -H 'Accept: text/html' {base}/app/   # same with a cookie jar\n  \
           curl -si -b /tmp/authgate-jar -X POST -H 'Origin: https://evil.example' {base}/app/x     # 403 csrf_origin\n  \
           curl -si -b /tmp/authgate-jar -X POST -H 'Origin: {base}' {base}/app/x                  # 200\n\n\
         Stop with Ctrl-C.",
        idp.jwks_uri(),
        denylist.display(),
    );
    let outcome = crate::app::run(config).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
