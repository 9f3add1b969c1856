//! `authgate demo`: an echo upstream and a token issuer on loopback, and the gateway in front of
//! them, configured by the embedded `config/demo.toml` and started through the same code as
//! `authgate run`. It prints ready-to-paste curl commands with tokens it minted.
//!
//! The echo upstream is also what the integration tests forward to: it answers with the method,
//! path, version, headers and body size it received, so a test can see exactly what the gateway
//! sent upstream.
//!
//! This layer sits above everything and is used by nothing but the CLI and the tests.

mod echo;
pub mod issuer;
mod launch;

pub use echo::{echo, spawn_echo};
pub use launch::run;
