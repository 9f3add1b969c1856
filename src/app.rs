//! Assembly: build the snapshot, bind every listener, start the accept loops; on SIGTERM or
//! SIGINT keep serving for `shutdown_delay`, then stop accepting and let in-flight requests
//! finish until the drain deadline. Listeners are bound once and never re-bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::edge::listener::{self, AcceptLoop};
use crate::edge::server::ConnectionServer;
use crate::state::{SharedState, Snapshot};

/// A running gateway: its bound addresses (in config order) and the means to stop it.
pub struct Gateway {
    pub addrs: Vec<SocketAddr>,
    pub state: Arc<SharedState>,
    stop: watch::Sender<bool>,
    accept_loops: Vec<JoinHandle<()>>,
    in_flight: Option<mpsc::Sender<()>>,
    drained: mpsc::Receiver<()>,
}

impl Gateway {
    pub async fn start(config: &Config) -> Result<Gateway, String> {
        let snapshot = Snapshot::build(config)?;
        let state = Arc::new(SharedState::new(snapshot));
        let server = Arc::new(ConnectionServer::new(&config.server, state.clone()));
        let limit = Arc::new(Semaphore::new(config.server.max_connections));
        let (stop, stop_rx) = watch::channel(false);
        let (in_flight, drained) = mpsc::channel(1);
        let mut addrs = Vec::new();
        let mut bound = Vec::new();
        for settings in &config.listeners {
            let tcp = listener::bind(settings.address)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", settings.address))?;
            addrs.push(
                tcp.local_addr()
                    .map_err(|e| format!("listener {}: {e}", settings.address))?,
            );
            bound.push((tcp, settings.tls.clone()));
        }
        let accept_loops = bound
            .into_iter()
            .map(|(tcp, tls)| {
                let accept = AcceptLoop {
                    listener: tcp,
                    tls: tls.map(tokio_rustls::TlsAcceptor::from),
                    server: server.clone(),
                    limit: limit.clone(),
                    stop: stop_rx.clone(),
                    in_flight: in_flight.clone(),
                    handshake_timeout: config.server.tls_handshake_timeout,
                };
                tokio::spawn(accept.run())
            })
            .collect();
        for (addr, settings) in addrs.iter().zip(&config.listeners) {
            tracing::info!(address = %addr, tls = settings.tls.is_some(), "listening");
        }
        Ok(Gateway {
            addrs,
            state,
            stop,
            accept_loops,
            in_flight: Some(in_flight),
            drained,
        })
    }

    /// Stops accepting, closes idle connections, and waits up to `drain_timeout` for requests in
    /// flight. Returns whether every connection finished in time.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        for task in self.accept_loops.drain(..) {
            let _ = task.await;
        }
        self.in_flight.take();
        let drained = tokio::time::timeout(drain_timeout, self.drained.recv())
            .await
            .is_ok();
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!(
                ?drain_timeout,
                "drain deadline passed with connections still open"
            );
        }
        drained
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), String> {
    let gateway = Gateway::start(&config).await?;
    wait_for_signal().await?;
    tracing::info!(delay = ?config.server.shutdown_delay, "shutdown signal received; still serving during the shutdown delay");
    tokio::select! {
        _ = tokio::time::sleep(config.server.shutdown_delay) => {}
        _ = wait_for_signal() => tracing::info!("second signal: skipping the rest of the shutdown delay"),
    }
    gateway.shutdown(config.server.drain_timeout).await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
