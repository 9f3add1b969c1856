//! Keys and tokens for the load benchmark (`benches/load/run.sh`), written into one directory:
//!
//! - `jwks.json`: the public RS256 (`kid` "rs") and ES256 (`kid` "es") keys, served by the
//!   upstream nginx as a static file so authgate fetches its keys over loopback;
//! - `rs256.pub.pem`: the RS256 public key as SubjectPublicKeyInfo PEM, for HAProxy's
//!   `jwt_verify`;
//! - `rs256.valid`, `es256.valid`: valid tokens (a day long; the same string on every request);
//! - `rs256.badsig`: the valid RS256 claims signed by another key with the same `kid`, so the
//!   whole signature check runs and fails;
//! - `rs256.expired`: correctly signed, expired an hour ago (beyond any leeway);
//! - `malformed`: three segments that are not base64url JSON.
//!
//! Usage: `cargo run --example mint -- DIR ISSUER` (the issuer must match the configs).

use std::path::PathBuf;

use authgate::demo::issuer::SigningKey;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::json;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(issuer)) = (args.next(), args.next()) else {
        return Err("usage: mint DIR ISSUER".into());
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };

    let rs = SigningKey::generate(Algorithm::RS256, Some("rs"))?;
    let es = SigningKey::generate(Algorithm::ES256, Some("es"))?;
    let forger = SigningKey::generate(Algorithm::RS256, Some("rs"))?;
    let rs_jwk = rs.public_jwk(true).ok_or("no RSA JWK")?;
    let es_jwk = es.public_jwk(true).ok_or("no EC JWK")?;
    write(
        "jwks.json",
        &json!({ "keys": [rs_jwk, es_jwk] }).to_string(),
    )?;
    write("rs256.pub.pem", &rsa_spki_pem(&rs_jwk)?)?;

    let now = authgate::auth::jwt::now_unix();
    let claims = |sub: &str, iat: i64, exp: i64| {
        json!({
            "iss": issuer, "aud": "api", "sub": sub, "iat": iat, "exp": exp,
            "jti": format!("bench-{sub}"), "scope": "orders:read profile",
        })
    };
    let valid = claims("bench-user", now - 60, now + 86_400);
    write("rs256.valid", &rs.token(&valid))?;
    write("es256.valid", &es.token(&valid))?;
    write("rs256.badsig", &forger.token(&valid))?;
    write(
        "rs256.expired",
        &rs.token(&claims("bench-user", now - 7_200, now - 3_600)),
    )?;
    write("malformed", "bm90LWEtdG9rZW4.bm90LWpzb24.c2lnbmF0dXJl")?;
    Ok(())
}

/// DER length octets.
fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// A positive INTEGER from big-endian magnitude bytes.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_some_and(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der(0x02, &content)
}

/// SubjectPublicKeyInfo PEM of the RSA public key in `jwk` (`n`, `e`).
fn rsa_spki_pem(jwk: &serde_json::Value) -> Result<String, String> {
    let field = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(format!("JWK without {name}"))
    };
    let rsa_public_key = der(
        0x30,
        &[der_uint(&field("n")?), der_uint(&field("e")?)].concat(),
    );
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let bit_string = der(0x03, &[&[0u8][..], &rsa_public_key].concat());
    let spki = der(0x30, &[algorithm, bit_string].concat());
    let body = STANDARD.encode(spki);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    Ok(pem)
}
