//! The tokens the demo OP signs: access tokens (RFC 9068 shape), ID tokens (OIDC Core §2) and
//! back-channel logout tokens (OIDC Back-Channel Logout §2.4), each optionally spoiled by a
//! test knob. Tokens are returned, never logged.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::form::random_value;
use super::state::{Grant, LogoutTokenTweak, TokenFault};
use crate::demo::signing::SigningKey;

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a logout token is valid: it is delivered at once, so two minutes is plenty.
const LOGOUT_TOKEN_LIFETIME: i64 = 120;

/// Profile claims derived from the username, then the claims a test set for that user.
pub fn profile(subject: &str, extra: Option<&Value>) -> Map<String, Value> {
    let email = if subject.contains('@') {
        subject.to_string()
    } else {
        format!("{subject}@example.com")
    };
    let mut claims = Map::new();
    claims.insert("name".into(), json!(subject));
    claims.insert("preferred_username".into(), json!(subject));
    claims.insert("email".into(), json!(email));
    claims.insert("email_verified".into(), json!(true));
    claims.insert("roles".into(), json!(["user"]));
    if let Some(Value::Object(extra)) = extra {
        for (name, value) in extra {
            claims.insert(name.clone(), value.clone());
        }
    }
    claims
}

pub struct AccessClaims<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub client_id: &'a str,
    pub grant: &'a Grant,
    pub lifetime: Duration,
    pub extra: Option<&'a Value>,
}

pub fn access_token(signer: &SigningKey, c: &AccessClaims<'_>) -> String {
    let now = crate::auth::jwt::now_unix();
    let mut claims = profile(&c.grant.subject, c.extra);
    for (name, value) in [
        ("iss", json!(c.issuer)),
        ("sub", json!(c.grant.subject)),
        ("aud", json!(c.audience)),
        ("scope", json!(c.grant.scope)),
        ("iat", json!(now)),
        ("exp", json!(now + c.lifetime.as_secs() as i64)),
        ("auth_time", json!(c.grant.auth_time)),
        ("jti", json!(random_value())),
        ("sid", json!(c.grant.sid)),
        ("client_id", json!(c.client_id)),
    ] {
        claims.insert(name.into(), value);
    }
    signer.sign_raw(
        &signer.header("at+jwt").to_string(),
        &Value::Object(claims).to_string(),
    )
}

pub struct IdClaims<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub grant: &'a Grant,
    /// The authorization request's nonce; `None` on refresh (OIDC Core 12.2).
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
    pub lifetime: Duration,
    pub extra: Option<&'a Value>,
}

pub fn id_token(signer: &SigningKey, c: &IdClaims<'_>, fault: Option<TokenFault>) -> String {
    let now = crate::auth::jwt::now_unix();
    let mut claims = profile(&c.grant.subject, c.extra);
    claims.remove("roles");
    let (iat, exp) = if fault == Some(TokenFault::ExpiredIdToken) {
        (now - 1200, now - 600)
    } else {
        (now, now + c.lifetime.as_secs() as i64)
    };
    let audience = if fault == Some(TokenFault::WrongAudience) {
        "another-client"
    } else {
        c.client_id
    };
    for (name, value) in [
        ("iss", json!(c.issuer)),
        ("sub", json!(c.grant.subject)),
        ("aud", json!(audience)),
        ("azp", json!(audience)),
        ("iat", json!(iat)),
        ("exp", json!(exp)),
        ("auth_time", json!(c.grant.auth_time)),
        ("sid", json!(c.grant.sid)),
        ("at_hash", json!(signer.half_hash(c.access_token))),
    ] {
        claims.insert(name.into(), value);
    }
    if let Some(nonce) = c.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    match fault {
        Some(TokenFault::WrongNonce) => {
            claims.insert("nonce".into(), json!("not-the-nonce-you-sent"));
        }
        Some(TokenFault::WrongIssuer) => {
            claims.insert("iss".into(), json!("http://issuer.invalid"));
        }
        Some(TokenFault::WrongSubject) => {
            claims.insert("sub".into(), json!("someone-else"));
        }
        _ => {}
    }
    let claims = Value::Object(claims);
    match fault {
        Some(TokenFault::UnsignedIdToken) => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        Some(TokenFault::BadSignature) => forged(
            signer,
            &signer.header("JWT").to_string(),
            &claims.to_string(),
        ),
        _ => signer.token(&claims),
    }
}

/// A logout token for `client_id` naming `sid` and/or `sub`, spoiled as `tweak` says.
pub fn logout_token(
    signer: &SigningKey,
    issuer: &str,
    client_id: &str,
    sid: Option<&str>,
    sub: Option<&str>,
    tweak: LogoutTokenTweak,
) -> String {
    let now = crate::auth::jwt::now_unix();
    let (iat, exp) = if tweak == LogoutTokenTweak::Expired {
        (now - 1200, now - 600)
    } else {
        (now, now + LOGOUT_TOKEN_LIFETIME)
    };
    let mut claims = json!({
        "iss": if tweak == LogoutTokenTweak::WrongIssuer { "http://issuer.invalid" } else { issuer },
        "aud": if tweak == LogoutTokenTweak::WrongAudience { "another-client" } else { client_id },
        "iat": iat,
        "exp": exp,
        "jti": random_value(),
        "events": { BACKCHANNEL_EVENT: {} },
    });
    if let Some(sid) = sid {
        claims["sid"] = json!(sid);
    }
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    match tweak {
        LogoutTokenTweak::WithNonce => claims["nonce"] = json!(random_value()),
        LogoutTokenTweak::NoEvents => {
            if let Some(map) = claims.as_object_mut() {
                map.remove("events");
            }
        }
        _ => {}
    }
    let typ = if tweak == LogoutTokenTweak::WrongTyp {
        "JWT"
    } else {
        "logout+jwt"
    };
    let header = signer.header(typ).to_string();
    if tweak == LogoutTokenTweak::BadSignature {
        forged(signer, &header, &claims.to_string())
    } else {
        signer.sign_raw(&header, &claims.to_string())
    }
}

/// `header.payload` signed by a fresh key posing as `signer` (same algorithm and `kid`), so
/// the signature fails against the published key.
fn forged(signer: &SigningKey, header: &str, payload: &str) -> String {
    match SigningKey::generate(signer.alg, signer.kid.as_deref()) {
        Ok(impostor) => impostor.sign_raw(header, payload),
        // Only an algorithm no key can be generated for gets here: zero the real signature.
        Err(_) => {
            let token = signer.sign_raw(header, payload);
            let (input, signature) = token.rsplit_once('.').unwrap_or((&token, ""));
            format!("{input}.{}", "A".repeat(signature.len()))
        }
    }
}
