//! `authgate explain` against the demo config: one case per decision step, and its verdict
//! equal to the running proxy's for a table of requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::Value;

struct Demo {
    gateway: Gateway,
    config: PathBuf,
    jwks: PathBuf,
    tokens: std::collections::HashMap<&'static str, String>,
}

/// The embedded demo config, filled in as `authgate demo` fills it, with its issuer's keys
/// also written to a JWKS file for offline explaining.
async fn demo() -> Demo {
    let key = SigningKey::generate(Algorithm::ES256, Some("demo-1")).unwrap();
    let jwk = key.public_jwk(true).unwrap();
    let idp = authgate::demo::issuer::JwksServer::start(vec![jwk.clone()])
        .await
        .unwrap();
    let up = echo().await;
    let dir = temp_dir("explain");
    let denylist = dir.join("denylist.toml");
    std::fs::write(
        &denylist,
        format!(
            "[[token]]\nissuer = \"{0}\"\njti = \"demo-revoked\"\n\
             [[sid]]\nissuer = \"{0}\"\nsid = \"demo-logged-out\"\n",
            idp.issuer()
        ),
    )
    .unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    let text = template
        .replace("{{listen}}", "127.0.0.1:0")
        .replace("{{admin}}", "127.0.0.1:0")
        .replace("{{echo_upstream}}", &format!("http://{up}"))
        .replace("{{issuer}}", &idp.issuer())
        .replace("{{denylist}}", &denylist.display().to_string())
        .replace(
            "{{session_keys}}",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .replace("{{client_secret}}", "explain-secret");
    let config = dir.join("authgate.toml");
    std::fs::write(&config, &text).unwrap();
    let gateway = Gateway::start(&authgate::config::load(&config).unwrap())
        .await
        .unwrap();
    let now = now();
    let token = |sub: &str, jti: &str, scope: &str, exp: i64| {
        key.token(&serde_json::json!({
            "iss": idp.issuer(), "aud": "demo-api", "sub": sub, "jti": jti, "scope": scope,
            "email": format!("{sub}@example.com"), "iat": now - 60, "exp": exp,
        }))
    };
    let valid = token("alice", "demo-valid", "profile orders:read", now + 3600);
    let mut tampered = valid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let other_kid = SigningKey::generate(Algorithm::ES256, Some("elsewhere"))
        .unwrap()
        .token(&serde_json::json!({
            "iss": idp.issuer(), "aud": "demo-api", "sub": "eve", "iat": now, "exp": now + 60,
        }));
    let logged_out = key.token(&serde_json::json!({
        "iss": idp.issuer(), "aud": "demo-api", "sub": "alice", "jti": "demo-in-session",
        "sid": "demo-logged-out", "scope": "profile", "iat": now - 60, "exp": now + 3600,
    }));
    let tokens = [
        ("valid", valid),
        ("revoked_sid", logged_out),
        (
            "expired",
            token("alice", "demo-expired", "profile", now - 3600),
        ),
        (
            "revoked",
            token("mallory", "demo-revoked", "profile", now + 3600),
        ),
        (
            "unscoped",
            token("bob", "demo-unscoped", "profile", now + 3600),
        ),
        ("tampered", tampered),
        ("other_kid", other_kid),
    ]
    .into_iter()
    .collect();
    // The live gateway has fetched the demo issuer's keys before anything is compared.
    let state = gateway.state.clone();
    assert!(
        eventually(std::time::Duration::from_secs(20), || state
            .load()
            .verifier
            .providers()
            .iter()
            .all(|p| p.is_ready()))
        .await
    );
    Demo {
        gateway,
        config,
        jwks,
        tokens,
    }
}

/// Runs `authgate explain --json` offline (keys from the JWKS file); returns the exit code and
/// the JSON trace.
fn explain(
    demo: &Demo,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[&str],
) -> (i32, Value, String) {
    let mut command = Command::new(BIN);
    command
        .arg("explain")
        .arg("--config")
        .arg(&demo.config)
        .arg("--jwks")
        .arg(&demo.jwks)
        .args(["--method", method, "--url"])
        .arg(format!("http://{}{path}", demo.gateway.addrs[0]))
        .arg("--json");
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "explain printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), json, stdout)
}

fn step<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {trace}"))
}

