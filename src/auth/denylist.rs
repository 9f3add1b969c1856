//! Revocation: after a token's signature verifies, decide whether an operator has revoked it —
//! the one token (`iss` + `jti`), every token and gateway session of one IdP login session
//! (`iss` + `sid`, for OpenID Connect back-channel logout), every token of a user (`iss` +
//! `sub`), every token of a user issued before a moment ("log out everywhere"), or every token
//! signed with a leaked key (provider + `kid`). This step must never let a revocation lapse
//! early: an entry is never evicted before its own `expires` (there is no size limit at all,
//! because eviction silently un-revokes). The list is immutable once built; its sources (the
//! file, in `denylist_file`) build a new one and swap it in whole. [`Entry`] is one revocation
//! as the revocation API and the Redis source exchange it (JSON), and the unit those sources add
//! and remove.

use std::collections::HashMap;

use crate::auth::jwt::VerifiedToken;

/// Why a token is refused; `reason()` is the stable machine-readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Token,
    /// Every token and gateway session of one IdP session (`sid`).
    Session,
    Subject,
    SubjectIssuedBefore,
    Key,
}

impl Revocation {
    /// The entry kind that matched, for metrics: `token`, `sid`, `subject`,
    /// `subject_issued_before`, `key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Token => "token",
            Revocation::Session => "sid",
            Revocation::Subject => "subject",
            Revocation::SubjectIssuedBefore => "subject_issued_before",
            Revocation::Key => "key",
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Revocation::Token => "revoked_token",
            // Not `revoked_session`: that stable name already means a subject's tokens issued
            // before a moment ("log out everywhere").
            Revocation::Session => "revoked_sid",
            Revocation::Subject => "revoked_subject",
            Revocation::SubjectIssuedBefore => "revoked_session",
            Revocation::Key => "revoked_key",
        }
    }
}

/// `None` means the entry never expires.
pub type Expires = Option<i64>;

/// Outer key is the scope (issuer or provider), inner key the identifier; nesting lets a lookup
/// borrow `&str` from the token instead of allocating a tuple key per request.
type Scoped<V> = HashMap<Box<str>, HashMap<Box<str>, V>>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct SubjectRule {
    /// `None`: every token of the subject.
    issued_before: Option<i64>,
    expires: Expires,
}

/// An immutable revocation list; build a new one to change it.
#[derive(Debug, Clone, Default)]
pub struct Denylist {
    tokens: Scoped<Expires>,
    /// Issuer, then `sid`.
    sessions: Scoped<Expires>,
    // A Vec rather than one merged rule: with expiries, which rule is strictest depends on `now`.
    subjects: Scoped<Vec<SubjectRule>>,
    keys: Scoped<Expires>,
    len: usize,
}

fn live(expires: Expires, now_unix: i64) -> bool {
    expires.is_none_or(|at| now_unix <= at)
}

