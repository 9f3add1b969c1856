//! The gateway as an OpenID Connect relying party at one IdP: the provider's endpoints from its
//! discovery document, the authorization request (code flow, PKCE S256, state, nonce), the code
//! exchange and refresh at the token endpoint, and the ID token's own rules (OIDC Core §3.1.3.7:
//! audience, azp, nonce, times) on top of the provider's signature and issuer checks. Every
//! network call has a deadline and a size limit; nothing from the IdP's answers reaches a log
//! but status codes and error codes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::{header, Request, StatusCode, Uri};
use serde_json::{Map, Value};

use crate::auth::credential::encode_query_value;
use crate::auth::idp_http::{self, HttpClient, USER_AGENT};
use crate::auth::jwt::{SignedToken, TokenError, Verifier, VerifyError};
use crate::config::build_login::LoginClientSettings;
use crate::config::file::ClientAuth;
use crate::edge::body::{empty, full};
use crate::login::login_state::LoginState;

/// Token responses are small JSON objects; anything near this is not one.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// How long the endpoints from discovery are used before they are fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery fetch, requests get the error at once for this long instead of
/// each waiting for the IdP.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Why a login, a refresh or a logout could not be completed; `reason()` is the stable name in
/// logs, metrics and the error page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The IdP's discovery document could not be had or lacks an endpoint.
    Discovery,
    /// The token endpoint could not be reached or did not answer in time.
    TokenEndpointUnreachable,
    /// The token endpoint answered with an OAuth error (its `error` code, sanitised).
    TokenEndpointRefused(String),
    /// The token endpoint answered with a server error (5xx): worth retrying.
    TokenEndpointFailed(u16),
    /// The token endpoint's answer is not a usable token response.
    TokenResponseInvalid,
    /// The ID token failed a check; the rule's reason.
    IdToken(&'static str),
    /// The IdP's signing keys cannot be had now.
    KeysUnavailable,
    /// The client assertion could not be signed (`private_key_jwt`): a configuration fault.
    ClientKeyUnusable,
}

impl LoginError {
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::Discovery => "idp_discovery_failed",
            LoginError::TokenEndpointUnreachable => "token_endpoint_unreachable",
            LoginError::TokenEndpointRefused(_) => "token_endpoint_refused",
            LoginError::TokenEndpointFailed(_) => "token_endpoint_failed",
            LoginError::TokenResponseInvalid => "token_response_invalid",
            LoginError::IdToken(reason) => reason,
            LoginError::KeysUnavailable => "keys_unavailable",
            LoginError::ClientKeyUnusable => "client_key_unusable",
        }
    }

    /// A failure of the IdP or the way to it rather than a verdict about the session: a refresh
    /// that fails this way is retried, and the session lives on while its access token does.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoginError::Discovery
                | LoginError::TokenEndpointUnreachable
                | LoginError::TokenEndpointFailed(_)
                | LoginError::KeysUnavailable
        ) || matches!(self, LoginError::TokenEndpointRefused(code) if code == "temporarily_unavailable" || code == "server_error")
    }

    /// The IdP's own error code, for the log line (already restricted to a safe alphabet).
    pub fn detail(&self) -> Option<&str> {
        match self {
            LoginError::TokenEndpointRefused(code) => Some(code),
            _ => None,
        }
    }
}

/// The endpoints a login needs, from the discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: Uri,
    pub end_session: Option<String>,
    /// RFC 9207: the IdP names itself in every authorization response, so a response without
    /// `iss` is refused.
    pub iss_parameter: bool,
}

struct Discovered {
    endpoints: Option<Arc<Endpoints>>,
    at: Instant,
}

/// A successful token response.
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Unix time the access token expires, from `expires_in`.
    pub access_expires_at: Option<i64>,
}

/// Never prints a token.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &self.id_token.is_some())
            .field("refresh_token", &self.refresh_token.is_some())
            .field("access_expires_at", &self.access_expires_at)
            .finish()
    }
}

pub struct OidcClient {
    pub settings: Arc<LoginClientSettings>,
    http: HttpClient,
    discovered: ArcSwapOption<Discovered>,
    /// One discovery fetch at a time; others use what it leaves.
    fetching: tokio::sync::Mutex<()>,
}

