//! A raw HTTP/2 client for the abuse and smuggling tests: frames written by hand, so a test can
//! send what no conforming client library would (resets in a loop, endless CONTINUATION frames,
//! a header value holding CR LF). HPACK is encoded as literals without indexing; of what the
//! gateway sends back only `:status` is decoded, which is all the tests need to know.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = entries
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// The client preface followed by a SETTINGS frame with `entries`.
pub fn preface(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(settings(entries));
    out
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix, `high` holding the bits above the prefix.
fn hpack_int(out: &mut Vec<u8>, high: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literals without indexing, new names, no Huffman coding: bytes go out
/// exactly as given, CR, LF and NUL included.
pub fn hpack(headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The pseudo-headers of a request followed by `extra`.
pub fn request<'a>(
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    extra: &[(&'a str, &'a [u8])],
) -> Vec<u8> {
    let mut headers: Vec<(&str, &[u8])> = vec![
        (":method", method.as_bytes()),
        (":scheme", b"http"),
        (":authority", authority.as_bytes()),
        (":path", path.as_bytes()),
    ];
    headers.extend_from_slice(extra);
    hpack(&headers)
}

/// One frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// `:status` of a response HEADERS frame when it is the first field (as servers send it).
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        let mut block = self.payload.as_slice();
        if self.flags & 0x8 != 0 {
            let pad = *block.first()? as usize;
            block = block.get(1..block.len().checked_sub(pad)?)?;
        }
        if self.flags & 0x20 != 0 {
            block = block.get(5..)?;
        }
        // A dynamic table size update may come first.
        while block.first().is_some_and(|b| b & 0xe0 == 0x20) {
            let (_, rest) = read_int(block, 5)?;
            block = rest;
        }
        let first = *block.first()?;
        const INDEXED: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
        if first & 0x80 != 0 {
            let (index, _) = read_int(block, 7)?;
            return INDEXED.get(index.checked_sub(8)?).copied();
        }
        let (name, rest) = if first & 0xc0 == 0x40 {
            read_int(block, 6)?
        } else {
            read_int(block, 4)?
        };
        if !(8..=14).contains(&name) {
            return None;
        }
        let huffman = *rest.first()? & 0x80 != 0;
        let (len, rest) = read_int(rest, 7)?;
        let value = rest.get(..len)?;
        let text = if huffman {
            huffman_digits(value)
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        text.parse().ok()
    }
}

fn read_int(block: &[u8], n: u32) -> Option<(usize, &[u8])> {
    let max = (1usize << n) - 1;
    let mut value = (*block.first()? as usize) & max;
    let mut rest = &block[1..];
    if value < max {
        return Some((value, rest));
    }
    let mut shift = 0;
    loop {
        let b = *rest.first()?;
        rest = &rest[1..];
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, rest));
        }
    }
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B), enough for a status.
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u8> {
        bits.get(at..at + n)
            .map(|s| s.iter().fold(0u8, |acc, b| (acc << 1) | b))
    };
    let mut out = String::new();
    let mut at = 0;
    while let Some(five) = take(at, 5) {
        if five <= 2 {
            out.push((b'0' + five) as char);
            at += 5;
            continue;
        }
        match take(at, 6) {
            Some(six @ 0x19..=0x1f) => {
                out.push((b'3' + six - 0x19) as char);
                at += 6;
            }
            _ => break,
        }
    }
    out
}

/// What the reader saw.
#[derive(Debug, Clone)]
pub enum Event {
    Frame(Frame),
    /// The gateway closed the connection (EOF or reset).
    Closed,
}

/// A raw connection; a background task reads frames into `events` unless the test wants a
/// client that never reads.
pub struct RawH2 {
    pub writer: OwnedWriteHalf,
    pub events: Option<mpsc::UnboundedReceiver<Event>>,
    pub unread: Option<OwnedReadHalf>,
    pub started: Instant,
}

async fn read_frames(mut reader: OwnedReadHalf, events: mpsc::UnboundedSender<Event>) {
    loop {
        let mut head = [0u8; 9];
        if reader.read_exact(&mut head).await.is_err() {
            let _ = events.send(Event::Closed);
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            let _ = events.send(Event::Closed);
            return;
        }
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream,
            payload,
        };
        if events.send(Event::Frame(frame)).is_err() {
            return;
        }
    }
}

impl RawH2 {
    /// Connects and sends the preface with `entries`; `read` spawns the frame reader.
    pub async fn connect(addr: std::net::SocketAddr, entries: &[(u16, u32)], read: bool) -> RawH2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        let (reader, mut writer) = stream.into_split();
        writer.write_all(&preface(entries)).await.expect("preface");
        let (events, unread) = if read {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(read_frames(reader, tx));
            (Some(rx), None)
        } else {
            (None, Some(reader))
        };
        RawH2 {
            writer,
            events,
            unread,
            started: Instant::now(),
        }
    }

    /// Writes `bytes`; false once the gateway no longer takes them (closed, or not reading
    /// for longer than `patience`).
    pub async fn send(&mut self, bytes: &[u8], patience: Duration) -> bool {
        matches!(
            tokio::time::timeout(patience, self.writer.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Frames received so far without waiting; `Closed` last if the connection ended.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(events) = &mut self.events {
            while let Ok(event) = events.try_recv() {
                out.push(event);
            }
        }
        out
    }

    /// Waits until `done` accepts an event or `deadline` passes; returns every event seen.
    pub async fn until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&Event) -> bool,
    ) -> (Vec<Event>, bool) {
        let mut seen = Vec::new();
        let Some(events) = &mut self.events else {
            return (seen, false);
        };
        let end = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(end, events.recv()).await {
                Ok(Some(event)) => {
                    let stop = done(&event) || matches!(event, Event::Closed);
                    let finished = done(&event);
                    seen.push(event);
                    if stop {
                        return (seen, finished);
                    }
                }
                Ok(None) | Err(_) => return (seen, false),
            }
        }
    }
}

/// True for an event that ends the connection: GOAWAY or EOF.
pub fn is_close(event: &Event) -> bool {
    matches!(event, Event::Closed) || matches!(event, Event::Frame(f) if f.kind == GOAWAY)
}

/// A short description of an event for the printed tables.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Closed => "EOF".into(),
        Event::Frame(f) => match f.kind {
            GOAWAY => format!(
                "GOAWAY({}, last stream {})",
                error_name(f.error_code().unwrap_or(u32::MAX)),
                f.payload
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])
                        & 0x7fff_ffff)
            ),
            RST_STREAM => format!(
                "RST_STREAM(stream {}, {})",
                f.stream,
                error_name(f.error_code().unwrap_or(u32::MAX))
            ),
            HEADERS => match f.status() {
                Some(status) => format!("HEADERS :status {status}"),
                None => "HEADERS".into(),
            },
            DATA if f.flags & END_STREAM != 0 => {
                format!("DATA({} bytes, END_STREAM)", f.payload.len())
            }
            DATA => format!("DATA({} bytes)", f.payload.len()),
            SETTINGS if f.flags & ACK != 0 => "SETTINGS ACK".into(),
            SETTINGS => "SETTINGS".into(),
            PING if f.flags & ACK != 0 => "PING ACK".into(),
            PING => "PING".into(),
            WINDOW_UPDATE => "WINDOW_UPDATE".into(),
            kind => format!("frame type {kind}"),
        },
    }
}

pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "other",
    }
}