/// Duplicates collapse into the one that lasts longest, which is exactly when any of them applies.
fn merge_expires(a: Expires, b: Expires) -> Expires {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

impl Denylist {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Distinct entries, after identical duplicates are merged.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries by kind (`token`, `sid`, `subject`, `key`), for metrics.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        let count = |map: &Scoped<Expires>| map.values().map(HashMap::len).sum();
        let subjects = self
            .subjects
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum();
        [
            ("token", count(&self.tokens)),
            ("sid", count(&self.sessions)),
            ("subject", subjects),
            ("key", count(&self.keys)),
        ]
    }

    /// One token, by issuer and `jti`. `expires: None` never expires.
    pub fn revoke_token(&mut self, issuer: Box<str>, jti: Box<str>, expires: Expires) {
        insert_merged(&mut self.tokens, &mut self.len, issuer, jti, expires);
    }

    /// Every token and gateway session of the IdP session `sid` at `issuer`.
    pub fn revoke_session(&mut self, issuer: Box<str>, sid: Box<str>, expires: Expires) {
        insert_merged(&mut self.sessions, &mut self.len, issuer, sid, expires);
    }

    /// Every token signed with a provider's key `kid`.
    pub fn revoke_key(&mut self, provider: Box<str>, kid: Box<str>, expires: Expires) {
        insert_merged(&mut self.keys, &mut self.len, provider, kid, expires);
    }

    /// Every token of `subject` from `issuer` (issued before `issued_before`, when given).
    pub fn revoke_subject(
        &mut self,
        issuer: Box<str>,
        subject: Box<str>,
        issued_before: Option<i64>,
        expires: Expires,
    ) {
        let rules = self
            .subjects
            .entry(issuer)
            .or_default()
            .entry(subject)
            .or_default();
        match rules.iter_mut().find(|r| r.issued_before == issued_before) {
            Some(rule) => rule.expires = merge_expires(rule.expires, expires),
            None => {
                rules.push(SubjectRule {
                    issued_before,
                    expires,
                });
                self.len += 1;
            }
        }
    }

    /// Adds one entry (merged with an identical one, as the file's duplicates are).
    pub fn add(&mut self, entry: &Entry) {
        match &entry.target {
            Target::Token { issuer, jti } => {
                self.revoke_token(issuer.clone(), jti.clone(), entry.expires)
            }
            Target::Session { issuer, sid } => {
                self.revoke_session(issuer.clone(), sid.clone(), entry.expires)
            }
            Target::Subject {
                issuer,
                subject,
                issued_before,
            } => self.revoke_subject(
                issuer.clone(),
                subject.clone(),
                *issued_before,
                entry.expires,
            ),
            Target::Key { provider, kid } => {
                self.revoke_key(provider.clone(), kid.clone(), entry.expires)
            }
        }
    }

    /// Removes the entry for `target` (whatever its expiry); whether there was one.
    pub fn remove(&mut self, target: &Target) -> bool {
        let removed = match target {
            Target::Token { issuer, jti } => remove_scoped(&mut self.tokens, issuer, jti).is_some(),
            Target::Session { issuer, sid } => {
                remove_scoped(&mut self.sessions, issuer, sid).is_some()
            }
            Target::Key { provider, kid } => remove_scoped(&mut self.keys, provider, kid).is_some(),
            Target::Subject {
                issuer,
                subject,
                issued_before,
            } => {
                let Some(inner) = self.subjects.get_mut(&**issuer) else {
                    return false;
                };
                let Some(rules) = inner.get_mut(&**subject) else {
                    return false;
                };
                let before = rules.len();
                rules.retain(|r| r.issued_before != *issued_before);
                let removed = rules.len() < before;
                if rules.is_empty() {
                    inner.remove(&**subject);
                    if inner.is_empty() {
                        self.subjects.remove(&**issuer);
                    }
                }
                removed
            }
        };
        if removed {
            self.len = self.len.saturating_sub(1);
        }
        removed
    }

    /// Whether an entry for `target` is held (live or not).
    pub fn contains(&self, target: &Target) -> bool {
        match target {
            Target::Token { issuer, jti } => lookup(&self.tokens, issuer, jti).is_some(),
            Target::Session { issuer, sid } => lookup(&self.sessions, issuer, sid).is_some(),
            Target::Key { provider, kid } => lookup(&self.keys, provider, kid).is_some(),
            Target::Subject {
                issuer,
                subject,
                issued_before,
            } => lookup(&self.subjects, issuer, subject)
                .is_some_and(|rules| rules.iter().any(|r| r.issued_before == *issued_before)),
        }
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: &Denylist) {
        for entry in other.entries() {
            self.add(&entry);
        }
    }

    /// Drops the entries that expired before `now_unix`; they no longer apply anyway.
    pub fn prune(&mut self, now_unix: i64) {
        let expired: Vec<Target> = self
            .entries()
            .into_iter()
            .filter(|e| !live(e.expires, now_unix))
            .map(|e| e.target)
            .collect();
        for target in &expired {
            self.remove(target);
        }
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::with_capacity(self.len);
        for (issuer, inner) in &self.tokens {
            for (jti, expires) in inner {
                out.push(Entry {
                    target: Target::Token {
                        issuer: issuer.clone(),
                        jti: jti.clone(),
                    },
                    expires: *expires,
                });
            }
        }
        for (issuer, inner) in &self.sessions {
            for (sid, expires) in inner {
                out.push(Entry {
                    target: Target::Session {
                        issuer: issuer.clone(),
                        sid: sid.clone(),
                    },
                    expires: *expires,
                });
            }
        }
        for (issuer, inner) in &self.subjects {
            for (subject, rules) in inner {
                for rule in rules {
                    out.push(Entry {
                        target: Target::Subject {
                            issuer: issuer.clone(),
                            subject: subject.clone(),
                            issued_before: rule.issued_before,
                        },
                        expires: rule.expires,
                    });
                }
            }
        }
        for (provider, inner) in &self.keys {
            for (kid, expires) in inner {
                out.push(Entry {
                    target: Target::Key {
                        provider: provider.clone(),
                        kid: kid.clone(),
                    },
                    expires: *expires,
                });
            }
        }
        out
    }

    /// The revocation that applies to `token` at `now_unix`, if any. A leaked key is reported
    /// first because it is the broadest; then the narrowest, the single token; then the IdP
    /// session; then the subject. Borrows from the token only: no allocation per request.
    pub fn check(&self, token: &VerifiedToken, now_unix: i64) -> Option<Revocation> {
        if let Some(kid) = token.kid.as_deref() {
            if lookup(&self.keys, &token.provider, kid).is_some_and(|&e| live(e, now_unix)) {
                return Some(Revocation::Key);
            }
        }
        if let Some(jti) = token.jti.as_deref() {
            if lookup(&self.tokens, &token.issuer, jti).is_some_and(|&e| live(e, now_unix)) {
                return Some(Revocation::Token);
            }
        }
        if let Some(sid) = token.sid.as_deref() {
            if lookup(&self.sessions, &token.issuer, sid).is_some_and(|&e| live(e, now_unix)) {
                return Some(Revocation::Session);
            }
        }
        let subject = token.subject.as_deref()?;
        let rules = lookup(&self.subjects, &token.issuer, subject)?;
        let mut found = None;
        for rule in rules.iter().filter(|r| live(r.expires, now_unix)) {
            match rule.issued_before {
                None => return Some(Revocation::Subject),
                // Without `iat` nothing shows the token postdates the cut-off, so it is revoked.
                Some(cutoff) if token.issued_at.is_none_or(|iat| iat < cutoff) => {
                    found = Some(Revocation::SubjectIssuedBefore);
                }
                Some(_) => {}
            }
        }
        found
    }
}

