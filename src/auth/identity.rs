//! Identity headers: decides which request headers upstream services may trust as identity.
//!
//! Every request, on every route, first loses each header in the identity namespace (any name
//! under the configured prefix, plus the subject, issuer, claim and `strip` names), compared
//! case-insensitively with `_` read as `-` because some servers fold the two; then, for an
//! authenticated request, the trusted values are inserted from the verified token. This step must
//! never let a client-supplied identity header through, never log a header value, and never write
//! a value an upstream could split or misread.
//!
//! # Value encoding (the contract with upstream services)
//!
//! * A string claim is written as is; a number or boolean as its JSON text (`42`, `1.5`, `true`);
//!   an object as compact JSON; a `null` or absent claim leaves the header out.
//! * An array is written, by default (`array_format = "csv"`), as its elements joined by `,`
//!   with no spaces: string elements as is, others as compact JSON. If any element's text
//!   holds a `,` the request is refused (`ambiguous_claim_array`): the group `CN=admins,OU=x`
//!   must never read as two groups. With `array_format = "json"` the array is compact JSON.
//!   An empty array is an empty value.
//! * Then the text is percent-encoded so every header value is visible ASCII and reversible:
//!   `%` becomes `%25`, every byte outside 0x20..=0x7E (that is, the bytes of non-ASCII UTF-8)
//!   becomes `%XX` with upper-case hex (`Zoë` → `Zo%C3%AB`), and a space at the very start or
//!   end becomes `%20`, because HTTP parsers trim such spaces and `" admin"` must not arrive as
//!   `admin`. A CSV array is encoded element by element, so a space at the start or end of
//!   EACH element becomes `%20` (`["users", " admin"]` → `users,%20admin`): list parsers trim
//!   around every comma. Space is the only whitespace left to encode: HTAB and the other ASCII
//!   whitespace are control characters (below), and non-ASCII whitespace (NBSP, ...) is already
//!   `%XX`. Decoding with any standard percent-decoder (each element, for CSV) gives back the
//!   claim's UTF-8 text.
//! * A control character (0x00..=0x1F or 0x7F: CR, LF, TAB, NUL, ...) in the text is never
//!   encoded or dropped: the request is refused (`unsafe_claim_value`). JSON-rendered values
//!   carry their own escapes (`\n`), so only raw strings and CSV elements can trigger this.
//! * Values are inserted (replacing), never appended, and marked sensitive.
//!
//! # Order in the pipeline
//!
//! The caller removes hop-by-hop headers, including every name listed in `Connection`, before
//! [`IdentityRules::strip`] and [`IdentityRules::inject`]; nothing removes headers after
//! `inject`, so a client's `Connection: x-auth-subject` cannot delete an injected header.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::auth::jwt::VerifiedToken;
use crate::config::file::{
    ArrayFormat, ClaimPath, IdentitySection, DEFAULT_IDENTITY_PREFIX, DEFAULT_ISSUER_HEADER,
    DEFAULT_SUBJECT_HEADER,
};
use crate::edge::headers::{
    has_prefix, is_one_of, same_name, CLIENT_DESCRIBING, METHOD_OVERRIDES, PATH_OVERRIDES,
    SET_WHEN_FORWARDING,
};

/// The identity header namespace and the claim → header mappings, validated.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    /// Lower-case, `_` replaced by `-`; always ends in `-`.
    prefix: String,
    /// Every exact name to strip, normalized like `prefix`.
    names: Vec<String>,
    subject: HeaderName,
    issuer: HeaderName,
    claims: Vec<ClaimHeader>,
}

#[derive(Debug, Clone)]
struct ClaimHeader {
    claim: ClaimPath,
    header: HeaderName,
    format: ArrayFormat,
}

/// A claim value that cannot be written as a header; the request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The value holds CR, LF, NUL or another control character.
    ControlCharacter { header: String },
    /// An element of a CSV-formatted array holds a comma.
    CommaInArrayElement { header: String },
}

