//! The demo OpenID Provider over real HTTP on loopback, driven as a relying party would drive
//! it: the authorization-code flow with PKCE, client authentication, refresh rotation,
//! RP-initiated logout and back-channel logout tokens, and the faults tests can inject.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use authgate::auth::credential::{encode_query_value as enc, percent_decode};
use authgate::demo::issuer::{
    LogoutTokenTweak, OidcClient, TokenFault, BACKCHANNEL_EVENT, SESSION_COOKIE,
};
use common::*;

const CLIENT: &str = "gateway";
const SECRET: &str = "gateway-secret";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const BYE: &str = "http://127.0.0.1:9/signed-out";

/// An OP with an ES256 key (kid "idp-1") besides an unrelated published key, and the
/// confidential client `gateway`.
async fn op() -> Arc<JwksServer> {
    let other = SigningKey::generate(Algorithm::RS256, Some("other")).unwrap();
    let idp = JwksServer::start(vec![other.public_jwk(true).unwrap()])
        .await
        .unwrap();
    idp.set_signing_key(SigningKey::generate(Algorithm::ES256, Some("idp-1")).unwrap());
    idp.register_client(OidcClient {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![BYE.into()],
        backchannel_logout_uri: None,
    });
    idp
}

fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    (verifier, challenge)
}

/// The parameters of a good authorization request; tests edit them.
fn auth_params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT.into()),
        ("redirect_uri", REDIRECT.into()),
        ("response_type", "code".into()),
        ("scope", "openid profile email".into()),
        ("state", "st-1".into()),
        ("nonce", "n-1".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn encode_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

fn with(
    mut params: Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    params.retain(|(n, _)| *n != name);
    if let Some(value) = value {
        params.push((name, value.to_string()));
    }
    params
}

async fn get_with_cookie(uri: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::get(uri);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    send(&h1_client(), req.body(Full::new(Bytes::new())).unwrap()).await
}

async fn authorize(idp: &JwksServer, params: &[(&str, String)], cookie: Option<&str>) -> Reply {
    get_with_cookie(
        &format!("{}/authorize?{}", idp.issuer(), encode_pairs(params)),
        cookie,
    )
    .await
}

async fn post_form<K: AsRef<str>, V: AsRef<str>>(
    uri: &str,
    pairs: &[(K, V)],
    basic: Option<(&str, &str)>,
    cookie: Option<&str>,
) -> Reply {
    let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let credentials = format!("{}:{}", form_encode(id), form_encode(secret));
        req = req.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(credentials)),
        );
    }
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    send(
        &h1_client(),
        req.body(Full::new(Bytes::from(encode_pairs(pairs))))
            .unwrap(),
    )
    .await
}

/// RFC 6749 §2.3.1 / appendix B: form-urlencoding, spaces as `+`.
fn form_encode(text: &str) -> String {
    enc(text).replace("%20", "+")
}

fn location(reply: &Reply) -> String {
    reply
        .headers
        .get("location")
        .unwrap_or_else(|| {
            panic!(
                "no Location ({}): {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            )
        })
        .to_str()
        .unwrap()
        .to_string()
}

/// The query parameters of the redirect's Location.
fn redirect_params(reply: &Reply) -> HashMap<String, String> {
    let location = location(reply);
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(&v.replace('+', " "))))
        .collect()
}

fn set_cookie_value(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(str::to_string)
}

