//! The cookies the gateway sets on a browser: validated attributes (`CookieSpec`), values too
//! large for one cookie split across several, and strict reassembly of what comes back. This
//! step never guesses: a cookie set that is not exactly what [`set_cookies`] wrote (a missing,
//! repeated or extra chunk, another spelling of a name, a name hidden after a comma) is an
//! error, never a best-effort read. It does not seal or open values, and never logs them.
//!
//! Chunking scheme. Browsers cap one cookie (name, value and attributes) near 4096 bytes; each
//! `Set-Cookie` here stays within [`MAX_COOKIE_BYTES`]. The first cookie always carries the
//! plain name and a value `"{count}.{chunk 1}"`; chunks 2..=count are named `"{name}-{i}"`.
//! So a value that fits is one cookie `name=1.<value>`; a larger one is
//! `name=3.<a>`, `name-2=<b>`, `name-3=<c>`. The count is a single digit 1..=[`MAX_CHUNKS`],
//! the suffix keeps a `__Host-`/`__Secure-` prefix at the start of every name, and the reader
//! learns the count from the one cookie that must always be present. A value needing more than
//! [`MAX_CHUNKS`] cookies is [`CookieWriteError::TooLarge`]: the session belongs in a
//! server-side store instead. Any other cookie named `"{name}-{digits}"` counts as ours (an
//! invalid chunk), so pick a session cookie name no other application on the host uses.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use crate::auth::credential::{
    comma_hidden_names, cookie_items, cookie_pairs, percent_decode, remove_cookies_where,
};

/// Longest `Set-Cookie` value written (name, value and attributes), under the ~4096 bytes
/// browsers keep, leaving room for what a browser counts differently.
pub const MAX_COOKIE_BYTES: usize = 4000;
/// Most cookies one value may span (about 31 KB): more would crowd the browser's per-host
/// cookie budget and the request header limits of the proxies in front.
pub const MAX_CHUNKS: usize = 8;
/// The count is written as one digit.
const _: () = assert!(MAX_CHUNKS <= 9);
const COUNT_SEPARATOR: u8 = b'.';
/// Longest accepted cookie name; chunk suffixes add at most two bytes.
const MAX_NAME_LEN: usize = 128;

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites: what a login callback needs.
    #[default]
    Lax,
    Strict,
    /// Sent on every cross-site request; browsers require `Secure` with it.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// The attributes of a cookie as configured, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieOptions {
    pub domain: Option<String>,
    pub path: String,
    pub secure: bool,
    pub same_site: SameSite,
    /// `None`: a browser-session cookie, gone when the browser closes.
    pub max_age: Option<Duration>,
}

impl Default for CookieOptions {
    fn default() -> Self {
        CookieOptions {
            domain: None,
            path: "/".to_string(),
            secure: true,
            same_site: SameSite::Lax,
            max_age: None,
        }
    }
}

/// A validated cookie name and attributes. Always `HttpOnly`: nothing the gateway stores in a
/// browser is for scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    name: String,
    options: CookieOptions,
}

/// Why a cookie name or its attributes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieSpecError {
    InvalidName(String),
    HostPrefixNeedsSecure(String),
    HostPrefixNeedsRootPath(String),
    HostPrefixForbidsDomain(String),
    SecurePrefixNeedsSecure(String),
    SameSiteNoneNeedsSecure(String),
    InvalidDomain(String),
    InvalidPath(String),
    ZeroMaxAge(String),
}

impl CookieSpecError {
    pub fn reason(&self) -> &'static str {
        match self {
            CookieSpecError::InvalidName(_) => "cookie_name_invalid",
            CookieSpecError::HostPrefixNeedsSecure(_) => "cookie_host_prefix_needs_secure",
            CookieSpecError::HostPrefixNeedsRootPath(_) => "cookie_host_prefix_needs_root_path",
            CookieSpecError::HostPrefixForbidsDomain(_) => "cookie_host_prefix_forbids_domain",
            CookieSpecError::SecurePrefixNeedsSecure(_) => "cookie_secure_prefix_needs_secure",
            CookieSpecError::SameSiteNoneNeedsSecure(_) => "cookie_same_site_none_needs_secure",
            CookieSpecError::InvalidDomain(_) => "cookie_domain_invalid",
            CookieSpecError::InvalidPath(_) => "cookie_path_invalid",
            CookieSpecError::ZeroMaxAge(_) => "cookie_max_age_zero",
        }
    }
}