impl IdentityError {
    /// Stable, machine-readable reason for the response body and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::ControlCharacter { .. } => "unsafe_claim_value",
            IdentityError::CommaInArrayElement { .. } => "ambiguous_claim_array",
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::ControlCharacter { header } => {
                write!(
                    f,
                    "claim value for header {header} holds a control character"
                )
            }
            IdentityError::CommaInArrayElement { header } => write!(
                f,
                "an array element for header {header} holds a comma (use array_format = \"json\")"
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

impl Default for IdentityRules {
    fn default() -> Self {
        IdentityRules {
            prefix: DEFAULT_IDENTITY_PREFIX.to_string(),
            names: vec![
                DEFAULT_SUBJECT_HEADER.to_string(),
                DEFAULT_ISSUER_HEADER.to_string(),
            ],
            subject: HeaderName::from_static(DEFAULT_SUBJECT_HEADER),
            issuer: HeaderName::from_static(DEFAULT_ISSUER_HEADER),
            claims: Vec::new(),
        }
    }
}

/// Headers whose meaning belongs to the connection: the caller removes them before injection,
/// and one sent on would be misread by the next hop.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// End-to-end headers the gateway itself or the upstream's framing relies on.
const RESERVED: [&str; 5] = [
    "host",
    "authorization",
    "cookie",
    "content-length",
    "content-type",
];

impl IdentityRules {
    /// Validates `[auth.identity]`; the message is ready for a `ConfigError`.
    pub fn build(section: &IdentitySection) -> Result<IdentityRules, String> {
        Self::build_located(section).map_err(|(message, _)| message)
    }

    /// Like [`IdentityRules::build`], and also returns the byte span of the offending value when
    /// there is one, so `config::build` can point at its line and column.
    pub fn build_located(
        section: &IdentitySection,
    ) -> Result<IdentityRules, (String, Option<Range<usize>>)> {
        let prefix = match &section.prefix {
            Some(spanned) => {
                check_prefix(spanned.get_ref()).map_err(|m| (m, Some(spanned.span())))?
            }
            None => DEFAULT_IDENTITY_PREFIX.to_string(),
        };

        // Every injected header, with the key that named it, to refuse collisions.
        let mut injected: Vec<(String, String)> = Vec::new();
        let mut injected_header = |key: String,
                                   raw: &str,
                                   span: Option<Range<usize>>|
         -> Result<HeaderName, (String, Option<Range<usize>>)> {
            let (name, normalized) = header_name(&key, raw).map_err(|m| (m, span.clone()))?;
            if let Some(why) = reserved(&normalized, true) {
                return Err((
                    format!("{key} {raw:?} cannot carry identity: it is {why}"),
                    span,
                ));
            }
            if let Some((other, _)) = injected.iter().find(|(_, n)| *n == normalized) {
                return Err((
                    format!("{key} {raw:?} is the same header as {other}; each injected header needs its own name"),
                    span,
                ));
            }
            injected.push((key, normalized));
            Ok(name)
        };

        let subject = match &section.subject_header {
            Some(s) => injected_header("subject_header".into(), s.get_ref(), Some(s.span()))?,
            None => injected_header("subject_header".into(), DEFAULT_SUBJECT_HEADER, None)?,
        };
        let issuer = match &section.issuer_header {
            Some(s) => injected_header("issuer_header".into(), s.get_ref(), Some(s.span()))?,
            None => injected_header("issuer_header".into(), DEFAULT_ISSUER_HEADER, None)?,
        };
        let mut claims = Vec::with_capacity(section.claims.len());
        for mapping in &section.claims {
            let key = format!("the header for claim {}", mapping.claim);
            let header =
                injected_header(key, mapping.header.get_ref(), Some(mapping.header.span()))?;
            claims.push(ClaimHeader {
                claim: mapping.claim.clone(),
                header,
                format: mapping.format.unwrap_or(section.array_format),
            });
        }

        let mut names: Vec<String> = injected.into_iter().map(|(_, n)| n).collect();
        for entry in &section.strip {
            let raw = entry.get_ref();
            let (_, normalized) =
                header_name("strip entry", raw).map_err(|m| (m, Some(entry.span())))?;
            if let Some(why) = reserved(&normalized, false) {
                return Err((
                    format!("strip entry {raw:?} would remove {why}"),
                    Some(entry.span()),
                ));
            }
            if !names.contains(&normalized) {
                names.push(normalized);
            }
        }

        Ok(IdentityRules {
            prefix,
            names,
            subject,
            issuer,
            claims,
        })
    }

    /// Removes every header in the identity namespace and returns how many header fields (values)
    /// went. Each removed name is logged at warn as a likely spoof; the value never is.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        // Collected first because the map cannot change while its keys are borrowed; an empty
        // collect does not allocate, which keeps the usual no-match request free of work.
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.in_namespace(name.as_str()))
            .cloned()
            .collect();
        let mut removed = 0;
        for name in &spoofed {
            if let Entry::Occupied(entry) = headers.entry(name) {
                removed += entry.remove_entry_mult().1.count();
            }
        }
        if removed > 0 {
            // One line per request, naming a few headers: a request with thousands of spoofed
            // headers must not become thousands of log lines.
            let names: Vec<&str> = spoofed.iter().take(8).map(HeaderName::as_str).collect();
            tracing::warn!(
                headers = %names.join(","),
                count = removed,
                "stripped identity headers from client (likely spoof)"
            );
        }
        removed
    }

