//! authgate: a reverse-proxy authentication gateway.
//!
//! A request meets the modules in this order: `listener` → `server` → `handler` (the pipeline)
//! → `path` + `route` → `forward`; `error` decides every error response. `config` loads and
//! validates the TOML, `state` holds the snapshot a reload swaps, `app` assembles it all.

pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod handler;
pub mod listener;
pub mod path;
pub mod route;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod jwt;
pub mod denylist;
pub mod policy;
pub mod identity;
pub mod credential;
pub mod jwks;
pub mod issuer;
