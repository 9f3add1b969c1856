//! Request-path normalisation (RFC 3986 §6.2.2), done once before routing.
//!
//! The gateway routes on exactly the path it forwards. Percent-encoded unreserved characters are
//! decoded, remaining escapes are upper-cased, dot segments are removed and repeated slashes are
//! merged, so `/api/../admin`, `/%61dmin` and `//admin` all become `/admin` before any route sees
//! them. Raw non-ASCII bytes are percent-encoded, so `/café` and `/caf%c3%a9` are `/caf%C3%A9`. What cannot be normalised without changing meaning (`%2F`, `%5C`, `%00`, `;` parameters)
//! is flagged so the matched route can refuse it. This step never decodes a reserved character.

/// Why a path cannot be normalised at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadPercentEncoding,
    ControlCharacter,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BadPercentEncoding => "bad_percent_encoding",
            PathError::ControlCharacter => "path_control_character",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path does not begin with \"/\"",
            PathError::BadPercentEncoding => "a \"%\" is not followed by two hex digits",
            PathError::ControlCharacter => "the path holds a control character",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    pub has_encoded_slash: bool,
    pub has_encoded_backslash: bool,
    pub has_encoded_nul: bool,
    pub has_path_parameters: bool,
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Appends `%XX` for `byte`, upper-case hex.
fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0F)]));
}

/// Normalises the path part of a request target (no query string).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut flags = NormalizedPath {
        path: String::new(),
        has_encoded_slash: false,
        has_encoded_backslash: false,
        has_encoded_nul: false,
        has_path_parameters: false,
    };
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let value = hi * 16 + lo;
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                match value {
                    b'/' => flags.has_encoded_slash = true,
                    b'\\' => flags.has_encoded_backslash = true,
                    0 => flags.has_encoded_nul = true,
                    _ => {}
                }
                push_escape(&mut decoded, value);
            }
            i += 3;
            continue;
        }
        if byte.is_ascii_control() || byte == b' ' {
            return Err(PathError::ControlCharacter);
        }
        match byte {
            b';' => flags.has_path_parameters = true,
            // Some back ends treat a raw backslash as a separator; treat it like %5C.
            b'\\' => flags.has_encoded_backslash = true,
            _ => {}
        }
        if byte.is_ascii() {
            decoded.push(char::from(byte));
        } else {
            // hyper accepts raw non-ASCII bytes in the target (as many clients send them); each
            // becomes an escape, so the path routed on and forwarded is the raw one, byte for
            // byte, and equal to its percent-encoded spelling.
            push_escape(&mut decoded, byte);
        }
        i += 1;
    }
    flags.path = remove_dot_segments(&decoded);
    Ok(flags)
}

/// RFC 3986 §5.2.4, with empty segments merged (`//` reads as `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash = path.ends_with('/')
        || path.ends_with("/.")
        || path.ends_with("/..")
        || path == "/."
        || path == "/..";
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        normalize(raw)
            .map(|n| n.path)
            .unwrap_or_else(|e| format!("ERR {e:?}"))
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/a/b/../c"), "/a/c");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/a/%2e%2e/b"), "/b");
        assert_eq!(norm("/a/%2E/b"), "/a/b");
        assert_eq!(norm("//a///b"), "/a/b");
        assert_eq!(norm("/a/b/"), "/a/b/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/%61dmin"), "/admin");
        assert_eq!(norm("/a%7e"), "/a~");
        assert_eq!(norm("/a%3fb"), "/a%3Fb");
        assert_eq!(norm("/a..b/c"), "/a..b/c");
    }

    #[test]
    fn non_ascii_bytes_are_escaped() {
        assert_eq!(norm("/api/caf\u{e9}"), "/api/caf%C3%A9");
        assert_eq!(norm("/api/caf%c3%a9"), "/api/caf%C3%A9");
        assert_eq!(norm("/api/caf%C3%A9"), "/api/caf%C3%A9");
        assert_eq!(norm("/\u{1F600}/x"), "/%F0%9F%98%80/x");
        assert_eq!(norm("/a/\u{e9}/../b"), "/a/b");
        // Escapes never read as dot segments or separators.
        assert_eq!(norm("/\u{e9}./x"), "/%C3%A9./x");
    }

    #[test]
    fn flags_and_errors() {
        let n = normalize("/a%2fb").expect("valid");
        assert!(n.has_encoded_slash);
        assert_eq!(n.path, "/a%2Fb");
        assert!(normalize("/a%5Cb").expect("valid").has_encoded_backslash);
        assert!(normalize("/a\\b").expect("valid").has_encoded_backslash);
        assert!(normalize("/a%00").expect("valid").has_encoded_nul);
        assert!(
            normalize("/a;jsessionid=1/b")
                .expect("valid")
                .has_path_parameters
        );
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }
}
