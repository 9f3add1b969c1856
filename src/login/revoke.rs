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

/// The session `identity` ended (a logout): the gateway's session id (its `jti`) is revoked
/// until the session would have ended anyway. Not the IdP's `sid`: the IdP session may live on
/// (an IdP without RP-initiated logout, a user who leaves the IdP's logout page), and revoking it
/// would refuse every later login through it, and other applications' tokens that carry it.
pub async fn session_ended(snapshot: &Snapshot, identity: &VerifiedToken, until: i64) {
    let Some(id) = identity.jti.clone() else {
        return;
    };
    let entry = Entry {
        target: Target::Token {
            issuer: identity.issuer.to_string().into(),
            jti: id.into(),
        },
        expires: Some(until),
    };
    match add(snapshot, entry).await {
        Ok(()) => tracing::info!(target: "authgate::audit", op = "add", kind = "token", operator = "authgate-login", "session revoked at logout"),
        Err(error) => tracing::warn!(?error, "a logged-out session could not be revoked; its cookie was cleared, but a copy of it stays valid until it expires"),
    }
}

/// The event a Logout Token must carry (OpenID Connect Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token older than this is refused: IdPs send them at once, and an old one is more
/// likely a replay than a late delivery.
const MAX_LOGOUT_TOKEN_AGE: i64 = 600;

/// Why a logout token was refused; `reason()` is the answer's and the log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutTokenError {
    Malformed,
    UnknownClient,
    Signature(&'static str),
    Type,
    Audience,
    IssuedAt,
    Expired,
    Events,
    Nonce,
    NoSubject,
    NoJti,
    Replayed,
    KeysUnavailable,
}

impl LogoutTokenError {
    pub fn reason(self) -> &'static str {
        match self {
            LogoutTokenError::Malformed => "logout_token_malformed",
            LogoutTokenError::UnknownClient => "logout_token_unknown_client",
            LogoutTokenError::Signature(reason) => reason,
            LogoutTokenError::Type => "logout_token_type",
            LogoutTokenError::Audience => "logout_token_audience",
            LogoutTokenError::IssuedAt => "logout_token_issued_at",
            LogoutTokenError::Expired => "logout_token_expired",
            LogoutTokenError::Events => "logout_token_events",
            LogoutTokenError::Nonce => "logout_token_nonce",
            LogoutTokenError::NoSubject => "logout_token_no_sid_or_sub",
            LogoutTokenError::NoJti => "logout_token_no_jti",
            LogoutTokenError::Replayed => "logout_token_replayed",
            LogoutTokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A verified Logout Token: which sessions to end.
pub struct LogoutOrder {
    /// The replay-set key of its `jti`, forgotten again if the order cannot be carried out.
    pub jti_key: String,
    pub issuer: String,
    pub sid: Option<String>,
    pub subject: Option<String>,
}

/// Checks a Logout Token (Back-Channel Logout 1.0 §2.6): issued by the IdP of one of our login
/// clients and signed with its keys under its algorithms, `typ` `logout+jwt` when present, `aud`
/// naming that client, a recent `iat`, the back-channel `events` member, `sid` and/or `sub`, no
/// `nonce` (so an ID token can never pass for one), and a `jti` not seen before.
pub async fn check_logout_token(
    snapshot: &Snapshot,
    token: &str,
    now: i64,
) -> Result<LogoutOrder, LogoutTokenError> {
    use serde_json::Value;
    let unverified_issuer = {
        use base64::Engine;
        let payload = token.split('.').nth(1).ok_or(LogoutTokenError::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LogoutTokenError::Malformed)?;
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| LogoutTokenError::Malformed)?;
        claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(LogoutTokenError::Malformed)?
            .to_string()
    };
    let candidates: Vec<_> = snapshot
        .logins
        .clients
        .iter()
        .filter(|c| c.settings.issuer == unverified_issuer)
        .collect();
    let first = candidates.first().ok_or(LogoutTokenError::UnknownClient)?;
    let signed = snapshot
        .verifier
        .verify_signed(token, first.settings.provider)
        .await
        .map_err(|e| match e {
            crate::auth::jwt::VerifyError::KeysUnavailable => LogoutTokenError::KeysUnavailable,
            crate::auth::jwt::VerifyError::Token(_) => {
                LogoutTokenError::Signature("logout_token_invalid")
            }
        })?;
    if let Some(typ) = signed.header.get("typ") {
        let typ = typ.as_str().map(crate::auth::jwt::normalize_typ);
        if typ.as_deref() != Some("logout+jwt") {
            return Err(LogoutTokenError::Type);
        }
    }
    let claims = &signed.claims;
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(LogoutTokenError::Audience),
    };
    if !candidates
        .iter()
        .any(|c| audiences.contains(&c.settings.client_id.as_str()))
    {
        return Err(LogoutTokenError::Audience);
    }
    let provider = &snapshot.verifier.providers()[first.settings.provider];
    let leeway = i64::try_from(provider.leeway.as_secs()).unwrap_or(0);
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_i64().ok_or(LogoutTokenError::Expired)?;
        if now >= exp.saturating_add(leeway) {
            return Err(LogoutTokenError::Expired);
        }
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LogoutTokenError::IssuedAt)?;
    if iat > now.saturating_add(leeway) || iat < now.saturating_sub(MAX_LOGOUT_TOKEN_AGE + leeway) {
        return Err(LogoutTokenError::IssuedAt);
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_EVENT));
    if !matches!(event, Some(Value::Object(_))) {
        return Err(LogoutTokenError::Events);
    }
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let text = |name: &str| -> Result<Option<String>, LogoutTokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(value)) if !value.is_empty() => Ok(Some(value.clone())),
            Some(_) => Err(LogoutTokenError::Malformed),
        }
    };
    let sid = text("sid")?;
    let subject = text("sub")?;
    if sid.is_none() && subject.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    let jti = text("jti")?.ok_or(LogoutTokenError::NoJti)?;
    let jti_key = format!("{unverified_issuer}\0{jti}");
    let fresh = snapshot
        .logins
        .seen_logout_tokens
        .entry(jti_key.clone())
        .or_insert(())
        .is_fresh();
    if !fresh {
        return Err(LogoutTokenError::Replayed);
    }
    Ok(LogoutOrder {
        jti_key,
        issuer: provider.issuer.to_string(),
        sid,
        subject,
    })
}

/// Ends what a logout token names, on every replica sharing the list: one IdP session by `sid`,
/// else every session (and token) of the subject begun before now. The entry lasts as long as
/// any session could.
pub async fn backchannel(
    snapshot: &Snapshot,
    order: &LogoutOrder,
    now: i64,
) -> Result<(), RevokeError> {
    let lifetime = snapshot.logins.sessions.as_ref().map_or(0, |s| {
        i64::try_from(s.settings.lifetime.as_secs()).unwrap_or(i64::MAX)
    });
    let expires = Some(now.saturating_add(lifetime));
    let target = match (&order.sid, &order.subject) {
        (Some(sid), _) => Target::Session {
            issuer: order.issuer.clone().into(),
            sid: sid.clone().into(),
        },
        (None, Some(subject)) => Target::Subject {
            issuer: order.issuer.clone().into(),
            subject: subject.clone().into(),
            issued_before: Some(now),
        },
        (None, None) => return Ok(()),
    };
    let kind = target.kind();
    add(snapshot, Entry { target, expires }).await?;
    tracing::info!(target: "authgate::audit", op = "add", kind, operator = "idp-backchannel", "sessions ended by the IdP's back-channel logout");
    Ok(())
}