impl OidcClient {
    pub fn new(settings: Arc<LoginClientSettings>) -> Result<Self, String> {
        let http = idp_http::client(settings.ca_bundle.as_deref(), settings.timeout)?;
        Ok(OidcClient {
            settings,
            http,
            discovered: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The IdP's endpoints, fetched at most once per [`DISCOVERY_TTL`] (and not again for
    /// [`DISCOVERY_RETRY`] after a failure).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, LoginError> {
        if let Some(found) = self.fresh() {
            return found;
        }
        let _one = self.fetching.lock().await;
        if let Some(found) = self.fresh() {
            return found;
        }
        let endpoints = match self.discover().await {
            Ok(endpoints) => Some(Arc::new(endpoints)),
            Err(problem) => {
                tracing::warn!(login = %self.settings.name, problem, "IdP discovery failed");
                None
            }
        };
        self.discovered.store(Some(Arc::new(Discovered {
            endpoints: endpoints.clone(),
            at: Instant::now(),
        })));
        endpoints.ok_or(LoginError::Discovery)
    }

    fn fresh(&self) -> Option<Result<Arc<Endpoints>, LoginError>> {
        let discovered = self.discovered.load_full()?;
        let age = discovered.at.elapsed();
        match &discovered.endpoints {
            Some(endpoints) if age < DISCOVERY_TTL => Some(Ok(endpoints.clone())),
            None if age < DISCOVERY_RETRY => Some(Err(LoginError::Discovery)),
            _ => None,
        }
    }

    async fn discover(&self) -> Result<Endpoints, String> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let uri: Uri = format!("{issuer}/.well-known/openid-configuration")
            .parse()
            .map_err(|e| format!("bad discovery URL: {e}"))?;
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .body(empty())
            .map_err(|e| e.to_string())?;
        let (status, body) = self
            .send(request, MAX_DISCOVERY_BYTES)
            .await
            .map_err(|e| e.reason().to_string())?;
        if status != StatusCode::OK {
            return Err(format!("discovery answered {status}"));
        }
        let document: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| "discovery document is not a JSON object".to_string())?;
        if document.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err("discovery document names another issuer".into());
        }
        let endpoint = |name: &str| -> Result<Option<String>, String> {
            let Some(value) = document.get(name) else {
                return Ok(None);
            };
            let text = value.as_str().ok_or(format!("{name} is not a string"))?;
            let uri: Uri = text.parse().map_err(|_| format!("{name} is not a URL"))?;
            crate::auth::jwks::check_fetch_uri(&uri, self.settings.allow_insecure_http)?;
            if uri.query().is_some_and(|q| q.contains('#')) || text.contains('#') {
                return Err(format!("{name} has a fragment"));
            }
            Ok(Some(text.to_string()))
        };
        let authorization = endpoint("authorization_endpoint")?
            .ok_or("discovery document has no authorization_endpoint")?;
        let token = endpoint("token_endpoint")?
            .ok_or("discovery document has no token_endpoint")?
            .parse()
            .map_err(|_| "token_endpoint is not a URL".to_string())?;
        let end_session = endpoint("end_session_endpoint")?;
        Ok(Endpoints {
            authorization,
            token,
            end_session,
            iss_parameter: document
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Where to send the browser to log in, for the login attempt `state`.
    pub async fn authorization_url(&self, state: &LoginState) -> Result<String, LoginError> {
        let endpoints = self.endpoints().await?;
        let s = &self.settings;
        let challenge = state.pkce().challenge;
        let scope = s.scopes.join(" ");
        let redirect_uri = s.redirect_uri();
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &s.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &scope),
            ("state", &state.state),
            ("nonce", &state.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        params.extend(s.extra_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let separator = if endpoints.authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}{}",
            endpoints.authorization,
            form_encode(&params)
        ))
    }

    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): where to send the browser,
    /// or `None` when the IdP publishes no end-session endpoint.
    pub async fn end_session_url(&self, id_token_hint: Option<&str>) -> Option<String> {
        let endpoints = self.endpoints().await.ok()?;
        let end_session = endpoints.end_session.as_ref()?;
        let s = &self.settings;
        let mut params: Vec<(&str, &str)> = vec![
            ("client_id", &s.client_id),
            ("post_logout_redirect_uri", &s.post_logout_redirect_uri),
        ];
        if let Some(hint) = id_token_hint {
            params.push(("id_token_hint", hint));
        }
        let separator = if end_session.contains('?') { '&' } else { '?' };
        Some(format!("{end_session}{separator}{}", form_encode(&params)))
    }

    /// The authorization code for tokens (RFC 6749 §4.1.3, RFC 7636 §4.5).
    pub async fn exchange_code(&self, code: &str, verifier: &str) -> Result<Tokens, LoginError> {
        let redirect_uri = self.settings.redirect_uri();
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// A refresh token for fresh tokens (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, LoginError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token_request(&self, grant: &[(&str, &str)]) -> Result<Tokens, LoginError> {
        let endpoints = self.endpoints().await?;
        let s = &self.settings;
        let mut params: Vec<(&str, &str)> = grant.to_vec();
        let mut request = Request::post(endpoints.token.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        match (s.client_auth, &s.client_secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: each half form-encoded before the Basic encoding.
                let pair = format!(
                    "{}:{}",
                    encode_query_value(&s.client_id),
                    encode_query_value(secret)
                );
                use base64::Engine;
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                );
                request = request.header(header::AUTHORIZATION, value);
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                params.push(("client_id", &s.client_id));
                params.push(("client_secret", secret));
            }
            _ => params.push(("client_id", &s.client_id)),
        }
        let assertion;
        if let (ClientAuth::PrivateKeyJwt, Some(key)) = (s.client_auth, &s.client_key) {
            assertion = client_assertion(key, &s.client_id, &endpoints.token.to_string())?;
            params.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
            params.push(("client_assertion", &assertion));
        }
        let request = request
            .body(full(form_encode(&params)))
            .map_err(|_| LoginError::TokenEndpointUnreachable)?;
        let (status, body) =
            self.send(request, MAX_TOKEN_RESPONSE_BYTES)
                .await
                .map_err(|e| match e {
                    SendError::Unreachable | SendError::TimedOut => {
                        LoginError::TokenEndpointUnreachable
                    }
                    SendError::TooLarge => LoginError::TokenResponseInvalid,
                })?;
        let document: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        if status.is_server_error() {
            tracing::warn!(login = %s.name, status = status.as_u16(), "token endpoint failed");
            return Err(LoginError::TokenEndpointFailed(status.as_u16()));
        }
        if status != StatusCode::OK {
            let code = document
                .as_ref()
                .and_then(|d| d.get("error"))
                .and_then(Value::as_str)
                .filter(|c| {
                    c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .unwrap_or("http_error");
            tracing::warn!(login = %s.name, status = status.as_u16(), error = code, "token endpoint refused the request");
            return Err(LoginError::TokenEndpointRefused(code.to_string()));
        }
        let document = document.ok_or(LoginError::TokenResponseInvalid)?;
        let text = |name: &str| -> Result<Option<String>, LoginError> {
            match document.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(value)) if !value.is_empty() => Ok(Some(value.clone())),
                Some(_) => Err(LoginError::TokenResponseInvalid),
            }
        };
        let token_type = text("token_type")?.ok_or(LoginError::TokenResponseInvalid)?;
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(LoginError::TokenResponseInvalid);
        }
        let access_expires_at = match document.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let seconds = value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .ok_or(LoginError::TokenResponseInvalid)?;
                Some(
                    crate::auth::jwt::now_unix()
                        .saturating_add(i64::try_from(seconds.min(10 * 365 * 86_400)).unwrap_or(0)),
                )
            }
        };
        let access_token = text("access_token")?.ok_or(LoginError::TokenResponseInvalid)?;
        // Without `expires_in`, a JWT access token still says when it expires: refresh and
        // expiry are scheduled from it rather than never.
        let access_expires_at = access_expires_at.or_else(|| jwt_exp(&access_token));
        Ok(Tokens {
            access_token,
            id_token: text("id_token")?,
            refresh_token: text("refresh_token")?,
            access_expires_at,
        })
    }

    async fn send(
        &self,
        request: Request<crate::edge::body::Body>,
        max_bytes: usize,
    ) -> Result<(StatusCode, bytes::Bytes), SendError> {
        let deadline = self.settings.timeout;
        let response = tokio::time::timeout(deadline, self.http.request(request))
            .await
            .map_err(|_| SendError::TimedOut)?
            .map_err(|_| SendError::Unreachable)?;
        let status = response.status();
        let body = idp_http::read_limited(response.into_body(), max_bytes, deadline)
            .await
            .map_err(|e| match e {
                idp_http::ReadError::TooLarge => SendError::TooLarge,
                idp_http::ReadError::TimedOut => SendError::TimedOut,
                idp_http::ReadError::Broken => SendError::Unreachable,
            })?;
        Ok((status, body))
    }

    /// An ID token's checks (OIDC Core §3.1.3.7 and §12.2): the provider's signature, issuer and
    /// algorithms, then audience, authorized party, times and, on a login, the nonce sent.
    pub async fn check_id_token(
        &self,
        verifier: &Verifier,
        id_token: &str,
        expected_nonce: Option<&str>,
        leeway: i64,
        now: i64,
    ) -> Result<SignedToken, LoginError> {
        let signed = verifier
            .verify_signed(id_token, self.settings.provider)
            .await
            .map_err(|e| match e {
                VerifyError::KeysUnavailable => LoginError::KeysUnavailable,
                VerifyError::Token(error) => LoginError::IdToken(id_token_reason(error)),
            })?;
        let claims = &signed.claims;
        let client_id = self.settings.client_id.as_str();
        // An access token or a logout token is not an ID token, whatever its signature.
        if let Some(typ) = signed.header.get("typ") {
            let typ = typ.as_str().map(crate::auth::jwt::normalize_typ);
            if typ.as_deref() != Some("jwt") {
                return Err(LoginError::IdToken("id_token_type"));
            }
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(LoginError::IdToken("id_token_audience")),
        };
        if !audiences.contains(&client_id) {
            return Err(LoginError::IdToken("id_token_audience"));
        }
        match claims.get("azp") {
            Some(Value::String(azp)) if azp == client_id => {}
            None if audiences.len() == 1 => {}
            _ => return Err(LoginError::IdToken("id_token_azp")),
        }
        if !matches!(claims.get("sub"), Some(Value::String(sub)) if !sub.is_empty()) {
            return Err(LoginError::IdToken("id_token_subject"));
        }
        let date = |name: &str| claims.get(name).and_then(Value::as_i64);
        let exp = date("exp").ok_or(LoginError::IdToken("id_token_expired"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(LoginError::IdToken("id_token_expired"));
        }
        let iat = date("iat").ok_or(LoginError::IdToken("id_token_issued_at"))?;
        if iat > now.saturating_add(leeway) {
            return Err(LoginError::IdToken("id_token_issued_at"));
        }
        if let Some(expected) = expected_nonce {
            let nonce = claims
                .get("nonce")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                nonce.as_bytes(),
                expected.as_bytes(),
            )
            .is_err()
            {
                return Err(LoginError::IdToken("nonce_mismatch"));
            }
        }
        Ok(signed)
    }
}

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion is good for this long: one token request.
const ASSERTION_LIFETIME: i64 = 60;

