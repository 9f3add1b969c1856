//! Authentication end to end: a real IdP (JWKS server) on loopback, real tokens for every
//! algorithm, and a gateway in front of the echo upstream. Every rule is checked by its status
//! AND its stable reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::json;

const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct World {
    gw: Gateway,
    idp: Arc<JwksServer>,
    rsa: SigningKey,
    ec: SigningKey,
    dir: std::path::PathBuf,
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addrs[0])
    }

    fn issuer(&self) -> String {
        self.idp.issuer()
    }

    async fn call(&self, path: &str, token: &str) -> Reply {
        send(&h1_client(), bearer(&self.url(path), token)).await
    }
}

/// A gateway with one JWKS provider ("main": RS256 + ES256) and routes for each test.
async fn world(extra: &str) -> World {
    let up = echo().await;
    let rsa = SigningKey::generate(Algorithm::RS256, Some("rsa-1")).unwrap();
    let ec = SigningKey::generate(Algorithm::ES256, Some("ec-1")).unwrap();
    let idp = JwksServer::start(vec![
        rsa.public_jwk(true).unwrap(),
        ec.public_jwk(false).unwrap(),
    ])
    .await
    .unwrap();
    let dir = temp_dir("auth");
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:0"

[[provider]]
name = "main"
issuer = "{issuer}"
audiences = ["api", "other-api"]
algorithms = ["RS256", "ES256"]
jwks_uri = "{jwks}"
leeway = "30s"
jwks_unknown_kid_interval = "200ms"

[[provider]]
name = "symmetric"
issuer = "https://hs.example"
audiences = ["api"]
algorithms = ["HS256"]
secret = "{HMAC_SECRET}"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://{up}"
providers = ["main"]

[[route]]
name = "any-provider"
path_prefix = "/any"
upstream = "http://{up}"

[[route]]
name = "public"
path_prefix = "/public"
upstream = "http://{up}"
auth = "public"

[[route]]
name = "optional"
path_prefix = "/optional"
upstream = "http://{up}"
auth = "optional"

[[route]]
name = "orders"
path_prefix = "/orders"
upstream = "http://{up}"
[route.policy]
scopes_all = ["orders:read"]

[[route]]
name = "admin"
path_prefix = "/admin"
upstream = "http://{up}"
[route.policy]
roles_claim = ["https://example.com/roles"]
roles_any = ["admin"]

[[route]]
name = "tenant"
path_prefix = "/tenant"
upstream = "http://{up}"
[[route.policy.claims]]
claim = "/org/id"
equals = "acme"

[[route]]
name = "no-token-forwarding"
path_prefix = "/strip-token"
upstream = "http://{up}"
forward_authorization = false
{extra}"#,
        issuer = idp.issuer(),
        jwks = idp.jwks_uri(),
    );
    let gw = start_in(&dir, &config).await;
    World {
        gw,
        idp,
        rsa,
        ec,
        dir,
    }
}

