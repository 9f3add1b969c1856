//! Micro benchmarks for what the load test (`benches/load/run.sh`) cannot isolate: the
//! verified-token cache hit, cold verification per algorithm, a denylist lookup among 1,000,000
//! entries, and header hygiene (strip + inject). Route matching is `benches/routes.rs`.
//!
//! Run with `cargo bench --bench micro`. Each figure is the median of several timed runs after
//! a warm-up, in nanoseconds per operation; the ratios are taken within this run. Lines that
//! start with `= ` are for `benches/load/report.py`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::auth::denylist::Denylist;
use authgate::auth::jwt::VerifiedToken;
use authgate::demo::issuer::{JwksServer, SigningKey};
use authgate::edge::headers;
use authgate::ops::metrics::Metrics;
use authgate::state::Snapshot;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use tokio::runtime::Runtime;

const RUNS: usize = 7;

/// Median over `RUNS` of `run(iters)` (which returns the time `iters` operations took), in
/// nanoseconds per operation, after one untimed run.
fn median_ns(iters: usize, mut run: impl FnMut(usize) -> Duration) -> f64 {
    run(iters.div_ceil(4));
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| run(iters).as_nanos() as f64 / iters as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

const HS_SECRET: &str = "bench-secret-bench-secret-bench-secret-0123456789";

fn config(issuer: &str, jwks_uri: &str, cache_entries: u64) -> authgate::config::Config {
    let toml = format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[auth]
token_cache_entries = {cache_entries}
[[provider]]
name = "asym"
issuer = "{issuer}"
jwks_uri = "{jwks_uri}"
audiences = ["api"]
algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
[[provider]]
name = "hs"
issuer = "hs-issuer"
secret = "{HS_SECRET}"
audiences = ["api"]
algorithms = ["HS256"]
[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:1"
"#
    );
    match authgate::config::load_str(std::path::Path::new("micro.toml"), &toml) {
        Ok(config) => config,
        Err(errors) => panic!("bench config refused:\n{errors}"),
    }
}

fn claims(issuer: &str) -> serde_json::Value {
    let now = authgate::auth::jwt::now_unix();
    serde_json::json!({
        "iss": issuer, "aud": "api", "sub": "bench-user", "iat": now - 60, "exp": now + 3600,
        "jti": "bench-jti", "scope": "orders:read profile",
    })
}

/// Verification through the product's `Verifier` (the path a request takes), `iters` times.
fn verify_ns(rt: &Runtime, snapshot: &Snapshot, token: &str, iters: usize) -> f64 {
    let accepted = &snapshot.accepted[0];
    median_ns(iters, |n| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let verified = snapshot.verifier.verify(black_box(token), accepted).await;
                assert!(verified.is_ok(), "bench token refused: {verified:?}");
            }
            start.elapsed()
        })
    })
}

fn denylist_token(i: usize) -> VerifiedToken {
    VerifiedToken {
        provider: Arc::from("main"),
        issuer: Arc::from("https://issuer.example"),
        subject: Some(format!("user-{}", i * 7)),
        jti: Some(format!("live-{i}")),
        sid: None,
        kid: Some("key-live".to_string()),
        issued_at: Some(1_700_000_000),
        expires_at: Some(1_700_003_600),
        not_before: None,
        claims: Arc::new(serde_json::Map::new()),
    }
}

fn denylist_ns(list: &Denylist) -> f64 {
    let tokens: Vec<VerifiedToken> = (0..1024).map(denylist_token).collect();
    let now = 1_700_000_100;
    median_ns(2_000_000, |n| {
        let start = Instant::now();
        for i in 0..n {
            black_box(list.check(black_box(&tokens[i % tokens.len()]), now));
        }
        start.elapsed()
    })
}