/// A code for `alice` through auto-login; returns (code, verifier).
async fn code_for(idp: &JwksServer) -> (String, String) {
    idp.set_auto_login(Some("alice"));
    let (verifier, challenge) = pkce();
    let reply = authorize(idp, &auth_params(&challenge), None).await;
    assert_eq!(
        reply.status,
        302,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let params = redirect_params(&reply);
    (params["code"].clone(), verifier)
}

async fn exchange(idp: &JwksServer, code: &str, verifier: &str) -> Reply {
    post_form(
        &format!("{}/token", idp.issuer()),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some((CLIENT, SECRET)),
        None,
    )
    .await
}

async fn refresh(idp: &JwksServer, token: &str) -> Reply {
    post_form(
        &format!("{}/token", idp.issuer()),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
        Some((CLIENT, SECRET)),
        None,
    )
    .await
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Verifies `token` as a relying party would: the key chosen by `kid` from the published JWKS,
/// the algorithm from our expectation, issuer and audience checked.
async fn verify(idp: &JwksServer, token: &str, audience: &str) -> Value {
    let jwks = send(&h1_client(), get(&idp.jwks_uri())).await.json();
    let kid = header_of(token)["kid"].as_str().unwrap().to_string();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not published"))
        .clone();
    let key = jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_issuer(&[idp.issuer()]);
    validation.set_audience(&[audience]);
    validation.validate_nbf = true;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("token refused: {e}"))
        .claims
}

#[tokio::test]
async fn discovery_names_every_endpoint_and_jwks_publishes_the_op_key_beside_the_others() {
    let idp = op().await;
    let doc = send(
        &h1_client(),
        get(&format!(
            "{}/.well-known/openid-configuration",
            idp.issuer()
        )),
    )
    .await
    .json();
    let issuer = idp.issuer();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["jwks_uri"], idp.jwks_uri().as_str());
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{issuer}/authorize").as_str()
    );
    assert_eq!(doc["token_endpoint"], format!("{issuer}/token").as_str());
    assert_eq!(
        doc["end_session_endpoint"],
        format!("{issuer}/end_session").as_str()
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(doc["backchannel_logout_supported"], true);
    assert_eq!(doc["backchannel_logout_session_supported"], true);
    let jwks = send(&h1_client(), get(&idp.jwks_uri())).await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["other", "idp-1"]);
    // Rotating the other keys leaves the OP's key published.
    idp.set_keys(vec![]);
    let jwks = send(&h1_client(), get(&idp.jwks_uri())).await.json();
    assert_eq!(jwks["keys"][0]["kid"], "idp-1");
}

#[tokio::test]
async fn the_code_flow_with_pkce_issues_tokens_a_relying_party_can_verify() {
    let idp = op().await;
    idp.set_auto_login(Some("alice"));
    let (verifier, challenge) = pkce();
    let reply = authorize(&idp, &auth_params(&challenge), None).await;
    assert_eq!(reply.status, 302);
    let params = redirect_params(&reply);
    assert!(location(&reply).starts_with(&format!("{REDIRECT}?")));
    assert_eq!(params["state"], "st-1");
    assert_eq!(params["iss"], idp.issuer());
    let sso = set_cookie_value(&reply).expect("the IdP session cookie");
    assert!(
        sso.contains("HttpOnly") && sso.contains("SameSite=Lax") && sso.contains("Path=/"),
        "{sso}"
    );

    let reply = exchange(&idp, &params["code"], &verifier).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "openid profile email");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);

    let id_token = body["id_token"].as_str().unwrap();
    assert_eq!(
        header_of(id_token),
        json!({"alg": "ES256", "typ": "JWT", "kid": "idp-1"})
    );
    let id = verify(&idp, id_token, CLIENT).await;
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["azp"], CLIENT);
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["name"], "alice");
    assert!(id["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(id["auth_time"].as_i64().unwrap() <= now());
    assert!(id["exp"].as_i64().unwrap() > now());
    let access_token = body["access_token"].as_str().unwrap();
    // at_hash: the left half of SHA-256 of the access token (ES256).
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    assert_eq!(
        id["at_hash"],
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]).as_str()
    );

    assert_eq!(header_of(access_token)["typ"], "at+jwt");
    let access = verify(&idp, access_token, "demo-api").await;
    assert_eq!(access["sub"], "alice");
    assert_eq!(access["client_id"], CLIENT);
    assert_eq!(access["scope"], "openid profile email");
    assert_eq!(access["roles"], json!(["user"]));
    assert_eq!(access["sid"], id["sid"]);
    assert!(access["jti"].is_string());
}

