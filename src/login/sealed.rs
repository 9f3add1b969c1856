//! Authenticated encryption of what the gateway stores in a browser (sessions, login state):
//! AES-256-GCM under a key ring read from one string, the first key sealing and every key
//! opening, so keys rotate without logging anyone out. The purpose (the cookie name) is bound as
//! additional data, so a value sealed for one cookie never opens as another. This step never
//! decides whether what it opened is still valid, and no key, plaintext or sealed value ever
//! reaches an error, `Debug` or a log.
//!
//! A sealed value is base64url without padding (cookie-safe) of
//! `version (1 byte, = 1) || key id (4: SHA-256 of the key, truncated) || nonce (12) ||
//! ciphertext || tag (16)`: 33 bytes of overhead, so `n` plaintext bytes seal to
//! `ceil(4 * (n + 33) / 3)` characters (44 for an empty plaintext).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{digest, SHA256};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Bytes in one key: AES-256.
pub const KEY_LEN: usize = 32;
/// The format this code writes; a value with another version byte is refused, not guessed at.
pub const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// What sealing adds to the plaintext, before base64.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Operators paste keys from whatever tool they have: both alphabets, padding or not.
const KEY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const KEY_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, KEY_PADDING);
const KEY_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, KEY_PADDING);

struct RingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// The session key ring: the first key seals, every key opens.
pub struct SessionKeys {
    keys: Vec<RingKey>,
}

/// Shows only how many keys there are and their public ids (the ids travel in every cookie).
impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("SessionKeys")
            .field("key_ids", &ids)
            .finish()
    }
}

/// Why a key ring was refused. Positions are 1-based, in the order written; values never appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRingError {
    Empty,
    NotBase64 { position: usize },
    WrongLength { position: usize, length: usize },
    Duplicate { position: usize, first: usize },
}

impl KeyRingError {
    pub fn reason(&self) -> &'static str {
        match self {
            KeyRingError::Empty => "session_keys_empty",
            KeyRingError::NotBase64 { .. } => "session_key_not_base64",
            KeyRingError::WrongLength { .. } => "session_key_length",
            KeyRingError::Duplicate { .. } => "session_key_duplicate",
        }
    }
}

impl std::fmt::Display for KeyRingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRingError::Empty => write!(f, "no session key given"),
            KeyRingError::NotBase64 { position } => {
                write!(f, "session key {position} is not base64")
            }
            KeyRingError::WrongLength { position, length } => write!(
                f,
                "session key {position} decodes to {length} bytes; a key is exactly {KEY_LEN} \
                 random bytes in base64"
            ),
            KeyRingError::Duplicate { position, first } => {
                write!(f, "session key {position} repeats key {first}")
            }
        }
    }
}

impl std::error::Error for KeyRingError {}

/// Sealing failed: no randomness for the nonce, or the cipher refused. Never the caller's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    Randomness,
    Cipher,
}

impl SealError {
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::Randomness => "randomness_unavailable",
            SealError::Cipher => "session_seal_failed",
        }
    }
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::Randomness => write!(f, "the system random generator failed"),
            SealError::Cipher => write!(f, "encryption failed"),
        }
    }
}

impl std::error::Error for SealError {}

/// Why a sealed value did not open. All are the client's (or an old key's) doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    NotBase64,
    Truncated,
    UnsupportedVersion,
    /// Sealed under a key no longer in the ring (retired), or never in it.
    UnknownKey,
    /// The tag does not verify: altered, or sealed for another purpose.
    Tampered,
}

impl OpenError {
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::NotBase64 | OpenError::Truncated => "session_malformed",
            OpenError::UnsupportedVersion => "session_unsupported_version",
            OpenError::UnknownKey => "session_unknown_key",
            OpenError::Tampered => "session_tampered",
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::NotBase64 => "sealed value is not base64url",
            OpenError::Truncated => "sealed value is too short",
            OpenError::UnsupportedVersion => "sealed value has an unknown format version",
            OpenError::UnknownKey => "sealed under a key that is not in the ring",
            OpenError::Tampered => "sealed value does not authenticate",
        })
    }
}

impl std::error::Error for OpenError {}

