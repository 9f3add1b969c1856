//! Fleet revocation against a real `redis-server` (Debian's package; `.ci/run` installs it):
//! several gateways share one Redis, a revocation made through one instance's API reaches them
//! all, a Redis outage keeps the list enforced and resynchronises (a change made while one
//! instance was cut off still reaches it), a Redis restarted empty un-revokes nothing and is
//! reported, and the API refuses missing or wrong credentials. Also the local (no-Redis) API
//! and the `authgate revoke` CLI against a running gateway.
//!
//! Outside CI a missing `redis-server` skips the Redis tests with a message; with CI=true it
//! fails them. The Redis tests run one at a time (a shared async mutex), each with its own Redis
//! on a free loopback port that a restart reuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis_server::Redis;
use common::*;
use http::Request;
use http_body_util::Full;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

/// The Redis tests share the machine's two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A loopback TCP relay in front of Redis that the test can cut, to disconnect one instance.

struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let accept_open = open.clone();
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Relay { addr, open, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways, tokens and the API.

struct Setup {
    key: SigningKey,
    idp: Arc<JwksServer>,
    echo: SocketAddr,
}

async fn setup() -> Setup {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    Setup {
        key,
        idp,
        echo: echo().await,
    }
}

impl Setup {
    fn token(&self, sub: &str) -> String {
        self.key.token(&claims(&self.idp.issuer(), sub))
    }

    /// A gateway config: `redis_url` (if any), a 2 s unreachable window, an `/echo` route that
    /// keeps enforcing the last known list and a `/strict` route that fails closed.
    fn config(&self, redis_url: Option<&str>) -> String {
        let revocation = match redis_url {
            Some(url) => format!(
                "[revocation]\nredis_url = \"{url}\"\nkey_prefix = \"fleet-test:\"\nunreachable_after = \"2s\"\n\n"
            ),
            None => "[revocation]\n\n".to_string(),
        };
        let strict = if redis_url.is_some() {
            format!(
                "[[route]]\nname = \"strict\"\npath_prefix = \"/strict\"\nupstream = \"http://{}\"\nrevocation_required = true\n\n",
                self.echo
            )
        } else {
            String::new()
        };
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n\
             {revocation}[revocation.api]\naddress = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [[route]]\nname = \"echo\"\npath_prefix = \"/echo\"\nupstream = \"http://{echo}\"\n\n{strict}{provider}",
            echo = self.echo,
            provider = provider_toml("idp", &self.idp, "\"ES256\""),
        )
    }
}

struct Instance {
    gateway: Gateway,
    name: &'static str,
}

impl Instance {
    async fn start(name: &'static str, toml: &str) -> Instance {
        let gateway = start(toml).await;
        let instance = Instance { gateway, name };
        let ready = eventually_async(DEADLINE, || instance.ready()).await;
        assert!(ready, "{name} never became ready");
        instance
    }

    async fn ready(&self) -> bool {
        let admin = self.gateway.admin_addr.unwrap();
        send(&h1_client(), get(&format!("http://{admin}/readyz")))
            .await
            .status
            == 200
    }

    fn api(&self) -> SocketAddr {
        self.gateway.revocation_addr.unwrap()
    }

    /// Status and reason of `GET path` with `token`.
    async fn call(&self, path: &str, token: &str) -> (u16, String) {
        let addr = self.gateway.addrs[0];
        let reply = send(&h1_client(), bearer(&format!("http://{addr}{path}"), token)).await;
        let reason = if reply.status == 200 {
            "ok".to_string()
        } else {
            reply.reason()
        };
        (reply.status, reason)
    }

    async fn metrics(&self) -> String {
        let admin = self.gateway.admin_addr.unwrap();
        let reply = send(&h1_client(), get(&format!("http://{admin}/metrics"))).await;
        String::from_utf8_lossy(&reply.body).into_owned()
    }

    async fn metric(&self, name: &str) -> f64 {
        sample(&self.metrics().await, name).unwrap_or(f64::NAN)
    }
}

/// The value of an unlabelled series, or of `name{labels}` written out exactly.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

async fn api_call(
    api: SocketAddr,
    method: &str,
    body: Option<serde_json::Value>,
    auth: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{api}/v1/revocations"))
        .header("x-authgate-operator", "fleet-test");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(&h1_client(), request.body(Full::new(payload)).unwrap()).await
}

