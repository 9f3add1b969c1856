//! `authgate explain`: why a request would be allowed or refused, step by step, offline. The
//! verdict is [`decide`]'s, the very function the proxy and forward-auth run; the steps around
//! it only describe what that decision saw (the normalised path, the routes that did not match
//! and why, the token's unverified header and claims, each verification rule, the denylist,
//! each policy requirement, the headers that would be injected).
//!
//! It never prints a token's signature, a cookie value, an `Authorization` value or a secret.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue, Method, Uri};
use serde_json::{json, Value};

use crate::auth::jwt::ProviderKeys;
use crate::auth::jwt::{VerifyError, RULES};
use crate::auth::keys::KeySet;
use crate::config::build_auth::ProviderKeySettings;
use crate::config::values::HostPattern;
use crate::config::Config;
use crate::decide::decision::{decide, Trace};
use crate::error::GatewayError;
use crate::ops::metrics::Metrics;
use crate::proxy::route::Route;
use crate::state::Snapshot;

/// The request to explain, as an operator describes it.
pub struct Question {
    pub method: Method,
    pub url: Uri,
    /// Extra request headers, as `Name: value`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// One step of the trace.
pub struct Step {
    pub name: &'static str,
    /// `ok`, `failed`, `skipped` or `info`.
    pub outcome: &'static str,
    pub lines: Vec<String>,
}

pub struct Answer {
    pub steps: Vec<Step>,
    pub status: u16,
    pub reason: &'static str,
    pub allowed: bool,
}

/// Loads nothing from the network when `jwks` is given: every JWKS provider uses those keys.
pub async fn explain(
    mut config: Config,
    question: Question,
    jwks: Option<KeySet>,
) -> Result<Answer, String> {
    let jwks = jwks.map(Arc::new);
    if let Some(set) = &jwks {
        for provider in &mut config.providers {
            if matches!(provider.keys, ProviderKeySettings::Jwks(_)) {
                provider.keys = ProviderKeySettings::Fixed(set.clone());
            }
        }
    }
    let metrics = Metrics::register(&prometheus::Registry::new()).map_err(|e| e.to_string())?;
    let mut snapshot = Snapshot::build(&config, &metrics, None)?;
    // Explaining a request with a session must not spend its refresh token at the IdP.
    snapshot.logins.explain_only = true;
    // Live keys: give the first fetch a moment, as a starting gateway would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !snapshot.verifier.providers().iter().all(|p| p.is_ready())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let scheme = match question.url.scheme_str() {
        Some("https") => "https",
        Some("http") | None => "http",
        Some(other) => return Err(format!("--url scheme {other:?} is not http or https")),
    };
    let authority = question
        .url
        .authority()
        .ok_or("--url needs a host, e.g. https://api.example.com/orders")?
        .clone();
    let target = question
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut request = http::Request::builder()
        .method(question.method.clone())
        .uri(&target)
        .header(http::header::HOST, authority.as_str());
    for (name, value) in &question.headers {
        request = request.header(name, value);
    }
    if let Some(token) = &question.token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let (mut head, ()) = request
        .body(())
        .map_err(|e| format!("cannot build the request: {e}"))?
        .into_parts();
    let sent_headers: Vec<String> = head.headers.keys().map(|n| n.to_string()).collect();

    let mut trace = Trace::default();
    let outcome = decide(&snapshot, &mut head, scheme, &mut trace).await;

