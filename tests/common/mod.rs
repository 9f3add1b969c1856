//! Shared test plumbing: gateways started in-process on ephemeral loopback ports, the echo
//! upstream, certificates generated per test, and HTTP/1.1, HTTP/2 (TLS) and h2c clients.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use authgate::app::Gateway;

pub mod cdp;
pub mod h2raw;
pub mod jar;
pub mod redis_server;

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "authgate-test-{}-{}-{label}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `localhost` / 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
}

pub fn make_cert(dir: &Path) -> TestCert {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_path,
        key_path,
        cert_der: certified.cert.der().clone(),
    }
}

/// Loads `toml` as if from a file in `dir` and starts a gateway in this process.
pub async fn start_in(dir: &Path, toml: &str) -> Gateway {
    let path = dir.join("authgate.toml");
    std::fs::write(&path, toml).unwrap();
    let config = authgate::config::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
    Gateway::start(&config).await.unwrap()
}

pub async fn start(toml: &str) -> Gateway {
    start_in(&temp_dir("gw"), toml).await
}

pub async fn echo() -> SocketAddr {
    authgate::demo::spawn_echo().await.unwrap()
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn h1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub type TlsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS client trusting `cert`, offering `alpn` (e.g. [b"h2"] or [b"http/1.1"]).
pub fn tls_client(cert: &TestCert, http2: bool) -> TlsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector)
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// A collected response: status, headers and body.
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The path (with query) the echo upstream received.
    pub fn upstream_path(&self) -> String {
        self.json()["path"].as_str().unwrap_or_default().to_string()
    }

    /// The values of header `name` the echo upstream received.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn collect<B>(response: Response<B>) -> Reply
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

pub async fn send<C>(client: &Client<C, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    collect(response).await
}

/// Writes raw bytes on a fresh connection and reads until the peer closes or `deadline`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], deadline: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 exchange.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// The JSON body of a raw HTTP/1.1 response.
pub fn raw_json(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"))
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

pub use authgate::demo::issuer::{JwksServer, SigningKey};
pub use jsonwebtoken::Algorithm;

pub fn now() -> i64 {
    authgate::auth::jwt::now_unix()
}

/// A request with `Authorization: Bearer <token>`.
pub fn bearer(uri: &str, token: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Standard valid claims for `issuer`, audience "api", subject `sub`, valid for an hour.
pub fn claims(issuer: &str, sub: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": issuer,
        "aud": "api",
        "sub": sub,
        "iat": now() - 10,
        "exp": now() + 3600,
        "jti": format!("jti-{sub}"),
    })
}

/// Polls an async check every 50 ms until it holds or `deadline` passes.
pub async fn eventually_async<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The echo upstream behind TLS (ALPN h2 and http/1.1), with the certificate in `cert`.
pub async fn echo_tls(cert: &TestCert) -> SocketAddr {
    let config = authgate::edge::tls::server_config(&cert.cert_path, &cert.key_path).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper::service::service_fn(authgate::demo::echo),
                    )
                    .await;
            });
        }
    });
    addr
}

/// A signing key for `alg` and a loopback IdP publishing it (with `alg` and `use` annotated).
pub async fn issuer_with_key(alg: Algorithm, kid: Option<&str>) -> (SigningKey, Arc<JwksServer>) {
    let key = SigningKey::generate(alg, kid).unwrap();
    let idp = JwksServer::start(vec![key.public_jwk(true).unwrap()])
        .await
        .unwrap();
    (key, idp)
}

/// A `[[provider]]` table for the keys `idp` publishes.
pub fn provider_toml(name: &str, idp: &JwksServer, algorithms: &str) -> String {
    format!(
        "[[provider]]\nname = \"{name}\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\nalgorithms = [{algorithms}]\n",
        idp.issuer(),
        idp.jwks_uri()
    )
}

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// Starts the binary on `config`, returning the child and the first listener's address.
pub fn spawn_gateway(config: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let (child, addr, _) = spawn_gateway_with(std::process::Command::new(BIN), config);
    (child, addr)
}

/// Starts `command` (the binary, perhaps behind a wrapper) on `config`; returns the child, the
/// first listener's address, and every JSON log line as it arrives.
pub fn spawn_gateway_with(
    mut command: std::process::Command,
    config: &Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
    let mut child = command
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"] == "listening" {
                    if let Some(address) = event["address"].as_str() {
                        let _ = tx.send(address.parse().unwrap());
                    }
                }
                let _ = log_tx.send(event);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway never logged its address");
    (child, addr, log_rx)
}

pub fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_exit(
    child: &mut std::process::Child,
    deadline: Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// A loopback port that was free a moment ago, for servers that cannot bind port 0 themselves.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
