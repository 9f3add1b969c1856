//! One end-to-end browser run: headless Chromium (Debian's `chromium`) opens a protected page,
//! follows the login redirect to the issuer, gets the session cookie, comes back, and sees the
//! page. `.ci/run` installs Chromium; in CI a missing browser fails the test rather than skipping.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_follows_the_login_redirect_and_carries_the_session_cookie() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (see .ci/run)"
        );
        eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let up = echo().await;
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k")).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:{port}"
{provider}[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://{up}"
session_cookie = "sess"
public_origin = "{origin}"
login_url = "{issuer}/login"
"#,
        provider = provider_toml("p", &idp, "\"ES256\""),
        issuer = idp.issuer(),
    ))
    .await;
    idp.set_login(
        "sess",
        &key.token(&claims(&idp.issuer(), "browser-user")),
        &origin,
    );
    let profile = temp_dir("chromium-profile");
    let url = format!("{origin}/app/page?from=browser");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("90")
            .arg(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("browser-user"),
        "the page did not show the authenticated user.\nDOM: {dom}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
            .chars()
            .take(2000)
            .collect::<String>()
    );
    assert!(
        dom.contains("/app/page?from=browser"),
        "the browser did not come back to the page it asked for: {dom}"
    );
    // The cookie, not a header the browser could not have had, carried the identity.
    assert!(dom.contains("sess="), "{dom}");
    drop(gw);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
