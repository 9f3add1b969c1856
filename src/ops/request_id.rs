//! Request ids: one per request, in the access log line, on every other log line about the
//! request (through its span), sent upstream and returned to the client, errors included.
//! A well-formed `X-Request-Id` from a trusted proxy is kept, so one id follows a request
//! through the fleet; anything else is replaced, so a client cannot forge log correlation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderName, HeaderValue};

pub const HEADER: &str = "x-request-id";
/// [`HEADER`] parsed once, for the hot path.
pub const NAME: HeaderName = HeaderName::from_static(HEADER);

/// The longest incoming id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Keeps `incoming` when it is 1 to 128 characters of letters, digits and `-._~:+/=`
/// (UUIDs, ULIDs, base64, W3C trace ids); `None` otherwise.
pub fn accept(incoming: &HeaderValue) -> Option<HeaderValue> {
    let bytes = incoming.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:+/=".contains(b));
    valid.then(|| incoming.clone())
}

/// A new id: 32 hex digits, a random per-process prefix and a counter. Unique across replicas
/// without a random draw per request; an id is a correlation key, not a secret.
pub fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // Without randomness, the start time still separates processes in practice.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64 ^ u64::from(std::process::id())).to_be_bytes();
        }
        u64::from_be_bytes(bytes)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: this runs on every request, and the formatting machinery costs more than
    // the id is worth.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in prefix
        .to_be_bytes()
        .into_iter()
        .chain(count.to_be_bytes())
        .enumerate()
    {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_ids_are_kept_only_when_well_formed() {
        for good in [
            "7f3c2a9e-1b2d-4c5e-8f90-a1b2c3d4e5f6",
            "01HZX3Q7",
            "abc+/=",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(accept(&HeaderValue::from_static(good)).is_some(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in ["", "a b", "a\"b", "a,b", "<script>", long.as_str()] {
            let value = HeaderValue::from_str(bad).expect("header value");
            assert!(accept(&value).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_distinct_and_well_formed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(accept(&a).is_some());
    }
}
