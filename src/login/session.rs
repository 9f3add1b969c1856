//! A gateway-issued session: who logged in (their ID token), the tokens the IdP gave for them,
//! and the hard limit of the session. It is sealed (AEAD) before it leaves the process, in the
//! cookie itself or in Redis behind an opaque id, so its contents are trusted as the gateway
//! wrote them; the ID token inside was verified when the session was made or last refreshed.
//! This step turns a session into the [`VerifiedToken`] the denylist, policy and identity steps
//! read, exactly as they read a Bearer token.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::jwt::{Provider, VerifiedToken};

/// The session format; a cookie of another version is no session.
const VERSION: u8 = 1;

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub v: u8,
    /// The gateway's id for this session (random, 256 bits): the Redis key, and the `jti` a
    /// logout revokes.
    pub id: String,
    /// The `[[login]]` client that made it.
    pub login: String,
    pub id_token: String,
    /// The key that signed the ID token: a leaked-key revocation ends the session too.
    #[serde(default)]
    pub kid: Option<String>,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (from `expires_in`); refresh is due `refresh_margin` before.
    #[serde(default)]
    pub access_expires_at: Option<i64>,
    /// When the current access token was obtained: with its expiry, its lifetime.
    #[serde(default)]
    pub access_obtained_at: Option<i64>,
    /// When the user logged in: a "log out everywhere before T" revocation ends the session.
    pub created_at: i64,
    /// The hard stop, refreshes or not.
    pub expires_at: i64,
}

/// Never prints a token.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("login", &self.login)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("access_expires_at", &self.access_expires_at)
            .finish()
    }
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        login: &str,
        id_token: String,
        kid: Option<String>,
        access_token: String,
        refresh_token: Option<String>,
        access_expires_at: Option<i64>,
        now: i64,
        lifetime: std::time::Duration,
    ) -> Session {
        Session {
            v: VERSION,
            id,
            login: login.to_string(),
            id_token,
            kid,
            access_token,
            refresh_token,
            access_expires_at,
            access_obtained_at: Some(now),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Option<Session> {
        serde_json::from_slice::<Session>(bytes)
            .ok()
            .filter(|s| s.v == VERSION)
    }

    /// The tokens from a refresh, in place. An IdP may leave the ID or refresh token out of a
    /// refresh response (OIDC Core §12.2, RFC 6749 §6): the old ones stay.
    pub fn refreshed(
        &self,
        id_token: Option<(String, Option<String>)>,
        access_token: String,
        refresh_token: Option<String>,
        access_expires_at: Option<i64>,
        now: i64,
    ) -> Session {
        let (id_token, kid) = id_token.unwrap_or_else(|| (self.id_token.clone(), self.kid.clone()));
        Session {
            id_token,
            kid,
            access_token,
            refresh_token: refresh_token.or_else(|| self.refresh_token.clone()),
            access_expires_at,
            access_obtained_at: Some(now),
            ..self.clone()
        }
    }

    /// The ID token's `sub`.
    pub fn subject(&self) -> Option<String> {
        id_token_claims(&self.id_token)?
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Whether the access token is due for a refresh at `now` (only a session with a refresh
    /// token can have one): `margin` before it expires, but never earlier than half its
    /// lifetime, so an IdP issuing tokens shorter than the margin is not asked on every request.
    pub fn refresh_due(&self, now: i64, margin: std::time::Duration) -> bool {
        let Some(exp) = self
            .access_expires_at
            .filter(|_| self.refresh_token.is_some())
        else {
            return false;
        };
        let mut margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        if let Some(obtained) = self.access_obtained_at {
            margin = margin.min(exp.saturating_sub(obtained) / 2);
        }
        now.saturating_add(margin) >= exp
    }

    /// Whether the access token has expired at `now`.
    pub fn access_expired(&self, now: i64) -> bool {
        self.access_expires_at.is_some_and(|exp| now >= exp)
    }

    /// The session as the steps after verification see a token. Its claims are the ID token's,
    /// its lifetime the session's; `iat` is the login time, so "revoke this subject's tokens
    /// issued before T" also ends the sessions begun before T. Its `sid` is the IdP's session
    /// (what a back-channel logout names); its `jti` is the gateway's own session id, what a
    /// logout here revokes: a later login through the same IdP session gets a new id, so it is
    /// never caught by the old session's revocation.
    pub fn identity(&self, provider: &Provider) -> Option<VerifiedToken> {
        let claims = id_token_claims(&self.id_token)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        Some(VerifiedToken {
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            subject: text("sub"),
            jti: Some(self.id.clone()),
            kid: self.kid.clone(),
            issued_at: Some(self.created_at),
            expires_at: Some(self.expires_at),
            not_before: None,
            sid: text("sid").map(Into::into),
            claims: Arc::new(claims),
        })
    }
}

/// The claims of an ID token the gateway verified and sealed: read again without re-checking
/// the signature, since only the gateway could have sealed it.
fn id_token_claims(id_token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(obtained: i64, exp: i64, refresh: bool) -> Session {
        let mut s = Session::new(
            "id".into(),
            "l",
            "h.e30.s".into(),
            None,
            "at".into(),
            refresh.then(|| "rt".to_string()),
            Some(exp),
            obtained,
            std::time::Duration::from_secs(3600),
        );
        s.access_obtained_at = Some(obtained);
        s
    }

    #[test]
    fn refresh_is_due_a_margin_before_expiry_but_not_before_half_the_lifetime() {
        let margin = std::time::Duration::from_secs(60);
        // A one-hour token: due from 60 s before it expires.
        let long = session(0, 3600, true);
        assert!(!long.refresh_due(3539, margin));
        assert!(long.refresh_due(3540, margin));
        // A 30 s token with a 60 s margin: due from half its lifetime, not at once.
        let short = session(0, 30, true);
        assert!(!short.refresh_due(14, margin));
        assert!(short.refresh_due(15, margin));
        // Without a refresh token nothing is ever due; the session ends with the token.
        let none = session(0, 30, false);
        assert!(!none.refresh_due(29, margin));
        assert!(none.access_expired(30));
        assert!(!none.access_expired(29));
    }

    #[test]
    fn a_refresh_keeps_what_the_idp_left_out() {
        let old = session(0, 30, true);
        let new = old.refreshed(None, "at2".into(), None, Some(100), 20);
        assert_eq!(new.access_token, "at2");
        assert_eq!(new.refresh_token.as_deref(), Some("rt"));
        assert_eq!(new.id_token, old.id_token);
        assert_eq!(
            (new.access_expires_at, new.access_obtained_at),
            (Some(100), Some(20))
        );
        assert_eq!(
            (new.id.as_str(), new.created_at, new.expires_at),
            ("id", 0, 3600)
        );
    }
}