impl std::fmt::Display for CookieSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieSpecError::InvalidName(name) => write!(
                f,
                "cookie name {name:?} is not an RFC 6265 token of at most {MAX_NAME_LEN} bytes \
                 (no separators, spaces or %)"
            ),
            CookieSpecError::HostPrefixNeedsSecure(name) => {
                write!(f, "cookie {name:?}: a __Host- cookie must be Secure")
            }
            CookieSpecError::HostPrefixNeedsRootPath(name) => {
                write!(f, "cookie {name:?}: a __Host- cookie must have Path=/")
            }
            CookieSpecError::HostPrefixForbidsDomain(name) => {
                write!(f, "cookie {name:?}: a __Host- cookie must not set Domain")
            }
            CookieSpecError::SecurePrefixNeedsSecure(name) => {
                write!(f, "cookie {name:?}: a __Secure- cookie must be Secure")
            }
            CookieSpecError::SameSiteNoneNeedsSecure(name) => {
                write!(f, "cookie {name:?}: SameSite=None needs Secure")
            }
            CookieSpecError::InvalidDomain(name) => {
                write!(f, "cookie {name:?}: Domain is not a host name")
            }
            CookieSpecError::InvalidPath(name) => write!(
                f,
                "cookie {name:?}: Path must start with / and hold only visible ASCII without ;"
            ),
            CookieSpecError::ZeroMaxAge(name) => write!(
                f,
                "cookie {name:?}: a Max-Age under one second deletes the cookie as it is set"
            ),
        }
    }
}

impl std::error::Error for CookieSpecError {}

fn is_token_byte(byte: u8) -> bool {
    // RFC 6265 §4.1.1 cookie-name = token (RFC 2616 §2.2), minus `%`: percent-decoding
    // frameworks would read another name than the one set.
    (0x21..=0x7e).contains(&byte) && !b"()<>@,;:\\\"/[]?={}%".contains(&byte)
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    // Browsers match the prefixes case-insensitively (RFC 6265bis §4.1.3).
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

impl CookieSpec {
    pub fn new(name: &str, options: CookieOptions) -> Result<CookieSpec, CookieSpecError> {
        let mut options = options;
        options.domain = options.domain.map(|d| d.to_ascii_lowercase());
        let spec = CookieSpec {
            name: name.to_string(),
            options,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The same attributes under another name (e.g. a per-login cookie), validated again.
    pub fn renamed(&self, name: &str) -> Result<CookieSpec, CookieSpecError> {
        CookieSpec::new(name, self.options.clone())
    }

    /// The same cookie with another lifetime, validated again.
    pub fn with_max_age(&self, max_age: Option<Duration>) -> Result<CookieSpec, CookieSpecError> {
        let mut options = self.options.clone();
        options.max_age = max_age;
        CookieSpec::new(&self.name, options)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn options(&self) -> &CookieOptions {
        &self.options
    }

    fn validate(&self) -> Result<(), CookieSpecError> {
        let name = &self.name;
        let o = &self.options;
        let err = |make: fn(String) -> CookieSpecError| Err(make(name.clone()));
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(is_token_byte) {
            return err(CookieSpecError::InvalidName);
        }
        if let Some(domain) = &o.domain {
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && !domain.starts_with(['.', '-'])
                && !domain.ends_with('.')
                && !domain.contains("..")
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !valid {
                return err(CookieSpecError::InvalidDomain);
            }
        }
        let path_valid = o.path.starts_with('/')
            && o.path.len() <= 1024
            && o.path
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b';');
        if !path_valid {
            return err(CookieSpecError::InvalidPath);
        }
        if o.max_age.is_some_and(|age| age.as_secs() == 0) {
            return err(CookieSpecError::ZeroMaxAge);
        }
        if o.same_site == SameSite::None && !o.secure {
            return err(CookieSpecError::SameSiteNoneNeedsSecure);
        }
        if has_prefix(name, "__Secure-") && !o.secure {
            return err(CookieSpecError::SecurePrefixNeedsSecure);
        }
        if has_prefix(name, "__Host-") {
            if !o.secure {
                return err(CookieSpecError::HostPrefixNeedsSecure);
            }
            if o.path != "/" {
                return err(CookieSpecError::HostPrefixNeedsRootPath);
            }
            if o.domain.is_some() {
                return err(CookieSpecError::HostPrefixForbidsDomain);
            }
        }
        Ok(())
    }

    /// `; Path=...` and the rest, for a cookie living `max_age` seconds (`None`: the spec's).
    fn attributes(&self, max_age: Option<u64>) -> String {
        let o = &self.options;
        let mut out = format!("; Path={}", o.path);
        if let Some(domain) = &o.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if let Some(seconds) = max_age.or(o.max_age.map(|age| age.as_secs())) {
            out.push_str(&format!("; Max-Age={seconds}"));
        }
        if o.secure {
            out.push_str("; Secure");
        }
        out.push_str("; HttpOnly; SameSite=");
        out.push_str(o.same_site.as_str());
        out
    }
}

/// Why a value could not be written as cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieWriteError {
    /// Empty, or a byte outside RFC 6265 cookie-octets.
    InvalidValue,
    /// More than [`MAX_CHUNKS`] cookies would be needed (`bytes` is the value's length).
    TooLarge { bytes: usize },
}

impl CookieWriteError {
    pub fn reason(&self) -> &'static str {
        match self {
            CookieWriteError::InvalidValue => "cookie_value_invalid",
            CookieWriteError::TooLarge { .. } => "session_cookie_too_large",
        }
    }
}

impl std::fmt::Display for CookieWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieWriteError::InvalidValue => write!(f, "cookie value has a forbidden byte"),
            CookieWriteError::TooLarge { bytes } => write!(
                f,
                "a session of {bytes} bytes needs more than {MAX_CHUNKS} cookies; keep sessions \
                 in the server-side (Redis) store"
            ),
        }
    }
}

