//! The authentication half of the build: providers (JWKS, discovery or secret), the `[auth]`
//! section (realm, session cookie, identity rules, denylist) and each route's auth settings.
//! Like the rest of the build, it reports every problem with its location.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use super::checks::{ca_bundle_file, is_plain_name, readable_file, timeout_or};
use super::file;
use super::located::{ConfigError, Locator};
use crate::auth::jwks::{check_fetch_uri, JwksSettings, JwksSource};
use crate::config::file::AuthMode;
use crate::proxy::route::RouteAuth;

#[derive(Clone)]
pub struct AuthSettings {
    pub realm: Arc<str>,
    pub max_token_bytes: usize,
    pub token_cache_entries: u64,
    pub identity: Arc<crate::auth::identity::IdentityRules>,
    /// The denylist file, its reload interval, and its contents when the config was loaded.
    pub denylist: Option<DenylistSettings>,
}

#[derive(Clone)]
pub struct DenylistSettings {
    pub path: PathBuf,
    pub reload_interval: Duration,
    pub initial: Arc<crate::auth::denylist::Denylist>,
}

/// A provider as configured and validated; its key cache is created when serving starts.
#[derive(Clone)]
pub struct ProviderSettings {
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    pub require_exp: bool,
    pub typ: Option<String>,
    pub keys: ProviderKeySettings,
    pub fingerprint: [u8; 32],
}

#[derive(Clone)]
pub enum ProviderKeySettings {
    Jwks(Box<JwksKeySettings>),
    Secret(Arc<[u8]>),
    /// Keys given whole, never fetched: what `authgate explain --jwks FILE` substitutes.
    Fixed(Arc<crate::auth::keys::KeySet>),
}

#[derive(Clone)]
pub struct JwksKeySettings {
    pub source: crate::auth::jwks::JwksSource,
    pub settings: crate::auth::jwks::JwksSettings,
    pub ca_bundle: Option<PathBuf>,
}

