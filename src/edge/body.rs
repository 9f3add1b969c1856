//! Body types shared by the pipeline: one boxed body type, and a request-body wrapper that
//! gives up when the client stops sending (a slow-body client must not hold an upstream
//! connection forever). Bodies are streamed frame by frame, never collected.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A small JSON answer the gateway writes itself (admin and API endpoints), never cached.
pub fn json(status: http::StatusCode, value: &serde_json::Value) -> http::Response<Body> {
    let mut response = http::Response::new(full(format!("{value}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The client sent nothing on the request body for longer than the idle timeout.
#[derive(Debug)]
pub struct BodyIdleTimeout;

impl std::fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body idle timeout")
    }
}

impl std::error::Error for BodyIdleTimeout {}

/// The client's request body failed (broken chunked framing, a length not kept, a reset
/// stream): the client's fault, not the upstream's, though it surfaces as a failed upstream call.
#[derive(Debug)]
pub struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

pin_project_lite::pin_project! {
    /// Fails with [`BodyIdleTimeout`] when no frame arrives within `idle`; the inner body's own
    /// errors come out as [`ClientBodyError`].
    pub struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
        idle: Duration,
        // The clock starts at the first poll, i.e. once the upstream is ready to read, so
        // connecting to the upstream never counts against the client.
        started: bool,
    }
}

impl<B> IdleTimeoutBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            deadline: tokio::time::sleep(idle),
            idle,
            started: false,
        }
    }
}

impl<B> http_body::Body for IdleTimeoutBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if !*this.started {
            *this.started = true;
            this.deadline.as_mut().reset(Instant::now() + *this.idle);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(
                    frame.map(|f| f.map_err(|e| Box::new(ClientBodyError(e.into())) as BoxError)),
                )
            }
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `error` or anything it wraps is a [`BodyIdleTimeout`].
pub fn is_body_idle_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    wraps::<BodyIdleTimeout>(error)
}

/// True when `error` or anything it wraps is a [`ClientBodyError`].
pub fn is_client_body_error(error: &(dyn std::error::Error + 'static)) -> bool {
    wraps::<ClientBodyError>(error)
}

fn wraps<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}
