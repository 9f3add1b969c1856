//! The denylist file: its format, its parser (every error located as `file:line:column`) and the
//! watcher that reloads it once it has settled. A file that fails to load never replaces the
//! list in force, so a typo cannot remove revocations.
//!
//! # File format
//!
//! ```toml
//! [[token]]
//! issuer = "https://idp.example.com/"
//! jti = "3f2a..."
//! expires = 2026-12-01T00:00:00Z     # optional; a TOML offset datetime, or an integer of unix seconds
//! reason = "laptop stolen"           # optional free text, for humans only
//!
//! [[sid]]                            # every token and gateway session of one IdP session
//! issuer = "https://idp.example.com/"
//! sid = "5b1c..."                    # the OpenID Connect `sid` claim
//! expires = 2026-12-01T00:00:00Z     # optional
//! reason = "..."                     # optional
//!
//! [[subject]]
//! issuer = "https://idp.example.com/"
//! subject = "user-123"
//! issued_before = 2026-11-24T10:00:00Z   # optional; omitted = every token of the subject
//! expires = 2026-12-24T00:00:00Z         # optional
//! reason = "..."                         # optional
//!
//! [[key]]
//! provider = "main"                      # the provider's configured name
//! kid = "2025-rotation-1"
//! expires = 1798761600                   # optional
//! reason = "..."                         # optional
//! ```
//!
//! - `issuer`, `jti`, `sid`, `subject`, `provider` and `kid` are compared byte for byte with the
//!   verified token (`iss` is matched exactly, trailing slash included) and must not be empty.
//! - `expires` and `issued_before` are either an offset datetime (`Z` or `+01:00`; a local
//!   datetime, a bare date or a bare time is an error) or an integer of unix seconds. Fractional
//!   seconds round up.
//! - An entry applies while `now <= expires`; after that it is skipped, never removed. Set
//!   `expires` no earlier than the revoked tokens' `exp` plus the provider's leeway.
//! - `issued_before = T` revokes tokens with `iat < T` and tokens without `iat`.
//! - Several `[[subject]]` entries for one issuer + subject: the strictest live one wins.
//! - Unknown keys are errors; duplicates are fine; an empty file is an empty list.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::value::{Datetime, Offset};

use crate::auth::denylist::Denylist;
use crate::config::located::{ConfigError, ConfigErrors, Locator};

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Denylist, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read denylist file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Parses denylist text; `path` only names the file in errors. Reports every semantic error.
pub fn parse(path: &Path, text: &str) -> Result<Denylist, ConfigErrors> {
    let locator = Locator { file: path, text };
    let file: DenylistFile = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        ConfigErrors(vec![match e.span() {
            Some(span) => locator.error_at(span.start, message),
            None => locator.error_unplaced(message),
        }])
    })?;
    let mut builder = Builder {
        locator: &locator,
        errors: Vec::new(),
        list: Denylist::empty(),
    };
    for entry in &file.token {
        builder.token(entry);
    }
    for entry in &file.sid {
        builder.session(entry);
    }
    for entry in &file.subject {
        builder.subject(entry);
    }
    for entry in &file.key {
        builder.key(entry);
    }
    if builder.errors.is_empty() {
        Ok(builder.list)
    } else {
        Err(ConfigErrors(builder.errors))
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenylistFile {
    #[serde(default)]
    token: Vec<TokenSection>,
    #[serde(default)]
    sid: Vec<SessionSection>,
    #[serde(default)]
    subject: Vec<SubjectSection>,
    #[serde(default)]
    key: Vec<KeySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    issuer: Spanned<String>,
    jti: Spanned<String>,
    expires: Option<Spanned<toml::Value>>,
    // Accepted so operators can say why; read by humans only.
    #[allow(dead_code)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSection {
    issuer: Spanned<String>,
    sid: Spanned<String>,
    expires: Option<Spanned<toml::Value>>,
    #[allow(dead_code)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectSection {
    issuer: Spanned<String>,
    subject: Spanned<String>,
    issued_before: Option<Spanned<toml::Value>>,
    expires: Option<Spanned<toml::Value>>,
    #[allow(dead_code)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    provider: Spanned<String>,
    kid: Spanned<String>,
    expires: Option<Spanned<toml::Value>>,
    #[allow(dead_code)]
    reason: Option<String>,
}

struct Builder<'a> {
    locator: &'a Locator<'a>,
    errors: Vec<ConfigError>,
    list: Denylist,
}

