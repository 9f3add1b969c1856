//! The short-lived login-state cookie that binds an authorization request (`state`, `nonce`,
//! PKCE verifier, return target) to the browser that started it, so a callback is only
//! accepted from that browser and within [`LOGIN_STATE_TTL`]. Each attempt gets its own cookie,
//! named after its `state`, so logins started in several tabs do not overwrite each other.
//! This step does not decide whether a `state` was already used (the caller keeps a used-state
//! set keyed by [`state_digest`]), never validates the return target (the caller passes one
//! [`super::redirect`] accepted), and never lets the state, nonce or verifier reach `Debug`,
//! an error or a log.
//!
//! The cookie is `{prefix}-{first 12 base64url chars of SHA-256(state)}` where the prefix is
//! the name of the `spec_base` cookie (e.g. `__Host-authgate-login`), sealed with the session
//! keys for exactly that name, `Max-Age` [`LOGIN_STATE_TTL`]. `spec_base` must not be
//! `SameSite=Strict`: the callback is a navigation from the IdP's site, and a Strict cookie is
//! not sent on it (`Lax` suits a query-mode callback, `None` a `form_post` one).
//!
//! Concurrent attempts are capped at [`MAX_CONCURRENT_LOGINS`]: when a new login starts on a
//! request that already carries that many login-state cookies, [`crowded_out`] expires them
//! all (their names say nothing about age, and that many unfinished logins is a redirect loop
//! or abandoned tabs, not a user); tabs still mid-login restart with `login_state_missing`.
//! A callback only ever looks up the one cookie its `state` names, so the count costs it
//! nothing and is not refused there.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::cookies::{self, CookieReadError, CookieSpec, CookieSpecError, CookieWriteError};
use super::pkce::{random_token, Pkce, RandomUnavailable};
use super::sealed::{OpenError, SealError, SessionKeys};
use crate::auth::credential::{cookie_pairs, percent_decode, remove_cookies_where};

/// How long a login may take from redirect to callback; also the cookie's `Max-Age`.
pub const LOGIN_STATE_TTL: Duration = Duration::from_secs(600);
/// Login-state cookies a browser may hold at once; see the module doc.
/// Each is under 1 KB (the return target is capped at 512 bytes), so together they stay far
/// below the 8 KB header limits of common proxies.
pub const MAX_CONCURRENT_LOGINS: usize = 4;
/// A login state dated this far ahead of the clock is refused: replicas' clocks differ a little,
/// a forged date a lot.
const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// Characters of the state's digest in the cookie name: 72 bits, so concurrent attempts never
/// share a cookie.
const NAME_DIGEST_CHARS: usize = 12;
/// A `state` parameter longer than this is no state the gateway issued (it issues 43 characters).
const MAX_STATE_PARAM: usize = 512;
const RANDOM_BYTES: usize = 32;

/// What the callback needs from the request that started a login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    /// The name of the login client (from config) that started this attempt.
    pub login: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Shows only the login client and the time; the rest is secret or may carry secrets (a
/// return target's query).
impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("state", &"<redacted>")
            .field("nonce", &"<redacted>")
            .field("pkce_verifier", &"<redacted>")
            .field("return_to", &"<redacted>")
            .field("login", &self.login)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Why a login state could not be sealed into a cookie: the gateway's fault, never the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealCookieError {
    /// The prefix with the digest suffix is no valid cookie name (too long).
    Name(CookieSpecError),
    Seal(SealError),
    /// The sealed state would not fit one cookie (a very long login client name).
    TooLarge,
}

impl SealCookieError {
    pub fn reason(&self) -> &'static str {
        match self {
            SealCookieError::Name(_) => "login_state_cookie_name",
            SealCookieError::Seal(err) => err.reason(),
            SealCookieError::TooLarge => "login_state_too_large",
        }
    }
}

impl std::fmt::Display for SealCookieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealCookieError::Name(err) => write!(f, "login-state cookie: {err}"),
            SealCookieError::Seal(err) => write!(f, "login-state cookie: {err}"),
            SealCookieError::TooLarge => write!(f, "login state does not fit one cookie"),
        }
    }
}

impl std::error::Error for SealCookieError {}