fn lookup<'a, V>(map: &'a Scoped<V>, scope: &str, id: &str) -> Option<&'a V> {
    map.get(scope)?.get(id)
}

fn remove_scoped<V>(map: &mut Scoped<V>, scope: &str, id: &str) -> Option<V> {
    let inner = map.get_mut(scope)?;
    let removed = inner.remove(id);
    if inner.is_empty() {
        map.remove(scope);
    }
    removed
}

/// Of two sources' answers, the one `check` would have reported first had both entries been in
/// one list, so combining sources never changes a token's reason. A key outranks everything (it
/// says the signature itself is untrustworthy); after it, the narrower the entry the more exact
/// the reason: one token, then one IdP session (narrower than a user, who may hold several
/// sessions, broader than one token, since a session holds many), then the user.
pub fn strongest(a: Option<Revocation>, b: Option<Revocation>) -> Option<Revocation> {
    let rank = |r: &Revocation| match r {
        Revocation::Key => 0,
        Revocation::Token => 1,
        Revocation::Session => 2,
        Revocation::Subject => 3,
        Revocation::SubjectIssuedBefore => 4,
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if rank(&b) < rank(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// What one entry revokes: the same four kinds as the file (`[[token]]`, `[[sid]]`,
/// `[[subject]]`, `[[key]]`), each scoped to an issuer or a provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Token {
        issuer: Box<str>,
        jti: Box<str>,
    },
    /// Every token and gateway session carrying this `sid` from this issuer.
    Session {
        issuer: Box<str>,
        sid: Box<str>,
    },
    Subject {
        issuer: Box<str>,
        subject: Box<str>,
        /// `None`: every token of the subject; otherwise tokens with `iat` before it.
        issued_before: Option<i64>,
    },
    Key {
        provider: Box<str>,
        kid: Box<str>,
    },
}

/// One revocation: what, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub target: Target,
    pub expires: Expires,
}

/// The JSON form, flat so that `deny_unknown_fields` can refuse a misspelt key: an operator who
/// types `"subjet"` must hear about it rather than revoke nothing.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    kind: String,
    issuer: Option<String>,
    jti: Option<String>,
    sid: Option<String>,
    subject: Option<String>,
    issued_before: Option<i64>,
    provider: Option<String>,
    kid: Option<String>,
    expires: Option<i64>,
    // Free text and bookkeeping that travel with a stored entry; they never affect matching.
    #[allow(dead_code)]
    reason: Option<String>,
    #[allow(dead_code)]
    by: Option<String>,
    #[allow(dead_code)]
    at: Option<i64>,
}

