//! Request smuggling, listed once: the classic desync shapes sent raw over HTTP/1.1, and the
//! HTTP/2 → HTTP/1.1 downgrade shapes sent as raw h2 frames. Each case runs against its own
//! gateway and its own raw TCP upstream, which records every byte it receives and answers a
//! fixed `200` with `Connection: close`. Each must be refused (4xx, the connection closed, the
//! stream reset) or normalised so that the upstream receives exactly one well-formed request;
//! in no case may the upstream see a second request or bytes past the first. A table of case →
//! gateway answer → upstream saw is printed (run with `--nocapture`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::h2raw::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: every connection's bytes, recorded as they arrive.
#[derive(Clone, Default)]
struct Recorder {
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start() -> (SocketAddr, Recorder) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let serving = recorder.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = serving.clone();
                tokio::spawn(async move { recorder.serve(stream).await });
            }
        });
        (addr, recorder)
    }

    async fn serve(&self, mut stream: TcpStream) {
        let index = {
            let mut connections = self.connections.lock().unwrap();
            connections.push(Vec::new());
            connections.len() - 1
        };
        let mut answered = false;
        let mut buf = [0u8; 8192];
        loop {
            // Quiet for 300 ms with a request head in hand: answer even if the body is short.
            let read =
                tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
            let n = match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_) if answered => return,
                Err(_) => 0,
            };
            let received = {
                let mut connections = self.connections.lock().unwrap();
                connections[index].extend_from_slice(&buf[..n]);
                connections[index].clone()
            };
            let complete =
                matches!(parse_requests(&received), Parsed { requests, .. } if requests >= 1);
            let head = received.windows(4).any(|w| w == b"\r\n\r\n");
            if !answered && (complete || (n == 0 && head)) {
                answered = true;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.connections.lock().unwrap().clone()
    }
}

/// What a strict HTTP/1.1 reading of an upstream's bytes finds.
#[derive(Debug, PartialEq)]
struct Parsed {
    /// Complete, well-formed requests, in order.
    requests: usize,
    /// Bytes after the last complete request (an incomplete or malformed request).
    rest: usize,
    /// Why the bytes after the last complete request are not a request, if they are not.
    problem: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request from the front of `bytes`: its length, or why it is not one (yet).
fn parse_one(bytes: &[u8]) -> Result<usize, String> {
    let end = find(bytes, b"\r\n\r\n").ok_or("no complete head")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || parts[2] != "HTTP/1.1" || !parts[1].starts_with('/') {
        return Err(format!("bad request line {request_line:?}"));
    }
    let (mut lengths, mut encodings) = (Vec::new(), Vec::new());
    for line in lines {
        if line.contains('\n') || line.contains('\r') || line.contains('\0') {
            return Err(format!("bare CR/LF/NUL in {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(format!("no colon in {line:?}"))?;
        if name.is_empty()
            || name.contains(|c: char| c.is_whitespace())
            || line.starts_with([' ', '\t'])
        {
            return Err(format!("bad header line {line:?}"));
        }
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "content-length" => lengths.push(value.to_string()),
            "transfer-encoding" => encodings.push(value.to_string()),
            _ => {}
        }
    }
    let body = &bytes[end + 4..];
    match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Ok(end + 4),
        ([length], []) => {
            // Canonical only: digits, no sign, no leading zero (upstream parsers disagree on them).
            if length.is_empty()
                || !length.bytes().all(|b| b.is_ascii_digit())
                || (length.len() > 1 && length.starts_with('0'))
            {
                return Err(format!("bad content-length {length:?}"));
            }
            let length: usize = length.parse().map_err(|_| "content-length overflow")?;
            if body.len() < length {
                return Err("body shorter than content-length".into());
            }
            Ok(end + 4 + length)
        }
        ([], [encoding]) if encoding == "chunked" => {
            let mut at = 0;
            loop {
                let line_end = find(&body[at..], b"\r\n").ok_or("incomplete chunk size")?;
                let line =
                    std::str::from_utf8(&body[at..at + line_end]).map_err(|_| "chunk size")?;
                let size = line.split(';').next().unwrap_or_default();
                if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!("bad chunk size {line:?}"));
                }
                let size = usize::from_str_radix(size, 16).map_err(|_| "chunk size")?;
                at += line_end + 2;
                if size == 0 {
                    let trailer_end = find(&body[at..], b"\r\n").ok_or("incomplete last chunk")?;
                    if trailer_end != 0 {
                        return Err("trailers".into());
                    }
                    return Ok(end + 4 + at + 2);
                }
                if body.len() < at + size + 2 || &body[at + size..at + size + 2] != b"\r\n" {
                    return Err("incomplete or unterminated chunk".into());
                }
                at += size + 2;
            }
        }
        _ => Err(format!(
            "framing: content-length {lengths:?}, transfer-encoding {encodings:?}"
        )),
    }
}

