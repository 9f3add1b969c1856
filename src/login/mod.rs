//! Browser login: the OpenID Connect authorization-code flow (with PKCE) and the sessions the
//! gateway issues afterwards, kept in sealed cookies. The pieces here are pure: they compute
//! names, values and decisions from their inputs, and never perform I/O, write a response or
//! log a secret. The request flow that calls them lives with the handler.
//!
//! - `sealed`: AES-256-GCM sealing under a rotating key ring, bound to a purpose (cookie name).
//! - `cookies`: cookie attributes, splitting large values into chunks, strict reassembly.
//! - `redirect`: the return target after login, never an open redirect.
//! - `pkce`: random tokens and the PKCE verifier/challenge pair.
//! - `login_state`: the per-attempt cookie binding `state`, `nonce` and PKCE to the browser.

pub mod cookies;
pub mod login_state;
pub mod pkce;
pub mod redirect;
pub mod sealed;
