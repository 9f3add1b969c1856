//! A local token issuer: a loopback server publishing a JWKS and an OIDC discovery document,
//! and behind them a small OpenID Provider (`super::idp`: authorization-code flow with PKCE,
//! refresh, RP-initiated and back-channel logout) once it has a signing key.
//!
//! `authgate demo` uses it to mint tokens for its protected echo route; the integration tests
//! use it as the real IdP they verify against (it counts JWKS fetches, rotates keys and can be
//! taken down). Keys come from `super::signing`, which signs whatever header and payload text it
//! is given, so tests can also craft tokens no honest issuer would produce. It is never part of
//! the request path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::idp::{self, OpenIdProvider};
use crate::edge::body::{full, Body};

pub use super::idp::{
    Delivery, LogoutTokenTweak, OidcClient, TokenFault, BACKCHANNEL_EVENT, SESSION_COOKIE,
};
pub use super::signing::SigningKey;

/// What the JWKS server publishes, and how it behaves.
struct Published {
    keys: Vec<Value>,
    cache_control: Option<String>,
    /// The demo login page: which cookie to set, the token to put in it, and the origin a
    /// return URL must start with (so the page is no open redirect).
    login: Option<(String, String, String)>,
}

/// An IdP on loopback: `/jwks` and `/.well-known/openid-configuration`, the legacy `/login`,
/// and the OpenID Provider's `/authorize`, `/token`, `/end_session` and `/demo/backchannel`.
pub struct JwksServer {
    pub addr: SocketAddr,
    op: OpenIdProvider,
    published: Mutex<Published>,
    down: AtomicBool,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
    /// The `User-Agent` of the last JWKS and discovery request, in that order.
    user_agents: Mutex<(Option<String>, Option<String>)>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(JwksServer {
            addr,
            op: OpenIdProvider::new(format!("http://{addr}")),
            published: Mutex::new(Published {
                keys,
                cache_control: None,
                login: None,
            }),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
            user_agents: Mutex::new((None, None)),
        });
        let serving = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let server = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(server)
    }

    /// The issuer URL whose discovery document this server publishes.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.lock().keys = keys;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.lock().cache_control = value.map(str::to_string);
    }

    /// Serves `/login?rd=URL`: sets `cookie=token` (HttpOnly, SameSite=Lax) and redirects to
    /// `rd` when it starts with `return_origin`. A stand-in for a real IdP's login flow.
    pub fn set_login(&self, cookie: &str, token: &str, return_origin: &str) {
        self.lock().login = Some((
            cookie.to_string(),
            token.to_string(),
            return_origin.to_string(),
        ));
    }

    /// While down, every request gets a 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> u64 {
        self.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The `User-Agent` of the last JWKS request.
    pub fn jwks_user_agent(&self) -> Option<String> {
        self.lock_user_agents().0.clone()
    }

    /// The `User-Agent` of the last discovery request.
    pub fn discovery_user_agent(&self) -> Option<String> {
        self.lock_user_agents().1.clone()
    }

    fn lock_user_agents(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<String>)> {
        self.user_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn login(&self, query: Option<&str>) -> Response<Body> {
        let Some((cookie, token, return_origin)) = self.lock().login.clone() else {
            let mut response = Response::new(full("no login configured"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        };
        let target = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "rd")
            .map(|(_, v)| crate::auth::credential::percent_decode(v))
            .filter(|rd| rd.starts_with(&format!("{return_origin}/")))
            .unwrap_or_else(|| format!("{return_origin}/"));
        let mut response = Response::new(full("logged in"));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        if let Ok(location) = http::HeaderValue::from_str(&target) {
            headers.insert(http::header::LOCATION, location);
        }
        if let Ok(set) = http::HeaderValue::from_str(&format!(
            "{cookie}={token}; Path=/; HttpOnly; SameSite=Lax"
        )) {
            headers.insert(http::header::SET_COOKIE, set);
        }
        response
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if idp::owns(path) {
            if self.down.load(Ordering::SeqCst) {
                let mut response = Response::new(full("down"));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return response;
            }
            return idp::answer(&self.op, req).await;
        }
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match path {
            "/jwks" => self.lock_user_agents().0 = user_agent,
            "/.well-known/openid-configuration" => self.lock_user_agents().1 = user_agent,
            _ => {}
        }
        let (counter, body, cache_control) = match path {
            "/jwks" => {
                let published = self.lock();
                (
                    &self.jwks_fetches,
                    json!({ "keys": self.published_keys(&published.keys) }).to_string(),
                    published.cache_control.clone(),
                )
            }
            "/.well-known/openid-configuration" => (
                &self.discovery_fetches,
                idp::discovery(&self.op, &self.jwks_uri()).to_string(),
                None,
            ),
            "/login" => return self.login(req.uri().query()),
            _ => {
                let mut response = Response::new(full("not found"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                return response;
            }
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            let mut response = Response::new(full("down"));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        let mut response = Response::new(full(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(value) = cache_control.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            response
                .headers_mut()
                .insert(http::header::CACHE_CONTROL, value);
        }
        response
    }
}

/// The OpenID Provider: clients, its signing key, and the knobs tests turn.
impl JwksServer {
    /// `keys` as set, then the OP's public key unless a key with its `kid` is already there.
    fn published_keys(&self, keys: &[Value]) -> Vec<Value> {
        let mut all = keys.to_vec();
        if let Some(jwk) = self.op.signer().and_then(|key| key.public_jwk(true)) {
            let present = keys
                .iter()
                .any(|k| k == &jwk || (jwk.get("kid").is_some() && k.get("kid") == jwk.get("kid")));
            if !present {
                all.push(jwk);
            }
        }
        all
    }

    /// Registers (or replaces) a relying party.
    pub fn register_client(&self, client: OidcClient) {
        self.op
            .lock()
            .clients
            .insert(client.client_id.clone(), client);
    }

    /// The public JWK of a client that authenticates at the token endpoint with
    /// `private_key_jwt` (a signed client assertion, RFC 7523) instead of a secret.
    pub fn register_client_key(&self, client_id: &str, jwk: Value) {
        self.op
            .lock()
            .client_keys
            .insert(client_id.to_string(), jwk);
    }

    /// The key that signs ID, access and logout tokens. Its public JWK is published in `/jwks`
    /// after the keys `start`/`set_keys` gave (so key rotation tests keep working); an HMAC key
    /// publishes nothing. Without one the token endpoint answers 500 `server_error`.
    pub fn set_signing_key(&self, key: SigningKey) {
        self.op.lock().signer = Some(Arc::new(key));
    }

    /// Lifetimes of access and ID tokens (whole seconds count; defaults 300 s each).
    pub fn set_token_lifetimes(&self, access: Duration, id: Duration) {
        let mut state = self.op.lock();
        state.access_lifetime = access;
        state.id_lifetime = id;
    }

    /// Lifetime of refresh tokens (default an hour).
    pub fn set_refresh_token_lifetime(&self, lifetime: Duration) {
        self.op.lock().refresh_lifetime = lifetime;
    }

    /// The `aud` of access tokens (default "demo-api").
    pub fn set_access_audience(&self, audience: &str) {
        self.op.lock().access_audience = audience.to_string();
    }

    /// While set, `/authorize` signs this user in without a form (and sets the SSO cookie).
    pub fn set_auto_login(&self, username: Option<&str>) {
        self.op.lock().auto_login = username.map(str::to_string);
    }

    /// Claims (a JSON object) added to this user's access and ID tokens, over the derived ones
    /// (`name`, `preferred_username`, `email`, `email_verified`, and `roles: ["user"]` in
    /// access tokens).
    pub fn set_user_claims(&self, username: &str, claims: Value) {
        self.op
            .lock()
            .user_claims
            .insert(username.to_string(), claims);
    }

    /// Spoils every token-endpoint answer while set (see `TokenFault`).
    pub fn set_token_endpoint_fault(&self, fault: Option<TokenFault>) {
        self.op.lock().fault = fault;
    }

    /// Whether `/end_session` sends back-channel logout tokens to the clients that took part in
    /// the ended sessions before it answers (default true).
    pub fn set_backchannel_on_end_session(&self, notify: bool) {
        self.op.lock().backchannel_on_end_session = notify;
    }

    /// Requests to `/token` with `grant_type=refresh_token`, answered or not.
    pub fn refresh_grants(&self) -> u64 {
        self.op.refresh_grants.load(Ordering::SeqCst)
    }

    /// Requests to `/token` (POST), whatever their outcome.
    pub fn token_requests(&self) -> u64 {
        self.op.token_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/authorize`.
    pub fn authorize_requests(&self) -> u64 {
        self.op.authorize_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/end_session`.
    pub fn end_session_calls(&self) -> u64 {
        self.op.end_session_calls.load(Ordering::SeqCst)
    }

    /// Every back-channel logout POST attempted so far, oldest first.
    pub fn backchannel_deliveries(&self) -> Vec<Delivery> {
        self.op.lock().deliveries.clone()
    }

    /// Signed-in browsers at the IdP.
    pub fn active_sessions(&self) -> usize {
        self.op.lock().sessions.len()
    }

    /// Ends the IdP sessions matching `sid` or `sub` and revokes their refresh tokens, without
    /// telling any client; returns how many ended.
    pub fn end_idp_sessions(&self, sid: Option<&str>, sub: Option<&str>) -> usize {
        self.op.lock().end_sessions(sid, sub).len()
    }

    /// A token with the standard header and `claims`, signed by the OP's key.
    pub fn sign_claims(&self, claims: &Value) -> Option<String> {
        self.op.signer().map(|key| key.token(claims))
    }

    /// Signs a logout token for `client_id` naming `sid`/`sub` and POSTs it (form
    /// `logout_token=`) to the client's `backchannel_logout_uri`; returns the status answered.
    /// The IdP's own sessions are left as they are (`end_idp_sessions` ends them).
    pub async fn backchannel_logout(
        &self,
        client_id: &str,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<u16, String> {
        idp::backchannel_logout(&self.op, client_id, sid, sub).await
    }

    /// A logout token for `client_id`, spoiled as `tweak` says, not sent. Empty when the OP has
    /// no signing key.
    pub fn logout_token(
        &self,
        client_id: &str,
        sid: Option<&str>,
        sub: Option<&str>,
        tweak: LogoutTokenTweak,
    ) -> String {
        self.op.signer().map_or_else(String::new, |key| {
            idp::logout_token(&key, &self.op.issuer, client_id, sid, sub, tweak)
        })
    }
}