fn parse_requests(bytes: &[u8]) -> Parsed {
    let mut at = 0;
    let mut requests = 0;
    while at < bytes.len() {
        match parse_one(&bytes[at..]) {
            Ok(len) => {
                at += len;
                requests += 1;
            }
            Err(problem) => {
                return Parsed {
                    requests,
                    rest: bytes.len() - at,
                    problem: Some(problem),
                }
            }
        }
    }
    Parsed {
        requests,
        rest: 0,
        problem: None,
    }
}

async fn gateway(upstream: SocketAddr) -> Gateway {
    start(&format!(
        r#"[server]
body_idle_timeout = "2s"

[[listener]]
address = "127.0.0.1:0"

[[route]]
name = "r"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "public"
"#
    ))
    .await
}

/// Status codes of the responses in a raw HTTP/1.1 reply, and whether the gateway closed.
fn statuses(reply: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(reply)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| reply.get(at + 9..at + 12))
        .filter_map(|code| std::str::from_utf8(code).ok()?.parse().ok())
        .collect()
}

/// Sends `request` and reads until the gateway closes or 1.5 s pass.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (reply, true),
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Err(_) => return (reply, false),
        }
    }
}

/// The `reason` of the gateway's first JSON answer, if any.
fn reason_of(reply: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    let at = text.find("\"reason\":\"")? + 10;
    let end = text[at..].find('"')?;
    Some(text[at..at + end].to_string())
}

struct Outcome {
    case: String,
    answer: String,
    upstream: String,
}

/// What the upstream saw, checked: each upstream connection carries at most one request and
/// nothing after it, and the upstream saw exactly as many complete well-formed requests as
/// the client got 2xx answers (one request in, one request out).
fn judge(case: &str, received: &[Vec<u8>], client_ok: usize) -> String {
    let texts = || {
        received
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
    };
    let parsed: Vec<Parsed> = received.iter().map(|c| parse_requests(c)).collect();
    for p in &parsed {
        assert!(
            p.requests <= 1,
            "{case}: one upstream connection carried {} requests: {:?}",
            p.requests,
            texts()
        );
        assert!(
            p.requests == 0 || p.rest == 0,
            "{case}: bytes after the request reached the upstream: {:?}",
            texts()
        );
    }
    let requests: usize = parsed.iter().map(|p| p.requests).sum();
    assert_eq!(
        requests,
        client_ok,
        "{case}: {client_ok} 2xx answers but {requests} complete upstream requests: {:?}",
        texts()
    );
    let mut seen = Vec::new();
    for (bytes, p) in received.iter().zip(&parsed) {
        if bytes.is_empty() {
            continue;
        }
        if p.requests == 1 {
            let text = String::from_utf8_lossy(bytes);
            let line = text.split("\r\n").next().unwrap_or_default().to_string();
            let framing: Vec<&str> = text
                .split("\r\n")
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.starts_with("content-length") || l.starts_with("transfer-encoding")
                })
                .collect();
            let body = if framing.is_empty() {
                "no body".to_string()
            } else {
                framing.join(", ")
            };
            seen.push(format!("1 well-formed request ({line}; {body})"));
        } else {
            seen.push(format!(
                "a truncated request, then closed ({} bytes: {})",
                p.rest,
                p.problem.clone().unwrap_or_default()
            ));
        }
    }
    if seen.is_empty() {
        "nothing".into()
    } else {
        seen.join(" + ")
    }
}

