//! Config values that validate themselves while they are deserialized (durations, addresses,
//! CIDRs, host patterns, path prefixes, methods, URLs, origins, algorithm names, claim paths,
//! `${VAR}` expansion), so the TOML parser puts the offending value's line and column on the
//! error. Pure parsing: nothing here reads a file or the network.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The longest duration any setting accepts: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

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

/// A JWS algorithm name from the allowlist authgate supports (never `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmName(pub jsonwebtoken::Algorithm);
string_value!(
    AlgorithmName,
    "one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512",
    |raw| crate::auth::algorithms::algorithm_from_name(raw)
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
        crate::auth::credential::parse_origin(bare)
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
    let Some(duration) = single_unit(value, unit) else {
        if let Some(rewrite) = compound_as_single_unit(text) {
            return Err(format!(
                "duration {text:?} combines units, which is not accepted; write a single unit, e.g. {rewrite:?}"
            ));
        }
        return Err(format!("duration {text:?} has an unknown unit {unit:?}"));
    };
    // Far beyond any sensible timeout, and small enough that no arithmetic on it overflows.
    if duration > MAX_DURATION {
        return Err(format!("duration {text:?} is longer than 365 days"));
    }
    Ok(HumanDuration(duration))
}

fn single_unit(value: u64, unit: &str) -> Option<Duration> {
    Some(match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        _ => return None,
    })
}

/// `"1m30s"` read as Go and systemd would, written back in the largest single unit that holds
/// it exactly (`"90s"`), so the error can offer the value to write instead. `None` when the text
/// is not a run of number-unit pairs.
fn compound_as_single_unit(text: &str) -> Option<String> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let value: u64 = rest[..digits].parse().ok()?;
        total = total.checked_add(single_unit(value, &rest[digits..digits + unit_len])?)?;
        rest = &rest[digits + unit_len..];
        parts += 1;
    }
    if parts < 2 {
        return None;
    }
    let millis = total.as_millis();
    Some(
        [(3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .iter()
            .find(|(size, _)| millis % size == 0)
            .map_or_else(
                || format!("{millis}ms"),
                |(size, unit)| format!("{}{unit}", millis / size),
            ),
    )
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
        let normalized = crate::proxy::path::normalize(raw).map_err(|reason| {
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
        let compound = |text: &str| parse_duration(text).err().unwrap_or_default();
        assert_eq!(
            compound("1m30s"),
            "duration \"1m30s\" combines units, which is not accepted; write a single unit, e.g. \"90s\""
        );
        assert!(compound("1h30m").ends_with("e.g. \"90m\""));
        assert!(compound("2h0m").ends_with("e.g. \"2h\""));
        assert!(compound("1s500ms").ends_with("e.g. \"1500ms\""));
        // Not number-unit pairs: the unit itself is what is wrong.
        assert_eq!(
            compound("1m30x"),
            "duration \"1m30x\" has an unknown unit \"m30x\""
        );
        assert_eq!(compound("3d"), "duration \"3d\" has an unknown unit \"d\"");
    }

    #[test]
    fn path_prefixes_are_in_normal_form() {
        let prefix = |raw: &str| {
            toml::from_str::<std::collections::HashMap<String, PathPrefix>>(&format!("p = {raw:?}"))
                .map(|mut m| m.remove("p").map(|p| p.0))
                .map_err(|e| e.message().to_string())
        };
        assert_eq!(prefix("/api/"), Ok(Some("/api".into())));
        assert_eq!(prefix("/caf%C3%A9"), Ok(Some("/caf%C3%A9".into())));
        // Non-ASCII, written raw or in lower-case hex, is refused with the form that matches.
        for raw in ["/caf\u{e9}", "/caf%c3%a9"] {
            let err = prefix(raw).expect_err("not in normal form");
            assert!(err.contains("write \"/caf%C3%A9\""), "{raw}: {err}");
        }
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
