//! The runtime snapshot: everything a request needs, built whole from one config and swapped
//! atomically. A request loads the snapshot once and keeps it to the end, so a reload never
//! changes the rules under a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::denylist::Denylist;
use crate::auth::denylist_file::DenylistWatch;
use crate::auth::identity::IdentityRules;
use crate::auth::jwks::JwksCache;
use crate::auth::jwt::{Provider, ProviderKeys, Verifier};
use crate::auth::keys::{KeySet, VerifyKey};
use crate::config::build_auth::ProviderKeySettings;
use crate::config::Config;
use crate::proxy::forward::{ClientKey, ForwardSettings, UpstreamClient};
use crate::proxy::route::RouteTable;

pub struct Snapshot {
    pub routes: RouteTable,
    /// Indexed like the routes; routes with equal client settings share one pool.
    pub clients: Vec<UpstreamClient>,
    pub forward: ForwardSettings,
    pub verifier: Verifier,
    /// Indexed like the routes: the provider indices each route accepts.
    pub accepted: Vec<Vec<usize>>,
    pub identity: Arc<IdentityRules>,
    pub denylist: Option<Arc<DenylistWatch>>,
    pub realm: Arc<str>,
    pub upgrade_idle_timeout: std::time::Duration,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

impl Snapshot {
    /// Builds a snapshot; must run inside the tokio runtime (it starts JWKS refreshers and the
    /// denylist watcher).
    pub fn build(config: &Config) -> Result<Self, String> {
        let routes = RouteTable::new(config.routes.clone()).map_err(|conflicts| {
            conflicts
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let mut pools: HashMap<ClientKey, UpstreamClient> = HashMap::new();
        let mut clients = Vec::with_capacity(routes.len());
        for route in routes.routes() {
            let key = ClientKey::of(route);
            let client = match pools.get(&key) {
                Some(client) => client.clone(),
                None => {
                    let client = UpstreamClient::new(&key, &config.upstream)
                        .map_err(|e| format!("route {:?}: {e}", route.name))?;
                    pools.insert(key, client.clone());
                    client
                }
            };
            clients.push(client);
        }

        let mut background = Vec::new();
        let mut providers = Vec::with_capacity(config.providers.len());
        for settings in &config.providers {
            let keys = match &settings.keys {
                ProviderKeySettings::Secret(secret) => {
                    ProviderKeys::Secret(Arc::new(KeySet::single(VerifyKey::from_secret(secret))))
                }
                ProviderKeySettings::Jwks(jwks) => {
                    let cache = JwksCache::new(
                        settings.name.clone(),
                        jwks.source.clone(),
                        jwks.settings.clone(),
                        jwks.ca_bundle.as_deref(),
                    )
                    .map_err(|e| format!("provider {:?}: {e}", settings.name))?;
                    background.push(cache.spawn_refresher());
                    ProviderKeys::Jwks(cache)
                }
            };
            providers.push(Arc::new(Provider {
                name: settings.name.clone(),
                issuer: settings.issuer.clone(),
                audiences: settings.audiences.clone(),
                algorithms: settings.algorithms.clone(),
                leeway: settings.leeway,
                required_claims: settings.required_claims.clone(),
                require_exp: settings.require_exp,
                typ: settings.typ.clone(),
                keys,
                fingerprint: settings.fingerprint,
            }));
        }
        let verifier = Verifier::new(
            providers,
            config.auth.max_token_bytes,
            config.auth.token_cache_entries,
        );
        let accepted = routes
            .routes()
            .iter()
            .map(|route| match &route.auth.providers {
                None => (0..verifier.providers().len()).collect(),
                Some(names) => names
                    .iter()
                    .filter_map(|name| verifier.provider_index(name))
                    .collect(),
            })
            .collect();

        let denylist = config.auth.denylist.as_ref().map(|settings| {
            let initial: Denylist = (*settings.initial).clone();
            let watch = DenylistWatch::new(settings.path.clone(), initial);
            background.push(watch.spawn_watcher(settings.reload_interval));
            watch
        });

        Ok(Snapshot {
            routes,
            clients,
            forward: ForwardSettings {
                trusted_proxies: Arc::from(config.server.trusted_proxies.clone()),
                body_idle_timeout: config.server.body_idle_timeout,
            },
            verifier,
            accepted,
            identity: config.auth.identity.clone(),
            denylist,
            realm: config.auth.realm.clone(),
            upgrade_idle_timeout: config.server.upgrade_idle_timeout,
            background,
        })
    }

    /// Whether every provider has usable keys (readiness).
    pub fn keys_ready(&self) -> bool {
        self.verifier.providers().iter().all(|p| p.is_ready())
    }
}

/// The live snapshot, shared by every connection and replaced whole on reload.
pub struct SharedState {
    current: ArcSwap<Snapshot>,
}

impl SharedState {
    pub fn new(snapshot: Snapshot) -> Self {
        SharedState {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
