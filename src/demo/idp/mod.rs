//! The demo OpenID Provider behind the demo issuer: the authorization-code flow with PKCE,
//! refresh-token rotation, RP-initiated and back-channel logout, over real HTTP on loopback, so
//! a relying party meets it as it would meet Keycloak, Auth0 or Dex. Test knobs spoil its
//! answers on purpose. It must never be mistaken for a real IdP: there are no passwords.

mod authorize;
mod form;
mod logout;
mod state;
mod token;
mod tokens;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::edge::body::Body;

pub use logout::backchannel_logout;
pub use state::{
    Delivery, LogoutTokenTweak, OidcClient, OpenIdProvider, TokenFault, SESSION_COOKIE,
};
pub use tokens::{logout_token, BACKCHANNEL_EVENT};

/// The paths the OP answers (the demo issuer serves the rest).
pub fn owns(path: &str) -> bool {
    matches!(
        path,
        "/authorize" | "/token" | "/end_session" | "/demo/backchannel"
    )
}

/// Answers a request for one of the paths `owns` accepts.
pub async fn answer(op: &OpenIdProvider, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/authorize" => authorize::answer(op, req).await,
        "/token" => token::answer(op, req).await,
        "/end_session" => logout::end_session(op, req).await,
        _ => logout::demo_trigger(op, req).await,
    }
}

/// The discovery document (OpenID Connect Discovery 1.0 §3).
pub fn discovery(op: &OpenIdProvider, jwks_uri: &str) -> Value {
    let issuer = &op.issuer;
    let algorithm = op.signer().map_or("RS256", |key| {
        crate::auth::algorithms::algorithm_name(key.alg)
    });
    json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "end_session_endpoint": format!("{issuer}/end_session"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "id_token_signing_alg_values_supported": [algorithm],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce",
            "sid", "at_hash", "name", "preferred_username", "email", "email_verified"],
        "prompt_values_supported": ["none", "login"],
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "authorization_response_iss_parameter_supported": true,
    })
}
