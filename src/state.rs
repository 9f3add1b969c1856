//! The runtime snapshot: everything a request needs, built whole from one config and swapped
//! atomically. A request loads the snapshot once and keeps it to the end, so a reload never
//! changes the rules under a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::denylist::Denylist;
use crate::auth::denylist_file::DenylistWatch;
use crate::auth::denylist_live::LiveDenylist;
use crate::auth::denylist_redis::RedisDenylist;
use crate::auth::identity::IdentityRules;
use crate::auth::jwks::JwksCache;
use crate::auth::jwt::{Provider, ProviderKeys, Verifier};
use crate::auth::keys::{KeySet, VerifyKey};
use crate::auth::revocations::{Revocations, Shared};
use crate::config::build::ForwardAuthSettings;
use crate::config::build_auth::ProviderKeySettings;
use crate::config::Config;
use crate::login::endpoints::Logins;
use crate::ops::metrics::{Metrics, ProviderMetrics, RouteMetrics, NO_ROUTE};
use crate::proxy::forward::{ClientKey, ForwardSettings, UpstreamClient};
use crate::proxy::route::RouteTable;

pub struct Snapshot {
    pub routes: RouteTable,
    /// Indexed like the routes; routes with equal client settings share one pool.
    pub clients: Vec<UpstreamClient>,
    pub forward: ForwardSettings,
    /// Shared with the session refreshes, which finish in tasks of their own.
    pub verifier: Arc<Verifier>,
    /// Indexed like the routes: the provider indices each route accepts.
    pub accepted: Vec<Vec<usize>>,
    pub identity: Arc<IdentityRules>,
    /// The denylist file and the shared (Redis or API-local) list.
    pub revocations: Revocations,
    pub realm: Arc<str>,
    pub upgrade_idle_timeout: std::time::Duration,
    pub metrics: Arc<Metrics>,
    /// Indexed like the routes.
    pub route_metrics: Vec<RouteMetrics>,
    /// For requests that matched no route.
    pub unrouted: RouteMetrics,
    /// Indexed like the verifier's providers.
    pub provider_metrics: Vec<ProviderMetrics>,
    /// The forward-auth paths, when forward-auth is configured.
    pub forward_auth: Option<ForwardAuthSettings>,
    /// Browser logins: the OIDC clients and the session store.
    pub logins: Logins,
}

impl Snapshot {
    /// Builds a snapshot; must run inside the tokio runtime (it starts JWKS refreshers and the
    /// denylist watcher, which end by themselves once the snapshot and its successors that
    /// share them are gone).
    ///
    /// `previous` is the snapshot a reload replaces. A provider whose settings are unchanged
    /// (same fingerprint) keeps its key cache, and with it its fetched keys and refresher; the
    /// verified-token cache and an unchanged denylist watch carry over too, so a reload does not
    /// refetch every JWKS or re-verify every token. The shared revocation list always carries
    /// over (changing `[revocation]` needs a restart), so a reload never resynchronises it.
    pub fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, String> {
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

        let mut providers = Vec::with_capacity(config.providers.len());
        for settings in &config.providers {
            let unchanged = previous.and_then(|previous| {
                previous
                    .verifier
                    .providers()
                    .iter()
                    .find(|p| p.name == settings.name && p.fingerprint == settings.fingerprint)
            });
            if let Some(provider) = unchanged {
                providers.push(provider.clone());
                continue;
            }
            let keys = match &settings.keys {
                ProviderKeySettings::Secret(secret) => {
                    ProviderKeys::Secret(Arc::new(KeySet::single(VerifyKey::from_secret(secret))))
                }
                ProviderKeySettings::Fixed(set) => ProviderKeys::Fixed(set.clone()),
                ProviderKeySettings::Jwks(jwks) => {
                    let cache = JwksCache::new(
                        settings.name.clone(),
                        jwks.source.clone(),
                        jwks.settings.clone(),
                        jwks.ca_bundle.as_deref(),
                        metrics.jwks(&settings.name),
                    )
                    .map_err(|e| format!("provider {:?}: {e}", settings.name))?;
                    cache.spawn_refresher();
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
            previous.map(|p| &*p.verifier),
            metrics.token_cache_hits.clone(),
            metrics.token_cache_misses.clone(),
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

        let file = config.auth.denylist.as_ref().map(|settings| {
            let unchanged = previous
                .and_then(|p| p.revocations.file.as_ref())
                .filter(|watch| watch.watches(&settings.path, settings.reload_interval));
            if let Some(watch) = unchanged {
                return watch.clone();
            }
            let initial: Denylist = (*settings.initial).clone();
            let watch =
                DenylistWatch::new(settings.path.clone(), settings.reload_interval, initial);
            watch.spawn_watcher();
            watch
        });
        // Browser logins need a list to revoke ended sessions in, even without the API.
        let local = || Some(Shared::Local(Arc::new(LiveDenylist::default())));
        let logins_configured = !config.login.clients.is_empty();
        let shared = match previous {
            Some(previous) => match &previous.revocations.shared {
                None if logins_configured => local(),
                kept => kept.clone(),
            },
            None => match (&config.revocation.redis, &config.revocation.api) {
                (Some(redis), _) => {
                    let source = RedisDenylist::new(redis.clone(), metrics.revocation())?;
                    source.spawn_sync();
                    Some(Shared::Redis(source))
                }
                (None, Some(_)) => local(),
                (None, None) if logins_configured => local(),
                (None, None) => None,
            },
        };
        let revocations = Revocations { file, shared };
        let logins = Logins::build(&config.login, previous.map(|p| &p.logins), metrics)?;
        let route_metrics = routes
            .routes()
            .iter()
            .map(|route| metrics.route(&route.name))
            .collect();
        let provider_metrics = verifier
            .providers()
            .iter()
            .map(|p| metrics.provider(&p.name))
            .collect();

        Ok(Snapshot {
            routes,
            clients,
            forward: ForwardSettings {
                trusted_proxies: Arc::from(config.server.trusted_proxies.clone()),
                body_idle_timeout: config.server.body_idle_timeout,
            },
            verifier: Arc::new(verifier),
            accepted,
            identity: config.auth.identity.clone(),
            revocations,
            realm: config.auth.realm.clone(),
            upgrade_idle_timeout: config.server.upgrade_idle_timeout,
            metrics: metrics.clone(),
            route_metrics,
            unrouted: metrics.route(NO_ROUTE),
            provider_metrics,
            forward_auth: config.forward_auth.clone(),
            logins,
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