#[tokio::test]
async fn every_algorithm_verifies_and_identity_reaches_the_upstream() {
    let up = echo().await;
    let asymmetric = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let keys: Vec<SigningKey> = asymmetric
        .iter()
        .enumerate()
        .map(|(i, alg)| SigningKey::generate(*alg, Some(&format!("k{i}"))).unwrap())
        .collect();
    let idp = JwksServer::start(keys.iter().map(|k| k.public_jwk(true).unwrap()).collect())
        .await
        .unwrap();
    let mut config = format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[[provider]]
name = "all"
issuer = "{}"
audiences = ["api"]
algorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
jwks_uri = "{}"
[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
"#,
        idp.issuer(),
        idp.jwks_uri()
    );
    for (alg, name) in [
        (Algorithm::HS256, "HS256"),
        (Algorithm::HS384, "HS384"),
        (Algorithm::HS512, "HS512"),
    ] {
        config.push_str(&format!(
            "[[provider]]\nname = \"{name}\"\nissuer = \"https://{name}.example\"\naudiences = [\"api\"]\nalgorithms = [\"{name}\"]\nsecret = \"{HMAC_SECRET}\"\n"
        ));
        let _ = alg;
    }
    let gw = start(&config).await;
    let client = h1_client();
    for key in &keys {
        let token = key.token(&claims(&idp.issuer(), &format!("user-{:?}", key.alg)));
        let reply = send(
            &client,
            bearer(&format!("http://{}/x", gw.addrs[0]), &token),
        )
        .await;
        assert_eq!(
            reply.status,
            200,
            "{:?}: {}",
            key.alg,
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.upstream_header("x-auth-subject"),
            vec![format!("user-{:?}", key.alg)]
        );
        assert_eq!(reply.upstream_header("x-auth-issuer"), vec![idp.issuer()]);
    }
    for (alg, name) in [
        (Algorithm::HS256, "HS256"),
        (Algorithm::HS384, "HS384"),
        (Algorithm::HS512, "HS512"),
    ] {
        let key = SigningKey::hmac(alg, HMAC_SECRET.as_bytes(), None);
        let issuer = format!("https://{name}.example");
        let reply = send(
            &client,
            bearer(
                &format!("http://{}/x", gw.addrs[0]),
                &key.token(&claims(&issuer, "h")),
            ),
        )
        .await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.upstream_header("x-auth-issuer"), vec![issuer]);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_precise_reasons() {
    let w = world("").await;
    let iss = w.issuer();
    let now = now();
    let (attacker, attacker_idp) = issuer_with_key(Algorithm::RS256, Some("rsa-1")).await;
    let rsa_header = w.rsa.header("JWT").to_string();
    let with = |patch: serde_json::Value| {
        let mut c = claims(&iss, "alice");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        w.rsa.token(&c)
    };
    let good = w.rsa.token(&claims(&iss, "alice"));
    let flipped = {
        let mut t = good.clone().into_bytes();
        let last = t.len() - 5;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).unwrap()
    };
    let unsigned = |header: &str| {
        format!(
            "{}.{}.",
            base64_url(header.as_bytes()),
            base64_url(claims(&iss, "alice").to_string().as_bytes())
        )
    };
    let hs_confusion = {
        // The classic confusion: HS256 "signed" with the RSA public key as the HMAC secret.
        let public = w.rsa.public_jwk(false).unwrap().to_string();
        SigningKey::hmac(Algorithm::HS256, public.as_bytes(), Some("rsa-1"))
            .token(&claims(&iss, "alice"))
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("valid", good.clone(), 200, ""),
        ("garbage", "abc".into(), 401, "malformed_token"),
        ("two parts", "abc.def".into(), 401, "malformed_token"),
        (
            "five parts (JWE)",
            "a.b.c.d.e".into(),
            401,
            "malformed_token",
        ),
        (
            "alg none",
            unsigned(r#"{"alg":"none","typ":"JWT"}"#),
            401,
            "alg_none",
        ),
        ("alg NONE", unsigned(r#"{"alg":"NONE"}"#), 401, "alg_none"),
        (
            "alg nOnE",
            unsigned(r#"{"alg":"nOnE","kid":"rsa-1"}"#),
            401,
            "alg_none",
        ),
        (
            "no alg",
            unsigned(r#"{"kid":"rsa-1"}"#),
            401,
            "malformed_token",
        ),
        (
            "HS256 with the public key as secret",
            hs_confusion,
            401,
            "algorithm_not_allowed",
        ),
        (
            "alg outside the allowlist",
            SigningKey::generate(Algorithm::PS256, Some("rsa-1"))
                .unwrap()
                .token(&claims(&iss, "a")),
            401,
            "algorithm_not_allowed",
        ),
        (
            "crit",
            w.rsa.sign_raw(
                r#"{"alg":"RS256","kid":"rsa-1","crit":["exp"],"exp":1}"#,
                &claims(&iss, "a").to_string(),
            ),
            401,
            "unsupported_crit",
        ),
        (
            "jku to the attacker",
            attacker.sign_raw(
                &json!({"alg":"RS256","kid":"rsa-1","jku": attacker_idp.jwks_uri()}).to_string(),
                &claims(&iss, "a").to_string(),
            ),
            401,
            "bad_signature",
        ),
        (
            "embedded jwk",
            attacker.sign_raw(
                &json!({"alg":"RS256","kid":"rsa-1","jwk": attacker.public_jwk(false).unwrap()})
                    .to_string(),
                &claims(&iss, "a").to_string(),
            ),
            401,
            "bad_signature",
        ),
        (
            "x5u and attacker kid",
            attacker.sign_raw(
                &json!({"alg":"RS256","kid":"attacker","x5u": attacker_idp.jwks_uri()}).to_string(),
                &claims(&iss, "a").to_string(),
            ),
            401,
            "unknown_kid",
        ),
        (
            "duplicate header member",
            w.rsa.sign_raw(
                r#"{"alg":"RS256","kid":"rsa-1","kid":"ec-1"}"#,
                &claims(&iss, "a").to_string(),
            ),
            401,
            "duplicate_member",
        ),
        (
            "duplicate claim",
            w.rsa.sign_raw(
                &rsa_header,
                &format!(
                    r#"{{"iss":"{iss}","aud":"api","exp":{},"sub":"alice","sub":"admin"}}"#,
                    now + 60
                ),
            ),
            401,
            "duplicate_member",
        ),
        (
            "duplicate nested member",
            w.rsa.sign_raw(
                &rsa_header,
                &format!(
                    r#"{{"iss":"{iss}","aud":"api","exp":{},"org":{{"id":"a","id":"b"}}}}"#,
                    now + 60
                ),
            ),
            401,
            "duplicate_member",
        ),
        (
            "payload not an object",
            w.rsa.sign_raw(&rsa_header, "[1,2]"),
            401,
            "malformed_token",
        ),
        ("flipped signature", flipped, 401, "bad_signature"),
        (
            "unknown issuer",
            with(json!({"iss": "https://evil.example"})),
            401,
            "unknown_issuer",
        ),
        ("no iss", with(json!({"iss": null})), 401, "missing_claim"),
        (
            "iss not a string",
            with(json!({"iss": 7})),
            401,
            "invalid_claim_type",
        ),
        ("no aud", with(json!({"aud": null})), 401, "missing_claim"),
        (
            "wrong aud",
            with(json!({"aud": "someone-else"})),
            401,
            "audience_mismatch",
        ),
        (
            "aud array with ours",
            with(json!({"aud": ["x", "other-api"]})),
            200,
            "",
        ),
        (
            "aud empty array",
            with(json!({"aud": []})),
            401,
            "audience_mismatch",
        ),
        (
            "aud array with a number",
            with(json!({"aud": ["api", 5]})),
            401,
            "invalid_claim_type",
        ),
        (
            "aud a number",
            with(json!({"aud": 5})),
            401,
            "invalid_claim_type",
        ),
        ("no exp", with(json!({"exp": null})), 401, "missing_claim"),
        (
            "expired",
            with(json!({"exp": now - 120})),
            401,
            "token_expired",
        ),
        (
            "expired inside the leeway",
            with(json!({"exp": now - 5})),
            200,
            "",
        ),
        (
            "exp a string",
            with(json!({"exp": (now + 60).to_string()})),
            401,
            "invalid_claim_type",
        ),
        (
            "exp a float",
            with(json!({"exp": (now + 60) as f64 + 0.5})),
            200,
            "",
        ),
        (
            "nbf in the future",
            with(json!({"nbf": now + 600})),
            401,
            "token_not_yet_valid",
        ),
        (
            "nbf inside the leeway",
            with(json!({"nbf": now + 5})),
            200,
            "",
        ),
        (
            "nbf a string",
            with(json!({"nbf": "yesterday"})),
            401,
            "invalid_claim_type",
        ),
        (
            "iat in the future",
            with(json!({"iat": now + 600})),
            401,
            "issued_in_future",
        ),
        (
            "iat a bool",
            with(json!({"iat": true})),
            401,
            "invalid_claim_type",
        ),
        (
            "sub a number",
            with(json!({"sub": 42})),
            401,
            "invalid_claim_type",
        ),
        ("sid a string", with(json!({"sid": "5b1c"})), 200, ""),
        (
            "sid a number",
            with(json!({"sid": 42})),
            401,
            "invalid_claim_type",
        ),
        (
            "sid an object",
            with(json!({"sid": {"id": "5b1c"}})),
            401,
            "invalid_claim_type",
        ),
        (
            "unknown kid",
            SigningKey::generate(Algorithm::RS256, Some("nope"))
                .unwrap()
                .token(&claims(&iss, "a")),
            401,
            "unknown_kid",
        ),
        (
            "no kid, two keys",
            SigningKey::generate(Algorithm::RS256, None)
                .unwrap()
                .token(&claims(&iss, "a")),
            401,
            "missing_kid",
        ),
        (
            "EC key named for RS256",
            attacker.sign_raw(
                r#"{"alg":"RS256","kid":"ec-1"}"#,
                &claims(&iss, "a").to_string(),
            ),
            401,
            "key_mismatch",
        ),
        (
            "RSA key with alg ES256",
            w.ec.sign_raw(
                r#"{"alg":"ES256","kid":"rsa-1"}"#,
                &claims(&iss, "a").to_string(),
            ),
            401,
            "key_mismatch",
        ),
        ("EC token", w.ec.token(&claims(&iss, "ec-user")), 200, ""),
        (
            "too large",
            w.rsa.token(
                &json!({"iss": iss, "aud": "api", "exp": now + 60, "pad": "x".repeat(9000)}),
            ),
            401,
            "token_too_large",
        ),
        (
            "other provider's token",
            SigningKey::hmac(Algorithm::HS256, HMAC_SECRET.as_bytes(), None)
                .token(&claims("https://hs.example", "a")),
            401,
            "provider_not_accepted",
        ),
    ];
    for (name, token, status, reason) in cases {
        let reply = w.call("/api/x", &token).await;
        assert_eq!(
            reply.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if status == 401 {
            assert_eq!(reply.reason(), reason, "{name}");
            let challenge = reply.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with(
                    "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\""
                ),
                "{name}: {challenge}"
            );
            let body = String::from_utf8_lossy(&reply.body);
            assert!(!body.contains(&token), "{name}: token echoed");
            assert!(
                token.len() < 20 || !body.contains(&token[token.len() - 20..]),
                "{name}: signature echoed"
            );
        }
    }
    assert_eq!(
        attacker_idp.jwks_fetches(),
        0,
        "a jku/x5u header was followed"
    );
    // Expired tokens say so in the description.
    let reply = w.call("/api/x", &with(json!({"exp": now - 120}))).await;
    assert!(reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error_description=\"The access token expired\""));
}

#[tokio::test]
async fn numeric_dates_share_one_bound_as_integers_and_floats() {
    const BOUND: i64 = 1_000_000_000_000_000;
    let w = world("").await;
    let iss = w.issuer();
    let with = |name: &str, value: &serde_json::Value| {
        let mut c = claims(&iss, "dates");
        c[name] = value.clone();
        w.rsa.token(&c)
    };
    // At, just above and far above 10^15 in magnitude, integer and float: never a date.
    let beyond = [
        json!(BOUND),
        json!(BOUND + 1),
        json!(10_000_000_000_000_000_i64),
        json!(-BOUND),
        json!(1e15),
        json!(1_000_000_000_000_000.5),
        json!(1e16),
    ];
    for name in ["exp", "nbf", "iat"] {
        for value in &beyond {
            let reply = w.call("/api/x", &with(name, value)).await;
            assert_eq!(
                (reply.status, reply.reason().as_str()),
                (401, "invalid_claim_type"),
                "{name} = {value}"
            );
        }
    }
    // Just below the bound it is a date, checked as one.
    let below = [
        ("exp", json!(BOUND - 1), 200, ""),
        ("exp", json!(999_999_999_999_999.5), 200, ""),
        ("nbf", json!(BOUND - 1), 401, "token_not_yet_valid"),
        (
            "nbf",
            json!(999_999_999_999_999.5),
            401,
            "token_not_yet_valid",
        ),
        ("nbf", json!(1 - BOUND), 200, ""),
        ("iat", json!(BOUND - 1), 401, "issued_in_future"),
        ("iat", json!(999_999_999_999_999.5), 401, "issued_in_future"),
        ("iat", json!(1 - BOUND), 200, ""),
    ];
    for (name, value, status, reason) in below {
        let reply = w.call("/api/x", &with(name, &value)).await;
        assert_eq!(reply.status, status, "{name} = {value}");
        if status == 200 {
            assert_eq!(reply.upstream_header("x-auth-subject"), vec!["dates"]);
        } else {
            assert_eq!(reply.reason(), reason, "{name} = {value}");
        }
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn requests_without_or_with_ambiguous_credentials() {
    let w = world("").await;
    let client = h1_client();
    let reply = send(&client, get(&w.url("/api/x"))).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.reason(), "missing_credential");
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer realm=\"authgate\""
    );

    let basic = Request::get(w.url("/api/x"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&client, basic).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );

    let token = w.rsa.token(&claims(&w.issuer(), "alice"));
    let two = Request::get(w.url("/api/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&client, two).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (400, "multiple_credentials")
    );
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer realm=\"authgate\", error=\"invalid_request\""
    );

    for malformed in ["Bearer", "Bearer a b", "Bearer a,b"] {
        let req = Request::get(w.url("/api/x"))
            .header("authorization", malformed)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(&client, req).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (400, "malformed_authorization"),
            "{malformed}"
        );
    }

    // Never from the query string.
    let reply = send(
        &client,
        get(&w.url(&format!("/api/x?access_token={token}"))),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );

    // gRPC callers get grpc-status 16 for the same decision.
    let grpc = Request::post(w.url("/api/svc.Method"))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h2c_client(), grpc).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "16");
    assert_eq!(reply.headers["grpc-message"], "missing_credential");
}

#[tokio::test]
async fn route_policy_scopes_roles_and_claims() {
    let w = world("").await;
    let iss = w.issuer();
    let token = |extra: serde_json::Value| {
        let mut c = claims(&iss, "alice");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        w.rsa.token(&c)
    };
    let reply = w
        .call(
            "/orders/1",
            &token(json!({"scope": "profile orders:write"})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (403, "insufficient_scope")
    );
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer realm=\"authgate\", error=\"insufficient_scope\", scope=\"orders:read\""
    );
    assert_eq!(
        w.call("/orders/1", &token(json!({"scope": "profile orders:read"})))
            .await
            .status,
        200
    );
    assert_eq!(
        w.call("/orders/1", &token(json!({"scp": ["orders:read"]})))
            .await
            .status,
        200
    );
    assert_eq!(
        w.call("/orders/1", &token(json!({"scope": 5})))
            .await
            .status,
        403
    );

    let reply = w
        .call(
            "/admin",
            &token(json!({"https://example.com/roles": ["viewer"]})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (403, "missing_role")
    );
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        !challenge.contains("admin"),
        "required roles must not be echoed: {challenge}"
    );
    assert_eq!(
        w.call(
            "/admin",
            &token(json!({"https://example.com/roles": ["viewer", "admin"]}))
        )
        .await
        .status,
        200
    );
    assert_eq!(w.call("/admin", &token(json!({}))).await.status, 403);

    let reply = w
        .call("/tenant", &token(json!({"org": {"id": "globex"}})))
        .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (403, "claim_mismatch")
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains("acme"));
    assert_eq!(
        w.call("/tenant", &token(json!({"org": {"id": "acme"}})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn public_optional_and_authorization_forwarding() {
    let w = world("").await;
    let client = h1_client();
    let token = w.rsa.token(&claims(&w.issuer(), "alice"));
    // Public: a credential is not even read.
    let reply = send(&client, bearer(&w.url("/public/x"), "garbage")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.upstream_header("x-auth-subject").is_empty());
    // Optional: anonymous passes, a valid token identifies, an invalid one is refused.
    let reply = send(&client, get(&w.url("/optional/x"))).await;
    assert_eq!(reply.status, 200);
    assert!(reply.upstream_header("x-auth-subject").is_empty());
    let reply = w.call("/optional/x", &token).await;
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    let reply = w.call("/optional/x", "garbage").await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "malformed_token")
    );
    // The original Authorization header: forwarded by default, dropped when configured.
    assert_eq!(
        w.call("/api/x", &token)
            .await
            .upstream_header("authorization"),
        vec![format!("Bearer {token}")]
    );
    assert!(w
        .call("/strip-token/x", &token)
        .await
        .upstream_header("authorization")
        .is_empty());
}

#[tokio::test]
async fn identity_headers_cannot_be_spoofed_on_any_route() {
    let w = world(
        r#"
[auth.identity]
strip = ["x-user"]
[[auth.identity.claim]]
claim = "/email"
header = "x-auth-email"
[[auth.identity.claim]]
claim = "/groups"
header = "x-auth-groups"
[[auth.identity.claim]]
claim = ["https://example.com/roles"]
header = "x-auth-roles"
format = "json"
"#,
    )
    .await;
    let iss = w.issuer();
    let client = h1_client();
    let spoofed = |path: &str, token: Option<&str>| {
        let mut req = Request::get(w.url(path))
            .header("x-auth-subject", "root")
            .header("X-Auth-Email", "root@evil")
            .header("x_auth_subject", "root")
            .header("x-auth-anything", "1")
            .header("x-user", "root")
            .header("X_User", "root")
            .header("connection", "x-auth-subject, x-auth-email");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };
    let token = w.rsa.token(&{
        let mut c = claims(&iss, "alice");
        c["email"] = json!("zoë@example.com");
        c["groups"] = json!(["eng", "ops"]);
        c["https://example.com/roles"] = json!(["a", "b,c"]);
        c
    });
    for (path, token) in [
        ("/public/x", None),
        ("/optional/x", None),
        ("/optional/x", Some(token.as_str())),
        ("/api/x", Some(token.as_str())),
    ] {
        let reply = send(&client, spoofed(path, token)).await;
        assert_eq!(reply.status, 200, "{path}");
        let headers = reply.json()["headers"].clone();
        for name in ["x_auth_subject", "x-auth-anything", "x-user", "x_user"] {
            assert!(
                headers.get(name).is_none(),
                "{path}: {name} reached the upstream"
            );
        }
        if token.is_some() {
            assert_eq!(
                reply.upstream_header("x-auth-subject"),
                vec!["alice"],
                "{path}"
            );
            assert_eq!(
                reply.upstream_header("x-auth-email"),
                vec!["zo%C3%AB@example.com"],
                "{path}"
            );
            assert_eq!(
                reply.upstream_header("x-auth-groups"),
                vec!["eng,ops"],
                "{path}"
            );
            assert_eq!(
                reply.upstream_header("x-auth-roles"),
                vec![r#"["a","b,c"]"#],
                "{path}"
            );
        } else {
            assert!(headers.get("x-auth-subject").is_none(), "{path}");
            assert!(headers.get("x-auth-email").is_none(), "{path}");
        }
    }
    // An array element holding a comma would read as two groups: refused.
    let ambiguous = w.rsa.token(&{
        let mut c = claims(&iss, "bob");
        c["groups"] = json!(["CN=admins,OU=x"]);
        c
    });
    let reply = w.call("/api/x", &ambiguous).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "ambiguous_claim_array")
    );
    // CR/LF in a claim is never injected.
    let crlf = w.rsa.token(&{
        let mut c = claims(&iss, "eve");
        c["email"] = json!("a@b\r\nx-auth-subject: root");
        c
    });
    let reply = w.call("/api/x", &crlf).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "unsafe_claim_value")
    );
}