/// A request head as a browser-ish client sends it, with a Bearer token.
fn request_headers(token: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("content-type", "application/json"),
    ] {
        map.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        map.insert("authorization", value);
    }
    map
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys: Vec<SigningKey> = [
        (Algorithm::RS256, "rs"),
        (Algorithm::PS256, "ps"),
        (Algorithm::ES256, "es"),
        (Algorithm::ES384, "es384"),
        (Algorithm::EdDSA, "ed"),
    ]
    .into_iter()
    .map(|(alg, kid)| SigningKey::generate(alg, Some(kid)).expect("key"))
    .collect();
    let idp = rt.block_on(async {
        JwksServer::start(keys.iter().filter_map(|k| k.public_jwk(true)).collect())
            .await
            .expect("jwks server")
    });
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    let (cached, cold) = rt.block_on(async {
        let build = |entries| {
            Snapshot::build(
                &config(&idp.issuer(), &idp.jwks_uri(), entries),
                &metrics,
                None,
            )
            .expect("snapshot")
        };
        (build(100_000), build(0))
    });
    let mut tokens: Vec<(&str, String)> = keys
        .iter()
        .map(|k| {
            let name = authgate::auth::algorithms::algorithm_name(k.alg);
            (name, k.token(&claims(&idp.issuer())))
        })
        .collect();
    let hs = SigningKey::hmac(Algorithm::HS256, HS_SECRET.as_bytes(), None);
    tokens.push(("HS256", hs.token(&claims("hs-issuer"))));
    let rs_token = &tokens[0].1;

    println!("verification through the Verifier, ns per token (median of {RUNS} runs):");
    let hit = verify_ns(&rt, &cached, rs_token, 200_000);
    println!("  verified-token cache hit (RS256 token)  {hit:>10.0}");
    let sha = median_ns(1_000_000, |n| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(authgate::auth::keys::sha256(&[
                black_box(rs_token).as_bytes()
            ]));
        }
        start.elapsed()
    });
    println!(
        "    of which SHA-256 of the token (key)   {sha:>10.0}   ({} bytes)",
        rs_token.len()
    );
    let mut cold_ns = Vec::new();
    for (name, token) in &tokens {
        let iters = match *name {
            "HS256" => 200_000,
            "RS256" | "PS256" => 20_000,
            _ => 5_000,
        };
        let ns = verify_ns(&rt, &cold, token, iters);
        println!("  cold (cache off), {name:<6}               {ns:>10.0}");
        println!("= cold_{}_ns {ns:.1}", name.to_lowercase());
        cold_ns.push((*name, ns));
    }
    println!("= cache_hit_ns {hit:.1}");
    for (name, ns) in &cold_ns {
        if *name == "RS256" || *name == "ES256" {
            println!(
                "  cache hit as a fraction of a cold {name} verification: {:.3}",
                hit / ns
            );
            println!("= hit_fraction_{} {:.4}", name.to_lowercase(), hit / ns);
        }
    }

    // Denylist: 1,000,000 entries (900,000 tokens, 99,000 subjects, 1,000 keys); lookups of
    // tokens that are not revoked, which is every request's path (three map probes).
    let mut list = Denylist::empty();
    let issuer: Box<str> = "https://issuer.example".into();
    for i in 0..900_000 {
        list.revoke_token(
            issuer.clone(),
            format!("jti-{i}").into(),
            Some(1_800_000_000),
        );
    }
    for i in 0..99_000 {
        list.revoke_subject(
            issuer.clone(),
            format!("revoked-user-{i}").into(),
            None,
            None,
        );
    }
    for i in 0..1_000 {
        list.revoke_key("main".into(), format!("key-{i}").into(), None);
    }
    assert_eq!(list.len(), 1_000_000);
    let empty_ns = denylist_ns(&Denylist::empty());
    let full_ns = denylist_ns(&list);
    let empty_again_ns = denylist_ns(&Denylist::empty());
    println!("denylist lookup, ns (token not revoked):");
    println!(
        "  empty list                {:>8.1}",
        (empty_ns + empty_again_ns) / 2.0
    );
    println!("  1,000,000 entries         {full_ns:>8.1}");
    println!("= denylist_1m_ns {full_ns:.1}");

    // Header hygiene as `decide` runs it on every request: drop `_` names, hop-by-hop, strip the
    // identity namespace, then inject subject and issuer. The cost of cloning the request's
    // header map (the loop's set-up) is measured alone and subtracted.
    let verified = rt
        .block_on(cached.verifier.verify(rs_token, &cached.accepted[0]))
        .expect("verified");
    let template = request_headers(rs_token);
    let clone_ns = median_ns(500_000, |n| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(template.clone());
        }
        start.elapsed()
    });
    let hygiene_ns = median_ns(500_000, |n| {
        let start = Instant::now();
        for _ in 0..n {
            let mut map = template.clone();
            black_box(headers::drop_underscored(&mut map));
            headers::strip_hop_by_hop(&mut map);
            black_box(cached.identity.strip(&mut map));
            let injected = cached.identity.inject(&mut map, &verified);
            assert!(injected.is_ok());
            black_box(map);
        }
        start.elapsed()
    });
    println!(
        "header hygiene, ns per request ({} headers):",
        template.len()
    );
    println!("  clone of the header map (subtracted)  {clone_ns:>8.1}");
    println!(
        "  strip + inject                        {:>8.1}",
        hygiene_ns - clone_ns
    );
    println!("= headers_ns {:.1}", hygiene_ns - clone_ns);
}
