//! authgate: a reverse-proxy authentication gateway.
//!
//! The folders are the layers a request crosses, lowest first: `config` (data: the TOML schema
//! and its validated runtime form), `edge` (bytes in and out), `proxy` (where a request goes and
//! how), `auth` (who is calling and may they pass), `login` (browser login and the sessions the
//! gateway issues), then `handler` (the pipeline that calls the steps in order) and `error`
//! (every error response, once). `state` holds the snapshot a reload swaps; `app` assembles it
//! all; `ops` is logging; `demo` is the embedded demo.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod decide;
pub mod demo;
pub mod edge;
pub mod error;
pub mod handler;
pub mod login;
pub mod ops;
pub mod proxy;
pub mod state;
