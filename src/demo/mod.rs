//! `authgate demo`: an echo upstream and a token issuer on loopback, and the gateway in front of
//! them, configured by the embedded `config/demo.toml` and started through the same code as
//! `authgate run`. It prints ready-to-paste curl commands with tokens it minted.
//!
//! The echo upstream is also what the integration tests forward to: it answers with the method,
//! path, version, headers and body size it received, so a test can see exactly what the gateway
//! sent upstream.
//!
//! The issuer (`issuer.rs`, keys from `signing.rs`) is also a small OpenID Provider (`idp/`):
//! the authorization-code flow with PKCE, refresh rotation, RP-initiated and back-channel
//! logout, with knobs that spoil its answers, so the gateway's browser login meets it as it
//! would meet a real IdP.
//!
//! This layer sits above everything and is used by nothing but the CLI and the tests.

mod echo;
mod idp;
pub mod issuer;
mod launch;
mod signing;

pub use echo::{echo, spawn_echo};
pub use launch::run;
