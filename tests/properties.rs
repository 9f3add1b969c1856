//! Property tests of every parser that reads client or operator input: the path normaliser,
//! the Host parser, the Bearer and cookie reader, the origin parser, the JWT reader (through the
//! verifier), the denylist file parser and the TOML config loader. Inputs mix arbitrary text
//! with fragments of each grammar, so the generator reaches the interesting corners (dot
//! segments, escapes, brackets, ports, separators, TOML tables) and not only noise.
//!
//! Each property runs a bounded number of cases (see `cases`); `PROPTEST_CASES` overrides it for
//! a longer campaign, e.g. `PROPTEST_CASES=100000 cargo test --release --test properties`
//! (tests/README.md).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use authgate::auth::credential::{extract, parse_origin, Source};
use authgate::proxy::{host, path};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

/// `n` cases, unless `PROPTEST_CASES` asks for another number.
fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    // Shrinking a failure is worth a while, not forever.
    config.max_shrink_time = 30_000;
    config
}

/// Text made of `fragments` and arbitrary characters, up to `len` pieces.
fn pieces(fragments: &'static [&'static str], len: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(fragments).prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    proptest::collection::vec(piece, 0..len).prop_map(|v| v.concat())
}

const PATH_FRAGMENTS: &[&str] = &[
    "/", "/", ".", "..", "a", "B", "%2F", "%2f", "%2E", "%2e", "%2e%2E", "%5C", "%5c", "%00",
    "%41", "%7e", "%", "%z", "%C3%A9", ";", "\\", "é", "~", "-", "?", "#", " ", "\t", "%25",
];

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn path_normaliser(raw in prop_oneof![pieces(PATH_FRAGMENTS, 24).prop_map(|p| format!("/{p}")), any::<String>()]) {
        let Ok(first) = path::normalize(&raw) else { return Ok(()) };
        let p = &first.path;
        prop_assert!(p.starts_with('/'), "{p:?}");
        prop_assert!(
            segments(p).all(|s| s != "." && s != ".."),
            "dot segment left in {p:?} from {raw:?}"
        );
        prop_assert!(!p.contains("//"), "{p:?}");
        prop_assert!(p.bytes().all(|b| b.is_ascii_graphic()), "{p:?}");
        // An encoded slash, backslash or NUL survives only flagged, so a route that does not
        // allow it refuses it. (The flags describe what the client sent: `/%2F/..` becomes `/`
        // and stays flagged, which refuses more, never less.)
        prop_assert!(!p.contains("%2F") || first.has_encoded_slash, "{p:?}");
        prop_assert!(!(p.contains("%5C") || p.contains('\\')) || first.has_encoded_backslash, "{p:?}");
        prop_assert!(!p.contains("%00") || first.has_encoded_nul, "{p:?}");
        prop_assert!(!p.contains(';') || first.has_path_parameters, "{p:?}");
        prop_assert!(!p.contains("%2f") && !p.contains("%2E") && !p.contains("%2e"), "{p:?}");
        // Idempotent: the normal form is its own normal form, and flags nothing new.
        let again = path::normalize(p);
        prop_assert!(again.is_ok(), "{p:?} from {raw:?}");
        let again = again.unwrap();
        prop_assert_eq!(&again.path, p, "not idempotent for {:?}", raw);
        prop_assert!(!again.has_encoded_slash || first.has_encoded_slash);
        prop_assert!(!again.has_encoded_backslash || first.has_encoded_backslash);
        prop_assert!(!again.has_encoded_nul || first.has_encoded_nul);
        prop_assert!(!again.has_path_parameters || first.has_path_parameters);
    }
}

const HOST_FRAGMENTS: &[&str] = &[
    "a", "Z", "example", "com", ".", ".", "-", "_", ":", ":", "80", "443", "65535", "65536", "0",
    "00080", "99999", "[", "]", "::", "::1", "fe80::1", "%25eth0", "1.2.3.4", "ffff", ",", "@",
    " ", "é", "xn--", "..",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn host_parser(raw in prop_oneof![pieces(HOST_FRAGMENTS, 12), any::<String>()]) {
        let Ok(parsed) = host::parse(&raw) else { return Ok(()) };
        // Canonical: re-parsing gives the same host, and the form is lower-case.
        prop_assert_eq!(host::parse(&parsed.authority), Ok(parsed.clone()), "from {:?}", raw);
        prop_assert_eq!(host::parse(&parsed.name).map(|h| h.name), Ok(parsed.name.clone()));
        prop_assert_eq!(parsed.authority.to_ascii_lowercase(), parsed.authority.clone());
        prop_assert!(parsed.authority.starts_with(&parsed.name));
        prop_assert!(!parsed.name.ends_with('.'), "{:?}", parsed.name);
        let port = &parsed.authority[parsed.name.len()..];
        if let Some(port) = port.strip_prefix(':') {
            let number: u16 = port.parse().map_err(|_| TestCaseError::fail(format!("port {port:?}")))?;
            prop_assert_eq!(number.to_string(), port, "port not canonical");
        } else {
            prop_assert!(port.is_empty());
        }
        prop_assert!(
            parsed.authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)),
            "{:?}", parsed.authority
        );
    }
}

