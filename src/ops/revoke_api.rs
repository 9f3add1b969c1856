//! The revocation API: add, remove and list revocations, on its own listener (loopback by
//! default, never the admin listener Kubernetes exposes on the pod IP). Every request must carry
//! the admin bearer token, compared in constant time; anything else is 401 and logged. Every
//! change, and every refusal, writes one audit line (target `authgate::audit`: who, what, when).
//! With Redis the change goes to Redis and reaches every replica; without, it changes this
//! replica's list only, and the answer says so. The token never reaches a log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::denylist::Entry;
use crate::auth::denylist_live::Change;
use crate::auth::denylist_redis::Written;
use crate::auth::jwt::now_unix;
use crate::auth::keys::sha256;
use crate::auth::revocations::Shared;
use crate::edge::body::{json, Body};
use crate::edge::server::{PeerInfo, RequestHandler};
use crate::ops::metrics::Metrics;

pub const PATH: &str = "/v1/revocations";
/// An entry is a few hundred bytes; anything much larger is not an entry.
const MAX_BODY_BYTES: usize = 64 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent by `authgate revoke` so the audit line names a person, not only an address.
pub const OPERATOR_HEADER: &str = "x-authgate-operator";
const REALM: &str = "authgate-revocation";

#[derive(Clone)]
pub struct RevokeApi {
    pub shared: Shared,
    /// SHA-256 of the admin token: compared digest to digest, so neither the time taken nor a
    /// length difference tells a caller how much of a guess was right.
    pub token_digest: [u8; 32],
    pub metrics: Arc<Metrics>,
}

impl RevokeApi {
    pub fn new(shared: Shared, token: &str, metrics: Arc<Metrics>) -> Self {
        RevokeApi {
            shared,
            token_digest: sha256(&[token.as_bytes()]),
            metrics,
        }
    }
}

impl RequestHandler for RevokeApi {
    fn handle(
        self,
        req: Request<Incoming>,
        peer: PeerInfo,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        self.answer(req, peer)
    }
}

