//! authgate: a reverse-proxy authentication gateway.
//!
//! A request meets the modules in this order: `listener` → `server` → `handler` (the pipeline)
//! → `path` + `route` → `forward`; `error` decides every error response. `config` loads and
//! validates the TOML, `state` holds the snapshot a reload swaps, `app` assembles it all.

pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod credential;
pub mod demo;
pub mod denylist;
pub mod error;
pub mod forward;
pub mod handler;
pub mod identity;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod path;
pub mod policy;
pub mod route;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
