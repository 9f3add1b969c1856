//! Ending sessions everywhere: a logout or an IdP's back-channel logout becomes an entry in the
//! shared revocation list (Redis: every replica; otherwise this process), so a copied session
//! cookie, or the same session on another replica, is refused from then on.

use crate::auth::denylist::{Entry, Target};
use crate::auth::denylist_live::Change;
use crate::auth::jwt::{now_unix, VerifiedToken};
use crate::auth::revocations::Shared;
use crate::state::Snapshot;

/// Why an entry could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeError {
    /// No shared list: the gateway has neither Redis nor a local list to write to.
    NoSharedList,
    /// Redis did not take the entry.
    Unavailable,
}

/// Adds `entry` to the shared list.
pub async fn add(snapshot: &Snapshot, entry: Entry) -> Result<(), RevokeError> {
    let shared = snapshot
        .revocations
        .shared
        .as_ref()
        .ok_or(RevokeError::NoSharedList)?;
    let change = Change::Add(entry.clone());
    match shared {
        Shared::Redis(redis) => {
            let mut record = entry.to_json();
            record["by"] = "authgate-login".into();
            record["at"] = now_unix().into();
            redis
                .write(&change, record)
                .await
                .map(|_| ())
                .map_err(|_| RevokeError::Unavailable)
        }
        Shared::Local(local) => {
            local.apply(std::slice::from_ref(&change), now_unix());
            Ok(())
        }
    }
}

/// The session `identity` ended (a logout): its `sid` is revoked until the session would have
/// ended anyway.
pub async fn session_ended(snapshot: &Snapshot, identity: &VerifiedToken, until: i64) {
    let Some(sid) = identity.sid.clone() else {
        return;
    };
    let entry = Entry {
        target: Target::Session {
            issuer: identity.issuer.to_string().into(),
            sid,
        },
        expires: Some(until),
    };
    match add(snapshot, entry).await {
        Ok(()) => tracing::info!(target: "authgate::audit", op = "add", kind = "sid", operator = "authgate-login", "session revoked at logout"),
        Err(error) => tracing::warn!(?error, "a logged-out session could not be revoked; its cookie was cleared, but a copy of it stays valid until it expires"),
    }
}
