//! `authgate demo` itself: start the echo upstream and the issuer, fill in the embedded config,
//! print tokens and curl commands, then run the gateway through the same code as `authgate run`.

use std::net::SocketAddr;
use std::path::Path;

use crate::demo::issuer::{JwksServer, OidcClient, SigningKey};
use crate::demo::spawn_echo;
use jsonwebtoken::Algorithm;

const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> Result<(), String> {
    let echo = spawn_echo()
        .await
        .map_err(|e| format!("cannot start the echo upstream: {e}"))?;
    // One key signs both the demo's Bearer tokens and the OpenID Provider's tokens; the provider
    // publishes it in its JWKS.
    let idp = JwksServer::start(Vec::new())
        .await
        .map_err(|e| format!("cannot start the demo issuer: {e}"))?;
    idp.set_signing_key(SigningKey::generate(Algorithm::ES256, Some("demo-1"))?);
    let dir = std::env::temp_dir().join(format!("authgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let denylist = dir.join("denylist.toml");
    let issuer = idp.issuer();
    std::fs::write(
        &denylist,
        format!("# Written by authgate demo.\n[[token]]\nissuer = \"{issuer}\"\njti = \"demo-revoked\"\nreason = \"demo\"\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", denylist.display()))?;
    let session_keys = crate::login::sealed::SessionKeys::generate_one()
        .map_err(|e| format!("cannot make a session key: {}", e.reason()))?;
    let client_secret = crate::login::pkce::random_token(24)
        .map_err(|e| format!("cannot make a client secret: {}", e.reason()))?;
    let base = format!("http://{listen}");
    idp.register_client(OidcClient {
        client_id: "authgate-demo".into(),
        client_secret: Some(client_secret.clone()),
        redirect_uris: vec![format!("{base}/.authgate/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        backchannel_logout_uri: Some(format!("{base}/.authgate/backchannel-logout")),
    });
    let text = DEMO_CONFIG
        .replace("{{session_keys}}", &session_keys)
        .replace("{{client_secret}}", &client_secret)
        .replace("{{listen}}", &listen.to_string())
        .replace("{{admin}}", &admin.to_string())
        .replace("{{echo_upstream}}", &format!("http://{echo}"))
        .replace("{{issuer}}", &issuer)
        .replace("{{denylist}}", &denylist.display().to_string());
    let config =
        crate::config::load_str(Path::new("config/demo.toml"), &text).map_err(|e| e.to_string())?;

    let now = crate::auth::jwt::now_unix();
    let token = |sub: &str, jti: &str, scope: &str, exp: i64| {
        idp.sign_claims(&serde_json::json!({
            "iss": issuer, "aud": "demo-api", "sub": sub, "jti": jti, "scope": scope,
            "email": format!("{sub}@example.com"), "iat": now - 60, "exp": exp,
        }))
        .unwrap_or_default()
    };
    let valid = token("alice", "demo-valid", "profile orders:read", now + 3600);
    let expired = token("alice", "demo-expired", "profile orders:read", now - 3600);
    let revoked = token("mallory", "demo-revoked", "profile orders:read", now + 3600);
    let unscoped = token("bob", "demo-unscoped", "profile", now + 3600);
    let jwks_uri = idp.jwks_uri();
    let denylist_shown = denylist.display().to_string();
    let announce = move |gateway: &crate::app::Gateway| {
        let admin = gateway
            .admin_addr
            .map_or_else(|| "(none)".to_string(), |a| format!("http://{a}"));
        println!(
        "authgate demo: gateway on {base}\n  echo upstream http://{echo}, token issuer {issuer} (JWKS {}), denylist {}\n\n\
         Tokens (valid for an hour):\n  \
           VALID={valid}\n  \
           EXPIRED={expired}\n  \
           REVOKED={revoked}\n  \
           UNSCOPED={unscoped}\n\n\
         Try:\n  \
           curl -s -H \"Authorization: Bearer $VALID\" {base}/echo/hello         # 200: x-auth-subject, x-auth-email echoed back\n  \
           curl -si {base}/echo/hello                                        # 401, WWW-Authenticate: Bearer realm=...\n  \
           curl -si -H \"Authorization: Bearer $EXPIRED\" {base}/echo/hello     # 401 token_expired\n  \
           curl -si -H \"Authorization: Bearer $REVOKED\" {base}/echo/hello     # 401 revoked_token (see the denylist)\n  \
           curl -si -H \"Authorization: Bearer $UNSCOPED\" {base}/orders/1      # 403 insufficient_scope\n  \
           curl -s -H \"Authorization: Bearer $VALID\" {base}/orders/1          # 200\n  \
           curl -s -H \"X-Auth-Subject: root\" {base}/public/x                  # public route: the spoofed header is stripped\n  \
           curl -si -X DELETE {base}/readonly/x                              # 405 with Allow\n  \
           curl -si --path-as-is {base}/public/../echo                       # normalised to /echo before routing: 401\n  \
           curl -s --http2-prior-knowledge -H \"Authorization: Bearer $VALID\" {base}/echo/h2c\n\n\
         Browser login (the gateway is an OpenID Connect client of the demo IdP):\n  \
           open {base}/app/ in a browser: the IdP's login form (any name), back to /app/ with a session;\n  \
             the echo shows x-auth-subject and the access token the gateway forwards\n  \
           open {base}/.authgate/logout: sign out here and at the IdP\n  \
           curl -s -X POST '{issuer}/demo/backchannel?sub=<name>'   # the IdP ends that user's sessions (back-channel logout)\n  \
           curl -si -H 'Accept: application/json' {base}/app/          # an API client gets 401, never a redirect\n\n\
         Operations (admin listener, never on the public one):\n  \
           ADMIN={admin}\n  \
           curl -s {admin}/healthz   # 200 while the process runs\n  \
           curl -s {admin}/readyz    # 200 once the demo issuer's keys are fetched; 503 with the reason before\n  \
           curl -s {admin}/metrics   # Prometheus text: requests, auth decisions by reason, JWKS, reloads\n  \
           kill -HUP <pid>           # reload the config (the demo's is embedded, so nothing changes)\n\n\
         Stop with Ctrl-C.",
        jwks_uri,
        denylist_shown,
    );
    };
    let outcome = crate::app::run_with(config, announce).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