pub(super) fn build_auth(
    section: &file::AuthSection,
    base_dir: &Path,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<AuthSettings> {
    let realm = section
        .realm
        .as_ref()
        .map_or(file::DEFAULT_REALM, |r| r.get_ref().as_str())
        .to_string();
    if let Some(written) = &section.realm {
        let bad = |c: char| c == '"' || c == '\\' || c.is_control();
        if realm.is_empty() || realm.chars().any(bad) {
            errors.push(at.error_at(
                written.span().start,
                "auth.realm may not be empty or hold quotes, backslashes or control characters",
            ));
        }
    }
    if let Some(cookie) = &section.session_cookie {
        if !valid_cookie_name(cookie.get_ref()) {
            errors.push(at.error_at(
                cookie.span().start,
                format!("{:?} is not a valid cookie name", cookie.get_ref()),
            ));
        }
    }
    let max_token_bytes = section
        .max_token_bytes
        .as_ref()
        .map_or(file::DEFAULT_MAX_TOKEN_BYTES, |v| *v.get_ref());
    if let Some(value) = section
        .max_token_bytes
        .as_ref()
        .filter(|v| *v.get_ref() < 256)
    {
        errors.push(at.error_at(value.span().start, "max_token_bytes must be at least 256"));
    }
    let identity = match crate::auth::identity::IdentityRules::build_located(&section.identity) {
        Ok(rules) => Some(Arc::new(rules)),
        Err((message, Some(span))) => {
            errors.push(at.error_at(span.start, format!("auth.identity: {message}")));
            None
        }
        Err((message, None)) => {
            errors.push(at.error_unplaced(format!("auth.identity: {message}")));
            None
        }
    };
    let denylist = section.denylist.as_ref().and_then(|written| {
        let path = readable_file(written, base_dir, at, errors)?;
        match crate::auth::denylist_file::load(&path) {
            Ok(list) => Some(DenylistSettings {
                path,
                reload_interval: section
                    .denylist_reload_interval
                    .map_or(file::DEFAULT_DENYLIST_RELOAD_INTERVAL, |d| d.0),
                initial: Arc::new(list),
            }),
            Err(problems) => {
                errors.extend(problems.0);
                None
            }
        }
    });
    if section.denylist.is_some() && denylist.is_none() {
        return None;
    }
    Some(AuthSettings {
        realm: Arc::from(realm),
        max_token_bytes,
        token_cache_entries: section
            .token_cache_entries
            .unwrap_or(file::DEFAULT_TOKEN_CACHE_ENTRIES),
        identity: identity?,
        denylist,
    })
}

pub(super) fn build_providers(
    sections: &[Spanned<file::ProviderSection>],
    base_dir: &Path,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ProviderSettings> {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    let mut providers: Vec<ProviderSettings> = Vec::new();
    for section in sections {
        let start = section.span().start;
        let p = section.get_ref();
        let name = p.name.get_ref();
        let mut fail = |offset: usize, message: String| errors.push(at.error_at(offset, message));
        if !is_plain_name(name) {
            fail(
                p.name.span().start,
                format!("provider name {name:?} may use only letters, digits, '-', '_' and '.'"),
            );
        }
        if providers.iter().any(|other| &*other.name == name.as_str()) {
            fail(
                p.name.span().start,
                format!("provider name {name:?} is used twice"),
            );
        }
        let issuer = p.issuer.get_ref();
        if issuer.is_empty() {
            fail(p.issuer.span().start, "issuer may not be empty".into());
        }
        if providers
            .iter()
            .any(|other| &*other.issuer == issuer.as_str())
        {
            fail(
                p.issuer.span().start,
                format!("issuer {issuer:?} belongs to two providers; tokens are dispatched by iss"),
            );
        }
        if p.audiences.get_ref().is_empty() || p.audiences.get_ref().iter().any(String::is_empty) {
            fail(
                p.audiences.span().start,
                "audiences must list at least one non-empty audience".into(),
            );
        }
        let algorithms: Vec<jsonwebtoken::Algorithm> =
            p.algorithms.get_ref().iter().map(|a| a.0).collect();
        let symmetric = algorithms
            .iter()
            .filter(|a| matches!(a, HS256 | HS384 | HS512))
            .count();
        if algorithms.is_empty() {
            fail(
                p.algorithms.span().start,
                "algorithms must list at least one algorithm".into(),
            );
        }
        let sources = usize::from(p.jwks_uri.is_some())
            + usize::from(p.discovery)
            + usize::from(p.secret.is_some());
        if sources != 1 {
            fail(
                start,
                format!(
                    "provider {name:?} needs exactly one of jwks_uri, discovery = true, or secret"
                ),
            );
            continue;
        }
        let settings = JwksSettings {
            refresh_interval: timeout_or(
                p.jwks_refresh_interval,
                file::DEFAULT_JWKS_REFRESH_INTERVAL,
            ),
            min_refresh_interval: timeout_or(
                p.jwks_min_refresh_interval,
                file::DEFAULT_JWKS_MIN_REFRESH_INTERVAL,
            ),
            max_refresh_interval: timeout_or(
                p.jwks_max_refresh_interval,
                file::DEFAULT_JWKS_MAX_REFRESH_INTERVAL,
            ),
            unknown_kid_interval: timeout_or(
                p.jwks_unknown_kid_interval,
                file::DEFAULT_JWKS_UNKNOWN_KID_INTERVAL,
            ),
            max_staleness: timeout_or(p.jwks_max_staleness, file::DEFAULT_JWKS_MAX_STALENESS),
            fetch_timeout: timeout_or(p.jwks_fetch_timeout, file::DEFAULT_JWKS_FETCH_TIMEOUT),
            max_bytes: p.jwks_max_bytes.unwrap_or(file::DEFAULT_JWKS_MAX_BYTES),
            allow_insecure_http: p.allow_insecure_http,
        };
        if settings.unknown_kid_interval < Duration::from_millis(100) {
            fail(start, format!("provider {name:?}: jwks_unknown_kid_interval below 100ms would let unknown kids hammer the IdP"));
        }
        if settings.max_bytes < 1024 {
            fail(
                start,
                format!("provider {name:?}: jwks_max_bytes must be at least 1024"),
            );
        }
        if p.secret.is_some()
            && (p.ca_bundle.is_some()
                || p.allow_insecure_http
                || p.jwks_refresh_interval.is_some()
                || p.jwks_min_refresh_interval.is_some()
                || p.jwks_max_refresh_interval.is_some()
                || p.jwks_unknown_kid_interval.is_some()
                || p.jwks_max_staleness.is_some()
                || p.jwks_fetch_timeout.is_some()
                || p.jwks_max_bytes.is_some())
        {
            fail(start, format!("provider {name:?} has a secret: ca_bundle, allow_insecure_http and jwks_* settings do not apply"));
        }
        if settings.min_refresh_interval > settings.max_refresh_interval {
            fail(start, format!("provider {name:?}: jwks_min_refresh_interval is longer than jwks_max_refresh_interval"));
        }
        let keys = if let Some(secret) = &p.secret {
            if symmetric != algorithms.len() {
                fail(p.algorithms.span().start, format!("provider {name:?} has a secret, so only HS256, HS384 and HS512 may be listed"));
            }
            let bytes = secret.get_ref().0.as_bytes();
            let needed = algorithms
                .iter()
                .map(|a| match a {
                    HS384 => 48,
                    HS512 => 64,
                    _ => 32,
                })
                .max()
                .unwrap_or(32);
            if bytes.len() < needed {
                fail(secret.span().start, format!("provider {name:?}: the secret must be at least {needed} bytes for the listed algorithms"));
            }
            ProviderKeySettings::Secret(Arc::from(bytes))
        } else {
            if symmetric > 0 {
                fail(p.algorithms.span().start, format!("provider {name:?} uses a JWKS, so HS* algorithms may not be listed (a public key must never serve as an HMAC secret)"));
            }
            let source = if let Some(uri) = &p.jwks_uri {
                match uri.get_ref().0.parse::<http::Uri>() {
                    Ok(parsed) => {
                        if let Err(message) = check_fetch_uri(&parsed, p.allow_insecure_http) {
                            fail(uri.span().start, message);
                        }
                        JwksSource::Uri(parsed)
                    }
                    Err(e) => {
                        fail(uri.span().start, format!("jwks_uri is not a URL: {e}"));
                        continue;
                    }
                }
            } else {
                match issuer.parse::<http::Uri>() {
                    Ok(parsed) if parsed.authority().is_some() => {
                        if let Err(message) = check_fetch_uri(&parsed, p.allow_insecure_http) {
                            fail(p.issuer.span().start, format!("discovery: {message}"));
                        }
                    }
                    _ => fail(
                        p.issuer.span().start,
                        "discovery needs an issuer that is an http(s) URL".into(),
                    ),
                }
                JwksSource::Discovery {
                    issuer: issuer.clone(),
                }
            };
            let ca_bundle = p
                .ca_bundle
                .as_ref()
                .and_then(|path| ca_bundle_file(path, base_dir, at, errors));
            ProviderKeySettings::Jwks(Box::new(JwksKeySettings {
                source,
                settings,
                ca_bundle,
            }))
        };
        let leeway = p.leeway.map_or(file::DEFAULT_LEEWAY, |d| d.0);
        let typ = p.typ.as_deref().map(crate::auth::jwt::normalize_typ);
        let require_exp = p.require_exp.unwrap_or(true);
        let secret_digest = match &keys {
            ProviderKeySettings::Secret(bytes) => crate::auth::keys::sha256(&[bytes]),
            ProviderKeySettings::Jwks(_) | ProviderKeySettings::Fixed(_) => [0; 32],
        };
        let described = match &keys {
            ProviderKeySettings::Jwks(jwks) => {
                // The bundle's content, not only its path: a rotated CA must rebuild the
                // provider's HTTPS client on reload.
                let ca_digest = jwks
                    .ca_bundle
                    .as_ref()
                    .and_then(|path| std::fs::read(path).ok())
                    .map(|content| crate::auth::keys::sha256(&[&content]));
                format!(
                    "{:?}{:?}{:?}{ca_digest:?}",
                    jwks.source, jwks.settings, jwks.ca_bundle
                )
            }
            ProviderKeySettings::Secret(_) | ProviderKeySettings::Fixed(_) => String::new(),
        };
        let fingerprint = crate::auth::keys::sha256(&[
            name.as_bytes(),
            issuer.as_bytes(),
            format!(
                "{:?}{algorithms:?}{leeway:?}{:?}{require_exp}{typ:?}{described}",
                p.audiences.get_ref(),
                p.required_claims
            )
            .as_bytes(),
            &secret_digest,
        ]);
        providers.push(ProviderSettings {
            name: Arc::from(name.as_str()),
            issuer: Arc::from(issuer.as_str()),
            audiences: p.audiences.get_ref().clone(),
            algorithms,
            leeway,
            required_claims: p.required_claims.clone(),
            require_exp,
            typ,
            keys,
            fingerprint,
        });
    }
    providers
}

/// RFC 6265 §4.1.1: a cookie name is an HTTP token.
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn route_auth(
    route: &file::RouteSection,
    offset: usize,
    providers: &[ProviderSettings],
    declared: &[Spanned<file::ProviderSection>],
    default_cookie: Option<&Spanned<String>>,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> RouteAuth {
    let name = route.name.get_ref();
    let policy = match crate::auth::policy::Policy::build(&route.policy) {
        Ok(policy) => policy,
        Err(message) => {
            errors.push(at.error_at(offset, format!("route {name:?}: policy: {message}")));
            crate::auth::policy::Policy::default()
        }
    };
    let accepted = route.providers.as_ref().map(|list| {
        // A provider in the file that failed to build has its own error already; a second one
        // here would send the reader looking for a provider that is plainly there.
        let in_file = |wanted: &str| {
            declared
                .iter()
                .any(|p| p.get_ref().name.get_ref() == wanted)
        };
        for provider in list.get_ref() {
            if !providers.iter().any(|p| &*p.name == provider.as_str()) && !in_file(provider) {
                errors.push(at.error_at(
                    list.span().start,
                    format!("route {name:?}: no provider is named {provider:?}"),
                ));
            }
        }
        list.get_ref().clone()
    });
    match route.auth {
        AuthMode::Public => {
            if accepted.is_some() || !policy.is_empty() || route.forward_authorization.is_some() {
                errors.push(at.error_at(offset, format!("route {name:?} is public: providers, policy and forward_authorization do not apply")));
            }
        }
        AuthMode::Optional | AuthMode::Required => {
            // Counted in the file, not among the built providers, for the same reason.
            let servable = accepted
                .as_ref()
                .map_or(!declared.is_empty(), |list| !list.is_empty());
            if !servable {
                errors.push(at.error_at(offset, format!(
                    "route {name:?} requires authentication but no provider can serve it; add a [[provider]] or set auth = \"public\""
                )));
            }
            if route.auth == AuthMode::Optional && !policy.is_empty() {
                errors.push(at.error_at(offset, format!(
                    "route {name:?}: auth = \"optional\" lets anonymous requests through, so a policy would only bind callers who send a token; use auth = \"required\""
                )));
            }
        }
    }
    // The default cookie is checked once, with [auth]; a route's own cookie here.
    let cookie = route.session_cookie.as_ref().or(default_cookie);
    if let Some(cookie) = &route.session_cookie {
        if !valid_cookie_name(cookie.get_ref()) {
            errors.push(at.error_at(
                cookie.span().start,
                format!("{:?} is not a valid cookie name", cookie.get_ref()),
            ));
        }
    }
    if route.allowed_origins.as_ref().is_some_and(Vec::is_empty) {
        errors.push(at.error_at(offset, format!("route {name:?}: allowed_origins is empty; leave it out to allow only the route's own origin")));
    }
    let login = route
        .login_url
        .as_ref()
        .map(|url| crate::proxy::route::LoginRedirect {
            url: url.0.clone(),
            param: route
                .login_redirect_param
                .clone()
                .unwrap_or_else(|| "rd".to_string()),
        });
    if login.is_some() && route.public_origin.is_none() {
        errors.push(at.error_at(offset, format!(
            "route {name:?}: login_url needs public_origin, since the return URL is built from it and never from the Host header"
        )));
    }
    if login.is_some() && route.auth == AuthMode::Public {
        errors.push(at.error_at(
            offset,
            format!("route {name:?} is public: login_url does not apply"),
        ));
    }
    if let Some(param) = &route.login_redirect_param {
        if param.is_empty()
            || !param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            errors.push(at.error_at(offset, format!("route {name:?}: login_redirect_param {param:?} must be letters, digits, '-', '_' or '.'")));
        }
    }
    RouteAuth {
        mode: route.auth,
        providers: accepted,
        forward_authorization: route.forward_authorization.unwrap_or(true),
        policy: Arc::new(policy),
        session_cookie: cookie.map(|c| c.get_ref().clone()),
        forward_session_cookie: route.forward_session_cookie.unwrap_or(true),
        allowed_origins: match (&route.allowed_origins, &route.public_origin) {
            (Some(list), _) => Some(list.iter().map(|o| o.0.clone()).collect()),
            (None, Some(origin)) => Some(vec![origin.0.clone()]),
            (None, None) => None,
        },
        public_origin: route.public_origin.as_ref().map(|o| o.0.clone()),
        pass_cors_preflight: route.pass_cors_preflight,
        login,
        login_client: None,
        forward_access_token: false,
        // Set by the build once `[revocation]` is known.
        revocation_required: false,
    }
}
