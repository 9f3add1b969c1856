//! What the demo OP remembers: registered clients, IdP sessions (the browser's SSO cookie),
//! authorization codes, refresh tokens, its signing key, lifetimes and the test knobs. One mutex
//! guards it all and is never held across an await.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::form::random_value;
use crate::demo::signing::SigningKey;

/// The IdP's SSO cookie.
pub const SESSION_COOKIE: &str = "idp_session";

/// Authorization codes live this long (RFC 6749 §4.1.2 recommends at most ten minutes).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// A relying party registered with the demo OP.
#[derive(Debug, Clone, Default)]
pub struct OidcClient {
    pub client_id: String,
    /// `None`: a public client, which authenticates at the token endpoint by `client_id` alone.
    pub client_secret: Option<String>,
    /// Compared exactly, as OIDC requires.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Where back-channel logout tokens are POSTed (`http://` only).
    pub backchannel_logout_uri: Option<String>,
}

/// A fault the token endpoint applies to every answer while it is set, so a relying party's
/// failure handling can be tested. The first four answer before the grant is looked at (nothing
/// is consumed); the others process the grant normally and spoil the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFault {
    /// This status with an OAuth error body (`invalid_grant` for 400, `invalid_client` for 401,
    /// `temporarily_unavailable` otherwise).
    Status(u16),
    /// Never answers (sleeps an hour).
    Hang,
    /// Answers normally, this many milliseconds late (a slow IdP, to make races visible).
    Slow(u64),
    /// 200 with `Content-Type: application/json` and a body that is not JSON.
    Garbage,
    /// 200 with an 8 MiB JSON body.
    HugeBody,
    /// The ID token carries a nonce other than the one requested.
    WrongNonce,
    /// The ID token's `aud` (and `azp`) name another client.
    WrongAudience,
    /// The ID token's `iss` is another issuer.
    WrongIssuer,
    /// The ID token expired ten minutes ago.
    ExpiredIdToken,
    /// The ID token has `alg: none` and no signature.
    UnsignedIdToken,
    /// The ID token is signed by another key with the same `kid` and algorithm.
    BadSignature,
    /// The ID token names another subject (on refresh, OIDC Core 12.2 requires the same one).
    WrongSubject,
    /// The answer has no `id_token`.
    NoIdToken,
    /// The answer has no `refresh_token`.
    NoRefreshToken,
}

/// How `logout_token` spoils a back-channel logout token, to test a relying party's refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutTokenTweak {
    /// A well-formed logout token.
    None,
    /// Carries a `nonce` (OIDC Back-Channel Logout §2.4 forbids it).
    WithNonce,
    /// No `events` claim.
    NoEvents,
    /// Header `typ: JWT` instead of `logout+jwt`.
    WrongTyp,
    /// `aud` names another client.
    WrongAudience,
    /// `iss` is another issuer.
    WrongIssuer,
    /// Expired ten minutes ago.
    Expired,
    /// Signed by another key with the same `kid` and algorithm.
    BadSignature,
}

/// One back-channel logout POST the OP made, with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub client_id: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// The status the relying party answered, or why nothing was delivered.
    pub outcome: Result<u16, String>,
}

/// A signed-in browser at the IdP.
#[derive(Debug, Clone)]
pub struct Session {
    /// The public session id put in tokens (the cookie value stays secret).
    pub sid: String,
    pub subject: String,
    pub auth_time: i64,
    /// The clients that obtained tokens in this session: the ones told about its end.
    pub clients: BTreeSet<String>,
}

/// What an authorization code stands for.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: String,
    pub grant: Grant,
    pub expires_at: Instant,
    pub used: bool,
}

/// The authentication a code or refresh token carries forward.
#[derive(Debug, Clone)]
pub struct Grant {
    pub sid: String,
    pub subject: String,
    pub scope: String,
    pub auth_time: i64,
    /// Shared by a code and every refresh token descending from it, so a replayed code can
    /// revoke them all (RFC 6749 §4.1.2).
    pub family: String,
}

#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub client_id: String,
    pub grant: Grant,
    pub expires_at: Instant,
}

