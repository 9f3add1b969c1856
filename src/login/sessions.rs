//! Where sessions live between requests, and their refresh. The cookie store seals the whole
//! session into the browser's cookie (split into numbered cookies past ~4 KB); the Redis store
//! seals it into Redis and gives the browser only an opaque id, sealed too, so server-side
//! logout deletes it for every replica. Refreshes are single-flight per session: concurrent
//! requests carrying the same session share one call to the token endpoint and its answer.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::auth::jwt::{now_unix, Verifier};
use crate::config::build_login::SessionSettings;
use crate::config::file::SessionStore;
use crate::login::cookies::{self, CookieOptions, CookieSpec};
use crate::login::oidc::{LoginError, OidcClient};
use crate::login::session::Session;

/// Purpose (AEAD associated data) of sessions sealed into Redis, so a Redis value can never be
/// replayed as a cookie or the other way round.
const REDIS_PURPOSE: &str = "authgate-session-redis";
/// How long a refreshed session is remembered for the requests that carried the old one.
const REFRESH_MEMORY: Duration = Duration::from_secs(60);
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_RETRY: Duration = Duration::from_secs(1);
/// How long one replica may hold a session's refresh (longer than an IdP call may take), and
/// how often the others look for its result.
const REFRESH_LOCK: Duration = Duration::from_secs(15);
const REFRESH_POLL: Duration = Duration::from_millis(50);

/// Why a request's session could not be used; `reason()` goes to logs and the 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionProblem {
    /// The cookie is malformed, tampered with, sealed with a retired key, or names a session
    /// Redis no longer has.
    Invalid(&'static str),
    Expired,
    /// The access token expired and there is no refresh token to renew it.
    AccessExpired,
    RefreshFailed(LoginError),
    StoreUnavailable,
}

impl SessionProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            SessionProblem::Invalid(reason) => reason,
            SessionProblem::Expired => "session_expired",
            SessionProblem::AccessExpired => "session_access_expired",
            SessionProblem::RefreshFailed(_) => "session_refresh_failed",
            SessionProblem::StoreUnavailable => "session_store_unavailable",
        }
    }
}

/// The cookie's content in the Redis store.
#[derive(Serialize, Deserialize)]
struct RedisRef {
    v: u8,
    id: String,
}

pub struct Sessions {
    pub settings: SessionSettings,
    pub cookie: CookieSpec,
    /// The base of every login-state cookie (its name is the prefix).
    pub login_state: CookieSpec,
    redis: Option<RedisStore>,
    /// (session id, access_expires_at of the session refreshed) → the refreshed session.
    refreshes: moka::future::Cache<(String, i64), Arc<Session>>,
}

struct RedisStore {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// When a connection attempt last failed: for [`REDIS_RETRY`] after it, requests get the
    /// error at once instead of queueing behind another connect timeout.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A session found on a request.
pub struct Found {
    pub session: Arc<Session>,
    /// `Set-Cookie` values the response must carry (a refreshed cookie).
    pub set_cookies: Vec<HeaderValue>,
}

impl Sessions {
    pub fn new(settings: SessionSettings) -> Result<Self, String> {
        let options = CookieOptions {
            domain: settings.cookie_domain.clone(),
            secure: settings.cookie_secure,
            max_age: Some(settings.lifetime),
            ..CookieOptions::default()
        };
        let cookie = CookieSpec::new(&settings.cookie_name, options.clone())
            .map_err(|e| format!("session cookie: {}", e.reason()))?;
        let login_state = CookieSpec::new(&settings.login_state_cookie_name, options)
            .map_err(|e| format!("login-state cookie: {}", e.reason()))?;
        let redis = match (&settings.store, &settings.redis) {
            (SessionStore::Redis, Some((url, display))) => Some(RedisStore {
                client: redis::Client::open(url.as_str())
                    .map_err(|_| format!("session store {display}: not a valid Redis URL"))?,
                connection: tokio::sync::Mutex::new(None),
                failed_at: std::sync::Mutex::new(None),
            }),
            (SessionStore::Redis, None) => return Err("session store: no Redis URL".into()),
            (SessionStore::Cookie, _) => None,
        };
        Ok(Sessions {
            settings,
            cookie,
            login_state,
            redis,
            refreshes: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REFRESH_MEMORY)
                .build(),
        })
    }