impl std::error::Error for CookieWriteError {}

fn is_cookie_octet(byte: u8) -> bool {
    // RFC 6265 §4.1.1: visible ASCII but `"`, `,`, `;` and `\`.
    matches!(byte, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn chunk_name(name: &str, index: usize) -> String {
    if index == 1 {
        name.to_string()
    } else {
        format!("{name}-{index}")
    }
}

fn header_value(text: &str) -> Result<HeaderValue, CookieWriteError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| CookieWriteError::InvalidValue)?;
    value.set_sensitive(true);
    Ok(value)
}

fn expiring(spec: &CookieSpec, index: usize) -> Option<HeaderValue> {
    let text = format!(
        "{}={}",
        chunk_name(&spec.name, index),
        spec.attributes(Some(0))
    );
    header_value(&text).ok()
}

/// The `Set-Cookie` values that store `value` under `spec`, one per chunk, followed by ones that
/// expire chunks `count + 1 ..= previous_chunks` (what the request carried, from
/// [`present_chunks`]) so a shrinking value never leaves a stale chunk behind.
pub fn set_cookies(
    spec: &CookieSpec,
    value: &str,
    previous_chunks: usize,
) -> Result<Vec<HeaderValue>, CookieWriteError> {
    if value.is_empty() || !value.bytes().all(is_cookie_octet) {
        return Err(CookieWriteError::InvalidValue);
    }
    let attributes = spec.attributes(None);
    // What each chunk can hold once its name, `=`, the attributes (and, on the first, the
    // count) are paid for.
    let capacity = |index: usize| {
        let fixed = chunk_name(&spec.name, index).len() + 1 + attributes.len();
        let fixed = fixed + if index == 1 { 2 } else { 0 };
        MAX_COOKIE_BYTES.saturating_sub(fixed)
    };
    let mut count = 0;
    let mut room = 0;
    while room < value.len() {
        count += 1;
        if count > MAX_CHUNKS || capacity(count) == 0 {
            return Err(CookieWriteError::TooLarge { bytes: value.len() });
        }
        room += capacity(count);
    }
    let mut out = Vec::with_capacity(count.max(previous_chunks));
    let mut rest = value;
    for index in 1..=count {
        // Cookie-octets are ASCII, so any byte offset is a char boundary.
        let (chunk, tail) = rest.split_at(capacity(index).min(rest.len()));
        rest = tail;
        let text = if index == 1 {
            format!("{}={count}.{chunk}{attributes}", spec.name)
        } else {
            format!("{}={chunk}{attributes}", chunk_name(&spec.name, index))
        };
        out.push(header_value(&text)?);
    }
    out.extend((count + 1..=previous_chunks.min(MAX_CHUNKS)).filter_map(|i| expiring(spec, i)));
    Ok(out)
}