impl Builder<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.locator.error_at(span.start, message));
    }

    fn name(&mut self, value: &Spanned<String>, key: &str) -> Option<Box<str>> {
        if value.get_ref().is_empty() {
            self.error(value.span(), format!("`{key}` must not be empty"));
            None
        } else {
            Some(value.get_ref().as_str().into())
        }
    }

    /// `Err` when the value was present but wrong (already reported).
    fn time(&mut self, value: Option<&Spanned<toml::Value>>, key: &str) -> Result<Option<i64>, ()> {
        let Some(value) = value else { return Ok(None) };
        let result = match value.get_ref() {
            toml::Value::Integer(secs) => Ok(*secs),
            toml::Value::Datetime(dt) => unix_seconds(dt),
            other => Err(format!(
                "expected an offset datetime (unquoted, e.g. 2026-12-01T00:00:00Z) or integer unix \
                 seconds, found {}",
                other.type_str()
            )),
        };
        match result {
            Ok(secs) => Ok(Some(secs)),
            Err(message) => {
                self.error(value.span(), format!("`{key}`: {message}"));
                Err(())
            }
        }
    }

    fn token(&mut self, entry: &TokenSection) {
        let issuer = self.name(&entry.issuer, "issuer");
        let jti = self.name(&entry.jti, "jti");
        let expires = self.time(entry.expires.as_ref(), "expires");
        if let (Some(issuer), Some(jti), Ok(expires)) = (issuer, jti, expires) {
            self.list.revoke_token(issuer, jti, expires);
        }
    }

    fn session(&mut self, entry: &SessionSection) {
        let issuer = self.name(&entry.issuer, "issuer");
        let sid = self.name(&entry.sid, "sid");
        let expires = self.time(entry.expires.as_ref(), "expires");
        if let (Some(issuer), Some(sid), Ok(expires)) = (issuer, sid, expires) {
            self.list.revoke_session(issuer, sid, expires);
        }
    }

    fn key(&mut self, entry: &KeySection) {
        let provider = self.name(&entry.provider, "provider");
        let kid = self.name(&entry.kid, "kid");
        let expires = self.time(entry.expires.as_ref(), "expires");
        if let (Some(provider), Some(kid), Ok(expires)) = (provider, kid, expires) {
            self.list.revoke_key(provider, kid, expires);
        }
    }

    fn subject(&mut self, entry: &SubjectSection) {
        let issuer = self.name(&entry.issuer, "issuer");
        let subject = self.name(&entry.subject, "subject");
        let issued_before = self.time(entry.issued_before.as_ref(), "issued_before");
        let expires = self.time(entry.expires.as_ref(), "expires");
        let (Some(issuer), Some(subject), Ok(issued_before), Ok(expires)) =
            (issuer, subject, issued_before, expires)
        else {
            return;
        };
        self.list
            .revoke_subject(issuer, subject, issued_before, expires);
    }
}

