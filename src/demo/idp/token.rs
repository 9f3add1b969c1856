//! `POST /token`: client authentication (`client_secret_basic`, `client_secret_post`, or a
//! public client's `client_id` alone), then the `authorization_code` grant with PKCE and the
//! `refresh_token` grant with rotation (RFC 6749 §4.1.3, §6; RFC 7636 §4.6). Errors are
//! RFC 6749 §5.2 JSON. While a `TokenFault` is set, answers are spoiled as it says.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::form::{form_decode, method_not_allowed, oauth_error, random_value, read_form, Params};
use super::state::{Grant, OidcClient, OpenIdProvider, RefreshGrant, TokenFault};
use super::tokens::{access_token, id_token, AccessClaims, IdClaims};
use crate::edge::body::{full, Body};

/// Parameters that must not be repeated (RFC 6749 §3.2).
const SINGLE: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
];

/// The `HugeBody` fault's size: far above what a token response needs.
const HUGE_BODY: usize = 8 * 1024 * 1024;

/// The `Hang` fault's wait: longer than any client timeout.
const HANG: Duration = Duration::from_secs(3600);

/// Why a token request is refused; `into_response` is the one place that writes the answer.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// The client tried Basic authentication: a 401 then carries a Basic challenge.
    basic_tried: bool,
}

impl Refusal {
    fn into_response(self) -> Response<Body> {
        let mut response = oauth_error(self.status, self.error, &self.description);
        if self.status == StatusCode::UNAUTHORIZED && self.basic_tried {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authgate-demo-idp\""),
            );
        }
        response
    }
}

fn bad_request(error: &'static str, description: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        description: description.to_string(),
        basic_tried: false,
    }
}

fn invalid_client(description: &str, basic_tried: bool) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: description.to_string(),
        basic_tried,
    }
}

pub async fn answer(op: &OpenIdProvider, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    op.token_requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let params = match read_form(&parts.headers, body).await {
        Ok(params) => params,
        Err(why) => return bad_request("invalid_request", why).into_response(),
    };
    if params.get("grant_type") == Some("refresh_token") {
        op.refresh_grants.fetch_add(1, Ordering::SeqCst);
    }
    let fault = op.lock().fault;
    if let Some(answer) = transport_fault(fault).await {
        return answer;
    }
    grant(op, &parts.headers, &params, fault).unwrap_or_else(Refusal::into_response)
}

fn grant(
    op: &OpenIdProvider,
    headers: &HeaderMap,
    params: &Params,
    fault: Option<TokenFault>,
) -> Result<Response<Body>, Refusal> {
    if let Some(name) = params.repeated(SINGLE) {
        return Err(bad_request(
            "invalid_request",
            &format!("{name} is repeated"),
        ));
    }
    let client = authenticate(op, headers, params)?;
    let (grant, nonce) = match params.get("grant_type") {
        None => return Err(bad_request("invalid_request", "grant_type is missing")),
        Some("authorization_code") => code_grant(op, &client, params)?,
        Some("refresh_token") => (refresh_grant(op, &client, params)?, None),
        Some(_) => {
            return Err(bad_request(
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            ))
        }
    };
    issue(op, &client, &grant, nonce.as_deref(), fault)
}

