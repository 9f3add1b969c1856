//! The configuration file exactly as written in TOML.
//!
//! Every table refuses unknown keys, and every value type that can be wrong on its own
//! (durations, URLs, CIDRs, host patterns, path prefixes, methods) is checked while it is
//! deserialized, so the TOML parser attaches the offending value's line and column to the
//! error. Cross-field rules (duplicate names, readable files) live in `build.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_spanned::Spanned;

/// Reads a value through `FromStr`-like validation so the error lands on the value's span.
macro_rules! string_value {
    ($ty:ident, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                parse(&raw)
                    .map_err(|msg| de::Error::custom(format!("{msg} (expected {})", $expecting)))
            }
        }
    };
}

pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
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
}

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

/// A JWS algorithm name from the allowlist authgate supports (never `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmName(pub jsonwebtoken::Algorithm);
string_value!(
    AlgorithmName,
    "one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512",
    |raw| crate::jwt::algorithm_from_name(raw)
        .map(AlgorithmName)
        .ok_or_else(|| format!("{raw:?} is not a supported algorithm"))
);

/// Where a claim lives: a JSON Pointer (`"/realm_access/roles"`, RFC 6901) or an array of
/// segments (`["https://example.com/roles"]`), so names holding dots or slashes are reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(pub Vec<String>);

impl<'de> Deserialize<'de> for ClaimPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Pointer(String),
            Segments(Vec<String>),
        }
        match Written::deserialize(deserializer)? {
            Written::Pointer(pointer) => parse_json_pointer(&pointer)
                .map(ClaimPath)
                .map_err(de::Error::custom),
            Written::Segments(segments) if !segments.is_empty() => Ok(ClaimPath(segments)),
            Written::Segments(_) => {
                Err(de::Error::custom("a claim path needs at least one segment"))
            }
        }
    }
}

fn parse_json_pointer(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "claim path {pointer:?} must be a JSON Pointer starting with \"/\" (e.g. \"/realm_access/roles\") or an array of segments"
        ));
    };
    rest.split('/')
        .map(|segment| {
            if segment.replace("~0", "").replace("~1", "").contains('~') {
                return Err(format!(
                    "claim path {pointer:?} has a \"~\" not followed by 0 or 1"
                ));
            }
            Ok(segment.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

impl ClaimPath {
    pub fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = match value {
                serde_json::Value::Object(map) => map.get(segment)?,
                serde_json::Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
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
}

/// A web origin: `scheme://host[:port]`, lower-case, default port removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(pub String);
string_value!(
    Origin,
    "an origin such as \"https://app.example.com\" (scheme, host, optional port; no path)",
    |raw| {
        let bare = raw.trim_end_matches('/');
        if bare.matches('/').count() != 2 || bare.contains(['?', '#']) {
            return Err(format!(
                "{raw:?} is not an origin: it may not have a path, query or fragment"
            ));
        }
        crate::credential::parse_origin(bare)
            .map(Origin)
            .ok_or_else(|| format!("{raw:?} is not an origin"))
    }
);

/// An absolute http(s) URL for login redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginUrl(pub String);
string_value!(
    LoginUrl,
    "an absolute URL such as \"https://login.example.com/start\"",
    |raw| {
        let expanded = expand_env(raw)?;
        let uri: http::Uri = expanded
            .parse()
            .map_err(|e| format!("{expanded:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.authority().is_some() && !expanded.contains('#') => {
                Ok(LoginUrl(expanded))
            }
            _ => Err(format!("{expanded:?} must be an absolute http(s) URL")),
        }
    }
);

/// A duration written as `"500ms"`, `"30s"`, `"5m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);
string_value!(
    HumanDuration,
    "a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"",
    parse_duration
);

pub fn parse_duration(text: &str) -> Result<HumanDuration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a whole number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        _ => return Err(format!("duration {text:?} has an unknown unit {unit:?}")),
    };
    // Far beyond any sensible timeout, and small enough that no arithmetic on it overflows.
    if duration > MAX_DURATION {
        return Err(format!("duration {text:?} is longer than 365 days"));
    }
    Ok(HumanDuration(duration))
}

/// A duration that must be longer than zero (a zero timeout would refuse everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);
string_value!(
    Timeout,
    "a duration longer than zero such as \"500ms\" or \"30s\"",
    |raw| {
        let HumanDuration(duration) = parse_duration(raw)?;
        if duration.is_zero() {
            return Err(format!("timeout {raw:?} must be longer than zero"));
        }
        Ok(Timeout(duration))
    }
);

/// A listen address: `"127.0.0.1:8080"` or `"[::1]:8443"`.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub SocketAddr);
string_value!(
    ListenAddr,
    "an IP address and port such as \"0.0.0.0:8080\"",
    |raw| raw
        .parse()
        .map(ListenAddr)
        .map_err(|_| format!("{raw:?} is not an IP address with a port"))
);

/// A trusted-proxy range such as `"10.0.0.0/8"`; a bare address means that one address.
#[derive(Debug, Clone, Copy)]
pub struct Cidr(pub ipnet::IpNet);
string_value!(
    Cidr,
    "a CIDR range such as \"10.0.0.0/8\" or an IP address",
    |raw| {
        if let Ok(net) = raw.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        raw.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("{raw:?} is not a CIDR range"))
    }
);

/// A route host: an exact name or `*.` followed by a domain (one label matches the `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Wildcard(String),
}
string_value!(
    HostPattern,
    "a host name such as \"api.example.com\" or \"*.example.com\"",
    |raw| {
        let lower = raw.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "{raw:?} is not a valid host name (no port, no scheme, at most one leading \"*.\")"
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name)
        } else {
            HostPattern::Exact(name)
        })
    }
);

