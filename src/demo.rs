//! `authgate demo`: an echo upstream on loopback and the gateway in front of it, configured by
//! the embedded `config/demo.toml` and started through the same code as `authgate run`.
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
    let text = DEMO_CONFIG
        .replace("{{listen}}", &listen.to_string())
        .replace("{{echo_upstream}}", &format!("http://{echo}"));
    let config =
        crate::config::load_str(Path::new("config/demo.toml"), &text).map_err(|e| e.to_string())?;
    let base = format!("http://{listen}");
    println!(
        "authgate demo: gateway on {base}, echo upstream on http://{echo}\n\
         Try:\n  \
           curl -s {base}/echo/hello | jq .\n  \
           curl -s -X POST --data 'hi' {base}/echo/post | jq .\n  \
           curl -si --path-as-is {base}/echo/../admin # normalised to /admin: 404, no such route\n  \
           curl -si -X DELETE {base}/readonly/x     # 405 with Allow\n  \
           curl -si {base}/echo/a%2Fb               # encoded slash: 400\n  \
           curl -s --http2-prior-knowledge {base}/echo/h2c | jq .version\n\
         Stop with Ctrl-C."
    );
    crate::app::run(config).await
}