/// Longest identifier accepted from the API or Redis; far beyond any real `jti`, `sid`, `sub`
/// or `kid`.
const MAX_FIELD_BYTES: usize = 1024;

impl Target {
    /// `token`, `sid`, `subject` or `key`: the JSON `kind` and the file's section name.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Token { .. } => "token",
            Target::Session { .. } => "sid",
            Target::Subject { .. } => "subject",
            Target::Key { .. } => "key",
        }
    }

    /// A stable byte string naming the target, for keys derived from it (NUL cannot occur in
    /// the fields, which are checked to hold no control characters).
    pub fn identity(&self) -> String {
        match self {
            Target::Token { issuer, jti } => format!("token\0{issuer}\0{jti}"),
            Target::Session { issuer, sid } => format!("sid\0{issuer}\0{sid}"),
            Target::Subject {
                issuer,
                subject,
                issued_before,
            } => match issued_before {
                Some(t) => format!("subject\0{issuer}\0{subject}\0{t}"),
                None => format!("subject\0{issuer}\0{subject}"),
            },
            Target::Key { provider, kid } => format!("key\0{provider}\0{kid}"),
        }
    }
}

impl Entry {
    /// Reads the JSON form; `expires` and `issued_before` are unix seconds. The message says
    /// what is wrong in the caller's terms.
    pub fn from_json(value: &serde_json::Value) -> Result<Entry, String> {
        let json: EntryJson = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let field = |name: &str, value: Option<String>| -> Result<Box<str>, String> {
            let value = value.ok_or_else(|| format!("{} needs \"{name}\"", json.kind))?;
            if value.is_empty() {
                return Err(format!("\"{name}\" is empty"));
            }
            if value.len() > MAX_FIELD_BYTES || value.chars().any(char::is_control) {
                return Err(format!(
                    "\"{name}\" must be at most {MAX_FIELD_BYTES} bytes without control characters"
                ));
            }
            Ok(value.into_boxed_str())
        };
        let unexpected = |names: &[(&str, bool)]| -> Result<(), String> {
            match names.iter().find(|(_, present)| *present) {
                Some((name, _)) => Err(format!("\"{name}\" does not apply to {}", json.kind)),
                None => Ok(()),
            }
        };
        let target = match json.kind.as_str() {
            "token" => {
                unexpected(&[
                    ("sid", json.sid.is_some()),
                    ("subject", json.subject.is_some()),
                    ("issued_before", json.issued_before.is_some()),
                    ("provider", json.provider.is_some()),
                    ("kid", json.kid.is_some()),
                ])?;
                Target::Token {
                    issuer: field("issuer", json.issuer.clone())?,
                    jti: field("jti", json.jti.clone())?,
                }
            }
            "sid" => {
                unexpected(&[
                    ("jti", json.jti.is_some()),
                    ("subject", json.subject.is_some()),
                    ("issued_before", json.issued_before.is_some()),
                    ("provider", json.provider.is_some()),
                    ("kid", json.kid.is_some()),
                ])?;
                Target::Session {
                    issuer: field("issuer", json.issuer.clone())?,
                    sid: field("sid", json.sid.clone())?,
                }
            }
            "subject" => {
                unexpected(&[
                    ("jti", json.jti.is_some()),
                    ("sid", json.sid.is_some()),
                    ("provider", json.provider.is_some()),
                    ("kid", json.kid.is_some()),
                ])?;
                Target::Subject {
                    issuer: field("issuer", json.issuer.clone())?,
                    subject: field("subject", json.subject.clone())?,
                    issued_before: json.issued_before,
                }
            }
            "key" => {
                unexpected(&[
                    ("issuer", json.issuer.is_some()),
                    ("jti", json.jti.is_some()),
                    ("sid", json.sid.is_some()),
                    ("subject", json.subject.is_some()),
                    ("issued_before", json.issued_before.is_some()),
                ])?;
                Target::Key {
                    provider: field("provider", json.provider.clone())?,
                    kid: field("kid", json.kid.clone())?,
                }
            }
            other => {
                return Err(format!(
                    "kind {other:?} is not one of \"token\", \"sid\", \"subject\", \"key\""
                ))
            }
        };
        Ok(Entry {
            target,
            expires: json.expires,
        })
    }

