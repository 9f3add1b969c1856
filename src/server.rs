//! One client connection: HTTP/1.1 or HTTP/2 (ALPN on TLS, prior knowledge on plaintext),
//! with the header-read timeout, header size limits, HTTP/2 stream and reset limits, and an
//! idle timeout. Shutdown and idleness close a connection gracefully: requests in flight
//! finish, no new ones start.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ServerSettings;
use crate::forward::PeerInfo;
use crate::state::SharedState;

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
            .max_local_error_reset_streams(settings.h2_max_local_error_resets);
        ConnectionServer {
            builder,
            state,
            idle_timeout: settings.idle_timeout,
        }
    }

    pub async fn serve<IO>(&self, io: IO, peer: PeerInfo, mut stop: watch::Receiver<bool>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Instant::now();
        let last_activity = Arc::new(AtomicU64::new(0));
        let io = ActivityIo {
            inner: io,
            started,
            last_activity: last_activity.clone(),
        };
        let state = self.state.clone();
        let service = service_fn(move |req| {
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
                    let idle_since = Duration::from_millis(last_activity.load(Ordering::Relaxed));
                    if started.elapsed().saturating_sub(idle_since) >= self.idle_timeout {
                        tracing::debug!(peer = %peer.addr, "closing idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Records when bytes last moved, for the idle timeout.
    struct ActivityIo<IO> {
        #[pin]
        inner: IO,
        started: Instant,
        last_activity: Arc<AtomicU64>,
    }
}

impl<IO> ActivityIo<IO> {
    fn touch(started: &Instant, last_activity: &AtomicU64) {
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_activity.store(millis, Ordering::Relaxed);
    }
}

impl<IO: AsyncRead> AsyncRead for ActivityIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            Self::touch(this.started, this.last_activity);
        }
        result
    }
}

impl<IO: AsyncWrite> AsyncWrite for ActivityIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            Self::touch(this.started, this.last_activity);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            Self::touch(this.started, this.last_activity);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
