//! `authgate revoke` and `authgate unrevoke`: the operator's side of the revocation API. It sends
//! one JSON request with the admin token from `AUTHGATE_REVOCATION_TOKEN` and prints the answer;
//! the exit status says whether the change was made.

use std::process::ExitCode;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::ops::revoke_api::{OPERATOR_HEADER, PATH};

pub const TOKEN_ENV: &str = "AUTHGATE_REVOCATION_TOKEN";
pub const DEFAULT_API: &str = "http://127.0.0.1:9902";

/// What to revoke, in the terms of the API's JSON.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Target {
    /// One token, by issuer and `jti`.
    Token {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        jti: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every token and gateway session of one IdP login session, by issuer and the OpenID
    /// Connect `sid` claim (what a back-channel logout names).
    Sid {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        sid: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every token of a user, or those issued before a moment ("log out everywhere").
    Subject {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
        /// Only tokens issued before this moment (unix seconds or RFC 3339).
        #[arg(long)]
        issued_before: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Every token signed with a provider's key.
    Key {
        /// The provider's configured name.
        #[arg(long)]
        provider: String,
        #[arg(long)]
        kid: String,
        #[command(flatten)]
        common: Common,
    },
    /// List the entries the API manages (`authgate revoke list`).
    List {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Until when the entry applies: unix seconds, RFC 3339 (2026-12-01T00:00:00Z) or a
    /// duration from now (12h). Set it no earlier than the token's exp plus the leeway.
    #[arg(long)]
    expires: Option<String>,
    /// Free text for the audit log and the stored entry.
    #[arg(long)]
    reason: Option<String>,
    /// The revocation API's base URL.
    #[arg(long, default_value = DEFAULT_API)]
    api: String,
    /// Your name in the audit log (default: $USER).
    #[arg(long)]
    operator: Option<String>,
}

/// Unix seconds from `1798761600`, `2026-12-01T00:00:00Z` or `12h` (from now).
fn moment(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(duration) = crate::config::values::parse_duration(text) {
        let seconds = i64::try_from(duration.0.as_secs()).unwrap_or(i64::MAX);
        return Ok(crate::auth::jwt::now_unix().saturating_add(seconds));
    }
    let datetime: toml::value::Datetime = text.parse().map_err(|_| {
        format!("{text:?} is not unix seconds, an RFC 3339 time or a duration such as 12h")
    })?;
    crate::auth::denylist_file::unix_seconds(&datetime)
}

fn request_of(
    target: &Target,
    remove: bool,
) -> Result<(Method, Option<serde_json::Value>, &Common), String> {
    let (mut body, common) = match target {
        Target::Token {
            issuer,
            jti,
            common,
        } => (
            serde_json::json!({"kind": "token", "issuer": issuer, "jti": jti}),
            common,
        ),
        Target::Sid {
            issuer,
            sid,
            common,
        } => (
            serde_json::json!({"kind": "sid", "issuer": issuer, "sid": sid}),
            common,
        ),
        Target::Subject {
            issuer,
            subject,
            issued_before,
            common,
        } => {
            let mut body =
                serde_json::json!({"kind": "subject", "issuer": issuer, "subject": subject});
            if let Some(at) = issued_before {
                body["issued_before"] = moment(at)?.into();
            }
            (body, common)
        }
        Target::Key {
            provider,
            kid,
            common,
        } => (
            serde_json::json!({"kind": "key", "provider": provider, "kid": kid}),
            common,
        ),
        Target::List { common } => {
            if remove {
                return Err("`unrevoke list` is not a thing; use `authgate revoke list`".into());
            }
            return Ok((Method::GET, None, common));
        }
    };
    if remove {
        return Ok((Method::DELETE, Some(body), common));
    }
    if let Some(expires) = &common.expires {
        body["expires"] = moment(expires)?.into();
    }
    if let Some(reason) = &common.reason {
        body["reason"] = reason.as_str().into();
    }
    Ok((Method::POST, Some(body), common))
}

pub fn main(target: &Target, remove: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(target, remove)) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("authgate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn call(target: &Target, remove: bool) -> Result<String, String> {
    let (method, body, common) = request_of(target, remove)?;
    let token = std::env::var(TOKEN_ENV)
        .map_err(|_| format!("set {TOKEN_ENV} to the revocation API's admin token"))?;
    let base = common.api.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(format!(
            "--api {base:?}: the revocation API is plain HTTP on a private address; use http://"
        ));
    }
    let operator = common
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "-".to_string());
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{base}{PATH}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(OPERATOR_HEADER, operator);
    let payload = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .map_err(|e| format!("--api {base:?}: {e}"))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(15), client.request(request))
            .await
            .map_err(|_| format!("{base}: no answer within 15s"))?
            .map_err(|e| format!("{base}: {e}"))?;
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .map_err(|e| format!("{base}: {e}"))?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(subcommand)]
        target: Target,
    }

    fn request(args: &[&str], remove: bool) -> (Method, Option<serde_json::Value>) {
        let args =
            Args::try_parse_from(std::iter::once("revoke").chain(args.iter().copied())).unwrap();
        let (method, body, _) = request_of(&args.target, remove).unwrap();
        (method, body)
    }

    #[test]
    fn sid_is_named_by_issuer_and_sid() {
        let args = [
            "sid",
            "--issuer",
            "https://idp.example.com/",
            "--sid",
            "5b1c",
            "--expires",
            "1798761600",
            "--reason",
            "back-channel logout",
        ];
        let (method, body) = request(&args, false);
        assert_eq!(method, Method::POST);
        assert_eq!(
            body.unwrap(),
            serde_json::json!({
                "kind": "sid", "issuer": "https://idp.example.com/", "sid": "5b1c",
                "expires": 1798761600, "reason": "back-channel logout",
            })
        );
        let (method, body) = request(&args, true);
        assert_eq!(method, Method::DELETE);
        assert_eq!(
            body.unwrap(),
            serde_json::json!({"kind": "sid", "issuer": "https://idp.example.com/", "sid": "5b1c"})
        );
        assert!(Args::try_parse_from(["revoke", "sid", "--sid", "5b1c"]).is_err());
        assert!(Args::try_parse_from(["revoke", "sid", "--issuer", "i"]).is_err());
    }
}
