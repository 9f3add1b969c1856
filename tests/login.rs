//! The gateway's own browser login against the demo OpenID Provider, over real HTTP on
//! loopback, with a small cookie jar standing in for the browser: the code flow with PKCE, the
//! session cookie, identity at the upstream, refresh (single flight), logout with revocation,
//! and each bad case of the callback and the session.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use authgate::demo::issuer::{LogoutTokenTweak, OidcClient, TokenFault};
use common::jar::{location, Browser};
use common::redis_server::Redis;
use common::*;
use http::Request;
use http_body_util::Full;

const CLIENT: &str = "gw";
const SECRET: &str = "gw-secret";
/// Two keys: the second (an older one) still opens cookies it sealed.
const KEYS: &str =
    "q6vVJ9f2Jc7m1cXQyV0m8Z8E3j1v6n4cD2b5a7e9f0g=, AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Setup {
    idp: Arc<JwksServer>,
    origin: String,
    gw: Gateway,
    dir: std::path::PathBuf,
    config: String,
}

impl Setup {
    /// Rewrites the config with `from` replaced by `to` and reloads it.
    async fn reload_with(&self, from: &str, to: &str) {
        assert!(self.config.contains(from));
        std::fs::write(
            self.dir.join("authgate.toml"),
            self.config.replace(from, to),
        )
        .unwrap();
        self.gw.reloader.reload("test").await.unwrap();
    }
}

async fn setup(extra_login: &str) -> Setup {
    setup_with("", extra_login, "").await
}

/// `top`: sections before `[session]`; `extra_route`: keys of the `app` route.
async fn setup_with(top: &str, extra_login: &str, extra_route: &str) -> Setup {
    let up = echo().await;
    let idp = JwksServer::start(Vec::new()).await.unwrap();
    idp.set_signing_key(SigningKey::generate(Algorithm::ES256, Some("idp-1")).unwrap());
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    idp.register_client(OidcClient {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        redirect_uris: vec![format!("{origin}/.authgate/callback")],
        post_logout_redirect_uris: vec![format!("{origin}/")],
        backchannel_logout_uri: Some(format!("{origin}/.authgate/backchannel-logout")),
    });
    idp.set_auto_login(Some("alice"));
    let dir = temp_dir("login");
    let config = format!(
        r#"[[listener]]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:0"

{top}
[[auth.identity.claim]]
claim = "/sid"
header = "x-auth-sid"

[session]
keys = "{KEYS}"
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
{extra_login}

[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://{up}"
login = "idp"
forward_access_token = true
{extra_route}
"#,
        issuer = idp.issuer(),
    );
    let gw = start_in(&dir, &config).await;
    Setup {
        idp,
        origin,
        gw,
        dir,
        config,
    }
}

/// A browser logged in and past its first page, and the IdP session id the upstream saw.
async fn logged_in(s: &Setup) -> (Browser, String) {
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, s, "/app/").await.status, 302);
    let page = browser
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(page.status, 200);
    let sid = page.upstream_header("x-auth-sid").pop().unwrap();
    (browser, sid)
}