    let mut steps = Vec::new();
    steps.push(Step {
        name: "request",
        outcome: "info",
        lines: vec![
            format!(
                "{} {scheme}://{}{}",
                question.method,
                authority
                    .as_str()
                    .rsplit_once('@')
                    .map_or(authority.as_str(), |(_, host)| host),
                redact_query(&target)
            ),
            format!("headers sent: {}", sent_headers.join(", ")),
        ],
    });
    steps.push(match &trace.host {
        Some(host) => Step {
            name: "host",
            outcome: "ok",
            lines: vec![format!("canonical host: {host}")],
        },
        None => failed_or_skipped("host", &outcome, trace.path.is_none()),
    });
    steps.push(match &trace.path {
        Some(path) => Step {
            name: "path",
            outcome: "ok",
            lines: vec![format!("normalised: {path}")],
        },
        None => failed_or_skipped("path", &outcome, trace.host.is_none()),
    });
    steps.push(route_step(&snapshot, &trace, &question.method, &outcome));
    let route = trace.route.and_then(|i| snapshot.routes.routes().get(i));
    if let Some(route) = route {
        let mut lines = Vec::new();
        if !trace.removed_underscore.is_empty() {
            let names: Vec<&str> = trace
                .removed_underscore
                .iter()
                .map(|n| n.as_str())
                .collect();
            lines.push(format!("dropped (name holds '_'): {}", names.join(", ")));
        }
        if trace.removed_identity > 0 {
            lines.push(format!(
                "removed {} client-sent identity header(s) (a likely spoof)",
                trace.removed_identity
            ));
        }
        if lines.is_empty() {
            lines.push("nothing removed".into());
        }
        steps.push(Step {
            name: "header hygiene",
            outcome: "ok",
            lines,
        });
        steps.push(credential_step(route, &trace, question.token.as_deref()));
        let verified = verification_steps(
            &snapshot,
            &trace,
            question.token.as_deref(),
            &outcome,
            &mut steps,
        )
        .await;
        steps.push(policy_step(route, verified.as_deref(), &outcome));
    }
    if outcome.is_ok() {
        let injected: Vec<String> = snapshot
            .identity
            .injected_names()
            .filter_map(|name| {
                let value = head.headers.get(name)?.to_str().ok()?;
                Some(format!("{name}: {value}"))
            })
            .collect();
        steps.push(Step {
            name: "identity",
            outcome: "ok",
            lines: if injected.is_empty() {
                vec!["no identity headers (no authenticated caller)".into()]
            } else {
                injected
            },
        });
    }
    let (status, reason, allowed) = match &outcome {
        Ok(decision) => {
            let route = &snapshot.routes.routes()[decision.route];
            steps.push(Step {
                name: "result",
                outcome: "ok",
                lines: vec![format!(
                    "allowed: forwarded to {} as {}",
                    route.upstream.authority, decision.path
                )],
            });
            (200, "ok", true)
        }
        Err(error) => {
            steps.push(Step {
                name: "result",
                outcome: "failed",
                lines: vec![format!(
                    "refused: {} {}",
                    error.status().as_u16(),
                    error.reason()
                )],
            });
            (error.status().as_u16(), error.reason(), false)
        }
    };
    Ok(Answer {
        steps,
        status,
        reason,
        allowed,
    })
}

/// The target with every query value replaced: a query may carry an access token.
fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let names: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=…"),
            None => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", names.join("&"))
}

