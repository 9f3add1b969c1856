//! Configuration: `file.rs` is the TOML schema, `build.rs` turns it into validated runtime types.
//!
//! `authgate check`, startup and reload all call [`load`]; nothing else reads the file.

pub mod build;
pub mod build_auth;
pub mod build_login;
pub mod build_revocation;
mod checks;
pub mod file;
pub mod located;
mod messages;
pub mod values;

use std::path::Path;

pub use build::{Config, ListenerSettings, ServerSettings, UpstreamDefaults};
use located::Locator;
pub use located::{ConfigError, ConfigErrors};

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Parses and validates config text; `path` names it in errors and anchors relative file paths.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let locator = Locator { file: path, text };
    let parsed: file::FileConfig = toml::from_str(text).map_err(|e| {
        let message = messages::reword(e.message());
        ConfigErrors(vec![match e.span() {
            Some(span) => locator.error_at(span.start, message),
            None => locator.error_unplaced(message),
        }])
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = build::build(parsed, &locator, &base_dir).map_err(ConfigErrors)?;
    config.source = build::ConfigSource {
        path: path.to_path_buf(),
        sha256: crate::auth::keys::sha256(&[text.as_bytes()])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    Ok(config)
}
