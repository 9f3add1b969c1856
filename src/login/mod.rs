//! Browser login: the OpenID Connect authorization-code flow (with PKCE) and the sessions the
//! gateway issues afterwards. The pure pieces compute names, values and decisions from their
//! inputs; the IdP client, the session store and the endpoints do the I/O. None of them writes a
//! response itself (`error.rs` shapes every answer) or logs a secret.
//!
//! - `sealed`: AES-256-GCM sealing under a rotating key ring, bound to a purpose (cookie name).
//! - `cookies`: cookie attributes, splitting large values into chunks, strict reassembly.
//! - `redirect`: the return target after login, never an open redirect.
//! - `pkce`: random tokens and the PKCE verifier/challenge pair.
//! - `login_state`: the per-attempt cookie binding `state`, `nonce` and PKCE to the browser.
//! - `oidc`: the relying party at one IdP: discovery, authorization URL, code exchange,
//!   refresh, ID token rules.
//! - `session`: what a session holds, and the identity it stands for.
//! - `sessions`: where sessions live (cookie or Redis) and their single-flight refresh.
//! - `endpoints`: login start, `/.authgate/callback`, `/.authgate/logout`.
//! - `revoke`: ended sessions into the shared revocation list.

pub mod cookies;
pub mod endpoints;
pub mod login_state;
pub mod oidc;
pub mod pkce;
pub mod redirect;
pub mod revoke;
pub mod sealed;
pub mod session;
pub mod sessions;