fn failed_or_skipped<T>(
    name: &'static str,
    outcome: &Result<T, GatewayError>,
    earlier_failed: bool,
) -> Step {
    match outcome {
        Err(error) if !earlier_failed || name == "host" => Step {
            name,
            outcome: "failed",
            lines: vec![format!("{} {}", error.status().as_u16(), error.reason())],
        },
        _ => Step {
            name,
            outcome: "skipped",
            lines: Vec::new(),
        },
    }
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(name) => name == host,
        HostPattern::Wildcard(parent) => {
            host.split_once('.').is_some_and(|(_, rest)| rest == parent)
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn route_step<T>(
    snapshot: &Snapshot,
    trace: &Trace,
    method: &Method,
    outcome: &Result<T, GatewayError>,
) -> Step {
    let Some(path) = &trace.path else {
        return Step {
            name: "route",
            outcome: "skipped",
            lines: Vec::new(),
        };
    };
    let host_name = trace
        .host
        .as_deref()
        .map(|h| crate::proxy::host::parse(h).map_or_else(|_| h.to_string(), |p| p.name));
    let mut lines = Vec::new();
    let winner = trace.route;
    let outcome_word = match (winner, outcome) {
        (Some(index), _) => {
            let route = &snapshot.routes.routes()[index];
            lines.push(format!(
                "matched route {:?}: {}",
                route.name,
                describe(route)
            ));
            "ok"
        }
        (None, Err(error)) => {
            lines.push(format!(
                "no route: {} {}",
                error.status().as_u16(),
                error.reason()
            ));
            "failed"
        }
        (None, Ok(_)) => "skipped",
    };
    // The nearest others: every route whose host or prefix fits, and why it was not taken.
    let mut others: Vec<(usize, &Route, String)> = Vec::new();
    for (index, route) in snapshot.routes.routes().iter().enumerate() {
        if Some(index) == winner {
            continue;
        }
        let host_ok = match (&route.host, &host_name) {
            (None, _) => true,
            (Some(pattern), Some(host)) => host_matches(pattern, host),
            (Some(_), None) => false,
        };
        let prefix_ok = prefix_matches(&route.prefix, path);
        if !host_ok && !prefix_ok {
            continue;
        }
        let why = if !host_ok {
            format!(
                "host {} does not match {}",
                route.host.as_ref().map_or("-".into(), |h| h.to_string()),
                host_name.as_deref().unwrap_or("(no host)")
            )
        } else if !prefix_ok {
            format!("prefix {} does not match {path}", route.prefix)
        } else if route
            .methods
            .as_ref()
            .is_some_and(|methods| !methods.contains(method))
        {
            format!("method {method} is not among its methods")
        } else {
            "a more specific route won (exact host > wildcard > any, then longest prefix)".into()
        };
        others.push((route.prefix.len(), route, why));
    }
    others.sort_by_key(|other| std::cmp::Reverse(other.0));
    for (_, route, why) in others.into_iter().take(5) {
        lines.push(format!("not {:?} ({}): {why}", route.name, describe(route)));
    }
    Step {
        name: "route",
        outcome: outcome_word,
        lines,
    }
}

fn describe(route: &Route) -> String {
    let host = route
        .host
        .as_ref()
        .map_or("any host".into(), |h| h.to_string());
    let methods = route.methods.as_ref().map_or("any method".into(), |m| {
        m.iter().map(Method::as_str).collect::<Vec<_>>().join("|")
    });
    format!(
        "{host}, prefix {}, {methods}, auth {:?}",
        route.prefix, route.auth.mode
    )
}

fn credential_step(route: &Route, trace: &Trace, token: Option<&str>) -> Step {
    let lines = match (trace.credential, token) {
        (Some(source), _) => vec![format!(
            "found in {} (value never printed)",
            match source {
                crate::auth::credential::Source::AuthorizationHeader => "Authorization: Bearer",
                crate::auth::credential::Source::Cookie => "the session cookie",
            }
        )],
        (None, Some(_)) if route.auth.mode == crate::config::file::AuthMode::Public => {
            vec!["public route: credentials are not read".into()]
        }
        (None, _) => vec!["none".into()],
    };
    Step {
        name: "credential",
        outcome: "info",
        lines,
    }
}

/// The token's header and claims as sent: unverified, for reading; never the signature.
fn unverified(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some((decode(parts.next())?, decode(parts.next())?))
}

async fn verification_steps<T>(
    snapshot: &Snapshot,
    trace: &Trace,
    token: Option<&str>,
    outcome: &Result<T, GatewayError>,
    steps: &mut Vec<Step>,
) -> Option<Arc<crate::auth::jwt::VerifiedToken>> {
    let token = token.filter(|_| trace.verify_attempted)?;
    let mut lines = Vec::new();
    if let Some((header, claims)) = unverified(token) {
        lines.push(format!("header (unverified): {header}"));
        let shown: serde_json::Map<String, Value> = claims
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                [
                    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "scope", "scp", "azp",
                    "typ",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        lines.push(format!("claims (unverified): {}", Value::Object(shown)));
        if let Some(issuer) = claims.get("iss").and_then(Value::as_str) {
            match snapshot
                .verifier
                .providers()
                .iter()
                .find(|p| &*p.issuer == issuer)
            {
                Some(provider) => {
                    let source = match &provider.keys {
                        ProviderKeys::Fixed(_) => "the --jwks file".to_string(),
                        ProviderKeys::Secret(_) => "its configured secret".to_string(),
                        ProviderKeys::Jwks(_) => "its JWKS (fetched live)".to_string(),
                    };
                    lines.push(format!(
                        "provider {:?} (by iss), algorithms {:?}, keys from {source}",
                        provider.name, provider.algorithms
                    ));
                }
                None => lines.push(format!("no provider has issuer {issuer:?}")),
            }
        }
    } else {
        lines.push("not a readable JWT".into());
    }
    steps.push(Step {
        name: "token",
        outcome: "info",
        lines,
    });
    // The same verification the decision ran, again, to name the rule that decided.
    let accepted = &snapshot.accepted[trace.route?];
    let result = snapshot.verifier.verify(token, accepted).await;
    let failed_rule = match &result {
        Ok(_) => None,
        Err(VerifyError::Token(error)) => Some((error.rule(), error.reason())),
        Err(VerifyError::KeysUnavailable) => Some((8, "keys_unavailable")),
    };
    let mut lines = Vec::new();
    for (index, rule) in RULES.iter().enumerate() {
        let mark = match failed_rule {
            None => "ok",
            Some((failed, _)) if index < failed => "ok",
            Some((failed, reason)) if index == failed => {
                lines.push(format!("FAILED {rule}: {reason}"));
                continue;
            }
            Some(_) => "not reached",
        };
        lines.push(format!("{mark:11} {rule}"));
    }
    if let Ok(token) = &result {
        if let Some(kid) = &token.kid {
            lines.push(format!("key id: {kid}"));
        }
    }
    steps.push(Step {
        name: "verify",
        outcome: if result.is_ok() { "ok" } else { "failed" },
        lines,
    });
    let verified = result.ok()?;
    let revoked = match outcome {
        Err(GatewayError::InvalidToken { reason, .. }) if reason.starts_with("revoked_") => {
            Some(*reason)
        }
        _ => None,
    };
    steps.push(Step {
        name: "denylist",
        outcome: if revoked.is_some() { "failed" } else { "ok" },
        lines: vec![match revoked {
            Some(reason) => format!("revoked: {reason}"),
            None => {
                let file = snapshot
                    .revocations
                    .file
                    .as_ref()
                    .map_or(0, |list| list.current().len());
                let shared = snapshot
                    .revocations
                    .shared
                    .as_ref()
                    .map(|shared| shared.source());
                format!(
                    "not revoked ({file} file entries{})",
                    shared.map_or(String::new(), |s| format!(", and the {s} list"))
                )
            }
        }],
    });
    revoked.is_none().then_some(verified)
}

fn policy_step<T>(
    route: &Route,
    token: Option<&crate::auth::jwt::VerifiedToken>,
    outcome: &Result<T, GatewayError>,
) -> Step {
    let requirements = route.auth.policy.explain(token);
    if requirements.is_empty() {
        return Step {
            name: "policy",
            outcome: "ok",
            lines: vec!["no requirements beyond a valid token".into()],
        };
    }
    let lines = requirements
        .into_iter()
        .map(|(requirement, held)| match held {
            Some(true) => format!("ok          {requirement}"),
            Some(false) => format!("FAILED      {requirement}"),
            None => format!("not reached {requirement}"),
        })
        .collect();
    let refused = matches!(outcome, Err(GatewayError::Forbidden { .. }));
    Step {
        name: "policy",
        outcome: if refused {
            "failed"
        } else if token.is_some() {
            "ok"
        } else {
            "skipped"
        },
        lines,
    }
}

impl Answer {
    pub fn to_json(&self) -> Value {
        json!({
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason,
            "steps": self.steps.iter().map(|s| json!({
                "step": s.name,
                "outcome": s.outcome,
                "details": s.lines,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            out.push_str(&format!("{:14} {}\n", step.name, step.outcome));
            for line in &step.lines {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out.push_str(&format!(
            "=> {} {} ({})\n",
            if self.allowed { "ALLOWED" } else { "DENIED" },
            self.status,
            self.reason
        ));
        out
    }
}
