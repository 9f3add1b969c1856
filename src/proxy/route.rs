//! The route table: which configured route serves a request.
//!
//! Most specific wins: a route whose host is exact beats a wildcard host, which beats a route
//! with no host; among those, the longest path prefix wins. Prefixes match whole segments
//! (`/api` matches `/api` and `/api/x`, never `/apix`). A route's `methods` only filter inside the
//! winning (host, prefix) group: a method none of the group allows is a 405, never a fall-back to
//! a less specific route. Lookups are hash probes, one per path segment, so the table stays fast
//! with tens of thousands of routes. This step reads only the normalised path and the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::auth::policy::Policy;
use crate::config::file::{AuthMode, HostPattern, UpstreamProtocol, UpstreamUrl};

/// What a route allows in a path that normalisation could not make plain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathRules {
    pub allow_encoded_slash: bool,
    pub allow_encoded_backslash: bool,
    pub allow_encoded_nul: bool,
    pub allow_path_parameters: bool,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub host: Option<HostPattern>,
    /// Normalised, without a trailing slash; `/` for the root.
    pub prefix: String,
    /// Sorted; `None` allows every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: UpstreamUrl,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_bundle: Option<std::path::PathBuf>,
    pub path_rules: PathRules,
    pub upstream_protocol: UpstreamProtocol,
    /// Request header names holding `_` pass (each name the gateway strips or sets is still
    /// removed in every spelling).
    pub allow_underscore_headers: bool,
    pub auth: RouteAuth,
}

/// What a route asks of the caller.
#[derive(Debug, Clone)]
pub struct RouteAuth {
    pub mode: AuthMode,
    /// Names of the accepted providers; `None` accepts every provider.
    pub providers: Option<Vec<String>>,
    pub forward_authorization: bool,
    pub policy: Arc<Policy>,
    pub session_cookie: Option<String>,
    pub forward_session_cookie: bool,
    /// Canonical origins allowed to send cookie-authenticated unsafe requests; `None`: the
    /// request's own origin.
    pub allowed_origins: Option<Vec<String>>,
    pub public_origin: Option<String>,
    pub pass_cors_preflight: bool,
    pub login: Option<LoginRedirect>,
    /// Index of the `[[login]]` client whose gateway sessions this route accepts.
    pub login_client: Option<usize>,
    /// Send the session's access token upstream as `Authorization: Bearer`.
    pub forward_access_token: bool,
    /// Answer 503 `revocations_unavailable` while the shared revocation list is out of reach.
    pub revocation_required: bool,
}

/// Where unauthenticated browser navigations go.
#[derive(Debug, Clone)]
pub struct LoginRedirect {
    pub url: String,
    pub param: String,
}

impl Default for RouteAuth {
    fn default() -> Self {
        RouteAuth {
            mode: AuthMode::Required,
            providers: None,
            forward_authorization: true,
            policy: Arc::new(Policy::default()),
            session_cookie: None,
            forward_session_cookie: true,
            allowed_origins: None,
            public_origin: None,
            pass_cors_preflight: false,
            login: None,
            login_client: None,
            forward_access_token: false,
            revocation_required: false,
        }
    }
}

impl Route {
    fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    /// The methods the most specific matching routes allow, for the `Allow` header.
    MethodNotAllowed(Vec<Method>),
}

/// Routes sharing one host pattern and one prefix: at most one per method.
#[derive(Debug, Default)]
struct Group {
    routes: Vec<usize>,
}

#[derive(Debug, Default)]
struct PrefixTable {
    by_prefix: HashMap<String, Group>,
}