    /// The request's session, if it carries one; `Err` when it carries one that cannot be used
    /// (the caller clears it).
    pub async fn load(&self, headers: &HeaderMap) -> Result<Option<Session>, SessionProblem> {
        let name = self.cookie.name();
        let Some(sealed) =
            cookies::read(headers, name).map_err(|e| SessionProblem::Invalid(e.reason()))?
        else {
            return Ok(None);
        };
        let plain = self.open(name, &sealed)?;
        let session = match &self.redis {
            None => Session::from_json(&plain).ok_or(SessionProblem::Invalid("session_invalid"))?,
            Some(redis) => {
                let reference: RedisRef = serde_json::from_slice(&plain)
                    .ok()
                    .filter(|r: &RedisRef| r.v == 1)
                    .ok_or(SessionProblem::Invalid("session_invalid"))?;
                self.load_by_id(redis, &reference.id)
                    .await?
                    .ok_or(SessionProblem::Invalid("session_unknown"))?
            }
        };
        if now_unix() >= session.expires_at {
            return Err(SessionProblem::Expired);
        }
        Ok(Some(session))
    }

    /// Opens what the key ring sealed for `purpose`; a value it cannot open is no session.
    fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, SessionProblem> {
        self.settings
            .keys
            .open(purpose, sealed)
            .map_err(|e| SessionProblem::Invalid(e.reason()))
    }

    /// The session stored in Redis under `id`, if any.
    async fn load_by_id(
        &self,
        redis: &RedisStore,
        id: &str,
    ) -> Result<Option<Session>, SessionProblem> {
        let Some(stored) = self.redis_get(redis, id).await? else {
            return Ok(None);
        };
        let plain = self.open(REDIS_PURPOSE, &stored)?;
        Session::from_json(&plain)
            .filter(|s| s.id == id)
            .map(Some)
            .ok_or(SessionProblem::Invalid("session_invalid"))
    }

    /// Stores `session` and returns the `Set-Cookie` values that give the browser its cookie;
    /// `headers` are the request's, whose surplus chunks are expired. `replace`: the session
    /// must still be in the store (a refresh racing a logout must not bring it back).
    pub async fn save(
        &self,
        session: &Session,
        headers: &HeaderMap,
        replace: bool,
    ) -> Result<Vec<HeaderValue>, SessionProblem> {
        let name = self.cookie.name();
        let value = match &self.redis {
            None => session.to_json(),
            Some(redis) => {
                let sealed = self
                    .settings
                    .keys
                    .seal(REDIS_PURPOSE, &session.to_json())
                    .map_err(|_| SessionProblem::StoreUnavailable)?;
                let ttl = session.expires_at.saturating_sub(now_unix()).max(1);
                self.redis_set(redis, &session.id, &sealed, ttl, replace)
                    .await?;
                serde_json::to_vec(&RedisRef {
                    v: 1,
                    id: session.id.clone(),
                })
                .unwrap_or_default()
            }
        };
        let sealed = self
            .settings
            .keys
            .seal(name, &value)
            .map_err(|_| SessionProblem::StoreUnavailable)?;
        let lifetime = Duration::from_secs(
            u64::try_from(session.expires_at.saturating_sub(now_unix()).max(1)).unwrap_or(1),
        );
        let spec = self
            .cookie
            .with_max_age(Some(lifetime))
            .map_err(|_| SessionProblem::StoreUnavailable)?;
        cookies::set_cookies(&spec, &sealed, cookies::present_chunks(headers, name))
            .map_err(|e| SessionProblem::Invalid(e.reason()))
    }

