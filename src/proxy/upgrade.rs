//! WebSocket pass-through: recognise a handshake, ask the upstream for the same upgrade, open the
//! tunnel only onto an upstream that proved it read this handshake, then splice the two
//! connections with an idle timeout. Only `websocket` is ever upgraded to: any other upgrade
//! (`h2c`) would open a connection that bypasses routing and authentication.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::edge::body::Body;
use crate::edge::headers::strip_hop_by_hop;
use crate::edge::tunnel::ConnectionGuard;
use crate::error::GatewayError;

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
pub fn websocket_upgrade(req: &Parts) -> Option<Upgrade> {
    if req.version == Version::HTTP_2 {
        let protocol = req.extensions.get::<hyper::ext::Protocol>()?;
        let websocket = req.method == http::Method::CONNECT
            && protocol.as_str().eq_ignore_ascii_case("websocket");
        return websocket.then_some(Upgrade::H2ExtendedConnect);
    }
    // RFC 6455 §4.1: the opening handshake is a GET; any other method's Upgrade is dropped.
    if req.version != Version::HTTP_11 || req.method != http::Method::GET {
        return None;
    }
    let headers = &req.headers;
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

/// Rewrites the request into the upstream's HTTP/1.1 WebSocket handshake and returns the
/// `Sec-WebSocket-Accept` the upstream must answer with.
pub fn request_upstream(upgrade: &Upgrade, parts: &mut Parts) -> Result<String, GatewayError> {
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
            Ok(websocket_accept(key))
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
            let accept = websocket_accept(&key);
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
            Ok(accept)
        }
    }
}

/// A `101` opens the tunnel only onto a WebSocket that answered this handshake's key.
pub fn check_switch(
    headers: &HeaderMap,
    expected_accept: Option<&str>,
) -> Result<(), GatewayError> {
    let switched_to_websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let accepted = expected_accept.is_some_and(|expected| {
        headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|a| a.as_bytes() == expected.as_bytes())
    });
    if switched_to_websocket && accepted {
        Ok(())
    } else {
        Err(GatewayError::UpstreamFailed {
            detail: "upstream switched protocols without a valid WebSocket handshake".into(),
        })
    }
}

/// Answers the client's handshake with the upstream's `101` and splices the two upgraded
/// connections once both sides have switched.
pub fn tunnel(
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut response: Response<Incoming>,
    idle: Duration,
    client_is_h2: bool,
    guard: Option<Arc<ConnectionGuard>>,
    tunnels_open: prometheus::IntGauge,
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
        tunnels_open.inc();
        let splice =
            crate::edge::tunnel::splice(TokioIo::new(client), TokioIo::new(upstream), idle);
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
        tunnels_open.dec();
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
    Response::from_parts(parts, crate::edge::body::empty())
}