/// `Set-Cookie` values that delete the cookie and chunks `2..=present_chunks`. The first cookie
/// is always deleted, so a logout needs no knowledge of the request.
pub fn clear_cookies(spec: &CookieSpec, present_chunks: usize) -> Vec<HeaderValue> {
    (1..=present_chunks.clamp(1, MAX_CHUNKS))
        .filter_map(|i| expiring(spec, i))
        .collect()
}

/// What a chunked cookie set looked like when it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkProblem {
    /// Chunks without the first cookie that holds the count.
    Orphan,
    /// The first cookie does not start with a count `1`..=`MAX_CHUNKS` and `.`.
    BadCount,
    /// A name `{name}-{digits}` that is no chunk index (`-0`, `-1`, `-02`, `-9`...).
    BadIndex,
    Missing {
        index: usize,
    },
    Extra {
        index: usize,
    },
    Empty {
        index: usize,
    },
}

/// Why the cookie could not be read without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieReadError {
    /// A `Cookie` field that is not visible ASCII.
    Malformed,
    /// A name present twice, in any spelling, or hidden after a comma.
    Duplicate,
    Chunks(ChunkProblem),
    TooLarge,
}

impl CookieReadError {
    pub fn reason(&self) -> &'static str {
        match self {
            CookieReadError::Malformed => "malformed_cookie",
            CookieReadError::Duplicate => "duplicate_session_cookie",
            CookieReadError::Chunks(_) => "session_cookie_chunks",
            CookieReadError::TooLarge => "session_cookie_too_large",
        }
    }
}

impl std::fmt::Display for CookieReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieReadError::Malformed => write!(f, "a Cookie header is not visible ASCII"),
            CookieReadError::Duplicate => write!(f, "a session cookie is present twice"),
            CookieReadError::Chunks(problem) => {
                write!(f, "session cookie chunks do not fit together: ")?;
                match problem {
                    ChunkProblem::Orphan => write!(f, "chunks without the first cookie"),
                    ChunkProblem::BadCount => write!(f, "the first cookie holds no chunk count"),
                    ChunkProblem::BadIndex => write!(f, "a chunk name with no valid index"),
                    ChunkProblem::Missing { index } => write!(f, "chunk {index} is missing"),
                    ChunkProblem::Extra { index } => write!(f, "chunk {index} is beyond the count"),
                    ChunkProblem::Empty { index } => write!(f, "chunk {index} is empty"),
                }
            }
            CookieReadError::TooLarge => write!(f, "session cookies exceed the size limit"),
        }
    }
}

impl std::error::Error for CookieReadError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    First,
    Chunk(usize),
    BadIndex,
    Other,
}

/// Which of `name`'s cookies `cookie` is, in any spelling an upstream framework reads as the
/// same name: case-insensitive (ASP.NET) or percent-decoded (PHP).
fn classify(cookie: &str, name: &str) -> Part {
    let decoded;
    let cookie = if cookie.contains('%') {
        decoded = percent_decode(cookie);
        decoded.as_str()
    } else {
        cookie
    };
    let bytes = cookie.as_bytes();
    let Some(start) = bytes.get(..name.len()) else {
        return Part::Other;
    };
    if !start.eq_ignore_ascii_case(name.as_bytes()) {
        return Part::Other;
    }
    let rest = &bytes[name.len()..];
    let Some(digits) = rest.strip_prefix(b"-") else {
        return if rest.is_empty() {
            Part::First
        } else {
            Part::Other
        };
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Part::Other;
    }
    // Only the spelling `set_cookies` writes is a chunk: no leading zero, 2..=MAX_CHUNKS.
    match digits {
        [d] if (b'2'..=b'9').contains(d) && usize::from(d - b'0') <= MAX_CHUNKS => {
            Part::Chunk(usize::from(d - b'0'))
        }
        _ => Part::BadIndex,
    }
}