const CREDENTIAL_FRAGMENTS: &[&str] = &[
    "Bearer", "bearer", "BEARER", "Basic", " ", " ", "\t", "abc", "eyJ", ".", "=", "==", "-", "_",
    "+", "/", "~", ",", ";", "\"", "sess", "SESS", "se%73s", "=", "x", "é", "\u{7f}",
];

/// A header value from `text`, if `text` is one (visible ASCII, spaces, tabs, obs-text).
fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn bearer_and_cookie_reader(
        authorization in proptest::collection::vec(pieces(CREDENTIAL_FRAGMENTS, 10), 0..3),
        cookies in proptest::collection::vec(pieces(CREDENTIAL_FRAGMENTS, 12), 0..3),
    ) {
        let mut headers = HeaderMap::new();
        for a in authorization.iter().filter_map(|a| value(a)) {
            headers.append(http::header::AUTHORIZATION, a);
        }
        for c in cookies.iter().filter_map(|c| value(c)) {
            headers.append(http::header::COOKIE, c);
        }
        let Ok(Some(credential)) = extract(&headers, Some("sess")) else { return Ok(()) };
        // What was read is in what was sent, verbatim: nothing decoded, nothing guessed.
        prop_assert!(!credential.token.is_empty());
        let field = match credential.source {
            Source::AuthorizationHeader => http::header::AUTHORIZATION,
            Source::Cookie => http::header::COOKIE,
        };
        let sent: Vec<String> = headers
            .get_all(field)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        prop_assert!(sent.iter().any(|s| s.contains(&credential.token)), "token not in {sent:?}");
        prop_assert!(!credential.token.contains([' ', '\t', ';', ',']) || credential.source == Source::Cookie);
        if credential.source == Source::AuthorizationHeader {
            prop_assert_eq!(headers.get_all(http::header::AUTHORIZATION).iter().count(), 1);
        }
    }

    #[test]
    fn bearer_and_cookie_round_trip(token in "[A-Za-z0-9._~+/-]{1,64}=?=?", cookie in "[A-Za-z0-9._~+/-]{1,64}") {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value(&format!("Bearer {token}")).unwrap());
        let read = extract(&headers, None).unwrap().unwrap();
        prop_assert_eq!(read.token, token);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, value(&format!("a=1; sess={cookie}; b=2")).unwrap());
        let read = extract(&headers, Some("sess")).unwrap().unwrap();
        prop_assert_eq!(read.token, cookie);
        prop_assert_eq!(read.source, Source::Cookie);
    }
}

const ORIGIN_FRAGMENTS: &[&str] = &[
    "http", "https", "HTTPS", "ftp", "://", "//", ":", "a", "EXAMPLE", ".", "com", ":80", ":443",
    ":8080", ":0", ":65536", "/", "@", "user", "[", "]", "::1", "null", " ", "?", "#", "%41",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn origin_parser(raw in prop_oneof![pieces(ORIGIN_FRAGMENTS, 10), any::<String>()]) {
        let Some(origin) = parse_origin(&raw) else { return Ok(()) };
        prop_assert!(origin.starts_with("http://") || origin.starts_with("https://"), "{origin:?}");
        prop_assert_eq!(origin.to_ascii_lowercase(), origin.clone());
        prop_assert!(!origin.contains('@'), "{origin:?}");
        // Default ports are dropped.
        prop_assert!(!(origin.starts_with("http://") && origin.ends_with(":80")), "{origin:?}");
        prop_assert!(!(origin.starts_with("https://") && origin.ends_with(":443")), "{origin:?}");
        prop_assert_eq!(parse_origin(&origin), Some(origin.clone()), "not canonical from {:?}", raw);
    }
}

