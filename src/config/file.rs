//! The configuration file exactly as written in TOML.
//!
//! Every table refuses unknown keys, and every value type that can be wrong on its own
//! (durations, URLs, CIDRs, host patterns, path prefixes, methods) is checked while it is
//! deserialized, so the TOML parser attaches the offending value's line and column to the
//! error (those value types are in `values.rs`). Cross-field rules (duplicate names, readable
//! files) live in `build.rs`.

use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

pub use super::values::*;

pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 256;
pub const DEFAULT_H2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 64;
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_UPSTREAM_MAX_IDLE_PER_HOST: usize = 64;
pub const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<ListenerSection>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteSection>>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default, rename = "provider")]
    pub providers: Vec<Spanned<ProviderSection>>,
    pub admin: Option<Spanned<AdminSection>>,
    pub forward_auth: Option<Spanned<ForwardAuthSection>>,
    #[serde(default)]
    pub reload: ReloadSection,
    pub revocation: Option<Spanned<RevocationSection>>,
    /// Gateway-issued browser sessions; required by `[[login]]`.
    pub session: Option<Spanned<SessionSection>>,
    #[serde(default, rename = "login")]
    pub logins: Vec<Spanned<LoginSection>>,
}

pub const DEFAULT_SESSION_COOKIE: &str = "__Host-authgate";
pub const DEFAULT_LOGIN_STATE_COOKIE: &str = "__Host-authgate-login";
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
pub const DEFAULT_SESSION_KEY_PREFIX: &str = "authgate:session:";
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);
pub const DEFAULT_IDP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_LOGIN_SCOPES: [&str; 3] = ["openid", "profile", "email"];

/// Where a session lives: all of it in the (encrypted) cookie, or in Redis behind an opaque id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionStore {
    #[default]
    Cookie,
    Redis,
}

/// The sessions the gateway issues after a browser login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// The key ring: base64 32-byte keys separated by commas, the first sealing new cookies;
    /// `${NAME}` reads it from the environment (where it belongs).
    pub keys: Spanned<EnvString>,
    #[serde(default)]
    pub store: SessionStore,
    /// For `store = "redis"`; default: `revocation.redis_url`.
    pub redis_url: Option<Spanned<EnvString>>,
    pub key_prefix: Option<Spanned<String>>,
    pub cookie_name: Option<Spanned<String>>,
    pub login_state_cookie_name: Option<Spanned<String>>,
    /// Not with a `__Host-` cookie name.
    pub cookie_domain: Option<Spanned<String>>,
    /// `false` only for plain-http development; refused with a `__Host-`/`__Secure-` name.
    pub cookie_secure: Option<Spanned<bool>>,
    /// The hard limit: a session ends this long after its login, refreshes or not.
    pub lifetime: Option<Timeout>,
}

/// How the gateway authenticates itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with `client_key` (OIDC Core §9, RFC 7523): no shared secret.
    PrivateKeyJwt,
    /// A public client: PKCE alone.
    None,
}

/// Which token of a session the policy and the identity headers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFrom {
    /// The ID token's claims (who logged in); always a JWT the gateway verified.
    #[default]
    IdToken,
    /// The access token, verified on each request like a Bearer token (scopes and API roles
    /// live there); it must be a JWT the provider's keys and audiences accept.
    AccessToken,
    /// The access token's claims, completed by the ID token's for names it lacks (`email`...).
    Both,
}

/// One OpenID Connect client: the gateway logs browsers in at a provider's IdP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSection {
    pub name: Spanned<String>,
    /// A `[[provider]]` with `discovery = true`: its issuer's endpoints and keys.
    pub provider: Spanned<String>,
    pub client_id: Spanned<EnvString>,
    pub client_secret: Option<Spanned<EnvString>>,
    /// Default: `client_secret_basic` with a secret, `private_key_jwt` with a key, `none`
    /// without either.
    pub client_auth: Option<Spanned<ClientAuth>>,
    /// For `private_key_jwt`: a PKCS#8 PEM private key (EC P-256 or RSA), and the `kid` the IdP
    /// knows its public half by.
    pub client_key: Option<Spanned<EnvString>>,
    pub client_key_id: Option<String>,
    pub scopes: Option<Spanned<Vec<String>>>,
    /// The gateway as browsers reach it; the callback is `{public_origin}/.authgate/callback`.
    pub public_origin: Origin,
    /// Absolute return URLs allowed besides `public_origin`'s own paths.
    #[serde(default)]
    pub allowed_return_origins: Vec<Origin>,
    /// Where the IdP sends the browser after logout; default: `{public_origin}/`.
    pub post_logout_redirect_uri: Option<LoginUrl>,
    /// Refresh this long before the access token expires.
    pub refresh_margin: Option<HumanDuration>,
    /// For discovery, code exchange and refresh.
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub identity_from: IdentityFrom,
    /// Extra authorization-request parameters (e.g. `audience` for Auth0).
    #[serde(default)]
    pub extra_params: std::collections::BTreeMap<String, String>,
}

