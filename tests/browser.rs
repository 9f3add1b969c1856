//! End-to-end browser runs with headless Chromium (Debian's `chromium`; `.ci/run` installs it,
//! and in CI a missing browser fails the tests rather than skipping them):
//! - `--dump-dom`: a protected page, the login redirect to a token issuer, the cookie it sets,
//!   and the page again;
//! - driven over the DevTools protocol (`common::cdp`): the gateway's own OIDC login against the
//!   demo OpenID Provider, the way a user walks it — the IdP's form typed into and clicked, the
//!   original URL restored, the identity at the upstream, a refresh after the access token's
//!   margin, logout through the confirmation page and the IdP, and a back-channel logout sent to
//!   one gateway instance ending the session on another that shares its Redis.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use authgate::demo::issuer::OidcClient;
use common::cdp::{chromium, Chromium, PageState};
use common::redis_server::Redis;
use common::*;

/// One browser at a time: the CI machine has two cores, and Chromium wants them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The browser binary, or `None` (skip, with a message) outside CI.
fn browser_or_skip() -> Option<&'static str> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (see .ci/run)"
        );
        eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_follows_the_login_redirect_and_carries_the_session_cookie() {
    let _serial = SERIAL.lock().await;
    let Some(browser) = browser_or_skip() else {
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

const CLIENT: &str = "gw";
const SECRET: &str = "gw-secret";
const KEYS: &str = "q6vVJ9f2Jc7m1cXQyV0m8Z8E3j1v6n4cD2b5a7e9f0g=";
const USER: &str = "carol";

/// One gateway instance of the fleet: both share Redis (sessions and revocations), keys, client
/// and `public_origin`; only the listener differs.
fn fleet_config(listen: &str, origin: &str, redis: &str, issuer: &str, up: &str) -> String {
    format!(
        r#"[[listener]]
address = "{listen}"

[admin]
address = "127.0.0.1:0"

[reload]
watch = false

[revocation]
redis_url = "{redis}"
key_prefix = "browser-test:"

[[auth.identity.claim]]
claim = "/sid"
header = "x-auth-sid"

[session]
keys = "{KEYS}"
store = "redis"
key_prefix = "browser-test-session:"
cookie_name = "authgate_s"
login_state_cookie_name = "authgate_l"
cookie_secure = false

[[provider]]
name = "idp"
issuer = "{issuer}"
discovery = true
audiences = ["demo-api"]
algorithms = ["ES256"]

[[login]]
name = "idp"
provider = "idp"
client_id = "{CLIENT}"
client_secret = "{SECRET}"
public_origin = "{origin}"
refresh_margin = "2s"

[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://{up}"
login = "idp"
"#
    )
}

async fn ready(gateway: &Gateway) -> bool {
    let admin = gateway.admin_addr.unwrap();
    send(&h1_client(), get(&format!("http://{admin}/readyz")))
        .await
        .status
        == 200
}

/// The IdP's login form is showing.
fn is_login_form(state: &PageState, issuer: &str) -> bool {
    state.href.starts_with(&format!("{issuer}/authorize")) && state.text.contains("Sign in")
}

/// The app page answered by the echo upstream, with the user's identity and none of the
/// gateway's cookies; returns the IdP session id the upstream saw.
fn assert_app_page(state: &PageState, url: &str) -> String {
    assert_eq!(
        state.href, url,
        "the browser is back on the page it asked for"
    );
    assert_eq!(state.status, 200, "{state:?}");
    assert_eq!(state.echo()["path"], "/app/page?x=1");
    assert_eq!(state.upstream_header("x-auth-subject"), vec![USER]);
    let cookies = state.upstream_header("cookie").join("; ");
    assert!(
        !cookies
            .split(';')
            .any(|c| c.trim().starts_with("authgate_")),
        "the gateway's cookies never reach the upstream: {cookies}"
    );
    let sid = state.upstream_header("x-auth-sid");
    assert_eq!(sid.len(), 1, "{state:?}");
    sid[0].clone()
}

/// Types the username into the IdP's form and signs in; returns the page the login ends on.
async fn sign_in(browser: &mut Chromium, url: &str) -> PageState {
    browser.type_into("input[name=username]", USER).await;
    browser
        .click(
            "button[name=action][value=sign_in]",
            "the app page after signing in",
            |s| s.href == url,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_refreshes_logs_out_and_is_logged_out_across_instances() {
    let _serial = SERIAL.lock().await;
    let Some(binary) = browser_or_skip() else {
        return;
    };
    let Some(redis) = Redis::start("browser-redis").await else {
        return;
    };
    let started = std::time::Instant::now();
    let up = echo().await;
    let idp = JwksServer::start(Vec::new()).await.unwrap();
    idp.set_signing_key(SigningKey::generate(Algorithm::ES256, Some("idp-1")).unwrap());
    // Access tokens last 3 s and the gateway refreshes 2 s before: due 1 s after each grant.
    idp.set_token_lifetimes(Duration::from_secs(3), Duration::from_secs(300));
    let issuer = idp.issuer();
    let port_b = free_port();
    let origin = format!("http://127.0.0.1:{port_b}");
    let config =
        |listen: &str| fleet_config(listen, &origin, &redis.url(), &issuer, &up.to_string());
    let a = start(&config("127.0.0.1:0")).await;
    let b = start(&config(&format!("127.0.0.1:{port_b}"))).await;
    for (name, gateway) in [("a", &a), ("b", &b)] {
        let up = eventually_async(cdp::DEADLINE, || ready(gateway)).await;
        assert!(up, "instance {name} never became ready");
    }
    // The browser only ever talks to B; the IdP's back-channel goes to A.
    idp.register_client(OidcClient {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        redirect_uris: vec![format!("{origin}/.authgate/callback")],
        post_logout_redirect_uris: vec![format!("{origin}/")],
        backchannel_logout_uri: Some(format!(
            "http://{}/.authgate/backchannel-logout",
            a.addrs[0]
        )),
    });
    let mut browser = Chromium::launch(binary).await;
    let page = format!("{origin}/app/page?x=1");

    // Login: the IdP's form, typed into and submitted; back on the page first asked for.
    browser
        .navigate(&page, "the IdP's login form", |s| is_login_form(s, &issuer))
        .await;
    let shown = sign_in(&mut browser, &page).await;
    let first_sid = assert_app_page(&shown, &page);
    let cookies = browser.cookies(&origin).await;
    let session: Vec<_> = cookies.iter().filter(|c| c.0 == "authgate_s").collect();
    assert_eq!(session.len(), 1, "one session cookie: {cookies:?}");
    assert!(session[0].2, "the session cookie is HttpOnly");
    // The Redis store: the cookie holds a sealed id, not the tokens (well over 1 KB sealed).
    assert!(session[0].1.len() < 400, "{}", session[0].1.len());
    assert!(
        !cookies.iter().any(|c| c.0.starts_with("authgate_l")),
        "the login-state cookie is spent: {cookies:?}"
    );
    let script_sees = browser.eval("document.cookie").await.unwrap();
    assert!(
        !script_sees.as_str().unwrap().contains("authgate_s"),
        "scripts cannot read the session: {script_sees}"
    );

    // Refresh: once the access token has expired (it was due 2 s before), the next page load
    // refreshes it, once, and the page is served.
    let grants = idp.refresh_grants();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let shown = browser
        .navigate(&page, "the app page after a refresh", |s| s.href == page)
        .await;
    assert_app_page(&shown, &page);
    assert_eq!(
        idp.refresh_grants(),
        grants + 1,
        "one page load past the margin, one refresh"
    );

    // Logout: the gateway's confirmation page, its button, the IdP's end_session, and back to
    // the registered post-logout page.
    let ended = idp.end_session_calls();
    browser
        .navigate(
            &format!("{origin}/.authgate/logout"),
            "the sign-out page",
            |s| s.text.contains("Sign out"),
        )
        .await;
    browser
        .click("#sign-out", "the post-logout page", |s| {
            s.href == format!("{origin}/")
        })
        .await;
    assert_eq!(idp.end_session_calls(), ended + 1);
    assert!(
        !browser
            .cookies(&origin)
            .await
            .iter()
            .any(|c| c.0 == "authgate_s"),
        "logout removes the session cookie"
    );
    // The IdP told A (its back-channel URL) that the session ended, and A took it.
    let deliveries = idp.backchannel_deliveries();
    assert!(
        deliveries
            .iter()
            .any(|d| d.sid.as_deref() == Some(first_sid.as_str()) && d.outcome == Ok(200)),
        "{deliveries:?}"
    );
    // The IdP session ended too: the app asks for a login again, at the form.
    browser
        .navigate(&page, "the IdP's login form after logout", |s| {
            is_login_form(s, &issuer)
        })
        .await;

    // Back-channel logout across instances: a new login at B, then the IdP ends that session
    // and tells A; B must stop serving it once the revocation reaches it through Redis. Its
    // access token now outlives the test, so no failed refresh (the IdP revokes the refresh
    // token with the session) can end the session in the revocation's place.
    idp.set_token_lifetimes(Duration::from_secs(300), Duration::from_secs(300));
    let shown = sign_in(&mut browser, &page).await;
    let sid = assert_app_page(&shown, &page);
    assert_ne!(sid, first_sid, "a new IdP session");
    assert_eq!(idp.end_idp_sessions(Some(&sid), None), 1);
    assert_eq!(
        idp.backchannel_logout(CLIENT, Some(&sid), None).await,
        Ok(200)
    );
    let deadline = std::time::Instant::now() + cdp::DEADLINE;
    loop {
        let shown = browser
            .navigate(&page, "the app page or the IdP's form", |s| {
                s.href == page || s.href.starts_with(&issuer)
            })
            .await;
        if shown.href.starts_with(&issuer) {
            assert!(is_login_form(&shown, &issuer), "{shown:?}");
            break;
        }
        assert_app_page(&shown, &page);
        assert!(
            std::time::Instant::now() < deadline,
            "B still serves a session A was told to end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the user can sign in again: no loop on the ended session.
    let shown = sign_in(&mut browser, &page).await;
    assert_ne!(assert_app_page(&shown, &page), sid);
    drop(browser);
    eprintln!("browser login walk took {:?}", started.elapsed());
}