/// Why a request was refused, as the JSON body names it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    detail: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Refusal {
            status,
            reason,
            detail: None,
        }
    }

    fn with(status: StatusCode, reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            detail: Some(detail.into()),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut body = serde_json::json!({"status": self.status.as_u16(), "reason": self.reason});
        if let Some(detail) = self.detail {
            body["detail"] = detail.into();
        }
        let mut response = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.reason == "missing_credential" {
                format!("Bearer realm=\"{REALM}\"")
            } else {
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The operator's self-declared name, for the audit line: short and plain, or `-`.
fn operator(req: &Request<Incoming>) -> String {
    req.headers()
        .get(OPERATOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-+".contains(&b))
        })
        .unwrap_or("-")
        .to_string()
}

impl RevokeApi {
    fn scope(&self) -> &'static str {
        match self.shared {
            Shared::Redis(_) => "fleet",
            Shared::Local(_) => "local",
        }
    }

    fn authenticate(&self, req: &Request<Incoming>) -> Result<(), Refusal> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "missing_credential"));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .unwrap_or_default();
        if constant_time_eq(&sha256(&[presented]), &self.token_digest) {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::UNAUTHORIZED, "invalid_credential"))
        }
    }

    async fn answer(self, req: Request<Incoming>, peer: PeerInfo) -> Response<Body> {
        let op = match (req.uri().path(), req.method()) {
            (PATH, &Method::GET) => "list",
            (PATH, &Method::POST) => "add",
            (PATH, &Method::DELETE) => "remove",
            _ => "other",
        };
        let who = operator(&req);
        let client = peer.addr.ip();
        if let Err(refusal) = self.authenticate(&req) {
            tracing::warn!(
                target: "authgate::audit",
                op,
                operator = %who,
                %client,
                reason = refusal.reason,
                "revocation API request refused: no valid admin token"
            );
            self.metrics.revocation_api(op, "unauthorized");
            return refusal.into_response();
        }
        if req.uri().path() != PATH {
            self.metrics.revocation_api(op, "invalid");
            return Refusal::new(StatusCode::NOT_FOUND, "no_route").into_response();
        }
        let outcome = match op {
            "list" => self.list().await,
            "add" | "remove" => self.change(req, op, &who, client).await,
            _ => {
                let mut response =
                    Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                self.metrics.revocation_api(op, "invalid");
                return response;
            }
        };
        match outcome {
            Ok(response) => {
                self.metrics.revocation_api(op, "ok");
                response
            }
            Err(refusal) => {
                let result = if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                    "unavailable"
                } else {
                    "invalid"
                };
                self.metrics.revocation_api(op, result);
                refusal.into_response()
            }
        }
    }

    async fn list(&self) -> Result<Response<Body>, Refusal> {
        let entries = match &self.shared {
            Shared::Redis(redis) => redis.records().await.map_err(|error| {
                tracing::warn!(redis = %redis.display(), %error, "revocation API cannot list Redis");
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            })?,
            Shared::Local(local) => local
                .to_denylist()
                .entries()
                .iter()
                .map(Entry::to_json)
                .collect(),
        };
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"scope": self.scope(), "count": entries.len(), "entries": entries}),
        ))
    }

    async fn change(
        &self,
        req: Request<Incoming>,
        op: &'static str,
        who: &str,
        client: std::net::IpAddr,
    ) -> Result<Response<Body>, Refusal> {
        let body = read_body(req).await?;
        let now = now_unix();
        let (entry, reason) = read_entry(op, &body, now)?;
        self.apply(op, entry, reason, who, client, now).await
    }

    /// Makes a validated change and answers it; every kind of entry takes this one path.
    async fn apply(
        &self,
        op: &'static str,
        entry: Entry,
        reason: Option<String>,
        who: &str,
        client: std::net::IpAddr,
        now: i64,
    ) -> Result<Response<Body>, Refusal> {
        let change = if op == "add" {
            Change::Add(entry.clone())
        } else {
            Change::Remove(entry.target.clone())
        };
        let found = match &self.shared {
            Shared::Redis(redis) => {
                let mut record = entry.to_json();
                if let Some(reason) = &reason {
                    record["reason"] = reason.as_str().into();
                }
                record["by"] = who.into();
                record["at"] = now.into();
                match redis.write(&change, record).await {
                    Ok(Written::Added) => true,
                    Ok(Written::Removed { found }) => found,
                    Err(error) => {
                        tracing::warn!(
                            target: "authgate::audit",
                            op, operator = %who, %client, scope = "fleet",
                            kind = entry.target.kind(),
                            entry = %entry.to_json(),
                            %error,
                            "revocation change failed: Redis unavailable"
                        );
                        return Err(Refusal::with(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "redis_unavailable",
                            "the change was not made; retry once Redis is reachable",
                        ));
                    }
                }
            }
            Shared::Local(local) => {
                let removed = local.apply(std::slice::from_ref(&change), now);
                op == "add" || removed > 0
            }
        };
        tracing::info!(
            target: "authgate::audit",
            op,
            operator = %who,
            %client,
            scope = self.scope(),
            kind = entry.target.kind(),
            entry = %entry.to_json(),
            reason = reason.as_deref().unwrap_or(""),
            found,
            at = now,
            "revocation {op}"
        );
        let status = match (op, found) {
            ("add", _) => "revoked",
            (_, true) => "removed",
            (_, false) => "not_found",
        };
        let mut body = serde_json::json!({
            "status": status,
            "scope": self.scope(),
            "entry": entry.to_json(),
        });
        if let Shared::Local(_) = self.shared {
            body["note"] = "no Redis is configured: this change applies to this replica only and \
                            is lost when it restarts"
                .into();
        }
        Ok(json(StatusCode::OK, &body))
    }
}