async fn h1_case(case: &str, request: String) -> Outcome {
    let (up, recorder) = Recorder::start().await;
    let gw = gateway(up).await;
    let request = request.replace("{HOST}", &format!("127.0.0.1:{}", gw.addrs[0].port()));
    let (reply, closed) = exchange(gw.addrs[0], request.as_bytes()).await;
    // Let the upstream's record settle.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let codes = statuses(&reply);
    let refused = codes.first().is_some_and(|c| (400..500).contains(c));
    let ok = codes.first().is_some_and(|c| (200..300).contains(c));
    let received = recorder.received();
    assert!(
        !codes.is_empty() || closed,
        "{case}: no answer and the connection stayed open"
    );
    // A refusal by hyper's parser must close the connection: the framing is in doubt. A
    // refusal by the pipeline (a JSON `reason`) comes after the request was framed without
    // doubt, so the connection may stay open for the next one.
    let pipeline_reason = String::from_utf8_lossy(&reply).contains("\"reason\"");
    if refused && !pipeline_reason {
        assert!(
            closed,
            "{case}: refused by the parser without closing the connection"
        );
    }
    assert!(refused || ok, "{case}: unexpected answer {codes:?}");
    let upstream = judge(
        case,
        &received,
        codes.iter().filter(|c| (200..300).contains(*c)).count(),
    );
    Outcome {
        case: case.to_string(),
        answer: format!(
            "{}{}{}",
            codes
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" then "),
            reason_of(&reply).map_or(String::new(), |r| format!(" {r}")),
            if closed { ", closed" } else { ", kept open" }
        ),
        upstream,
    }
}

fn print_table(title: &str, outcomes: &[Outcome]) {
    println!("\n{title}\n| case | gateway answered | upstream saw |\n|---|---|---|");
    for o in outcomes {
        println!("| {} | {} | {} |", o.case, o.answer, o.upstream);
    }
}