/// The faults that answer before the request is looked at.
async fn transport_fault(fault: Option<TokenFault>) -> Option<Response<Body>> {
    let json_body = |body: String| {
        let mut response = Response::new(full(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    match fault? {
        TokenFault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = match code {
                400 => "invalid_grant",
                401 => "invalid_client",
                _ => "temporarily_unavailable",
            };
            Some(oauth_error(status, error, "fault injected by the test"))
        }
        TokenFault::Hang => {
            tokio::time::sleep(HANG).await;
            Some(bad_request("temporarily_unavailable", "hung").into_response())
        }
        TokenFault::Slow(millis) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            None
        }
        TokenFault::Garbage => Some(json_body("<html>this is not JSON</html>".to_string())),
        TokenFault::HugeBody => {
            let mut body = String::with_capacity(HUGE_BODY + 64);
            body.push_str("{\"access_token\":\"");
            body.extend(std::iter::repeat_n('A', HUGE_BODY));
            body.push_str("\",\"token_type\":\"Bearer\",\"expires_in\":300}");
            Some(json_body(body))
        }
        _ => None,
    }
}

/// Who is calling (RFC 6749 §2.3): exactly one authentication method, or none for a public
/// client that names itself.
fn authenticate(
    op: &OpenIdProvider,
    headers: &HeaderMap,
    params: &Params,
) -> Result<OidcClient, Refusal> {
    if let Some(kind) = params.get("client_assertion_type") {
        if headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some() {
            return Err(bad_request(
                "invalid_request",
                "use one client authentication method, not two",
            ));
        }
        if kind != CLIENT_ASSERTION_TYPE {
            return Err(invalid_client("unsupported client_assertion_type", false));
        }
        return client_by_assertion(op, params);
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (client_id, secret, basic) = match authorization {
        Some(value) => {
            let (scheme, credentials) = value.split_once(' ').unwrap_or((&value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(invalid_client(
                    "only Basic client authentication is supported",
                    true,
                ));
            }
            let decoded = STANDARD
                .decode(credentials.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| invalid_client("malformed Basic credentials", true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| invalid_client("malformed Basic credentials", true))?;
            if params.get("client_secret").is_some() {
                return Err(bad_request(
                    "invalid_request",
                    "use one client authentication method, not two",
                ));
            }
            // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
            let (id, secret) = (form_decode(id), form_decode(secret));
            if params.get("client_id").is_some_and(|named| named != id) {
                return Err(bad_request(
                    "invalid_request",
                    "client_id differs from the authenticated client",
                ));
            }
            (id, Some(secret), true)
        }
        None => match params.get("client_id") {
            Some(id) => (
                id.to_string(),
                params.get("client_secret").map(str::to_string),
                false,
            ),
            None => return Err(invalid_client("client authentication is required", false)),
        },
    };
    let client = op
        .lock()
        .clients
        .get(&client_id)
        .cloned()
        .ok_or_else(|| invalid_client("client authentication failed", basic))?;
    let authenticated = match (&client.client_secret, &secret) {
        (Some(expected), Some(given)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes())
                .is_ok()
        }
        (None, None) => true,
        // A confidential client without its secret, or a public client offering one.
        _ => false,
    };
    if !authenticated {
        return Err(invalid_client("client authentication failed", basic));
    }
    Ok(client)
}

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `private_key_jwt` (OIDC Core §9, RFC 7523): a JWT signed with the client's registered key,
/// `iss` = `sub` = the client, `aud` naming this token endpoint (or the issuer), not expired,
/// each `jti` once.
fn client_by_assertion(op: &OpenIdProvider, params: &Params) -> Result<OidcClient, Refusal> {
    let refused = || invalid_client("client assertion refused", false);
    let assertion = params.get("client_assertion").ok_or_else(refused)?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| refused())?;
    let unverified: serde_json::Value = assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(refused)?;
    let client_id = unverified["iss"].as_str().ok_or_else(refused)?.to_string();
    if params
        .get("client_id")
        .is_some_and(|named| named != client_id)
    {
        return Err(refused());
    }
    let (client, jwk) = {
        let state = op.lock();
        (
            state.clients.get(&client_id).cloned(),
            state.client_keys.get(&client_id).cloned(),
        )
    };
    let (client, jwk) = client.zip(jwk).ok_or_else(refused)?;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).map_err(|_| refused())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| refused())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[format!("{}/token", op.issuer), op.issuer.clone()]);
    validation.set_issuer(&[&client_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .map_err(|_| refused())?
        .claims;
    if claims["sub"].as_str() != Some(client_id.as_str()) {
        return Err(refused());
    }
    let jti = claims["jti"].as_str().ok_or_else(refused)?.to_string();
    let mut state = op.lock();
    state
        .used_assertions
        .retain(|_, at| at.elapsed() < Duration::from_secs(600));
    if state.used_assertions.insert(jti, Instant::now()).is_some() {
        return Err(refused());
    }
    Ok(client)
}

fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The grant an authorization code stands for, and the nonce its ID token must carry.
fn code_grant(
    op: &OpenIdProvider,
    client: &OidcClient,
    params: &Params,
) -> Result<(Grant, Option<String>), Refusal> {
    let (Some(code), Some(redirect_uri), Some(verifier)) = (
        params.get("code"),
        params.get("redirect_uri"),
        params.get("code_verifier"),
    ) else {
        return Err(bad_request(
            "invalid_request",
            "code, redirect_uri and code_verifier are required",
        ));
    };
    if !valid_verifier(verifier) {
        return Err(bad_request("invalid_request", "code_verifier is malformed"));
    }
    let mut state = op.lock();
    let Some(entry) = state.codes.get_mut(code) else {
        return Err(bad_request("invalid_grant", "unknown or expired code"));
    };
    if entry.used {
        let family = entry.grant.family.clone();
        state.revoke_family(&family);
        return Err(bad_request("invalid_grant", "the code was already used"));
    }
    // Any attempt consumes the code, failed or not: a code is good for one try.
    entry.used = true;
    let entry = entry.clone();
    if entry.expires_at <= Instant::now() {
        return Err(bad_request("invalid_grant", "the code expired"));
    }
    if entry.client_id != client.client_id {
        return Err(bad_request(
            "invalid_grant",
            "the code was issued to another client",
        ));
    }
    if entry.redirect_uri != redirect_uri {
        return Err(bad_request(
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        ));
    }
    if pkce_s256(verifier) != entry.code_challenge {
        return Err(bad_request(
            "invalid_grant",
            "code_verifier does not match code_challenge",
        ));
    }
    let Some(session) = state.session_by_sid(&entry.grant.sid) else {
        return Err(bad_request("invalid_grant", "the session ended"));
    };
    session.clients.insert(client.client_id.clone());
    Ok((entry.grant, Some(entry.nonce)))
}

/// The grant a refresh token carries, rotating the token out.
fn refresh_grant(
    op: &OpenIdProvider,
    client: &OidcClient,
    params: &Params,
) -> Result<Grant, Refusal> {
    let Some(token) = params.get("refresh_token") else {
        return Err(bad_request("invalid_request", "refresh_token is required"));
    };
    let mut state = op.lock();
    state.purge();
    if let Some((family, _)) = state.retired_refresh_tokens.get(token).cloned() {
        state.revoke_family(&family);
        return Err(bad_request(
            "invalid_grant",
            "the refresh token was already used",
        ));
    }
    let Some(entry) = state.refresh_tokens.get(token).cloned() else {
        return Err(bad_request(
            "invalid_grant",
            "unknown, expired or revoked refresh token",
        ));
    };
    if entry.client_id != client.client_id {
        return Err(bad_request(
            "invalid_grant",
            "the refresh token was issued to another client",
        ));
    }
    let mut grant = entry.grant.clone();
    if let Some(scope) = params.get("scope") {
        let granted: Vec<&str> = entry.grant.scope.split(' ').collect();
        if !scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .all(|s| granted.contains(&s))
        {
            return Err(bad_request(
                "invalid_scope",
                "scope exceeds the original grant",
            ));
        }
        grant.scope = scope.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    state.refresh_tokens.remove(token);
    state
        .retired_refresh_tokens
        .insert(token.to_string(), (grant.family.clone(), entry.expires_at));
    Ok(grant)
}

/// Signs the tokens of a successful grant and stores the new refresh token.
fn issue(
    op: &OpenIdProvider,
    client: &OidcClient,
    grant: &Grant,
    nonce: Option<&str>,
    fault: Option<TokenFault>,
) -> Result<Response<Body>, Refusal> {
    let mut state = op.lock();
    let Some(signer) = state.signer.clone() else {
        return Err(Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the IdP has no signing key (set_signing_key))".into(),
            basic_tried: false,
        });
    };
    let extra = state.user_claims.get(&grant.subject).cloned();
    let access = access_token(
        &signer,
        &AccessClaims {
            issuer: &op.issuer,
            audience: &state.access_audience,
            client_id: &client.client_id,
            grant,
            lifetime: state.access_lifetime,
            extra: extra.as_ref(),
        },
    );
    let id = id_token(
        &signer,
        &IdClaims {
            issuer: &op.issuer,
            client_id: &client.client_id,
            grant,
            nonce,
            access_token: &access,
            lifetime: state.id_lifetime,
            extra: extra.as_ref(),
        },
        fault,
    );
    let refresh = random_value();
    let lifetime = state.refresh_lifetime;
    state.refresh_tokens.insert(
        refresh.clone(),
        RefreshGrant {
            client_id: client.client_id.clone(),
            grant: grant.clone(),
            expires_at: Instant::now() + lifetime,
        },
    );
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.access_lifetime.as_secs(),
        "id_token": id,
        "refresh_token": refresh,
        "scope": grant.scope,
    });
    if let Some(map) = body.as_object_mut() {
        match fault {
            Some(TokenFault::NoIdToken) => {
                map.remove("id_token");
            }
            Some(TokenFault::NoRefreshToken) => {
                map.remove("refresh_token");
                state.refresh_tokens.remove(&refresh);
            }
            _ => {}
        }
    }
    let mut response = crate::edge::body::json(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(valid_verifier(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a+".repeat(30)));
    }
}