pub struct State {
    pub clients: HashMap<String, OidcClient>,
    /// Public JWKs of clients that authenticate with `private_key_jwt`, by client id.
    pub client_keys: HashMap<String, Value>,
    /// `jti`s of client assertions already used (RFC 7523 §3: single use).
    pub used_assertions: HashMap<String, Instant>,
    /// By cookie value.
    pub sessions: HashMap<String, Session>,
    pub codes: HashMap<String, CodeGrant>,
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    /// Refresh tokens rotated out, with their family: presenting one again revokes the family
    /// (reuse detection, RFC 9700 §4.14.2).
    pub retired_refresh_tokens: HashMap<String, (String, Instant)>,
    pub signer: Option<Arc<SigningKey>>,
    pub access_lifetime: Duration,
    pub id_lifetime: Duration,
    pub refresh_lifetime: Duration,
    pub access_audience: String,
    pub auto_login: Option<String>,
    pub user_claims: HashMap<String, Value>,
    pub fault: Option<TokenFault>,
    pub backchannel_on_end_session: bool,
    pub deliveries: Vec<Delivery>,
}

/// The demo OpenID Provider's state and counters.
pub struct OpenIdProvider {
    pub issuer: String,
    state: Mutex<State>,
    pub token_requests: AtomicU64,
    pub refresh_grants: AtomicU64,
    pub end_session_calls: AtomicU64,
    pub authorize_requests: AtomicU64,
}

impl OpenIdProvider {
    pub fn new(issuer: String) -> Self {
        OpenIdProvider {
            issuer,
            state: Mutex::new(State {
                clients: HashMap::new(),
                client_keys: HashMap::new(),
                used_assertions: HashMap::new(),
                sessions: HashMap::new(),
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                retired_refresh_tokens: HashMap::new(),
                signer: None,
                access_lifetime: Duration::from_secs(300),
                id_lifetime: Duration::from_secs(300),
                refresh_lifetime: Duration::from_secs(3600),
                access_audience: "demo-api".to_string(),
                auto_login: None,
                user_claims: HashMap::new(),
                fault: None,
                backchannel_on_end_session: true,
                deliveries: Vec::new(),
            }),
            token_requests: AtomicU64::new(0),
            refresh_grants: AtomicU64::new(0),
            end_session_calls: AtomicU64::new(0),
            authorize_requests: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn signer(&self) -> Option<Arc<SigningKey>> {
        self.lock().signer.clone()
    }
}

impl State {
    /// A new IdP session for `subject`; returns its cookie value.
    pub fn create_session(&mut self, subject: &str) -> String {
        let cookie = random_value();
        self.sessions.insert(
            cookie.clone(),
            Session {
                sid: random_value(),
                subject: subject.to_string(),
                auth_time: crate::auth::jwt::now_unix(),
                clients: BTreeSet::new(),
            },
        );
        cookie
    }

    /// Ends the sessions matching `sid` or `sub` (both `None` matches nothing) and revokes
    /// their refresh tokens; returns the ended sessions.
    pub fn end_sessions(&mut self, sid: Option<&str>, sub: Option<&str>) -> Vec<Session> {
        let matches = |session: &Session| {
            sid.is_some_and(|sid| session.sid == sid)
                || sub.is_some_and(|sub| session.subject == sub)
        };
        let cookies: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, session)| matches(session))
            .map(|(cookie, _)| cookie.clone())
            .collect();
        let ended: Vec<Session> = cookies
            .iter()
            .filter_map(|cookie| self.sessions.remove(cookie))
            .collect();
        self.refresh_tokens
            .retain(|_, refresh| !ended.iter().any(|s| s.sid == refresh.grant.sid));
        ended
    }

    /// The session with public id `sid`, to note which clients took part in it.
    pub fn session_by_sid(&mut self, sid: &str) -> Option<&mut Session> {
        self.sessions.values_mut().find(|s| s.sid == sid)
    }

    /// Drops codes that can no longer be redeemed nor replayed meaningfully.
    pub fn purge(&mut self) {
        let now = Instant::now();
        self.codes.retain(|_, code| code.expires_at > now);
        self.refresh_tokens
            .retain(|_, refresh| refresh.expires_at > now);
        self.retired_refresh_tokens
            .retain(|_, (_, expires_at)| *expires_at > now);
    }

    /// Revokes every refresh token descending from the code of `family`.
    pub fn revoke_family(&mut self, family: &str) {
        self.refresh_tokens
            .retain(|_, refresh| refresh.grant.family != family);
    }
}