#[tokio::test]
async fn csv_array_elements_keep_their_edge_spaces_upstream() {
    let w = world(
        r#"
[[auth.identity.claim]]
claim = "/groups"
header = "x-auth-groups"
"#,
    )
    .await;
    let iss = w.issuer();
    // A trimming list parser would read `users, admin` as the group `admin`.
    for (groups, expected) in [
        (json!(["users", " admin"]), "users,%20admin"),
        (json!(["admin ", "users"]), "admin%20,users"),
        (json!([" admin "]), "%20admin%20"),
    ] {
        let token = w.rsa.token(&{
            let mut c = claims(&iss, "alice");
            c["groups"] = groups.clone();
            c
        });
        let reply = w.call("/api/x", &token).await;
        assert_eq!(reply.status, 200, "{groups}");
        assert_eq!(
            reply.upstream_header("x-auth-groups"),
            vec![expected],
            "{groups}"
        );
    }
}

#[tokio::test]
async fn denylist_revokes_by_jti_subject_session_and_key_and_reloads() {
    let dir = temp_dir("denylist");
    let list = dir.join("denylist.toml");
    std::fs::write(&list, "").unwrap();
    let w = world(&format!(
        "[auth]\ndenylist = \"{}\"\ndenylist_reload_interval = \"50ms\"\n",
        list.display()
    ))
    .await;
    let iss = w.issuer();
    let token = |sub: &str, jti: &str, iat: i64| {
        let mut c = claims(&iss, sub);
        c["jti"] = json!(jti);
        c["iat"] = json!(iat);
        w.rsa.token(&c)
    };
    let now = now();
    let stolen = token("alice", "stolen", now - 100);
    let alice_other = token("alice", "other", now - 100);
    let bob_old = token("bob", "b1", now - 1000);
    let bob_new = token("bob", "b2", now - 10);
    let ec_token = w.ec.token(&claims(&iss, "carol"));
    let in_session = |sid: &str| {
        let mut c = claims(&iss, "dave");
        c["sid"] = json!(sid);
        w.rsa.token(&c)
    };
    let (logged_out, still_in) = (in_session("s-1"), in_session("s-2"));
    for t in [
        &stolen,
        &alice_other,
        &bob_old,
        &bob_new,
        &ec_token,
        &logged_out,
        &still_in,
    ] {
        assert_eq!(w.call("/api/x", t).await.status, 200, "before revocation");
    }
    std::fs::write(
        &list,
        format!(
            r#"
[[token]]
issuer = "{iss}"
jti = "stolen"
expires = {exp}

[[subject]]
issuer = "{iss}"
subject = "bob"
issued_before = {cutoff}

[[sid]]
issuer = "{iss}"
sid = "s-1"

[[key]]
provider = "main"
kid = "ec-1"
"#,
            exp = now + 7200,
            cutoff = now - 500,
        ),
    )
    .unwrap();
    // The tokens above are in the verified-token cache: revocation must still apply.
    let revoked = eventually_async(Duration::from_secs(10), || async {
        w.call("/api/x", &stolen).await.status == 401
    })
    .await;
    assert!(revoked, "denylist change was not picked up");
    assert_eq!(w.call("/api/x", &stolen).await.reason(), "revoked_token");
    assert_eq!(w.call("/api/x", &alice_other).await.status, 200);
    assert_eq!(w.call("/api/x", &bob_old).await.reason(), "revoked_session");
    assert_eq!(w.call("/api/x", &bob_new).await.status, 200);
    assert_eq!(w.call("/api/x", &ec_token).await.reason(), "revoked_key");
    assert_eq!(w.call("/api/x", &logged_out).await.reason(), "revoked_sid");
    assert_eq!(w.call("/api/x", &still_in).await.status, 200);
    let reply = w.call("/api/x", &stolen).await;
    assert!(reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));

    // A bad file is refused; the previous list stays in force.
    std::fs::write(&list, "[[token]]\nissuer = \"x\"\njti = \"\"\nbogus = 1\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.call("/api/x", &stolen).await.reason(), "revoked_token");
    assert_eq!(w.call("/api/x", &bob_old).await.reason(), "revoked_session");

    // A whole-subject entry.
    std::fs::write(
        &list,
        format!("[[subject]]\nissuer = \"{iss}\"\nsubject = \"alice\"\n"),
    )
    .unwrap();
    let revoked = eventually_async(Duration::from_secs(10), || async {
        w.call("/api/x", &alice_other).await.status == 401
    })
    .await;
    assert!(revoked);
    assert_eq!(
        w.call("/api/x", &alice_other).await.reason(),
        "revoked_subject"
    );
    assert_eq!(
        w.call("/api/x", &bob_old).await.status,
        200,
        "bob's entry was removed"
    );
    drop(w.dir);
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// `a - b` for big-endian numbers of equal length with a ≥ b.
fn be_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut digit = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        out[i] = u8::try_from(digit).unwrap();
    }
    assert_eq!(borrow, 0, "a < b");
    out
}

