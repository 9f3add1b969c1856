//! Header names with a meaning for the hop rather than the request: the hop-by-hop fields, and
//! the names that describe the client or ask a back end to route differently, which only a
//! trusted proxy may send. One table, read by forwarding and by the identity rules, so the
//! names the gateway strips and the names it refuses to inject cannot drift apart.

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
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}