/// Unix seconds of an offset datetime. Fractional seconds round up: for `issued_before` that
/// revokes exactly the integer `iat`s below the instant, for `expires` it never shortens an entry.
pub fn unix_seconds(dt: &Datetime) -> Result<i64, String> {
    let (Some(date), Some(time)) = (dt.date, dt.time) else {
        return Err(format!(
            "`{dt}` is not a full datetime; write a date, a time and an offset, e.g. \
             2026-12-01T00:00:00Z"
        ));
    };
    let offset_minutes = match dt.offset {
        Some(Offset::Z) => 0,
        Some(Offset::Custom { minutes }) => i64::from(minutes),
        None => {
            return Err(format!(
                "`{dt}` has no offset; add `Z` or `+hh:mm`, since a local time is ambiguous"
            ))
        }
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let local = days * 86_400
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        + i64::from(time.nanosecond > 0);
    Ok(local - offset_minutes * 60)
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------------------------
// The live list.

/// What a stat of the file showed; a change in either field triggers a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The live list, replaced whole on reload; a bad file keeps the previous list in force.
#[derive(Debug)]
pub struct DenylistWatch {
    path: PathBuf,
    interval: Duration,
    list: ArcSwap<Denylist>,
    /// What the file looked like at the last load attempt, good or bad, so a bad file is
    /// reported once rather than on every poll.
    seen: Mutex<Option<Stamp>>,
    /// A change seen at the last poll but not loaded yet: a file is loaded only once it has
    /// stayed the same for a whole interval, so a poll that lands between an editor's truncate
    /// and its write never swaps in an empty or half-written list.
    settling: Mutex<Option<Option<Stamp>>>,
}

impl DenylistWatch {
    /// `initial` should have just been loaded from `path`: the file's current metadata is taken
    /// as what `initial` reflects.
    pub fn new(path: PathBuf, interval: Duration, initial: Denylist) -> Arc<Self> {
        let seen = Mutex::new(stamp(&path));
        Arc::new(Self {
            path,
            interval,
            list: ArcSwap::from_pointee(initial),
            seen,
            settling: Mutex::new(None),
        })
    }

    /// Whether this watch reads `path` every `interval`, so a reload can keep it.
    pub fn watches(&self, path: &Path, interval: Duration) -> bool {
        self.path == path && self.interval == interval
    }

    /// The list in force; a lock-free load, cheap enough for every request.
    pub fn current(&self) -> arc_swap::Guard<Arc<Denylist>> {
        self.list.load()
    }

    /// Re-reads the file now. On error the previous list stays in force and the errors are
    /// returned for the caller to report; this function does not log.
    pub fn reload_now(&self) -> Result<usize, ConfigErrors> {
        // Stat before reading: a write landing between the two then shows up as a change on the
        // next poll instead of being marked as already seen.
        let before = stamp(&self.path);
        let result = load(&self.path);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = before;
        let list = result?;
        let len = list.len();
        self.list.store(Arc::new(list));
        Ok(len)
    }

    /// Reloads once the file changed since the last attempt and then stayed unchanged for one
    /// poll interval; `None` while nothing is to be loaded.
    fn poll(&self) -> Option<Result<usize, ConfigErrors>> {
        let now = stamp(&self.path);
        let mut settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            *settling = None;
            return None;
        }
        if *settling != Some(now) {
            *settling = Some(now);
            return None;
        }
        *settling = None;
        let result = load(&self.path);
        let after = stamp(&self.path);
        if after != now {
            // Written while it was read: what was read may be half a file.
            *settling = Some(after);
            return None;
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Some(result.map(|list| {
            let len = list.len();
            self.list.store(Arc::new(list));
            len
        }))
    }

    /// Polls the file's metadata every `interval`, re-stating by path so atomic renames are seen,
    /// and swaps in the new list when it loads. The task holds only a `Weak`, so it ends by itself
    /// once every other owner of the watch has dropped it.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        // tokio::time::interval panics on zero.
        let interval = self.interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; the initial list is current
            loop {
                ticker.tick().await;
                let Some(watch) = weak.upgrade() else { return };
                let path = watch.path.clone();
                // stat and read are blocking file I/O; keep them off the async workers.
                let outcome = tokio::task::spawn_blocking(move || watch.poll()).await;
                match outcome {
                    Ok(None) => {}
                    Ok(Some(Ok(entries))) => {
                        tracing::info!(path = %path.display(), entries, "denylist reloaded");
                    }
                    Ok(Some(Err(errors))) => {
                        tracing::error!(
                            path = %path.display(),
                            errors = %errors,
                            "denylist file rejected; the previous list stays in force"
                        );
                    }
                    Err(join_error) => {
                        tracing::error!(
                            path = %path.display(),
                            error = %join_error,
                            "denylist reload task failed; the previous list stays in force"
                        );
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::denylist::Revocation;
    use crate::auth::jwt::VerifiedToken;
    use serde_json::Map;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ISS: &str = "https://idp.example.com/";
    const NOW: i64 = 1_780_000_000;

    fn token() -> VerifiedToken {
        VerifiedToken {
            provider: Arc::from("main"),
            issuer: Arc::from(ISS),
            subject: Some("user-123".to_string()),
            jti: Some("jti-1".to_string()),
            sid: Some("sid-1".into()),
            kid: Some("k1".to_string()),
            issued_at: Some(NOW - 60),
            expires_at: Some(NOW + 3600),
            not_before: None,
            claims: Arc::new(Map::new()),
        }
    }

    fn parse(text: &str) -> Denylist {
        super::parse(Path::new("deny.toml"), text).expect("valid denylist")
    }

    fn parse_err(text: &str) -> Vec<ConfigError> {
        super::parse(Path::new("deny.toml"), text)
            .expect_err("invalid denylist")
            .0
    }

    #[test]
    fn empty_file_is_empty_list() {
        let list = parse("");
        assert!(list.is_empty());
        assert_eq!(list.check(&token(), NOW), None);
        assert!(Denylist::empty().is_empty());
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(Revocation::Token.reason(), "revoked_token");
        assert_eq!(Revocation::Session.reason(), "revoked_sid");
        assert_eq!(Revocation::Session.kind(), "sid");
        assert_eq!(Revocation::Subject.reason(), "revoked_subject");
        assert_eq!(Revocation::SubjectIssuedBefore.reason(), "revoked_session");
        assert_eq!(Revocation::Key.reason(), "revoked_key");
    }

    #[test]
    fn token_entry_hits_and_misses() {
        let list = parse(&format!("[[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\n"));
        assert_eq!(list.len(), 1);
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Token));

        let other_jti = VerifiedToken {
            jti: Some("jti-2".into()),
            ..token()
        };
        assert_eq!(list.check(&other_jti, NOW), None);
        let no_jti = VerifiedToken {
            jti: None,
            ..token()
        };
        assert_eq!(list.check(&no_jti, NOW), None);
        let other_issuer = VerifiedToken {
            issuer: Arc::from("https://other.example.com/"),
            ..token()
        };
        assert_eq!(list.check(&other_issuer, NOW), None);
        // Issuers are compared exactly.
        let no_slash = VerifiedToken {
            issuer: Arc::from("https://idp.example.com"),
            ..token()
        };
        assert_eq!(list.check(&no_slash, NOW), None);
    }

    #[test]
    fn subject_entry_hits_and_misses() {
        let list = parse(&format!(
            "[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nreason = \"fired\"\n"
        ));
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Subject));
        let no_iat = VerifiedToken {
            issued_at: None,
            ..token()
        };
        assert_eq!(list.check(&no_iat, NOW), Some(Revocation::Subject));
        let other_subject = VerifiedToken {
            subject: Some("user-456".into()),
            ..token()
        };
        assert_eq!(list.check(&other_subject, NOW), None);
        let no_subject = VerifiedToken {
            subject: None,
            ..token()
        };
        assert_eq!(list.check(&no_subject, NOW), None);
        let other_issuer = VerifiedToken {
            issuer: Arc::from("https://other.example.com/"),
            ..token()
        };
        assert_eq!(list.check(&other_issuer, NOW), None);
    }

    #[test]
    fn sid_entry_hits_and_misses() {
        let list = parse(&format!(
            "[[sid]]\nissuer = \"{ISS}\"\nsid = \"sid-1\"\nreason = \"back-channel logout\"\n"
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list.counts()[1], ("sid", 1));
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Session));
        // Whatever else the token carries: every token of the session.
        let bare = VerifiedToken {
            subject: None,
            jti: None,
            kid: None,
            issued_at: None,
            ..token()
        };
        assert_eq!(list.check(&bare, NOW), Some(Revocation::Session));
        let other_sid = VerifiedToken {
            sid: Some("sid-2".into()),
            ..token()
        };
        assert_eq!(list.check(&other_sid, NOW), None);
        let no_sid = VerifiedToken {
            sid: None,
            ..token()
        };
        assert_eq!(list.check(&no_sid, NOW), None);
        // A sid is only unique within its issuer, and issuers are compared exactly.
        for issuer in ["https://other.example.com/", "https://idp.example.com"] {
            let elsewhere = VerifiedToken {
                issuer: Arc::from(issuer),
                ..token()
            };
            assert_eq!(list.check(&elsewhere, NOW), None, "{issuer}");
        }
    }

    #[test]
    fn key_entry_hits_and_misses() {
        let list = parse("[[key]]\nprovider = \"main\"\nkid = \"k1\"\n");
        assert_eq!(list.check(&token(), NOW), Some(Revocation::Key));
        let other_provider = VerifiedToken {
            provider: Arc::from("partner"),
            ..token()
        };
        assert_eq!(list.check(&other_provider, NOW), None);
        let other_kid = VerifiedToken {
            kid: Some("k2".into()),
            ..token()
        };
        assert_eq!(list.check(&other_kid, NOW), None);
        let no_kid = VerifiedToken {
            kid: None,
            ..token()
        };
        assert_eq!(list.check(&no_kid, NOW), None);
    }

    #[test]
    fn issued_before_boundary() {
        // 2026-01-01T00:00:00Z
        let cutoff = 1_767_225_600;
        let list = parse(&format!(
            "[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\n\
             issued_before = 2026-01-01T00:00:00Z\n"
        ));
        let at = |iat: Option<i64>| VerifiedToken {
            issued_at: iat,
            ..token()
        };
        assert_eq!(list.check(&at(Some(cutoff)), NOW), None);
        assert_eq!(list.check(&at(Some(cutoff + 1)), NOW), None);
        assert_eq!(
            list.check(&at(Some(cutoff - 1)), NOW),
            Some(Revocation::SubjectIssuedBefore)
        );
        assert_eq!(
            list.check(&at(None), NOW),
            Some(Revocation::SubjectIssuedBefore)
        );
    }

    #[test]
    fn strictest_subject_entry_wins() {
        let t = 1_767_225_600;
        let list = parse(&format!(
            "[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nissued_before = {t}\n\
             [[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nissued_before = {}\n",
            t + 100
        ));
        assert_eq!(list.len(), 2);
        let at = |iat: i64| VerifiedToken {
            issued_at: Some(iat),
            ..token()
        };
        assert_eq!(
            list.check(&at(t + 50), NOW),
            Some(Revocation::SubjectIssuedBefore)
        );
        assert_eq!(list.check(&at(t + 100), NOW), None);

        let with_unconditional = parse(&format!(
            "[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nissued_before = {t}\n\
             [[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\n"
        ));
        assert_eq!(
            with_unconditional.check(&at(t - 1), NOW),
            Some(Revocation::Subject)
        );
        assert_eq!(
            with_unconditional.check(&at(t + 1), NOW),
            Some(Revocation::Subject)
        );

        // An expired unconditional entry must not hide a live issued_before one.
        let expired_unconditional = parse(&format!(
            "[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nexpires = {}\n\
             [[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\nissued_before = {t}\n",
            NOW - 1
        ));
        assert_eq!(
            expired_unconditional.check(&at(t - 1), NOW),
            Some(Revocation::SubjectIssuedBefore)
        );
        assert_eq!(expired_unconditional.check(&at(t), NOW), None);
    }

    #[test]
    fn expiry_is_honoured() {
        for kind in [
            format!("[[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\n"),
            format!("[[sid]]\nissuer = \"{ISS}\"\nsid = \"sid-1\"\n"),
            format!("[[subject]]\nissuer = \"{ISS}\"\nsubject = \"user-123\"\n"),
            "[[key]]\nprovider = \"main\"\nkid = \"k1\"\n".to_string(),
        ] {
            let expired = parse(&format!("{kind}expires = {}\n", NOW - 1));
            assert_eq!(expired.check(&token(), NOW), None, "{kind}");
            assert_eq!(expired.len(), 1, "an expired entry is kept, only skipped");
            let until_now = parse(&format!("{kind}expires = {NOW}\n"));
            assert!(until_now.check(&token(), NOW).is_some(), "{kind}");
            let future = parse(&format!("{kind}expires = {}\n", NOW + 1));
            assert!(future.check(&token(), NOW).is_some(), "{kind}");
            assert_eq!(future.check(&token(), NOW + 2), None, "{kind}");
        }
    }

    #[test]
    fn datetime_and_integer_expires_agree() {
        let t = 1_767_225_600; // 2026-01-01T00:00:00Z
        for expires in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00+01:00",
            "2025-12-31T19:30:00-04:30",
            "2026-01-01 00:00:00Z",
            "1767225600",
        ] {
            let list = parse(&format!(
                "[[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\nexpires = {expires}\n"
            ));
            assert_eq!(
                list.check(&token(), t),
                Some(Revocation::Token),
                "{expires}"
            );
            assert_eq!(list.check(&token(), t + 1), None, "{expires}");
        }
    }

    #[test]
    fn civil_conversion() {
        let dt = |s: &str| unix_seconds(&s.parse::<Datetime>().unwrap()).unwrap();
        assert_eq!(dt("1970-01-01T00:00:00Z"), 0);
        assert_eq!(dt("1969-12-31T23:59:59Z"), -1);
        assert_eq!(dt("2000-02-29T12:00:00Z"), 951_825_600);
        assert_eq!(dt("2026-11-24T10:00:00Z"), 1_795_514_400);
        assert_eq!(dt("2026-01-01T01:00:00+01:00"), dt("2026-01-01T00:00:00Z"));
        // Fractions round up.
        assert_eq!(dt("1970-01-01T00:00:00.5Z"), 1);
    }

    #[test]
    fn duplicates_merge_to_longest_expiry() {
        let list = parse(&format!(
            "[[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\nexpires = {}\n\
             [[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\nexpires = {}\n\
             [[token]]\nissuer = \"{ISS}\"\njti = \"jti-1\"\nexpires = {}\n",
            NOW - 10,
            NOW + 10,
            NOW
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list.check(&token(), NOW + 5), Some(Revocation::Token));
    }

    #[test]
    fn bad_files_are_located() {
        let unknown = parse_err("[[token]]\nissuer = \"x\"\njti = \"y\"\nexpiry = 5\n");
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].line, 4, "{unknown:?}");
        assert!(unknown[0].message.contains("expiry"), "{unknown:?}");

        let unknown_table = parse_err("[[tokens]]\nissuer = \"x\"\n");
        assert_eq!(unknown_table[0].line, 1, "{unknown_table:?}");

        let local = parse_err(
            "[[subject]]\nissuer = \"x\"\nsubject = \"y\"\nissued_before = 2026-01-01T00:00:00\n",
        );
        assert_eq!(local.len(), 1);
        assert_eq!((local[0].line, local[0].column), (4, 17), "{local:?}");
        assert!(local[0].message.contains("offset"), "{local:?}");

        let date_only =
            parse_err("[[key]]\nprovider = \"main\"\nkid = \"k\"\nexpires = 2026-01-01\n");
        assert_eq!(date_only[0].line, 4, "{date_only:?}");

        let quoted = parse_err(
            "[[key]]\nprovider = \"main\"\nkid = \"k\"\nexpires = \"2026-01-01T00:00:00Z\"\n",
        );
        assert_eq!(quoted[0].line, 4, "{quoted:?}");

        let empty_jti = parse_err("[[token]]\nissuer = \"x\"\njti = \"\"\n");
        assert_eq!(empty_jti.len(), 1);
        assert_eq!((empty_jti[0].line, empty_jti[0].column), (3, 7));
        assert_eq!(empty_jti[0].file, Path::new("deny.toml"));

        let bad_toml = parse_err("[[token]]\nissuer = \"x\"\njti = \n");
        assert_eq!(bad_toml[0].line, 3, "{bad_toml:?}");

        let missing = parse_err("[[token]]\nissuer = \"x\"\n");
        assert!(missing[0].message.contains("jti"), "{missing:?}");
    }

    #[test]
    fn bad_sid_entries_are_located() {
        let empty = parse_err("[[sid]]\nissuer = \"x\"\nsid = \"\"\n");
        assert_eq!(empty.len(), 1, "{empty:?}");
        assert_eq!((empty[0].line, empty[0].column), (3, 7), "{empty:?}");
        assert!(
            empty[0].message.contains("`sid` must not be empty"),
            "{empty:?}"
        );
        assert_eq!(empty[0].file, Path::new("deny.toml"));

        let empty_issuer = parse_err("[[sid]]\nissuer = \"\"\nsid = \"s\"\n");
        assert_eq!((empty_issuer[0].line, empty_issuer[0].column), (2, 10));

        let local =
            parse_err("[[sid]]\nissuer = \"x\"\nsid = \"s\"\nexpires = 2026-01-01T00:00:00\n");
        assert_eq!((local[0].line, local[0].column), (4, 11), "{local:?}");
        assert!(local[0].message.contains("offset"), "{local:?}");

        // A subject's field in a sid entry is a typo, not something to ignore.
        let misplaced =
            parse_err("[[sid]]\nissuer = \"x\"\nsid = \"s\"\nissued_before = 1700000000\n");
        assert_eq!(misplaced[0].line, 4, "{misplaced:?}");
        assert!(
            misplaced[0].message.contains("issued_before"),
            "{misplaced:?}"
        );

        let not_a_string = parse_err("[[sid]]\nissuer = \"x\"\nsid = 42\n");
        assert_eq!(not_a_string[0].line, 3, "{not_a_string:?}");

        let missing = parse_err("[[sid]]\nissuer = \"x\"\n");
        assert!(missing[0].message.contains("sid"), "{missing:?}");

        let misspelt = parse_err("[[sids]]\nissuer = \"x\"\nsid = \"s\"\n");
        assert_eq!(misspelt[0].line, 1, "{misspelt:?}");
    }

    #[test]
    fn all_semantic_errors_are_collected() {
        let errors = parse_err(
            "[[token]]\nissuer = \"\"\njti = \"\"\n\
             [[key]]\nprovider = \"main\"\nkid = \"\"\nexpires = 2026-01-01T00:00:00\n",
        );
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 6, 7], "{errors:?}");
    }

    #[test]
    fn load_reports_unreadable_file() {
        let dir = temp_dir("unreadable");
        let path = dir.join("missing.toml");
        let errors = load(&path).expect_err("missing file").0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 0);
        assert_eq!(errors[0].file, path);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn temp_dir(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "authgate-denylist-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            name
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    /// Writes by rename, as editors and config tools do, so the path gets a new inode.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, path).expect("rename into place");
    }

    const ONE: &str = "[[token]]\nissuer = \"x\"\njti = \"a\"\n";
    const TWO: &str =
        "[[token]]\nissuer = \"x\"\njti = \"a\"\n[[key]]\nprovider = \"p\"\nkid = \"k\"\n";

    #[test]
    fn reload_now_keeps_old_list_on_error() {
        let dir = temp_dir("reload");
        let path = dir.join("deny.toml");
        replace(&path, ONE);
        let watch = DenylistWatch::new(
            path.clone(),
            Duration::from_secs(1),
            load(&path).expect("load"),
        );
        assert_eq!(watch.current().len(), 1);

        replace(&path, "[[token]]\nissuer = \"x\"\njti = \"\"\n");
        let errors = watch.reload_now().expect_err("bad file").0;
        assert_eq!(errors[0].line, 3);
        assert_eq!(watch.current().len(), 1);

        std::fs::remove_file(&path).expect("remove");
        assert!(watch.reload_now().is_err());
        assert_eq!(watch.current().len(), 1);

        replace(&path, TWO);
        assert_eq!(watch.reload_now().expect("good file"), 2);
        assert_eq!(watch.current().len(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    async fn wait_for_len(watch: &DenylistWatch, len: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if watch.current().len() == len {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn watcher_picks_up_rewritten_file() {
        let dir = temp_dir("watch");
        let path = dir.join("deny.toml");
        replace(&path, ONE);
        let watch = DenylistWatch::new(
            path.clone(),
            Duration::from_millis(50),
            load(&path).expect("load"),
        );
        let handle = watch.spawn_watcher();

        replace(&path, TWO);
        assert!(wait_for_len(&watch, 2).await, "new file not picked up");

        // A bad file is logged and ignored; the next good one is picked up again.
        replace(&path, "[[token]]\nissuer = \"x\"\njti = \"\"\n# padding\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(watch.current().len(), 2);
        replace(&path, ONE);
        assert!(wait_for_len(&watch, 1).await, "recovery not picked up");

        // The watcher ends once nobody else holds the watch.
        drop(watch);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("watcher stops after the watch is dropped")
            .expect("watcher task did not panic");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_file_caught_mid_write_is_never_loaded() {
        let dir =
            std::env::temp_dir().join(format!("authgate-denylist-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deny.toml");
        let one = format!("[[token]]\nissuer = \"{ISS}\"\njti = \"a\"\n");
        std::fs::write(&path, &one).unwrap();
        let watch = DenylistWatch::new(path.clone(), Duration::from_secs(1), load(&path).unwrap());
        // An editor truncated the file; the poll sees it but waits for it to settle.
        std::fs::write(&path, "").unwrap();
        assert!(watch.poll().is_none());
        assert_eq!(
            watch.current().len(),
            1,
            "a truncated file replaced the list"
        );
        // The write lands before the next poll: still settling, then loaded once stable.
        let two = format!("{one}[[token]]\nissuer = \"{ISS}\"\njti = \"b\"\n");
        std::fs::write(&path, &two).unwrap();
        assert!(watch.poll().is_none());
        assert_eq!(watch.current().len(), 1);
        assert_eq!(watch.poll().map(|r| r.ok()), Some(Some(2)));
        assert!(watch.poll().is_none(), "an unchanged file is not reloaded");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
