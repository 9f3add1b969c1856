//! Byte streams that outlive HTTP: activity tracking for idle timeouts, and the splice that
//! joins an upgraded client connection (WebSocket) to its upstream after a `101`. Bytes are
//! copied as they arrive in both directions, never collected into whole frames, until either
//! side closes or nothing moves for the idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When bytes last moved on a connection, shared by its IO wrappers and its watchdog.
#[derive(Clone)]
pub struct Activity {
    started: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// One client connection's claims on the gateway: a connection-limit permit and a place in the
/// shutdown drain. Every request carries it, so an upgraded tunnel that outlives its HTTP
/// connection keeps both until it closes, and sees shutdown begin.
pub struct ConnectionGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _in_flight: tokio::sync::mpsc::Sender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Counts the connection (and its tunnel) as open while the guard lives.
    open: Option<prometheus::IntGauge>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.dec();
        }
    }
}

impl ConnectionGuard {
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        in_flight: tokio::sync::mpsc::Sender<()>,
        stop: tokio::sync::watch::Receiver<bool>,
        open: Option<prometheus::IntGauge>,
    ) -> Self {
        if let Some(open) = &open {
            open.inc();
        }
        ConnectionGuard {
            _permit: permit,
            _in_flight: in_flight,
            stop,
            open,
        }
    }

    /// Resolves once shutdown has begun.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stopping| *stopping).await;
    }
}

/// Splices two streams until either closes or neither moves a byte for `idle`.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = ActivityIo::new(a, activity.clone());
    let mut b = ActivityIo::new(b, activity.clone());
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            result = &mut copy => return result,
            _ = check.tick() => {
                if activity.idle_for() >= idle {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle timeout"));
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Records when bytes last moved, for the idle timeout.
    pub struct ActivityIo<IO> {
        #[pin]
        inner: IO,
        activity: Activity,
    }
}

impl<IO> ActivityIo<IO> {
    pub fn new(inner: IO, activity: Activity) -> Self {
        ActivityIo { inner, activity }
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
            this.activity.touch();
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
            this.activity.touch();
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
            this.activity.touch();
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
