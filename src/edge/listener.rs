//! Listening sockets: bind, then an accept loop that never dies. An accept error (out of file
//! descriptors, a connection reset before accept) is logged and retried after a short back-off;
//! the loop ends only when shutdown begins. Each connection first takes a permit from the
//! connection limit, then, on a TLS listener, must finish its handshake within the timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGauge};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::edge::server::{ConnectionServer, PeerInfo, RequestHandler};
use crate::edge::tunnel::ConnectionGuard;

/// What a listener counts, when it is counted (the admin listener is not).
#[derive(Clone)]
pub struct ListenerMetrics {
    pub connections_open: IntGauge,
    pub handshake_errors: IntCounter,
    pub handshake_timeouts: IntCounter,
}

pub struct AcceptLoop<H> {
    pub listener: TcpListener,
    /// Read at every handshake, so a reload's new certificate serves the next connection.
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub metrics: Option<ListenerMetrics>,
    pub server: Arc<ConnectionServer<H>>,
    pub limit: Arc<Semaphore>,
    pub stop: watch::Receiver<bool>,
    /// Held by every connection task; shutdown waits until all clones are dropped.
    pub in_flight: mpsc::Sender<()>,
    pub handshake_timeout: Duration,
}

impl<H: RequestHandler> AcceptLoop<H> {
    pub async fn run(mut self) {
        let local = self.listener.local_addr().ok();
        let mut backoff = Duration::from_millis(5);
        loop {
            let permit = tokio::select! {
                _ = self.stop.changed() => break,
                permit = self.limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = self.stop.changed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = Duration::from_millis(5);
                        accepted
                    }
                    Err(error) => {
                        tracing::warn!(listener = ?local, %error, backoff_ms = backoff.as_millis() as u64, "accept failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let server = self.server.clone();
            let tls = self.tls.clone();
            let stop = self.stop.clone();
            let in_flight = self.in_flight.clone();
            let handshake_timeout = self.handshake_timeout;
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let open = metrics.as_ref().map(|m| m.connections_open.clone());
                let guard = Arc::new(ConnectionGuard::new(permit, in_flight, stop.clone(), open));
                match tls {
                    None => {
                        let info = PeerInfo {
                            addr: peer,
                            tls: false,
                        };
                        server.serve(stream, info, stop, guard).await;
                    }
                    Some(config) => {
                        let acceptor = TlsAcceptor::from(config.load_full());
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                let info = PeerInfo {
                                    addr: peer,
                                    tls: true,
                                };
                                server.serve(tls_stream, info, stop, guard).await;
                            }
                            Ok(Err(error)) => {
                                if let Some(m) = &metrics {
                                    m.handshake_errors.inc();
                                }
                                tracing::debug!(%peer, %error, "TLS handshake failed")
                            }
                            Err(_) => {
                                if let Some(m) = &metrics {
                                    m.handshake_timeouts.inc();
                                }
                                tracing::debug!(%peer, "TLS handshake timed out")
                            }
                        }
                    }
                }
            });
        }
        tracing::debug!(listener = ?local, "accept loop stopped");
    }
}

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}