#[tokio::test]
async fn a_code_is_single_use_and_its_replay_revokes_what_it_granted() {
    let idp = op().await;
    let (code, verifier) = code_for(&idp).await;
    let first = exchange(&idp, &code, &verifier).await;
    assert_eq!(first.status, 200);
    let again = exchange(&idp, &code, &verifier).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
    let refreshed = refresh(&idp, first.json()["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 400);
    assert_eq!(refreshed.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_wrong_verifier_or_redirect_uri_or_client_is_refused() {
    let idp = op().await;
    idp.register_client(OidcClient {
        client_id: "other-app".into(),
        client_secret: Some("x".into()),
        redirect_uris: vec![REDIRECT.into()],
        ..Default::default()
    });
    let (code, _) = code_for(&idp).await;
    let (wrong_verifier, _) = pkce();
    let reply = exchange(&idp, &code, &wrong_verifier).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );

    let (code, verifier) = code_for(&idp).await;
    let reply = post_form(
        &format!("{}/token", idp.issuer()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/oauth/callback/"),
            ("code_verifier", &verifier),
        ],
        Some((CLIENT, SECRET)),
        None,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );

    let (code, verifier) = code_for(&idp).await;
    let reply = post_form(
        &format!("{}/token", idp.issuer()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some(("other-app", "x")),
        None,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );

    let reply = post_form(
        &format!("{}/token", idp.issuer()),
        &[("grant_type", "password"), ("username", "a")],
        Some((CLIENT, SECRET)),
        None,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn clients_authenticate_by_basic_or_post_and_a_wrong_secret_is_401() {
    let idp = op().await;
    // A secret with characters RFC 6749 §2.3.1 makes clients form-encode inside Basic.
    let odd = "s3c:r+t/ é%";
    idp.register_client(OidcClient {
        client_id: "odd app".into(),
        client_secret: Some(odd.into()),
        redirect_uris: vec![REDIRECT.into()],
        ..Default::default()
    });
    idp.register_client(OidcClient {
        client_id: "spa".into(),
        client_secret: None,
        redirect_uris: vec![REDIRECT.into()],
        ..Default::default()
    });
    idp.set_auto_login(Some("alice"));
    let token_uri = format!("{}/token", idp.issuer());
    let code_of = |client: &'static str| {
        let idp = idp.clone();
        async move {
            let (verifier, challenge) = pkce();
            let params = with(auth_params(&challenge), "client_id", Some(client));
            let reply = authorize(&idp, &params, None).await;
            (redirect_params(&reply)["code"].clone(), verifier)
        }
    };
    let grant = |code: &str, verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", REDIRECT.to_string()),
            ("code_verifier", verifier.to_string()),
        ]
    };

    // Basic, with form-encoded id and secret.
    let (code, verifier) = code_of("odd app").await;
    let reply = post_form(
        &token_uri,
        &grant(&code, &verifier),
        Some(("odd app", odd)),
        None,
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    // Post.
    let (code, verifier) = code_of("odd app").await;
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_id", "odd app".into()));
    pairs.push(("client_secret", odd.into()));
    let reply = post_form(&token_uri, &pairs, None, None).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    // A wrong secret by Basic: 401 with a Basic challenge.
    let (code, verifier) = code_of(CLIENT).await;
    let reply = post_form(
        &token_uri,
        &grant(&code, &verifier),
        Some((CLIENT, "nope")),
        None,
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "invalid_client");
    assert!(reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));

    // A wrong secret by post: 401, no Basic challenge (Basic was not tried).
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_id", CLIENT.into()));
    pairs.push(("client_secret", "nope".into()));
    let reply = post_form(&token_uri, &pairs, None, None).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
    assert!(reply.headers.get("www-authenticate").is_none());

    // A confidential client naming itself without its secret.
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_id", CLIENT.into()));
    let reply = post_form(&token_uri, &pairs, None, None).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (401, json!("invalid_client"))
    );

    // Two methods at once.
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_secret", SECRET.into()));
    let reply = post_form(&token_uri, &pairs, Some((CLIENT, SECRET)), None).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_request"))
    );

    // A public client by client_id alone; offering a secret it does not have fails.
    let (code, verifier) = code_of("spa").await;
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_id", "spa".into()));
    pairs.push(("client_secret", "invented".into()));
    let reply = post_form(&token_uri, &pairs, None, None).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (code, verifier) = code_of("spa").await;
    let mut pairs = grant(&code, &verifier);
    pairs.push(("client_id", "spa".into()));
    let reply = post_form(&token_uri, &pairs, None, None).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        verify(&idp, reply.json()["id_token"].as_str().unwrap(), "spa").await["aud"],
        "spa"
    );
}