pub const DEFAULT_REVOCATION_KEY_PREFIX: &str = "authgate:revocation:";
pub const DEFAULT_REVOCATION_UNREACHABLE_AFTER: Duration = Duration::from_secs(30);
/// Shorter admin tokens are refused: the API can revoke or restore anyone's access.
pub const MIN_REVOCATION_TOKEN_BYTES: usize = 32;

/// Fleet revocation: a list shared through Redis, and the authenticated revocation API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSection {
    /// `redis://` or `rediss://` (TLS); `${NAME}` expands, so the password stays in the
    /// environment.
    pub redis_url: Option<Spanned<EnvString>>,
    pub key_prefix: Option<Spanned<String>>,
    pub unreachable_after: Option<Timeout>,
    pub on_unreachable: Option<Spanned<OnUnreachable>>,
    pub api: Option<Spanned<RevocationApiSection>>,
}

/// What a route does once Redis has been unreachable for longer than `unreachable_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreachable {
    /// Keep enforcing the last list received (new revocations wait for the reconnection).
    #[default]
    EnforceLastKnown,
    /// Refuse authenticated requests with 503 `revocations_unavailable`.
    FailClosed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationApiSection {
    pub address: ListenAddr,
    pub token: Spanned<EnvString>,
}

/// The admin listener: `/healthz`, `/readyz` and `/metrics`, never served on a public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub address: ListenAddr,
}

/// The forward-auth listener: decisions for nginx `auth_request`, Traefik ForwardAuth and
/// Envoy `ext_authz`, on its own address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    pub address: ListenAddr,
    pub nginx_path: Option<Spanned<String>>,
    pub traefik_path: Option<Spanned<String>>,
    pub envoy_prefix: Option<Spanned<String>>,
}

/// Hot reload: SIGHUP always; with `watch`, also when the config or a file it names changes.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReloadSection {
    pub watch: Option<bool>,
    pub interval: Option<Timeout>,
}

pub const DEFAULT_NGINX_PATH: &str = "/nginx";
pub const DEFAULT_TRAEFIK_PATH: &str = "/traefik";
pub const DEFAULT_ENVOY_PREFIX: &str = "/envoy";
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_REALM: &str = "authgate";
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const DEFAULT_TOKEN_CACHE_ENTRIES: u64 = 100_000;
pub const DEFAULT_IDENTITY_PREFIX: &str = "x-auth-";
pub const DEFAULT_SUBJECT_HEADER: &str = "x-auth-subject";
pub const DEFAULT_ISSUER_HEADER: &str = "x-auth-issuer";
pub const DEFAULT_DENYLIST_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_JWKS_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_JWKS_MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_JWKS_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_JWKS_MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_JWKS_MAX_BYTES: usize = 512 * 1024;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The `realm` of every `WWW-Authenticate` challenge.
    pub realm: Option<Spanned<String>>,
    pub max_token_bytes: Option<Spanned<usize>>,
    pub token_cache_entries: Option<u64>,
    pub denylist: Option<Spanned<EnvString>>,
    pub denylist_reload_interval: Option<Timeout>,
    /// The default session cookie for routes that do not name one.
    pub session_cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub identity: IdentitySection,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Every incoming header whose name starts with this (after `_` → `-`) is removed.
    pub prefix: Option<Spanned<String>>,
    pub subject_header: Option<Spanned<String>>,
    pub issuer_header: Option<Spanned<String>>,
    /// More header names in the identity namespace, removed from every request.
    #[serde(default)]
    pub strip: Vec<Spanned<String>>,
    #[serde(default)]
    pub array_format: ArrayFormat,
    #[serde(default, rename = "claim")]
    pub claims: Vec<ClaimHeaderSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeaderSection {
    pub claim: ClaimPath,
    pub header: Spanned<String>,
    pub format: Option<ArrayFormat>,
}

/// How an array claim becomes one header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArrayFormat {
    /// Comma-separated; an element holding a comma refuses the request.
    #[default]
    Csv,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: Spanned<String>,
    pub issuer: Spanned<String>,
    pub audiences: Spanned<Vec<String>>,
    pub algorithms: Spanned<Vec<AlgorithmName>>,
    pub jwks_uri: Option<Spanned<EnvString>>,
    #[serde(default)]
    pub discovery: bool,
    pub secret: Option<Spanned<EnvString>>,
    pub leeway: Option<HumanDuration>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    pub require_exp: Option<bool>,
    pub typ: Option<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    pub ca_bundle: Option<Spanned<EnvString>>,
    pub jwks_refresh_interval: Option<Timeout>,
    pub jwks_min_refresh_interval: Option<Timeout>,
    pub jwks_max_refresh_interval: Option<Timeout>,
    pub jwks_unknown_kid_interval: Option<Timeout>,
    pub jwks_max_staleness: Option<Timeout>,
    pub jwks_fetch_timeout: Option<Timeout>,
    pub jwks_max_bytes: Option<usize>,
}