    /// The names [`IdentityRules::inject`] may write.
    pub fn injected_names(&self) -> impl Iterator<Item = &HeaderName> {
        [&self.subject, &self.issuer]
            .into_iter()
            .chain(self.claims.iter().map(|c| &c.header))
    }

    /// The exact names configured to be stripped (`strip`), beside the prefix.
    pub fn strip_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// `name` is in the identity namespace, in any spelling.
    pub fn in_namespace(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let prefix = self.prefix.as_bytes();
        (name.len() >= prefix.len() && same_name(&name[..prefix.len()], prefix))
            || self.names.iter().any(|n| same_name(name, n.as_bytes()))
    }

    /// Writes the identity of `token`: subject (when the token has `sub`), issuer, and each
    /// mapped claim that is present and not null. A header with nothing to write is removed
    /// rather than left alone, so the result does not depend on `strip` having run first.
    pub fn inject(
        &self,
        headers: &mut HeaderMap,
        token: &VerifiedToken,
    ) -> Result<(), IdentityError> {
        match token.subject.as_deref() {
            Some(subject) => put(headers, &self.subject, encode(subject, &self.subject)?)?,
            None => {
                headers.remove(&self.subject);
            }
        }
        put(headers, &self.issuer, encode(&token.issuer, &self.issuer)?)?;
        for mapping in &self.claims {
            match mapping.claim.lookup(&token.claims) {
                None | Some(Value::Null) => {
                    headers.remove(&mapping.header);
                }
                Some(value) => {
                    let text = render(value, mapping.format, &mapping.header)?;
                    put(headers, &mapping.header, text)?;
                }
            }
        }
        Ok(())
    }
}

/// Header-name equality as the namespace sees it: ASCII case-insensitive, `_` equal to `-`.
/// Parses a configured header name; returns it lower-cased as written, and its normalized form.
fn header_name(key: &str, raw: &str) -> Result<(HeaderName, String), String> {
    let lower = raw.to_ascii_lowercase();
    let name = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("{key} {raw:?} is not a valid HTTP header name"))?;
    Ok((name, lower.replace('_', "-")))
}

fn check_prefix(raw: &str) -> Result<String, String> {
    if raw.is_empty() || !raw.ends_with(['-', '_']) {
        return Err(format!(
            "prefix {raw:?} must be non-empty and end with '-' (e.g. \"x-auth-\")"
        ));
    }
    let (_, prefix) = header_name("prefix", raw)?;
    if let Some(name) = RESERVED.iter().find(|name| name.starts_with(&prefix)) {
        return Err(format!(
            "prefix {raw:?} would strip {name:?} from every request"
        ));
    }
    Ok(prefix)
}

/// Why `normalized` may not be in the identity namespace, if it may not. Stripping a hop-by-hop
/// header is harmless (the caller drops them anyway), injecting one is not.
fn reserved(normalized: &str, injected: bool) -> Option<&'static str> {
    if injected && (HOP_BY_HOP.contains(&normalized) || normalized.starts_with("proxy-")) {
        return Some("a hop-by-hop header");
    }
    if RESERVED.contains(&normalized) {
        return Some("a header the gateway or the upstream relies on");
    }
    // Forwarding sets or removes these after identity injection, so an injected value would
    // silently vanish or be overwritten.
    let set_by_forwarding = has_prefix(normalized, "x-forwarded-")
        || is_one_of(normalized, &SET_WHEN_FORWARDING)
        || is_one_of(normalized, &CLIENT_DESCRIBING)
        || is_one_of(normalized, &PATH_OVERRIDES)
        || is_one_of(normalized, &METHOD_OVERRIDES);
    if injected && set_by_forwarding {
        return Some("a header the gateway sets when forwarding");
    }
    None
}

