//! Which credential a request carries: `Authorization: Bearer <token>` (the scheme is
//! case-insensitive, exactly one token68) or, for browsers, the route's session cookie. Another
//! scheme (e.g. `Basic`) is no credential here and passes through untouched. Anything that would
//! need a guess is a malformed request (400): two `Authorization` headers, a Bearer header that
//! is not exactly one token, the session cookie twice (including once hidden after a `,`, where
//! lenient parsers see a cookie of its own), or a header and a cookie that differ.
//! Tokens are never read from the query string. This step also holds the browser-facing rules
//! that depend on where a credential came from: the CSRF origin check and login redirects.

use http::{header, HeaderMap, HeaderValue, Method};

/// Where the token came from; decides CSRF rules and what is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    AuthorizationHeader,
    Cookie,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub token: String,
    pub source: Source,
}

/// Never prints the token: a credential must not reach a log even through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// A request whose credentials cannot be read without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    MultipleAuthorization,
    MalformedBearer,
    DuplicateCookie,
    /// A `Cookie` field that is not visible ASCII: what the gateway reads and what the upstream
    /// reads could differ.
    MalformedCookie,
    /// A Bearer header and the session cookie carry different tokens.
    Conflicting,
}

impl CredentialError {
    pub fn reason(self) -> &'static str {
        match self {
            CredentialError::MultipleAuthorization | CredentialError::Conflicting => {
                "multiple_credentials"
            }
            CredentialError::MalformedBearer => "malformed_authorization",
            CredentialError::DuplicateCookie => "duplicate_session_cookie",
            CredentialError::MalformedCookie => "malformed_cookie",
        }
    }
}

fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, CredentialError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::MultipleAuthorization);
    }
    let value = value
        .to_str()
        .map_err(|_| CredentialError::MalformedBearer)?;
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches([' ', '\t']);
    if !is_token68(token) {
        return Err(CredentialError::MalformedBearer);
    }
    Ok(Some(token.to_string()))
}

/// Every `;`-separated item of every `Cookie` field (HTTP/2 may split them, RFC 9113 §8.2.3),
/// trimmed.
pub(crate) fn cookie_items(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
}

/// Every `name=value` pair of every `Cookie` field.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_items(headers)
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim()))
}

/// The names that lenient parsers (Python's `SimpleCookie`, RFC 2109-era servers) read in one
/// `;`-separated item because they also split on `,`: each `,` followed by optional whitespace,
/// a name, optional whitespace and `=`. RFC 6265 reads `a=1, sess=x` as one cookie `a`, they
/// read a second cookie `sess`; the gateway must never let the two readings differ.
pub(crate) fn comma_hidden_names(item: &str) -> impl Iterator<Item = &str> {
    item.match_indices(',').filter_map(|(at, _)| {
        let rest = item[at + 1..].trim_start_matches([' ', '\t']);
        let end = rest.find(['=', ',', ';', ' ', '\t'])?;
        let (name, after) = rest.split_at(end);
        let after = after.trim_start_matches([' ', '\t']);
        (!name.is_empty() && after.starts_with('=')).then_some(name)
    })
}

/// Whether a cookie name is the session cookie as some upstream framework would read it:
/// case-insensitively (ASP.NET) or percent-decoded (PHP). Any such spelling counts, so a second
/// spelling is a duplicate, never a second credential the gateway did not check.
fn is_session_cookie(cookie: &str, name: &str) -> bool {
    if cookie.eq_ignore_ascii_case(name) {
        return true;
    }
    cookie.contains('%') && percent_decode(cookie).eq_ignore_ascii_case(name)
}

/// Decodes `%XX` escapes, leaving malformed ones as they are.
pub fn percent_decode(text: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(text.as_bytes())).into_owned()
}