    async fn store_in_redis(
        &self,
        redis: &RedisStore,
        session: &Session,
        replace: bool,
    ) -> Result<(), SessionProblem> {
        let sealed = self
            .settings
            .keys
            .seal(REDIS_PURPOSE, &session.to_json())
            .map_err(|_| SessionProblem::StoreUnavailable)?;
        let ttl = session.expires_at.saturating_sub(now_unix()).max(1);
        self.redis_set(redis, &session.id, &sealed, ttl, replace)
            .await
    }

    /// Ends the session in the store (Redis) and returns the `Set-Cookie` values that remove it
    /// from the browser.
    pub async fn forget(&self, session: Option<&Session>, headers: &HeaderMap) -> Vec<HeaderValue> {
        if let (Some(redis), Some(session)) = (&self.redis, session) {
            if self.redis_delete(redis, &session.id).await.is_err() {
                tracing::warn!("session store unreachable: a logged-out session stays in Redis until it expires (its revocation still ends it)");
            }
        }
        self.clear(headers)
    }

    /// Removes the session cookie (every chunk) and every login-state cookie from a request
    /// about to go upstream.
    pub fn remove_from_request(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(http::header::COOKIE) {
            return;
        }
        cookies::remove_from_request(headers, self.cookie.name());
        crate::login::login_state::remove_from_request(headers, &self.login_state);
    }

    /// `Set-Cookie` values removing the session cookie and every chunk the request carried.
    pub fn clear(&self, headers: &HeaderMap) -> Vec<HeaderValue> {
        cookies::clear_cookies(
            &self.cookie,
            cookies::present_chunks(headers, self.cookie.name()),
        )
    }

    /// Refreshes `session` at its IdP, once for every request carrying this same session: in
    /// this process through the refresh memory, and across replicas sharing Redis through a
    /// short lock there (an IdP that rotates refresh tokens ends the whole session when two
    /// replicas spend the same one).
    pub async fn refresh(
        self: &Arc<Self>,
        session: &Session,
        client: &Arc<OidcClient>,
        verifier: &Arc<Verifier>,
        leeway: i64,
    ) -> Result<Arc<Session>, SessionProblem> {
        let key = (session.id.clone(), session.access_expires_at.unwrap_or(0));
        self.refreshes
            .try_get_with(key.clone(), async {
                // In a task of its own: once the IdP has rotated the refresh token, the new one
                // must be kept even if the request that asked goes away (a browser closing a
                // tab). The result is remembered for the session's next request either way.
                let this = self.clone();
                let (session, client, verifier) =
                    (session.clone(), client.clone(), verifier.clone());
                let task = tokio::spawn(async move {
                    let refreshed = match &this.redis {
                        None => refresh_at_idp(&session, &client, &verifier, leeway).await,
                        Some(redis) => {
                            this.refresh_in_fleet(redis, &session, &client, &verifier, leeway)
                                .await
                        }
                    }
                    .map(Arc::new);
                    if let Ok(refreshed) = &refreshed {
                        this.refreshes.insert(key, refreshed.clone()).await;
                    }
                    refreshed
                });
                task.await.unwrap_or(Err(SessionProblem::RefreshFailed(
                    LoginError::TokenEndpointUnreachable,
                )))
            })
            .await
            .map_err(|e: Arc<SessionProblem>| (*e).clone())
    }