/// The encoded header text of a claim value (see the module doc's value encoding).
fn render(
    value: &Value,
    format: ArrayFormat,
    header: &HeaderName,
) -> Result<String, IdentityError> {
    match value {
        Value::String(text) => encode(text, header),
        Value::Array(items) if format == ArrayFormat::Csv => {
            let mut joined = String::new();
            for (i, item) in items.iter().enumerate() {
                let element = match item {
                    Value::String(text) => Cow::Borrowed(text.as_str()),
                    other => Cow::Owned(other.to_string()),
                };
                if element.contains(',') {
                    return Err(IdentityError::CommaInArrayElement {
                        header: header.as_str().to_string(),
                    });
                }
                if i > 0 {
                    joined.push(',');
                }
                // Encoded one by one: list parsers trim the spaces around every element, so
                // `[" admin"]` must keep its space as `%20` wherever it sits in the list.
                joined.push_str(&encode(&element, header)?);
            }
            Ok(joined)
        }
        // Value's Display is compact JSON, which is also the plain text of numbers and booleans.
        other => encode(&other.to_string(), header),
    }
}

/// Writes `text`, already encoded by [`encode`] or [`render`].
fn put(headers: &mut HeaderMap, name: &HeaderName, text: String) -> Result<(), IdentityError> {
    // Cannot fail (every byte is 0x20..=0x7E), but a failure must still refuse, not panic.
    let mut value = HeaderValue::try_from(text).map_err(|_| IdentityError::ControlCharacter {
        header: name.as_str().to_string(),
    })?;
    value.set_sensitive(true);
    headers.insert(name.clone(), value);
    Ok(())
}