async fn revoke(api: SocketAddr, entry: serde_json::Value) -> Reply {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let reply = api_call(api, "POST", Some(entry), Some(&bearer)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply
}

async fn unrevoke(api: SocketAddr, entry: serde_json::Value) -> Reply {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let reply = api_call(api, "DELETE", Some(entry), Some(&bearer)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply
}

/// Polls every instance until each answers `path` + `token` with `want` (status, reason);
/// returns the time it took for the slowest.
async fn until_all(
    instances: &[&Instance],
    path: &str,
    token: &str,
    want: (u16, &str),
) -> Duration {
    let started = Instant::now();
    for instance in instances {
        let reached = eventually_async(DEADLINE, || async {
            let (status, reason) = instance.call(path, token).await;
            status == want.0 && reason == want.1
        })
        .await;
        assert!(
            reached,
            "{} never answered {want:?}; it answers {:?}",
            instance.name,
            instance.call(path, token).await
        );
    }
    started.elapsed()
}

fn token_entry(setup: &Setup, sub: &str) -> serde_json::Value {
    serde_json::json!({"kind": "token", "issuer": setup.idp.issuer(), "jti": format!("jti-{sub}"), "expires": now() + 7200})
}

/// Runs the binary off the async workers, so an in-process gateway can answer it.
async fn run_cli(args: &[&str], token: &str) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("AUTHGATE_REVOCATION_TOKEN", token)
            .env("USER", "cli-test")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs the CLI, which must succeed, and returns the JSON it printed.
async fn run_cli_ok(args: &[&str], token: &str) -> serde_json::Value {
    let out = run_cli(args, token).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_reaches_every_instance() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = Redis::start("redis-propagation").await else {
        return;
    };
    let setup = setup().await;
    let config = setup.config(Some(&redis.url()));
    let a = Instance::start("a", &config).await;
    let b = Instance::start("b", &config).await;
    let c = Instance::start("c", &config).await;
    let all = [&a, &b, &c];

    // The API refuses a missing, a wrong and a non-Bearer credential, and changes nothing.
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token-xx"),
        Some("Basic YWRtaW46YWRtaW4="),
        Some(&format!("Bearer {ADMIN_TOKEN}x")[..]),
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let reply = api_call(a.api(), method, Some(token_entry(&setup, "alice")), auth).await;
            assert_eq!(reply.status, 401, "{method} with {auth:?}");
            assert!(reply.headers.contains_key("www-authenticate"));
        }
    }
    let alice = setup.token("alice");
    until_all(&all, "/echo/x", &alice, (200, "ok")).await;

    // Revoke one token through a: every instance refuses it.
    let reply = revoke(a.api(), token_entry(&setup, "alice")).await;
    assert_eq!(reply.json()["scope"], "fleet");
    let started = Instant::now();
    until_all(&all, "/echo/x", &alice, (401, "revoked_token")).await;
    let propagation = started.elapsed();
    println!("propagation to 3 instances (token, API on a): {propagation:?}");

    // "Log out everywhere" through b, a signing key through the CLI against c.
    let bob = setup.token("bob");
    let entry = serde_json::json!({"kind": "subject", "issuer": setup.idp.issuer(), "subject": "bob", "issued_before": now() + 1});
    revoke(b.api(), entry.clone()).await;
    let took = until_all(&all, "/echo/x", &bob, (401, "revoked_session")).await;
    println!("propagation to 3 instances (subject, API on b): {took:?}");

    let carol = setup.token("carol");
    let api = format!("http://{}", c.api());
    let printed = run_cli_ok(
        &[
            "revoke",
            "key",
            "--provider",
            "idp",
            "--kid",
            "k1",
            "--expires",
            "2h",
            "--reason",
            "leaked",
            "--api",
            &api,
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(printed["status"], "revoked");
    let took = until_all(&all, "/echo/x", &carol, (401, "revoked_key")).await;
    println!("propagation to 3 instances (key, CLI on c): {took:?}");

    let listed = run_cli_ok(&["revoke", "list", "--api", &api], ADMIN_TOKEN).await;
    assert_eq!(listed["count"], 3, "{listed}");
    let key_entry = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "key")
        .unwrap();
    assert_eq!(key_entry["by"], "cli-test");
    assert_eq!(key_entry["reason"], "leaked");

    let out = run_cli(
        &["revoke", "list", "--api", &api],
        "not-the-admin-token-not-the-admin-token",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // Removals propagate too.
    run_cli_ok(
        &[
            "unrevoke",
            "key",
            "--provider",
            "idp",
            "--kid",
            "k1",
            "--api",
            &api,
        ],
        ADMIN_TOKEN,
    )
    .await;
    until_all(&all, "/echo/x", &carol, (200, "ok")).await;
    let reply = unrevoke(c.api(), token_entry(&setup, "alice")).await;
    assert_eq!(reply.json()["status"], "removed");
    until_all(&all, "/echo/x", &alice, (200, "ok")).await;

    for instance in all {
        let text = instance.metrics().await;
        assert_eq!(
            sample(&text, "authgate_revocation_redis_connected"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "authgate_revocation_entries{source=\"redis\"}"),
            Some(1.0),
            "{}",
            instance.name
        );
        assert!(sample(&text, "authgate_revocation_apply_lag_seconds_count").unwrap() >= 5.0);
    }
    let text = a.metrics().await;
    assert!(
        sample(
            &text,
            "authgate_revocation_api_requests_total{op=\"add\",result=\"unauthorized\"}"
        )
        .unwrap()
            >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_the_list_enforced_and_resynchronises() {
    let _serial = SERIAL.lock().await;
    let Some(mut redis) = Redis::start("redis-outage").await else {
        return;
    };
    let setup = setup().await;
    let relay = Relay::start(redis.addr()).await;
    let a = Instance::start("a", &setup.config(Some(&redis.url()))).await;
    let b = Instance::start("b", &setup.config(Some(&relay.url()))).await;
    let both = [&a, &b];
    let alice = setup.token("alice");
    let bob = setup.token("bob");
    revoke(a.api(), token_entry(&setup, "alice")).await;
    until_all(&both, "/echo/x", &alice, (401, "revoked_token")).await;
    until_all(&both, "/strict/x", &bob, (200, "ok")).await;

    // Redis dies: the list stays enforced; the fail-closed route refuses once the window passes.
    redis.kill();
    let outage = Instant::now();
    for instance in both {
        let down = eventually_async(DEADLINE, || async {
            instance.metric("authgate_revocation_redis_connected").await == 0.0
        })
        .await;
        assert!(down, "{} never noticed the outage", instance.name);
    }
    println!(
        "outage noticed by both instances after {:?}",
        outage.elapsed()
    );
    until_all(&both, "/strict/x", &bob, (503, "revocations_unavailable")).await;
    println!(
        "fail-closed route answered 503 after {:?}",
        outage.elapsed()
    );
    for instance in both {
        assert_eq!(
            instance.call("/echo/x", &alice).await,
            (401, "revoked_token".into())
        );
        assert_eq!(instance.call("/echo/x", &bob).await, (200, "ok".into()));
        assert!(
            instance.ready().await,
            "a Redis outage must not turn readiness off"
        );
    }
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let reply = api_call(
        a.api(),
        "POST",
        Some(token_entry(&setup, "bob")),
        Some(&bearer),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason()),
        (503, "redis_unavailable".to_string())
    );

    // Redis returns (its data persisted): both resynchronise.
    redis.restart().await;
    let back = Instant::now();
    until_all(&both, "/strict/x", &bob, (200, "ok")).await;
    println!(
        "both instances resynchronised {:?} after Redis returned",
        back.elapsed()
    );
    for instance in both {
        assert_eq!(
            instance.call("/echo/x", &alice).await,
            (401, "revoked_token".into())
        );
        assert_eq!(
            instance.metric("authgate_revocation_data_loss_total").await,
            0.0
        );
    }

    // Cut b off alone; change the list through a (a remove and an add); b gets both on return.
    relay.cut();
    let noticed = eventually_async(DEADLINE, || async {
        b.metric("authgate_revocation_redis_connected").await == 0.0
    })
    .await;
    assert!(noticed, "b never noticed it was cut off");
    unrevoke(a.api(), token_entry(&setup, "alice")).await;
    revoke(a.api(), token_entry(&setup, "bob")).await;
    until_all(&[&a], "/echo/x", &bob, (401, "revoked_token")).await;
    until_all(&[&a], "/echo/x", &alice, (200, "ok")).await;
    assert_eq!(
        b.call("/echo/x", &bob).await,
        (200, "ok".into()),
        "b is cut off"
    );
    relay.restore();
    let rejoined = Instant::now();
    until_all(&[&b], "/echo/x", &bob, (401, "revoked_token")).await;
    until_all(&[&b], "/echo/x", &alice, (200, "ok")).await;
    println!(
        "changes made while b was cut off reached it {:?} after the link returned",
        rejoined.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_unrevokes_nothing_and_is_reported() {
    let _serial = SERIAL.lock().await;
    let Some(mut redis) = Redis::start("redis-loss").await else {
        return;
    };
    let setup = setup().await;
    let config = setup.config(Some(&redis.url()));
    let a = Instance::start("a", &config).await;
    let b = Instance::start("b", &config).await;
    let both = [&a, &b];
    let alice = setup.token("alice");
    let bob = setup.token("bob");
    revoke(a.api(), token_entry(&setup, "alice")).await;
    revoke(
        b.api(),
        serde_json::json!({"kind": "subject", "issuer": setup.idp.issuer(), "subject": "bob"}),
    )
    .await;
    until_all(&both, "/echo/x", &alice, (401, "revoked_token")).await;
    until_all(&both, "/echo/x", &bob, (401, "revoked_subject")).await;

    redis.kill();
    redis.wipe();
    redis.restart().await;
    let restarted = Instant::now();
    for instance in both {
        let reported = eventually_async(DEADLINE, || async {
            instance.metric("authgate_revocation_data_loss_total").await >= 1.0
                && instance.metric("authgate_revocation_redis_connected").await == 1.0
        })
        .await;
        assert!(reported, "{} never reported the data loss", instance.name);
        assert_eq!(
            instance.call("/echo/x", &alice).await,
            (401, "revoked_token".into())
        );
        assert_eq!(
            instance.call("/echo/x", &bob).await,
            (401, "revoked_subject".into())
        );
    }
    println!(
        "data loss reported by both instances {:?} after the empty restart",
        restarted.elapsed()
    );

    // The entries were written back: the list shows them, and a new instance enforces them.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let listed = api_call(a.api(), "GET", None, Some(&bearer)).await.json();
    assert_eq!(listed["count"], 2, "{listed}");
    let c = Instance::start("c", &config).await;
    assert_eq!(
        c.call("/echo/x", &alice).await,
        (401, "revoked_token".into())
    );
    assert_eq!(
        c.call("/echo/x", &bob).await,
        (401, "revoked_subject".into())
    );
    assert_eq!(c.metric("authgate_revocation_data_loss_total").await, 0.0);

    // And the fleet keeps working: a new revocation reaches all three.
    let carol = setup.token("carol");
    revoke(c.api(), token_entry(&setup, "carol")).await;
    until_all(&[&a, &b, &c], "/echo/x", &carol, (401, "revoked_token")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sid_is_refused_by_every_instance_and_other_sessions_pass() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = Redis::start("redis-sid").await else {
        return;
    };
    let setup = setup().await;
    let config = setup.config(Some(&redis.url()));
    let a = Instance::start("a", &config).await;
    let b = Instance::start("b", &config).await;
    let both = [&a, &b];
    let issuer = setup.idp.issuer();
    let in_session = |jti: &str, sid: Option<&str>| {
        let mut c = claims(&issuer, "alice");
        c["jti"] = jti.into();
        if let Some(sid) = sid {
            c["sid"] = sid.into();
        }
        setup.key.token(&c)
    };
    // Two tokens of one login session (say, before and after a refresh), one of the same user's
    // other session, and one without a sid.
    let first = in_session("a-1", Some("sid-1"));
    let refreshed = in_session("a-2", Some("sid-1"));
    let other_session = in_session("a-3", Some("sid-2"));
    let no_sid = in_session("a-4", None);
    for token in [&first, &refreshed, &other_session, &no_sid] {
        // Also puts each in the verified-token cache, which a revocation must not bypass.
        until_all(&both, "/echo/x", token, (200, "ok")).await;
    }

    // Revoked through a: b refuses every token of that session.
    let entry = serde_json::json!({
        "kind": "sid", "issuer": issuer, "sid": "sid-1", "expires": now() + 7200,
        "reason": "back-channel logout",
    });
    let reply = revoke(a.api(), entry).await;
    assert_eq!(reply.json()["status"], "revoked");
    assert_eq!(reply.json()["scope"], "fleet");
    let took = until_all(&[&b, &a], "/echo/x", &first, (401, "revoked_sid")).await;
    println!("propagation to 2 instances (sid, API on a): {took:?}");
    for instance in both {
        assert_eq!(
            instance.call("/echo/x", &refreshed).await,
            (401, "revoked_sid".into()),
            "{}",
            instance.name
        );
        assert_eq!(
            instance.call("/echo/x", &other_session).await,
            (200, "ok".into()),
            "{}",
            instance.name
        );
        assert_eq!(
            instance.call("/echo/x", &no_sid).await,
            (200, "ok".into()),
            "{}",
            instance.name
        );
    }

    // Listed through b as stored by a, and counted under its own kind and reason.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let listed = api_call(b.api(), "GET", None, Some(&bearer)).await.json();
    assert_eq!(listed["count"], 1, "{listed}");
    let stored = &listed["entries"][0];
    assert_eq!(
        (&stored["kind"], &stored["sid"], &stored["by"]),
        (&"sid".into(), &"sid-1".into(), &"fleet-test".into()),
        "{stored}"
    );
    let text = b.metrics().await;
    assert!(
        sample(&text, "authgate_denylist_hits_total{kind=\"sid\"}").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "authgate_auth_decisions_total{provider=\"idp\",reason=\"revoked_sid\",result=\"denied\"}"
        )
        .unwrap()
            >= 2.0
    );

    // Unrevoked with the CLI against b: a lets the session through again.
    let api = format!("http://{}", b.api());
    let printed = run_cli_ok(
        &[
            "unrevoke", "sid", "--issuer", &issuer, "--sid", "sid-1", "--api", &api,
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(printed["status"], "removed");
    let took = until_all(&[&a, &b], "/echo/x", &first, (200, "ok")).await;
    println!("propagation to 2 instances (sid removal, CLI on b): {took:?}");
    until_all(&both, "/echo/x", &refreshed, (200, "ok")).await;
}

#[tokio::test]
async fn without_redis_the_api_changes_this_instance_only_and_says_so() {
    let setup = setup().await;
    let a = Instance::start("local", &setup.config(None)).await;
    let alice = setup.token("alice");
    assert_eq!(a.call("/echo/x", &alice).await, (200, "ok".into()));
    for auth in [None, Some("Bearer nope")] {
        let reply = api_call(a.api(), "POST", Some(token_entry(&setup, "alice")), auth).await;
        assert_eq!(reply.status, 401);
    }
    let api = format!("http://{}", a.api());
    let issuer = setup.idp.issuer();
    let printed = run_cli_ok(
        &[
            "revoke",
            "token",
            "--issuer",
            &issuer,
            "--jti",
            "jti-alice",
            "--expires",
            "2030-01-01T00:00:00Z",
            "--api",
            &api,
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(printed["scope"], "local");
    assert_eq!(printed["entry"]["expires"], 1893456000);
    assert!(printed["note"]
        .as_str()
        .unwrap()
        .contains("this replica only"));
    assert_eq!(
        a.call("/echo/x", &alice).await,
        (401, "revoked_token".into())
    );
    run_cli_ok(
        &[
            "unrevoke",
            "token",
            "--issuer",
            &issuer,
            "--jti",
            "jti-alice",
            "--api",
            &api,
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(a.call("/echo/x", &alice).await, (200, "ok".into()));

    // Bad entries are refused with a reason, and nothing changes.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for bad in [
        serde_json::json!({"kind": "token", "issuer": issuer}),
        serde_json::json!({"kind": "token", "issuer": issuer, "jti": "x", "expires": 5}),
        serde_json::json!({"kind": "user", "issuer": issuer, "subject": "x"}),
        serde_json::json!({"kind": "subject", "issuer": issuer, "subjet": "x"}),
        serde_json::json!({"kind": "sid", "issuer": issuer}),
        serde_json::json!({"kind": "sid", "issuer": issuer, "sid": "s", "subject": "x"}),
    ] {
        let reply = api_call(a.api(), "POST", Some(bad.clone()), Some(&bearer)).await;
        assert_eq!(
            (reply.status, reply.reason()),
            (400, "invalid_entry".into()),
            "{bad}"
        );
    }
    let listed = api_call(a.api(), "GET", None, Some(&bearer)).await.json();
    assert_eq!(listed["count"], 0);
}

#[test]
fn check_refuses_bad_revocation_settings_with_their_location() {
    let dir = temp_dir("revocation-check");
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let base = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n";
    let cases: [(&str, &str); 5] = [
        ("[revocation]\nredis_url = \"http://cache:6379\"\n", "5:13: redis_url \"http://cache:6379\" must start with redis://"),
        ("[revocation]\n[revocation.api]\naddress = \"127.0.0.1:9902\"\ntoken = \"short\"\n", "7:9: the revocation API token must be at least 32 bytes"),
        ("[revocation]\non_unreachable = \"fail_closed\"\n", "5:18: on_unreachable applies to the Redis source only"),
        ("[revocation]\non_unreachable = \"fail-closed\"\n", "5:18: unknown variant `fail-closed`, did you mean `fail_closed`?"),
        ("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"public\"\nrevocation_required = true\n", "4:1: route \"r\": revocation_required needs [revocation] redis_url"),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let path = write(&format!("c{i}.toml"), &format!("{base}{extra}"));
        let errors = authgate::config::load(&path).err().unwrap().to_string();
        let expected = format!("{}:{want}", path.display());
        assert!(errors.contains(&expected), "{errors}\nwanted {expected}");
    }
    // The password never appears in a message.
    let path = write(
        "pw.toml",
        &format!("{base}[revocation]\nredis_url = \"redis://:hunter2@cache:notaport\"\n"),
    );
    let errors = authgate::config::load(&path).err().unwrap().to_string();
    assert!(!errors.contains("hunter2"), "{errors}");
}

/// Browser sessions in Redis: a login through one instance is a session on every instance
/// (the cookie holds only a sealed id), a logout through one ends it everywhere (the entry is
/// deleted), and a Redis outage answers 503 without throwing the cookie away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_redis_are_fleet_wide_and_a_logout_ends_them_everywhere() {
    use authgate::demo::issuer::OidcClient;
    use common::jar::{location, Browser};
    let _one = SERIAL.lock().await;
    let Some(mut redis) = Redis::start("fleet-sessions").await else {
        return;
    };
    let up = echo().await;
    let idp = JwksServer::start(Vec::new()).await.unwrap();
    idp.set_signing_key(SigningKey::generate(Algorithm::ES256, Some("idp-1")).unwrap());
    idp.set_auto_login(Some("alice"));
    let (port_a, port_b) = (free_port(), free_port());
    let origin = |port: u16| format!("http://127.0.0.1:{port}");
    idp.register_client(OidcClient {
        client_id: "gw".into(),
        client_secret: Some("gw-secret".into()),
        redirect_uris: vec![format!("{}/.authgate/callback", origin(port_a))],
        post_logout_redirect_uris: vec![format!("{}/", origin(port_a))],
        backchannel_logout_uri: None,
    });
    let config = |port: u16| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n[reload]\nwatch = false\n\n\
             [revocation]\nredis_url = \"{url}\"\nkey_prefix = \"fleet-test:\"\n\n\
             [session]\nkeys = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\nstore = \"redis\"\n\
             cookie_name = \"authgate_s\"\nlogin_state_cookie_name = \"authgate_l\"\ncookie_secure = false\n\n\
             [[provider]]\nname = \"idp\"\nissuer = \"{issuer}\"\ndiscovery = true\naudiences = [\"demo-api\"]\nalgorithms = [\"ES256\"]\n\n\
             [[login]]\nname = \"idp\"\nprovider = \"idp\"\nclient_id = \"gw\"\nclient_secret = \"gw-secret\"\n\
             public_origin = \"{public}\"\nrefresh_margin = \"2s\"\n\n\
             [[route]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"http://{up}\"\nlogin = \"idp\"\nforward_access_token = true\n",
            url = redis.url(),
            issuer = idp.issuer(),
            // One public origin for the fleet, as behind a load balancer.
            public = origin(port_a),
        )
    };
    let _a = start(&config(port_a)).await;
    let _b = start(&config(port_b)).await;

    idp.set_token_lifetimes(Duration::from_secs(4), Duration::from_secs(300));
    let mut browser = Browser::default();
    let done = browser
        .log_in(&origin(port_a), &idp.issuer(), "/app/")
        .await;
    assert_eq!(done.status, 302, "{}", String::from_utf8_lossy(&done.body));
    let cookie = browser.session_cookies();
    assert_eq!(cookie.len(), 1, "one small cookie: the session is in Redis");
    println!(
        "Redis store: session cookie {} bytes ({}=...)",
        cookie[0].1.len(),
        cookie[0].0
    );
    assert!(cookie[0].1.len() < 200);
    for port in [port_a, port_b] {
        let page = browser
            .get(&format!("{}/app/x", origin(port)), "application/json")
            .await;
        assert_eq!(page.status, 200, "instance on {port}");
        assert_eq!(page.upstream_header("x-auth-subject"), vec!["alice"]);
    }

    // The access token the session holds before its refresh.
    let before = browser
        .get(
            &format!("{}/app/before", origin(port_a)),
            "application/json",
        )
        .await
        .upstream_header("authorization");
    // Due for a refresh, with requests at both replicas at once: one refresh for the fleet
    // (the IdP rotates refresh tokens, so a second would end the session).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // A slow IdP, so the replicas' refreshes would overlap without the lock.
    idp.set_token_endpoint_fault(Some(authgate::demo::issuer::TokenFault::Slow(300)));
    let grants = idp.refresh_grants();
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let mut b = browser.clone();
            let url = format!("{}/app/r{i}", origin([port_a, port_b][i % 2]));
            tokio::spawn(async move {
                let reply = b.get(&url, "application/json").await;
                (reply.status, reply.upstream_header("authorization"))
            })
        })
        .collect();
    let mut forwarded = Vec::new();
    for request in requests {
        let (status, authorization) = request.await.unwrap();
        assert_eq!(status, 200);
        forwarded.push(authorization);
    }
    // Every request, on the replica that refreshed and on the ones that waited, went upstream
    // with the new access token: none was served on the old one as a "deferred" refresh.
    assert!(
        forwarded.iter().all(|a| a == &forwarded[0] && a != &before),
        "{forwarded:?}"
    );
    idp.set_token_endpoint_fault(None);
    assert_eq!(
        idp.refresh_grants() - grants,
        1,
        "one refresh across two replicas"
    );
    for port in [port_a, port_b] {
        let page = browser
            .get(&format!("{}/app/after", origin(port)), "application/json")
            .await;
        assert_eq!(page.status, 200, "the refreshed session serves on {port}");
    }

    // Redis down: the session cannot be checked, so 503, and the cookie stays.
    redis.kill();
    let mut during = browser.clone();
    let reply = during
        .get(&format!("{}/app/x", origin(port_b)), "application/json")
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.reason(), "session_store_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(during.session_cookies(), cookie, "the cookie is kept");
    redis.restart().await;
    let back = eventually_async(DEADLINE, || {
        let mut b = browser.clone();
        let url = format!("{}/app/x", origin(port_b));
        async move { b.get(&url, "application/json").await.status == 200 }
    })
    .await;
    assert!(back, "the session is found again once Redis is back");

    // Logout through A; B no longer finds the session.
    let copy = browser.clone();
    let out = browser
        .post(
            &format!("{}/.authgate/logout", origin(port_a)),
            Some(&origin(port_a)),
        )
        .await;
    assert_eq!(out.status, 302);
    assert!(location(&out).starts_with(&format!("{}/end_session?", idp.issuer())));
    let mut copy = copy;
    let after = copy
        .get(&format!("{}/app/x", origin(port_b)), "application/json")
        .await;
    assert_eq!(after.status, 401);
    assert!(
        ["session_unknown", "revoked_token"].contains(&after.reason().as_str()),
        "{}",
        after.reason()
    );
}
