//! The runtime snapshot: everything a request needs, built whole from one config and swapped
//! atomically. A request loads the snapshot once and keeps it to the end, so a reload never
//! changes the rules under a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::forward::{ClientKey, ForwardSettings, UpstreamClient};
use crate::route::RouteTable;

pub struct Snapshot {
    pub routes: RouteTable,
    /// Indexed like the routes; routes with equal client settings share one pool.
    pub clients: Vec<UpstreamClient>,
    pub forward: ForwardSettings,
}

impl Snapshot {
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
        Ok(Snapshot {
            routes,
            clients,
            forward: ForwardSettings {
                trusted_proxies: Arc::from(config.server.trusted_proxies.clone()),
                body_idle_timeout: config.server.body_idle_timeout,
            },
        })
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