/// Percent-encodes `text` into visible ASCII; a space at either end becomes `%20`.
fn encode(text: &str, header: &HeaderName) -> Result<String, IdentityError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let unsafe_value = || IdentityError::ControlCharacter {
        header: header.as_str().to_string(),
    };
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let mut out = String::with_capacity(bytes.len());
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            0x00..=0x1F | 0x7F => return Err(unsafe_value()),
            b' ' if i == 0 || i == last => out.push_str("%20"),
            b'%' => out.push_str("%25"),
            0x20..=0x7E => out.push(char::from(byte)),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0F)]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(text: &str) -> IdentityRules {
        IdentityRules::build(&toml::from_str::<IdentitySection>(text).unwrap()).unwrap()
    }

    fn build_err(text: &str) -> String {
        IdentityRules::build(&toml::from_str::<IdentitySection>(text).unwrap()).unwrap_err()
    }

    fn token(claims: Value) -> VerifiedToken {
        VerifiedToken::with_claims(claims)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn get<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
        map.get(name).map(|v| v.to_str().unwrap())
    }

    const MAPPED: &str = r#"
        [[claim]]
        claim = "/email"
        header = "x-auth-email"
        [[claim]]
        claim = "/groups"
        header = "x-auth-groups"
        [[claim]]
        claim = "/roles"
        header = "x-auth-roles"
        format = "json"
        [[claim]]
        claim = "/level"
        header = "x-auth-level"
        [[claim]]
        claim = "/verified"
        header = "x-auth-verified"
        [[claim]]
        claim = "/org"
        header = "x-auth-org"
        [[claim]]
        claim = ["https://example.com/tenant"]
        header = "x-tenant"
    "#;

    #[test]
    fn strips_prefix_and_underscore_spellings() {
        let rules = IdentityRules::default();
        let mut map = headers(&[
            ("x-auth-subject", "alice"),
            ("x_auth_subject", "alice"),
            ("X-Auth-Anything", "1"),
            ("x-auth-groups", "a"),
            ("x-auth-groups", "b"),
            ("x-authorization", "kept"),
            ("x-request-id", "kept"),
            ("authorization", "Bearer kept"),
        ]);
        assert_eq!(rules.strip(&mut map), 5);
        assert!(map.get("x-auth-subject").is_none());
        assert!(map.get("x_auth_subject").is_none());
        assert!(map.get("x-auth-anything").is_none());
        assert!(map.get("x-auth-groups").is_none());
        assert_eq!(get(&map, "x-authorization"), Some("kept"));
        assert_eq!(get(&map, "x-request-id"), Some("kept"));
        assert_eq!(get(&map, "authorization"), Some("Bearer kept"));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn strips_configured_names_outside_the_prefix() {
        let rules = rules(&format!(
            r#"strip = ["x-user", "X_Legacy_Id"]
               subject_header = "x-sub"
               {MAPPED}"#
        ));
        let mut map = headers(&[
            ("X_User", "mallory"),
            ("x-user", "mallory"),
            ("x-legacy-id", "1"),
            ("x-sub", "mallory"),
            ("x_tenant", "other"),
            ("x-users", "kept"),
            ("x-use", "kept"),
            ("accept", "*/*"),
        ]);
        assert_eq!(rules.strip(&mut map), 5);
        assert_eq!(map.len(), 3);
        assert_eq!(get(&map, "x-users"), Some("kept"));
        assert_eq!(get(&map, "x-use"), Some("kept"));
        assert_eq!(get(&map, "accept"), Some("*/*"));
    }

    #[test]
    fn strip_with_nothing_to_do() {
        let rules = IdentityRules::default();
        let mut map = headers(&[("accept", "*/*"), ("x-a", "b")]);
        assert_eq!(rules.strip(&mut map), 0);
        assert_eq!(map.len(), 2);
        assert_eq!(rules.strip(&mut HeaderMap::new()), 0);
    }

    #[test]
    fn custom_prefix() {
        let rules = rules(r#"prefix = "X_Id_""#);
        let mut map = headers(&[
            ("x-id-sub", "a"),
            ("x_id_sub", "b"),
            ("x-auth-other", "kept"),
        ]);
        assert_eq!(rules.strip(&mut map), 2);
        assert_eq!(get(&map, "x-auth-other"), Some("kept"));
        // The default subject and issuer names stay in the namespace under any prefix.
        let mut map = headers(&[("x-auth-subject", "a"), ("x-auth-issuer", "b")]);
        assert_eq!(rules.strip(&mut map), 2);
    }

    #[test]
    fn injects_subject_issuer_and_scalars() {
        let rules = rules(MAPPED);
        let mut map = HeaderMap::new();
        let t = token(json!({
            "sub": "alice",
            "email": "alice@example.com",
            "level": 3,
            "verified": true,
            "https://example.com/tenant": "acme",
        }));
        rules.inject(&mut map, &t).unwrap();
        assert_eq!(get(&map, "x-auth-subject"), Some("alice"));
        assert_eq!(get(&map, "x-auth-issuer"), Some("https://issuer.example"));
        assert_eq!(get(&map, "x-auth-email"), Some("alice@example.com"));
        assert_eq!(get(&map, "x-auth-level"), Some("3"));
        assert_eq!(get(&map, "x-auth-verified"), Some("true"));
        assert_eq!(get(&map, "x-tenant"), Some("acme"));
        assert!(map.get("x-auth-groups").is_none());
        assert!(map.values().all(HeaderValue::is_sensitive));
    }

    #[test]
    fn injects_arrays_objects_and_skips_null() {
        let rules = rules(MAPPED);
        let mut map = HeaderMap::new();
        let t = token(json!({
            "groups": ["eng", "ops", 7, true, ["x"]],
            "roles": ["admin", "a,b"],
            "org": {"id": "acme", "tier": 2},
            "email": null,
        }));
        rules.inject(&mut map, &t).unwrap();
        assert_eq!(get(&map, "x-auth-groups"), Some(r#"eng,ops,7,true,["x"]"#));
        assert_eq!(get(&map, "x-auth-roles"), Some(r#"["admin","a,b"]"#));
        assert_eq!(get(&map, "x-auth-org"), Some(r#"{"id":"acme","tier":2}"#));
        assert!(map.get("x-auth-email").is_none());
        assert!(
            map.get("x-auth-subject").is_none(),
            "no sub, no subject header"
        );

        let mut map = HeaderMap::new();
        rules
            .inject(&mut map, &token(json!({"groups": []})))
            .unwrap();
        assert_eq!(get(&map, "x-auth-groups"), Some(""));
    }

    #[test]
    fn section_array_format_applies_unless_overridden() {
        let rules = rules(
            r#"array_format = "json"
               [[claim]]
               claim = "/groups"
               header = "x-auth-groups"
               [[claim]]
               claim = "/roles"
               header = "x-auth-roles"
               format = "csv""#,
        );
        let mut map = HeaderMap::new();
        let t = token(json!({"groups": ["a", "b"], "roles": ["c", "d"]}));
        rules.inject(&mut map, &t).unwrap();
        assert_eq!(get(&map, "x-auth-groups"), Some(r#"["a","b"]"#));
        assert_eq!(get(&map, "x-auth-roles"), Some("c,d"));
    }

    #[test]
    fn refuses_comma_in_csv_element() {
        let rules = rules(MAPPED);
        for groups in [
            json!(["CN=admins,OU=x"]),
            json!(["a", {"k": 1, "j": 2}]),
            json!([[1, 2]]),
        ] {
            let err = rules
                .inject(&mut HeaderMap::new(), &token(json!({"groups": groups})))
                .unwrap_err();
            assert_eq!(
                err,
                IdentityError::CommaInArrayElement {
                    header: "x-auth-groups".into()
                }
            );
            assert_eq!(err.reason(), "ambiguous_claim_array");
        }
        // A plain string claim with commas is one value, not an array: it passes.
        let mut map = HeaderMap::new();
        rules
            .inject(&mut map, &token(json!({"email": "a,b"})))
            .unwrap();
        assert_eq!(get(&map, "x-auth-email"), Some("a,b"));
    }

    #[test]
    fn refuses_control_characters() {
        let rules = rules(MAPPED);
        for bad in [
            "a\r\nx-auth-admin: 1",
            "a\nb",
            "a\0b",
            "a\tb",
            "a\u{7f}b",
            "\r",
        ] {
            let err = rules
                .inject(&mut HeaderMap::new(), &token(json!({"sub": bad})))
                .unwrap_err();
            assert_eq!(
                err,
                IdentityError::ControlCharacter {
                    header: "x-auth-subject".into()
                }
            );
            assert_eq!(err.reason(), "unsafe_claim_value");
            let err = rules
                .inject(
                    &mut HeaderMap::new(),
                    &token(json!({"groups": ["ok", bad]})),
                )
                .unwrap_err();
            assert_eq!(err.reason(), "unsafe_claim_value");
        }
        // JSON escapes its own control characters, so the JSON form is safe to write.
        let mut map = HeaderMap::new();
        rules
            .inject(&mut map, &token(json!({"roles": ["a\nb"]})))
            .unwrap();
        assert_eq!(get(&map, "x-auth-roles"), Some(r#"["a\nb"]"#));
    }

    #[test]
    fn percent_encodes_non_ascii_and_percent() {
        let rules = rules(MAPPED);
        let mut map = HeaderMap::new();
        let t = token(json!({
            "sub": "Zoë",
            "email": "100%",
            "groups": ["é", "a b"],
            "org": {"n": "ü"},
        }));
        rules.inject(&mut map, &t).unwrap();
        assert_eq!(get(&map, "x-auth-subject"), Some("Zo%C3%AB"));
        assert_eq!(get(&map, "x-auth-email"), Some("100%25"));
        assert_eq!(get(&map, "x-auth-groups"), Some("%C3%A9,a b"));
        assert_eq!(get(&map, "x-auth-org"), Some(r#"{"n":"%C3%BC"}"#));

        let mut map = HeaderMap::new();
        rules
            .inject(&mut map, &token(json!({"sub": " admin ", "email": "%20"})))
            .unwrap();
        assert_eq!(
            get(&map, "x-auth-subject"),
            Some("%20admin%20"),
            "edge spaces survive"
        );
        assert_eq!(get(&map, "x-auth-email"), Some("%2520"));
    }

    #[test]
    fn csv_elements_keep_their_edge_spaces() {
        let rules = rules(MAPPED);
        for (groups, expected) in [
            (json!(["users", " admin"]), "users,%20admin"),
            (json!(["admin ", "users"]), "admin%20,users"),
            (json!([" a b ", "  ", " "]), "%20a b%20,%20%20,%20"),
            (json!(["x", "", "y"]), "x,,y"),
            (json!([" é "]), "%20%C3%A9%20"),
            (json!(["a\u{a0}"]), "a%C2%A0"),
        ] {
            let mut map = HeaderMap::new();
            rules
                .inject(&mut map, &token(json!({"groups": groups})))
                .unwrap();
            assert_eq!(get(&map, "x-auth-groups"), Some(expected), "{groups}");
            // A trimming list parser reads exactly the elements, once each is decoded.
            let read: Vec<String> = expected
                .split(',')
                .map(|e| crate::auth::credential::percent_decode(e.trim()))
                .collect();
            assert_eq!(Value::from(read), groups);
        }
        // The JSON form keeps spaces inside its quotes.
        let mut map = HeaderMap::new();
        rules
            .inject(&mut map, &token(json!({"roles": ["users", " admin"]})))
            .unwrap();
        assert_eq!(get(&map, "x-auth-roles"), Some(r#"["users"," admin"]"#));
    }

    #[test]
    fn injected_values_replace_existing_ones() {
        let rules = rules(MAPPED);
        let mut map = headers(&[
            ("x-auth-subject", "mallory"),
            ("x-auth-subject", "eve"),
            ("x-auth-email", "stale@example.com"),
            ("x-tenant", "other"),
        ]);
        rules
            .inject(&mut map, &token(json!({"sub": "alice", "email": null})))
            .unwrap();
        let subjects: Vec<_> = map.get_all("x-auth-subject").iter().collect();
        assert_eq!(subjects, vec!["alice"]);
        assert!(
            map.get("x-auth-email").is_none(),
            "null claim removes, never keeps"
        );
        assert!(
            map.get("x-tenant").is_none(),
            "absent claim removes, never keeps"
        );

        let mut map = headers(&[("x-auth-subject", "mallory")]);
        rules.inject(&mut map, &token(json!({}))).unwrap();
        assert!(map.get("x-auth-subject").is_none());
    }

    #[test]
    fn build_errors() {
        assert!(build_err(r#"prefix = """#).contains("end with '-'"));
        assert!(build_err(r#"prefix = "x-auth""#).contains("end with '-'"));
        assert!(build_err(r#"prefix = "x auth-""#).contains("not a valid"));
        assert!(build_err(r#"prefix = "content-""#).contains("content-length"));
        assert!(build_err(r#"subject_header = "x-sub:""#).contains("not a valid"));
        assert!(build_err(r#"subject_header = """#).contains("not a valid"));
        assert!(build_err(r#"subject_header = "x-zoë""#).contains("not a valid"));
        for bad in [
            "Connection",
            "keep-alive",
            "TE",
            "trailer",
            "transfer_encoding",
            "upgrade",
            "proxy-authorization",
            "Proxy-Foo",
            "host",
            "Authorization",
            "cookie",
            "content-length",
            "Content_Type",
        ] {
            let err = build_err(&format!("issuer_header = {bad:?}"));
            assert!(err.contains("cannot carry identity"), "{bad}: {err}");
            let err = build_err(&format!("[[claim]]\nclaim = \"/a\"\nheader = {bad:?}"));
            assert!(err.contains("cannot carry identity"), "{bad}: {err}");
        }
        let err = build_err(
            r#"[[claim]]
               claim = "/a"
               header = "x-auth-a"
               [[claim]]
               claim = "/b"
               header = "X_Auth_A""#,
        );
        assert!(err.contains("same header"), "{err}");
        assert!(build_err(r#"subject_header = "x-auth-issuer""#).contains("same header"));
        assert!(build_err(r#"strip = ["cookie"]"#).contains("would remove"));
        assert!(build_err(r#"strip = ["bad name"]"#).contains("not a valid"));
        // Stripping a hop-by-hop name is allowed (it is already gone).
        rules(r#"strip = ["x-user", "te"]"#);
    }

    #[test]
    fn build_located_points_at_the_value() {
        let text = r#"subject_header = "host""#;
        let section: IdentitySection = toml::from_str(text).unwrap();
        let (_, span) = IdentityRules::build_located(&section).unwrap_err();
        let span = span.unwrap();
        assert_eq!(&text[span], "\"host\"");
    }
}
