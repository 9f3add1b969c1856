//! Revocation: after a token's signature verifies, decide whether an operator has revoked it —
//! the one token (`iss` + `jti`), every token of a user (`iss` + `sub`), every token of a user
//! issued before a moment ("log out everywhere"), or every token signed with a leaked key
//! (provider + `kid`). This step must never let a revocation lapse early: an entry is never
//! evicted before its own `expires` (there is no size limit at all, because eviction silently
//! un-revokes). The list is immutable once built; its sources (the file, in `denylist_file`)
//! build a new one and swap it in whole.

use std::collections::HashMap;

use crate::auth::jwt::VerifiedToken;

/// Why a token is refused; `reason()` is the stable machine-readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Token,
    Subject,
    SubjectIssuedBefore,
    Key,
}

impl Revocation {
    /// The entry kind that matched, for metrics: `token`, `subject`, `subject_issued_before`,
    /// `key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Token => "token",
            Revocation::Subject => "subject",
            Revocation::SubjectIssuedBefore => "subject_issued_before",
            Revocation::Key => "key",
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Revocation::Token => "revoked_token",
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

    /// Entries by kind (`token`, `subject`, `key`), for metrics.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        let count = |map: &Scoped<Expires>| map.values().map(HashMap::len).sum();
        let subjects = self
            .subjects
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum();
        [
            ("token", count(&self.tokens)),
            ("subject", subjects),
            ("key", count(&self.keys)),
        ]
    }

    /// One token, by issuer and `jti`. `expires: None` never expires.
    pub fn revoke_token(&mut self, issuer: Box<str>, jti: Box<str>, expires: Expires) {
        insert_merged(&mut self.tokens, &mut self.len, issuer, jti, expires);
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

    /// The revocation that applies to `token` at `now_unix`, if any. A leaked key is reported
    /// first because it is the broadest; then the single token; then the subject.
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