#[tokio::test]
async fn refresh_rotates_the_token_and_a_rotated_out_token_revokes_its_family() {
    let idp = op().await;
    idp.set_token_lifetimes(Duration::from_secs(2), Duration::from_secs(3));
    let (code, verifier) = code_for(&idp).await;
    let first = exchange(&idp, &code, &verifier).await.json();
    assert_eq!(first["expires_in"], 2);
    let first_id = claims_of(first["id_token"].as_str().unwrap());
    assert_eq!(
        first_id["exp"].as_i64().unwrap() - first_id["iat"].as_i64().unwrap(),
        3
    );

    let reply = refresh(&idp, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let second = reply.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let id = verify(&idp, second["id_token"].as_str().unwrap(), CLIENT).await;
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["sid"], first_id["sid"]);
    assert_eq!(id["auth_time"], first_id["auth_time"]);
    assert!(
        id.get("nonce").is_none(),
        "a refreshed ID token carries no nonce"
    );
    assert_eq!(idp.refresh_grants(), 1);

    // The old token is refused, and presenting it revokes the one that replaced it.
    let reused = refresh(&idp, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (reused.status, reused.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let after = refresh(&idp, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (after.status, after.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    assert_eq!(idp.refresh_grants(), 3);
}

#[tokio::test]
async fn authorize_shows_an_error_page_for_an_unknown_client_or_redirect_and_redirects_other_errors(
) {
    let idp = op().await;
    let (_, challenge) = pkce();
    for params in [
        with(auth_params(&challenge), "client_id", Some("unknown")),
        with(auth_params(&challenge), "client_id", None),
        with(
            auth_params(&challenge),
            "redirect_uri",
            Some("http://evil.example/cb"),
        ),
        with(
            auth_params(&challenge),
            "redirect_uri",
            Some("http://127.0.0.1:9/oauth/callback?x=1"),
        ),
        with(auth_params(&challenge), "redirect_uri", None),
    ] {
        let reply = authorize(&idp, &params, None).await;
        assert_eq!(reply.status, 400, "{params:?}");
        assert!(reply.headers.get("location").is_none(), "{params:?}");
        assert!(reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
    for (params, error) in [
        (
            with(auth_params(&challenge), "code_challenge", None),
            "invalid_request",
        ),
        (
            with(
                auth_params(&challenge),
                "code_challenge_method",
                Some("plain"),
            ),
            "invalid_request",
        ),
        (
            with(auth_params(&challenge), "code_challenge", Some("short")),
            "invalid_request",
        ),
        (
            with(auth_params(&challenge), "scope", Some("profile email")),
            "invalid_scope",
        ),
        (
            with(auth_params(&challenge), "response_type", Some("token")),
            "unsupported_response_type",
        ),
        (
            with(auth_params(&challenge), "response_type", None),
            "invalid_request",
        ),
        (
            with(auth_params(&challenge), "nonce", None),
            "invalid_request",
        ),
        (
            with(auth_params(&challenge), "prompt", Some("none")),
            "login_required",
        ),
    ] {
        let reply = authorize(&idp, &params, None).await;
        assert_eq!(reply.status, 302, "{params:?}");
        let query = redirect_params(&reply);
        assert_eq!(query["error"], error, "{params:?}");
        assert_eq!(query["state"], "st-1");
        assert_eq!(query["iss"], idp.issuer());
        assert!(location(&reply).starts_with(REDIRECT));
    }
    // A repeated parameter is refused rather than one of its values picked.
    let mut params = auth_params(&challenge);
    params.push(("scope", "openid admin".into()));
    assert_eq!(
        redirect_params(&authorize(&idp, &params, None).await)["error"],
        "invalid_request"
    );
    let reply = authorize(&idp, &with(auth_params(&challenge), "state", None), None).await;
    let query = redirect_params(&reply);
    assert_eq!(query["error"], "invalid_request");
    assert!(!query.contains_key("state"));
}

#[tokio::test]
async fn the_login_form_escapes_what_it_reflects_and_sso_skips_it_afterwards() {
    let idp = op().await;
    let (verifier, challenge) = pkce();
    let evil = r#""><script>alert(1)</script>"#;
    let params = with(
        with(auth_params(&challenge), "state", Some(evil)),
        "login_hint",
        Some(evil),
    );
    let reply = authorize(&idp, &params, None).await;
    assert_eq!(reply.status, 200);
    let html = String::from_utf8_lossy(&reply.body).to_string();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains(r#"<form method="post" action="/authorize">"#));
    assert!(html.contains(r#"name="action" value="sign_in""#) && html.contains(r#"value="deny""#));
    assert!(reply.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // Submitting the form as a browser would (its hidden fields are the request's parameters).
    let form_uri = format!("{}/authorize", idp.issuer());
    let mut fields = with(params.clone(), "login_hint", None);
    fields.push(("username", "  bob  ".into()));
    fields.push(("action", "sign_in".into()));
    let reply = post_form(&form_uri, &fields, None, None).await;
    assert_eq!(reply.status, 302);
    let query = redirect_params(&reply);
    assert_eq!(query["state"], evil);
    let cookie = set_cookie_value(&reply).unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let tokens = exchange(&idp, &query["code"], &verifier).await.json();
    let first_sid = claims_of(tokens["id_token"].as_str().unwrap())["sid"].clone();
    assert_eq!(
        claims_of(tokens["id_token"].as_str().unwrap())["sub"],
        "bob"
    );

    // With the IdP session cookie, the next request gets a code at once, in the same session.
    let (verifier, challenge) = pkce();
    let reply = authorize(&idp, &auth_params(&challenge), Some(&cookie)).await;
    assert_eq!(reply.status, 302);
    assert!(set_cookie_value(&reply).is_none());
    let tokens = exchange(&idp, &redirect_params(&reply)["code"], &verifier)
        .await
        .json();
    let id = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        (id["sub"].clone(), id["sid"].clone()),
        (json!("bob"), first_sid)
    );
    // prompt=login shows the form even so.
    let reply = authorize(
        &idp,
        &with(auth_params(&challenge), "prompt", Some("login")),
        Some(&cookie),
    )
    .await;
    assert_eq!(reply.status, 200);

    // Deny.
    let mut fields = auth_params(&challenge);
    fields.push(("action", "deny".into()));
    let reply = post_form(&form_uri, &fields, None, None).await;
    let query = redirect_params(&reply);
    assert_eq!(
        (query["error"].as_str(), query["state"].as_str()),
        ("access_denied", "st-1")
    );
    // An empty username shows the form again.
    let mut fields = auth_params(&challenge);
    fields.push(("action", "sign_in".into()));
    fields.push(("username", " ".into()));
    assert_eq!(post_form(&form_uri, &fields, None, None).await.status, 200);
    // The form's fields are checked again: a tampered redirect_uri gets the error page.
    let mut fields = with(
        auth_params(&challenge),
        "redirect_uri",
        Some("http://evil.example/"),
    );
    fields.push(("action", "sign_in".into()));
    fields.push(("username", "bob".into()));
    let reply = post_form(&form_uri, &fields, None, None).await;
    assert_eq!(reply.status, 400);
    assert!(reply.headers.get("location").is_none());
}

#[tokio::test]
async fn end_session_follows_only_registered_redirects_and_ends_the_idp_session() {
    let idp = op().await;
    let (verifier, challenge) = pkce();
    idp.set_auto_login(Some("alice"));
    let reply = authorize(&idp, &auth_params(&challenge), None).await;
    let cookie = set_cookie_value(&reply)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let tokens = exchange(&idp, &redirect_params(&reply)["code"], &verifier)
        .await
        .json();
    let id_token = tokens["id_token"].as_str().unwrap().to_string();
    idp.set_auto_login(None);
    let end = |query: String| {
        let cookie = cookie.clone();
        let issuer = idp.issuer();
        async move { get_with_cookie(&format!("{issuer}/end_session?{query}"), Some(&cookie)).await }
    };

    // Refused, never redirected: an unregistered target, a target with no client named, a
    // hint we did not sign, a client_id that is not the hint's audience.
    for query in [
        encode_pairs(&[
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", "http://evil.example/"),
        ]),
        encode_pairs(&[("post_logout_redirect_uri", BYE)]),
        encode_pairs(&[
            ("id_token_hint", "e30.e30.sig"),
            ("post_logout_redirect_uri", BYE),
        ]),
        encode_pairs(&[
            ("id_token_hint", id_token.as_str()),
            ("client_id", "other"),
            ("post_logout_redirect_uri", BYE),
        ]),
    ] {
        let reply = end(query).await;
        assert_eq!(reply.status, 400);
        assert!(reply.headers.get("location").is_none());
    }
    assert_eq!(idp.active_sessions(), 1);

    let reply = end(encode_pairs(&[
        ("id_token_hint", id_token.as_str()),
        ("post_logout_redirect_uri", BYE),
        ("state", "bye-1"),
    ]))
    .await;
    assert_eq!(reply.status, 302);
    assert_eq!(location(&reply), format!("{BYE}?state=bye-1"));
    let cleared = set_cookie_value(&reply).unwrap();
    assert!(
        cleared.starts_with(&format!("{SESSION_COOKIE}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(idp.active_sessions(), 0);
    assert_eq!(idp.end_session_calls(), 5);
    // The session's refresh token went with it, and the old cookie no longer signs in.
    let reply = refresh(&idp, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert_eq!(
        authorize(&idp, &auth_params(&challenge), Some(&cookie))
            .await
            .status,
        200
    );

    // client_id instead of a hint; without a target, a signed-out page.
    let reply = end(encode_pairs(&[
        ("client_id", CLIENT),
        ("post_logout_redirect_uri", BYE),
    ]))
    .await;
    assert_eq!(location(&reply), BYE);
    let reply = end(String::new()).await;
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("signed out"));
}

/// A relying party's back-channel endpoint: records each request's content type and body.
async fn backchannel_listener(
    status: u16,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, String)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let method = req.method().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send((
                                method,
                                content_type,
                                String::from_utf8_lossy(&body).into_owned(),
                            ));
                            let mut response = http::Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/backchannel-logout"), rx)
}

fn logout_token_of(body: &str) -> String {
    let (name, value) = body.split_once('=').unwrap();
    assert_eq!(name, "logout_token");
    percent_decode(value)
}

#[tokio::test]
async fn back_channel_logout_posts_a_well_formed_logout_token() {
    let idp = op().await;
    let (uri, mut received) = backchannel_listener(200).await;
    idp.register_client(OidcClient {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![BYE.into()],
        backchannel_logout_uri: Some(uri),
    });
    assert_eq!(
        idp.backchannel_logout(CLIENT, Some("sid-1"), Some("alice"))
            .await,
        Ok(200)
    );
    let (method, content_type, body) = received.recv().await.unwrap();
    assert_eq!(
        (method.as_str(), content_type.as_str()),
        ("POST", "application/x-www-form-urlencoded")
    );
    let token = logout_token_of(&body);
    assert_eq!(
        header_of(&token),
        json!({"alg": "ES256", "typ": "logout+jwt", "kid": "idp-1"})
    );
    let claims = verify(&idp, &token, CLIENT).await;
    assert_eq!(claims["sid"], "sid-1");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["events"], json!({ BACKCHANNEL_EVENT: {} }));
    assert!(claims["jti"].is_string() && claims["iat"].is_i64());
    assert!(claims["exp"].as_i64().unwrap() <= now() + 300);
    assert!(claims.get("nonce").is_none());

    // RP-initiated logout tells the clients of the ended session, before it redirects.
    let (code, verifier) = code_for(&idp).await;
    let tokens = exchange(&idp, &code, &verifier).await.json();
    let sid = claims_of(tokens["id_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = get_with_cookie(
        &format!(
            "{}/end_session?{}",
            idp.issuer(),
            encode_pairs(&[("id_token_hint", tokens["id_token"].as_str().unwrap())])
        ),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (_, _, body) = received
        .try_recv()
        .expect("delivered before end_session answered");
    assert_eq!(claims_of(&logout_token_of(&body))["sid"], sid.as_str());

    // The human trigger: ends the session named and tells the client.
    let (code, verifier) = code_for(&idp).await;
    exchange(&idp, &code, &verifier).await;
    let reply = post_form(
        &format!(
            "{}/demo/backchannel?sub=alice&client_id={CLIENT}",
            idp.issuer()
        ),
        &[] as &[(&str, &str)],
        None,
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["ended_sessions"], 1);
    assert_eq!(reply.json()["deliveries"][0]["status"], 200);
    assert_eq!(
        claims_of(&logout_token_of(&received.recv().await.unwrap().2))["sub"],
        "alice"
    );
    assert_eq!(idp.backchannel_deliveries().len(), 3);

    // A client without a back-channel URI, or one that refuses.
    assert!(idp
        .backchannel_logout("nobody", None, Some("alice"))
        .await
        .is_err());
    let (refusing, _rx) = backchannel_listener(400).await;
    idp.register_client(OidcClient {
        client_id: "strict".into(),
        backchannel_logout_uri: Some(refusing),
        ..Default::default()
    });
    assert_eq!(
        idp.backchannel_logout("strict", None, Some("alice")).await,
        Ok(400)
    );
}

#[tokio::test]
async fn logout_token_tweaks_spoil_exactly_what_they_name() {
    let idp = op().await;
    let make = |tweak| idp.logout_token(CLIENT, Some("s"), None, tweak);
    let good = make(LogoutTokenTweak::None);
    verify(&idp, &good, CLIENT).await;
    assert!(claims_of(&make(LogoutTokenTweak::WithNonce))["nonce"].is_string());
    assert!(claims_of(&make(LogoutTokenTweak::NoEvents))
        .get("events")
        .is_none());
    assert_eq!(header_of(&make(LogoutTokenTweak::WrongTyp))["typ"], "JWT");
    assert_ne!(
        claims_of(&make(LogoutTokenTweak::WrongAudience))["aud"],
        CLIENT
    );
    assert_ne!(
        claims_of(&make(LogoutTokenTweak::WrongIssuer))["iss"],
        idp.issuer().as_str()
    );
    assert!(
        claims_of(&make(LogoutTokenTweak::Expired))["exp"]
            .as_i64()
            .unwrap()
            < now()
    );
    let forged = make(LogoutTokenTweak::BadSignature);
    assert_eq!(header_of(&forged)["kid"], "idp-1");
    let jwks = send(&h1_client(), get(&idp.jwks_uri())).await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "idp-1")
        .unwrap()
        .clone();
    let key = jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
    let (message, signature) = forged.rsplit_once('.').unwrap();
    assert!(
        !jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::ES256)
            .unwrap()
    );
}

#[tokio::test]
async fn token_endpoint_faults_spoil_answers_until_cleared() {
    let idp = op().await;
    let token_uri = format!("{}/token", idp.issuer());
    let any_grant = [("grant_type", "refresh_token"), ("refresh_token", "x")];

    idp.set_token_endpoint_fault(Some(TokenFault::Status(503)));
    assert_eq!(
        post_form(&token_uri, &any_grant, Some((CLIENT, SECRET)), None)
            .await
            .status,
        503
    );
    idp.set_token_endpoint_fault(Some(TokenFault::Garbage));
    let reply = post_form(&token_uri, &any_grant, Some((CLIENT, SECRET)), None).await;
    assert_eq!(reply.status, 200);
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
    idp.set_token_endpoint_fault(Some(TokenFault::HugeBody));
    let reply = post_form(&token_uri, &any_grant, Some((CLIENT, SECRET)), None).await;
    assert!(reply.body.len() > 8 * 1024 * 1024);
    idp.set_token_endpoint_fault(Some(TokenFault::Hang));
    let mut req =
        Request::post(&token_uri).header("content-type", "application/x-www-form-urlencoded");
    req = req.header(
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{CLIENT}:{SECRET}"))),
    );
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        h1_client().request(
            req.body(Full::new(Bytes::from(encode_pairs(&any_grant))))
                .unwrap(),
        ),
    )
    .await;
    assert!(hung.is_err(), "the Hang fault answered");
    assert_eq!(
        idp.refresh_grants(),
        4,
        "faulted refresh requests are counted too"
    );

    for (fault, check) in [
        (
            TokenFault::WrongNonce,
            Box::new(|c: &Value, _: &Value| assert_ne!(c["nonce"], "n-1"))
                as Box<dyn Fn(&Value, &Value)>,
        ),
        (
            TokenFault::WrongAudience,
            Box::new(|c: &Value, _: &Value| assert_ne!(c["aud"], CLIENT)),
        ),
        (
            TokenFault::WrongIssuer,
            Box::new(|c: &Value, _: &Value| {
                assert!(c["iss"].as_str().unwrap().contains("invalid"))
            }),
        ),
        (
            TokenFault::ExpiredIdToken,
            Box::new(|c: &Value, _: &Value| assert!(c["exp"].as_i64().unwrap() < now())),
        ),
        (
            TokenFault::UnsignedIdToken,
            Box::new(|_: &Value, h: &Value| assert_eq!(h["alg"], "none")),
        ),
        (
            TokenFault::WrongSubject,
            Box::new(|c: &Value, _: &Value| assert_ne!(c["sub"], "alice")),
        ),
    ] {
        idp.set_token_endpoint_fault(None);
        let (code, verifier) = code_for(&idp).await;
        idp.set_token_endpoint_fault(Some(fault));
        let reply = exchange(&idp, &code, &verifier).await;
        assert_eq!(reply.status, 200, "{fault:?}");
        let id_token = reply.json()["id_token"].as_str().unwrap().to_string();
        check(&claims_of(&id_token), &header_of(&id_token));
    }
    idp.set_token_endpoint_fault(None);
    let (code, verifier) = code_for(&idp).await;
    idp.set_token_endpoint_fault(Some(TokenFault::NoRefreshToken));
    let reply = exchange(&idp, &code, &verifier).await.json();
    assert!(reply.get("refresh_token").is_none() && reply["id_token"].is_string());
    idp.set_token_endpoint_fault(None);
    let (code, verifier) = code_for(&idp).await;
    assert_eq!(exchange(&idp, &code, &verifier).await.status, 200);
}

#[tokio::test]
async fn a_down_idp_answers_503_on_every_endpoint() {
    let idp = op().await;
    idp.set_down(true);
    let reply = post_form(
        &format!("{}/token", idp.issuer()),
        &[("grant_type", "refresh_token")],
        None,
        None,
    )
    .await;
    assert_eq!(reply.status, 503);
    let (_, challenge) = pkce();
    assert_eq!(
        authorize(&idp, &auth_params(&challenge), None).await.status,
        503
    );
}

#[tokio::test]
async fn another_user_signing_in_on_the_same_browser_ends_the_first_session() {
    let idp = op().await;
    idp.set_auto_login(Some("alice"));
    let (_, challenge) = pkce();
    let reply = authorize(&idp, &auth_params(&challenge), None).await;
    let cookie = set_cookie_value(&reply)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    idp.set_auto_login(Some("bob"));
    let reply = authorize(
        &idp,
        &with(auth_params(&challenge), "prompt", Some("login")),
        Some(&cookie),
    )
    .await;
    assert!(
        set_cookie_value(&reply).is_some(),
        "a new session cookie for bob"
    );
    assert_eq!(idp.active_sessions(), 1);
}
