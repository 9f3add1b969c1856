//! A local token issuer: ephemeral signing keys for every supported algorithm, and a loopback
//! server publishing their JWKS and an OIDC discovery document.
//!
//! `authgate demo` uses it to mint tokens for its protected echo route; the integration tests
//! use it as the real IdP they verify against (it counts JWKS fetches, rotates keys and can be
//! taken down). It signs whatever header and payload text it is given, so tests can also craft
//! tokens no honest issuer would produce. It is never part of the request path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::edge::body::{full, Body};

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A private key with its algorithm and `kid`.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    signer: Signer,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh key for `alg`. HMAC algorithms get a random secret of the hash's length.
    pub fn generate(alg: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        use Algorithm::*;
        let failed = |_| format!("cannot generate a {alg:?} key");
        let signer = match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?)
            }
            ES256 => Signer::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(failed)?,
            ),
            ES384 => Signer::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(failed)?,
            ),
            EdDSA => Signer::Ed(Ed25519KeyPair::generate().map_err(failed)?),
            HS256 | HS384 | HS512 => {
                let len = match alg {
                    HS384 => 48,
                    HS512 => 64,
                    _ => 32,
                };
                let mut secret = vec![0u8; len];
                aws_lc_rs::rand::fill(&mut secret).map_err(failed)?;
                Signer::Hmac(secret)
            }
            _ => return Err(format!("{alg:?} is not supported")),
        };
        Ok(SigningKey {
            alg,
            kid: kid.map(str::to_string),
            signer,
        })
    }

    /// An HMAC key with a given secret (a provider's `secret` is text, so tests choose it).
    pub fn hmac(alg: Algorithm, secret: &[u8], kid: Option<&str>) -> Self {
        SigningKey {
            alg,
            kid: kid.map(str::to_string),
            signer: Signer::Hmac(secret.to_vec()),
        }
    }

    /// The public JWK (with `kid`, `alg` and `use` when `annotate`); `None` for HMAC.
    pub fn public_jwk(&self, annotate: bool) -> Option<Value> {
        let mut jwk = match &self.signer {
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = if size == 32 { "P-256" } else { "P-384" };
                json!({ "kty": "EC", "crv": crv, "x": b64(&point[1..=size]), "y": b64(&point[1 + size..]) })
            }
            Signer::Ed(pair) => {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()) })
            }
            Signer::Hmac(_) => return None,
        };
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        if annotate {
            jwk["alg"] = json!(crate::auth::algorithms::algorithm_name(self.alg));
            jwk["use"] = json!("sig");
        }
        Some(jwk)
    }

    /// Signs `header.payload` given as JSON texts (written as given, so they may be unusual).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let signature = self.signature(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }

    fn signature(&self, message: &[u8]) -> Vec<u8> {
        use Algorithm::*;
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    RS384 => &signature::RSA_PKCS1_SHA384,
                    RS512 => &signature::RSA_PKCS1_SHA512,
                    PS256 => &signature::RSA_PSS_SHA256,
                    PS384 => &signature::RSA_PSS_SHA384,
                    PS512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                // Signing with a freshly generated key into a correctly sized buffer cannot fail.
                let _ = pair.sign(padding, &rng, message, &mut out);
                out
            }
            Signer::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let algorithm = match self.alg {
                    HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(algorithm, secret), message)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// The standard header for this key: `alg`, `typ`, and `kid` when the key has one.
    pub fn header(&self, typ: &str) -> Value {
        let mut header =
            json!({ "alg": crate::auth::algorithms::algorithm_name(self.alg), "typ": typ });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        header
    }

    /// A token with the standard header and the given claims.
    pub fn token(&self, claims: &Value) -> String {
        self.sign_raw(&self.header("JWT").to_string(), &claims.to_string())
    }
}

/// What the JWKS server publishes, and how it behaves.
struct Published {
    keys: Vec<Value>,
    cache_control: Option<String>,
    /// The demo login page: which cookie to set, the token to put in it, and the origin a
    /// return URL must start with (so the page is no open redirect).
    login: Option<(String, String, String)>,
}

/// An IdP on loopback: `/jwks` and `/.well-known/openid-configuration`.
pub struct JwksServer {
    pub addr: SocketAddr,
    published: Mutex<Published>,
    down: AtomicBool,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
    /// The `User-Agent` of the last JWKS and discovery request, in that order.
    user_agents: Mutex<(Option<String>, Option<String>)>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server = Arc::new(JwksServer {
            addr: listener.local_addr()?,
            published: Mutex::new(Published {
                keys,
                cache_control: None,
                login: None,
            }),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
            user_agents: Mutex::new((None, None)),
        });
        let serving = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let server = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(req)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(server)
    }

    /// The issuer URL whose discovery document this server publishes.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.lock().keys = keys;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.lock().cache_control = value.map(str::to_string);
    }

    /// Serves `/login?rd=URL`: sets `cookie=token` (HttpOnly, SameSite=Lax) and redirects to
    /// `rd` when it starts with `return_origin`. A stand-in for a real IdP's login flow.
    pub fn set_login(&self, cookie: &str, token: &str, return_origin: &str) {
        self.lock().login = Some((
            cookie.to_string(),
            token.to_string(),
            return_origin.to_string(),
        ));
    }

    /// While down, every request gets a 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> u64 {
        self.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The `User-Agent` of the last JWKS request.
    pub fn jwks_user_agent(&self) -> Option<String> {
        self.lock_user_agents().0.clone()
    }

    /// The `User-Agent` of the last discovery request.
    pub fn discovery_user_agent(&self) -> Option<String> {
        self.lock_user_agents().1.clone()
    }

    fn lock_user_agents(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<String>)> {
        self.user_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn login(&self, query: Option<&str>) -> Response<Body> {
        let Some((cookie, token, return_origin)) = self.lock().login.clone() else {
            let mut response = Response::new(full("no login configured"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        };
        let target = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "rd")
            .map(|(_, v)| crate::auth::credential::percent_decode(v))
            .filter(|rd| rd.starts_with(&format!("{return_origin}/")))
            .unwrap_or_else(|| format!("{return_origin}/"));
        let mut response = Response::new(full("logged in"));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        if let Ok(location) = http::HeaderValue::from_str(&target) {
            headers.insert(http::header::LOCATION, location);
        }
        if let Ok(set) = http::HeaderValue::from_str(&format!(
            "{cookie}={token}; Path=/; HttpOnly; SameSite=Lax"
        )) {
            headers.insert(http::header::SET_COOKIE, set);
        }
        response
    }

    fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match path {
            "/jwks" => self.lock_user_agents().0 = user_agent,
            "/.well-known/openid-configuration" => self.lock_user_agents().1 = user_agent,
            _ => {}
        }
        let (counter, body, cache_control) = match path {
            "/jwks" => {
                let published = self.lock();
                (
                    &self.jwks_fetches,
                    json!({ "keys": published.keys }).to_string(),
                    published.cache_control.clone(),
                )
            }
            "/.well-known/openid-configuration" => (
                &self.discovery_fetches,
                json!({ "issuer": self.issuer(), "jwks_uri": self.jwks_uri() }).to_string(),
                None,
            ),
            "/login" => return self.login(req.uri().query()),
            _ => {
                let mut response = Response::new(full("not found"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                return response;
            }
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            let mut response = Response::new(full("down"));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        let mut response = Response::new(full(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(value) = cache_control.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            response
                .headers_mut()
                .insert(http::header::CACHE_CONTROL, value);
        }
        response
    }
}
