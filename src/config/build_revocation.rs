//! The `[revocation]` section: the Redis URL (validated, never printed with its password), the
//! key prefix, the failure policy and the revocation API's listener and admin token. Like the
//! rest of the build, every problem is reported with its location.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use super::checks::{key_prefix, timeout_or};
use super::file::{self, OnUnreachable, RevocationSection};
use super::located::{ConfigError, Locator};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct RevocationSettings {
    pub redis: Option<RedisSettings>,
    pub on_unreachable: OnUnreachable,
    pub api: Option<RevocationApiSettings>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The full URL, password included: never log it; log `display`.
    pub url: String,
    /// Scheme, host and port only.
    pub display: String,
    pub key_prefix: String,
    pub unreachable_after: Duration,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RevocationApiSettings {
    pub address: SocketAddr,
    /// The admin bearer token. Never log it.
    pub token: Arc<str>,
}

// Hand-written so that a `{:?}` of the config can never print the password or the token.
impl std::fmt::Debug for RevocationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationSettings")
            .field("redis", &self.redis.as_ref().map(|r| &r.display))
            .field("on_unreachable", &self.on_unreachable)
            .field("api", &self.api.as_ref().map(|a| a.address))
            .finish()
    }
}

/// `scheme://host:port` of a Redis URL, without user, password or database.
pub fn redis_display(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    // Everything up to the last '@' may be a password, and an unescaped one may itself hold
    // '/', '?' or '@': cut at the last '@' of the whole text before looking for the path.
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = after_userinfo.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{host}")
}

pub(super) fn build_revocation(
    section: Option<&Spanned<RevocationSection>>,
    taken: &[SocketAddr],
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> RevocationSettings {
    let Some(section) = section else {
        return RevocationSettings::default();
    };
    let span = section.span();
    let section = section.get_ref();
    let redis = section.redis_url.as_ref().and_then(|url| {
        let text = url.get_ref().0.trim();
        let start = url.span().start;
        if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
            errors.push(at.error_at(
                start,
                format!(
                    "redis_url {:?} must start with redis:// or rediss:// (TLS)",
                    redis_display(text)
                ),
            ));
            return None;
        }
        // The client's own parser, so `check` refuses exactly what `run` could not use. Its
        // message could echo the URL, so it is not passed on.
        if redis::Client::open(text).is_err() {
            errors.push(at.error_at(
                start,
                format!(
                    "redis_url {:?} is not a valid Redis URL (redis[s]://[:password@]host[:port][/db])",
                    redis_display(text)
                ),
            ));
            return None;
        }
        let key_prefix = key_prefix(
            section.key_prefix.as_ref(),
            file::DEFAULT_REVOCATION_KEY_PREFIX,
            at,
            errors,
        );
        Some(RedisSettings {
            url: text.to_string(),
            display: redis_display(text),
            key_prefix,
            unreachable_after: timeout_or(
                section.unreachable_after,
                file::DEFAULT_REVOCATION_UNREACHABLE_AFTER,
            ),
        })
    });
    if section.redis_url.is_none() {
        let without = [
            (
                "key_prefix",
                section.key_prefix.as_ref().map(|s| s.span().start),
            ),
            (
                "on_unreachable",
                section.on_unreachable.as_ref().map(|s| s.span().start),
            ),
        ];
        for (name, offset) in without {
            if let Some(offset) = offset {
                errors.push(at.error_at(
                    offset,
                    format!("{name} applies to the Redis source only; set redis_url or remove it"),
                ));
            }
        }
        if section.unreachable_after.is_some() {
            errors.push(at.error_at(
                span.start,
                "unreachable_after applies to the Redis source only; set redis_url or remove it",
            ));
        }
    }
    let api = section.api.as_ref().and_then(|api| {
        let api_span = api.span();
        let api = api.get_ref();
        let address = api.address.0;
        if taken.iter().any(|a| *a == address && address.port() != 0) {
            errors.push(at.error_at(
                api_span.start,
                format!(
                    "revocation API address {address} is also a [[listener]] or the [admin] \
                     address; it needs its own"
                ),
            ));
        }
        let token = api.token.get_ref().0.as_str();
        if token.len() < file::MIN_REVOCATION_TOKEN_BYTES {
            errors.push(at.error_at(
                api.token.span().start,
                format!(
                    "the revocation API token must be at least {} bytes (it is {}); generate one \
                     with `openssl rand -hex 32`",
                    file::MIN_REVOCATION_TOKEN_BYTES,
                    token.len()
                ),
            ));
            return None;
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(at.error_at(
                api.token.span().start,
                "the revocation API token must be visible ASCII (no spaces or control characters)",
            ));
            return None;
        }
        Some(RevocationApiSettings {
            address,
            token: Arc::from(token),
        })
    });
    RevocationSettings {
        redis,
        on_unreachable: section
            .on_unreachable
            .as_ref()
            .map(|o| *o.get_ref())
            .unwrap_or_default(),
        api,
    }
}

#[cfg(test)]
mod display_tests {
    use super::redis_display;

    #[test]
    fn a_password_never_shows_whatever_it_holds() {
        for (url, shown) in [
            ("redis://:Zk3q/9+w@redis:6379/0", "redis://redis:6379"),
            ("redis://default:Pa55?x@redis", "redis://redis"),
            (
                "rediss://u:a@b@redis.internal:6380",
                "rediss://redis.internal:6380",
            ),
            ("redis://redis:6379", "redis://redis:6379"),
        ] {
            assert_eq!(redis_display(url), shown, "{url}");
        }
    }
}
