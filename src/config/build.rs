//! File schema → validated runtime types. Everything that can be checked before serving is
//! checked here, and every problem is collected (not just the first) with its location.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::build_auth::{
    build_auth, build_providers, route_auth, AuthSettings, ProviderKeySettings, ProviderSettings,
};
use super::build_login::{build_login, LoginSettings, RESERVED_PREFIX};
use super::build_revocation::{build_revocation, RevocationSettings};
use super::checks::{ca_bundle_file, is_plain_name, or_default, readable_file, timeout_or};
use super::file::{self, FileConfig};
use super::located::{ConfigError, Locator};
use crate::proxy::route::{PathRules, Route};

#[derive(Clone)]
pub struct Config {
    /// Where the config came from, and its digest: what reload compares and metrics report.
    pub source: ConfigSource,
    pub server: ServerSettings,
    pub upstream: UpstreamDefaults,
    pub listeners: Vec<ListenerSettings>,
    pub routes: Vec<Route>,
    pub auth: AuthSettings,
    pub providers: Vec<ProviderSettings>,
    /// The admin listener's address, when configured.
    pub admin: Option<SocketAddr>,
    pub forward_auth: Option<ForwardAuthSettings>,
    pub reload: ReloadSettings,
    pub revocation: RevocationSettings,
    pub login: LoginSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    pub address: SocketAddr,
    pub nginx_path: String,
    pub traefik_path: String,
    /// Envoy appends the original path to this prefix.
    pub envoy_prefix: String,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the config text.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Poll the config and every file it names for changes.
    pub watch: bool,
    pub interval: Duration,
}

