//! One client connection: HTTP/1.1 or HTTP/2 (ALPN on TLS, prior knowledge on plaintext),
//! with the header-read timeout, header size limits, HTTP/2 stream and reset limits, and an
//! idle timeout. Shutdown and idleness close a connection gracefully: requests in flight
//! finish, no new ones start.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::config::ServerSettings;
use crate::edge::body::Body;
use crate::edge::tunnel::{Activity, ActivityIo, ConnectionGuard};

/// What the gateway knows about the TCP peer of a request.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// What a connection hands each request to. The edge never looks at what it decides; the
/// handler always answers (errors included), so a connection never fails on a request's account.
pub trait RequestHandler: Clone + Send + Sync + 'static {
    fn handle(
        self,
        req: Request<Incoming>,
        peer: PeerInfo,
    ) -> impl Future<Output = Response<Body>> + Send + 'static;
}

pub struct ConnectionServer<H> {
    builder: auto::Builder<TokioExecutor>,
    handler: H,
    idle_timeout: Duration,
}

impl<H: RequestHandler> ConnectionServer<H> {
    pub fn new(settings: &ServerSettings, handler: H) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.h2_max_concurrent_streams)
            .max_header_list_size(settings.h2_max_header_list_bytes)
            .max_pending_accept_reset_streams(settings.h2_max_pending_resets)
            .max_local_error_reset_streams(settings.h2_max_local_error_resets)
            // RFC 8441: WebSockets over HTTP/2 arrive as an extended CONNECT.
            .enable_connect_protocol();
        ConnectionServer {
            builder,
            handler,
            idle_timeout: settings.idle_timeout,
        }
    }

    pub async fn serve<IO>(
        &self,
        io: IO,
        peer: PeerInfo,
        mut stop: watch::Receiver<bool>,
        guard: Arc<ConnectionGuard>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let io = ActivityIo::new(io, activity.clone());
        let handler = self.handler.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(guard.clone());
            let response = handler.clone().handle(req, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = *stop.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        // A graceful close waits for streams in flight and must flush a GOAWAY: a client that
        // never reads, or never opens its flow-control window, would hold it open for ever. So
        // once closing, another `idle_timeout` without a byte moving ends the connection hard.
        let mut closing_since = closing.then(tokio::time::Instant::now);
        let mut idle_check = tokio::time::interval(self.idle_timeout / 4);
        idle_check.tick().await;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer.addr, %error, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.changed(), if !closing => {
                    closing = true;
                    closing_since = Some(tokio::time::Instant::now());
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick() => {
                    let idle = activity.idle_for() >= self.idle_timeout;
                    match closing_since {
                        None if idle => {
                            tracing::debug!(peer = %peer.addr, "closing idle connection");
                            closing = true;
                            closing_since = Some(tokio::time::Instant::now());
                            conn.as_mut().graceful_shutdown();
                        }
                        Some(since) if idle && since.elapsed() >= self.idle_timeout => {
                            tracing::debug!(peer = %peer.addr, "connection stalled while closing; dropping it");
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
