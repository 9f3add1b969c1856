//! Protocols behind the gateway: WebSocket pass-through, HTTP/2 upstreams (h2c and h2 over TLS)
//! and gRPC streaming with trailers, all through real sockets on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const LONG: Duration = Duration::from_secs(20);

/// A WebSocket upstream that echoes every message back.
async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_authenticated_then_spliced_both_ways() {
    let ws_up = websocket_echo().await;
    let (key, idp) = issuer_with_key(Algorithm::ES256, Some("k")).await;
    let gw = start(&format!(
        r#"[server]
upgrade_idle_timeout = "500ms"
[[listener]]
address = "127.0.0.1:0"
{}[[route]]
name = "ws"
path_prefix = "/ws"
upstream = "http://{ws_up}"
"#,
        provider_toml("p", &idp, "\"ES256\"")
    ))
    .await;
    let url = format!("ws://{}/ws/chat", gw.addrs[0]);

    // Without a token the handshake is refused before anything reaches the upstream.
    let refused = tokio_tungstenite::connect_async(url.clone()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("unauthenticated upgrade was not refused: {other:?}"),
    }

    let mut request = url.clone().into_client_request().unwrap();
    let token = key.token(&claims(&idp.issuer(), "alice"));
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, response) = tokio::time::timeout(LONG, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Larger than any socket or frame buffer on the way.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match tokio::time::timeout(LONG, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Binary(data) => assert!(data[..] == big[..], "large message corrupted"),
        other => panic!("unexpected {other:?}"),
    }
    for i in 0..20 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    // Idle past upgrade_idle_timeout: the gateway closes the tunnel.
    let closed = tokio::time::timeout(LONG, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle tunnel stayed open");
}

#[tokio::test]
async fn h2c_and_h2_over_tls_upstreams() {
    let plain = echo().await;
    let dir = temp_dir("h2-upstream");
    let cert = make_cert(&dir);
    let tls = echo_tls(&cert).await;
    let gw = start_in(
        &dir,
        &format!(
            r#"[[listener]]
address = "127.0.0.1:0"
[[route]]
name = "h1"
path_prefix = "/h1"
upstream = "http://{plain}"
auth = "public"
[[route]]
name = "h2c"
path_prefix = "/h2c"
upstream = "http://{plain}"
upstream_protocol = "h2c"
auth = "public"
[[route]]
name = "h2"
path_prefix = "/h2"
upstream = "https://localhost:{}"
upstream_protocol = "h2"
ca_bundle = "cert.pem"
auth = "public"
[[route]]
name = "tls-h1"
path_prefix = "/tls-h1"
upstream = "https://localhost:{}"
ca_bundle = "cert.pem"
auth = "public"
"#,
            tls.port(),
            tls.port()
        ),
    )
    .await;
    let client = h1_client();
    for (path, version) in [
        ("/h1/x", "HTTP/1.1"),
        ("/h2c/x", "HTTP/2.0"),
        ("/h2/x", "HTTP/2.0"),
        ("/tls-h1/x", "HTTP/1.1"),
    ] {
        // Several requests: an h2 upstream multiplexes them on one pooled connection.
        for _ in 0..3 {
            let reply = send(&client, get(&format!("http://{}{path}?q=1", gw.addrs[0]))).await;
            assert_eq!(
                reply.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(reply.json()["version"], version, "{path}");
            assert_eq!(reply.upstream_path(), format!("{path}?q=1"));
            assert_eq!(reply.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
        }
    }
    // A large body streams through an h2 upstream too.
    let req = Request::post(format!("http://{}/h2/upload", gw.addrs[0]))
        .body(http_body_util::Full::new(Bytes::from(vec![
            7u8;
            8 * 1024 * 1024
        ])))
        .unwrap();
    let reply = send(&client, req).await;
    assert_eq!(reply.json()["body_bytes"], 8 * 1024 * 1024);
}

/// gRPC framing: a 5-byte prefix (compressed flag, big-endian length) before each message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    frame.freeze()
}

/// A gRPC-style upstream over h2c: echoes every message as it arrives (bidirectional streaming)
/// with "echo:" prepended, then ends with trailers. Refuses requests without `te: trailers`.
async fn grpc_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
                    let mut body = req.into_body();
                    tokio::spawn(async move {
                        let mut pending = BytesMut::new();
                        let mut count = 0;
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                pending.extend_from_slice(&data);
                                while pending.len() >= 5 {
                                    let len = u32::from_be_bytes([
                                        pending[1], pending[2], pending[3], pending[4],
                                    ]) as usize;
                                    if pending.len() < 5 + len {
                                        break;
                                    }
                                    pending.advance(5);
                                    let message = pending.split_to(len);
                                    let mut reply = b"echo:".to_vec();
                                    reply.extend_from_slice(&message);
                                    count += 1;
                                    let _ = tx.send(Ok(Frame::data(grpc_frame(&reply)))).await;
                                }
                            }
                        }
                        let mut trailers = http::HeaderMap::new();
                        let (status, message) = if te_ok {
                            ("0", format!("echoed {count}"))
                        } else {
                            ("3", "te missing".into())
                        };
                        trailers.insert("grpc-status", status.parse().unwrap());
                        trailers.insert("grpc-message", message.parse().unwrap());
                        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                    });
                    let stream = tokio_stream_from(rx);
                    let mut response = Response::new(StreamBody::new(stream));
                    response
                        .headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_bidirectional_streaming_with_trailers() {
    let upstream = grpc_upstream().await;
    let gw = start(&format!(
        r#"[[listener]]
address = "127.0.0.1:0"
[[route]]
name = "grpc"
path_prefix = "/echo.Echo"
upstream = "http://{upstream}"
upstream_protocol = "h2c"
auth = "public"
"#
    ))
    .await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tokio::net::TcpStream::connect(gw.addrs[0]).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);

    // Bidirectional: each reply is read before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let request = Request::post(format!("http://{}/echo.Echo/Chat", gw.addrs[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(tokio_stream_from(rx)).boxed_unsync())
        .unwrap();
    let response = tokio::time::timeout(LONG, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    for i in 0..5 {
        tx.send(Ok(Frame::data(grpc_frame(format!("msg{i}").as_bytes()))))
            .await
            .unwrap();
        let frame = tokio::time::timeout(LONG, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(
            &data[5..],
            format!("echo:msg{i}").as_bytes(),
            "message {i} was not streamed back at once"
        );
    }
    drop(tx);
    let mut trailers = None;
    while let Some(frame) = tokio::time::timeout(LONG, body.frame()).await.unwrap() {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    let trailers = trailers.expect("gRPC trailers did not reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed 5");

    // Unary.
    let request = Request::post(format!("http://{}/echo.Echo/Say", gw.addrs[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(grpc_frame(b"one")).boxed_unsync())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(&collected.to_bytes()[5..], b"echo:one");
    assert_eq!(trailers["grpc-status"], "0");

    // Gateway-made errors are gRPC-shaped: no route, upstream down.
    let request = Request::post(format!("http://{}/other.Svc/Call", gw.addrs[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(grpc_frame(b"x")).boxed_unsync())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    let ws_up = websocket_echo().await;
    let gw = start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"ws\"\npath_prefix = \"/ws\"\nupstream = \"http://{ws_up}\"\nauth = \"public\"\nmethods = [\"GET\"]\n"
    ))
    .await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tokio::net::TcpStream::connect(gw.addrs[0]).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // The client may only send an extended CONNECT once the server's SETTINGS allowed it.
    let mut response = None;
    for _ in 0..50 {
        let mut request = Request::connect(format!("http://{}/ws/chat", gw.addrs[0]))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        match sender.send_request(request).await {
            Ok(r) => {
                response = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut response = response.expect("extended CONNECT was never accepted");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = tokio::time::timeout(LONG, hyper::upgrade::on(&mut response))
        .await
        .unwrap()
        .unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(LONG, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        Message::text("over h2")
    );
    let big = vec![42u8; 1024 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    match tokio::time::timeout(LONG, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Binary(data) => assert!(data[..] == big[..]),
        other => panic!("unexpected {other:?}"),
    }
}

/// An upstream that answers every request with `101 Upgrade: h2c` and records the request head.
async fn h2c_upgrading_upstream() -> (SocketAddr, Arc<std::sync::Mutex<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                *record.lock().unwrap() = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                    .await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn only_websocket_is_ever_upgraded_to() {
    let (up, seen) = h2c_upgrading_upstream().await;
    let gw = start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
    ))
    .await;
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket, h2c\r\n\
                   HTTP2-Settings: AAMAAABkAAQAAP__\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
    let response = raw_exchange(gw.addrs[0], request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 502, "{response}");
    let head = seen.lock().unwrap().clone();
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(
        !head.contains("h2c"),
        "the h2c upgrade reached the upstream: {head}"
    );
    assert!(!head.contains("http2-settings"), "{head}");
    // A POST is never a WebSocket handshake: its Upgrade is dropped like any hop-by-hop header.
    let post = "POST /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n";
    let _ = raw_exchange(gw.addrs[0], post.as_bytes(), Duration::from_millis(500)).await;
    let head = seen.lock().unwrap().clone();
    assert!(head.starts_with("post"), "{head}");
    assert!(!head.contains("upgrade"), "{head}");
    // Plain CONNECT is no business of a service gateway.
    let connect =
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(gw.addrs[0], connect.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 400, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_count_against_the_connection_limit_and_close_on_shutdown() {
    let ws_up = websocket_echo().await;
    let gw = start(&format!(
        "[server]\nmax_connections = 1\n[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"ws\"\npath_prefix = \"/\"\nupstream = \"http://{ws_up}\"\nauth = \"public\"\n"
    ))
    .await;
    let addr = gw.addrs[0];
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    // The tunnel holds the only connection slot: another client waits.
    let waiting = tokio::spawn(async move {
        h1_client()
            .request(get(&format!("http://{addr}/x")))
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if waiting.is_finished() {
        panic!(
            "a client was served past max_connections while a tunnel was open: {:?}",
            waiting.await
        );
    }
    // Shutdown closes the tunnel and the drain completes.
    let shutdown = tokio::spawn(gw.shutdown(LONG));
    let closed = tokio::time::timeout(LONG, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "shutdown left the tunnel open");
    assert!(shutdown.await.unwrap(), "the drain did not complete");
    waiting.abort();
}

/// A WebSocket upstream at the byte level: completes the handshake, then reports every byte
/// count it receives, so a test can see bytes arrive before a frame is complete.
async fn byte_counting_websocket_upstream(
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let key = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("sec-websocket-key:")
                    .then(|| l[18..].trim().to_string())
            })
            .unwrap();
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        );
        let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = tx.send(n);
                }
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_bytes_flow_before_a_frame_is_complete() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, mut received) = byte_counting_websocket_upstream().await;
    let gw = start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"ws\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(gw.addrs[0]).await.unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "gateway closed during the handshake");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The header of a masked 64 KiB binary frame and its first 100 payload bytes: far from a
    // whole frame. The upstream must see them anyway.
    // FIN + binary, masked with a 16-bit length of 65535, then the masking key.
    let mut partial = vec![0x82, 0x80 | 126, 0xFF, 0xFF, 1, 2, 3, 4];
    partial.extend(std::iter::repeat_n(7u8, 100));
    client.write_all(&partial).await.unwrap();
    let mut total = 0;
    while total < partial.len() {
        let n = tokio::time::timeout(LONG, received.recv())
            .await
            .expect("bytes of an incomplete frame were held back")
            .unwrap();
        total += n;
    }
    assert_eq!(total, partial.len());
}
