//! One client connection: HTTP/1.1 or HTTP/2 (ALPN on TLS, prior knowledge on plaintext),
//! with the header-read timeout, header size limits, HTTP/2 stream and reset limits, and an
//! idle timeout. Shutdown and idleness close a connection gracefully: requests in flight
//! finish, no new ones start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::config::ServerSettings;
use crate::forward::PeerInfo;
use crate::state::SharedState;
use crate::tunnel::{Activity, ActivityIo, ConnectionGuard};

pub struct ConnectionServer {
    builder: auto::Builder<TokioExecutor>,
    state: Arc<SharedState>,
    idle_timeout: Duration,
}

impl ConnectionServer {
    pub fn new(settings: &ServerSettings, state: Arc<SharedState>) -> Self {
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
            state,
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
        let state = self.state.clone();
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(guard.clone());
            let state = state.clone();
            async move { Ok::<_, Infallible>(crate::handler::handle(state, req, peer).await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = *stop.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
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
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick(), if !closing => {
                    if activity.idle_for() >= self.idle_timeout {
                        tracing::debug!(peer = %peer.addr, "closing idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}