const HEAD: &str = "POST /s HTTP/1.1\r\nHost: {HOST}\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_desync_shapes_reach_the_upstream_as_one_request_or_not_at_all() {
    let cases: Vec<(&str, String)> = vec![
        ("CL.TE", format!("{HEAD}Content-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED")),
        ("TE.CL", format!("{HEAD}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n")),
        ("TE xchunked + CL", format!("{HEAD}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello")),
        ("TE xchunked alone", format!("{HEAD}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("TE 'chunked, identity'", format!("{HEAD}Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("TE 'identity, chunked' + CL", format!("{HEAD}Transfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("TE with leading space", format!("{HEAD}Transfer-Encoding:  chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("TE with tab before value", format!("{HEAD}Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("'Transfer-Encoding : chunked'", format!("{HEAD}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("duplicate TE (chunked, identity)", format!("{HEAD}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("duplicate TE (chunked, chunked)", format!("{HEAD}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ("two CL, equal", format!("{HEAD}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello")),
        ("two CL, different", format!("{HEAD}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")),
        ("CL list '5, 5'", format!("{HEAD}Content-Length: 5, 5\r\n\r\nhello")),
        ("CL '+5'", format!("{HEAD}Content-Length: +5\r\n\r\nhello")),
        ("CL '-5'", format!("{HEAD}Content-Length: -5\r\n\r\nhello")),
        ("CL ' 5 ' (spaces)", format!("{HEAD}Content-Length:  5 \r\n\r\nhello")),
        ("CL '5 5'", format!("{HEAD}Content-Length: 5 5\r\n\r\nhello")),
        ("CL '0005'", format!("{HEAD}Content-Length: 0005\r\n\r\nhello")),
        ("CL '0x5'", format!("{HEAD}Content-Length: 0x5\r\n\r\nhello")),
        ("chunk extension", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n5;ext=\"x\"\r\nhello\r\n0\r\n\r\n")),
        ("chunk size overflow", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        ("chunk size 2^64 + 5", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n")),
        ("chunk size with leading space", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n")),
        ("chunk data longer than size", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n")),
        ("bare LF line endings", "POST /s HTTP/1.1\nHost: {HOST}\nContent-Length: 5\n\nhello".to_string()),
        ("bare LF in chunked body", format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n")),
        ("bare CR in a header", format!("{HEAD}X-A: a\rContent-Length: 5\r\n\r\nhello")),
        ("absolute-form to another host", "GET http://other.example/s HTTP/1.1\r\nHost: {HOST}\r\n\r\n".to_string()),
        ("absolute-form, Host agrees", "GET http://{HOST}/s HTTP/1.1\r\nHost: {HOST}\r\n\r\n".to_string()),
        ("obs-fold continuation line", format!("{HEAD}X-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello")),
        ("obs-fold on Transfer-Encoding", format!("{HEAD}Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello")),
        ("pipelined second request in the body", format!("{HEAD}Content-Length: 0\r\n\r\nGET /second HTTP/1.1\r\nHost: {{HOST}}\r\n\r\n")),
    ];
    let runs = cases.into_iter().map(|(case, request)| async move {
        // A case's own gateway and upstream, so cases can run together.
        h1_case(case, request).await
    });
    let outcomes = futures_util::future::join_all(runs).await;
    print_table("HTTP/1.1 desync shapes", &outcomes);
}

async fn h2_case(case: &str, extra: &[(&str, &[u8])], data: &[&[u8]]) -> Outcome {
    let (up, recorder) = Recorder::start().await;
    let gw = gateway(up).await;
    let addr = gw.addrs[0];
    let mut c = RawH2::connect(addr, &[], true).await;
    let block = request("POST", &format!("127.0.0.1:{}", addr.port()), "/s", extra);
    let end_headers = if data.is_empty() {
        END_HEADERS | END_STREAM
    } else {
        END_HEADERS
    };
    let mut bytes = frame(HEADERS, end_headers, 1, &block);
    for (i, chunk) in data.iter().enumerate() {
        let flags = if i + 1 == data.len() { END_STREAM } else { 0 };
        bytes.extend(frame(DATA, flags, 1, chunk));
    }
    assert!(c.send(&bytes, Duration::from_secs(2)).await);
    let ended = |e: &Event| match e {
        Event::Frame(f) => {
            (f.stream == 1 && (f.kind == RST_STREAM || f.flags & END_STREAM != 0))
                || f.kind == GOAWAY
        }
        Event::Closed => true,
    };
    let (seen, done) = c.until(Duration::from_secs(10), ended).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(done, "{case}: the stream never ended: {seen:?}");
    let relevant: Vec<&Event> = seen
        .iter()
        .filter(|e| match e {
            Event::Frame(f) => f.stream == 1 && f.kind != WINDOW_UPDATE || f.kind == GOAWAY,
            Event::Closed => true,
        })
        .collect();
    let status = relevant.iter().find_map(|e| match e {
        Event::Frame(f) => f.status(),
        Event::Closed => None,
    });
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let reset = relevant.iter().any(|e| {
        matches!(e, Event::Frame(f) if f.kind == RST_STREAM || f.kind == GOAWAY)
            || matches!(e, Event::Closed)
    });
    assert!(
        ok || reset || status.is_some_and(|s| (400..500).contains(&s)),
        "{case}: neither refused nor served: {seen:?}"
    );
    let upstream = judge(case, &recorder.received(), usize::from(ok));
    Outcome {
        case: case.to_string(),
        answer: relevant
            .iter()
            .map(|e| describe(e))
            .collect::<Vec<_>>()
            .join(", "),
        upstream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downgrade_shapes_reach_the_upstream_as_one_request_or_not_at_all() {
    let outcomes = vec![
        h2_case(
            "h2 baseline: content-length 5, 5 bytes",
            &[("content-length", b"5")],
            &[b"hello"],
        )
        .await,
        h2_case(
            "content-length 5, DATA 11 bytes",
            &[("content-length", b"5")],
            &[b"hello", b" world"],
        )
        .await,
        h2_case(
            "content-length 11, DATA 5 bytes",
            &[("content-length", b"11")],
            &[b"hello"],
        )
        .await,
        h2_case(
            "transfer-encoding: chunked",
            &[("transfer-encoding", b"chunked")],
            &[b"5\r\nhello\r\n0\r\n\r\n"],
        )
        .await,
        h2_case(
            "CR LF in a header value",
            &[("x-a", b"a\r\nContent-Length: 0")],
            &[b"hello"],
        )
        .await,
        h2_case(
            "LF in a header value",
            &[("x-a", b"a\nx-b: b")],
            &[b"hello"],
        )
        .await,
        h2_case("NUL in a header value", &[("x-a", b"a\0b")], &[b"hello"]).await,
        h2_case(
            "connection: keep-alive",
            &[("connection", b"keep-alive")],
            &[b"hello"],
        )
        .await,
        h2_case(
            "keep-alive header",
            &[("keep-alive", b"timeout=5")],
            &[b"hello"],
        )
        .await,
        h2_case("te: gzip", &[("te", b"gzip")], &[b"hello"]).await,
        h2_case("upper-case header name", &[("X-Upper", b"1")], &[b"hello"]).await,
        h2_case(
            "host disagreeing with :authority",
            &[("host", b"other.example")],
            &[b"hello"],
        )
        .await,
    ];
    print_table("HTTP/2 to HTTP/1.1 downgrade shapes", &outcomes);
}
