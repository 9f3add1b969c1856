//! A revocation list that changes one entry at a time (from Redis or the revocation API) while
//! requests read it without a lock. Requests see an immutable pair of lists behind an
//! `ArcSwap`: a large `base` shared between versions and a small `recent` layer. Adding an entry
//! copies only `recent`; once `recent` has grown, or an entry is removed, the writer folds
//! everything into a new `base`. So a burst of revocations costs one copy of a small map per
//! batch, never one copy of a million entries per change, and a lookup stays two hash probes.
//! Nothing is ever evicted for size; expired entries are dropped only when a new base is built.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::auth::denylist::{strongest, Denylist, Entry, Revocation, Target};
use crate::auth::jwt::VerifiedToken;

/// Past this many entries in the recent layer, the next change folds it into the base.
const RECENT_MAX: usize = 4096;

#[derive(Debug, Default)]
struct Layers {
    base: Arc<Denylist>,
    recent: Denylist,
    /// Distinct entries across both layers.
    len: usize,
}

/// One change to apply.
#[derive(Debug, Clone)]
pub enum Change {
    Add(Entry),
    Remove(Target),
}

#[derive(Debug, Default)]
pub struct LiveDenylist {
    layers: ArcSwap<Layers>,
    /// Serialises writers only; readers never take it.
    write: Mutex<()>,
}

impl LiveDenylist {
    pub fn new(initial: Denylist) -> Self {
        let len = initial.len();
        LiveDenylist {
            layers: ArcSwap::from_pointee(Layers {
                base: Arc::new(initial),
                recent: Denylist::empty(),
                len,
            }),
            write: Mutex::new(()),
        }
    }

    /// The revocation that applies to `token`, if any: two lock-free hash lookups.
    pub fn check(&self, token: &VerifiedToken, now_unix: i64) -> Option<Revocation> {
        let layers = self.layers.load();
        strongest(
            layers.base.check(token, now_unix),
            layers.recent.check(token, now_unix),
        )
    }

    /// Distinct entries held (expired ones included until the next fold).
    pub fn len(&self) -> usize {
        self.layers.load().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything held, as one list (a copy).
    pub fn to_denylist(&self) -> Denylist {
        let layers = self.layers.load();
        let mut all = (*layers.base).clone();
        all.merge(&layers.recent);
        all
    }

    /// Replaces the whole list (a full resynchronisation).
    pub fn replace(&self, list: Denylist) {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let len = list.len();
        self.layers.store(Arc::new(Layers {
            base: Arc::new(list),
            recent: Denylist::empty(),
            len,
        }));
    }

    /// Applies a batch in order, publishing once. Returns how many removals found an entry.
    pub fn apply(&self, changes: &[Change], now_unix: i64) -> usize {
        if changes.is_empty() {
            return 0;
        }
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.layers.load_full();
        let adds = changes
            .iter()
            .filter(|c| matches!(c, Change::Add(_)))
            .count();
        let removes = adds < changes.len();
        if !removes && current.recent.len() + adds <= RECENT_MAX {
            let mut recent = current.recent.clone();
            let mut len = current.len;
            for change in changes {
                if let Change::Add(entry) = change {
                    if !current.base.contains(&entry.target) && !recent.contains(&entry.target) {
                        len += 1;
                    }
                    recent.add(entry);
                }
            }
            self.layers.store(Arc::new(Layers {
                base: current.base.clone(),
                recent,
                len,
            }));
            return 0;
        }
        let mut next = (*current.base).clone();
        next.merge(&current.recent);
        let mut found = 0;
        for change in changes {
            match change {
                Change::Add(entry) => next.add(entry),
                Change::Remove(target) => found += usize::from(next.remove(target)),
            }
        }
        next.prune(now_unix);
        let len = next.len();
        self.layers.store(Arc::new(Layers {
            base: Arc::new(next),
            recent: Denylist::empty(),
            len,
        }));
        found
    }

    /// Folds the layers and drops expired entries (memory only: they no longer apply anyway).
    pub fn compact(&self, now_unix: i64) {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.layers.load_full();
        let mut next = (*current.base).clone();
        next.merge(&current.recent);
        next.prune(now_unix);
        let len = next.len();
        self.layers.store(Arc::new(Layers {
            base: Arc::new(next),
            recent: Denylist::empty(),
            len,
        }));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(issuer: &str, jti: &str, expires: Option<i64>) -> Entry {
        Entry {
            target: Target::Token {
                issuer: issuer.into(),
                jti: jti.into(),
            },
            expires,
        }
    }

    fn verified(jti: &str) -> VerifiedToken {
        let mut token = VerifiedToken::with_claims(serde_json::json!({"jti": jti}));
        token.issuer = "iss".into();
        token.jti = Some(jti.into());
        token
    }

    #[test]
    fn adds_land_in_the_recent_layer_and_removes_fold() {
        let live = LiveDenylist::new(Denylist::empty());
        live.apply(&[Change::Add(token("iss", "a", None))], 0);
        live.apply(&[Change::Add(token("iss", "a", None))], 0);
        assert_eq!(live.len(), 1);
        assert_eq!(live.check(&verified("a"), 0), Some(Revocation::Token));
        let mut many: Vec<Change> = (0..RECENT_MAX + 10)
            .map(|i| Change::Add(token("iss", &format!("x{i}"), None)))
            .collect();
        many.push(Change::Add(token("iss", "b", Some(5))));
        live.apply(&many, 0);
        assert_eq!(live.len(), RECENT_MAX + 12);
        assert_eq!(live.check(&verified("b"), 5), Some(Revocation::Token));
        assert_eq!(live.check(&verified("b"), 6), None);
        let found = live.apply(&[Change::Remove(token("iss", "a", None).target)], 10);
        assert_eq!(found, 1);
        assert_eq!(live.check(&verified("a"), 10), None);
        // The fold dropped the expired "b" too.
        assert_eq!(live.len(), RECENT_MAX + 10);
    }

    #[test]
    fn entry_json_round_trips_and_refuses_misspellings() {
        let entry = Entry {
            target: Target::Subject {
                issuer: "https://idp/".into(),
                subject: "u1".into(),
                issued_before: Some(100),
            },
            expires: Some(200),
        };
        assert_eq!(Entry::from_json(&entry.to_json()).unwrap(), entry);
        let bad = serde_json::json!({"kind": "subject", "issuer": "i", "subjet": "u"});
        assert!(Entry::from_json(&bad).unwrap_err().contains("subjet"));
        let wrong = serde_json::json!({"kind": "token", "issuer": "i", "jti": "j", "kid": "k"});
        assert!(Entry::from_json(&wrong).unwrap_err().contains("kid"));
        let empty = serde_json::json!({"kind": "key", "provider": "", "kid": "k"});
        assert!(Entry::from_json(&empty).is_err());
    }
}