/// Why a callback's `state` found no usable login state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStateError {
    /// No cookie for this state: another browser, an expired cookie, or a replay after use.
    Missing,
    /// The cookie's state is not the parameter, or the parameter is no state at all.
    Mismatch,
    Expired,
    /// The cookie set could not be read without guessing (duplicates, bad chunks).
    Cookie(CookieReadError),
    /// The cookie did not open: tampered, or sealed under a retired key.
    Unreadable(OpenError),
    /// It opened but is not a login state this code wrote.
    Corrupt,
    /// Dated in the future beyond clock skew.
    FromTheFuture,
}

impl LoginStateError {
    pub fn reason(&self) -> &'static str {
        match self {
            LoginStateError::Missing => "login_state_missing",
            LoginStateError::Mismatch => "login_state_mismatch",
            LoginStateError::Expired => "login_state_expired",
            LoginStateError::Cookie(_)
            | LoginStateError::Unreadable(_)
            | LoginStateError::Corrupt
            | LoginStateError::FromTheFuture => "login_state_invalid",
        }
    }
}

impl std::fmt::Display for LoginStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginStateError::Missing => write!(f, "no login-state cookie for this state"),
            LoginStateError::Mismatch => write!(f, "the login state does not match the callback"),
            LoginStateError::Expired => write!(f, "the login took too long"),
            LoginStateError::Cookie(err) => write!(f, "login-state cookie: {err}"),
            LoginStateError::Unreadable(err) => write!(f, "login-state cookie: {err}"),
            LoginStateError::Corrupt => write!(f, "login-state cookie holds no login state"),
            LoginStateError::FromTheFuture => write!(f, "login state is dated in the future"),
        }
    }
}

impl std::error::Error for LoginStateError {}

/// Base64url SHA-256 of a `state`: the key of the caller's used-state set, and the source of the
/// cookie name. Storing the digest keeps live states out of that set.
pub fn state_digest(state: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, state.as_bytes()))
}

/// The login-state cookie name for `state` under `prefix`.
pub fn cookie_name(prefix: &str, state: &str) -> String {
    let digest = state_digest(state);
    format!("{prefix}-{}", &digest[..NAME_DIGEST_CHARS])
}

impl LoginState {
    /// A new attempt for login client `login`, returning to `return_to`, at `now` (Unix seconds).
    pub fn new(login: &str, return_to: &str, now: i64) -> Result<LoginState, RandomUnavailable> {
        Ok(LoginState {
            state: random_token(RANDOM_BYTES)?,
            nonce: random_token(RANDOM_BYTES)?,
            pkce_verifier: Pkce::generate()?.verifier,
            return_to: return_to.to_string(),
            login: login.to_string(),
            created_at: now,
        })
    }

    /// The PKCE pair, for `code_challenge` in the authorization URL.
    pub fn pkce(&self) -> Pkce {
        Pkce::from_verifier(self.pkce_verifier.clone())
    }

    pub fn state_digest(&self) -> String {
        state_digest(&self.state)
    }

    /// The cookie's name and its `Set-Cookie` value. `spec_base` gives the name prefix and the
    /// attributes; `Max-Age` is always [`LOGIN_STATE_TTL`].
    pub fn seal_cookie(
        &self,
        keys: &SessionKeys,
        spec_base: &CookieSpec,
    ) -> Result<(String, HeaderValue), SealCookieError> {
        let name = cookie_name(spec_base.name(), &self.state);
        let spec = spec_base
            .renamed(&name)
            .and_then(|spec| spec.with_max_age(Some(LOGIN_STATE_TTL)))
            .map_err(SealCookieError::Name)?;
        // Serialising plain strings and an integer cannot fail; were it to, nothing is sealed.
        let json = serde_json::to_vec(self).map_err(|_| SealCookieError::TooLarge)?;
        let sealed = keys.seal(&name, &json).map_err(SealCookieError::Seal)?;
        let mut set = cookies::set_cookies(&spec, &sealed, 0).map_err(|err| match err {
            CookieWriteError::TooLarge { .. } | CookieWriteError::InvalidValue => {
                SealCookieError::TooLarge
            }
        })?;
        match (set.pop(), set.is_empty()) {
            (Some(value), true) => Ok((name, value)),
            _ => Err(SealCookieError::TooLarge),
        }
    }
}