fn details(trace: &Value, name: &str) -> String {
    step(trace, name)["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_proxy_on_every_request() {
    let demo = demo().await;
    let t = |name: &str| Some(demo.tokens[name].as_str());
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", "/echo/x", t("valid")),
        ("GET", "/echo/x", None),
        ("GET", "/echo/x", t("expired")),
        ("GET", "/echo/x", t("revoked")),
        ("GET", "/echo/x", t("revoked_sid")),
        ("GET", "/echo/x", t("tampered")),
        ("GET", "/echo/x", t("other_kid")),
        ("GET", "/orders/1", t("unscoped")),
        ("GET", "/orders/1", t("valid")),
        ("POST", "/orders/1", t("valid")),
        ("GET", "/nowhere", t("valid")),
        ("DELETE", "/readonly/x", None),
        ("GET", "/readonly/x", None),
        ("GET", "/public/../echo/x", None),
        ("GET", "/echo/%zz", t("valid")),
        ("GET", "/echo/a%2Fb", t("valid")),
        ("GET", "/public/x", t("expired")),
    ];
    let client = h1_client();
    for (method, path, token) in cases {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", demo.gateway.addrs[0]));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let proxied = send(
            &client,
            builder
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        let proxy_reason = if proxied.status == 200 {
            "ok".to_string()
        } else {
            proxied.reason()
        };
        let (code, trace, _) = explain(&demo, method, path, token, &[]);
        assert_eq!(
            (
                trace["status"].as_u64().unwrap() as u16,
                trace["reason"].as_str().unwrap()
            ),
            (proxied.status, proxy_reason.as_str()),
            "{method} {path}: explain disagrees with the proxy\n{trace:#}"
        );
        assert_eq!(
            code,
            if proxied.status == 200 { 0 } else { 1 },
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_step_that_decided() {
    let demo = demo().await;
    let valid = demo.tokens["valid"].clone();

    // Allowed: every step passes and the identity to inject is shown.
    let (code, trace, text) = explain(&demo, "GET", "/echo/x", Some(&valid), &[]);
    assert_eq!(code, 0);
    assert!(details(&trace, "path").contains("/echo/x"));
    assert!(details(&trace, "route").contains("matched route \"echo\""));
    assert!(details(&trace, "credential").contains("Bearer"));
    assert!(details(&trace, "token").contains("provider \"demo\""));
    assert!(details(&trace, "token").contains("the --jwks file"));
    assert!(details(&trace, "verify").contains("key id: demo-1"));
    assert!(details(&trace, "denylist").contains("not revoked"));
    assert!(details(&trace, "identity").contains("x-auth-subject: alice"));
    // Never the signature.
    let signature = valid.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "the signature was printed");

    // Host: two Host headers.
    let (code, trace, _) = explain(&demo, "GET", "/echo/x", None, &["Host: evil.example"]);
    assert_eq!(code, 1);
    assert_eq!(step(&trace, "host")["outcome"], "failed");
    assert_eq!(trace["reason"], "bad_host");

    // Path: an undecodable escape.
    let (_, trace, _) = explain(&demo, "GET", "/echo/%zz", None, &[]);
    assert_eq!(step(&trace, "path")["outcome"], "failed");
    assert_eq!(trace["reason"], "bad_percent_encoding");

    // Route: none, and the nearest routes with why they did not match.
    let (_, trace, _) = explain(&demo, "GET", "/echoes/x", None, &[]);
    assert_eq!(step(&trace, "route")["outcome"], "failed");
    let routes = details(&trace, "route");
    assert!(routes.contains("no route: 404 no_route"), "{routes}");
    let (_, trace, _) = explain(&demo, "DELETE", "/readonly/x", None, &[]);
    assert_eq!(trace["reason"], "method_not_allowed");

    // Credential: none on a protected route.
    let (_, trace, _) = explain(&demo, "GET", "/echo/x", None, &[]);
    assert!(details(&trace, "credential").contains("none"));
    assert_eq!(trace["reason"], "missing_credential");

    // Verification: the rule that failed, the ones before it passed, the rest not reached.
    let (_, trace, _) = explain(&demo, "GET", "/echo/x", Some(&demo.tokens["expired"]), &[]);
    let rules = details(&trace, "verify");
    assert!(
        rules.contains("FAILED times: exp, nbf, iat within leeway: token_expired"),
        "{rules}"
    );
    assert!(rules.contains("ok          signature"), "{rules}");
    let (_, trace, _) = explain(&demo, "GET", "/echo/x", Some(&demo.tokens["tampered"]), &[]);
    let rules = details(&trace, "verify");
    assert!(rules.contains("FAILED signature: bad_signature"), "{rules}");
    assert!(rules.contains("not reached times"), "{rules}");
    let (_, trace, _) = explain(
        &demo,
        "GET",
        "/echo/x",
        Some(&demo.tokens["other_kid"]),
        &[],
    );
    assert!(details(&trace, "verify").contains("FAILED a key chosen by kid"));

    // Denylist.
    let (_, trace, _) = explain(&demo, "GET", "/echo/x", Some(&demo.tokens["revoked"]), &[]);
    assert_eq!(step(&trace, "denylist")["outcome"], "failed");
    assert!(details(&trace, "denylist").contains("revoked_token"));
    let (code, trace, _) = explain(
        &demo,
        "GET",
        "/echo/x",
        Some(&demo.tokens["revoked_sid"]),
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(step(&trace, "denylist")["outcome"], "failed");
    assert_eq!(details(&trace, "denylist"), "revoked: revoked_sid");
    // The session the entry names is shown, so the operator can find the entry to remove.
    assert!(details(&trace, "token").contains("\"sid\":\"demo-logged-out\""));

    // Policy: each requirement with its result.
    let (_, trace, _) = explain(
        &demo,
        "GET",
        "/orders/1",
        Some(&demo.tokens["unscoped"]),
        &[],
    );
    assert_eq!(step(&trace, "policy")["outcome"], "failed");
    assert!(details(&trace, "policy").contains("FAILED      scope: every scope of [orders:read]"));
    assert_eq!(trace["reason"], "insufficient_scope");
    let (_, trace, _) = explain(&demo, "GET", "/orders/1", Some(&valid), &[]);
    assert!(details(&trace, "policy").contains("ok          scope: every scope of [orders:read]"));
}

#[test]
fn explain_exits_2_on_usage_and_config_errors() {
    let dir = temp_dir("explain-usage");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[route]]\nname = 5\n").unwrap();
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let output = run(&[
        "explain",
        "--config",
        bad.to_str().unwrap(),
        "--url",
        "http://x/",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml:2:8"));
    let output = run(&["explain", "--config", "config/authgate.toml"]);
    assert_eq!(output.status.code(), Some(2), "--url is required");
    let output = run(&[
        "explain",
        "--config",
        "config/authgate.toml",
        "--url",
        "http://x/",
        "-H",
        "no colon",
    ]);
    assert_eq!(output.status.code(), Some(2));
    // A mistyped header that holds a credential is not echoed back.
    let output = run(&[
        "explain",
        "--config",
        "config/authgate.toml",
        "--url",
        "http://x/",
        "-H",
        "Authorization Bearer eyJsecretsecretsecret",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("eyJsecret"));
    let output = run(&[
        "explain",
        "--config",
        "config/authgate.toml",
        "--url",
        "http://user:hunter2@x/ y",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}