/// The same ES256 token with its signature (r, s) replaced by (r, n - s): a different string
/// that verifies just as well.
fn malleate_es256(token: &str) -> String {
    use base64::Engine;
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    assert_eq!(signature.len(), 64, "ES256 signatures are r || s");
    let (r, s) = signature.split_at(32);
    let twin = [r, be_sub(&P256_ORDER, s).as_slice()].concat();
    format!("{signing_input}.{}", base64_url(&twin))
}

#[test]
fn big_endian_subtraction() {
    assert_eq!(be_sub(&[1, 0], &[0, 1]), vec![0, 255]);
    assert_eq!(be_sub(&[5, 5], &[5, 5]), vec![0, 0]);
    assert_eq!(
        be_sub(&P256_ORDER, &be_sub(&P256_ORDER, &[7; 32])),
        vec![7; 32]
    );
}

#[tokio::test]
async fn a_malleated_ecdsa_twin_is_cached_apart_and_revoked_by_jti_with_its_original() {
    let dir = temp_dir("malleable");
    let list = dir.join("denylist.toml");
    std::fs::write(&list, "").unwrap();
    let w = world(&format!(
        "[auth]\ndenylist = \"{}\"\ndenylist_reload_interval = \"50ms\"\n",
        list.display()
    ))
    .await;
    let iss = w.issuer();
    let mut c = claims(&iss, "carol");
    c["jti"] = json!("twin-jti");
    let token = w.ec.token(&c);
    let twin = malleate_es256(&token);
    assert_ne!(token, twin);
    let other = w.ec.token(&claims(&iss, "dave"));
    // Both strings verify, and each is cached under its own string.
    for t in [&token, &twin] {
        let reply = w.call("/api/x", t).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.upstream_header("x-auth-subject"), vec!["carol"]);
        assert!(w.gw.state.load().verifier.is_cached(t));
    }
    for t in [&token, &twin] {
        assert_eq!(w.call("/api/x", t).await.status, 200, "cache hit");
    }
    // Revoked by jti, not by string: both strings are refused, cached or not.
    std::fs::write(
        &list,
        format!("[[token]]\nissuer = \"{iss}\"\njti = \"twin-jti\"\n"),
    )
    .unwrap();
    let revoked = eventually_async(Duration::from_secs(10), || async {
        w.call("/api/x", &token).await.status == 401
    })
    .await;
    assert!(revoked, "denylist change was not picked up");
    for t in [&token, &twin] {
        let reply = w.call("/api/x", t).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (401, "revoked_token")
        );
        assert!(
            reply.json().get("headers").is_none(),
            "reached the upstream"
        );
        assert!(w.gw.state.load().verifier.is_cached(t), "still cached");
    }
    assert_eq!(w.call("/api/x", &other).await.status, 200);
}