    /// The JSON form: `kind`, the target's fields, and `expires` when it has one.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = match &self.target {
            Target::Token { issuer, jti } => {
                serde_json::json!({"kind": "token", "issuer": issuer, "jti": jti})
            }
            Target::Session { issuer, sid } => {
                serde_json::json!({"kind": "sid", "issuer": issuer, "sid": sid})
            }
            Target::Subject {
                issuer,
                subject,
                issued_before,
            } => {
                let mut v =
                    serde_json::json!({"kind": "subject", "issuer": issuer, "subject": subject});
                if let Some(t) = issued_before {
                    v["issued_before"] = (*t).into();
                }
                v
            }
            Target::Key { provider, kid } => {
                serde_json::json!({"kind": "key", "provider": provider, "kid": kid})
            }
        };
        if let Some(expires) = self.expires {
            value["expires"] = expires.into();
        }
        value
    }
}

fn insert_merged(
    map: &mut Scoped<Expires>,
    len: &mut usize,
    scope: Box<str>,
    id: Box<str>,
    expires: Expires,
) {
    let inner = map.entry(scope).or_default();
    match inner.get_mut(&id) {
        Some(existing) => *existing = merge_expires(*existing, expires),
        None => {
            inner.insert(id, expires);
            *len += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const ISS: &str = "https://idp.example.com/";
    const NOW: i64 = 1_780_000_000;

    fn session(sid: &str, expires: Expires) -> Entry {
        Entry {
            target: Target::Session {
                issuer: ISS.into(),
                sid: sid.into(),
            },
            expires,
        }
    }

    /// A token of user-123 in IdP session sid-1, signed with key k1.
    fn token() -> VerifiedToken {
        let mut token = VerifiedToken::with_claims(serde_json::json!({
            "sub": "user-123", "jti": "jti-1", "sid": "sid-1",
        }));
        token.provider = Arc::from("main");
        token.issuer = Arc::from(ISS);
        token.jti = Some("jti-1".into());
        token.kid = Some("k1".into());
        token.issued_at = Some(NOW - 60);
        token
    }

    #[test]
    fn with_claims_reads_sid() {
        assert_eq!(token().sid.as_deref(), Some("sid-1"));
        let without = VerifiedToken::with_claims(serde_json::json!({"sub": "u"}));
        assert_eq!(without.sid, None);
    }

    #[test]
    fn sid_entry_revokes_the_session_only() {
        let mut list = Denylist::empty();
        list.add(&session("sid-1", None));
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Session));
        assert_eq!(Revocation::Session.kind(), "sid");
        assert_eq!(Revocation::Session.reason(), "revoked_sid");
        let other = VerifiedToken {
            sid: Some("sid-2".into()),
            ..token()
        };
        assert_eq!(list.check(&other, NOW), None);
        let none = VerifiedToken {
            sid: None,
            ..token()
        };
        assert_eq!(list.check(&none, NOW), None);
        // A gateway session is checked as a token whose sid is set by the login step.
        let mut gateway_session = VerifiedToken::with_claims(serde_json::json!({}));
        gateway_session.issuer = Arc::from(ISS);
        gateway_session.sid = Some("sid-1".into());
        assert_eq!(list.check(&gateway_session, NOW), Some(Revocation::Session));
    }

    #[test]
    fn sid_entry_expires() {
        let mut list = Denylist::empty();
        list.add(&session("sid-1", Some(NOW)));
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Session));
        assert_eq!(list.check(&token(), NOW + 1), None);
        // A duplicate keeps the longer life.
        list.add(&session("sid-1", Some(NOW + 10)));
        list.add(&session("sid-1", Some(NOW - 10)));
        assert_eq!(list.len(), 1);
        assert_eq!(list.check(&token(), NOW + 10), Some(Revocation::Session));
    }

    #[test]
    fn check_reports_key_then_token_then_sid_then_subject() {
        let mut list = Denylist::empty();
        list.revoke_subject(ISS.into(), "user-123".into(), None, None);
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Subject));
        list.revoke_session(ISS.into(), "sid-1".into(), None);
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Session));
        list.revoke_token(ISS.into(), "jti-1".into(), None);
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Token));
        list.revoke_key("main".into(), "k1".into(), None);
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Key));
    }

    #[test]
    fn strongest_agrees_with_check_order() {
        use Revocation::*;
        let order = [Key, Token, Session, Subject, SubjectIssuedBefore];
        for (i, a) in order.iter().enumerate() {
            for b in &order[i..] {
                assert_eq!(strongest(Some(*a), Some(*b)), Some(*a), "{a:?} vs {b:?}");
                assert_eq!(strongest(Some(*b), Some(*a)), Some(*a), "{b:?} vs {a:?}");
            }
            assert_eq!(strongest(Some(*a), None), Some(*a));
            assert_eq!(strongest(None, Some(*a)), Some(*a));
        }
        assert_eq!(strongest(None, None), None);

        // Split across two lists, the combined answer is the one list's answer.
        let mut sessions = Denylist::empty();
        sessions.add(&session("sid-1", None));
        let mut subjects = Denylist::empty();
        subjects.revoke_subject(ISS.into(), "user-123".into(), Some(NOW), None);
        let mut both = sessions.clone();
        both.merge(&subjects);
        assert_eq!(
            strongest(subjects.check(&token(), NOW), sessions.check(&token(), NOW)),
            both.check(&token(), NOW)
        );
    }

    #[test]
    fn sid_entries_are_counted_listed_and_removed() {
        let mut list = Denylist::empty();
        list.add(&session("sid-1", None));
        list.add(&session("sid-2", Some(NOW)));
        list.revoke_token(ISS.into(), "jti-9".into(), None);
        assert_eq!(list.len(), 3);
        assert_eq!(
            list.counts(),
            [("token", 1), ("sid", 2), ("subject", 0), ("key", 0)]
        );
        let mut entries = list.entries();
        entries.retain(|e| e.target.kind() == "sid");
        entries.sort_by_key(|e| e.expires);
        assert_eq!(
            entries,
            vec![session("sid-1", None), session("sid-2", Some(NOW))]
        );
        assert!(list.contains(&session("sid-1", None).target));

        // Removal is by target whatever the expiry; a token entry of the same name is unrelated.
        assert!(list.remove(&session("sid-1", Some(5)).target));
        assert!(!list.remove(&session("sid-1", None).target));
        assert!(!list.remove(&Target::Token {
            issuer: ISS.into(),
            jti: "sid-2".into(),
        }));
        assert!(!list.contains(&session("sid-1", None).target));
        assert_eq!(list.len(), 2);
        assert_eq!(list.check(&token(), NOW), None);

        // Prune drops only what has expired.
        list.prune(NOW + 1);
        assert_eq!(list.len(), 1);
        assert_eq!(list.counts()[1], ("sid", 0));
        assert!(list.sessions.is_empty(), "an emptied issuer is dropped");
    }

    #[test]
    fn sid_entry_json_round_trips_and_is_validated() {
        let entry = session("sid-1", Some(NOW));
        let json = entry.to_json();
        assert_eq!(
            json,
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "sid-1", "expires": NOW})
        );
        assert_eq!(Entry::from_json(&json).unwrap(), entry);
        let forever = session("sid-1", None);
        assert_eq!(Entry::from_json(&forever.to_json()).unwrap(), forever);
        // Stored records carry bookkeeping that does not change the entry.
        let stored = serde_json::json!({
            "kind": "sid", "issuer": ISS, "sid": "sid-1", "reason": "logout", "by": "op", "at": 1,
        });
        assert_eq!(Entry::from_json(&stored).unwrap(), forever);
        assert_eq!(forever.target.identity(), format!("sid\0{ISS}\0sid-1"));

        let refused = |value: serde_json::Value, needle: &str| {
            let error = Entry::from_json(&value).unwrap_err();
            assert!(error.contains(needle), "{value}: {error}");
        };
        refused(serde_json::json!({"kind": "sid", "issuer": ISS}), "sid");
        refused(serde_json::json!({"kind": "sid", "sid": "s"}), "issuer");
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": ""}),
            "empty",
        );
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "x".repeat(MAX_FIELD_BYTES + 1)}),
            "at most",
        );
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "a\nb"}),
            "control",
        );
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "s", "subject": "u"}),
            "\"subject\" does not apply to sid",
        );
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "s", "issued_before": 1}),
            "issued_before",
        );
        refused(
            serde_json::json!({"kind": "token", "issuer": ISS, "jti": "j", "sid": "s"}),
            "\"sid\" does not apply to token",
        );
        refused(
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": 7}),
            "invalid type",
        );
        refused(
            serde_json::json!({"kind": "session", "issuer": ISS, "sid": "s"}),
            "\"sid\"",
        );
        let longest =
            serde_json::json!({"kind": "sid", "issuer": ISS, "sid": "x".repeat(MAX_FIELD_BYTES)});
        assert!(Entry::from_json(&longest).is_ok());
    }
}