/// `private_key_jwt` (OIDC Core §9, RFC 7523 §3): `iss` = `sub` = the client, `aud` the token
/// endpoint, a fresh `jti`, a minute to live.
fn client_assertion(
    key: &crate::config::build_login::ClientKey,
    client_id: &str,
    token_endpoint: &str,
) -> Result<String, LoginError> {
    let now = crate::auth::jwt::now_unix();
    let jti =
        crate::login::pkce::random_token(24).map_err(|_| LoginError::TokenEndpointUnreachable)?;
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": jti,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    let mut header = jsonwebtoken::Header::new(key.algorithm);
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key.key).map_err(|_| {
        tracing::warn!("the client assertion could not be signed");
        LoginError::ClientKeyUnusable
    })
}

#[derive(Debug, Clone, Copy)]
enum SendError {
    Unreachable,
    TimedOut,
    TooLarge,
}

impl SendError {
    fn reason(self) -> &'static str {
        match self {
            SendError::Unreachable => "unreachable",
            SendError::TimedOut => "timed out",
            SendError::TooLarge => "answer too large",
        }
    }
}

/// The verifier's reasons, named for an ID token so logs tell a failed login from a refused
/// access token.
fn id_token_reason(error: TokenError) -> &'static str {
    match error {
        TokenError::BadSignature => "id_token_bad_signature",
        TokenError::AlgorithmNotAllowed | TokenError::AlgNone => "id_token_algorithm",
        TokenError::UnknownIssuer | TokenError::MissingClaim("iss") => "id_token_issuer",
        // Bounded by `auth.max_token_bytes`, which a provider with large tokens raises.
        TokenError::TooLarge => "id_token_too_large",
        _ => "id_token_invalid",
    }
}

/// The `exp` of a JWT, read without verifying it (only to schedule a refresh).
fn jwt_exp(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// `application/x-www-form-urlencoded` pairs.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_query_value(k), encode_query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}
