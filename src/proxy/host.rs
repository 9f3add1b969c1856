//! The host a request addressed: `:authority` (HTTP/2), the absolute-form target, else the one
//! `Host` header, parsed strictly as RFC 3986 `host [ ":" port ]` and kept only in canonical
//! form. Routing, `X-Forwarded-Host`, `Forwarded`, `preserve_host` and the CSRF origin all read
//! that one canonical form, so what the gateway routed on is exactly what an upstream reads.
//!
//! Stricter than the RFC on purpose: a reg-name holds only letters, digits, `-`, `.` and `_`
//! (no percent-encoding, no sub-delimiters such as `,` that proxy lists split on), every label is
//! non-empty and at most 63 bytes (one trailing dot, the DNS root, is allowed and dropped), an
//! IP literal is a bracketed IPv6 address with nothing after `]` but a port, and a port is 1 to
//! 5 digits no larger than 65535. Anything else is `400 bad_host`; nothing is guessed.

use std::net::Ipv6Addr;

use http::request::Parts;
use http::{header, Version};

/// Why a request's host was refused; the pipeline maps each to a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// HTTP/1.1 without a Host header.
    Missing,
    /// Two Host headers, a Host that disagrees with the authority, or a malformed host.
    Bad,
}

impl HostError {
    pub fn reason(self) -> &'static str {
        match self {
            HostError::Missing => "missing_host",
            HostError::Bad => "bad_host",
        }
    }
}

/// A host in canonical form: lower-case, no trailing dot, IPv6 compressed, port without
/// leading zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    /// `name[:port]`: what is forwarded in `X-Forwarded-Host`, `Forwarded` and `preserve_host`.
    pub authority: String,
    /// The name alone (IPv6 in brackets): what routes are matched on.
    pub name: String,
}

impl RequestHost {
    /// The host of `req`, or `None` for an HTTP/1.0 or HTTP/2 request that named none.
    pub fn of(req: &Parts) -> Result<Option<Self>, HostError> {
        let mut hosts = req.headers.get_all(header::HOST).iter();
        let header = hosts.next();
        if hosts.next().is_some() {
            return Err(HostError::Bad);
        }
        let header = header
            .map(|value| value.to_str().map_err(|_| HostError::Bad))
            .transpose()?
            .map(parse)
            .transpose()?;
        let Some(authority) = req.uri.authority() else {
            return match header {
                Some(host) => Ok(Some(host)),
                None if req.version == Version::HTTP_11 => Err(HostError::Missing),
                None => Ok(None),
            };
        };
        let host = parse(authority.as_str())?;
        // RFC 9113 §8.3.1 / RFC 9112 §3.2.2: an upstream that reads Host must not see another
        // host than the one routed on, so a disagreeing Host header is refused, not ignored.
        if header.is_some_and(|header| header != host) {
            return Err(HostError::Bad);
        }
        Ok(Some(host))
    }
}

/// Parses `host [ ":" port ]` strictly (see the module doc).
pub fn parse(raw: &str) -> Result<RequestHost, HostError> {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(HostError::Bad)?;
        // Only IPv6: no zone identifiers and no IPvFuture.
        let address: Ipv6Addr = literal.parse().map_err(|_| HostError::Bad)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(HostError::Bad)?),
        };
        (format!("[{address}]"), port)
    } else {
        let (name, port) = match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        };
        (reg_name(name)?, port)
    };
    let authority = match port {
        None => name.clone(),
        Some(port) => format!("{name}:{}", parse_port(port)?),
    };
    Ok(RequestHost { authority, name })
}

fn reg_name(raw: &str) -> Result<String, HostError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() || name.len() > 253 {
        return Err(HostError::Bad);
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(HostError::Bad);
        }
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_port(raw: &str) -> Result<u16, HostError> {
    if raw.is_empty() || raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Bad);
    }
    raw.parse().map_err(|_| HostError::Bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, String) {
        let host = parse(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"));
        (host.name, host.authority)
    }

    #[test]
    fn canonical_forms() {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(ok("Example.COM"), pair("example.com", "example.com"));
        assert_eq!(ok("example.com."), pair("example.com", "example.com"));
        assert_eq!(
            ok("example.com:8080"),
            pair("example.com", "example.com:8080")
        );
        assert_eq!(ok("example.com:080"), pair("example.com", "example.com:80"));
        assert_eq!(ok("127.0.0.1:9"), pair("127.0.0.1", "127.0.0.1:9"));
        assert_eq!(ok("[::1]"), pair("[::1]", "[::1]"));
        assert_eq!(ok("[0:0:0:0:0:0:0:1]:443"), pair("[::1]", "[::1]:443"));
        assert_eq!(ok("[2001:DB8::A]"), pair("[2001:db8::a]", "[2001:db8::a]"));
        assert_eq!(
            ok("svc_a.internal"),
            pair("svc_a.internal", "svc_a.internal")
        );
        assert_eq!(ok("localhost:65535").1, "localhost:65535");
    }

    #[test]
    fn every_malformed_shape_is_refused() {
        for raw in [
            "",
            ":80",
            "admin.example.com:80:",
            "admin.example.com:",
            "[x],admin.example.com",
            "[x]\\",
            "[x]",
            "[::1]x",
            "[::1]:80:",
            "[::1]]",
            "[[::1]]",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "::1",
            ".example.com",
            "a..example.com",
            "example.com..",
            "a,b.example.com",
            "a b.example.com",
            "exa%6Dple.com",
            "user@example.com",
            "example.com:65536",
            "example.com:123456",
            "example.com:+80",
            "example.com:-1",
            "example.com:8x",
            "example.com:80 ",
            "example.com/",
            "example.com?",
            "example.com#",
            "ex\"ample.com",
            "ex*ample.com",
            "exämple.com",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert_eq!(parse(raw), Err(HostError::Bad), "{raw:?} must be refused");
        }
    }
}
