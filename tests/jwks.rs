//! The JWKS cache against a real IdP on loopback that rotates keys, goes down, and counts its
//! fetches. Deadlines are generous; no test asserts how fast anything happens.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

async fn gateway(idp: &JwksServer, provider_extra: &str) -> Gateway {
    let up = echo().await;
    start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"
{}{provider_extra}
[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
"#,
        provider_toml("main", idp, "\"RS256\", \"ES256\"")
    ))
    .await
}

async fn status(gw: &Gateway, token: &str) -> (u16, String) {
    let reply = send(
        &h1_client(),
        bearer(&format!("http://{}/x", gw.addrs[0]), token),
    )
    .await;
    let reason = if reply.status == 200 {
        String::new()
    } else {
        reply.reason()
    };
    (reply.status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_concurrent_requests_has_zero_failures() {
    let old = Arc::new(SigningKey::generate(Algorithm::RS256, Some("old")).unwrap());
    let new = Arc::new(SigningKey::generate(Algorithm::ES256, Some("new")).unwrap());
    let idp = JwksServer::start(vec![old.public_jwk(true).unwrap()])
        .await
        .unwrap();
    let gw = Arc::new(gateway(&idp, "jwks_unknown_kid_interval = \"300ms\"").await);
    let issuer = idp.issuer();
    let rotated = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (gw, old, new, rotated, failures, successes, stop, issuer) = (
            gw.clone(),
            old.clone(),
            new.clone(),
            rotated.clone(),
            failures.clone(),
            successes.clone(),
            stop.clone(),
            issuer.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                // Distinct subjects so every token is verified, not served from the cache.
                let claims = claims(&issuer, &format!("w{worker}-{n}"));
                let token = if rotated.load(Ordering::SeqCst) {
                    new.token(&claims)
                } else {
                    old.token(&claims)
                };
                match status(&gw, &token).await {
                    (200, _) => successes.fetch_add(1, Ordering::SeqCst),
                    (code, reason) => {
                        eprintln!("failure during rotation: {code} {reason}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
                n += 1;
            }
        }));
    }
    // Past the 300ms window after the startup fetch, so the first token with the new kid may
    // start a fetch (inside the window it would be refused at once, without waiting).
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The IdP publishes the new key and starts signing with it at the same moment.
    idp.set_keys(vec![
        old.public_jwk(true).unwrap(),
        new.public_jwk(true).unwrap(),
    ]);
    rotated.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Then retires the old key.
    idp.set_keys(vec![new.public_jwk(true).unwrap()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during a key rotation"
    );
    assert!(
        successes.load(Ordering::SeqCst) > 20,
        "too few requests to say anything"
    );
    // Startup fetch + one refetch for the new kid (a background refresh may add one more).
    assert!(idp.jwks_fetches() <= 4, "fetches: {}", idp.jwks_fetches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_is_bounded_by_the_refetch_floor() {
    let (key, idp) = issuer_with_key(Algorithm::RS256, Some("real")).await;
    let floor = Duration::from_millis(500);
    let gw = Arc::new(gateway(&idp, "jwks_unknown_kid_interval = \"500ms\"").await);
    let issuer = idp.issuer();
    let flooder = Arc::new(SigningKey::generate(Algorithm::RS256, None).unwrap());
    assert!(eventually(Duration::from_secs(10), || idp.jwks_fetches() >= 1).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (gw, flooder, issuer) = (gw.clone(), flooder.clone(), issuer.clone());
        tasks.push(tokio::spawn(async move {
            let header =
                serde_json::json!({"alg": "RS256", "kid": format!("random-{i}")}).to_string();
            let token = flooder.sign_raw(&header, &claims(&issuer, "flood").to_string());
            status(&gw, &token).await
        }));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for task in tasks {
        let (code, reason) = task.await.unwrap();
        assert_eq!((code, reason.as_str()), (401, "unknown_kid"));
    }
    let elapsed = started.elapsed();
    let allowed = 1 + 1 + (elapsed.as_millis() / floor.as_millis()) as u64;
    assert!(
        idp.jwks_fetches() <= allowed,
        "{} fetches in {elapsed:?} with a {floor:?} floor (allowed {allowed})",
        idp.jwks_fetches()
    );
    // The real key still works afterwards.
    assert_eq!(status(&gw, &key.token(&claims(&issuer, "ok"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_outage_keeps_the_last_good_keys_until_max_staleness() {
    let (key, idp) = issuer_with_key(Algorithm::RS256, Some("k")).await;
    let gw = gateway(
        &idp,
        "jwks_refresh_interval = \"100ms\"\njwks_min_refresh_interval = \"100ms\"\njwks_unknown_kid_interval = \"100ms\"\njwks_max_staleness = \"3s\"",
    )
    .await;
    let issuer = idp.issuer();
    assert_eq!(status(&gw, &key.token(&claims(&issuer, "a"))).await.0, 200);
    idp.set_down(true);
    let fetches_at_outage = idp.jwks_fetches();
    assert!(
        eventually(Duration::from_secs(10), || idp.jwks_fetches()
            > fetches_at_outage + 1)
        .await
    );
    // Failed refreshes did not throw the good keys away.
    assert_eq!(status(&gw, &key.token(&claims(&issuer, "b"))).await.0, 200);
    // An unknown kid whose refetch fails is a 503: the client should retry, not discard.
    let rotated = SigningKey::generate(Algorithm::RS256, Some("unpublished")).unwrap();
    let reply = send(
        &h1_client(),
        bearer(
            &format!("http://{}/x", gw.addrs[0]),
            &rotated.token(&claims(&issuer, "c")),
        ),
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (503, "keys_unavailable")
    );
    assert_eq!(reply.headers["retry-after"], "5");
    // Past max staleness nothing verifies: 503, not 401.
    let stale = eventually_async(Duration::from_secs(15), || async {
        status(&gw, &key.token(&claims(&issuer, "d"))).await
            == (503, "keys_unavailable".to_string())
    })
    .await;
    assert!(stale, "keys were used beyond jwks_max_staleness");
    // The IdP comes back: keys are fetched again and tokens verify.
    idp.set_down(false);
    let back = eventually_async(Duration::from_secs(15), || async {
        status(&gw, &key.token(&claims(&issuer, "e"))).await.0 == 200
    })
    .await;
    assert!(back, "keys never recovered after the IdP came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_while_the_idp_is_down_serves_503_then_recovers() {
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k")).await;
    idp.set_down(true);
    let gw = gateway(&idp, "jwks_unknown_kid_interval = \"100ms\"").await;
    let token = key.token(&claims(&idp.issuer(), "a"));
    assert_eq!(
        status(&gw, &token).await,
        (503, "keys_unavailable".to_string())
    );
    idp.set_down(false);
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            status(&gw, &token).await.0 == 200
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_key_invalidates_cached_verifications() {
    let keep = SigningKey::generate(Algorithm::RS256, Some("keep")).unwrap();
    let leaked = SigningKey::generate(Algorithm::RS256, Some("leaked")).unwrap();
    let idp = JwksServer::start(vec![
        keep.public_jwk(true).unwrap(),
        leaked.public_jwk(true).unwrap(),
    ])
    .await
    .unwrap();
    let gw = gateway(
        &idp,
        "jwks_refresh_interval = \"100ms\"\njwks_min_refresh_interval = \"100ms\"",
    )
    .await;
    let issuer = idp.issuer();
    let cached = leaked.token(&claims(&issuer, "a"));
    assert_eq!(status(&gw, &cached).await.0, 200);
    assert_eq!(status(&gw, &cached).await.0, 200);
    idp.set_keys(vec![keep.public_jwk(true).unwrap()]);
    let refused = eventually_async(Duration::from_secs(10), || async {
        status(&gw, &cached).await.0 == 401
    })
    .await;
    assert!(
        refused,
        "a token verified with a removed key stayed valid through the cache"
    );
    assert_eq!(status(&gw, &cached).await.1, "unknown_kid");
    assert_eq!(status(&gw, &keep.token(&claims(&issuer, "b"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_sets_the_refresh_within_bounds() {
    let (_key, idp) = issuer_with_key(Algorithm::RS256, Some("k")).await;
    // max-age=0 is clamped up to the 300ms minimum: refreshes keep coming, never in a loop. The
    // unknown-kid window is long, so only the scheduled refresh can explain the fetches.
    idp.set_cache_control(Some("public, Max-Age=0"));
    let _gw = gateway(
        &idp,
        "jwks_refresh_interval = \"1h\"\njwks_min_refresh_interval = \"300ms\"\njwks_max_refresh_interval = \"1h\"\njwks_unknown_kid_interval = \"1h\"",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || idp.jwks_fetches() >= 4).await,
        "max-age was not honoured: {} fetches",
        idp.jwks_fetches()
    );
    // A long max-age (clamped to the 1h maximum) stops the refreshes.
    idp.set_cache_control(Some("max-age=3600"));
    let stopped = eventually_async(Duration::from_secs(20), || async {
        let before = idp.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(900)).await;
        idp.jwks_fetches() == before
    })
    .await;
    assert!(stopped, "refreshes went on despite max-age=3600");
}

/// Tokens whose kid no IdP key has, one `kid` per token, signed by a key the IdP never published.
fn foreign_tokens(issuer: &str, count: usize) -> Vec<String> {
    let foreign = SigningKey::generate(Algorithm::ES256, None).unwrap();
    (0..count)
        .map(|i| {
            let header =
                serde_json::json!({"alg": "ES256", "kid": format!("other-env-{i}")}).to_string();
            foreign.sign_raw(&header, &claims(issuer, &format!("s{i}")).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_one_after_another_never_wait_for_the_window() {
    let (key, idp) = issuer_with_key(Algorithm::RS256, Some("real")).await;
    let window = Duration::from_secs(2);
    let gw = gateway(&idp, "jwks_unknown_kid_interval = \"2s\"").await;
    let issuer = idp.issuer();
    assert_eq!(
        status(&gw, &key.token(&claims(&issuer, "warm"))).await.0,
        200
    );
    let tokens = foreign_tokens(&issuer, 200);
    // Past the window, so the first unknown kid may fetch and the rest are inside the next one.
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    let before = idp.jwks_fetches();
    let client = h1_client();
    let url = format!("http://{}/x", gw.addrs[0]);
    let started = Instant::now();
    for token in &tokens {
        let reply = send(&client, bearer(&url, token)).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (401, "unknown_kid")
        );
    }
    let elapsed = started.elapsed();
    let fetches = idp.jwks_fetches() - before;
    println!("200 sequential unknown kids: {fetches} fetch(es), {elapsed:?} in total");
    assert!(
        fetches >= 1,
        "the first unknown kid past the window did not fetch"
    );
    assert!(fetches <= 2, "{fetches} fetches for 200 unknown kids");
    // Generous: the old rule held each new kid for up to a window (2s), i.e. minutes in total.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_during_an_outage_get_503_at_once() {
    let (key, idp) = issuer_with_key(Algorithm::RS256, Some("real")).await;
    let gw = gateway(&idp, "jwks_unknown_kid_interval = \"1s\"").await;
    let issuer = idp.issuer();
    assert_eq!(
        status(&gw, &key.token(&claims(&issuer, "warm"))).await.0,
        200
    );
    let tokens = foreign_tokens(&issuer, 50);
    idp.set_down(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = idp.jwks_fetches();
    let client = h1_client();
    let url = format!("http://{}/x", gw.addrs[0]);
    let started = Instant::now();
    for token in &tokens {
        let reply = send(&client, bearer(&url, token)).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (503, "keys_unavailable")
        );
        assert_eq!(reply.headers["retry-after"], "5");
    }
    let elapsed = started.elapsed();
    let fetches = idp.jwks_fetches() - before;
    println!("50 sequential unknown kids while the IdP is down: {fetches} fetch(es), {elapsed:?}");
    assert!(fetches <= 2, "{fetches} fetches");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    // The published key still verifies from the last good set.
    assert_eq!(status(&gw, &key.token(&claims(&issuer, "ok"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_just_published_key_is_picked_up_on_first_use() {
    let (old, idp) = issuer_with_key(Algorithm::RS256, Some("old")).await;
    let gw = gateway(&idp, "jwks_unknown_kid_interval = \"500ms\"").await;
    let issuer = idp.issuer();
    assert_eq!(status(&gw, &old.token(&claims(&issuer, "a"))).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let new = SigningKey::generate(Algorithm::ES256, Some("new")).unwrap();
    idp.set_keys(vec![
        old.public_jwk(true).unwrap(),
        new.public_jwk(true).unwrap(),
    ]);
    let before = idp.jwks_fetches();
    assert_eq!(status(&gw, &new.token(&claims(&issuer, "b"))).await.0, 200);
    assert_eq!(idp.jwks_fetches() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_and_discovery_requests_name_authgate() {
    let expected = format!("authgate/{}", env!("CARGO_PKG_VERSION"));
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k")).await;
    let gw = gateway(&idp, "").await;
    assert_eq!(
        status(&gw, &key.token(&claims(&idp.issuer(), "a"))).await.0,
        200
    );
    assert_eq!(idp.jwks_user_agent().as_deref(), Some(expected.as_str()));

    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("d")).await;
    let up = echo().await;
    let gw = start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[provider]]\nname = \"oidc\"\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"api\"]\nalgorithms = [\"ES256\"]\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\n",
        idp.issuer()
    ))
    .await;
    assert_eq!(
        status(&gw, &key.token(&claims(&idp.issuer(), "a"))).await.0,
        200
    );
    assert_eq!(
        idp.discovery_user_agent().as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(idp.jwks_user_agent().as_deref(), Some(expected.as_str()));
}
