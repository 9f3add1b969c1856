//! Which credential a request carries: `Authorization: Bearer <token>` (the scheme is
//! case-insensitive, exactly one token68). Another scheme (e.g. `Basic`) is no credential here
//! and passes through untouched. Two `Authorization` headers, or a Bearer header that is not
//! exactly one token, is a malformed request (400), never a guess. Tokens are never read from the
//! query string. The session-cookie source slots in as a second [`Source`].

use http::{header, HeaderMap};

/// Where the token came from; decides CSRF rules and what is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    AuthorizationHeader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub token: String,
    pub source: Source,
}

/// A request whose credentials cannot be read without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    MultipleAuthorization,
    MalformedBearer,
}

impl CredentialError {
    pub fn reason(self) -> &'static str {
        match self {
            CredentialError::MultipleAuthorization => "multiple_credentials",
            CredentialError::MalformedBearer => "malformed_authorization",
        }
    }
}

fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// The request's credential, if any.
pub fn extract(headers: &HeaderMap) -> Result<Option<Credential>, CredentialError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::MultipleAuthorization);
    }
    let value = value
        .to_str()
        .map_err(|_| CredentialError::MalformedBearer)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    if !is_token68(token) {
        return Err(CredentialError::MalformedBearer);
    }
    Ok(Some(Credential {
        token: token.to_string(),
        source: Source::AuthorizationHeader,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn bearer_forms() {
        let token = |v: &'static str| extract(&with(&[v])).map(|c| c.map(|c| c.token));
        assert_eq!(token("Bearer abc.def.ghi"), Ok(Some("abc.def.ghi".into())));
        assert_eq!(token("bearer abc"), Ok(Some("abc".into())));
        assert_eq!(token("BEARER   abc"), Ok(Some("abc".into())));
        assert_eq!(token("Basic dXNlcjpwYXNz"), Ok(None));
        assert_eq!(token("Bearer"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer "), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer a b"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer a,b"), Err(CredentialError::MalformedBearer));
        assert_eq!(token("Bearer ==="), Err(CredentialError::MalformedBearer));
        assert_eq!(extract(&HeaderMap::new()), Ok(None));
        assert_eq!(
            extract(&with(&["Bearer a", "Bearer a"])),
            Err(CredentialError::MultipleAuthorization)
        );
    }
}