impl SessionKeys {
    /// Reads a ring from one string (an environment variable): keys separated by commas and/or
    /// whitespace, each 32 bytes in standard or URL-safe base64, padded or not.
    pub fn parse(text: &str) -> Result<SessionKeys, KeyRingError> {
        let mut keys = Vec::new();
        let mut digests: Vec<[u8; 32]> = Vec::new();
        let items = text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|item| !item.is_empty());
        for (index, item) in items.enumerate() {
            let position = index + 1;
            let bytes = KEY_STANDARD
                .decode(item)
                .or_else(|_| KEY_URL_SAFE.decode(item))
                .map_err(|_| KeyRingError::NotBase64 { position })?;
            if bytes.len() != KEY_LEN {
                return Err(KeyRingError::WrongLength {
                    position,
                    length: bytes.len(),
                });
            }
            let mut full = [0u8; 32];
            full.copy_from_slice(digest(&SHA256, &bytes).as_ref());
            if let Some(first) = digests.iter().position(|d| *d == full) {
                return Err(KeyRingError::Duplicate {
                    position,
                    first: first + 1,
                });
            }
            digests.push(full);
            let key =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyRingError::WrongLength {
                    position,
                    length: bytes.len(),
                })?;
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(&full[..KEY_ID_LEN]);
            keys.push(RingKey {
                id,
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(SessionKeys { keys })
    }

    /// A fresh random key in base64url, as `parse` reads it: for docs, the demo and operators.
    pub fn generate_one() -> Result<String, SealError> {
        let mut key = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| SealError::Randomness)?;
        Ok(URL_SAFE_NO_PAD.encode(key))
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a parsed ring; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Encrypts `plaintext` for `purpose` under the first key, with a fresh random nonce.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let signer = self.keys.first().ok_or(SealError::Cipher)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Randomness)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&signer.id);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        signer
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&out[..1 + KEY_ID_LEN], purpose)),
                &mut body,
            )
            .map_err(|_| SealError::Cipher)?;
        out.extend_from_slice(&body);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts a value `seal` produced for the same `purpose` under any key of the ring.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        // The strict engine refuses padding and non-zero trailing bits: one spelling per value.
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| OpenError::NotBase64)?;
        if bytes.len() < OVERHEAD {
            return Err(OpenError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(OpenError::UnsupportedVersion);
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        let id = &header[1..1 + KEY_ID_LEN];
        let nonce = &header[1 + KEY_ID_LEN..];
        let additional = aad(&header[..1 + KEY_ID_LEN], purpose);
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(OpenError::UnknownKey);
        }
        // Two keys sharing a 4-byte id is unlikely but harmless: each is tried.
        for candidate in candidates {
            let nonce =
                Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Truncated)?;
            let mut in_out = body.to_vec();
            if let Ok(plain) =
                candidate
                    .key
                    .open_in_place(nonce, Aad::from(additional.as_slice()), &mut in_out)
            {
                let len = plain.len();
                in_out.truncate(len);
                return Ok(in_out);
            }
        }
        Err(OpenError::Tampered)
    }
}