/// How the gateway talks to a route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP or TLS, a pool of keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP; one multiplexed connection.
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN; one multiplexed connection.
    H2,
}

/// `auth` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credential is read; identity headers are still stripped.
    Public,
    /// No credential passes anonymously; a credential must be valid.
    Optional,
    #[default]
    Required,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub scopes_all: Vec<String>,
    #[serde(default)]
    pub scopes_any: Vec<String>,
    pub roles_claim: Option<ClaimPath>,
    #[serde(default)]
    pub roles_all: Vec<String>,
    #[serde(default)]
    pub roles_any: Vec<String>,
    #[serde(default)]
    pub claims: Vec<ClaimRuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleSection {
    pub claim: ClaimPath,
    /// The claim equals this value (a string, number or boolean).
    pub equals: Option<toml::Value>,
    /// The claim is an array holding this value, or a string containing it as a
    /// space-separated word.
    pub contains: Option<toml::Value>,
    /// The claim equals any one of these values.
    pub any_of: Option<Vec<toml::Value>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub shutdown_delay: Option<HumanDuration>,
    pub drain_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    pub max_connections: Option<Spanned<usize>>,
    pub tls_handshake_timeout: Option<Timeout>,
    pub header_read_timeout: Option<Timeout>,
    pub body_idle_timeout: Option<Timeout>,
    pub idle_timeout: Option<Timeout>,
    pub max_header_bytes: Option<Spanned<usize>>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_header_list_bytes: Option<u32>,
    pub h2_max_pending_resets: Option<usize>,
    pub h2_max_local_error_resets: Option<usize>,
    pub upgrade_idle_timeout: Option<Timeout>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub connect_timeout: Option<Timeout>,
    pub response_timeout: Option<Timeout>,
    pub pool_idle_timeout: Option<Timeout>,
    pub max_idle_per_host: Option<usize>,
    pub ca_bundle: Option<Spanned<EnvString>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: ListenAddr,
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Spanned<EnvString>,
    pub key: Spanned<EnvString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Spanned<String>,
    pub host: Option<HostPattern>,
    pub path_prefix: PathPrefix,
    pub methods: Option<Vec<MethodName>>,
    pub upstream: UpstreamUrl,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub preserve_host: bool,
    pub connect_timeout: Option<Timeout>,
    pub response_timeout: Option<Timeout>,
    pub ca_bundle: Option<Spanned<EnvString>>,
    #[serde(default)]
    pub allow_encoded_slash: bool,
    #[serde(default)]
    pub allow_encoded_backslash: bool,
    #[serde(default)]
    pub allow_encoded_nul: bool,
    #[serde(default)]
    pub allow_path_parameters: bool,
    /// Pass request headers whose names hold `_` (dropped by default, as nginx does).
    #[serde(default)]
    pub allow_underscore_headers: bool,
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    #[serde(default)]
    pub auth: AuthMode,
    /// Names of the providers whose tokens this route accepts; default: every provider.
    pub providers: Option<Spanned<Vec<String>>>,
    pub forward_authorization: Option<bool>,
    #[serde(default)]
    pub policy: PolicySection,
    /// A cookie carrying the JWT, for browsers; overrides `auth.session_cookie`.
    pub session_cookie: Option<Spanned<String>>,
    pub forward_session_cookie: Option<bool>,
    /// This route as browsers see it (`https://app.example.com`): the default CSRF origin and
    /// the base of login-redirect return URLs.
    pub public_origin: Option<Origin>,
    /// Origins allowed to send cookie-authenticated unsafe requests; default: `public_origin`.
    pub allowed_origins: Option<Vec<Origin>>,
    /// Let CORS preflights through to the upstream without a credential.
    #[serde(default)]
    pub pass_cors_preflight: bool,
    /// Where unauthenticated browser navigations are sent instead of a 401.
    pub login_url: Option<LoginUrl>,
    pub login_redirect_param: Option<String>,
    /// A `[[login]]` client: browsers without a session log in through the gateway.
    pub login: Option<Spanned<String>>,
    /// With `login`: send the session's access token upstream as `Authorization: Bearer`.
    #[serde(default)]
    pub forward_access_token: bool,
    /// Fail closed (503) while the shared revocation list is unavailable; default from
    /// `revocation.on_unreachable`.
    pub revocation_required: Option<bool>,
}