#[tokio::test]
async fn oidc_discovery_provider() {
    let up = echo().await;
    let (key, idp) = issuer_with_key(Algorithm::ES384, Some("d1")).await;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[[provider]]
name = "oidc"
issuer = "{}"
discovery = true
audiences = ["api"]
algorithms = ["ES384"]
typ = "at+jwt"
required_claims = ["client_id"]
[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
"#,
        idp.issuer()
    ))
    .await;
    let url = format!("http://{}/x", gw.addrs[0]);
    let client = h1_client();
    let mut c = claims(&idp.issuer(), "svc");
    c["client_id"] = json!("cli");
    let at = key.sign_raw(
        &json!({"alg":"ES384","kid":"d1","typ":"at+jwt"}).to_string(),
        &c.to_string(),
    );
    let reply = send(&client, bearer(&url, &at)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(idp.discovery_fetches() >= 1);
    let media = key.sign_raw(
        &json!({"alg":"ES384","kid":"d1","typ":"application/AT+JWT"}).to_string(),
        &c.to_string(),
    );
    assert_eq!(send(&client, bearer(&url, &media)).await.status, 200);
    let id_token = key.sign_raw(
        &json!({"alg":"ES384","kid":"d1","typ":"JWT"}).to_string(),
        &c.to_string(),
    );
    let reply = send(&client, bearer(&url, &id_token)).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "typ_mismatch")
    );
    let no_client = key.sign_raw(
        &json!({"alg":"ES384","kid":"d1","typ":"at+jwt"}).to_string(),
        &claims(&idp.issuer(), "svc").to_string(),
    );
    let reply = send(&client, bearer(&url, &no_client)).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_claim")
    );
}

