//! Ending sessions: `GET|POST /end_session` (OpenID RP-Initiated Logout 1.0), back-channel
//! logout tokens POSTed to relying parties (OpenID Back-Channel Logout 1.0), and
//! `POST /demo/backchannel`, an IdP-initiated logout a human can trigger. A
//! `post_logout_redirect_uri` is followed only when registered for the client named.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::form::{
    cookie, encode, error_page, method_not_allowed, page, read_form, redirect, set_cookie,
    with_query, Params,
};
use super::state::{Delivery, LogoutTokenTweak, OpenIdProvider, Session, SESSION_COOKIE};
use super::tokens::logout_token;
use crate::edge::body::Body;

/// How long a relying party may take to answer a back-channel logout.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The request's parameters: the query, and for POST the form body too.
async fn params_of(req: Request<Incoming>) -> Result<(http::request::Parts, Params), &'static str> {
    let (parts, body) = req.into_parts();
    let mut text = parts.uri.query().unwrap_or_default().to_string();
    let has_form = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    if parts.method == Method::POST && has_form {
        let form = read_form(&parts.headers, body).await?;
        // Re-joined so one parser sees query and body together (and a repeat across them).
        for (name, value) in form.pairs() {
            text.push('&');
            text.push_str(&encode(name));
            text.push('=');
            text.push_str(&encode(value));
        }
    }
    Ok((parts, Params::parse(&text)))
}

pub async fn end_session(op: &OpenIdProvider, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return method_not_allowed("GET, POST");
    }
    op.end_session_calls.fetch_add(1, Ordering::SeqCst);
    let (parts, params) = match params_of(req).await {
        Ok(found) => found,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, why),
    };
    let bad = |message: &str| error_page(StatusCode::BAD_REQUEST, message);
    if let Some(name) = params.repeated(&[
        "id_token_hint",
        "client_id",
        "post_logout_redirect_uri",
        "state",
    ]) {
        return bad(&format!("The parameter {name} is repeated."));
    }
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(token) => {
            let claims = op.signer().and_then(|signer| signer.verify(token));
            match claims.filter(|c| c["iss"].as_str() == Some(op.issuer.as_str())) {
                Some(claims) => Some(claims),
                None => return bad("The id_token_hint was not issued here."),
            }
        }
    };
    let hinted_client = hint.as_ref().and_then(|claims| match &claims["aud"] {
        Value::String(aud) => Some(aud.clone()),
        Value::Array(auds) => auds.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    });
    let client_id = match (params.get("client_id"), hinted_client) {
        (Some(named), Some(hinted)) if named != hinted => {
            return bad("The client_id is not the id_token_hint's audience.")
        }
        (Some(named), _) => Some(named.to_string()),
        (None, hinted) => hinted,
    };
    let target = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let registered = client_id.as_ref().is_some_and(|id| {
                op.lock()
                    .clients
                    .get(id)
                    .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri))
            });
            if !registered {
                return bad("The post_logout_redirect_uri is not registered for this client.");
            }
            Some(uri.to_string())
        }
    };
    let hinted_sid = hint
        .as_ref()
        .and_then(|claims| claims["sid"].as_str().map(str::to_string));
    let (ended, notify) = {
        let mut state = op.lock();
        let mut ended = Vec::new();
        if let Some(cookie_value) = cookie(&parts.headers, SESSION_COOKIE) {
            if let Some(sid) = state.sessions.get(&cookie_value).map(|s| s.sid.clone()) {
                ended.extend(state.end_sessions(Some(&sid), None));
            }
        }
        if let Some(sid) = &hinted_sid {
            ended.extend(state.end_sessions(Some(sid), None));
        }
        (ended, state.backchannel_on_end_session)
    };
    if notify {
        notify_clients(op, &ended).await;
    }
    let mut response = match target {
        Some(uri) => {
            let state = params.get("state");
            let pairs: Vec<(&str, &str)> = state.map(|s| ("state", s)).into_iter().collect();
            redirect(&with_query(&uri, &pairs))
        }
        None => page(
            StatusCode::OK,
            "Signed out",
            "<p>You are signed out of the demo IdP.</p>",
        ),
    };
    set_cookie(
        &mut response,
        &format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
}

