//! Assembly: metrics, the snapshot, every listener (and the admin listener), the reloader; on
//! SIGTERM or SIGINT readiness turns 503 at once, the gateway keeps serving for
//! `shutdown_delay`, then stops accepting and lets in-flight requests finish until the drain
//! deadline. Listeners are bound once and never re-bound; SIGHUP reloads the config.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, ServerSettings};
use crate::edge::listener::{self, AcceptLoop, ListenerMetrics};
use crate::edge::server::{ConnectionServer, RequestHandler};
use crate::handler::ForwardAuthService;
use crate::ops::admin::{Admin, Health};
use crate::ops::metrics::Metrics;
use crate::ops::reload::Reloader;
use crate::ops::revoke_api::RevokeApi;
use crate::state::{SharedState, Snapshot};

/// The admin listener takes few connections: probes and scrapes, never client traffic.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Operators and their scripts; never client traffic.
const REVOCATION_API_MAX_CONNECTIONS: usize = 32;

/// A running gateway: its bound addresses (in config order) and the means to stop it.
pub struct Gateway {
    pub addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub forward_auth_addr: Option<SocketAddr>,
    /// The revocation API's address, when configured.
    pub revocation_addr: Option<SocketAddr>,
    pub state: Arc<SharedState>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    in_flight: Option<mpsc::Sender<()>>,
    drained: mpsc::Receiver<()>,
}

async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    listener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

struct Shared {
    stop: watch::Receiver<bool>,
    in_flight: mpsc::Sender<()>,
    settings: ServerSettings,
}

fn accept_loop<H: RequestHandler>(
    tcp: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    server: Arc<ConnectionServer<H>>,
    limit: Arc<Semaphore>,
    metrics: Option<ListenerMetrics>,
    shared: &Shared,
) -> JoinHandle<()> {
    tokio::spawn(
        AcceptLoop {
            listener: tcp,
            tls,
            metrics,
            server,
            limit,
            stop: shared.stop.clone(),
            in_flight: shared.in_flight.clone(),
            handshake_timeout: shared.settings.tls_handshake_timeout,
        }
        .run(),
    )
}

