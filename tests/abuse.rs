//! HTTP/2 abuse, driven with raw frames over h2c: rapid reset (CVE-2023-44487), CONTINUATION
//! floods (CVE-2024-27316 family), SETTINGS and PING floods from a client that never reads, a
//! stream that never sends its body, and a stream whose window the client never opens. Each
//! attack must end with the connection closed (GOAWAY or EOF, or gone from the gateway's
//! `connections_open` when the client never reads) or the stream answered and reset, within a
//! generous deadline, while a well-behaved client on another connection is served. Every case
//! prints what the gateway answered and roughly when (run with `--nocapture` to see it).
//!
//! The gateway runs with short idle and body timeouts (`idle_timeout = "2s"`,
//! `body_idle_timeout = "1s"`) so the cases that end by a timeout fit the deadline; the defaults
//! are 60 s and 30 s. Traffic is bounded: each flood stops at its frame budget or at the close.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::h2raw::*;
use common::*;

const DEADLINE: Duration = Duration::from_secs(10);

async fn gateway() -> Gateway {
    let up = echo().await;
    start(&format!(
        r#"[server]
idle_timeout = "2s"
body_idle_timeout = "1s"

[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{up}"
auth = "public"
"#
    ))
    .await
}

/// A well-behaved h2c request on its own connection.
async fn well_behaved(addr: SocketAddr) -> u16 {
    let client = h2c_client();
    send(&client, get(&format!("http://{addr}/ok")))
        .await
        .status
}

fn authority(addr: SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

/// Waits until the gateway holds no client connection (the attack's is gone).
async fn gateway_closed_all(gw: &Gateway) -> bool {
    eventually(DEADLINE, || gw.metrics.connections_open.get() == 0).await
}

fn report(case: &str, answer: &str, elapsed: Duration, detail: &str) {
    println!("ABUSE | {case} | {answer} | {elapsed:.2?} | {detail}");
}

/// Runs `attack` while a well-behaved client is served on another connection, then checks that
/// one is still served afterwards.
async fn with_bystander<F, Fut>(gw: &Gateway, attack: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = gw.addrs[0];
    let running = tokio::spawn(attack(addr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(well_behaved(addr).await, 200, "bystander refused during");
    running.await.unwrap();
    assert_eq!(well_behaved(addr).await, 200, "bystander refused after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    let gw = gateway().await;
    with_bystander(&gw, |addr| async move {
        let mut c = RawH2::connect(addr, &[], true).await;
        let block = request("GET", &authority(addr), "/", &[]);
        let mut seen = Vec::new();
        let mut streams = 0u32;
        // At most 20,000 streams, 100 HEADERS + RST_STREAM(CANCEL) pairs per write.
        for batch in 0..200u32 {
            let mut bytes = Vec::new();
            for i in 0..100 {
                let id = 1 + 2 * (batch * 100 + i);
                bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                bytes.extend(rst_stream(id, 0x8));
            }
            if !c.send(&bytes, Duration::from_secs(2)).await {
                break;
            }
            streams += 100;
            seen.extend(c.drain());
            if seen.iter().any(is_close) {
                break;
            }
        }
        if !seen.iter().any(is_close) {
            let (more, _) = c.until(DEADLINE, is_close).await;
            seen.extend(more);
        }
        let close = seen.iter().find(|e| is_close(e)).cloned();
        let elapsed = c.started.elapsed();
        let answered = seen
            .iter()
            .filter(|e| matches!(e, Event::Frame(f) if f.kind == HEADERS))
            .count();
        report(
            "rapid reset",
            &close.as_ref().map_or("nothing".into(), describe),
            elapsed,
            &format!("{streams} streams opened+reset before the close, {answered} answered"),
        );
        assert!(close.is_some(), "rapid reset was never cut off");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_one_stream_per_write_is_bounded() {
    // The slow variant: one HEADERS + RST_STREAM per write, yielding between writes, in case
    // the gateway accepted each stream before its reset arrived (the pending-accept limit
    // would then never trip). 3,000 streams at most.
    let gw = gateway().await;
    with_bystander(&gw, |addr| async move {
        let mut c = RawH2::connect(addr, &[], true).await;
        let block = request("GET", &authority(addr), "/", &[]);
        let mut seen = Vec::new();
        let mut streams = 0u32;
        for n in 0..3_000u32 {
            let id = 1 + 2 * n;
            let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, id, &block);
            bytes.extend(rst_stream(id, 0x8));
            if !c.send(&bytes, Duration::from_secs(2)).await {
                break;
            }
            streams += 1;
            tokio::task::yield_now().await;
            seen.extend(c.drain());
            if seen.iter().any(is_close) {
                break;
            }
        }
        let elapsed = c.started.elapsed();
        let (more, _) = c.until(DEADLINE, is_close).await;
        seen.extend(more);
        let close = seen.iter().find(|e| is_close(e)).cloned();
        let answered = seen
            .iter()
            .filter(|e| matches!(e, Event::Frame(f) if f.kind == HEADERS))
            .count();
        report(
            "rapid reset, one stream per write",
            &close.as_ref().map_or("nothing".into(), describe),
            c.started.elapsed(),
            &format!("{streams} streams opened+reset in {elapsed:.2?}, {answered} answered before the reset"),
        );
        assert!(close.is_some(), "the connection was never closed");
    })
    .await;
}

async fn continuation_flood(case: &'static str, fill: Vec<u8>, frames: usize, per_write: usize) {
    let gw = gateway().await;
    with_bystander(&gw, move |addr| async move {
        let mut c = RawH2::connect(addr, &[], true).await;
        let block = request("POST", &authority(addr), "/", &[]);
        assert!(
            c.send(&frame(HEADERS, 0, 1, &block), Duration::from_secs(2))
                .await
        );
        let one = frame(CONTINUATION, 0, 1, &fill);
        let mut sent = 0;
        let mut seen = Vec::new();
        while sent < frames {
            let bytes = one.repeat(per_write);
            if !c.send(&bytes, Duration::from_secs(2)).await {
                break;
            }
            sent += per_write;
            seen.extend(c.drain());
            if seen.iter().any(is_close) {
                break;
            }
        }
        if !seen.iter().any(is_close) {
            let (more, _) = c.until(DEADLINE, is_close).await;
            seen.extend(more);
        }
        let close = seen.iter().find(|e| is_close(e)).cloned();
        report(
            case,
            &close.as_ref().map_or("nothing".into(), describe),
            c.started.elapsed(),
            &format!(
                "{sent} CONTINUATION frames of {} bytes written before the close",
                fill.len()
            ),
        );
        assert!(close.is_some(), "{case}: never cut off");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_of_headers_is_cut_off() {
    // Each frame carries a 4 KB header: the list outgrows h2_max_header_list_bytes (64 KiB).
    let fill = hpack(&[("x-fill", &[b'a'; 4000])]);
    continuation_flood("CONTINUATION flood (4 KB headers)", fill, 10_000, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_of_empty_frames_is_cut_off() {
    // Empty frames never grow the header list; only a count of them can stop this.
    continuation_flood(
        "CONTINUATION flood (empty frames)",
        Vec::new(),
        200_000,
        1000,
    )
    .await;
}

/// A flood of `unit` frames from a client that never reads what the gateway sends back.
async fn control_flood_without_reading(case: &'static str, unit: Vec<u8>, frames: usize) {
    let gw = gateway().await;
    let addr = gw.addrs[0];
    let attack = tokio::spawn(async move {
        let mut c = RawH2::connect(addr, &[], false).await;
        let mut sent = 0;
        while sent < frames {
            // A write that stalls for a second means the gateway stopped reading (backpressure).
            if !c.send(&unit.repeat(1000), Duration::from_secs(1)).await {
                break;
            }
            sent += 1000;
        }
        (c, sent)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(well_behaved(addr).await, 200, "bystander refused during");
    let (c, sent) = attack.await.unwrap();
    let flood_done = c.started.elapsed();
    // The bystander's pooled connection is gone with its client; only the attacker's remains.
    let closed = gateway_closed_all(&gw).await;
    report(
        case,
        if closed {
            "connection closed by the gateway"
        } else {
            "connection still open"
        },
        c.started.elapsed(),
        &format!(
            "{sent} frames written in {flood_done:.2?} (socket buffers took them); the client never read"
        ),
    );
    assert!(closed, "{case}: the connection was never closed");
    assert_eq!(well_behaved(addr).await, 200, "bystander refused after");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_from_a_client_that_never_reads_is_closed() {
    let unit = settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]);
    control_flood_without_reading("SETTINGS flood, never reads", unit, 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_a_client_that_never_reads_is_closed() {
    let unit = frame(PING, 0, 0, &[7u8; 8]);
    control_flood_without_reading("PING flood, never reads", unit, 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_from_a_reading_client_are_answered_then_closed() {
    let gw = gateway().await;
    with_bystander(&gw, |addr| async move {
        let mut c = RawH2::connect(addr, &[], true).await;
        let mut bytes = Vec::new();
        for _ in 0..5_000 {
            bytes.extend(settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]));
            bytes.extend(frame(PING, 0, 0, &[1u8; 8]));
        }
        assert!(c.send(&bytes, Duration::from_secs(5)).await);
        let (seen, closed) = c.until(DEADLINE, is_close).await;
        let acks = seen
            .iter()
            .filter(|e| matches!(e, Event::Frame(f) if f.kind == SETTINGS && f.flags & ACK != 0))
            .count();
        let pongs = seen
            .iter()
            .filter(|e| matches!(e, Event::Frame(f) if f.kind == PING && f.flags & ACK != 0))
            .count();
        let close = seen.iter().find(|e| is_close(e)).map_or("nothing".into(), describe);
        report(
            "SETTINGS + PING flood, client reads",
            &close,
            c.started.elapsed(),
            &format!("5000 SETTINGS and 5000 PINGs sent: {acks} SETTINGS ACKs, {pongs} PING ACKs, then closed at idle_timeout"),
        );
        assert!(closed, "the flooding connection was never closed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_sends_its_body_is_answered_408() {
    let gw = gateway().await;
    with_bystander(&gw, |addr| async move {
        let mut c = RawH2::connect(addr, &[], true).await;
        let block = request("POST", &authority(addr), "/", &[("content-length", b"100")]);
        assert!(
            c.send(
                &frame(HEADERS, END_HEADERS, 1, &block),
                Duration::from_secs(2)
            )
            .await
        );
        let ended = |e: &Event| match e {
            Event::Frame(f) => {
                f.stream == 1
                    && (f.kind == RST_STREAM
                        || (f.flags & END_STREAM != 0 && (f.kind == DATA || f.kind == HEADERS)))
            }
            Event::Closed => true,
        };
        let (seen, done) = c.until(DEADLINE, ended).await;
        let answer: Vec<String> = seen
            .iter()
            .filter(|e| {
                matches!(e, Event::Closed)
                    || matches!(e, Event::Frame(f) if f.stream == 1 || f.kind == GOAWAY)
            })
            .map(describe)
            .collect();
        let status = seen.iter().find_map(|e| match e {
            Event::Frame(f) => f.status(),
            Event::Closed => None,
        });
        report(
            "stream that never sends its body",
            &answer.join(", "),
            c.started.elapsed(),
            "HEADERS with content-length: 100, no DATA; body_idle_timeout = 1s",
        );
        assert!(done, "the stream was never ended");
        assert_eq!(status, Some(408));
    })
    .await;
}

async fn window_stall(case: &'static str, read: bool) {
    let gw = gateway().await;
    let addr = gw.addrs[0];
    let attack = tokio::spawn(async move {
        // A zero initial stream window: the gateway may send HEADERS but no DATA, ever.
        let mut c = RawH2::connect(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], read).await;
        let block = request("GET", &authority(addr), "/stall?pad=x", &[]);
        assert!(
            c.send(
                &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block),
                Duration::from_secs(2)
            )
            .await
        );
        c
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(well_behaved(addr).await, 200, "bystander refused during");
    let mut c = attack.await.unwrap();
    let started = Instant::now();
    let closed = gateway_closed_all(&gw).await;
    let seen: Vec<String> = if read {
        c.until(Duration::from_millis(200), |_| false)
            .await
            .0
            .iter()
            .map(describe)
            .collect()
    } else {
        Vec::new()
    };
    report(
        case,
        &if closed {
            format!(
                "connection closed by the gateway; client saw: {}",
                seen.join(", ")
            )
        } else {
            format!("connection still open; client saw: {}", seen.join(", "))
        },
        c.started.elapsed(),
        &format!("closed {:.2?} after the request", started.elapsed()),
    );
    assert!(closed, "{case}: the stalled connection was never closed");
    assert_eq!(well_behaved(addr).await, 200, "bystander refused after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_that_is_never_opened_is_closed() {
    window_stall("window-update stall (zero window, client reads)", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed() {
    window_stall(
        "window-update stall (zero window, client never reads)",
        false,
    )
    .await;
}
