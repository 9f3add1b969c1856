//! Where the browser goes after login: the return target it asked for, if that can only lead to
//! this gateway's own origin (or one configured as allowed). This step never produces an open
//! redirect: anything it cannot prove safe is refused, and the caller sends the browser to `/`
//! instead ([`return_target_or_root`]); it never repairs or re-encodes a target, so what it
//! accepts is exactly what goes into `Location`.
//!
//! Accepted: a path-absolute reference (`/app/page?x=1#frag`), or an absolute `http(s)` URL
//! whose origin is allowed. Every other form is refused, including the ones browsers
//! "helpfully" repair into another host: `//evil`, `/\evil` (browsers read `\` as `/`),
//! `/<TAB>/evil` (browsers drop tabs and newlines), `/%2F%2Fevil` and `/%5Cevil` (servers that
//! decode once and redirect again), userinfo (`https://app@evil`), and any non-ASCII lookalike.

/// Longer return targets are refused; the login-state cookie that carries one must fit a cookie.
pub const MAX_RETURN_LEN: usize = 2048;

/// How many rounds of percent-decoding are checked for a hidden control character or slash: a
/// chain of servers each decoding once is how `%252F` becomes `/`.
const DECODE_ROUNDS: usize = 3;

/// Why a return target was refused; the caller falls back to `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectError {
    Empty,
    TooLong,
    /// Whitespace, a control character, non-ASCII, or a character browsers always encode.
    ForbiddenCharacter,
    Backslash,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// A percent-encoded control character, at any depth of encoding.
    EncodedControl,
    /// `//host`: another host, with this page's scheme.
    ProtocolRelative,
    /// `/%2F...` or `/%5C...`: `//` or `/\` to whoever decodes it.
    EncodedSlash,
    /// Neither `/...` nor `scheme:...` (`page`, `?x`, `%2F%2Fevil`).
    NotPathAbsolute,
    /// `javascript:`, `data:`, anything but `http` and `https`.
    UnsupportedScheme,
    Userinfo,
    /// `https:evil`, `https:///x`, a bad host or port.
    BadAuthority,
    /// A well-formed URL on an origin that is not allowed.
    ForeignOrigin,
}

impl RedirectError {
    pub fn reason(&self) -> &'static str {
        match self {
            RedirectError::Empty => "redirect_empty",
            RedirectError::TooLong => "redirect_too_long",
            RedirectError::ForbiddenCharacter => "redirect_forbidden_character",
            RedirectError::Backslash => "redirect_backslash",
            RedirectError::BadPercent => "redirect_bad_percent",
            RedirectError::EncodedControl => "redirect_encoded_control",
            RedirectError::ProtocolRelative => "redirect_protocol_relative",
            RedirectError::EncodedSlash => "redirect_encoded_slash",
            RedirectError::NotPathAbsolute => "redirect_not_path_absolute",
            RedirectError::UnsupportedScheme => "redirect_unsupported_scheme",
            RedirectError::Userinfo => "redirect_userinfo",
            RedirectError::BadAuthority => "redirect_bad_authority",
            RedirectError::ForeignOrigin => "redirect_foreign_origin",
        }
    }
}

impl std::fmt::Display for RedirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "return target refused ({})", self.reason())
    }
}

impl std::error::Error for RedirectError {}

/// `raw` if it is a safe place to send the browser after login, unchanged. `own_origin` is
/// `scheme://host[:port]`; `allowed_origins` are further origins absolute targets may name.
pub fn return_target(
    raw: &str,
    own_origin: &str,
    allowed_origins: &[String],
) -> Result<String, RedirectError> {
    if raw.is_empty() {
        return Err(RedirectError::Empty);
    }
    if raw.len() > MAX_RETURN_LEN {
        return Err(RedirectError::TooLong);
    }
    for byte in raw.bytes() {
        if byte == b'\\' {
            return Err(RedirectError::Backslash);
        }
        // Visible ASCII only; `"<>` and backtick are always percent-encoded by browsers, and
        // a JSON-escaped `"` would make the login-state cookie outgrow its size budget.
        if !(0x21..=0x7e).contains(&byte) || matches!(byte, b'"' | b'<' | b'>' | b'`') {
            return Err(RedirectError::ForbiddenCharacter);
        }
    }
    check_percent(raw)?;
    if let Some(rest) = raw.strip_prefix('/') {
        if rest.starts_with('/') {
            return Err(RedirectError::ProtocolRelative);
        }
        if hides_leading_slash(rest) {
            return Err(RedirectError::EncodedSlash);
        }
        return Ok(raw.to_string());
    }
    let target = origin_of(raw)?;
    let allowed = std::iter::once(own_origin)
        .chain(allowed_origins.iter().map(String::as_str))
        .filter_map(|origin| origin_of(origin).ok())
        .any(|origin| origin == target);
    if !allowed {
        return Err(RedirectError::ForeignOrigin);
    }
    Ok(raw.to_string())
}