    async fn refresh_in_fleet(
        &self,
        redis: &RedisStore,
        session: &Session,
        client: &OidcClient,
        verifier: &Verifier,
        leeway: i64,
    ) -> Result<Session, SessionProblem> {
        let lock = format!("{}refresh:", self.settings.key_prefix) + &self.id_digest(&session.id);
        // A refused refresh is left here a while, so the replicas that waited do not spend the
        // dead refresh token again.
        let refused = format!("{lock}:refused");
        let holder =
            crate::login::pkce::random_token(16).map_err(|_| SessionProblem::StoreUnavailable)?;
        // Longer than everything the holder may wait for: discovery, the token call (headers and
        // body, each within the login's timeout), the keys, and the Redis calls.
        let hold = client.settings.timeout * 4 + REDIS_TIMEOUT * 4 + REFRESH_LOCK;
        let mut take = redis::cmd("SET");
        take.arg(&lock)
            .arg(&holder)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX));
        let mut taken = self
            .redis_io::<Option<String>>(redis, take)
            .await?
            .is_some();
        if !taken {
            // SET NX is retried after a lost reply: the lock may be this replica's own.
            let mut owner = redis::cmd("GET");
            owner.arg(&lock);
            taken = self.redis_io::<Option<String>>(redis, owner).await? == Some(holder.clone());
        }
        let changed = |stored: &Session| stored.access_expires_at != session.access_expires_at;
        if !taken {
            // Another replica is refreshing this session: its result lands in Redis.
            let deadline = tokio::time::Instant::now() + hold;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(REFRESH_POLL).await;
                match self.load_by_id(redis, &session.id).await? {
                    Some(stored) if changed(&stored) => return Ok(stored),
                    Some(_) => {}
                    None => return Err(SessionProblem::Invalid("session_unknown")),
                }
                // The holder gave up (its refresh failed) without a new session: no point
                // waiting out the lock's time.
                let mut held = redis::cmd("EXISTS");
                held.arg(&lock);
                if self.redis_io::<i64>(redis, held).await? == 0 {
                    // Stored before the lock was released: a last look sees a success.
                    if let Some(stored) = self.load_by_id(redis, &session.id).await? {
                        if changed(&stored) {
                            return Ok(stored);
                        }
                    }
                    let mut dead = redis::cmd("EXISTS");
                    dead.arg(&refused);
                    if self.redis_io::<i64>(redis, dead).await? == 1 {
                        return Err(SessionProblem::RefreshFailed(
                            LoginError::TokenEndpointRefused("invalid_grant".into()),
                        ));
                    }
                    break;
                }
            }
            return Err(SessionProblem::RefreshFailed(
                LoginError::TokenEndpointUnreachable,
            ));
        }
        let outcome = async {
            // A replica may have finished just before this one took the lock.
            match self.load_by_id(redis, &session.id).await? {
                Some(stored) if changed(&stored) => return Ok(stored),
                Some(_) => {}
                None => return Err(SessionProblem::Invalid("session_unknown")),
            }
            let refreshed = match refresh_at_idp(session, client, verifier, leeway).await {
                Ok(refreshed) => refreshed,
                Err(SessionProblem::RefreshFailed(error)) if !error.is_transient() => {
                    let mut mark = redis::cmd("SET");
                    mark.arg(&refused)
                        .arg(1)
                        .arg("PX")
                        .arg(u64::try_from(REFRESH_LOCK.as_millis()).unwrap_or(u64::MAX));
                    let _ = self.redis_io::<Option<String>>(redis, mark).await;
                    return Err(SessionProblem::RefreshFailed(error));
                }
                Err(problem) => return Err(problem),
            };
            self.store_in_redis(redis, &refreshed, true).await?;
            Ok(refreshed)
        }
        .await;
        // Released only by its holder: a lock that outlived its time may be another's now.
        let mut release = redis::cmd("EVAL");
        release
            .arg("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end")
            .arg(1)
            .arg(&lock)
            .arg(&holder);
        let _ = self.redis_io::<i64>(redis, release).await;
        outcome
    }

    async fn connection(
        &self,
        redis: &RedisStore,
    ) -> Result<redis::aio::MultiplexedConnection, SessionProblem> {
        let failed_at = || {
            redis
                .failed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if failed_at().is_some_and(|at| at.elapsed() < REDIS_RETRY) {
            return Err(SessionProblem::StoreUnavailable);
        }
        let mut slot = redis.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        // Requests that queued behind a failed attempt fail at once too.
        if failed_at().is_some_and(|at| at.elapsed() < REDIS_RETRY) {
            return Err(SessionProblem::StoreUnavailable);
        }
        let connected = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis.client.get_multiplexed_async_connection(),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *failed_at() = None;
                *slot = Some(connection.clone());
                Ok(connection)
            }
            _ => {
                *failed_at() = Some(std::time::Instant::now());
                Err(SessionProblem::StoreUnavailable)
            }
        }
    }

    /// Redis keys hold a digest of the id, never the id: a key listing is no credential.
    fn id_digest(&self, id: &str) -> String {
        crate::auth::keys::sha256(&[id.as_bytes()])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn redis_key(&self, id: &str) -> String {
        format!("{}{}", self.settings.key_prefix, self.id_digest(id))
    }

    async fn redis_io<T: redis::FromRedisValue>(
        &self,
        redis: &RedisStore,
        command: redis::Cmd,
    ) -> Result<T, SessionProblem> {
        // A kept connection may have died with a Redis restart: one fresh attempt before the
        // store counts as unavailable.
        for _ in 0..2 {
            let mut connection = self.connection(redis).await?;
            let outcome =
                tokio::time::timeout(REDIS_TIMEOUT, command.query_async(&mut connection)).await;
            match outcome {
                Ok(Ok(value)) => return Ok(value),
                // Dropped so the next attempt reconnects.
                _ => *redis.connection.lock().await = None,
            }
        }
        Err(SessionProblem::StoreUnavailable)
    }

    async fn redis_get(
        &self,
        redis: &RedisStore,
        id: &str,
    ) -> Result<Option<String>, SessionProblem> {
        let mut command = redis::cmd("GET");
        command.arg(self.redis_key(id));
        self.redis_io(redis, command).await
    }

    async fn redis_set(
        &self,
        redis: &RedisStore,
        id: &str,
        value: &str,
        ttl_seconds: i64,
        replace: bool,
    ) -> Result<(), SessionProblem> {
        let mut command = redis::cmd("SET");
        command
            .arg(self.redis_key(id))
            .arg(value)
            .arg("EX")
            .arg(ttl_seconds);
        if replace {
            command.arg("XX");
        }
        match self.redis_io::<Option<String>>(redis, command).await? {
            Some(_) => Ok(()),
            None => Err(SessionProblem::Invalid("session_unknown")),
        }
    }

    async fn redis_delete(&self, redis: &RedisStore, id: &str) -> Result<(), SessionProblem> {
        let mut command = redis::cmd("DEL");
        command.arg(self.redis_key(id));
        self.redis_io::<i64>(redis, command).await.map(|_| ())
    }
}

/// One refresh at the IdP: new tokens, and a new ID token checked like the first (same user).
async fn refresh_at_idp(
    session: &Session,
    client: &OidcClient,
    verifier: &Verifier,
    leeway: i64,
) -> Result<Session, SessionProblem> {
    let failed = SessionProblem::RefreshFailed;
    let refresh_token = session
        .refresh_token
        .as_deref()
        .ok_or(failed(LoginError::TokenResponseInvalid))?;
    let tokens = client.refresh(refresh_token).await.map_err(failed)?;
    let now = now_unix();
    let id_token = match tokens.id_token {
        Some(id_token) => {
            let signed = client
                .check_id_token(verifier, &id_token, None, leeway, now)
                .await
                .map_err(failed)?;
            // OIDC Core §12.2: the same user, at the same issuer.
            if signed.claims.get("sub").and_then(serde_json::Value::as_str)
                != session.subject().as_deref()
            {
                return Err(failed(LoginError::IdToken("id_token_subject")));
            }
            Some((id_token, signed.kid))
        }
        None => None,
    };
    Ok(session.refreshed(
        id_token,
        tokens.access_token,
        tokens.refresh_token,
        tokens.access_expires_at,
        now,
    ))
}
