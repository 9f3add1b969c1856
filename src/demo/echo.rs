//! The echo upstream: answers with the method, path, version, headers, trailers and body size it
//! received, so the demo and the integration tests see exactly what the gateway sent upstream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::edge::body::{full, Body, BoxError};

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
    let mut trailers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(fields) = frame.trailers_ref() {
            for (name, value) in fields {
                trailers
                    .entry(name.as_str().to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
        }
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
        "trailers": trailers,
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
