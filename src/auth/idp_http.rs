//! The one HTTP client shape for talking to an IdP (JWKS, discovery, token endpoint): TLS
//! verified against the system roots or the provider's CA bundle, a connect timeout, and
//! bodies read under a size limit and a deadline, so a slow or huge answer can never hold a
//! request or the process's memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::edge::body::Body;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Sent with every IdP request, so an IdP's logs tell the gateway's requests apart.
pub const USER_AGENT: &str = concat!("authgate/", env!("CARGO_PKG_VERSION"));

pub fn client(
    ca_bundle: Option<&std::path::Path>,
    connect_timeout: Duration,
) -> Result<HttpClient, String> {
    let tls = crate::edge::tls::client_config(ca_bundle)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// Why a body could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads a whole body of at most `max_bytes` within `deadline`.
pub async fn read_limited(
    mut body: hyper::body::Incoming,
    max_bytes: usize,
    deadline: Duration,
) -> Result<Bytes, ReadError> {
    let mut collected = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ReadError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > max_bytes {
                    return Err(ReadError::TooLarge);
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ReadError::TimedOut)??;
    Ok(Bytes::from(collected))
}