async fn login(browser: &mut Browser, s: &Setup, path: &str) -> Reply {
    browser.log_in(&s.origin, &s.idp.issuer(), path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_reaches_the_page_with_its_identity_and_logs_out() {
    let s = setup("").await;
    let mut browser = Browser::default();
    let done = login(&mut browser, &s, "/app/page?x=1").await;
    assert_eq!(done.status, 302, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(location(&done), "/app/page?x=1", "back where it was going");
    let cookies = browser.session_cookies();
    assert!(!cookies.is_empty());
    println!(
        "cookie store: session {} bytes in {} cookie(s)",
        cookies.iter().map(|(_, v)| v.len()).sum::<usize>(),
        cookies.len()
    );
    assert!(
        !browser.jar.keys().any(|k| k.starts_with("authgate_l")),
        "the login-state cookie is spent"
    );
    let set_cookie = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));

    let page = browser
        .navigate(&format!("{}/app/page?x=1", s.origin))
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.upstream_header("x-auth-subject"), vec!["alice"]);
    let authorization = page.upstream_header("authorization");
    assert_eq!(authorization.len(), 1);
    assert!(
        authorization[0].starts_with("Bearer ey"),
        "the access token goes upstream"
    );
    let upstream_cookies = page.upstream_header("cookie").join("; ");
    assert!(
        !upstream_cookies.contains("authgate_s"),
        "the session cookie never reaches the upstream: {upstream_cookies}"
    );

    // A copy of the cookie, taken before logout.
    let stolen = browser.clone();
    let confirm = browser
        .navigate(&format!("{}/.authgate/logout", s.origin))
        .await;
    assert_eq!(
        confirm.status, 200,
        "GET asks; only a same-origin POST logs out"
    );
    assert!(String::from_utf8_lossy(&confirm.body).contains("method=\"post\""));
    let cross_site = browser
        .post(
            &format!("{}/.authgate/logout", s.origin),
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(cross_site.reason(), "csrf_origin");
    let out = browser
        .post(&format!("{}/.authgate/logout", s.origin), Some(&s.origin))
        .await;
    assert_eq!(out.status, 302);
    let end_session = location(&out);
    assert!(end_session.starts_with(&format!("{}/end_session?", s.idp.issuer())));
    assert!(end_session.contains("id_token_hint="));
    assert!(
        browser.session_cookies().is_empty(),
        "logout clears the cookie"
    );

    let mut stolen = stolen;
    let replay = stolen
        .get(&format!("{}/app/page", s.origin), "application/json")
        .await;
    assert_eq!(replay.status, 401, "a copied cookie dies with the logout");
    assert_eq!(replay.reason(), "revoked_token");
    let again = stolen.navigate(&format!("{}/app/page", s.origin)).await;
    assert_eq!(
        again.status, 302,
        "a browser with a revoked session logs in again"
    );
    assert!(location(&again).starts_with(&s.idp.issuer()));

    // The IdP session lived on (the browser never went to end_session): logging in again
    // through it gives a new session that works, not a loop.
    let back = login(&mut browser, &s, "/app/again").await;
    assert_eq!(back.status, 302);
    assert_eq!(location(&back), "/app/again");
    let page = browser.navigate(&format!("{}/app/again", s.origin)).await;
    assert_eq!(page.status, 200);
    let admin = s.gw.admin_addr.unwrap();
    let scrape = send(&h1_client(), get(&format!("http://{admin}/metrics"))).await;
    let text = String::from_utf8_lossy(&scrape.body);
    for (event, count) in [("started", 3), ("completed", 2), ("logout", 1)] {
        let line =
            format!("authgate_login_events_total{{event=\"{event}\",login=\"idp\"}} {count}");
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_get_401_and_never_a_login_redirect() {
    let s = setup("").await;
    let mut client = Browser::default();
    let reply = client
        .get(&format!("{}/app/data", s.origin), "application/json")
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.reason(), "missing_credential");
    assert!(reply.headers.contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refuses_missing_foreign_and_replayed_state() {
    let s = setup("").await;
    let mut browser = Browser::default();
    let start = browser.navigate(&format!("{}/app/", s.origin)).await;
    let code = browser.navigate(&location(&start)).await;
    let callback = location(&code);

    let missing = browser
        .navigate(&format!("{}/.authgate/callback?code=x", s.origin))
        .await;
    assert_eq!(missing.status, 400);
    assert!(String::from_utf8_lossy(&missing.body).contains("login_state_missing"));

    // Another browser (no login-state cookie) with the same callback URL.
    let mut other = Browser::default();
    let foreign = other.navigate(&callback).await;
    assert_eq!(foreign.status, 400);
    assert!(String::from_utf8_lossy(&foreign.body).contains("login_state_missing"));

    // The right browser, twice: the second use is refused even with the cookie kept.
    let kept = browser.clone();
    let first = browser.navigate(&callback).await;
    assert_eq!(first.status, 302);
    let mut replayer = kept;
    let second = replayer.navigate(&callback).await;
    assert_eq!(second.status, 400);
    assert!(String::from_utf8_lossy(&second.body).contains("login_state_reused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_refusals_and_bad_id_tokens_end_the_login_with_a_page() {
    let s = setup("timeout = \"1s\"").await;
    for (fault, status, reason) in [
        (TokenFault::WrongNonce, 400, "nonce_mismatch"),
        (TokenFault::WrongAudience, 400, "id_token_audience"),
        (TokenFault::WrongIssuer, 400, "id_token_issuer"),
        (TokenFault::ExpiredIdToken, 400, "id_token_expired"),
        (TokenFault::UnsignedIdToken, 400, "id_token_algorithm"),
        (TokenFault::BadSignature, 400, "id_token_bad_signature"),
        (TokenFault::NoIdToken, 502, "token_response_invalid"),
        (TokenFault::Status(500), 502, "token_endpoint_failed"),
        (TokenFault::Status(400), 502, "token_endpoint_refused"),
        (TokenFault::Garbage, 502, "token_response_invalid"),
        (TokenFault::HugeBody, 502, "token_response_invalid"),
        (TokenFault::Hang, 502, "token_endpoint_unreachable"),
    ] {
        s.idp.set_token_endpoint_fault(Some(fault));
        let mut browser = Browser::default();
        let reply = login(&mut browser, &s, "/app/").await;
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, status, "{fault:?}: {body}");
        assert!(body.contains(reason), "{fault:?}: {body}");
        assert!(browser.session_cookies().is_empty(), "{fault:?}");
    }
    s.idp.set_token_endpoint_fault(None);

    // The user says no at the IdP: a page, not a loop back to the IdP.
    let mut browser = Browser::default();
    let start = browser.navigate(&format!("{}/app/", s.origin)).await;
    let authorize = location(&start);
    let state = authorize
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_string();
    // RFC 9207: this IdP promises `iss`, so an answer without it (or naming another IdP) is a
    // possible mix-up and refused, errors included.
    let without_iss = browser
        .navigate(&format!(
            "{}/.authgate/callback?error=access_denied&state={state}",
            s.origin
        ))
        .await;
    assert_eq!(without_iss.status, 400);
    assert!(String::from_utf8_lossy(&without_iss.body).contains("login_issuer_mismatch"));
    // The attempt is spent either way; the user tries again and says no.
    let start = browser.navigate(&format!("{}/app/", s.origin)).await;
    let state = location(&start)
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_string();
    let iss = authgate::auth::credential::encode_query_value(&s.idp.issuer());
    let denied = browser
        .navigate(&format!(
            "{}/.authgate/callback?error=access_denied&state={state}&iss={iss}",
            s.origin
        ))
        .await;
    assert_eq!(denied.status, 403);
    assert!(String::from_utf8_lossy(&denied.body).contains("access_denied"));
    assert!(!denied.headers.contains_key("location"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_foreign_session_cookie_is_cleared_and_refused() {
    let s = setup("").await;
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
    let (name, value) = browser.session_cookies()[0].clone();
    let mut chars: Vec<char> = value.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    let mut tampered = browser.clone();
    tampered
        .jar
        .insert(name.clone(), chars.into_iter().collect());
    let reply = tampered
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(reply.status, 401);
    assert!(reply.reason().starts_with("session_"), "{}", reply.reason());
    assert!(
        tampered.session_cookies().is_empty(),
        "the bad cookie is cleared"
    );

    let mut truncated = browser.clone();
    truncated
        .jar
        .insert(name, value[..value.len() / 2].to_string());
    let nav = truncated.navigate(&format!("{}/app/", s.origin)).await;
    assert_eq!(nav.status, 302, "a browser starts a fresh login");
    assert!(location(&nav).starts_with(&s.idp.issuer()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_refresh_a_session_once() {
    let s = setup("refresh_margin = \"2s\"").await;
    s.idp
        .set_token_lifetimes(Duration::from_secs(4), Duration::from_secs(300));
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
    // Inside the margin: due for a refresh.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = s.idp.refresh_grants();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let mut b = browser.clone();
            let url = format!("{}/app/x", s.origin);
            tokio::spawn(async move { b.get(&url, "application/json").await })
        })
        .collect();
    let mut refreshed_cookies = 0;
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200);
        if reply.headers.contains_key("set-cookie") {
            refreshed_cookies += 1;
            browser.absorb(&reply);
        }
    }
    assert_eq!(
        s.idp.refresh_grants() - before,
        1,
        "one refresh for eight requests"
    );
    assert_eq!(
        refreshed_cookies, 8,
        "every answer carries the refreshed session"
    );

    // The IdP failing (5xx) is not a verdict on the session: it is served while its access
    // token lasts, and the refresh is tried again on the next request.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    s.idp
        .set_token_endpoint_fault(Some(TokenFault::Status(503)));
    let grants = s.idp.refresh_grants();
    let mut kept = browser.clone();
    let reply = kept
        .get(&format!("{}/app/x", s.origin), "application/json")
        .await;
    assert_eq!(reply.status, 200, "served on the still-valid access token");
    assert!(!kept.session_cookies().is_empty(), "the cookie is kept");
    assert_eq!(s.idp.refresh_grants(), grants + 1);
    // A refresh the IdP refuses ends the session.
    s.idp
        .set_token_endpoint_fault(Some(TokenFault::Status(400)));
    let mut stale = browser.clone();
    let reply = stale
        .get(&format!("{}/app/x", s.origin), "application/json")
        .await;
    s.idp.set_token_endpoint_fault(None);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.reason(), "session_refresh_failed");
}

#[test]
fn login_config_errors_are_located() {
    let base = |extra: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[provider]]\nname = \"idp\"\nissuer = \"https://idp.example.com\"\ndiscovery = true\naudiences = [\"api\"]\nalgorithms = [\"RS256\"]\n\n[[provider]]\nname = \"fixed\"\nissuer = \"https://other.example.com\"\njwks_uri = \"https://other.example.com/jwks\"\naudiences = [\"api\"]\nalgorithms = [\"RS256\"]\n\n{extra}"
        )
    };
    let session = format!("[session]\nkeys = \"{KEYS}\"\n\n");
    let login = "[[login]]\nname = \"l\"\nprovider = \"idp\"\nclient_id = \"c\"\npublic_origin = \"https://app.example.com\"\n";
    let cases: Vec<(String, &str)> = vec![
        (base(login), "needs a [session] section"),
        (base(&format!("[session]\nkeys = \"c2hvcnQ=\"\n\n{login}")), "session keys"),
        (base(&format!("{session}{}", login.replace("\"idp\"", "\"fixed\""))), "needs discovery = true"),
        (base(&format!("{session}{}", login.replace("\"idp\"", "\"nobody\""))), "no [[provider]] is named"),
        (base(&format!("{session}{login}scopes = [\"profile\"]\n")), "must include \"openid\""),
        (base(&format!("{session}{login}client_auth = \"client_secret_post\"\n")), "needs client_secret"),
        (base(&format!("{session}{login}client_auth = \"private_key_jwt\"\n")), "private_key_jwt needs client_key"),
        (base(&format!("{session}{login}client_auth = \"private_key_jwt\"\nclient_key = \"/nonexistent/key.pem\"\n")), "/nonexistent/key.pem"),
        (base(&format!("{session}{login}client_key = \"/etc/hostname\"\nclient_secret = \"s\"\n")), "client_key is for client_auth = \"private_key_jwt\""),
        (base(&format!("{session}{login}extra_params = {{ nonce = \"x\" }}\n")), "may not set \"nonce\""),
        (base(&format!("[session]\nkeys = \"{KEYS}\"\ncookie_secure = false\n\n{login}")), "only accept this prefix on Secure cookies"),
        (base(&format!("[session]\nkeys = \"{KEYS}\"\nstore = \"redis\"\n\n{login}")), "needs redis_url"),
        (base(&format!("{session}{login}\n[[route]]\nname = \"r\"\npath_prefix = \"/.authgate/x\"\nupstream = \"http://127.0.0.1:1\"\n")), "are the gateway's own"),
        (base(&format!("{session}{login}\n[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\nlogin = \"missing\"\n")), "no [[login]] is named"),
        (base(&format!("{session}{login}\n[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\nlogin = \"l\"\nproviders = [\"fixed\"]\n")), "leave out"),
        (base(&format!("{session}{login}\n[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\nforward_access_token = true\n")), "forward_access_token needs login"),
        (base(&format!("[forward_auth]\naddress = \"127.0.0.1:0\"\n\n{session}{login}\n[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\nlogin = \"l\"\n")), "not through [forward_auth]"),
    ];
    for (text, expected) in cases {
        let path = std::path::Path::new("authgate.toml");
        let errors = match authgate::config::load_str(path, &text) {
            Ok(_) => panic!("accepted, expected {expected:?}:\n{text}"),
            Err(errors) => errors.to_string(),
        };
        assert!(
            errors.contains(expected),
            "expected {expected:?} in:\n{errors}"
        );
        assert!(
            errors.lines().all(|l| l.starts_with("authgate.toml:")
                && l.split(':')
                    .nth(1)
                    .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n > 0))),
            "every error located:\n{errors}"
        );
    }
}

async fn post_logout_token(s: &Setup, token: &str) -> Reply {
    let req = Request::post(format!("{}/.authgate/backchannel-logout", s.origin))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(format!(
            "logout_token={}",
            authgate::auth::credential::encode_query_value(token)
        )))
        .unwrap();
    send(&h1_client(), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idps_back_channel_logout_ends_sessions_by_sid_and_by_subject() {
    let s = setup("").await;
    let (mut browser, sid) = logged_in(&s).await;

    // By sid: the IdP posts a logout token to the gateway's back-channel endpoint.
    assert_eq!(
        s.idp.backchannel_logout(CLIENT, Some(&sid), None).await,
        Ok(200)
    );
    let after = browser
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(after.status, 401);
    assert_eq!(after.reason(), "revoked_sid");

    // By subject: every session of the user begun before the logout.
    let mut second = Browser::default();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login(&mut second, &s, "/app/").await.status, 302);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.idp.backchannel_logout(CLIENT, None, Some("alice")).await,
        Ok(200)
    );
    let after = second
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(after.status, 401);
    assert_eq!(after.reason(), "revoked_session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_replayed_logout_tokens_are_refused() {
    let s = setup("").await;
    for (tweak, reason) in [
        (LogoutTokenTweak::WithNonce, "logout_token_nonce"),
        (LogoutTokenTweak::NoEvents, "logout_token_events"),
        (LogoutTokenTweak::WrongTyp, "logout_token_type"),
        (LogoutTokenTweak::WrongAudience, "logout_token_audience"),
        (LogoutTokenTweak::Expired, "logout_token_expired"),
        (LogoutTokenTweak::WrongIssuer, "logout_token_unknown_client"),
        (LogoutTokenTweak::BadSignature, "logout_token_invalid"),
    ] {
        let token = s.idp.logout_token(CLIENT, Some("sid-1"), None, tweak);
        let reply = post_logout_token(&s, &token).await;
        assert_eq!(reply.status, 400, "{tweak:?}");
        assert_eq!(reply.reason(), reason, "{tweak:?}");
    }
    let token = s
        .idp
        .logout_token(CLIENT, Some("sid-2"), None, LogoutTokenTweak::None);
    assert_eq!(post_logout_token(&s, &token).await.status, 200);
    let replay = post_logout_token(&s, &token).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.reason(), "logout_token_replayed");
    let no_token = send(
        &h1_client(),
        Request::post(format!("{}/.authgate/backchannel-logout", s.origin))
            .body(Full::from("other=1"))
            .unwrap(),
    )
    .await;
    assert_eq!(no_token.reason(), "logout_token_missing");
    let get = send(
        &h1_client(),
        get(&format!("{}/.authgate/backchannel-logout", s.origin)),
    )
    .await;
    assert_eq!(get.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_rotate_and_a_retired_key_ends_its_sessions() {
    let s = setup("").await;
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
    let page = |b: &Browser| {
        let mut b = b.clone();
        let url = format!("{}/app/", s.origin);
        async move { b.get(&url, "application/json").await }
    };
    // A new key first: new cookies are sealed with it, the old ones still open.
    let (current, older) = KEYS.split_once(", ").unwrap();
    let fresh = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    s.reload_with(KEYS, &format!("{fresh}, {current}, {older}"))
        .await;
    assert_eq!(
        page(&browser).await.status,
        200,
        "sealed with a key still in the ring"
    );
    // The key that sealed it is retired: the session ends, the browser logs in again.
    s.reload_with(KEYS, &format!("{fresh}, {older}")).await;
    let reply = page(&browser).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.reason(), "session_unknown_key");
    let mut again = browser.clone();
    let nav = again.navigate(&format!("{}/app/", s.origin)).await;
    assert_eq!(nav.status, 302);
    assert!(
        again.session_cookies().is_empty(),
        "the dead cookie is cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_session_is_split_across_cookies_and_a_too_large_one_is_refused() {
    let s = setup("").await;
    // Within the default 8 KiB token limit, but more than one cookie's worth.
    let groups: Vec<String> = (0..150)
        .map(|i| format!("group-{i:04}-of-the-company"))
        .collect();
    s.idp
        .set_user_claims("alice", serde_json::json!({ "groups": groups }));
    let mut browser = Browser::default();
    let done = login(&mut browser, &s, "/app/").await;
    assert_eq!(done.status, 302, "{}", String::from_utf8_lossy(&done.body));
    let cookies = browser.session_cookies();
    assert!(cookies.len() > 1, "split: {} cookie(s)", cookies.len());
    for set_cookie in done.headers.get_all("set-cookie") {
        assert!(
            set_cookie.len() <= 4096,
            "each Set-Cookie fits a browser's limit"
        );
    }
    let page = browser
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(page.status, 200, "reassembled");
    assert_eq!(page.upstream_header("x-auth-subject"), vec!["alice"]);
    // A chunk missing is no session.
    let mut broken = browser.clone();
    let last = cookies.last().unwrap().0.clone();
    broken.jar.remove(&last);
    let reply = broken
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.reason(), "session_cookie_chunks");

    // An ID token past auth.max_token_bytes is refused as such.
    let groups: Vec<String> = (0..400)
        .map(|i| format!("group-{i:05}-of-the-company"))
        .collect();
    s.idp
        .set_user_claims("alice", serde_json::json!({ "groups": groups }));
    let mut browser = Browser::default();
    let done = login(&mut browser, &s, "/app/").await;
    assert_eq!(done.status, 400);
    assert!(String::from_utf8_lossy(&done.body).contains("id_token_too_large"));

    // With larger tokens allowed, a session past eight cookies cannot be stored in cookies:
    // a page says so (the Redis store is the answer).
    s.reload_with(
        "[[auth.identity.claim]]",
        "[auth]\nmax_token_bytes = 65536\n\n[[auth.identity.claim]]",
    )
    .await;
    let groups: Vec<String> = (0..600)
        .map(|i| format!("group-{i:05}-of-the-company"))
        .collect();
    s.idp
        .set_user_claims("alice", serde_json::json!({ "groups": groups }));
    let mut browser = Browser::default();
    let done = login(&mut browser, &s, "/app/").await;
    assert_eq!(done.status, 500);
    assert!(String::from_utf8_lossy(&done.body).contains("session_cookie_too_large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_before_any_refresh() {
    let s = setup("refresh_margin = \"2s\"").await;
    s.idp
        .set_token_lifetimes(Duration::from_secs(4), Duration::from_secs(300));
    let (mut browser, sid) = logged_in(&s).await;
    // The IdP tells the gateway the session ended, but keeps honouring its refresh token (as an
    // IdP does whose logout reaches only some clients): only the gateway's check can stop it.
    assert_eq!(
        s.idp.backchannel_logout(CLIENT, Some(&sid), None).await,
        Ok(200)
    );
    // Past the refresh margin: a session still in use would be refreshed now.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let grants = s.idp.refresh_grants();
    let mut navigating = browser.clone();
    let after = browser
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(after.status, 401);
    assert_eq!(after.reason(), "revoked_sid");
    let nav = navigating.navigate(&format!("{}/app/", s.origin)).await;
    assert_eq!(nav.status, 302);
    assert!(location(&nav).starts_with(&s.idp.issuer()));
    assert!(
        navigating.session_cookies().is_empty(),
        "the cookie is cleared"
    );
    assert_eq!(
        s.idp.refresh_grants(),
        grants,
        "a revoked session's refresh token is not used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_list_outage_answers_503_and_keeps_the_session() {
    let Some(mut redis) = Redis::start("login-outage").await else {
        return;
    };
    let s = setup_with(
        &format!(
            "[revocation]\nredis_url = \"{}\"\nunreachable_after = \"2s\"\n",
            redis.url()
        ),
        "",
        "revocation_required = true",
    )
    .await;
    let admin = s.gw.admin_addr.unwrap();
    let ready = eventually_async(Duration::from_secs(30), || async {
        send(&h1_client(), get(&format!("http://{admin}/readyz")))
            .await
            .status
            == 200
    })
    .await;
    assert!(ready, "the revocation list never loaded");
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
    let page = format!("{}/app/", s.origin);
    assert_eq!(browser.navigate(&page).await.status, 200);

    redis.kill();
    let unavailable = eventually_async(Duration::from_secs(30), || {
        let mut api = browser.clone();
        let page = page.clone();
        async move { api.get(&page, "application/json").await.status == 503 }
    })
    .await;
    assert!(unavailable, "the route never noticed the outage");
    // A browser is not sent to log in again: the new session would meet the same 503 (or the
    // same redirect, in a loop), and the one it has is still good.
    let during = browser.navigate(&page).await;
    assert_eq!(during.status, 503, "{:?}", during.headers.get("location"));
    assert!(
        !during.headers.contains_key("set-cookie"),
        "the session is kept"
    );
    assert!(!browser.session_cookies().is_empty());

    redis.restart().await;
    let back = eventually_async(Duration::from_secs(30), || {
        let mut api = browser.clone();
        let page = page.clone();
        async move { api.get(&page, "application/json").await.status == 200 }
    })
    .await;
    assert!(back, "the route never served again");
    let after = browser.navigate(&page).await;
    assert_eq!(after.status, 200, "the same session, once the list is back");
    assert_eq!(after.upstream_header("x-auth-subject"), vec!["alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_started_in_several_tabs_each_complete() {
    let s = setup("").await;
    let mut browser = Browser::default();
    // Two tabs start a login before either finishes: two login-state cookies.
    let mut callbacks = Vec::new();
    for page in ["/app/one", "/app/two"] {
        let start = browser.navigate(&format!("{}{page}", s.origin)).await;
        assert_eq!(start.status, 302);
        let code = browser.navigate(&location(&start)).await;
        callbacks.push(location(&code));
    }
    assert_eq!(
        browser
            .jar
            .keys()
            .filter(|k| k.starts_with("authgate_l"))
            .count(),
        2
    );
    // They finish in the other order, each returning where it started.
    let second = browser.navigate(&callbacks[1]).await;
    assert_eq!(second.status, 302);
    assert_eq!(location(&second), "/app/two");
    let first = browser.navigate(&callbacks[0]).await;
    assert_eq!(first.status, 302);
    assert_eq!(location(&first), "/app/one");
    assert!(!browser.jar.keys().any(|k| k.starts_with("authgate_l")));
    let page = browser
        .get(&format!("{}/app/one", s.origin), "application/json")
        .await;
    assert_eq!(page.status, 200);
}

/// Scopes and API roles live in the access token, not the ID token: with
/// `identity_from = "access_token"` (or `"both"`) the route's policy and identity headers read
/// it, verified like a Bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_can_read_the_access_token_of_a_session() {
    let policy = "[route.policy]\nroles_claim = \"/roles\"\nroles_all = [\"user\"]\n";
    for (identity_from, status) in [("id_token", 403), ("access_token", 200), ("both", 200)] {
        // `at_hash` is in the ID token only.
        let s = setup_with(
            "[[auth.identity.claim]]\nclaim = \"/at_hash\"\nheader = \"x-auth-at-hash\"\n",
            &format!("identity_from = \"{identity_from}\""),
            policy,
        )
        .await;
        let mut browser = Browser::default();
        assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
        let page = browser
            .get(&format!("{}/app/", s.origin), "application/json")
            .await;
        assert_eq!(page.status, status, "identity_from = {identity_from}");
        if status == 200 {
            assert_eq!(page.upstream_header("x-auth-subject"), vec!["alice"]);
            let at_hash = page.upstream_header("x-auth-at-hash");
            assert_eq!(
                at_hash.len(),
                usize::from(identity_from == "both"),
                "the ID token completes the access token's claims only with \"both\""
            );
        } else {
            assert_eq!(page.reason(), "missing_role");
        }
    }
}

/// `private_key_jwt`: the gateway authenticates at the token endpoint with an assertion signed
/// by its own key (no shared secret); the IdP knows only the public half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_authenticates_with_a_signed_assertion() {
    for rsa in [false, true] {
        client_assertion_login(rsa).await;
    }
}

/// The tag, content and rest of one DER element (short or long form lengths).
fn der(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (bytes[0], bytes[1]);
    let (length, at) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        let length = bytes[2..2 + count]
            .iter()
            .fold(0usize, |n, &d| (n << 8) | usize::from(d));
        (length, 2 + count)
    };
    (tag, &bytes[at..at + length], &bytes[at + length..])
}

async fn client_assertion_login(rsa: bool) {
    use base64::Engine;
    let s = setup("").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // A PKCS#8 key, as `openssl genpkey` writes it, for each supported kind.
    let (pem_text, jwk) = if rsa {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        use aws_lc_rs::signature::KeyPair;
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: Pkcs8V1Der = key.as_der().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        // The public key of an RSA pair is RSAPublicKey { n, e }.
        let (_, rsa_key, _) = der(key.public_key().as_ref());
        let (_, n, rest) = der(rsa_key);
        let (_, e, _) = der(rest);
        let n = n.strip_prefix(&[0]).unwrap_or(n);
        let jwk = serde_json::json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "client-1",
            "n": b64(n), "e": b64(e),
        });
        (pem, jwk)
    } else {
        let key = rcgen::KeyPair::generate().unwrap();
        let public = key.public_key_raw();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "client-1",
            "x": b64(&public[1..33]), "y": b64(&public[33..65]),
        });
        (key.serialize_pem(), jwk)
    };
    let pem = s.dir.join("client-key.pem");
    std::fs::write(&pem, pem_text).unwrap();
    s.reload_with(
        &format!("client_secret = \"{SECRET}\""),
        &format!(
            "client_auth = \"private_key_jwt\"\nclient_key = \"{}\"\nclient_key_id = \"client-1\"",
            pem.display()
        ),
    )
    .await;

    // The IdP does not know the key yet: the code exchange is refused.
    let mut browser = Browser::default();
    let refused = login(&mut browser, &s, "/app/").await;
    assert_eq!(refused.status, 502);
    assert!(String::from_utf8_lossy(&refused.body).contains("invalid_client"));

    s.idp.register_client_key(CLIENT, jwk);
    let mut browser = Browser::default();
    let done = login(&mut browser, &s, "/app/").await;
    assert_eq!(done.status, 302, "{}", String::from_utf8_lossy(&done.body));
    let page = browser
        .get(&format!("{}/app/", s.origin), "application/json")
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.upstream_header("x-auth-subject"), vec!["alice"]);
}