/// A path prefix, matched segment by segment; stored without a trailing slash ("/" stays "/").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(pub String);
string_value!(
    PathPrefix,
    "a path beginning with \"/\" such as \"/api\"",
    |raw| {
        if !raw.starts_with('/') {
            return Err(format!("path_prefix {raw:?} must begin with \"/\""));
        }
        let normalized = crate::path::normalize(raw).map_err(|reason| {
            format!(
                "path_prefix {raw:?} is not a clean path: {}",
                reason.describe()
            )
        })?;
        let trim = |path: &str| match path.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        let canonical = trim(&normalized.path);
        if canonical != trim(raw) {
            return Err(format!(
                "path_prefix {raw:?} is not in normal form; write {canonical:?}"
            ));
        }
        if normalized.has_encoded_slash
            || normalized.has_encoded_backslash
            || normalized.has_encoded_nul
            || normalized.has_path_parameters
            || raw.contains('?')
            || raw.contains('#')
        {
            return Err(format!(
                "path_prefix {raw:?} may not contain %2F, %5C, %00, ';', '?' or '#'"
            ));
        }
        Ok(PathPrefix(canonical))
    }
);

/// An HTTP method name such as `"GET"`.
#[derive(Debug, Clone)]
pub struct MethodName(pub http::Method);
string_value!(MethodName, "an HTTP method such as \"GET\"", |raw| {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{raw:?} is not an upper-case HTTP method"));
    }
    http::Method::from_bytes(raw.as_bytes())
        .map(MethodName)
        .map_err(|_| format!("{raw:?} is not an HTTP method"))
});

/// An upstream base URL: `http://` or `https://`, a host, optional port and base path.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The base path without a trailing slash; empty for none.
    pub base_path: String,
}
string_value!(
    UpstreamUrl,
    "a URL such as \"http://10.0.0.5:8080\" or \"https://svc.internal/base\"",
    |raw| {
        let expanded = expand_env(raw)?;
        let uri: http::Uri = expanded
            .parse()
            .map_err(|e| format!("upstream {expanded:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream {expanded:?} has no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("upstream {expanded:?} must use http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream {expanded:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "upstream {expanded:?} may not carry user information"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "upstream {expanded:?} may not carry a query string"
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            scheme,
            authority,
            base_path,
        })
    }
);

/// A string in which `${NAME}` is replaced by the environment variable NAME (`$$` is a `$`).
#[derive(Debug, Clone)]
pub struct EnvString(pub String);
string_value!(
    EnvString,
    "a string; \"${NAME}\" reads an environment variable",
    |raw| expand_env(raw).map(EnvString)
);

pub fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| "unclosed \"${\" in value".to_string())?;
            let name = &inner[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "\"${{{name}}}\" is not a valid environment variable reference"
                ));
            }
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(name) => write!(f, "*.{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30s").map(|d| d.0),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("5m").map(|d| d.0),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("250ms").map(|d| d.0),
            Ok(Duration::from_millis(250))
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-3s").is_err());
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("AUTHGATE_TEST_ENV_X", "secret");
        assert_eq!(
            expand_env("a${AUTHGATE_TEST_ENV_X}b").as_deref(),
            Ok("asecretb")
        );
        assert_eq!(expand_env("cost $$5").as_deref(), Ok("cost $5"));
        assert!(expand_env("${AUTHGATE_TEST_ENV_UNSET_Y}").is_err());
        assert!(expand_env("${unclosed").is_err());
    }
}