#[tokio::test]
async fn a_cached_verification_still_honours_each_routes_providers() {
    let w = world("").await;
    let hmac = SigningKey::hmac(Algorithm::HS256, HMAC_SECRET.as_bytes(), None);
    let hs = hmac.token(&claims("https://hs.example", "svc"));
    // Verified (and cached) on a route that accepts every provider...
    let reply = w.call("/any/x", &hs).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.upstream_header("x-auth-issuer"),
        vec!["https://hs.example"]
    );
    // ...then refused on a route that accepts only "main", cache or not.
    for _ in 0..2 {
        let reply = w.call("/api/x", &hs).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (401, "provider_not_accepted")
        );
    }
    // And the other way round: a token first refused on /api is still fine on /any.
    let fresh = hmac.token(&claims("https://hs.example", "svc2"));
    assert_eq!(w.call("/api/x", &fresh).await.status, 401);
    assert_eq!(w.call("/any/x", &fresh).await.status, 200);
}

#[tokio::test]
async fn authorization_is_dropped_whatever_its_scheme_when_not_forwarded() {
    let w = world("").await;
    let token = w.rsa.token(&claims(&w.issuer(), "alice"));
    for value in [format!("Bearer {token}"), "Basic dXNlcjpwYXNz".to_string()] {
        let req = Request::get(w.url("/strip-token/x"))
            .header("authorization", value.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(&h1_client(), req).await;
        assert!(reply.upstream_header("authorization").is_empty(), "{value}");
    }
    // A tab after the scheme is still a Bearer credential, verified like any other.
    let req = Request::get(w.url("/optional/x"))
        .header("authorization", "Bearer\tforged.token.here")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(&h1_client(), req).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "malformed_token")
    );
}