/// [`return_target`], or `/` when it refuses: a login never fails over its return target.
pub fn return_target_or_root(raw: &str, own_origin: &str, allowed_origins: &[String]) -> String {
    return_target(raw, own_origin, allowed_origins).unwrap_or_else(|err| {
        tracing::debug!(reason = err.reason(), "return target refused; using /");
        "/".to_string()
    })
}

/// Every `%` starts a valid escape, and no decoding depth yields a control character.
fn check_percent(raw: &str) -> Result<(), RedirectError> {
    let bytes = raw.as_bytes();
    for (at, _) in raw.match_indices('%') {
        let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
        if !hex(at + 1) || !hex(at + 2) {
            return Err(RedirectError::BadPercent);
        }
    }
    let mut text = raw.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        if !text.contains(&b'%') {
            break;
        }
        text = crate::auth::credential::percent_decode_bytes(&text);
        if text.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(RedirectError::EncodedControl);
        }
    }
    Ok(())
}

/// Whether what follows the first `/` decodes, at some depth, to a leading `/` or `\`.
fn hides_leading_slash(rest: &str) -> bool {
    let mut text = rest.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        if !text.starts_with(b"%") {
            return false;
        }
        text = crate::auth::credential::percent_decode_bytes(&text);
        if matches!(text.first(), Some(b'/' | b'\\')) {
            return true;
        }
    }
    false
}