/// [`percent_decode`] on bytes, for callers that must see what the decoding yields exactly.
pub fn percent_decode_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fn session_cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, CredentialError> {
    if headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return Err(CredentialError::MalformedCookie);
    }
    // A session-cookie name after a comma is the session cookie to a lenient upstream, in a
    // value the gateway never read: a duplicate, even when no plain one is present.
    if cookie_items(headers)
        .flat_map(comma_hidden_names)
        .any(|hidden| is_session_cookie(hidden, name))
    {
        return Err(CredentialError::DuplicateCookie);
    }
    let mut found = None;
    for (cookie, value) in cookie_pairs(headers) {
        if !is_session_cookie(cookie, name) {
            continue;
        }
        if found.is_some() {
            return Err(CredentialError::DuplicateCookie);
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        found = Some(value.to_string());
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// The request's credential, if any. `cookie` is the route's session cookie name.
pub fn extract(
    headers: &HeaderMap,
    cookie: Option<&str>,
) -> Result<Option<Credential>, CredentialError> {
    let from_header = bearer(headers)?;
    let from_cookie = match cookie {
        Some(name) => session_cookie(headers, name)?,
        None => None,
    };
    Ok(match (from_header, from_cookie) {
        (Some(a), Some(b)) if a != b => return Err(CredentialError::Conflicting),
        (Some(token), _) => Some(Credential {
            token,
            source: Source::AuthorizationHeader,
        }),
        (None, Some(token)) => Some(Credential {
            token,
            source: Source::Cookie,
        }),
        (None, None) => None,
    })
}

/// Removes the session cookie from the `Cookie` fields, keeping every other cookie. A pair that
/// a lenient parser would split at a comma into more pairs (`a=1, sess=x`) is dropped too: it
/// may hide any spelling of the session cookie, and the upstream must not receive a session
/// cookie the gateway meant to remove. A comma in an ordinary value (`prefs=a,b`, `d=Mon, 01`)
/// is not followed by `name=`, so such cookies pass unchanged.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    remove_cookies_where(headers, |cookie| is_session_cookie(cookie, name));
}

/// [`remove_cookie`] for every cookie whose name `matches` (given the name as sent): the other
/// pairs keep their name and value, in order, in one `Cookie` field.
pub(crate) fn remove_cookies_where(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) {
    let mut dropped = 0;
    let kept: Vec<String> = cookie_items(headers)
        .filter(|item| {
            let ambiguous = comma_hidden_names(item).next().is_some();
            dropped += usize::from(ambiguous);
            !ambiguous
        })
        .filter_map(|item| item.split_once('='))
        .map(|(cookie, value)| (cookie.trim(), value.trim()))
        .filter(|(cookie, _)| !matches(cookie))
        .map(|(cookie, value)| format!("{cookie}={value}"))
        .collect();
    if dropped > 0 {
        tracing::debug!(
            count = dropped,
            "dropped cookies holding a comma-separated pair"
        );
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(mut value) = HeaderValue::from_str(&kept.join("; ")) {
            value.set_sensitive(true);
            headers.insert(header::COOKIE, value);
        }
    }
}

/// `scheme://host[:port]` in canonical form (lower-case, default port dropped), or `None` for
/// anything else, including the opaque origin `null`.
pub fn parse_origin(raw: &str) -> Option<String> {
    let uri: http::Uri = raw.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let port = match (scheme.as_str(), authority.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => String::new(),
        (_, Some(port)) => format!(":{port}"),
    };
    if !matches!(scheme.as_str(), "http" | "https") || host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{host}{port}"))
}

/// Methods that cannot change state (RFC 9110 §9.2.1); anything else needs a same-origin proof
/// when the credential is a cookie the browser attached by itself.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The origin that sent a request: `Origin`, else the origin of `Referer`.
pub fn request_origin(headers: &HeaderMap) -> Option<String> {
    match headers.get(header::ORIGIN) {
        Some(origin) => parse_origin(origin.to_str().ok()?),
        None => parse_origin(headers.get(header::REFERER)?.to_str().ok()?),
    }
}

/// Whether `Accept` asks for HTML before anything else: a browser navigating, not an API client.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let mut html = 0.0_f32;
    let mut best_other = 0.0_f32;
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            // Wildcards say "anything will do", which is not a preference for HTML or against it.
            "*/*" | "text/*" | "application/*" => {}
            _ => best_other = best_other.max(q),
        }
    }
    html > 0.0 && html >= best_other
}

