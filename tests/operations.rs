//! Operating the gateway: the admin listener, Prometheus metrics (checked with promtool), hot
//! reload under load, by file change (a Kubernetes-style `..data` symlink swap) and by SIGHUP,
//! certificate rotation, request ids, and logs that never hold a credential.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;

const LONG: Duration = Duration::from_secs(20);

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> Reply {
    send(&h1_client(), get(&format!("http://{addr}{path}"))).await
}

/// The value of one series in a Prometheus text exposition, by its exact label set.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let found: HashMap<&str, &str> = rest
                .trim_end_matches('}')
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            let wanted: HashMap<&str, &str> = labels.iter().copied().collect();
            (found == wanted).then(|| value.parse().ok())?
        })
}

fn config_with_admin(extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n{extra}"
    )
}

#[tokio::test]
async fn admin_serves_health_readiness_and_nothing_else() {
    let (_key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    idp.set_down(true);
    let up = echo().await;
    let gw = start(&config_with_admin(&format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"http://{up}\"\n",
        provider_toml("main", &idp, "\"ES256\"")
    )))
    .await;
    let admin = gw.admin_addr.unwrap();
    assert_ne!(admin, gw.addrs[0]);

    assert_eq!(admin_get(admin, "/healthz").await.status, 200);
    let not_ready = admin_get(admin, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.json()["reason"], "keys_unavailable");
    assert_eq!(not_ready.json()["providers"][0], "main");

    idp.set_down(false);
    assert!(
        eventually_async(LONG, || async {
            admin_get(admin, "/readyz").await.status == 200
        })
        .await,
        "never ready once the IdP answered"
    );
    // A transient IdP failure that the fetched keys cover does not flip readiness back.
    idp.set_down(true);
    assert_eq!(admin_get(admin, "/readyz").await.status, 200);

    assert_eq!(admin_get(admin, "/other").await.status, 404);
    let post = send(
        &h1_client(),
        http::Request::post(format!("http://{admin}/metrics"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 405);
    // The public listener knows nothing of the admin paths.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let public = send(&h1_client(), get(&format!("http://{}{path}", gw.addrs[0]))).await;
        assert_eq!(public.status, 404, "{path} on the public listener");
        assert_eq!(public.reason(), "no_route");
    }

    gw.health.begin_shutdown();
    let stopping = admin_get(admin, "/readyz").await;
    assert_eq!(stopping.status, 503);
    assert_eq!(stopping.json()["reason"], "shutting_down");
    assert_eq!(admin_get(admin, "/healthz").await.status, 200);
}

/// `promtool check metrics` on a scrape; `None` when promtool is not installed outside CI.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install promtool (Debian's prometheus package; see .ci/run): {error}"
            );
            eprintln!("skipped promtool: not installed (apt-get install prometheus)");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), said))
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_every_decision_by_reason() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let (other_key, _) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let gw = start(&config_with_admin(&format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"http://{up}\"\n\
         [route.policy]\nscopes_all = [\"write\"]\n\n\
         [[route]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"http://{up}\"\nauth = \"required\"\n\n\
         [[route]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"http://{closed}\"\nauth = \"public\"\n",
        provider_toml("main", &idp, "\"ES256\"")
    )))
    .await;
    let base = format!("http://{}", gw.addrs[0]);
    let client = h1_client();
    let mut scoped = claims(&idp.issuer(), "alice");
    scoped["scope"] = "write".into();
    let good = key.token(&scoped);
    let mut expired = claims(&idp.issuer(), "bob");
    expired["exp"] = (now() - 3600).into();
    let expired = key.token(&expired);
    let unscoped = key.token(&claims(&idp.issuer(), "carol"));
    let forged = other_key.token(&scoped);
    assert!(
        eventually_async(LONG, || async {
            admin_get(gw.admin_addr.unwrap(), "/readyz").await.status == 200
        })
        .await
    );

    let cases: [(String, Option<&str>, u16); 8] = [
        (format!("{base}/api/a"), Some(&good), 200),
        (format!("{base}/api/a"), Some(&good), 200),
        (format!("{base}/api/a"), None, 401),
        (format!("{base}/api/a"), Some(&expired), 401),
        (format!("{base}/api/a"), Some(&forged), 401),
        (format!("{base}/api/a"), Some(&unscoped), 403),
        (format!("{base}/nowhere"), None, 404),
        (format!("{base}/down/x"), None, 502),
    ];
    for (uri, token, status) in &cases {
        let req = match token {
            Some(token) => bearer(uri, token),
            None => get(uri),
        };
        assert_eq!(send(&client, req).await.status, *status, "{uri}");
    }

    let scrape = admin_get(gw.admin_addr.unwrap(), "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    if let Some((ok, said)) = promtool_check(&text) {
        assert!(ok, "promtool check metrics failed:\n{said}\n{text}");
    }
    let decision = |provider: &str, result: &str, reason: &str| {
        sample(
            &text,
            "authgate_auth_decisions_total",
            &[
                ("provider", provider),
                ("result", result),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(decision("main", "allowed", "ok"), Some(2.0), "{text}");
    assert_eq!(decision("-", "denied", "missing_credential"), Some(1.0));
    // Refused after its issuer chose a provider: counted under that provider.
    assert_eq!(decision("main", "denied", "token_expired"), Some(1.0));
    assert_eq!(decision("main", "denied", "bad_signature"), Some(1.0));
    assert_eq!(decision("main", "denied", "insufficient_scope"), Some(1.0));
    let requests = |route: &str, class: &str| {
        sample(
            &text,
            "authgate_requests_total",
            &[("route", route), ("method", "GET"), ("status_class", class)],
        )
    };
    assert_eq!(requests("api", "2xx"), Some(2.0));
    assert_eq!(requests("api", "4xx"), Some(4.0));
    assert_eq!(requests("-", "4xx"), Some(1.0));
    assert_eq!(requests("down", "5xx"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "authgate_upstream_errors_total",
            &[("route", "down"), ("kind", "upstream_unreachable")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "authgate_request_duration_seconds_count",
            &[("route", "api")]
        ),
        Some(6.0)
    );
    assert_eq!(
        sample(
            &text,
            "authgate_upstream_duration_seconds_count",
            &[("route", "api")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "authgate_token_cache_hits_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "authgate_jwks_fetches_total",
            &[("provider", "main"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "authgate_jwks_keys", &[("provider", "main")]),
        Some(1.0)
    );
    assert!(sample(
        &text,
        "authgate_jwks_last_success_age_seconds",
        &[("provider", "main")]
    )
    .is_some_and(|age| (0.0..60.0).contains(&age)));
    assert!(text.contains("authgate_config_info{sha256=\""));
    assert!(sample(&text, "authgate_connections_open", &[]).is_some());
    // Never a path, host, subject or token in a label.
    for leaked in ["/api/a", "/nowhere", "alice", good.as_str()] {
        assert!(!text.contains(leaked), "{leaked} in the metrics");
    }
}

/// A client retrying an expired token (a common failure loop) is refused from memory after the
/// first signature check; the memory keeps each route's provider rule, and a reload that
/// changes the provider's leeway judges the token afresh.
#[tokio::test]
async fn a_retried_expired_token_is_refused_without_another_signature_check() {
    let (_key_a, idp_a) = issuer_with_key(Algorithm::ES256, Some("a1")).await;
    let (key_b, idp_b) = issuer_with_key(Algorithm::ES256, Some("b1")).await;
    let up = echo().await;
    let dir = temp_dir("expired-memo");
    let path = dir.join("authgate.toml");
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\n";
    let gw = start_in(&dir, &two_provider_config(&idp_a, &idp_b, up, "30s", admin)).await;
    let base = format!("http://{}", gw.addrs[0]);
    let mut stale = claims(&idp_b.issuer(), "bob");
    stale["exp"] = (now() - 3600).into();
    let stale = key_b.token(&stale);
    let client = h1_client();
    let misses = || async {
        let text = admin_get(gw.admin_addr.unwrap(), "/metrics").await.body;
        sample(
            std::str::from_utf8(&text).unwrap(),
            "authgate_token_cache_misses_total",
            &[],
        )
    };
    for _ in 0..3 {
        let reply = send(&client, bearer(&format!("{base}/b/x"), &stale)).await;
        assert_eq!(reply.status, 401);
        assert!(reply.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("The access token expired"));
    }
    assert_eq!(
        misses().await,
        Some(1.0),
        "one signature check for three tries"
    );
    let elsewhere = send(&client, bearer(&format!("{base}/a/x"), &stale)).await;
    assert_eq!(elsewhere.status, 401);
    assert_eq!(elsewhere.reason(), "provider_not_accepted");

    std::fs::write(&path, two_provider_config(&idp_a, &idp_b, up, "2h", admin)).unwrap();
    gw.reloader.reload("test").await.unwrap();
    assert!(
        eventually_async(LONG, || async {
            send(&h1_client(), bearer(&format!("{base}/b/x"), &stale))
                .await
                .status
                == 200
        })
        .await,
        "within the new leeway the token is judged again and accepted"
    );
}

/// Writes a config for the reload tests: two providers, one route each, and `extra`.
fn two_provider_config(
    a: &authgate::demo::issuer::JwksServer,
    b: &authgate::demo::issuer::JwksServer,
    up: std::net::SocketAddr,
    b_leeway: &str,
    extra: &str,
) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n\
         [[provider]]\nname = \"a\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\nalgorithms = [\"ES256\"]\n\n\
         [[provider]]\nname = \"b\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\nalgorithms = [\"ES256\"]\nleeway = \"{b_leeway}\"\n\n\
         [[route]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"http://{up}\"\nproviders = [\"a\"]\n\n\
         [[route]]\nname = \"b\"\npath_prefix = \"/b\"\nupstream = \"http://{up}\"\nproviders = [\"b\"]\n\n{extra}",
        a.issuer(),
        a.jwks_uri(),
        b.issuer(),
        b.jwks_uri()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_and_refetches_only_changed_providers() {
    let (key_a, idp_a) = issuer_with_key(Algorithm::ES256, Some("a1")).await;
    let (key_b, idp_b) = issuer_with_key(Algorithm::ES256, Some("b1")).await;
    let up = echo().await;
    let dir = temp_dir("reload-load");
    let path = dir.join("authgate.toml");
    let good_one = two_provider_config(&idp_a, &idp_b, up, "30s", "");
    let good_two = two_provider_config(
        &idp_a,
        &idp_b,
        up,
        "30s",
        &format!("[[route]]\nname = \"extra\"\npath_prefix = \"/extra\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"),
    );
    let bad = [
        "[[listener]\naddress = \"127.0.0.1:0\"\n".to_string(),
        good_one.replace("path_prefix = \"/a\"", "path_prefx = \"/a\""),
        good_one.replace("providers = [\"b\"]", "providers = [\"nobody\"]"),
    ];
    let gw = start_in(&dir, &good_one).await;
    let base = format!("http://{}", gw.addrs[0]);
    let token_a = key_a.token(&claims(&idp_a.issuer(), "alice"));
    let token_b = key_b.token(&claims(&idp_b.issuer(), "bob"));
    assert!(
        eventually_async(LONG, || async {
            send(&h1_client(), bearer(&format!("{base}/a/x"), &token_a))
                .await
                .status
                == 200
                && send(&h1_client(), bearer(&format!("{base}/b/x"), &token_b))
                    .await
                    .status
                    == 200
        })
        .await
    );
    let fetches_before = (idp_a.jwks_fetches(), idp_b.jwks_fetches());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let (base, token_a, token_b) = (base.clone(), token_a.clone(), token_b.clone());
            tokio::spawn(async move {
                let client = h1_client();
                let mut i = 0u64;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let (uri, token) = if (i + worker) % 2 == 0 {
                        (format!("{base}/a/{i}"), &token_a)
                    } else {
                        (format!("{base}/b/{i}"), &token_b)
                    };
                    let reply = send(&client, bearer(&uri, token)).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if reply.status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();

    let mut refused = 0;
    let started = Instant::now();
    for round in 0..60 {
        let (text, should_load) = match round % 4 {
            0 => (good_two.clone(), true),
            2 => (good_one.clone(), true),
            _ => (bad[round % bad.len()].clone(), false),
        };
        std::fs::write(&path, &text).unwrap();
        let outcome = gw.reloader.reload("test").await;
        assert_eq!(outcome.is_ok(), should_load, "round {round}: {outcome:?}");
        if outcome.is_err() {
            refused += 1;
        }
        let extra = send(&h1_client(), get(&format!("{base}/extra/x")))
            .await
            .status;
        let in_force_has_extra = round % 4 == 0 || round % 4 == 1;
        assert_eq!(extra == 200, in_force_has_extra, "round {round}");
    }
    let reload_time = started.elapsed();
    // Changing provider b's settings is the one change that may refetch, and only b.
    std::fs::write(&path, two_provider_config(&idp_a, &idp_b, up, "45s", "")).unwrap();
    gw.reloader.reload("test").await.unwrap();
    assert!(
        eventually_async(LONG, || async {
            send(&h1_client(), bearer(&format!("{base}/b/x"), &token_b))
                .await
                .status
                == 200
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let fetches = (
        idp_a.jwks_fetches() - fetches_before.0,
        idp_b.jwks_fetches() - fetches_before.1,
    );
    println!(
        "reload under load: 61 reloads ({refused} refused) in {reload_time:?}, {sent} requests, \
         {failed} failed, JWKS fetches after start: a={} b={}",
        fetches.0, fetches.1
    );
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(sent > 100, "too little load to mean anything: {sent}");
    assert_eq!(refused, 30);
    assert_eq!(
        fetches,
        (0, 1),
        "only the changed provider is fetched again"
    );
    let text = gw.metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "authgate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(31.0)
    );
    assert_eq!(
        sample(
            &text,
            "authgate_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(30.0)
    );
}

/// Replaces `dir/..data` with a link to a fresh directory holding `files`, the way the kubelet
/// updates a ConfigMap mount: the visible names are links through `..data`, which changes in
/// one rename.
fn kubelet_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    for (name, content) in files {
        std::fs::write(data.join(name), content).unwrap();
        let visible = dir.join(name);
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &visible).unwrap();
        }
    }
    let staging = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &staging).unwrap();
    std::fs::rename(&staging, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_configmap_symlink_swap_reloads_and_a_bad_one_keeps_serving() {
    let up = echo().await;
    let dir = temp_dir("configmap");
    let route = |name: &str| {
        format!("[[route]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"http://{up}\"\nauth = \"public\"\n")
    };
    let head = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[reload]\ninterval = \"50ms\"\n\n";
    kubelet_update(
        &dir,
        1,
        &[("authgate.toml", &format!("{head}{}", route("one")))],
    );
    let config = authgate::config::load(&dir.join("authgate.toml")).unwrap();
    let gw = Gateway::start(&config).await.unwrap();
    let base = format!("http://{}", gw.addrs[0]);
    assert_eq!(
        send(&h1_client(), get(&format!("{base}/one"))).await.status,
        200
    );
    assert_eq!(
        send(&h1_client(), get(&format!("{base}/two"))).await.status,
        404
    );

    kubelet_update(
        &dir,
        2,
        &[(
            "authgate.toml",
            &format!("{head}{}{}", route("one"), route("two")),
        )],
    );
    assert!(
        eventually_async(LONG, || async {
            send(&h1_client(), get(&format!("{base}/two"))).await.status == 200
        })
        .await,
        "the swapped config was never loaded"
    );

    kubelet_update(&dir, 3, &[("authgate.toml", "[[route]]\nname = \n")]);
    assert!(
        eventually_async(LONG, || async {
            let text = gw.metrics.encode().unwrap();
            sample(
                &text,
                "authgate_config_reloads_total",
                &[("result", "failure")],
            ) == Some(1.0)
        })
        .await,
        "the bad config was never tried"
    );
    assert_eq!(
        send(&h1_client(), get(&format!("{base}/two"))).await.status,
        200
    );
    // Reported once, not at every poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = gw.metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "authgate_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_changed_listener_is_refused_as_restart_required() {
    let up = echo().await;
    let dir = temp_dir("restart-required");
    let route = format!("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n");
    let gw = start_in(
        &dir,
        &format!("[[listener]]\naddress = \"127.0.0.1:0\"\n[reload]\nwatch = false\n{route}"),
    )
    .await;
    std::fs::write(
        dir.join("authgate.toml"),
        format!("[[listener]]\naddress = \"127.0.0.2:0\"\n[reload]\nwatch = false\n{route}"),
    )
    .unwrap();
    let error = gw.reloader.reload("test").await.unwrap_err();
    assert!(error.contains("restart required"), "{error}");
    assert!(error.contains("[[listener]]"), "{error}");
    let reply = send(&h1_client(), get(&format!("http://{}/x", gw.addrs[0]))).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_renewed_certificate_serves_the_next_handshake() {
    let up = echo().await;
    let dir = temp_dir("cert-rotation");
    let first = make_cert(&dir);
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
         [reload]\nwatch = false\n\n\
         [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
    );
    let gw = start_in(&dir, &toml).await;
    let uri = format!("https://localhost:{}/x", gw.addrs[0].port());
    assert_eq!(
        send(&tls_client(&first, false), get(&uri)).await.status,
        200
    );

    // cert-manager renews in place: same paths, new key and certificate.
    let second = make_cert(&dir);
    gw.reloader.reload("test").await.unwrap();
    assert_eq!(
        send(&tls_client(&second, false), get(&uri)).await.status,
        200
    );
    let stale = tokio::time::timeout(LONG, tls_client(&first, false).request(get(&uri)))
        .await
        .unwrap();
    assert!(stale.is_err(), "the old certificate is still served");
}

#[tokio::test]
async fn request_ids_are_generated_kept_from_trusted_proxies_and_returned_on_errors() {
    let up = echo().await;
    let route = format!("[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://{up}\"\nauth = \"public\"\n");
    let untrusted = start(&format!("[[listener]]\naddress = \"127.0.0.1:0\"\n{route}")).await;
    let trusted = start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[[listener]]\naddress = \"127.0.0.1:0\"\n{route}"
    ))
    .await;
    let with_id = |addr: std::net::SocketAddr, path: &str, id: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .header("x-request-id", id)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    let reply = send(
        &h1_client(),
        get(&format!("http://{}/r/x", untrusted.addrs[0])),
    )
    .await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(
        reply.upstream_header("x-request-id"),
        std::slice::from_ref(&id)
    );

    let reply = send(
        &h1_client(),
        with_id(untrusted.addrs[0], "/r/x", "forged-by-client"),
    )
    .await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "forged-by-client");
    assert_eq!(reply.upstream_header("x-request-id"), [id]);

    let reply = send(
        &h1_client(),
        with_id(trusted.addrs[0], "/r/x", "from-the-edge-1"),
    )
    .await;
    assert_eq!(reply.headers["x-request-id"], "from-the-edge-1");
    assert_eq!(reply.upstream_header("x-request-id"), ["from-the-edge-1"]);
    let reply = send(
        &h1_client(),
        with_id(trusted.addrs[0], "/r/x", "bad id, with spaces"),
    )
    .await;
    assert_ne!(reply.headers["x-request-id"], "bad id, with spaces");

    // Error responses carry one too.
    let reply = send(
        &h1_client(),
        get(&format!("http://{}/nowhere", untrusted.addrs[0])),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.headers["x-request-id"].len(), 32);
    // W3C trace context passes through unchanged.
    let reply = send(
        &h1_client(),
        http::Request::get(format!("http://{}/r/x", untrusted.addrs[0]))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("tracestate", "vendor=x")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.upstream_header("traceparent"),
        ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
    );
    assert_eq!(reply.upstream_header("tracestate"), ["vendor=x"]);
}

/// The binary's config for the log and signal tests, with the IdP's provider and a session
/// cookie, written to `dir`.
fn binary_config(
    dir: &Path,
    idp: &authgate::demo::issuer::JwksServer,
    up: std::net::SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("authgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nshutdown_delay = \"2s\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n\
             [auth]\nsession_cookie = \"sess\"\n\n{}\n\
             [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"http://{up}\"\n\n{extra}",
            provider_toml("main", idp, "\"ES256\"")
        ),
    )
    .unwrap();
    path
}

fn events_until(
    logs: &std::sync::mpsc::Receiver<serde_json::Value>,
    seen: &mut Vec<serde_json::Value>,
    deadline: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        match logs.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => {
                let hit = done(&event);
                seen.push(event);
                if hit {
                    return true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_bad_config_keeps_serving_and_sigterm_turns_readiness_off() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let dir = temp_dir("sighup");
    let config = binary_config(&dir, &idp, up, "");
    let (mut child, addr, logs) = spawn_gateway_with(std::process::Command::new(BIN), &config);
    let mut seen = Vec::new();
    assert!(events_until(&logs, &mut seen, LONG, |e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("admin listening"))));
    let admin: std::net::SocketAddr = seen.last().unwrap()["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token = key.token(&claims(&idp.issuer(), "alice"));
    assert!(
        eventually_async(LONG, || async {
            send(
                &h1_client(),
                bearer(&format!("http://{addr}/api/x"), &token),
            )
            .await
            .status
                == 200
        })
        .await
    );
    assert_eq!(
        send(&h1_client(), get(&format!("http://{addr}/new/x")))
            .await
            .status,
        404
    );

    binary_config(
        &dir,
        &idp,
        up,
        &format!("[[route]]\nname = \"new\"\npath_prefix = \"/new\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"),
    );
    signal(&child, "HUP");
    assert!(events_until(&logs, &mut seen, LONG, |e| e["message"]
        == "config reloaded"));
    assert_eq!(
        send(&h1_client(), get(&format!("http://{addr}/new/x")))
            .await
            .status,
        200
    );

    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = 5\n",
    )
    .unwrap();
    signal(&child, "HUP");
    assert!(events_until(&logs, &mut seen, LONG, |e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("config reload refused"))));
    let refused = seen.last().unwrap();
    let errors = refused["errors"].as_str().unwrap();
    assert!(errors.contains("authgate.toml:4:"), "{errors}");
    assert_eq!(
        send(&h1_client(), get(&format!("http://{addr}/new/x")))
            .await
            .status,
        200
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );

    assert_eq!(admin_get(admin, "/readyz").await.status, 200);
    signal(&child, "TERM");
    assert!(
        eventually_async(LONG, || async {
            admin_get(admin, "/readyz").await.status == 503
        })
        .await,
        "readiness did not turn off at SIGTERM"
    );
    // Still serving during the shutdown delay.
    assert_eq!(
        send(&h1_client(), get(&format!("http://{addr}/new/x")))
            .await
            .status,
        200
    );
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("gateway did not exit after SIGTERM");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_any_log_even_at_trace_level() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k1")).await;
    let up = echo().await;
    let dir = temp_dir("secrets");
    let config = binary_config(
        &dir,
        &idp,
        up,
        "[[route]]\nname = \"spoof\"\npath_prefix = \"/spoof\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"public\"\n",
    );
    let mut command = std::process::Command::new(BIN);
    command.env("RUST_LOG", "trace");
    let (mut child, addr, logs) = spawn_gateway_with(command, &config);
    let valid = key.token(&claims(&idp.issuer(), "alice"));
    let mut forged_claims = claims(&idp.issuer(), "mallory");
    forged_claims["exp"] = (now() - 10).into();
    let expired = key.token(&forged_claims);
    let secrets = [
        valid.clone(),
        expired.clone(),
        "c2VjcmV0LWJhc2ljLXBhc3N3b3Jk".to_string(),
        "cookie-secret-value-123".to_string(),
    ];
    assert!(
        eventually_async(LONG, || async {
            send(
                &h1_client(),
                bearer(&format!("http://{addr}/api/x"), &valid),
            )
            .await
            .status
                == 200
        })
        .await
    );
    let h2 = h2c_client();
    let requests = [
        bearer(&format!("http://{addr}/api/x"), &valid),
        bearer(&format!("http://{addr}/api/x"), &expired),
        http::Request::get(format!("http://{addr}/api/x"))
            .header("authorization", format!("Basic {}", secrets[2]))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
        http::Request::get(format!("http://{addr}/api/x"))
            .header("cookie", format!("sess={valid}; other={}", secrets[3]))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
        http::Request::get(format!("http://{addr}/spoof/x"))
            .header("authorization", format!("Bearer {valid}"))
            .header("x-auth-subject", "root")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    ];
    for req in requests {
        let (parts, body) = req.into_parts();
        let again = http::Request::from_parts(parts.clone(), body.clone());
        send(&h1_client(), http::Request::from_parts(parts, body)).await;
        send(&h2, again).await;
    }
    signal(&child, "TERM");
    let _ = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = logs.try_iter().collect();
    assert!(
        events.len() > 50,
        "trace logging produced only {} lines",
        events.len()
    );
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    for secret in &secrets {
        // The signature and payload segments on their own too.
        for piece in secret.split('.').filter(|p| p.len() >= 16) {
            assert!(!text.contains(piece), "a credential reached the log");
        }
    }
    // The spoof warning names its request.
    let spoof = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("stripped identity headers"))
        })
        .expect("no spoof warning");
    let id = spoof["span"]["request_id"].as_str().unwrap();
    assert!(events
        .iter()
        .any(|e| e["message"] == "request" && e["request_id"] == id && e["path"] == "/spoof/x"));
}
