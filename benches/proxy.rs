//! Request cost through the gateway, measured in one run against baselines from the same run:
//! the echo upstream directly, the gateway on a public route, and the gateway verifying a JWT
//! (ES256; verified-token cache hits after the first request, and a fresh token every request).
//! Run with `cargo bench --bench proxy`. Concurrency is modest (the machines have two cores);
//! the ratios matter, not the absolute numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::app::Gateway;
use authgate::demo::issuer::{JwksServer, SigningKey};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;

const CONCURRENCY: usize = 8;
const PER_TASK: usize = 1500;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn run(client: &HttpClient, url: &str, tokens: Arc<Vec<String>>) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CONCURRENCY {
        let (client, url, tokens) = (client.clone(), url.to_string(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let mut request = Request::get(&url);
                if !tokens.is_empty() {
                    let token = &tokens[(task * PER_TASK + i) % tokens.len()];
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let Ok(request) = request.body(Full::new(Bytes::new())) else {
                    return;
                };
                match client.request(request).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                    }
                    Ok(response) => panic!("{url}: status {}", response.status()),
                    Err(error) => panic!("{url}: {error}"),
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    (CONCURRENCY * PER_TASK) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let echo = authgate::demo::spawn_echo().await.expect("echo upstream");
    let key = SigningKey::generate(Algorithm::ES256, Some("k")).expect("key");
    let idp = JwksServer::start(vec![key.public_jwk(true).expect("jwk")])
        .await
        .expect("idp");
    let toml = format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[[provider]]
name = "p"
issuer = "{}"
jwks_uri = "{}"
audiences = ["api"]
algorithms = ["ES256"]
[[route]]
name = "public"
path_prefix = "/public"
upstream = "http://{echo}"
auth = "public"
[[route]]
name = "auth"
path_prefix = "/auth"
upstream = "http://{echo}"
"#,
        idp.issuer(),
        idp.jwks_uri()
    );
    let config =
        authgate::config::load_str(std::path::Path::new("bench.toml"), &toml).expect("config");
    let gateway = Gateway::start(&config).await.expect("gateway");
    let addr = gateway.addrs[0];
    let claims = |sub: String| {
        let now = authgate::auth::jwt::now_unix();
        serde_json::json!({"iss": idp.issuer(), "aud": "api", "sub": sub, "iat": now, "exp": now + 3600})
    };
    let one = Arc::new(vec![key.token(&claims("bench".into()))]);
    let fresh = Arc::new(
        (0..CONCURRENCY * PER_TASK)
            .map(|i| key.token(&claims(format!("u{i}"))))
            .collect::<Vec<_>>(),
    );
    let none = Arc::new(Vec::new());
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(HttpConnector::new());

    // Warm-up, then direct / public / cached / fresh, then direct again to see the drift.
    run(&client, &format!("http://{echo}/warm"), none.clone()).await;
    run(&client, &format!("http://{addr}/auth/warm"), one.clone()).await;
    let direct = run(&client, &format!("http://{echo}/x"), none.clone()).await;
    let public = run(&client, &format!("http://{addr}/public/x"), none.clone()).await;
    let cached = run(&client, &format!("http://{addr}/auth/x"), one.clone()).await;
    let verified = run(&client, &format!("http://{addr}/auth/x"), fresh).await;
    let direct_again = run(&client, &format!("http://{echo}/x"), none).await;
    let baseline = (direct + direct_again) / 2.0;
    println!(
        "requests/s (concurrency {CONCURRENCY}, {} requests each):",
        CONCURRENCY * PER_TASK
    );
    println!("  echo upstream directly          {baseline:>9.0}   1.00");
    println!(
        "  gateway, public route           {public:>9.0}   {:.2}",
        public / baseline
    );
    println!(
        "  gateway, JWT (cache hits)       {cached:>9.0}   {:.2}",
        cached / baseline
    );
    println!(
        "  gateway, JWT (every one new)    {verified:>9.0}   {:.2}",
        verified / baseline
    );
    println!(
        "  JWT cache hit vs public route                 {:.2}",
        cached / public
    );
}
