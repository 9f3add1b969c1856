//! Route lookup cost at 10 routes versus 10,000 routes, measured in the same run.
//! Run with `cargo bench --bench routes`. Prints nanoseconds per lookup and the ratio; a ratio
//! near 1 means lookups do not grow with the table (they are one hash probe per path segment).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::config::file::{HostPattern, UpstreamUrl};
use authgate::proxy::route::{PathRules, Route, RouteTable};
use http::Method;

fn table(count: usize) -> RouteTable {
    let routes = (0..count)
        .map(|i| Route {
            name: Arc::from(format!("r{i}")),
            host: Some(HostPattern::Exact(format!("h{}.example.com", i % 100))),
            prefix: format!("/svc{i}/api"),
            methods: None,
            upstream: UpstreamUrl {
                scheme: http::uri::Scheme::HTTP,
                authority: http::uri::Authority::from_static("127.0.0.1:1"),
                base_path: String::new(),
            },
            strip_prefix: false,
            preserve_host: false,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            ca_bundle: None,
            path_rules: PathRules::default(),
            upstream_protocol: Default::default(),
            allow_underscore_headers: false,
            auth: Default::default(),
        })
        .collect();
    match RouteTable::new(routes) {
        Ok(table) => table,
        Err(conflicts) => panic!("bench table has conflicts: {conflicts:?}"),
    }
}

fn nanos_per_lookup(table: &RouteTable, count: usize) -> f64 {
    let requests: Vec<(String, String)> = (0..1024)
        .map(|i| {
            let i = (i * 7919) % count;
            (
                format!("h{}.example.com", i % 100),
                format!("/svc{i}/api/users/42/orders"),
            )
        })
        .collect();
    const LOOKUPS: usize = 500_000;
    const RUNS: usize = 7;
    // The median of several timed runs, so one preempted run on a shared machine does not count.
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for n in 0..LOOKUPS {
                let (host, path) = &requests[n % requests.len()];
                let found = table.find(Some(host), path, &Method::GET);
                black_box(found.is_ok());
            }
            start.elapsed().as_nanos() as f64 / LOOKUPS as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

fn main() {
    let small = table(10);
    let large = table(10_000);
    // Warm up, then measure small, large, small again so drift on a shared machine shows.
    nanos_per_lookup(&small, 10);
    let small_ns = nanos_per_lookup(&small, 10);
    let large_ns = nanos_per_lookup(&large, 10_000);
    let small_again_ns = nanos_per_lookup(&small, 10);
    let baseline = (small_ns + small_again_ns) / 2.0;
    println!("route lookup, 10 routes:     {baseline:.1} ns (median of 7 runs)");
    println!("route lookup, 10,000 routes: {large_ns:.1} ns");
    println!("ratio 10,000 / 10:           {:.2}", large_ns / baseline);
    // For benches/load/report.py.
    println!("= route_10000_ns {large_ns:.1}");
}