/// A browser that gives up in the middle of a refresh (a tab closed) must not cost the session:
/// the IdP has already rotated its refresh token, so the new one is kept and the next request,
/// still carrying the old cookie, is served from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_abandoned_by_its_request_still_completes() {
    let s = setup("refresh_margin = \"2s\"").await;
    s.idp
        .set_token_lifetimes(Duration::from_secs(4), Duration::from_secs(300));
    let mut browser = Browser::default();
    assert_eq!(login(&mut browser, &s, "/app/").await.status, 302);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    s.idp.set_token_endpoint_fault(Some(TokenFault::Slow(800)));
    let grants = s.idp.refresh_grants();
    let mut quitter = browser.clone();
    let url = format!("{}/app/", s.origin);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        quitter.get(&url, "application/json"),
    )
    .await;
    assert!(gave_up.is_err(), "the request was abandoned mid-refresh");
    // Long enough for the IdP's slow answer to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.idp.set_token_endpoint_fault(None);
    let reply = browser.get(&url, "application/json").await;
    assert_eq!(reply.status, 200, "{}", reply.reason());
    assert_eq!(
        s.idp.refresh_grants() - grants,
        1,
        "the refresh was not repeated"
    );
}

/// Malformed requests to the gateway's own endpoints get a clear refusal, never a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_to_the_login_endpoints_are_refused() {
    let s = setup("").await;
    let mut browser = Browser::default();
    // A parameter given twice has two readings: refused.
    let twice = browser
        .navigate(&format!(
            "{}/.authgate/callback?state=a&state=b&code=c",
            s.origin
        ))
        .await;
    assert_eq!(twice.status, 400);
    assert!(String::from_utf8_lossy(&twice.body).contains("login_callback_malformed"));
    // An escaped spelling of the reserved prefix still reaches the gateway, not a route.
    let escaped = browser
        .navigate(&format!("{}/%2Eauthgate/callback", s.origin))
        .await;
    assert_eq!(escaped.status, 400);
    assert!(String::from_utf8_lossy(&escaped.body).contains("login_state_missing"));
    // Unknown endpoints under the prefix are nobody's.
    let unknown = browser
        .get(
            &format!("{}/.authgate/whatever", s.origin),
            "application/json",
        )
        .await;
    assert_eq!(unknown.status, 404);
    // A back-channel logout body far past any logout token.
    let huge = send(
        &h1_client(),
        Request::post(format!("{}/.authgate/backchannel-logout", s.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from(format!(
                "logout_token={}",
                "a".repeat(64 * 1024)
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(huge.status, 400);
    assert_eq!(huge.reason(), "logout_request_malformed");
    // The callback is a GET.
    let post = browser
        .post(&format!("{}/.authgate/callback", s.origin), None)
        .await;
    assert_eq!(post.status, 405);
}