/// The login state the callback's `state` parameter names, if this browser holds it, it opens,
/// matches and is younger than [`LOGIN_STATE_TTL`] at `now` (Unix seconds).
pub fn open_for_state(
    headers: &HeaderMap,
    keys: &SessionKeys,
    spec_base: &CookieSpec,
    state_param: &str,
    now: i64,
) -> Result<LoginState, LoginStateError> {
    if state_param.is_empty() || state_param.len() > MAX_STATE_PARAM {
        return Err(LoginStateError::Mismatch);
    }
    let name = cookie_name(spec_base.name(), state_param);
    let sealed = cookies::read(headers, &name)
        .map_err(LoginStateError::Cookie)?
        .ok_or(LoginStateError::Missing)?;
    let plain = keys
        .open(&name, &sealed)
        .map_err(LoginStateError::Unreadable)?;
    let login: LoginState = serde_json::from_slice(&plain).map_err(|_| LoginStateError::Corrupt)?;
    // Only a 72-bit name collision or a forgery with our key gets here with another state.
    verify_slices_are_equal(login.state.as_bytes(), state_param.as_bytes())
        .map_err(|_| LoginStateError::Mismatch)?;
    let age = now.saturating_sub(login.created_at);
    if age < -MAX_CLOCK_SKEW_SECS {
        return Err(LoginStateError::FromTheFuture);
    }
    let ttl = i64::try_from(LOGIN_STATE_TTL.as_secs()).unwrap_or(i64::MAX);
    if age > ttl {
        return Err(LoginStateError::Expired);
    }
    Ok(login)
}

/// The `Set-Cookie` that deletes the login-state cookie for `state` (after the callback, used or
/// refused). Empty only if the name cannot be a cookie, in which case none was ever set.
pub fn clear_cookie(spec_base: &CookieSpec, state: &str) -> Vec<HeaderValue> {
    spec_base
        .renamed(&cookie_name(spec_base.name(), state))
        .map(|spec| cookies::clear_cookies(&spec, 1))
        .unwrap_or_default()
}

/// Whether `cookie` is a login-state cookie name exactly as [`cookie_name`] writes it (only
/// those can be expired: a browser deletes by exact name).
fn is_login_state_name<'a>(cookie: &'a str, prefix: &str) -> Option<&'a str> {
    let suffix = cookie.strip_prefix(prefix)?.strip_prefix('-')?;
    let valid = suffix.len() == NAME_DIGEST_CHARS
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    valid.then_some(cookie)
}

/// `Set-Cookie` values expiring every login-state cookie the request carries once it carries
/// [`MAX_CONCURRENT_LOGINS`] or more; empty otherwise. Sent with the new attempt's cookie.
pub fn crowded_out(headers: &HeaderMap, spec_base: &CookieSpec) -> Vec<HeaderValue> {
    let names: BTreeSet<&str> = cookie_pairs(headers)
        .filter_map(|(cookie, _)| is_login_state_name(cookie, spec_base.name()))
        .collect();
    if names.len() < MAX_CONCURRENT_LOGINS {
        return Vec::new();
    }
    names
        .into_iter()
        .filter_map(|name| spec_base.renamed(name).ok())
        .flat_map(|spec| cookies::clear_cookies(&spec, 1))
        .collect()
}