/// Every error placed inside `text` (1-based line, and column at most one past the line's end).
fn assert_located(
    errors: &authgate::config::ConfigErrors,
    file: &Path,
    text: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty());
    let lines: Vec<&str> = text.split('\n').collect();
    for error in &errors.0 {
        if error.file != file {
            continue;
        }
        if error.line == 0 {
            prop_assert_eq!(error.column, 0);
            continue;
        }
        prop_assert!(
            error.line <= lines.len(),
            "line {} of {} in {:?}: {}",
            error.line,
            lines.len(),
            text,
            error.message
        );
        let width = lines[error.line - 1].chars().count();
        prop_assert!(
            error.column >= 1 && error.column <= width + 1,
            "column {} of a {}-character line in {:?}: {}",
            error.column,
            width,
            text,
            error.message
        );
    }
    Ok(())
}

const DENYLIST_FRAGMENTS: &[&str] = &[
    "[[token]]\n",
    "[[subject]]\n",
    "[[key]]\n",
    "[token]\n",
    "issuer = \"https://idp/\"\n",
    "jti = \"j\"\n",
    "subject = \"s\"\n",
    "provider = \"main\"\n",
    "kid = \"k\"\n",
    "expires = 2026-12-01T00:00:00Z\n",
    "expires = 1798761600\n",
    "expires = 2026-12-01\n",
    "issued_before = 2026-11-24T10:00:00+01:00\n",
    "reason = \"é\"\n",
    "jti = \"\"\n",
    "expires = -1\n",
    "expires = 1e300\n",
    "bogus = 1\n",
    "\n",
    "\r\n",
    "#",
    "\"",
    "=",
    "é",
    "[",
    "]",
    " ",
    "\t",
    "'",
    "\"\"\"",
    "1979-05-27T07:32:00.999999Z",
    "{",
    "}",
    ",",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn denylist_file_parser(text in prop_oneof![4 => pieces(DENYLIST_FRAGMENTS, 16), 1 => any::<String>()]) {
        let file = Path::new("/etc/authgate/denylist.toml");
        if let Err(errors) = authgate::auth::denylist_file::parse(file, &text) {
            assert_located(&errors, file, &text)?;
        }
    }
}

const CONFIG_FRAGMENTS: &[&str] = &[
    "[server]\n",
    "[[listener]]\n",
    "[[route]]\n",
    "[[provider]]\n",
    "[auth]\n",
    "[upstream]\n",
    "[route.policy]\n",
    "[auth.identity]\n",
    "address = \"127.0.0.1:0\"\n",
    "address = \"nope\"\n",
    "name = \"a\"\n",
    "name = \"b\"\n",
    "path_prefix = \"/\"\n",
    "path_prefix = \"/api\"\n",
    "path_prefix = \"api\"\n",
    "upstream = \"http://127.0.0.1:1\"\n",
    "upstream = \"ftp://x\"\n",
    "auth = \"public\"\n",
    "auth = \"Public\"\n",
    "providers = [\"main\"]\n",
    "methods = [\"GET\"]\n",
    "idle_timeout = \"5s\"\n",
    "idle_timeout = \"5\"\n",
    "idle_timeout = \"1m30s\"\n",
    "max_connections = 0\n",
    "max_connections = -1\n",
    "max_header_bytes = 1024\n",
    "issuer = \"https://idp.example/\"\n",
    "audiences = [\"api\"]\n",
    "algorithms = [\"RS256\"]\n",
    "algorithms = [\"HS256\"]\n",
    "jwks_uri = \"http://idp.example/jwks\"\n",
    "secret = \"s\"\n",
    "scopes_all = [\"x\"]\n",
    "realm = \"r\\u0000\"\n",
    "upstream = \"${AUTHGATE_NO_SUCH_VAR}\"\n",
    "\n",
    "\r\n",
    "#",
    "\"",
    "=",
    "é",
    "[",
    "]",
    " ",
    "'",
    "{",
    "}",
    ",",
    "x",
    "1",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn config_loader(text in prop_oneof![4 => pieces(CONFIG_FRAGMENTS, 20), 1 => any::<String>()]) {
        let file = std::env::temp_dir().join("authgate-properties/authgate.toml");
        if let Err(errors) = authgate::config::load_str(&file, &text) {
            assert_located(&errors, &file, &text)?;
        }
    }
}

const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://hs.example";

/// A verifier with one HMAC provider, and a valid token for it.
struct Jwt {
    runtime: tokio::runtime::Runtime,
    snapshot: authgate::state::Snapshot,
    valid: String,
    wrong_key: authgate::demo::issuer::SigningKey,
}

