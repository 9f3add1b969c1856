//! Checks every build step shares: a configured file must be readable (relative paths are
//! relative to the config file), a CA bundle must hold a certificate, and an omitted duration
//! takes its default. Reported through the located errors, never by failing the first one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::file::{self, HumanDuration, Timeout};
use super::located::{ConfigError, Locator};

pub(super) fn or_default(value: Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

pub(super) fn timeout_or(value: Option<Timeout>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

/// A CA bundle must be readable and hold at least one certificate, so `check` catches it.
pub(super) fn ca_bundle_file(
    value: &Spanned<file::EnvString>,
    base_dir: &Path,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let path = readable_file(value, base_dir, at, errors)?;
    match crate::edge::tls::client_config(Some(&path)) {
        Ok(_) => Some(path),
        Err(message) => {
            errors.push(at.error_at(value.span().start, message));
            None
        }
    }
}

/// Resolves a configured file path (relative to the config file) and checks it can be read.
pub(super) fn readable_file(
    value: &Spanned<file::EnvString>,
    base_dir: &Path,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let written = Path::new(&value.get_ref().0);
    let path = if written.is_absolute() {
        written.to_path_buf()
    } else {
        base_dir.join(written)
    };
    match std::fs::File::open(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            errors.push(at.error_at(
                value.span().start,
                format!("cannot read {}: {e}", path.display()),
            ));
            None
        }
    }
}

/// Names of routes, providers and logins: what metrics labels and references may hold.
pub(super) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A Redis key prefix as written, or `default`.
pub(super) fn key_prefix(
    written: Option<&Spanned<String>>,
    default: &str,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> String {
    let Some(prefix) = written else {
        return default.to_string();
    };
    let value = prefix.get_ref();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(at.error_at(
            prefix.span().start,
            "key_prefix must be non-empty visible ASCII without spaces",
        ));
    }
    value.clone()
}
