//! The OP's wire details: form and query parameters, URLs with parameters appended, HTML
//! escaping, cookies, random values and the few response shapes every endpoint writes. Nothing
//! here decides anything about a request.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::auth::credential::{encode_query_value, percent_decode};
use crate::edge::body::{full, Body};

/// Larger form bodies are refused: every honest request to the OP is a few hundred bytes.
const FORM_LIMIT: usize = 64 * 1024;

/// How long a request body may take to arrive.
const FORM_DEADLINE: Duration = Duration::from_secs(10);

/// Parameters of a query string or an `application/x-www-form-urlencoded` body, in order.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(text: &str) -> Self {
        Params(
            text.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (form_decode(name), form_decode(value))
                })
                .collect(),
        )
    }

    /// The value of `name`. A parameter sent without a value counts as omitted (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The first of `names` sent more than once: RFC 6749 §3.1 forbids repeating a parameter,
    /// and a server that picked one of two values would let the two ends disagree.
    pub fn repeated<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names
            .iter()
            .copied()
            .find(|name| self.0.iter().filter(|(n, _)| n == name).count() > 1)
    }
}

/// Decodes one form-urlencoded component: `+` is a space, then `%XX` escapes.
pub fn form_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

/// Encodes a query or form value (everything but unreserved characters escaped).
pub fn encode(value: &str) -> String {
    encode_query_value(value)
}

/// `base` with `pairs` appended to its query (after `&` when it already has one).
pub fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = base.to_string();
    let mut separator = if base.contains('?') { '&' } else { '?' };
    for (name, value) in pairs {
        url.push(separator);
        url.push_str(&encode(name));
        url.push('=');
        url.push_str(&encode(value));
        separator = '&';
    }
    url
}

/// Escapes text for an HTML element or a quoted attribute value.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// 32 random bytes, base64url: codes, refresh tokens, session ids, `jti`s.
pub fn random_value() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    // The system RNG does not fail on the platforms we run on; an all-zero value would still be
    // refused nowhere, so no error path is worth inventing here.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// Reads a form body (bounded in size and time); `Err` says why it is not one.
pub async fn read_form(headers: &HeaderMap, body: Incoming) -> Result<Params, &'static str> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err("the body must be application/x-www-form-urlencoded");
    }
    let collected = tokio::time::timeout(FORM_DEADLINE, Limited::new(body, FORM_LIMIT).collect())
        .await
        .map_err(|_| "the body took too long")?
        .map_err(|_| "the body is too large or broken")?;
    let bytes: Bytes = collected.to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| "the body is not UTF-8")?;
    Ok(Params::parse(text))
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 302 to `location`, never cached (it may carry a code).
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    no_store(response.headers_mut());
    response
}

/// An HTML page; `body` is markup the caller has already escaped.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}</style></head>\n\
         <body>\n<h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape_html(title)
    );
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script runs on these pages, and no other site may frame the login form.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    no_store(headers);
    response
}

/// An error page that names what was wrong (escaped).
pub fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    page(
        status,
        "Sign-in error",
        &format!("<p>{}</p>", escape_html(message)),
    )
}

/// An OAuth error answer of the token endpoint (RFC 6749 §5.2).
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let mut response = crate::edge::body::json(
        status,
        &json!({ "error": error, "error_description": description }),
    );
    no_store(response.headers_mut());
    response
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = Response::new(full("method not allowed"));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Adds a `Set-Cookie` header.
pub fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_escapes_and_treat_empty_values_as_omitted() {
        let params = Params::parse("a=x+y%2Bz&b=&c&&d=%E2%9C%93&a=2");
        assert_eq!(params.get("a"), Some("x y+z"));
        assert_eq!(params.get("b"), None);
        assert_eq!(params.get("c"), None);
        assert_eq!(params.get("d"), Some("\u{2713}"));
        assert_eq!(params.repeated(&["b", "a"]), Some("a"));
        assert_eq!(params.repeated(&["b", "d"]), None);
    }

    #[test]
    fn queries_are_appended_with_the_right_separator_and_escaped() {
        assert_eq!(
            with_query("http://rp/cb", &[("code", "a b"), ("state", "&x=")]),
            "http://rp/cb?code=a%20b&state=%26x%3D"
        );
        assert_eq!(
            with_query("http://rp/cb?keep=1", &[("error", "access_denied")]),
            "http://rp/cb?keep=1&error=access_denied"
        );
    }

    #[test]
    fn html_escaping_covers_attribute_quotes() {
        assert_eq!(
            escape_html(r#""><script>'&'</script>"#),
            "&quot;&gt;&lt;script&gt;&#39;&amp;&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x_idp_session=no; a=1"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("idp_session=yes"));
        assert_eq!(cookie(&headers, "idp_session").as_deref(), Some("yes"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