fn jwt_world() -> Jwt {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[provider]]\nname = \"hs\"\nissuer = \"{ISSUER}\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\"]\nsecret = \"{HMAC_SECRET}\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n"
    );
    let config = authgate::config::load_str(Path::new("/tmp/properties.toml"), &toml).unwrap();
    let metrics = authgate::ops::metrics::Metrics::register(&prometheus::Registry::new()).unwrap();
    let snapshot = runtime
        .block_on(async { authgate::state::Snapshot::build(&config, &metrics, None) })
        .unwrap();
    let key = authgate::demo::issuer::SigningKey::hmac(
        jsonwebtoken::Algorithm::HS256,
        HMAC_SECRET.as_bytes(),
        None,
    );
    let now = authgate::auth::jwt::now_unix();
    let valid = key.token(&serde_json::json!({
        "iss": ISSUER, "aud": "api", "sub": "s", "iat": now - 10, "exp": now + 3600,
    }));
    let wrong_key = authgate::demo::issuer::SigningKey::hmac(
        jsonwebtoken::Algorithm::HS256,
        b"another secret, 32 bytes long...",
        None,
    );
    Jwt {
        runtime,
        snapshot,
        valid,
        wrong_key,
    }
}

impl Jwt {
    fn accepts(&self, token: &str) -> bool {
        self.runtime
            .block_on(self.snapshot.verifier.verify(token, &[0]))
            .is_ok()
    }
}

/// A change to a token: replace, insert or delete one character, or swap two segments.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    SwapSegments(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop_oneof![
        proptest::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9'].into()),
        Just('-'),
        Just('_'),
        Just('.'),
        Just('='),
        Just('+'),
        Just('/'),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), c).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(token: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    for m in mutations {
        let len = chars.len().max(1);
        match *m {
            Mutation::Replace(i, c) if !chars.is_empty() => chars[i % len] = c,
            Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Mutation::Delete(i) if !chars.is_empty() => {
                chars.remove(i % len);
            }
            Mutation::SwapSegments(a, b) => {
                let text: String = chars.iter().collect();
                let mut parts: Vec<String> = text.split('.').map(str::to_string).collect();
                if a < parts.len() && b < parts.len() {
                    parts.swap(a, b);
                }
                chars = parts.join(".").chars().collect();
            }
            Mutation::Truncate(i) => chars.truncate(i % len),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

const JSON_FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "\"alg\"",
    "\"HS256\"",
    "\"none\"",
    "\"RS256\"",
    "\"kid\"",
    "\"crit\"",
    "\"typ\"",
    "\"iss\"",
    "\"https://hs.example\"",
    "\"aud\"",
    "\"api\"",
    "\"exp\"",
    "\"sub\"",
    ":",
    ",",
    "[",
    "]",
    "null",
    "true",
    "1e400",
    "99999999999999999999",
    "-1",
    "\"\\u0000\"",
    " ",
];

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn jwt_reader_never_accepts_without_a_valid_signature(
        segments in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..5),
        header in pieces(JSON_FRAGMENTS, 12),
        claims in pieces(JSON_FRAGMENTS, 16),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        static WORLD: OnceLock<Jwt> = OnceLock::new();
        let world = WORLD.get_or_init(jwt_world);
        // Arbitrary base64url segments.
        prop_assert!(!world.accepts(&segments.join(".")));
        // Arbitrary JSON-ish header and claims, encoded and signed with the wrong key, or with
        // the signature of the valid token.
        let forged = world.wrong_key.sign_raw(&header, &claims);
        prop_assert!(!world.accepts(&forged));
        let valid_signature = world.valid.rsplit('.').next().unwrap_or_default();
        let spliced = format!(
            "{}.{}.{valid_signature}",
            URL_SAFE_NO_PAD.encode(header.as_bytes()),
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        );
        prop_assert!(!world.accepts(&spliced));
        // Arbitrary bytes.
        prop_assert!(!world.accepts(&String::from_utf8_lossy(&bytes)));
        // Mutations of the valid token: accepted only if they changed nothing.
        let mutated = apply(&world.valid, &mutations);
        if mutated != world.valid {
            prop_assert!(!world.accepts(&mutated), "accepted a mutation: {mutated:?}");
        }
    }
}

#[test]
fn the_valid_token_of_the_jwt_property_is_accepted() {
    // Without this, a broken setup would make the property above pass vacuously.
    let world = jwt_world();
    assert!(world.accepts(&world.valid));
}