impl Gateway {
    pub async fn start(config: &Config) -> Result<Gateway, String> {
        let metrics = Metrics::register(&prometheus::Registry::new())
            .map_err(|e| format!("cannot register metrics: {e}"))?;
        let snapshot = Snapshot::build(config, &metrics, None)?;
        metrics.config_loaded(config.source.sha256.get(..16).unwrap_or_default());
        let state = Arc::new(SharedState::new(snapshot));
        let health = Arc::new(Health::default());
        let (stop, stop_rx) = watch::channel(false);
        let (in_flight, drained) = mpsc::channel(1);
        let shared = Shared {
            stop: stop_rx,
            in_flight: in_flight.clone(),
            settings: config.server.clone(),
        };

        // Bind everything before serving anything, so a bad address fails startup whole.
        let mut bound = Vec::new();
        let mut addrs = Vec::new();
        for settings in &config.listeners {
            let tcp = bind(settings.address).await?;
            addrs.push(
                tcp.local_addr()
                    .map_err(|e| format!("listener {}: {e}", settings.address))?,
            );
            bound.push(tcp);
        }
        let admin_tcp = match config.admin {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let admin_addr = admin_tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| format!("admin listener: {e}"))?;
        let forward_auth_tcp = match &config.forward_auth {
            Some(settings) => Some(bind(settings.address).await?),
            None => None,
        };
        let forward_auth_addr = forward_auth_tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| format!("forward_auth listener: {e}"))?;
        let revocation_tcp = match &config.revocation.api {
            Some(api) => Some(bind(api.address).await?),
            None => None,
        };
        let revocation_addr = revocation_tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| format!("revocation API listener: {e}"))?;

        let tls_slots: Vec<Option<Arc<ArcSwap<rustls::ServerConfig>>>> = config
            .listeners
            .iter()
            .map(|l| l.tls.clone().map(|tls| Arc::new(ArcSwap::new(tls))))
            .collect();
        let server = Arc::new(ConnectionServer::new(&config.server, state.clone()));
        let limit = Arc::new(Semaphore::new(config.server.max_connections));
        let listener_metrics = ListenerMetrics {
            connections_open: metrics.connections_open.clone(),
            handshake_errors: metrics.tls_handshake_failures.with_label_values(&["error"]),
            handshake_timeouts: metrics
                .tls_handshake_failures
                .with_label_values(&["timeout"]),
        };
        let mut tasks: Vec<JoinHandle<()>> = bound
            .into_iter()
            .zip(&tls_slots)
            .map(|(tcp, tls)| {
                accept_loop(
                    tcp,
                    tls.clone(),
                    server.clone(),
                    limit.clone(),
                    Some(listener_metrics.clone()),
                    &shared,
                )
            })
            .collect();
        if let Some(tcp) = admin_tcp {
            let admin = Admin {
                state: state.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
            };
            let server = Arc::new(ConnectionServer::new(&config.server, admin));
            let limit = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
            tasks.push(accept_loop(tcp, None, server, limit, None, &shared));
        }
        if let Some(tcp) = forward_auth_tcp {
            // Shares the public listeners' connection limit: it carries real traffic's decisions.
            let service = ForwardAuthService {
                state: state.clone(),
            };
            let server = Arc::new(ConnectionServer::new(&config.server, service));
            tasks.push(accept_loop(
                tcp,
                None,
                server,
                limit.clone(),
                Some(listener_metrics.clone()),
                &shared,
            ));
        }
        let revocations = state.load().revocations.shared.clone();
        if let (Some(tcp), Some(api), Some(list)) =
            (revocation_tcp, &config.revocation.api, revocations)
        {
            let handler = RevokeApi::new(list, &api.token, metrics.clone());
            let server = Arc::new(ConnectionServer::new(&config.server, handler));
            let limit = Arc::new(Semaphore::new(REVOCATION_API_MAX_CONNECTIONS));
            tasks.push(accept_loop(tcp, None, server, limit, None, &shared));
        }
        for (addr, settings) in addrs.iter().zip(&config.listeners) {
            tracing::info!(address = %addr, tls = settings.tls.is_some(), "listening");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(address = %addr, "admin listening (/healthz /readyz /metrics)");
        }
        if let Some(addr) = forward_auth_addr {
            tracing::info!(address = %addr, "forward-auth listening");
        }
        if let Some(addr) = revocation_addr {
            tracing::info!(address = %addr, path = crate::ops::revoke_api::PATH, "revocation API listening");
        }

        let reloader = Reloader::new(config, state.clone(), metrics.clone(), tls_slots);
        if config.reload.watch {
            // Not in `tasks`: it holds only a weak reference and ends with the gateway.
            reloader.spawn_watcher(config.reload.interval);
        }
        Ok(Gateway {
            addrs,
            admin_addr,
            forward_auth_addr,
            revocation_addr,
            state,
            metrics,
            reloader,
            health,
            stop,
            tasks,
            in_flight: Some(in_flight),
            drained,
        })
    }

    /// Stops accepting, closes idle connections, and waits up to `drain_timeout` for requests in
    /// flight. Returns whether every connection finished in time.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> bool {
        self.health.begin_shutdown();
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
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

/// Runs until SIGTERM or SIGINT, then shuts down gracefully; SIGHUP reloads the config.
pub async fn run(config: Config) -> Result<(), String> {
    run_with(config, |_| {}).await
}

/// [`run`], calling `started` once every listener is bound (the demo prints its addresses).
pub async fn run_with(config: Config, started: impl FnOnce(&Gateway)) -> Result<(), String> {
    let gateway = Gateway::start(&config).await?;
    started(&gateway);
    let _sighup = gateway.reloader.spawn_on_sighup()?;
    wait_for_signal().await?;
    gateway.health.begin_shutdown();
    tracing::info!(delay = ?config.server.shutdown_delay, "shutdown signal received; readiness is now 503, still serving during the shutdown delay");
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
