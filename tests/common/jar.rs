//! A browser for HTTP-level tests: a cookie jar (one host, since browsers share cookies across
//! ports) and requests whose redirects the test follows by hand, to check every step.

use std::collections::BTreeMap;

use http::Request;
use http_body_util::Full;

use super::{h1_client, send, Reply};

/// A browser: cookies by name (one host: browsers share cookies across ports), redirects
/// followed by hand so each step can be checked.
#[derive(Default, Clone)]
pub struct Browser {
    pub jar: BTreeMap<String, String>,
}

impl Browser {
    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn absorb(&mut self, reply: &Reply) {
        for value in reply.headers.get_all(http::header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    pub async fn get(&mut self, url: &str, accept: &str) -> Reply {
        let mut req = Request::get(url).header("accept", accept);
        if !self.jar.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        let reply = send(&h1_client(), req.body(Full::default()).unwrap()).await;
        self.absorb(&reply);
        reply
    }

    pub async fn post(&mut self, url: &str, origin: Option<&str>) -> Reply {
        let mut req = Request::post(url).header("accept", "text/html");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if !self.jar.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        let reply = send(&h1_client(), req.body(Full::default()).unwrap()).await;
        self.absorb(&reply);
        reply
    }

    pub async fn navigate(&mut self, url: &str) -> Reply {
        self.get(url, "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
            .await
    }

    pub fn session_cookies(&self) -> Vec<(String, String)> {
        self.jar
            .iter()
            .filter(|(k, _)| k.starts_with("authgate_s"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Walks a login at the gateway `origin` (whose IdP is `issuer`, logging users in without a
    /// form) from a navigation to `path` until the gateway's callback answer.
    pub async fn log_in(&mut self, origin: &str, issuer: &str, path: &str) -> Reply {
        let start = self.navigate(&format!("{origin}{path}")).await;
        assert_eq!(
            start.status,
            302,
            "{}",
            String::from_utf8_lossy(&start.body)
        );
        let authorize = location(&start);
        assert!(authorize.starts_with(&format!("{issuer}/authorize?")));
        for param in [
            "code_challenge_method=S256",
            "response_type=code",
            "nonce=",
            "state=",
        ] {
            assert!(authorize.contains(param), "{param} in {authorize}");
        }
        let code = self.navigate(&authorize).await;
        assert_eq!(code.status, 302);
        let callback = location(&code);
        assert!(callback.starts_with(&format!("{origin}/.authgate/callback?")));
        self.navigate(&callback).await
    }
}

pub fn location(reply: &Reply) -> String {
    reply.headers["location"].to_str().unwrap().to_string()
}