/// Removes every login-state cookie, in any spelling, from a request about to go upstream: they
/// are the gateway's, and nothing upstream should see or depend on them.
pub fn remove_from_request(headers: &mut HeaderMap, spec_base: &CookieSpec) {
    let prefix = format!("{}-", spec_base.name());
    remove_cookies_where(headers, |cookie| {
        let decoded = percent_decode(cookie);
        decoded
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::login::cookies::{CookieOptions, SameSite, MAX_COOKIE_BYTES};
    use crate::login::redirect::MAX_RETURN_LEN;
    use http::header;

    const NOW: i64 = 1_700_000_000;

    fn keys() -> SessionKeys {
        SessionKeys::parse(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap()
    }

    fn base() -> CookieSpec {
        CookieSpec::new("__Host-authgate-login", CookieOptions::default()).unwrap()
    }

    /// The `Cookie` header a browser sends back for these `Set-Cookie` values.
    fn returned(set: &[&HeaderValue]) -> HeaderMap {
        let pairs: Vec<&str> = set
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap())
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap(),
        );
        headers
    }

    #[test]
    fn new_state_is_random_and_redacted() {
        let a = LoginState::new("corp", "/app?x=1", NOW).unwrap();
        let b = LoginState::new("corp", "/app?x=1", NOW).unwrap();
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.pkce_verifier, b.pkce_verifier);
        assert_eq!(
            (a.state.len(), a.nonce.len(), a.pkce_verifier.len()),
            (43, 43, 43)
        );
        assert_eq!(a.pkce().verifier, a.pkce_verifier);
        let shown = format!("{a:?}");
        for secret in [&a.state, &a.nonce, &a.pkce_verifier, &a.return_to] {
            assert!(!shown.contains(secret.as_str()), "{shown}");
        }
        assert!(shown.contains("corp"));
        assert_eq!(a.state_digest(), state_digest(&a.state));
        assert_eq!(a.state_digest().len(), 43);
    }

    #[test]
    fn round_trip_through_the_browser() {
        let keys = keys();
        let login = LoginState::new("corp", "/app/page?x=1#f", NOW).unwrap();
        let (name, set) = login.seal_cookie(&keys, &base()).unwrap();
        assert_eq!(name, cookie_name("__Host-authgate-login", &login.state));
        assert_eq!(name.len(), "__Host-authgate-login-".len() + 12);
        let text = set.to_str().unwrap();
        assert!(text.starts_with(&format!("{name}=1.")));
        assert!(text.ends_with("; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"));
        assert!(!text.contains(&login.state) && !text.contains("/app/page"));
        let headers = returned(&[&set]);
        let opened = open_for_state(&headers, &keys, &base(), &login.state, NOW + 599).unwrap();
        assert_eq!(opened, login);
        // Clearing names exactly that cookie.
        let clear = clear_cookie(&base(), &login.state);
        assert_eq!(clear.len(), 1);
        assert!(clear[0]
            .to_str()
            .unwrap()
            .starts_with(&format!("{name}=; Path=/; Max-Age=0")));
    }

    #[test]
    fn concurrent_logins_do_not_collide() {
        let keys = keys();
        let first = LoginState::new("corp", "/a", NOW).unwrap();
        let second = LoginState::new("partner", "/b", NOW + 5).unwrap();
        let (name1, set1) = first.seal_cookie(&keys, &base()).unwrap();
        let (name2, set2) = second.seal_cookie(&keys, &base()).unwrap();
        assert_ne!(name1, name2);
        let headers = returned(&[&set1, &set2]);
        assert_eq!(
            open_for_state(&headers, &keys, &base(), &second.state, NOW + 10).unwrap(),
            second
        );
        assert_eq!(
            open_for_state(&headers, &keys, &base(), &first.state, NOW + 10).unwrap(),
            first
        );
    }

    #[test]
    fn refusals() {
        use LoginStateError as E;
        let keys = keys();
        let login = LoginState::new("corp", "/", NOW).unwrap();
        let (name, set) = login.seal_cookie(&keys, &base()).unwrap();
        let headers = returned(&[&set]);
        let open = |headers: &HeaderMap, state: &str, now: i64| {
            open_for_state(headers, &keys, &base(), state, now)
        };
        assert_eq!(open(&HeaderMap::new(), &login.state, NOW), Err(E::Missing));
        let other = LoginState::new("corp", "/", NOW).unwrap();
        assert_eq!(open(&headers, &other.state, NOW), Err(E::Missing));
        assert_eq!(open(&headers, "", NOW), Err(E::Mismatch));
        assert_eq!(open(&headers, &"a".repeat(513), NOW), Err(E::Mismatch));
        assert_eq!(open(&headers, &login.state, NOW + 601), Err(E::Expired));
        assert_eq!(
            open(&headers, &login.state, NOW - 61),
            Err(E::FromTheFuture)
        );
        assert!(open(&headers, &login.state, NOW - 60).is_ok());
        // Another key ring: sealed under a key it does not hold.
        let other_keys = SessionKeys::parse(&URL_SAFE_NO_PAD.encode([8u8; 32])).unwrap();
        assert_eq!(
            open_for_state(&headers, &other_keys, &base(), &login.state, NOW),
            Err(E::Unreadable(OpenError::UnknownKey))
        );
        // A value sealed for one login-state cookie does not open under another's name.
        let sealed = cookies::read(&headers, &name).unwrap().unwrap();
        let moved_name = cookie_name("__Host-authgate-login", &other.state);
        let moved = HeaderValue::from_str(&format!("{moved_name}=1.{sealed}")).unwrap();
        let mut moved_headers = HeaderMap::new();
        moved_headers.insert(header::COOKIE, moved);
        assert_eq!(
            open(&moved_headers, &other.state, NOW),
            Err(E::Unreadable(OpenError::Tampered))
        );
        // The cookie's own state must equal the parameter, even under the right name and key.
        let mut forged = other.clone();
        forged.state = login.state.clone() + "x";
        let json = serde_json::to_vec(&forged).unwrap();
        let forged_name = cookie_name("__Host-authgate-login", &other.state);
        let sealed = keys.seal(&forged_name, &json).unwrap();
        let mut forged_headers = HeaderMap::new();
        forged_headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{forged_name}=1.{sealed}")).unwrap(),
        );
        assert_eq!(open(&forged_headers, &other.state, NOW), Err(E::Mismatch));
        // Sealed with our key for the right name, but not a login state.
        let junk = keys.seal(&forged_name, b"{\"state\":1}").unwrap();
        forged_headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{forged_name}=1.{junk}")).unwrap(),
        );
        assert_eq!(open(&forged_headers, &other.state, NOW), Err(E::Corrupt));
        // Twice under two spellings.
        let mut twice = headers.clone();
        twice.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{}=1.x", name.to_ascii_lowercase())).unwrap(),
        );
        assert_eq!(
            open(&twice, &login.state, NOW),
            Err(E::Cookie(CookieReadError::Duplicate))
        );
        for err in [
            E::Missing,
            E::Mismatch,
            E::Expired,
            E::Corrupt,
            E::FromTheFuture,
            E::Cookie(CookieReadError::Duplicate),
            E::Unreadable(OpenError::Tampered),
        ] {
            assert!(err.reason().starts_with("login_state_"));
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(&login.state));
        }
    }

    #[test]
    fn largest_return_target_fits_one_cookie() {
        let keys = keys();
        // `"` and `\` are refused in return targets, so JSON adds nothing to its length.
        let return_to = format!("/{}", "x".repeat(MAX_RETURN_LEN - 1));
        let login = LoginState::new(&"l".repeat(64), &return_to, NOW).unwrap();
        let (_, set) = login.seal_cookie(&keys, &base()).unwrap();
        assert!(set.len() <= MAX_COOKIE_BYTES, "{}", set.len());
        let huge = LoginState::new(&"l".repeat(4000), "/", NOW).unwrap();
        assert_eq!(
            huge.seal_cookie(&keys, &base()).unwrap_err(),
            SealCookieError::TooLarge
        );
        let long_prefix = base().renamed(&"p".repeat(120)).unwrap();
        assert_eq!(
            login.seal_cookie(&keys, &long_prefix).unwrap_err().reason(),
            "login_state_cookie_name"
        );
    }

    #[test]
    fn crowding_and_removal() {
        let keys = keys();
        let spec = base();
        let sets: Vec<(String, HeaderValue)> = (0..MAX_CONCURRENT_LOGINS)
            .map(|_| {
                LoginState::new("corp", "/", NOW)
                    .unwrap()
                    .seal_cookie(&keys, &spec)
                    .unwrap()
            })
            .collect();
        let few = returned(
            &sets[..MAX_CONCURRENT_LOGINS - 1]
                .iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
        );
        assert!(crowded_out(&few, &spec).is_empty());
        let mut all = returned(&sets.iter().map(|(_, v)| v).collect::<Vec<_>>());
        all.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-authgate=1.s; a=1"),
        );
        let cleared = crowded_out(&all, &spec);
        assert_eq!(cleared.len(), MAX_CONCURRENT_LOGINS);
        for (name, _) in &sets {
            assert!(cleared.iter().any(|v| v
                .to_str()
                .unwrap()
                .starts_with(&format!("{name}=; Path=/; Max-Age=0"))));
        }
        all.append(
            header::COOKIE,
            HeaderValue::from_static("%5F%5Fhost-authgate-login-x=1"),
        );
        remove_from_request(&mut all, &spec);
        assert_eq!(all[header::COOKIE], "__Host-authgate=1.s; a=1");
        // A lax spec with SameSite=None works too (form_post callbacks).
        let none = CookieSpec::new(
            "__Host-authgate-login",
            CookieOptions {
                same_site: SameSite::None,
                ..CookieOptions::default()
            },
        )
        .unwrap();
        let (_, set) = LoginState::new("corp", "/", NOW)
            .unwrap()
            .seal_cookie(&keys, &none)
            .unwrap();
        assert!(set.to_str().unwrap().ends_with("SameSite=None"));
    }
}