/// The value stored under `name` by [`set_cookies`], reassembled; `None` when the request
/// carries none of its cookies. After an error the caller treats the session as absent and may
/// send [`clear_cookies`] with [`present_chunks`] so the browser recovers.
pub fn read(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieReadError> {
    if headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return Err(CookieReadError::Malformed);
    }
    // A chunk name after a comma is another cookie to a lenient parser, one never read here.
    if cookie_items(headers)
        .flat_map(comma_hidden_names)
        .any(|hidden| classify(hidden, name) != Part::Other)
    {
        return Err(CookieReadError::Duplicate);
    }
    let mut slots: [Option<&str>; MAX_CHUNKS + 1] = [None; MAX_CHUNKS + 1];
    let mut total = 0usize;
    for (cookie, value) in cookie_pairs(headers) {
        let index = match classify(cookie, name) {
            Part::Other => continue,
            Part::BadIndex => return Err(CookieReadError::Chunks(ChunkProblem::BadIndex)),
            Part::First => 1,
            Part::Chunk(index) => index,
        };
        if slots[index].is_some() {
            return Err(CookieReadError::Duplicate);
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        total += value.len();
        if total > MAX_CHUNKS * MAX_COOKIE_BYTES {
            return Err(CookieReadError::TooLarge);
        }
        slots[index] = Some(value);
    }
    let Some(first) = slots[1] else {
        return match slots.iter().any(Option::is_some) {
            true => Err(CookieReadError::Chunks(ChunkProblem::Orphan)),
            false => Ok(None),
        };
    };
    let count = match first.as_bytes() {
        [] if slots.iter().skip(2).all(Option::is_none) => return Ok(None),
        [d, sep, ..] if *sep == COUNT_SEPARATOR && (b'1'..=b'9').contains(d) => {
            usize::from(d - b'0')
        }
        _ => return Err(CookieReadError::Chunks(ChunkProblem::BadCount)),
    };
    if count > MAX_CHUNKS {
        return Err(CookieReadError::Chunks(ChunkProblem::BadCount));
    }
    if let Some(index) = (count + 1..=MAX_CHUNKS).find(|&i| slots[i].is_some()) {
        return Err(CookieReadError::Chunks(ChunkProblem::Extra { index }));
    }
    let mut value = String::with_capacity(total);
    for (index, slot) in slots.iter().enumerate().take(count + 1).skip(1) {
        let chunk = slot.ok_or(CookieReadError::Chunks(ChunkProblem::Missing { index }))?;
        // The first cookie's value starts with the count and `.`, checked above.
        let chunk = if index == 1 { &chunk[2..] } else { chunk };
        if chunk.is_empty() {
            return Err(CookieReadError::Chunks(ChunkProblem::Empty { index }));
        }
        value.push_str(chunk);
    }
    Ok(Some(value))
}

/// The highest chunk index of `name` the request carries, in any spelling (0: none); what
/// [`set_cookies`] and [`clear_cookies`] need to leave no stale chunk.
pub fn present_chunks(headers: &HeaderMap, name: &str) -> usize {
    cookie_pairs(headers)
        .filter_map(|(cookie, _)| match classify(cookie, name) {
            Part::First => Some(1),
            Part::Chunk(index) => Some(index),
            Part::BadIndex | Part::Other => None,
        })
        .max()
        .unwrap_or(0)
}

/// Removes the cookie, every chunk and every other spelling of their names from the request's
/// `Cookie` fields, keeping the other cookies byte for byte (as `credential::remove_cookie`,
/// which also drops pairs a comma could split).
pub fn remove_from_request(headers: &mut HeaderMap, name: &str) {
    remove_cookies_where(headers, |cookie| classify(cookie, name) != Part::Other);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NAME: &str = "__Host-authgate";

    fn spec() -> CookieSpec {
        CookieSpec::new(NAME, CookieOptions::default()).unwrap()
    }

    /// The `Cookie` header a browser would send back for these `Set-Cookie` values.
    fn cookie_header(set: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<&str> = set
            .iter()
            .map(|v| v.to_str().unwrap())
            .filter(|v| !v.contains("Max-Age=0"))
            .map(|v| v.split(';').next().unwrap())
            .collect();
        request(&pairs.join("; "))
    }

    fn request(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        headers
    }

    fn value(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"[i % 54]))
            .collect()
    }

    #[test]
    fn round_trips_at_every_size() {
        let spec = spec();
        for (len, chunks) in [(10, 1), (3900, 1), (4100, 2), (20_000, 6), (31_000, 8)] {
            let value = value(len);
            let set = set_cookies(&spec, &value, 0).unwrap();
            assert_eq!(set.len(), chunks, "{len}");
            for (i, cookie) in set.iter().enumerate() {
                let text = cookie.to_str().unwrap();
                assert!(text.len() <= MAX_COOKIE_BYTES, "{len}: {}", text.len());
                assert!(cookie.is_sensitive());
                let expected_name = chunk_name(NAME, i + 1);
                assert!(text.starts_with(&format!("{expected_name}=")), "{text:.40}");
                assert!(text.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"));
            }
            let headers = cookie_header(&set);
            assert_eq!(read(&headers, NAME).unwrap().as_deref(), Some(&*value));
            assert_eq!(present_chunks(&headers, NAME), chunks);
        }
        let one = set_cookies(&spec, "abc", 0).unwrap();
        assert_eq!(
            one[0].to_str().unwrap(),
            "__Host-authgate=1.abc; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn chunks_fill_to_the_limit() {
        let spec = spec();
        // The largest value one cookie holds, and one byte more.
        let attributes = spec.attributes(None).len();
        let single = MAX_COOKIE_BYTES - NAME.len() - 1 - 2 - attributes;
        assert_eq!(set_cookies(&spec, &value(single), 0).unwrap().len(), 1);
        let two = set_cookies(&spec, &value(single + 1), 0).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].len(), MAX_COOKIE_BYTES);
    }

    #[test]
    fn too_large_and_invalid_values() {
        let spec = spec();
        assert_eq!(
            set_cookies(&spec, &value(40_000), 0),
            Err(CookieWriteError::TooLarge { bytes: 40_000 })
        );
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "caf\u{e9}"] {
            assert_eq!(
                set_cookies(&spec, bad, 0),
                Err(CookieWriteError::InvalidValue),
                "{bad:?}"
            );
        }
        // Attributes alone can leave no room at all.
        let long_path = CookieSpec::new(
            "s",
            CookieOptions {
                path: format!("/{}", "p".repeat(1000)),
                domain: Some(format!("{}.example", "d".repeat(240))),
                ..CookieOptions::default()
            },
        )
        .unwrap();
        assert!(set_cookies(&long_path, &value(3000), 0).is_ok());
        assert!(set_cookies(&long_path, &value(30_000), 0).is_err());
    }

    #[test]
    fn stale_chunks_are_expired() {
        let spec = spec();
        let big = set_cookies(&spec, &value(20_000), 0).unwrap();
        let before = present_chunks(&cookie_header(&big), NAME);
        assert_eq!(before, 6);
        let small = set_cookies(&spec, &value(100), before).unwrap();
        let texts: Vec<&str> = small.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(texts.len(), 6);
        assert!(texts[0].starts_with("__Host-authgate=1."));
        for (i, text) in texts.iter().enumerate().skip(1) {
            assert_eq!(
                *text,
                format!(
                    "__Host-authgate-{}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax",
                    i + 1
                )
            );
        }
        // What the browser keeps afterwards reads back as the small value.
        assert_eq!(
            read(&cookie_header(&small), NAME).unwrap(),
            Some(value(100))
        );
        // A claim beyond the cap expires only names that can exist.
        assert_eq!(set_cookies(&spec, "x", 50).unwrap().len(), MAX_CHUNKS);
        let cleared = clear_cookies(&spec, 3);
        assert_eq!(cleared.len(), 3);
        assert!(cleared[0]
            .to_str()
            .unwrap()
            .starts_with("__Host-authgate=; Path=/; Max-Age=0"));
        assert_eq!(clear_cookies(&spec, 0).len(), 1);
        assert_eq!(clear_cookies(&spec, 99).len(), MAX_CHUNKS);
    }

    #[test]
    fn strict_reassembly() {
        use ChunkProblem as P;
        use CookieReadError as E;
        let cases: &[(&str, Result<Option<&str>, CookieReadError>)] = &[
            ("", Ok(None)),
            ("other=1; x=2", Ok(None)),
            ("__Host-authgate=", Ok(None)),
            ("__Host-authgate=1.abc", Ok(Some("abc"))),
            (
                "a=1; __Host-authgate=2.ab; b=2; __Host-authgate-2=cd",
                Ok(Some("abcd")),
            ),
            (
                "__Host-authgate-2=cd; __Host-authgate=2.ab",
                Ok(Some("abcd")),
            ),
            ("__Host-authgate=\"1.abc\"", Ok(Some("abc"))),
            // Other cookies that merely share the prefix are not ours.
            (
                "__Host-authgate=1.abc; __Host-authgate-login-x=1; __Host-authgatex=2",
                Ok(Some("abc")),
            ),
            ("__Host-authgate=abc", Err(E::Chunks(P::BadCount))),
            ("__Host-authgate=1", Err(E::Chunks(P::BadCount))),
            ("__Host-authgate=0.abc", Err(E::Chunks(P::BadCount))),
            ("__Host-authgate=9.abc", Err(E::Chunks(P::BadCount))),
            ("__Host-authgate=10.abc", Err(E::Chunks(P::BadCount))),
            ("__Host-authgate=1.", Err(E::Chunks(P::Empty { index: 1 }))),
            (
                "__Host-authgate=2.ab",
                Err(E::Chunks(P::Missing { index: 2 })),
            ),
            (
                "__Host-authgate=3.ab; __Host-authgate-3=x",
                Err(E::Chunks(P::Missing { index: 2 })),
            ),
            (
                "__Host-authgate=2.ab; __Host-authgate-2=",
                Err(E::Chunks(P::Empty { index: 2 })),
            ),
            (
                "__Host-authgate=1.ab; __Host-authgate-2=x",
                Err(E::Chunks(P::Extra { index: 2 })),
            ),
            (
                "__Host-authgate=2.ab; __Host-authgate-2=x; __Host-authgate-8=y",
                Err(E::Chunks(P::Extra { index: 8 })),
            ),
            ("__Host-authgate-2=cd", Err(E::Chunks(P::Orphan))),
            (
                "__Host-authgate=; __Host-authgate-2=cd",
                Err(E::Chunks(P::BadCount)),
            ),
            (
                "__Host-authgate=1.a; __Host-authgate-1=x",
                Err(E::Chunks(P::BadIndex)),
            ),
            (
                "__Host-authgate=1.a; __Host-authgate-0=x",
                Err(E::Chunks(P::BadIndex)),
            ),
            (
                "__Host-authgate=2.a; __Host-authgate-02=x",
                Err(E::Chunks(P::BadIndex)),
            ),
            (
                "__Host-authgate=1.a; __Host-authgate-9=x",
                Err(E::Chunks(P::BadIndex)),
            ),
            (
                "__Host-authgate=1.a; __Host-authgate-18446744073709551617=x",
                Err(E::Chunks(P::BadIndex)),
            ),
            (
                "__Host-authgate=1.a; __Host-authgate=1.b",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=1.a; __host-AUTHGATE=1.b",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=1.a; %5F%5FHost-authgate=1.b",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=2.a; __Host-authgate-2=b; __HOST-authgate-2=c",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=2.a; __Host-authgate-2=b; __Host-authgate%2D2=c",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=1.a; x=1, __Host-authgate=1.b",
                Err(E::Duplicate),
            ),
            (
                "__Host-authgate=2.a; __Host-authgate-2=b, __Host-authgate-2=c",
                Err(E::Duplicate),
            ),
            ("x=1,__host-authgate-3=b", Err(E::Duplicate)),
        ];
        for (cookie, want) in cases {
            let got = read(&request(cookie), NAME);
            assert_eq!(
                got.as_ref().map(|v| v.as_deref()),
                want.as_ref().map(|v| *v),
                "{cookie}"
            );
        }
        // Split across several Cookie fields (HTTP/2) reads the same.
        let mut headers = request("__Host-authgate=2.ab");
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-authgate-2=cd"),
        );
        assert_eq!(read(&headers, NAME).unwrap().as_deref(), Some("abcd"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-authgate-2=cd"),
        );
        assert_eq!(read(&headers, NAME), Err(E::Duplicate));
        let mut binary = request("__Host-authgate=1.ab");
        binary.append(header::COOKIE, HeaderValue::from_bytes(b"x=\xff").unwrap());
        assert_eq!(read(&binary, NAME), Err(E::Malformed));
        // Oversized, even when every chunk is individually well-formed.
        let huge = format!(
            "__Host-authgate=2.{}; __Host-authgate-2={}",
            "a".repeat(MAX_COOKIE_BYTES * 4),
            "b".repeat(MAX_COOKIE_BYTES * 4 + 10)
        );
        assert_eq!(read(&request(&huge), NAME), Err(E::TooLarge));
        for err in [
            E::Malformed,
            E::Duplicate,
            E::Chunks(P::Orphan),
            E::TooLarge,
        ] {
            assert!(!err.reason().is_empty() && !err.to_string().is_empty());
        }
    }

    #[test]
    fn removal_keeps_other_cookies_exactly() {
        let mut headers = request(
            "a=1; __Host-authgate=2.ab; pref=x,y; __Host-authgate-2=cd; __HOST-AUTHGATE-3=zz; \
             __Host-authgate-09=q; b=\"q\"; __Host-authgate-login-abc=v; c=, d",
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("e=2; %5F%5FHost-authgate=x"),
        );
        assert_eq!(present_chunks(&headers, NAME), 3);
        remove_from_request(&mut headers, NAME);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(
            headers[header::COOKIE],
            "a=1; pref=x,y; b=\"q\"; __Host-authgate-login-abc=v; c=, d; e=2"
        );
        assert!(headers[header::COOKIE].is_sensitive());
        let mut only = request("__Host-authgate=1.ab");
        remove_from_request(&mut only, NAME);
        assert!(only.get(header::COOKIE).is_none());
        assert_eq!(present_chunks(&only, NAME), 0);
    }

    #[test]
    fn spec_rules() {
        use CookieSpecError as E;
        let with = |name: &str, o: CookieOptions| CookieSpec::new(name, o).map(|_| ());
        let d = CookieOptions::default;
        let insecure = || CookieOptions {
            secure: false,
            ..d()
        };
        assert_eq!(with("__Host-x", d()), Ok(()));
        assert_eq!(with("sess", insecure()), Ok(()));
        assert_eq!(
            with(
                "__Secure-x",
                CookieOptions {
                    path: "/app".into(),
                    domain: Some("Example.COM".into()),
                    ..d()
                }
            ),
            Ok(())
        );
        let n = |s: &str| s.to_string();
        let cases = [
            (
                "__Host-x",
                insecure(),
                E::HostPrefixNeedsSecure(n("__Host-x")),
            ),
            (
                "__host-x",
                insecure(),
                E::HostPrefixNeedsSecure(n("__host-x")),
            ),
            (
                "__Host-x",
                CookieOptions {
                    path: "/app".into(),
                    ..d()
                },
                E::HostPrefixNeedsRootPath(n("__Host-x")),
            ),
            (
                "__Host-x",
                CookieOptions {
                    domain: Some("example.com".into()),
                    ..d()
                },
                E::HostPrefixForbidsDomain(n("__Host-x")),
            ),
            (
                "__Secure-x",
                insecure(),
                E::SecurePrefixNeedsSecure(n("__Secure-x")),
            ),
            (
                "__SECURE-x",
                insecure(),
                E::SecurePrefixNeedsSecure(n("__SECURE-x")),
            ),
            (
                "sess",
                CookieOptions {
                    same_site: SameSite::None,
                    ..insecure()
                },
                E::SameSiteNoneNeedsSecure(n("sess")),
            ),
            ("", d(), E::InvalidName(n(""))),
            ("a b", d(), E::InvalidName(n("a b"))),
            ("a;b", d(), E::InvalidName(n("a;b"))),
            ("a=b", d(), E::InvalidName(n("a=b"))),
            ("a%62", d(), E::InvalidName(n("a%62"))),
            ("caf\u{e9}", d(), E::InvalidName(n("caf\u{e9}"))),
            (
                "s",
                CookieOptions {
                    domain: Some(".example.com".into()),
                    ..d()
                },
                E::InvalidDomain(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    domain: Some("ex ample.com".into()),
                    ..d()
                },
                E::InvalidDomain(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    domain: Some(String::new()),
                    ..d()
                },
                E::InvalidDomain(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    path: "app".into(),
                    ..d()
                },
                E::InvalidPath(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    path: "/a;b".into(),
                    ..d()
                },
                E::InvalidPath(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    path: "/a b".into(),
                    ..d()
                },
                E::InvalidPath(n("s")),
            ),
            (
                "s",
                CookieOptions {
                    max_age: Some(Duration::from_millis(500)),
                    ..d()
                },
                E::ZeroMaxAge(n("s")),
            ),
        ];
        for (name, options, want) in cases {
            let reason = want.reason();
            assert_eq!(CookieSpec::new(name, options), Err(want), "{name}");
            assert!(reason.starts_with("cookie_"));
        }
        assert!(with(&"n".repeat(MAX_NAME_LEN + 1), d()).is_err());
        let spec = CookieSpec::new(
            "s",
            CookieOptions {
                domain: Some("Example.com".into()),
                path: "/app".into(),
                same_site: SameSite::Strict,
                max_age: Some(Duration::from_secs(3600)),
                ..d()
            },
        )
        .unwrap();
        assert_eq!(
            set_cookies(&spec, "v", 0).unwrap()[0],
            "s=1.v; Path=/app; Domain=example.com; Max-Age=3600; Secure; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            spec.renamed("__Host-s").unwrap_err().reason(),
            "cookie_host_prefix_needs_root_path"
        );
        assert!(spec.with_max_age(Some(Duration::ZERO)).is_err());
        assert_eq!(spec.with_max_age(None).unwrap().options().max_age, None);
    }
}
