//! Header names with a meaning for the hop rather than the request: the hop-by-hop fields, and
//! the names that describe the client or ask a back end to route differently, which only a
//! trusted proxy may send. One table, read by forwarding and by the identity rules, so the
//! names the gateway strips and the names it refuses to inject cannot drift apart.
//!
//! Every match here reads `_` as `-`: CGI/WSGI servers, Rack and PHP turn both into the same
//! variable, so `X_Forwarded_For` is `X-Forwarded-For` to them. By default the pipeline drops
//! every request header whose name holds `_` ([`drop_underscored`], nginx's
//! `underscores_in_headers off`); a route that allows them still has each name the gateway
//! strips or sets removed in every spelling.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The standard hop-by-hop fields (RFC 9110 §7.6.1) plus the legacy ones still seen in the wild.
/// `Trailer` is not among them: it announces the trailers HTTP/1.1 peers will send, and hyper
/// writes only declared trailers.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Ask a back end to treat the request as another method than the one the route allowed.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Describe the client and are believed only from a trusted proxy; the `x-forwarded-` family is
/// matched by prefix (Prefix, Port, Server, Ssl, Scheme...).
pub const CLIENT_DESCRIBING: [&str; 6] = [
    "front-end-https",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-real-ip",
];

/// Asks a back end to route on another path than the one the gateway matched.
pub const PATH_OVERRIDES: [&str; 4] = [
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-http-destination-url",
];

/// Set by the gateway on every forwarded request; from a trusted proxy only these exact
/// spellings are read, so any other spelling of them is removed.
pub const SET_WHEN_FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Two header names an upstream may read as one: equal ignoring ASCII case, with `_` read as
/// `-`.
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    fn fold(byte: u8) -> u8 {
        if byte == b'_' {
            b'-'
        } else {
            byte.to_ascii_lowercase()
        }
    }
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// `name` is one of `names` in any spelling. `names` are lower-case with `-`, as `http` stores
/// names, so only a name holding `_` needs the slower folded comparison.
pub fn is_one_of(name: &str, names: &[&str]) -> bool {
    if name.contains('_') {
        names
            .iter()
            .any(|n| same_name(name.as_bytes(), n.as_bytes()))
    } else {
        names.contains(&name)
    }
}

/// `name` starts with `prefix` in any spelling.
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && same_name(&name.as_bytes()[..prefix.len()], prefix.as_bytes())
}

/// Removes every header whose name `matches`; returns the names removed. Collected first because
/// the map cannot change while its keys are borrowed; an empty collect does not allocate, which
/// keeps the usual request free of work.
pub fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) -> Vec<HeaderName> {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches(name.as_str()))
        .cloned()
        .collect();
    for name in &names {
        headers.remove(name);
    }
    names
}

/// Drops every header whose name holds `_` (nginx's default); returns the names dropped.
pub fn drop_underscored(headers: &mut HeaderMap) -> Vec<HeaderName> {
    remove_where(headers, |name| name.contains('_'))
}

/// `name` is a hop-by-hop field in any spelling (`te` and `trailer` included: neither may be
/// sent on as a trailer or injected).
pub fn is_hop_by_hop(name: &str) -> bool {
    is_one_of(name, &HOP_BY_HOP) || is_one_of(name, &["te", "trailer"])
}

/// Removes hop-by-hop headers, including every name listed in `Connection`. `te: trailers` is the
/// one hop-by-hop value that HTTP/2 allows and gRPC needs, so it alone survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Read first: a client that lists TE in Connection (as RFC 9110 asks) keeps `te: trailers`.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    remove_where(headers, |name| {
        is_one_of(name, &HOP_BY_HOP)
            || listed
                .iter()
                .any(|l| same_name(name.as_bytes(), l.as_str().as_bytes()))
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}