/// The version and key id are authenticated with the purpose, so a future format cannot be
/// confused with this one; the header has a fixed length, so no separator is needed.
fn aad(version_and_id: &[u8], purpose: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(version_and_id.len() + purpose.len());
    out.extend_from_slice(version_and_id);
    out.extend_from_slice(purpose.as_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn key(byte: u8) -> String {
        URL_SAFE_NO_PAD.encode([byte; KEY_LEN])
    }

    fn ring(text: &str) -> SessionKeys {
        SessionKeys::parse(text).unwrap()
    }

    #[test]
    fn parses_separators_alphabets_and_padding() {
        // 0xfb bytes make '+'/'/' in standard and '-'/'_' in URL-safe base64.
        let bytes = [0xfb_u8; KEY_LEN];
        let standard = STANDARD.encode(bytes);
        assert!(standard.contains('+') && standard.ends_with('='));
        let url_unpadded = URL_SAFE_NO_PAD.encode([0xfa_u8; KEY_LEN]);
        let standard_unpadded = standard.trim_end_matches('=').to_string();
        let text = format!(" {standard}, {url_unpadded}\n\t{},,{}  ", key(1), key(2));
        assert_eq!(ring(&text).len(), 4);
        assert_eq!(ring(&standard_unpadded).len(), 1);
        assert_eq!(ring(&key(7)).len(), 1);
    }

    #[test]
    fn refuses_bad_rings_without_echoing_keys() {
        let cases: Vec<(String, KeyRingError)> = vec![
            (String::new(), KeyRingError::Empty),
            (" , \n ,".into(), KeyRingError::Empty),
            (
                format!("{},not*base64", key(1)),
                KeyRingError::NotBase64 { position: 2 },
            ),
            (
                URL_SAFE_NO_PAD.encode([1u8; 16]),
                KeyRingError::WrongLength {
                    position: 1,
                    length: 16,
                },
            ),
            (
                format!("{} {}", key(1), URL_SAFE_NO_PAD.encode([1u8; 33])),
                KeyRingError::WrongLength {
                    position: 2,
                    length: 33,
                },
            ),
            (
                format!("{},{},{}", key(1), key(2), STANDARD.encode([1u8; KEY_LEN])),
                KeyRingError::Duplicate {
                    position: 3,
                    first: 1,
                },
            ),
        ];
        for (text, want) in cases {
            let err = SessionKeys::parse(&text).unwrap_err();
            assert_eq!(err, want, "{text}");
            assert!(!err.reason().is_empty());
            let shown = format!("{err} {err:?}");
            for item in text.split([',', ' ']).filter(|i| i.len() > 8) {
                assert!(!shown.contains(item), "{shown} echoes a key");
            }
        }
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = SessionKeys::generate_one().unwrap();
        let b = SessionKeys::generate_one().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(ring(&format!("{a},{b}")).len(), 2);
    }

    #[test]
    fn round_trip_and_sizes() {
        let keys = ring(&key(1));
        for n in [0usize, 1, 2, 3, 100, 1000, 3000] {
            let plain = vec![b'x'; n];
            let sealed = keys.seal("sess", &plain).unwrap();
            assert_eq!(sealed.len(), (4 * (n + OVERHEAD)).div_ceil(3), "n={n}");
            assert!(sealed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(keys.open("sess", &sealed).unwrap(), plain);
        }
        assert_eq!(OVERHEAD, 33);
        assert_eq!(keys.seal("p", b"").unwrap().len(), 44);
        // A fresh nonce each time: the same plaintext never seals to the same text.
        assert_ne!(
            keys.seal("p", b"same").unwrap(),
            keys.seal("p", b"same").unwrap()
        );
    }

    #[test]
    fn purpose_is_bound() {
        let keys = ring(&key(1));
        let sealed = keys.seal("__Host-authgate", b"session").unwrap();
        assert_eq!(
            keys.open("__Host-authgate-login-abc", &sealed),
            Err(OpenError::Tampered)
        );
        assert_eq!(keys.open("", &sealed), Err(OpenError::Tampered));
    }

    #[test]
    fn rotation_and_retirement() {
        let old = ring(&key(1));
        let sealed_old = old.seal("s", b"v").unwrap();
        // The new key seals first, the old one still opens.
        let rotated = ring(&format!("{},{}", key(2), key(1)));
        assert_eq!(rotated.open("s", &sealed_old).unwrap(), b"v");
        let sealed_new = rotated.seal("s", b"w").unwrap();
        assert_eq!(ring(&key(2)).open("s", &sealed_new).unwrap(), b"w");
        assert_eq!(old.open("s", &sealed_new), Err(OpenError::UnknownKey));
        // Retired: the old key is gone.
        assert_eq!(
            ring(&key(2)).open("s", &sealed_old),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn malformed_values() {
        let keys = ring(&key(1));
        let sealed = keys.seal("s", b"value").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        assert_eq!(keys.open("s", ""), Err(OpenError::Truncated));
        assert_eq!(keys.open("s", "A"), Err(OpenError::NotBase64));
        assert_eq!(keys.open("s", "!!!!"), Err(OpenError::NotBase64));
        assert_eq!(
            keys.open("s", &format!("{sealed}=")),
            Err(OpenError::NotBase64)
        );
        assert_eq!(
            keys.open("s", &URL_SAFE_NO_PAD.encode(&raw[..OVERHEAD - 1])),
            Err(OpenError::Truncated)
        );
        raw[0] = 2;
        assert_eq!(
            keys.open("s", &URL_SAFE_NO_PAD.encode(&raw)),
            Err(OpenError::UnsupportedVersion)
        );
        raw[0] = VERSION;
        raw[1] ^= 1;
        assert_eq!(
            keys.open("s", &URL_SAFE_NO_PAD.encode(&raw)),
            Err(OpenError::UnknownKey)
        );
        raw[1] ^= 1;
        let last = raw.len() - 1;
        raw[last] ^= 0x80;
        assert_eq!(
            keys.open("s", &URL_SAFE_NO_PAD.encode(&raw)),
            Err(OpenError::Tampered)
        );
        for err in [
            OpenError::NotBase64,
            OpenError::Truncated,
            OpenError::UnsupportedVersion,
            OpenError::UnknownKey,
            OpenError::Tampered,
        ] {
            assert!(err.reason().starts_with("session_"));
        }
    }

    /// Every truncation and every single-bit flip of a real sealed value, in binary and in its
    /// text, is refused without a panic.
    #[test]
    fn never_opens_or_panics_on_corruption() {
        let keys = ring(&format!("{},{}", key(1), key(2)));
        let sealed = keys.seal("s", b"{\"sub\":\"alice\"}").unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for cut in 0..raw.len() {
            assert!(keys
                .open("s", &URL_SAFE_NO_PAD.encode(&raw[..cut]))
                .is_err());
        }
        for cut in 0..sealed.len() {
            assert!(keys.open("s", &sealed[..cut]).is_err());
        }
        for index in 0..raw.len() {
            for bit in 0..8 {
                let mut flipped = raw.clone();
                flipped[index] ^= 1 << bit;
                assert!(keys.open("s", &URL_SAFE_NO_PAD.encode(&flipped)).is_err());
            }
        }
        let text = sealed.as_bytes();
        for index in 0..text.len() {
            for replacement in [b'A', b'_', b'-', b'=', b'.', b' ', 0xff] {
                let mut changed = text.to_vec();
                if changed[index] == replacement {
                    continue;
                }
                changed[index] = replacement;
                let changed = String::from_utf8_lossy(&changed);
                if changed == sealed {
                    continue;
                }
                assert!(keys.open("s", &changed).is_err(), "{index}");
            }
        }
        assert_eq!(keys.open("s", &sealed).unwrap(), b"{\"sub\":\"alice\"}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let text = key(9);
        let shown = format!("{:?}", ring(&text));
        assert!(shown.starts_with("SessionKeys"));
        assert!(!shown.contains(&text[..10]));
    }
}
