//! The browser-login half of the build: `[session]` (the gateway's session cookies and their
//! keys) and each `[[login]]` client (an OpenID Connect relying party at one provider's IdP).
//! Every problem is reported with its location, as everywhere in the build.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use super::build_auth::{ProviderKeySettings, ProviderSettings};
use super::build_revocation::{redis_display, RevocationSettings};
use super::checks::{is_plain_name, key_prefix, or_default, readable_file, timeout_or};
use super::file::{self, ClientAuth, IdentityFrom, LoginSection, SessionSection, SessionStore};
use super::located::{ConfigError, Locator};
use crate::login::sealed::SessionKeys;

/// Every path under this prefix is the gateway's own (callback, logout, back-channel logout):
/// no route may shadow it, so no upstream can answer in the gateway's name there.
pub const RESERVED_PREFIX: &str = "/.authgate/";

#[derive(Clone, Default)]
pub struct LoginSettings {
    pub session: Option<SessionSettings>,
    pub clients: Vec<LoginClientSettings>,
}

#[derive(Clone)]
pub struct SessionSettings {
    pub keys: Arc<SessionKeys>,
    pub store: SessionStore,
    /// For `store = "redis"`: the URL (password included: never log it) and its display form.
    pub redis: Option<(String, String)>,
    pub key_prefix: String,
    pub cookie_name: String,
    pub login_state_cookie_name: String,
    pub cookie_domain: Option<String>,
    pub cookie_secure: bool,
    pub lifetime: Duration,
}

#[derive(Clone)]
pub struct LoginClientSettings {
    pub name: Arc<str>,
    /// Index into the config's providers.
    pub provider: usize,
    pub issuer: String,
    pub client_id: String,
    /// Never log it.
    pub client_secret: Option<String>,
    pub client_auth: ClientAuth,
    /// For `private_key_jwt`.
    pub client_key: Option<Arc<ClientKey>>,
    pub scopes: Vec<String>,
    pub public_origin: String,
    pub allowed_return_origins: Vec<String>,
    pub post_logout_redirect_uri: String,
    pub refresh_margin: Duration,
    pub timeout: Duration,
    pub extra_params: Vec<(String, String)>,
    pub identity_from: IdentityFrom,
    pub allow_insecure_http: bool,
    pub ca_bundle: Option<PathBuf>,
}

/// The private key a `private_key_jwt` client signs its assertions with. Never logged.
pub struct ClientKey {
    pub key: jsonwebtoken::EncodingKey,
    pub algorithm: jsonwebtoken::Algorithm,
    pub kid: Option<String>,
    pub path: PathBuf,
}

impl ClientKey {
    /// Reads a PEM private key: PKCS#8 EC P-256 signs ES256, RSA (PKCS#8 or PKCS#1) RS256.
    fn read(path: &std::path::Path, kid: Option<String>) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_file(path).map_err(|_| {
            format!(
                "{} holds no PEM private key (EC P-256 or RSA)",
                path.display()
            )
        })?;
        let (key, algorithm) = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let bytes = pkcs8.secret_pkcs8_der();
                // The key's own type decides; a P-256 key parses as EC, an RSA key does not.
                if aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    bytes,
                )
                .is_ok()
                {
                    (
                        jsonwebtoken::EncodingKey::from_ec_der(bytes),
                        jsonwebtoken::Algorithm::ES256,
                    )
                } else if aws_lc_rs::rsa::KeyPair::from_pkcs8(bytes).is_ok() {
                    // jsonwebtoken signs RSA from PKCS#1 only: the key inside the PKCS#8 wrapper.
                    let pkcs1 = pkcs8_inner_key(bytes).ok_or_else(|| {
                        format!("{}: the PKCS#8 RSA key cannot be unwrapped", path.display())
                    })?;
                    (
                        jsonwebtoken::EncodingKey::from_rsa_der(pkcs1),
                        jsonwebtoken::Algorithm::RS256,
                    )
                } else {
                    return Err(format!(
                        "{}: only EC P-256 and RSA keys are supported",
                        path.display()
                    ));
                }
            }
            PrivateKeyDer::Pkcs1(rsa) => (
                jsonwebtoken::EncodingKey::from_rsa_der(rsa.secret_pkcs1_der()),
                jsonwebtoken::Algorithm::RS256,
            ),
            _ => {
                return Err(format!(
                    "{}: an EC key must be PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)",
                    path.display()
                ))
            }
        };
        // Signed once now, so a key the signer cannot use is refused by `check`, not found at
        // the first login.
        let probe = jsonwebtoken::Header::new(algorithm);
        jsonwebtoken::encode(&probe, &serde_json::json!({}), &key)
            .map_err(|e| format!("{}: this key cannot sign: {e}", path.display()))?;
        Ok(ClientKey {
            key,
            algorithm,
            kid,
            path: path.to_path_buf(),
        })
    }
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (RFC 5208):
/// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`.
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    /// One DER element: its tag, its content and what follows it.
    fn element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (digits, rest) = rest.split_at(count);
            (
                digits
                    .iter()
                    .fold(0usize, |n, &d| (n << 8) | usize::from(d)),
                rest,
            )
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }
    let (0x30, info, _) = element(der)? else {
        return None;
    };
    let (0x02, _, rest) = element(info)? else {
        return None;
    };
    let (0x30, _, rest) = element(rest)? else {
        return None;
    };
    match element(rest)? {
        (0x04, key, _) => Some(key),
        _ => None,
    }
}