/// The canonical origin of an absolute `http(s)` URL: lower-case scheme and host, default port
/// elided. Only forms every browser reads the same way are accepted.
fn origin_of(url: &str) -> Result<String, RedirectError> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(RedirectError::NotPathAbsolute);
    };
    let mut chars = scheme.chars();
    let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return Err(RedirectError::NotPathAbsolute);
    }
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(RedirectError::UnsupportedScheme),
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(RedirectError::BadAuthority);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(RedirectError::Userinfo);
    }
    let (host, port) = if let Some(literal) = authority.strip_prefix('[') {
        let (inside, after) = literal.split_once(']').ok_or(RedirectError::BadAuthority)?;
        let valid = !inside.is_empty()
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        if !valid {
            return Err(RedirectError::BadAuthority);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(RedirectError::BadAuthority)?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let valid = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !valid {
            return Err(RedirectError::BadAuthority);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => default_port,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(RedirectError::BadAuthority);
            }
            digits
                .parse::<u16>()
                .map_err(|_| RedirectError::BadAuthority)?
        }
    };
    Ok(if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use RedirectError as E;

    const OWN: &str = "https://app.example.com";

    fn check(raw: &str) -> Result<String, RedirectError> {
        return_target(
            raw,
            OWN,
            &[
                "https://docs.example.com".to_string(),
                "http://localhost:8080".to_string(),
            ],
        )
    }

    #[test]
    fn accepted_unchanged() {
        for raw in [
            "/",
            "/app/page?x=1#frag",
            "/app/%2F/still-same-origin",
            "/a%20b/%C3%A9t%C3%A9?q=%2F%2F",
            "/@evil.com",
            "/.well-known/x",
            "/?next=//evil",
            "/x;y=1,z|{}^",
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/app?x=1#f",
            "HTTPS://APP.Example.COM/x",
            "https://app.example.com:443/x",
            "https://docs.example.com/guide",
            "http://localhost:8080/",
            "https://app.example.com?x",
            "https://app.example.com#frag",
        ] {
            assert_eq!(check(raw), Ok(raw.to_string()), "{raw}");
            assert_eq!(
                return_target_or_root(raw, OWN, &[]),
                if raw.contains("docs") || raw.contains("localhost") {
                    "/"
                } else {
                    raw
                },
                "{raw}"
            );
        }
    }

    #[test]
    fn refused() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_LEN));
        let cases: &[(&str, RedirectError)] = &[
            ("", E::Empty),
            (&long, E::TooLong),
            ("//evil.com", E::ProtocolRelative),
            ("//evil.com/path", E::ProtocolRelative),
            ("///evil.com", E::ProtocolRelative),
            ("/\\evil.com", E::Backslash),
            ("\\/evil.com", E::Backslash),
            ("\\\\evil.com", E::Backslash),
            ("/path\\..\\x", E::Backslash),
            ("https://evil.com\\@app.example.com", E::Backslash),
            ("https:\\\\evil.com", E::Backslash),
            ("/\t/evil.com", E::ForbiddenCharacter),
            ("/\n/evil.com", E::ForbiddenCharacter),
            ("/\r\n/evil.com", E::ForbiddenCharacter),
            ("/ /evil.com", E::ForbiddenCharacter),
            (" /app", E::ForbiddenCharacter),
            ("/app ", E::ForbiddenCharacter),
            ("\u{0}/app", E::ForbiddenCharacter),
            ("/app\u{7f}", E::ForbiddenCharacter),
            ("\u{FF0F}evil.com", E::ForbiddenCharacter),
            ("/\u{FF0F}evil.com", E::ForbiddenCharacter),
            ("\u{2215}\u{2215}evil.com", E::ForbiddenCharacter),
            ("/caf\u{e9}", E::ForbiddenCharacter),
            ("/\"onmouseover", E::ForbiddenCharacter),
            ("/<script>", E::ForbiddenCharacter),
            ("/%09/evil.com", E::EncodedControl),
            ("/%0a/evil.com", E::EncodedControl),
            ("/app%0D%0ASet-Cookie:x", E::EncodedControl),
            ("/app%00", E::EncodedControl),
            ("/app%7F", E::EncodedControl),
            ("/%2509/evil.com", E::EncodedControl),
            ("/%2F%2Fevil.com", E::EncodedSlash),
            ("/%2fevil.com", E::EncodedSlash),
            ("/%5Cevil.com", E::EncodedSlash),
            ("/%5cevil.com", E::EncodedSlash),
            ("/%252F%252Fevil.com", E::EncodedSlash),
            ("/%25252Fevil.com", E::EncodedSlash),
            ("/%", E::BadPercent),
            ("/%2", E::BadPercent),
            ("/%zz", E::BadPercent),
            ("%2F%2Fevil.com", E::NotPathAbsolute),
            ("evil.com", E::NotPathAbsolute),
            ("app/page", E::NotPathAbsolute),
            ("?next=x", E::NotPathAbsolute),
            ("#frag", E::NotPathAbsolute),
            (".//evil.com", E::NotPathAbsolute),
            ("1http://app.example.com", E::NotPathAbsolute),
            ("javascript:alert(1)", E::UnsupportedScheme),
            (
                "JavaScript://app.example.com/%0Aalert(1)",
                E::EncodedControl,
            ),
            ("javascript://app.example.com/x", E::UnsupportedScheme),
            ("data:text/html,<x>", E::ForbiddenCharacter),
            ("data:text/html;base64,PHg+", E::UnsupportedScheme),
            ("vbscript:x", E::UnsupportedScheme),
            ("ftp://app.example.com/", E::UnsupportedScheme),
            ("https:evil.com", E::BadAuthority),
            ("https:/evil.com", E::BadAuthority),
            ("https:///evil.com", E::BadAuthority),
            ("https://", E::BadAuthority),
            ("https://app.example.com:/x", E::BadAuthority),
            ("https://app.example.com:99999/", E::BadAuthority),
            ("https://app.example.com:+443/", E::BadAuthority),
            ("https://app%2Eexample.com/", E::BadAuthority),
            ("https://.app.example.com/", E::BadAuthority),
            ("https://app.example.com@evil.com", E::Userinfo),
            ("https://user:pw@app.example.com/", E::Userinfo),
            ("https://@app.example.com/", E::Userinfo),
            ("http://app.example.com.evil.com", E::ForeignOrigin),
            ("https://app.example.com.evil.com/x", E::ForeignOrigin),
            ("https://app.example.com./", E::ForeignOrigin),
            ("https://evil.com/", E::ForeignOrigin),
            ("https://evil.com/https://app.example.com", E::ForeignOrigin),
            ("https://evil.com?https://app.example.com", E::ForeignOrigin),
            ("http://app.example.com/", E::ForeignOrigin),
            ("https://app.example.com:8443/", E::ForeignOrigin),
            ("https://localhost:8080/", E::ForeignOrigin),
            ("https://[::1]/", E::ForeignOrigin),
            ("https://[::1/", E::BadAuthority),
        ];
        for (raw, want) in cases {
            assert_eq!(check(raw), Err(*want), "{raw:?}");
            assert_eq!(return_target_or_root(raw, OWN, &[]), "/", "{raw:?}");
            assert!(want.reason().starts_with("redirect_"));
        }
    }

    #[test]
    fn origins_compare_canonically() {
        let allowed = ["HTTPS://Docs.Example.com:443".to_string()];
        assert!(return_target("https://docs.example.com/x", OWN, &allowed).is_ok());
        assert!(return_target("http://[::1]:8080/x", "http://[::1]:8080", &[]).is_ok());
        // A configured origin that does not parse allows nothing; relative targets still work.
        assert_eq!(
            return_target("https://app.example.com/", "not an origin", &[]),
            Err(E::ForeignOrigin)
        );
        assert_eq!(return_target("/x", "not an origin", &[]), Ok("/x".into()));
        let exactly = format!("/{}", "a".repeat(MAX_RETURN_LEN - 1));
        assert_eq!(check(&exactly), Ok(exactly.clone()));
    }
}
