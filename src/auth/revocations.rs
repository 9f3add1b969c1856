//! Every revocation source a request is checked against: the denylist file (per config), and
//! the shared list, which is either Redis-backed (every replica sees every change) or, without
//! Redis, a local in-memory list the revocation API writes to. The shared part lives as long as
//! the process: a config reload hands it to the new snapshot unchanged, so a reload never
//! resynchronises it or drops an entry.

use std::sync::Arc;

use crate::auth::denylist::{strongest, Revocation};
use crate::auth::denylist_file::DenylistWatch;
use crate::auth::denylist_live::LiveDenylist;
use crate::auth::denylist_redis::RedisDenylist;
use crate::auth::jwt::VerifiedToken;

/// The list the revocation API changes.
#[derive(Clone)]
pub enum Shared {
    /// In Redis, mirrored in memory by every replica.
    Redis(Arc<RedisDenylist>),
    /// In this process only: lost on restart, unseen by other replicas.
    Local(Arc<LiveDenylist>),
}

impl Shared {
    pub fn list(&self) -> &LiveDenylist {
        match self {
            Shared::Redis(redis) => redis.list(),
            Shared::Local(local) => local,
        }
    }

    /// `redis` or `local`: the metrics label and what the API reports as its scope.
    pub fn source(&self) -> &'static str {
        match self {
            Shared::Redis(_) => "redis",
            Shared::Local(_) => "local",
        }
    }
}

#[derive(Clone, Default)]
pub struct Revocations {
    pub file: Option<Arc<DenylistWatch>>,
    pub shared: Option<Shared>,
}

impl Revocations {
    /// The revocation that applies to `token`, from any source; lock-free.
    pub fn check(&self, token: &VerifiedToken, now_unix: i64) -> Option<Revocation> {
        let from_file = self
            .file
            .as_ref()
            .and_then(|watch| watch.current().check(token, now_unix));
        if from_file == Some(Revocation::Key) {
            return from_file;
        }
        let shared = self
            .shared
            .as_ref()
            .and_then(|shared| shared.list().check(token, now_unix));
        strongest(from_file, shared)
    }

    /// Whether the shared list can be relied on now: always without Redis; with Redis, loaded
    /// and confirmed within `unreachable_after`.
    pub fn available(&self) -> bool {
        match &self.shared {
            Some(Shared::Redis(redis)) => redis.available(),
            _ => true,
        }
    }

    /// `Some(false)` while a Redis-backed list waits for its first load (readiness).
    pub fn redis_synced(&self) -> Option<bool> {
        match &self.shared {
            Some(Shared::Redis(redis)) => Some(redis.synced()),
            _ => None,
        }
    }
}