/// Percent-encodes everything but unreserved characters, for a URL query parameter value.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn bearer_forms() {
        let token = |v: &'static str| extract(&with(&[v]), None).map(|c| c.map(|c| c.token));
        assert_eq!(token("Bearer abc.def.ghi"), Ok(Some("abc.def.ghi".into())));
        assert_eq!(token("bearer abc"), Ok(Some("abc".into())));
        assert_eq!(token("BEARER   abc"), Ok(Some("abc".into())));
        assert_eq!(token("Basic dXNlcjpwYXNz"), Ok(None));
        assert_eq!(token("Bearer"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer "), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer a b"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer a,b"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer ==="), Err(CredentialError::MalformedBearer));
        assert_eq!(extract(&HeaderMap::new(), None), Ok(None));
        assert_eq!(
            extract(&with(&["Bearer a", "Bearer a"]), None),
            Err(CredentialError::MultipleAuthorization)
        );
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; sess=tok"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let found = extract(&headers, Some("sess")).expect("valid");
        assert_eq!(
            found,
            Some(Credential {
                token: "tok".into(),
                source: Source::Cookie
            })
        );
        headers.append(header::COOKIE, HeaderValue::from_static("sess=other"));
        assert_eq!(
            extract(&headers, Some("sess")),
            Err(CredentialError::DuplicateCookie)
        );
        let mut both = HeaderMap::new();
        both.insert(header::COOKIE, HeaderValue::from_static("sess=x"));
        both.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer y"));
        assert_eq!(
            extract(&both, Some("sess")),
            Err(CredentialError::Conflicting)
        );
        both.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            extract(&both, Some("sess"))
                .expect("same token")
                .map(|c| c.source),
            Some(Source::AuthorizationHeader)
        );
        remove_cookie(&mut headers, "sess");
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
        // Other spellings of the name are the same cookie to some upstream framework.
        for spelling in ["SESS=forged", "%73ess=forged", "Sess=forged"] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_static("sess=tok"));
            h.append(
                header::COOKIE,
                HeaderValue::from_str(spelling).expect("ascii"),
            );
            assert_eq!(
                extract(&h, Some("sess")),
                Err(CredentialError::DuplicateCookie),
                "{spelling}"
            );
            remove_cookie(&mut h, "sess");
            assert!(
                h.get(header::COOKIE).is_none(),
                "{spelling} survived removal"
            );
        }
        let mut binary = HeaderMap::new();
        binary.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"x=\xff; sess=forged").expect("bytes"),
        );
        assert_eq!(
            extract(&binary, Some("sess")),
            Err(CredentialError::MalformedCookie)
        );
    }

    #[test]
    fn comma_hidden_session_cookies() {
        let cookie = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_static(value));
            h
        };
        // A lenient parser reads a second session cookie after the comma: refused, even alone.
        for value in [
            "sess=tok; a=1, sess=forged",
            "sess=tok; a=1,sess=forged",
            "sess=tok; a=1,\t SESS =forged",
            "a=1, %73ess=forged",
            "sess=tok, sess=forged",
            "a, sess=forged",
        ] {
            assert_eq!(
                extract(&cookie(value), Some("sess")),
                Err(CredentialError::DuplicateCookie),
                "{value}"
            );
        }
        // Commas in ordinary values, or before a name that is not the session cookie, are no
        // second session cookie.
        for value in [
            "sess=tok; prefs=a,b",
            "sess=tok; d=Mon, 01 Jan 2024",
            "sess=tok; a=1, session=x",
            "sess=tok; a=1, sessx=x",
        ] {
            assert_eq!(
                extract(&cookie(value), Some("sess")).map(|c| c.map(|c| c.token)),
                Ok(Some("tok".into())),
                "{value}"
            );
        }
        // Removal never forwards a pair that a comma could split, whatever name it hides.
        let mut h = cookie("a=1, sess=forged; prefs=a,b; x=1, y=2; sess=tok; d=Mon, 01 Jan");
        h.append(header::COOKIE, HeaderValue::from_static("b=2,Sess=z"));
        remove_cookie(&mut h, "sess");
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "prefs=a,b; d=Mon, 01 Jan");
        let mut h = cookie("a=1, sess=forged");
        remove_cookie(&mut h, "sess");
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn origins_and_accept() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            parse_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            parse_origin("https://a.example/x?y").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(parse_origin("null"), None);
        assert_eq!(parse_origin("ftp://a.example"), None);
        let accept = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(v));
            prefers_html(&h)
        };
        assert!(accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json, text/html;q=0.5"));
        assert!(!accept("text/html;q=0"));
        assert!(!prefers_html(&HeaderMap::new()));
        assert_eq!(
            encode_query_value("https://a.example/x?y=1&z"),
            "https%3A%2F%2Fa.example%2Fx%3Fy%3D1%26z"
        );
    }
}