/// Tells every client that took part in `sessions` and has a back-channel URI.
async fn notify_clients(op: &OpenIdProvider, sessions: &[Session]) {
    for session in sessions {
        for client_id in &session.clients {
            let has_uri = op
                .lock()
                .clients
                .get(client_id)
                .is_some_and(|c| c.backchannel_logout_uri.is_some());
            if has_uri {
                let _ =
                    backchannel_logout(op, client_id, Some(&session.sid), Some(&session.subject))
                        .await;
            }
        }
    }
}

/// `POST /demo/backchannel?sid=...|sub=...[&client_id=...]`: ends the matching IdP sessions
/// (revoking their refresh tokens) and tells `client_id`, or every client of those sessions.
pub async fn demo_trigger(op: &OpenIdProvider, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let params = match params_of(req).await {
        Ok((_, params)) => params,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, why),
    };
    let (sid, sub) = (params.get("sid"), params.get("sub"));
    if sid.is_none() && sub.is_none() {
        return crate::edge::body::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "name a session: sid=... or sub=..."}),
        );
    }
    let ended = op.lock().end_sessions(sid, sub);
    let before = op.lock().deliveries.len();
    match params.get("client_id") {
        Some(client_id) => {
            let _ = backchannel_logout(op, client_id, sid, sub).await;
        }
        None => notify_clients(op, &ended).await,
    }
    let deliveries: Vec<Value> = op.lock().deliveries[before..]
        .iter()
        .map(|d| match &d.outcome {
            Ok(status) => json!({"client_id": d.client_id, "status": status}),
            Err(why) => json!({"client_id": d.client_id, "error": why}),
        })
        .collect();
    crate::edge::body::json(
        StatusCode::OK,
        &json!({"ended_sessions": ended.len(), "deliveries": deliveries}),
    )
}

/// Signs a logout token for `client_id` and POSTs it to the client's back-channel URI;
/// records the delivery and returns the status the client answered.
pub async fn backchannel_logout(
    op: &OpenIdProvider,
    client_id: &str,
    sid: Option<&str>,
    sub: Option<&str>,
) -> Result<u16, String> {
    let prepared = {
        let state = op.lock();
        match (state.clients.get(client_id), &state.signer) {
            (None, _) => Err(format!("client {client_id} is not registered")),
            (Some(_), None) => Err("the IdP has no signing key (set_signing_key)".to_string()),
            (Some(client), Some(signer)) => match &client.backchannel_logout_uri {
                None => Err(format!("client {client_id} has no backchannel_logout_uri")),
                Some(uri) => Ok((
                    uri.clone(),
                    logout_token(
                        signer,
                        &op.issuer,
                        client_id,
                        sid,
                        sub,
                        LogoutTokenTweak::None,
                    ),
                )),
            },
        }
    };
    let outcome = match prepared {
        Ok((uri, token)) => deliver(&uri, &token).await,
        Err(why) => Err(why),
    };
    op.lock().deliveries.push(Delivery {
        client_id: client_id.to_string(),
        sid: sid.map(str::to_string),
        sub: sub.map(str::to_string),
        outcome: outcome.clone(),
    });
    outcome
}

/// POSTs `logout_token=<token>` to `uri` (plain HTTP: the demo IdP talks to loopback RPs).
pub async fn deliver(uri: &str, token: &str) -> Result<u16, String> {
    let parsed: http::Uri = uri
        .parse()
        .map_err(|_| format!("{uri} is not a valid URI"))?;
    if parsed.scheme_str() != Some("http") {
        return Err(format!(
            "{uri}: only http:// back-channel URIs are supported"
        ));
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(parsed)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "logout_token={}",
            encode(token)
        ))))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = tokio::time::timeout(DELIVERY_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("{uri} did not answer within {DELIVERY_TIMEOUT:?}"))?
        .map_err(|e| format!("{uri}: {e}"))?;
    let status = response.status().as_u16();
    // Read the (small) answer so the connection closes cleanly; its content does not matter.
    let _ = tokio::time::timeout(
        DELIVERY_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), 64 * 1024).collect(),
    )
    .await;
    Ok(status)
}
