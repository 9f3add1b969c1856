//! Hot reload: on SIGHUP, and when the config file or a certificate, key or CA bundle it names
//! changes, load the config through the same code as `check`, build a complete new snapshot and
//! swap it in atomically. A config that fails is refused with `check`'s messages and counted;
//! the snapshot in force keeps serving. Requests in flight finish on the snapshot they began
//! with. Listeners stay bound: a changed listener, admin address or connection-level `[server]`
//! setting is refused as "restart required". Certificates are swapped for new handshakes.
//!
//! Files are watched by polling their content (through symlinks) every `reload.interval`, not by
//! inotify on the files: Kubernetes updates ConfigMap and Secret mounts by swapping a `..data`
//! symlink in the directory, which a watch on the file misses, and polling also works on
//! network filesystems. A change is loaded once the files have stayed the same for one more
//! interval, so a half-written file is never taken.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::keys::sha256;
use crate::config::{self, Config, ServerSettings};
use crate::ops::metrics::Metrics;
use crate::state::{SharedState, Snapshot};

/// What a running gateway cannot change without a restart.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    listeners: Vec<(std::net::SocketAddr, bool)>,
    admin: Option<std::net::SocketAddr>,
    forward_auth: Option<std::net::SocketAddr>,
    server: ServerSettings,
    reload: config::build::ReloadSettings,
    revocation: config::build_revocation::RevocationSettings,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        let mut server = config.server.clone();
        // Read per request from the snapshot, so a reload may change them.
        server.trusted_proxies = Vec::new();
        server.body_idle_timeout = Duration::ZERO;
        server.upgrade_idle_timeout = Duration::ZERO;
        Fixed {
            listeners: config
                .listeners
                .iter()
                .map(|l| (l.address, l.tls.is_some()))
                .collect(),
            admin: config.admin,
            forward_auth: config.forward_auth.as_ref().map(|f| f.address),
            server,
            reload: config.reload.clone(),
            revocation: config.revocation.clone(),
        }
    }

    /// Which part changed, in the words of the config file.
    fn difference(&self, new: &Fixed) -> Option<&'static str> {
        if self.listeners != new.listeners {
            Some("[[listener]] addresses or TLS on/off changed")
        } else if self.admin != new.admin {
            Some("[admin] address changed")
        } else if self.forward_auth != new.forward_auth {
            Some("[forward_auth] address added, removed or changed")
        } else if self.server != new.server {
            Some("a [server] connection setting changed (only trusted_proxies, body_idle_timeout and upgrade_idle_timeout reload)")
        } else if self.reload != new.reload {
            Some("[reload] settings changed")
        } else if self.revocation != new.revocation {
            Some("[revocation] settings changed")
        } else {
            None
        }
    }
}

pub struct Reloader {
    path: PathBuf,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
    /// One per listener, in config order; `None` for plaintext listeners.
    tls: Vec<Option<Arc<ArcSwap<rustls::ServerConfig>>>>,
    fixed: Fixed,
    watched: Mutex<Watched>,
    /// Reloads run one at a time, so two triggers cannot interleave their swaps.
    serial: tokio::sync::Mutex<()>,
}

struct Watched {
    files: Vec<PathBuf>,
    /// Digest of `files` at the last reload attempt, good or bad: a bad config is reported once,
    /// not at every poll.
    seen: [u8; 32],
    /// A digest seen at the last poll but not yet loaded, waiting to settle.
    settling: Option<[u8; 32]>,
}

/// The content of every file, through symlinks; a missing file counts as a state of its own.
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(files.len() * 2);
    for file in files {
        parts.push(file.as_os_str().as_encoded_bytes().to_vec());
        parts.push(match std::fs::read(file) {
            Ok(content) => sha256(&[b"present", &content]).to_vec(),
            Err(_) => b"missing".to_vec(),
        });
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    sha256(&refs)
}

async fn digest_off_thread(files: Vec<PathBuf>) -> [u8; 32] {
    let fallback = files.clone();
    match tokio::task::spawn_blocking(move || digest(&files)).await {
        Ok(digest) => digest,
        // The blocking pool is gone (shutdown): a digest computed here is still correct.
        Err(_) => digest(&fallback),
    }
}

impl Reloader {
    /// `config` is the one the gateway started with; `tls` its listeners' certificate slots.
    pub fn new(
        config: &Config,
        state: Arc<SharedState>,
        metrics: Arc<Metrics>,
        tls: Vec<Option<Arc<ArcSwap<rustls::ServerConfig>>>>,
    ) -> Arc<Self> {
        let files = config.files();
        let seen = digest(&files);
        Arc::new(Reloader {
            path: config.source.path.clone(),
            state,
            metrics,
            tls,
            fixed: Fixed::of(config),
            watched: Mutex::new(Watched {
                files,
                seen,
                settling: None,
            }),
            serial: tokio::sync::Mutex::new(()),
        })
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the config file again and swaps it in; on any error the config in force stays.
    /// `trigger` names the cause in the log.
    pub async fn reload(&self, trigger: &'static str) -> Result<(), String> {
        let _one_at_a_time = self.serial.lock().await;
        let files = self.watched().files.clone();
        let before = digest_off_thread(files).await;
        self.watched().seen = before;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| format!("config load task failed: {e}"))
            .and_then(|loaded| loaded.map_err(|errors| errors.to_string()));
        let outcome = match loaded {
            Ok(config) => self.apply(&config).map(|()| config),
            Err(errors) => Err(errors),
        };
        match outcome {
            Ok(config) => {
                let files = config.files();
                let changed_files = files != self.watched().files;
                if changed_files {
                    let now = digest_off_thread(files.clone()).await;
                    let mut watched = self.watched();
                    watched.files = files;
                    watched.seen = now;
                }
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                let short = config.source.sha256.get(..16).unwrap_or_default();
                self.metrics.config_loaded(short);
                tracing::info!(
                    trigger,
                    sha256 = short,
                    routes = config.routes.len(),
                    providers = config.providers.len(),
                    "config reloaded"
                );
                Ok(())
            }
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(trigger, path = %self.path.display(), errors = %errors,
                    "config reload refused; the config in force keeps serving");
                Err(errors)
            }
        }
    }

    fn apply(&self, config: &Config) -> Result<(), String> {
        if let Some(what) = self.fixed.difference(&Fixed::of(config)) {
            return Err(format!("{}: restart required: {what}", self.path.display()));
        }
        let previous = self.state.load();
        let snapshot = Snapshot::build(config, &self.metrics, Some(&previous))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        for (slot, listener) in self.tls.iter().zip(&config.listeners) {
            if let (Some(slot), Some(tls)) = (slot, &listener.tls) {
                slot.store(tls.clone());
            }
        }
        self.state.replace(snapshot);
        Ok(())
    }

    /// Reloads on every SIGHUP until the reloader is dropped.
    pub fn spawn_on_sighup(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup =
            signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        let weak: Weak<Self> = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let Some(this) = weak.upgrade() else { return };
                let _ = this.reload("SIGHUP").await;
            }
        }))
    }

    /// Polls the watched files every `interval` and reloads once a change has settled.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let files = this.watched().files.clone();
                let now = digest_off_thread(files).await;
                let ready = {
                    let mut watched = this.watched();
                    if now == watched.seen {
                        watched.settling = None;
                        false
                    } else if watched.settling == Some(now) {
                        watched.settling = None;
                        true
                    } else {
                        watched.settling = Some(now);
                        false
                    }
                };
                if ready {
                    let _ = this.reload("file change").await;
                }
            }
        })
    }
}