impl LoginClientSettings {
    pub fn redirect_uri(&self) -> String {
        format!("{}{RESERVED_PREFIX}callback", self.public_origin)
    }
}

// Hand-written so that a `{:?}` of the config never prints a secret or a key.
impl std::fmt::Debug for LoginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginSettings")
            .field("session", &self.session.as_ref().map(|s| &s.cookie_name))
            .field(
                "clients",
                &self.clients.iter().map(|c| &*c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Parameters the gateway sets itself on every authorization request.
const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

#[allow(clippy::too_many_arguments)]
pub(super) fn build_login(
    session: Option<&Spanned<SessionSection>>,
    logins: &[Spanned<LoginSection>],
    providers: &[ProviderSettings],
    declared: &[Spanned<file::ProviderSection>],
    revocation: &RevocationSettings,
    base_dir: &std::path::Path,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> LoginSettings {
    let session = session.and_then(|section| build_session(section, revocation, at, errors));
    let mut clients: Vec<LoginClientSettings> = Vec::new();
    for login in logins {
        let start = login.span().start;
        let l = login.get_ref();
        let name = l.name.get_ref();
        let mut fail = |offset: usize, message: String| errors.push(at.error_at(offset, message));
        if !is_plain_name(name) {
            fail(
                l.name.span().start,
                format!("login name {name:?} may use only letters, digits, '-', '_' and '.'"),
            );
        }
        if clients.iter().any(|c| &*c.name == name.as_str()) {
            fail(
                l.name.span().start,
                format!("login name {name:?} is used twice"),
            );
        }
        if session.is_none() {
            fail(start, format!("login {name:?} needs a [session] section: the gateway keeps the logged-in user in a session cookie sealed with its keys"));
        }
        let provider_name = l.provider.get_ref();
        let Some(index) = providers
            .iter()
            .position(|p| &*p.name == provider_name.as_str())
        else {
            // A provider that failed its own checks was already reported.
            if !declared
                .iter()
                .any(|p| p.get_ref().name.get_ref() == provider_name)
            {
                fail(
                    l.provider.span().start,
                    format!("login {name:?}: no [[provider]] is named {provider_name:?}"),
                );
            }
            continue;
        };
        let provider = &providers[index];
        let ProviderKeySettings::Jwks(jwks) = &provider.keys else {
            fail(l.provider.span().start, format!("login {name:?}: provider {provider_name:?} has no IdP to log in at; it needs discovery = true"));
            continue;
        };
        if !matches!(jwks.source, crate::auth::jwks::JwksSource::Discovery { .. }) {
            fail(l.provider.span().start, format!("login {name:?}: provider {provider_name:?} needs discovery = true, where the authorization, token and end-session endpoints are published"));
        }
        let client_id = l.client_id.get_ref().0.trim().to_string();
        if client_id.is_empty() {
            fail(
                l.client_id.span().start,
                format!("login {name:?}: client_id is empty"),
            );
        }
        let client_secret = l
            .client_secret
            .as_ref()
            .map(|s| s.get_ref().0.clone())
            .filter(|s| !s.is_empty());
        if let (Some(written), None) = (&l.client_secret, &client_secret) {
            fail(
                written.span().start,
                format!(
                    "login {name:?}: client_secret is empty (is its environment variable set?)"
                ),
            );
        }
        let client_auth = match (&l.client_auth, &client_secret, &l.client_key) {
            (None, Some(_), _) => ClientAuth::ClientSecretBasic,
            (None, None, Some(_)) => ClientAuth::PrivateKeyJwt,
            (None, None, None) => ClientAuth::None,
            (Some(auth), secret, key) => {
                let auth_value = *auth.get_ref();
                let offset = auth.span().start;
                match (auth_value, secret, key) {
                    (ClientAuth::None, Some(_), _) | (ClientAuth::None, _, Some(_)) => fail(offset, format!("login {name:?}: client_auth = \"none\" would never use client_secret or client_key; remove them")),
                    (ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost, None, _) => fail(offset, format!("login {name:?}: this client_auth needs client_secret")),
                    (ClientAuth::PrivateKeyJwt, _, None) => fail(offset, format!("login {name:?}: private_key_jwt needs client_key (a PEM private key file)")),
                    (ClientAuth::PrivateKeyJwt, Some(_), _) => fail(offset, format!("login {name:?}: private_key_jwt sends no client_secret; remove it")),
                    _ => {}
                }
                auth_value
            }
        };
        if let (Some(key), false) = (&l.client_key, client_auth == ClientAuth::PrivateKeyJwt) {
            fail(
                key.span().start,
                format!("login {name:?}: client_key is for client_auth = \"private_key_jwt\""),
            );
        }
        let mut key_errors = Vec::new();
        let client_key = match (&l.client_key, client_auth) {
            (Some(written), ClientAuth::PrivateKeyJwt) => {
                readable_file(written, base_dir, at, &mut key_errors).and_then(|path| {
                    match ClientKey::read(&path, l.client_key_id.clone()) {
                        Ok(key) => Some(Arc::new(key)),
                        Err(message) => {
                            key_errors.push(at.error_at(
                                written.span().start,
                                format!("login {name:?}: client_key: {message}"),
                            ));
                            None
                        }
                    }
                })
            }
            _ => None,
        };

        let scopes: Vec<String> = match &l.scopes {
            None => file::DEFAULT_LOGIN_SCOPES.map(str::to_string).to_vec(),
            Some(scopes) => {
                let list = scopes.get_ref().clone();
                if !list.iter().any(|s| s == "openid") {
                    fail(scopes.span().start, format!("login {name:?}: scopes must include \"openid\" (an ID token is what proves who logged in)"));
                }
                if let Some(bad) = list.iter().find(|s| {
                    s.is_empty()
                        || !s
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                }) {
                    fail(
                        scopes.span().start,
                        format!("login {name:?}: scope {bad:?} is not a valid scope token"),
                    );
                }
                list
            }
        };
        let public_origin = l.public_origin.0.clone();
        let mut extra_params = Vec::new();
        for (key, value) in &l.extra_params {
            if RESERVED_PARAMS.contains(&key.as_str()) {
                fail(
                    start,
                    format!(
                        "login {name:?}: extra_params may not set {key:?}; the gateway sets it"
                    ),
                );
            }
            extra_params.push((key.clone(), value.clone()));
        }
        errors.extend(key_errors);
        clients.push(LoginClientSettings {
            name: Arc::from(name.as_str()),
            provider: index,
            issuer: provider.issuer.to_string(),
            client_id,
            client_secret,
            client_auth,
            client_key,
            scopes,
            post_logout_redirect_uri: l
                .post_logout_redirect_uri
                .as_ref()
                .map_or_else(|| format!("{public_origin}/"), |u| u.0.clone()),
            allowed_return_origins: l
                .allowed_return_origins
                .iter()
                .map(|o| o.0.clone())
                .collect(),
            public_origin,
            refresh_margin: or_default(l.refresh_margin, file::DEFAULT_REFRESH_MARGIN),
            timeout: timeout_or(l.timeout, file::DEFAULT_IDP_TIMEOUT),
            extra_params,
            identity_from: l.identity_from,
            allow_insecure_http: jwks.settings.allow_insecure_http,
            ca_bundle: jwks.ca_bundle.clone(),
        });
    }
    LoginSettings { session, clients }
}

fn build_session(
    section: &Spanned<SessionSection>,
    revocation: &RevocationSettings,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<SessionSettings> {
    let start = section.span().start;
    let s = section.get_ref();
    let keys = match SessionKeys::parse(&s.keys.get_ref().0) {
        Ok(keys) => Some(Arc::new(keys)),
        Err(problem) => {
            errors.push(at.error_at(
                s.keys.span().start,
                format!("session keys: {problem} (generate one with `openssl rand -base64 32`)"),
            ));
            None
        }
    };
    let name_or = |value: &Option<Spanned<String>>,
                   default: &str,
                   key: &str,
                   errors: &mut Vec<ConfigError>| {
        let Some(value) = value else {
            return default.to_string();
        };
        let name = value.get_ref();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            errors.push(at.error_at(
                value.span().start,
                format!("{key} {name:?} is not a valid cookie name"),
            ));
        }
        name.clone()
    };
    let cookie_name = name_or(
        &s.cookie_name,
        file::DEFAULT_SESSION_COOKIE,
        "cookie_name",
        errors,
    );
    let login_state_cookie_name = name_or(
        &s.login_state_cookie_name,
        file::DEFAULT_LOGIN_STATE_COOKIE,
        "login_state_cookie_name",
        errors,
    );
    if cookie_name == login_state_cookie_name {
        errors.push(at.error_at(start, "cookie_name and login_state_cookie_name must differ"));
    }
    let cookie_secure = s.cookie_secure.as_ref().is_none_or(|v| *v.get_ref());
    for (key, name, written) in [
        ("cookie_name", &cookie_name, &s.cookie_name),
        (
            "login_state_cookie_name",
            &login_state_cookie_name,
            &s.login_state_cookie_name,
        ),
    ] {
        let offset = written.as_ref().map_or(start, |w| w.span().start);
        let host_prefixed = name.starts_with("__Host-");
        if (host_prefixed || name.starts_with("__Secure-")) && !cookie_secure {
            errors.push(at.error_at(offset, format!("{key} {name:?}: browsers only accept this prefix on Secure cookies; keep cookie_secure = true or choose a name without the prefix")));
        }
        if host_prefixed && s.cookie_domain.is_some() {
            errors.push(at.error_at(offset, format!("{key} {name:?}: a __Host- cookie may not have a Domain; remove cookie_domain or choose a name without the prefix")));
        }
    }
    let cookie_domain = s.cookie_domain.as_ref().map(|d| {
        let domain = d.get_ref().trim_start_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            errors.push(at.error_at(
                d.span().start,
                format!("cookie_domain {:?} is not a domain name", d.get_ref()),
            ));
        }
        domain
    });
    let redis = match s.store {
        SessionStore::Cookie => {
            if let Some(url) = &s.redis_url {
                errors.push(at.error_at(
                    url.span().start,
                    "redis_url applies to store = \"redis\" only",
                ));
            }
            None
        }
        SessionStore::Redis => match (&s.redis_url, &revocation.redis) {
            (Some(url), _) => {
                let text = url.get_ref().0.trim();
                let valid = (text.starts_with("redis://") || text.starts_with("rediss://"))
                    && redis::Client::open(text).is_ok();
                if !valid {
                    errors.push(at.error_at(url.span().start, format!("redis_url {:?} is not a valid Redis URL (redis[s]://[:password@]host[:port][/db])", redis_display(text))));
                    None
                } else {
                    Some((text.to_string(), redis_display(text)))
                }
            }
            (None, Some(shared)) => Some((shared.url.clone(), shared.display.clone())),
            (None, None) => {
                errors.push(at.error_at(
                    start,
                    "store = \"redis\" needs redis_url here or in [revocation]",
                ));
                None
            }
        },
    };
    let key_prefix = key_prefix(
        s.key_prefix.as_ref(),
        file::DEFAULT_SESSION_KEY_PREFIX,
        at,
        errors,
    );
    Some(SessionSettings {
        keys: keys?,
        store: s.store,
        redis,
        key_prefix,
        cookie_name,
        login_state_cookie_name,
        cookie_domain,
        cookie_secure,
        lifetime: timeout_or(s.lifetime, file::DEFAULT_SESSION_LIFETIME),
    })
}