impl Config {
    /// Every file this config was built from: a change to any of them is a reason to reload.
    /// The denylist file is not among them: it has its own watcher and never needs a rebuild.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.source.path.clone()];
        for listener in &self.listeners {
            files.extend(listener.tls_files.iter().cloned());
        }
        files.extend(self.upstream.ca_bundle.iter().cloned());
        for route in &self.routes {
            files.extend(route.ca_bundle.iter().cloned());
        }
        for provider in &self.providers {
            if let ProviderKeySettings::Jwks(jwks) = &provider.keys {
                files.extend(jwks.ca_bundle.iter().cloned());
            }
        }
        for client in &self.login.clients {
            files.extend(client.client_key.iter().map(|k| k.path.clone()));
        }
        files.sort();
        files.dedup();
        files
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    pub h2_max_pending_resets: usize,
    pub h2_max_local_error_resets: usize,
    pub upgrade_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamDefaults {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub max_idle_per_host: usize,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Clone)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificate and key files `tls` was read from.
    pub tls_files: Vec<PathBuf>,
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

pub(super) fn build(
    parsed: FileConfig,
    at: &Locator<'_>,
    base_dir: &Path,
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let s = parsed.server;
    let server = ServerSettings {
        shutdown_delay: or_default(s.shutdown_delay, file::DEFAULT_SHUTDOWN_DELAY),
        drain_timeout: or_default(s.drain_timeout, file::DEFAULT_DRAIN_TIMEOUT),
        trusted_proxies: s.trusted_proxies.iter().map(|c| c.0).collect(),
        max_connections: s
            .max_connections
            .as_ref()
            .map_or(file::DEFAULT_MAX_CONNECTIONS, |v| *v.get_ref()),
        tls_handshake_timeout: timeout_or(
            s.tls_handshake_timeout,
            file::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        ),
        header_read_timeout: timeout_or(s.header_read_timeout, file::DEFAULT_HEADER_READ_TIMEOUT),
        body_idle_timeout: timeout_or(s.body_idle_timeout, file::DEFAULT_BODY_IDLE_TIMEOUT),
        idle_timeout: timeout_or(s.idle_timeout, file::DEFAULT_IDLE_TIMEOUT),
        max_header_bytes: s
            .max_header_bytes
            .as_ref()
            .map_or(file::DEFAULT_MAX_HEADER_BYTES, |v| *v.get_ref()),
        h2_max_concurrent_streams: s
            .h2_max_concurrent_streams
            .unwrap_or(file::DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        h2_max_header_list_bytes: s
            .h2_max_header_list_bytes
            .unwrap_or(file::DEFAULT_H2_MAX_HEADER_LIST_BYTES),
        h2_max_pending_resets: s
            .h2_max_pending_resets
            .unwrap_or(file::DEFAULT_H2_MAX_PENDING_RESETS),
        h2_max_local_error_resets: s
            .h2_max_local_error_resets
            .unwrap_or(file::DEFAULT_H2_MAX_LOCAL_ERROR_RESETS),
        upgrade_idle_timeout: timeout_or(
            s.upgrade_idle_timeout,
            file::DEFAULT_UPGRADE_IDLE_TIMEOUT,
        ),
    };
    if let Some(value) = s.max_connections.as_ref().filter(|v| *v.get_ref() == 0) {
        errors.push(at.error_at(value.span().start, "max_connections must be at least 1"));
    }
    // hyper's read buffer, which bounds the header block, cannot be smaller than 8 KiB.
    if let Some(value) = s.max_header_bytes.as_ref().filter(|v| *v.get_ref() < 8192) {
        errors.push(at.error_at(value.span().start, "max_header_bytes must be at least 8192"));
    }

    let u = parsed.upstream;
    let upstream = UpstreamDefaults {
        connect_timeout: timeout_or(u.connect_timeout, file::DEFAULT_UPSTREAM_CONNECT_TIMEOUT),
        response_timeout: timeout_or(u.response_timeout, file::DEFAULT_UPSTREAM_RESPONSE_TIMEOUT),
        pool_idle_timeout: timeout_or(
            u.pool_idle_timeout,
            file::DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT,
        ),
        max_idle_per_host: u
            .max_idle_per_host
            .unwrap_or(file::DEFAULT_UPSTREAM_MAX_IDLE_PER_HOST),
        ca_bundle: u
            .ca_bundle
            .as_ref()
            .and_then(|path| ca_bundle_file(path, base_dir, at, &mut errors)),
    };

    let mut listeners = Vec::new();
    for listener in &parsed.listeners {
        let span = listener.span();
        let listener = listener.get_ref();
        let mut tls_files = Vec::new();
        let tls = listener.tls.as_ref().and_then(|tls| {
            let cert = readable_file(&tls.cert, base_dir, at, &mut errors)?;
            let key = readable_file(&tls.key, base_dir, at, &mut errors)?;
            tls_files = vec![cert.clone(), key.clone()];
            match crate::edge::tls::server_config(&cert, &key) {
                Ok(config) => Some(config),
                Err(message) => {
                    errors.push(at.error_at(tls.cert.span().start, message));
                    None
                }
            }
        });
        if listeners
            .iter()
            .any(|l: &ListenerSettings| l.address == listener.address.0 && l.address.port() != 0)
        {
            errors.push(at.error_at(
                span.start,
                format!("listener address {} is listed twice", listener.address.0),
            ));
        }
        listeners.push(ListenerSettings {
            address: listener.address.0,
            tls,
            tls_files,
        });
    }
    if listeners.is_empty() {
        errors.push(at.error_unplaced(
            "no [[listener]] is configured; add one with an address such as \"0.0.0.0:8080\"",
        ));
    }

    let admin = parsed.admin.as_ref().map(|admin| {
        let address = admin.get_ref().address.0;
        if listeners
            .iter()
            .any(|l| l.address == address && address.port() != 0)
        {
            errors.push(at.error_at(
                admin.span().start,
                format!(
                    "admin address {address} is also a [[listener]]: the admin endpoints are \
                     never served on a public listener"
                ),
            ));
        }
        address
    });
    let forward_auth = parsed.forward_auth.as_ref().and_then(|section| {
        let address = section.get_ref().address.0;
        let taken = listeners.iter().any(|l| l.address == address) || admin == Some(address);
        if taken && address.port() != 0 {
            errors.push(at.error_at(
                section.span().start,
                format!("forward_auth address {address} is already a listener or the admin address"),
            ));
        }
        let mut path = |value: &Option<serde_spanned::Spanned<String>>, default: &str, key: &str| {
            let Some(value) = value else {
                return Some(default.to_string());
            };
            let raw = value.get_ref();
            let plain = raw.starts_with('/')
                && raw.len() > 1
                && !raw.ends_with('/')
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
                && !raw.contains("//");
            if plain {
                Some(raw.clone())
            } else {
                errors.push(at.error_at(
                    value.span().start,
                    format!("{key} {raw:?} must be an absolute path such as \"/nginx\" (letters, digits, '/', '-', '.', '_', '~'; no trailing slash)"),
                ));
                None
            }
        };
        let s = section.get_ref();
        let nginx_path = path(&s.nginx_path, file::DEFAULT_NGINX_PATH, "nginx_path")?;
        let traefik_path = path(&s.traefik_path, file::DEFAULT_TRAEFIK_PATH, "traefik_path")?;
        let envoy_prefix = path(&s.envoy_prefix, file::DEFAULT_ENVOY_PREFIX, "envoy_prefix")?;
        let overlapping = nginx_path == traefik_path
            || [&nginx_path, &traefik_path].iter().any(|p| {
                p.as_str() == envoy_prefix || p.starts_with(&format!("{envoy_prefix}/"))
            });
        if overlapping {
            errors.push(at.error_at(
                section.span().start,
                "forward_auth paths overlap: nginx_path, traefik_path and envoy_prefix (with everything under it) must be distinct",
            ));
            return None;
        }
        Some(ForwardAuthSettings {
            address,
            nginx_path,
            traefik_path,
            envoy_prefix,
        })
    });
    let reload = ReloadSettings {
        watch: parsed.reload.watch.unwrap_or(true),
        interval: timeout_or(parsed.reload.interval, file::DEFAULT_RELOAD_INTERVAL),
    };

    let taken: Vec<SocketAddr> = listeners.iter().map(|l| l.address).chain(admin).collect();
    let revocation = build_revocation(parsed.revocation.as_ref(), &taken, at, &mut errors);
    let fail_closed = revocation.on_unreachable == file::OnUnreachable::FailClosed;

    let providers = build_providers(&parsed.providers, base_dir, at, &mut errors);
    let auth = build_auth(&parsed.auth, base_dir, at, &mut errors);
    let login = build_login(
        parsed.session.as_ref(),
        &parsed.logins,
        &providers,
        &parsed.providers,
        &revocation,
        base_dir,
        at,
        &mut errors,
    );

    let mut routes: Vec<Route> = Vec::new();
    for route in &parsed.routes {
        let route_span = route.span();
        let route = route.get_ref();
        let name = route.name.get_ref();
        if !is_plain_name(name) {
            errors.push(at.error_at(
                route.name.span().start,
                format!("route name {name:?} may use only letters, digits, '-', '_' and '.'"),
            ));
        }
        if routes.iter().any(|r| &*r.name == name.as_str()) {
            errors.push(at.error_at(
                route.name.span().start,
                format!("route name {name:?} is used twice"),
            ));
        }
        let scheme = &route.upstream.scheme;
        match route.upstream_protocol {
            file::UpstreamProtocol::H2c if *scheme != http::uri::Scheme::HTTP => errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: upstream_protocol = \"h2c\" needs an http:// upstream (h2 over TLS is \"h2\")"),
            )),
            file::UpstreamProtocol::H2 if *scheme != http::uri::Scheme::HTTPS => errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: upstream_protocol = \"h2\" needs an https:// upstream (plaintext HTTP/2 is \"h2c\")"),
            )),
            _ => {}
        }
        if route.preserve_host && route.upstream_protocol != file::UpstreamProtocol::Http1 {
            // HTTP/2 carries the host in :authority, which must name the server connected to
            // (RFC 9113 §8.3.1); a second, different Host would contradict it.
            errors.push(at.error_at(
                route_span.start,
                format!(
                    "route {name:?}: preserve_host works with upstream_protocol = \"http1\" only"
                ),
            ));
        }
        if route.strip_prefix && route.path_prefix.0 == "/" {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: strip_prefix with path_prefix \"/\" strips nothing"),
            ));
        }
        let methods = route.methods.as_ref().map(|methods| {
            let mut list: Vec<http::Method> = methods.iter().map(|m| m.0.clone()).collect();
            if list.contains(&http::Method::GET) && !list.contains(&http::Method::HEAD) {
                list.push(http::Method::HEAD);
            }
            list.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            list.dedup();
            list
        });
        if methods.as_ref().is_some_and(Vec::is_empty) {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: methods is empty; leave it out to allow every method"),
            ));
        }
        let ca_bundle = route
            .ca_bundle
            .as_ref()
            .and_then(|path| ca_bundle_file(path, base_dir, at, &mut errors))
            .or_else(|| upstream.ca_bundle.clone());
        let mut auth = route_auth(
            route,
            route_span.start,
            &providers,
            &parsed.providers,
            parsed.auth.session_cookie.as_ref(),
            at,
            &mut errors,
        );
        auth.revocation_required = route.revocation_required.unwrap_or(fail_closed);
        if route.revocation_required == Some(true) && revocation.redis.is_none() {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: revocation_required needs [revocation] redis_url (only a shared list can be unavailable)"),
            ));
        }
        if route.path_prefix.0 == RESERVED_PREFIX.trim_end_matches('/')
            || route.path_prefix.0.starts_with(RESERVED_PREFIX)
        {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: paths under {RESERVED_PREFIX} are the gateway's own (login callback, logout); no route may serve them"),
            ));
        }
        if let Some(written) = &route.login {
            let login_name = written.get_ref();
            let offset = written.span().start;
            match login
                .clients
                .iter()
                .position(|c| &*c.name == login_name.as_str())
            {
                None if parsed
                    .logins
                    .iter()
                    .all(|l| l.get_ref().name.get_ref() != login_name) =>
                {
                    errors.push(at.error_at(
                        offset,
                        format!("route {name:?}: no [[login]] is named {login_name:?}"),
                    ));
                }
                None => {}
                Some(index) => {
                    let client = &login.clients[index];
                    let provider = &providers[client.provider].name;
                    if auth
                        .providers
                        .as_ref()
                        .is_some_and(|list| !list.iter().any(|p| p == &**provider))
                    {
                        errors.push(at.error_at(offset, format!("route {name:?}: login {login_name:?} signs users in at provider {provider:?}, which the route's providers leave out")));
                    }
                    auth.login_client = Some(index);
                }
            }
            if route.auth == file::AuthMode::Public {
                errors.push(at.error_at(
                    offset,
                    format!("route {name:?} is public: login does not apply"),
                ));
            }
            if route.login_url.is_some() {
                errors.push(at.error_at(
                    offset,
                    format!("route {name:?}: login and login_url are two ways to log in; keep one"),
                ));
            }
            if route.session_cookie.is_some() {
                errors.push(at.error_at(offset, format!("route {name:?}: with login the session is the gateway's own cookie ([session] cookie_name); remove session_cookie")));
            }
            if parsed.forward_auth.is_some() {
                // A forward-auth answer cannot set the session's cookies, serve the callback or
                // keep the gateway's cookies from the upstream: the calling proxy forwards the
                // browser's request as it came.
                errors.push(at.error_at(offset, format!("route {name:?}: login works on the gateway's own listeners only, not through [forward_auth]; serve this route through authgate or remove [forward_auth]")));
            }
        }
        auth.forward_access_token = route.forward_access_token;
        if route.forward_access_token && route.login.is_none() {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?}: forward_access_token needs login"),
            ));
        }
        if route.revocation_required.is_some() && route.auth == file::AuthMode::Public {
            errors.push(at.error_at(
                route_span.start,
                format!("route {name:?} is public: revocation_required does not apply"),
            ));
        }
        routes.push(Route {
            name: Arc::from(name.as_str()),
            host: route.host.clone(),
            prefix: route.path_prefix.0.clone(),
            methods,
            upstream: route.upstream.clone(),
            strip_prefix: route.strip_prefix,
            preserve_host: route.preserve_host,
            connect_timeout: timeout_or(route.connect_timeout, upstream.connect_timeout),
            response_timeout: timeout_or(route.response_timeout, upstream.response_timeout),
            ca_bundle,
            path_rules: PathRules {
                allow_encoded_slash: route.allow_encoded_slash,
                allow_encoded_backslash: route.allow_encoded_backslash,
                allow_encoded_nul: route.allow_encoded_nul,
                allow_path_parameters: route.allow_path_parameters,
            },
            upstream_protocol: route.upstream_protocol,
            allow_underscore_headers: route.allow_underscore_headers,
            auth,
        });
    }
    if let Err(conflicts) = crate::proxy::route::RouteTable::new(routes.clone()) {
        for (index, message) in conflicts {
            let offset = parsed.routes.get(index).map_or(0, |r| r.span().start);
            errors.push(at.error_at(offset, message));
        }
    }

    if errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        Ok(Config {
            source: ConfigSource::default(),
            server,
            upstream,
            listeners,
            routes,
            auth: auth.ok_or_else(Vec::new)?,
            providers,
            admin,
            forward_auth,
            reload,
            revocation,
            login,
        })
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}