impl PrefixTable {
    /// Longest segment-aware prefix of `path` that has a group.
    fn longest(&self, path: &str) -> Option<&Group> {
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(group) = self.by_prefix.get(key) {
                return Some(group);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, PrefixTable>,
    wildcard: HashMap<String, PrefixTable>,
    any: PrefixTable,
}

impl RouteTable {
    /// Builds the table; returns each conflicting route's index with a message.
    pub fn new(routes: Vec<Route>) -> Result<Self, Vec<(usize, String)>> {
        let mut table = RouteTable::default();
        let mut conflicts = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let prefixes = match &route.host {
                Some(HostPattern::Exact(name)) => table.exact.entry(name.clone()).or_default(),
                Some(HostPattern::Wildcard(domain)) => {
                    table.wildcard.entry(domain.clone()).or_default()
                }
                None => &mut table.any,
            };
            let group = prefixes.by_prefix.entry(route.prefix.clone()).or_default();
            for &other in &group.routes {
                let other: &Route = &routes[other];
                let overlap = match (&route.methods, &other.methods) {
                    (Some(mine), Some(theirs)) => mine.iter().any(|m| theirs.contains(m)),
                    _ => true,
                };
                if overlap {
                    conflicts.push((
                        index,
                        format!(
                            "route {:?} matches the same host, path_prefix and methods as route {:?}; give each a distinct host, path_prefix or methods",
                            route.name, other.name
                        ),
                    ));
                }
            }
            group.routes.push(index);
        }
        table.routes = routes;
        if conflicts.is_empty() {
            Ok(table)
        } else {
            Err(conflicts)
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `host` is lower-case without a port; `path` is normalised.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
    ) -> Result<(usize, &Route), RouteMiss> {
        let group = host
            .and_then(|host| {
                self.exact
                    .get(host)
                    .and_then(|t| t.longest(path))
                    .or_else(|| {
                        let (_, parent) = host.split_once('.')?;
                        self.wildcard.get(parent).and_then(|t| t.longest(path))
                    })
            })
            .or_else(|| self.any.longest(path))
            .ok_or(RouteMiss::NotFound)?;
        if let Some(&index) = group
            .routes
            .iter()
            .find(|&&i| self.routes[i].allows(method))
        {
            return Ok((index, &self.routes[index]));
        }
        let mut allowed: Vec<Method> = group
            .routes
            .iter()
            .flat_map(|&i| self.routes[i].methods.iter().flatten().cloned())
            .collect();
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Err(RouteMiss::MethodNotAllowed(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        name: &str,
        host: Option<HostPattern>,
        prefix: &str,
        methods: Option<&[Method]>,
    ) -> Route {
        Route {
            name: Arc::from(name),
            host,
            prefix: prefix.to_string(),
            methods: methods.map(<[Method]>::to_vec),
            upstream: UpstreamUrl {
                scheme: http::uri::Scheme::HTTP,
                authority: http::uri::Authority::from_static("127.0.0.1:1"),
                base_path: String::new(),
            },
            strip_prefix: false,
            preserve_host: false,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            ca_bundle: None,
            path_rules: PathRules::default(),
            upstream_protocol: UpstreamProtocol::Http1,
            allow_underscore_headers: false,
            auth: RouteAuth::default(),
        }
    }

    fn name<'a>(
        table: &'a RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
    ) -> Result<&'a str, RouteMiss> {
        table.find(host, path, &method).map(|(_, r)| &*r.name)
    }

    #[test]
    fn segment_aware_prefixes() {
        let table = RouteTable::new(vec![
            route("root", None, "/", None),
            route("admin", None, "/admin", None),
            route("api", None, "/api", None),
            route("api-v2", None, "/api/v2", None),
        ])
        .expect("valid table");
        for (path, expected) in [
            ("/admin", "admin"),
            ("/admin/", "admin"),
            ("/admin/x", "admin"),
            ("/administrator", "root"),
            ("/apix", "root"),
            ("/api", "api"),
            ("/api/v2", "api-v2"),
            ("/api/v2x", "api"),
            ("/api/v2/deep/path", "api-v2"),
            ("/", "root"),
        ] {
            assert_eq!(
                name(&table, None, path, Method::GET),
                Ok(expected),
                "path {path}"
            );
        }
    }

    #[test]
    fn host_precedence_and_fallback() {
        let table = RouteTable::new(vec![
            route("any", None, "/", None),
            route(
                "wild",
                Some(HostPattern::Wildcard("example.com".into())),
                "/",
                None,
            ),
            route(
                "exact",
                Some(HostPattern::Exact("api.example.com".into())),
                "/v1",
                None,
            ),
        ])
        .expect("valid table");
        assert_eq!(
            name(&table, Some("api.example.com"), "/v1/x", Method::GET),
            Ok("exact")
        );
        // The exact host has no route for /other, so the wildcard host's route is the best match.
        assert_eq!(
            name(&table, Some("api.example.com"), "/other", Method::GET),
            Ok("wild")
        );
        assert_eq!(
            name(&table, Some("www.example.com"), "/v1", Method::GET),
            Ok("wild")
        );
        assert_eq!(
            name(&table, Some("a.b.example.com"), "/", Method::GET),
            Ok("any")
        );
        assert_eq!(
            name(&table, Some("example.com"), "/", Method::GET),
            Ok("any")
        );
        assert_eq!(name(&table, None, "/v1", Method::GET), Ok("any"));
    }

    #[test]
    fn methods_never_fall_back() {
        let table = RouteTable::new(vec![
            route("root", None, "/", None),
            route("read", None, "/items", Some(&[Method::GET, Method::HEAD])),
            route("write", None, "/items", Some(&[Method::POST])),
        ])
        .expect("valid table");
        assert_eq!(name(&table, None, "/items/1", Method::GET), Ok("read"));
        assert_eq!(name(&table, None, "/items/1", Method::POST), Ok("write"));
        assert_eq!(
            name(&table, None, "/items/1", Method::DELETE),
            Err(RouteMiss::MethodNotAllowed(vec![
                Method::GET,
                Method::HEAD,
                Method::POST
            ]))
        );
        let empty = RouteTable::new(vec![]).expect("valid table");
        assert_eq!(
            name(&empty, None, "/", Method::GET),
            Err(RouteMiss::NotFound)
        );
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let conflicts = RouteTable::new(vec![
            route("a", None, "/x", Some(&[Method::GET])),
            route("b", None, "/x", Some(&[Method::GET, Method::POST])),
            route("c", None, "/x", None),
        ])
        .expect_err("overlaps");
        assert_eq!(
            conflicts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2, 2]
        );
    }

    #[test]
    fn ten_thousand_routes_resolve_by_hash() {
        let routes = (0..10_000)
            .map(|i| {
                route(
                    &format!("r{i}"),
                    Some(HostPattern::Exact(format!("h{}.example.com", i % 100))),
                    &format!("/svc{i}/api"),
                    None,
                )
            })
            .collect();
        let table = RouteTable::new(routes).expect("valid table");
        assert_eq!(
            name(
                &table,
                Some("h42.example.com"),
                "/svc9942/api/x/y",
                Method::GET
            ),
            Ok("r9942")
        );
        assert_eq!(
            name(&table, Some("h42.example.com"), "/svc9943/api", Method::GET),
            Err(RouteMiss::NotFound)
        );
    }
}