/// A change request's body, validated before anything is touched: the entry (any kind, by
/// `Entry::from_json`'s rules: known fields only, each non-empty, at most 1 KiB, no control
/// characters), an add's `expires` not in the past, and the operator's free-text reason with
/// control characters dropped and cut to 512 characters.
fn read_entry(op: &str, body: &[u8], now: i64) -> Result<(Entry, Option<String>), Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::with(StatusCode::BAD_REQUEST, "invalid_entry", e.to_string()))?;
    let entry = Entry::from_json(&value)
        .map_err(|e| Refusal::with(StatusCode::BAD_REQUEST, "invalid_entry", e))?;
    if op == "add" && entry.expires.is_some_and(|at| at <= now) {
        return Err(Refusal::with(
            StatusCode::BAD_REQUEST,
            "invalid_entry",
            "expires is in the past: the entry would never apply",
        ));
    }
    let reason = value
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect::<String>()
        });
    Ok((entry, reason))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| Refusal::new(StatusCode::REQUEST_TIMEOUT, "request_body_timeout"))?;
    collected
        .map(|c| c.to_bytes())
        .map_err(|_| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::auth::denylist::{Denylist, Revocation, Target};
    use crate::auth::denylist_live::LiveDenylist;
    use crate::auth::jwt::VerifiedToken;

    const ISS: &str = "https://idp.example.com/";
    const NOW: i64 = 1_780_000_000;
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn local_api() -> (RevokeApi, Arc<LiveDenylist>) {
        let list = Arc::new(LiveDenylist::new(Denylist::empty()));
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let api = RevokeApi::new(
            Shared::Local(list.clone()),
            "an-admin-token-of-at-least-32-bytes!",
            metrics,
        );
        (api, list)
    }

    async fn body_of(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn in_session(sid: &str) -> VerifiedToken {
        let mut token = VerifiedToken::with_claims(serde_json::json!({"sub": "u", "sid": sid}));
        token.issuer = ISS.into();
        token
    }

    fn refusal(op: &str, body: serde_json::Value) -> Refusal {
        match read_entry(op, body.to_string().as_bytes(), NOW) {
            Ok(entry) => panic!("{body} was accepted as {entry:?}"),
            Err(refusal) => refusal,
        }
    }

    #[test]
    fn a_sid_entry_is_validated_like_the_others() {
        let body = serde_json::json!({
            "kind": "sid", "issuer": ISS, "sid": "5b1c", "expires": NOW + 60,
            "reason": "back-channel\nlogout",
        });
        let (entry, reason) = read_entry("add", body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(
            entry.target,
            Target::Session {
                issuer: ISS.into(),
                sid: "5b1c".into()
            }
        );
        assert_eq!(entry.expires, Some(NOW + 60));
        assert_eq!(reason.as_deref(), Some("back-channellogout"));

        // An add must still apply; a removal names the target and ignores its expiry.
        let past = serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "s", "expires": NOW});
        let refused = refusal("add", past.clone());
        assert_eq!(
            (refused.status, refused.reason),
            (StatusCode::BAD_REQUEST, "invalid_entry")
        );
        assert!(refused.detail.unwrap().contains("past"));
        assert!(read_entry("remove", past.to_string().as_bytes(), NOW).is_ok());

        for (bad, needle) in [
            (serde_json::json!({"kind": "sid", "issuer": ISS}), "sid"),
            (
                serde_json::json!({"kind": "sid", "issuer": ISS, "sid": ""}),
                "empty",
            ),
            (
                serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "s".repeat(1025)}),
                "1024",
            ),
            (
                serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "s", "jti": "j"}),
                "jti",
            ),
            (
                serde_json::json!({"kind": "sid", "issuer": ISS, "sids": "s"}),
                "sids",
            ),
        ] {
            let refused = refusal("add", bad.clone());
            assert_eq!(refused.reason, "invalid_entry", "{bad}");
            let detail = refused.detail.unwrap();
            assert!(detail.contains(needle), "{bad}: {detail}");
        }
    }

    #[tokio::test]
    async fn a_sid_is_revoked_listed_and_unrevoked_through_the_api() {
        let (api, list) = local_api();
        let body = serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "5b1c"});
        let (entry, reason) = read_entry("add", body.to_string().as_bytes(), NOW).unwrap();
        let answer = body_of(
            api.apply("add", entry.clone(), reason, "op", CLIENT, NOW)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer["status"], "revoked");
        assert_eq!(answer["scope"], "local");
        assert_eq!(answer["entry"], body);
        assert_eq!(
            list.check(&in_session("5b1c"), NOW),
            Some(Revocation::Session)
        );
        assert_eq!(list.check(&in_session("other"), NOW), None);

        let listed = body_of(api.list().await.unwrap()).await;
        assert_eq!(listed["count"], 1);
        assert_eq!(listed["entries"][0], body);

        for status in ["removed", "not_found"] {
            let answer = body_of(
                api.apply("remove", entry.clone(), None, "op", CLIENT, NOW)
                    .await
                    .map_err(|r| r.reason)
                    .unwrap(),
            )
            .await;
            assert_eq!(answer["status"], status);
        }
        assert_eq!(list.check(&in_session("5b1c"), NOW), None);
        assert!(list.is_empty());
    }
}
