//! What is stored instead of a token: `HMAC-SHA256(server key, whole token)`.
//!
//! A keyed MAC rather than a plain hash means a stolen database alone is not
//! enough to test guesses offline.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The shortest server key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// The HMAC of a token: the cache key and the database lookup key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

/// Hashes as its first eight bytes. An HMAC output is already uniform, and
/// unpredictable without the server key, so hashing it again buys no
/// spread and no defence against crafted collisions; [`DigestHasher`] passes
/// these bytes through.
impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (head, _) = self.0.split_first_chunk::<8>().expect("32 > 8");
        state.write_u64(u64::from_le_bytes(*head));
    }
}

/// The hasher for maps keyed by [`Digest`] (the digest's own bytes are the
/// hash), or by a `u64` whose bits are already spread (the Verify cache's
/// bucket keys).
#[derive(Clone, Copy, Debug, Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than a Digest is hashed: fold it
        // in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

impl Digest {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes; `None` unless exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Digest)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..4]))
    }
}

/// The server key, keyed once: each digest clones the keyed state instead of
/// hashing the key again.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
    id: String,
}

/// Why a configured key was refused; never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key must be at least {MIN_KEY_LEN} bytes, got {0}")]
    TooShort(usize),
    #[error("the key is neither hex nor base64")]
    Encoding,
}

impl TokenKey {
    /// # Errors
    /// If `bytes` is shorter than [`MIN_KEY_LEN`].
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| KeyError::Encoding)?;
        // The key id names the key without revealing it: the first 4 bytes of
        // its MAC over a fixed label.
        let mut label = mac.clone();
        label.update(b"latchkey key id");
        let id = hex::encode(&label.finalize().into_bytes()[..4]);
        Ok(TokenKey { mac, id })
    }

    /// Decodes a configured key: hex if it is hex, else base64 (standard or
    /// URL-safe, padded or not).
    ///
    /// # Errors
    /// If it is neither, or decodes to fewer than [`MIN_KEY_LEN`] bytes.
    pub fn from_encoded(encoded: &str) -> Result<Self, KeyError> {
        let s = encoded.trim();
        let bytes: zeroize::Zeroizing<Vec<u8>> = hex::decode(s)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
            .map_err(|_| KeyError::Encoding)?
            .into();
        Self::new(&bytes)
    }

    /// A fresh random 32-byte key and its hex encoding (for the key file).
    ///
    /// # Errors
    /// If the operating system cannot supply randomness.
    pub fn generate() -> Result<(Self, String), getrandom::Error> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        let encoded = hex::encode(bytes.as_ref());
        let key = Self::new(bytes.as_ref()).map_err(|_| getrandom::Error::UNSUPPORTED)?;
        Ok((key, encoded))
    }

    /// Names the key in the database, so keys can rotate later.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn digest(&self, token: &str) -> Digest {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        Digest(mac.finalize().into_bytes().into())
    }

    /// Whether `candidate` is the string whose digest is `expected`, compared in
    /// constant time.
    pub fn matches(&self, candidate: &str, expected: &Digest) -> bool {
        let mut mac = self.mac.clone();
        mac.update(candidate.as_bytes());
        mac.verify_slice(expected.as_bytes()).is_ok()
    }
}

/// The configured keys: the primary digests new tokens and every lookup
/// first; the others only find tokens stored before a rotation, which then
/// move to the primary as they are used.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<TokenKey>,
}

impl KeyRing {
    /// `keys`, the primary first.
    ///
    /// # Errors
    /// If there is none, or one is given twice.
    pub fn new(keys: Vec<TokenKey>) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|earlier| earlier.id == k.id) {
                return Err(KeyRingError::Repeated(k.id.clone()));
            }
        }
        Ok(KeyRing { keys })
    }

    pub fn primary(&self) -> &TokenKey {
        &self.keys[0]
    }

    /// The keys kept to find tokens stored before a rotation.
    pub fn older(&self) -> &[TokenKey] {
        &self.keys[1..]
    }

    /// Every key's id, the primary first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }
}

impl From<TokenKey> for KeyRing {
    fn from(key: TokenKey) -> Self {
        KeyRing { keys: vec![key] }
    }
}

/// Why a set of keys was refused; names keys by id only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("no key is configured")]
    Empty,
    #[error("key {0} is configured twice")]
    Repeated(String),
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn the_digest_is_hmac_sha256_of_the_whole_token() {
        // RFC 4231 has no 32-byte key case; this value is from Python's hmac module.
        let key = TokenKey::from_encoded(HEX_KEY).unwrap();
        assert_eq!(
            hex::encode(key.digest("lk_example").0),
            "39d243c05f1a966d4789334b05a6376cb4c55de338241acda505b4b487cc45b9"
        );
    }

    #[test]
    fn hex_and_base64_spellings_of_one_key_give_one_digest() {
        let hex_key = TokenKey::from_encoded(HEX_KEY).unwrap();
        let bytes = hex::decode(HEX_KEY).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let b64_key = TokenKey::from_encoded(&b64).unwrap();
        assert_eq!(hex_key.digest("x"), b64_key.digest("x"));
        assert_eq!(hex_key.id(), b64_key.id());
    }

    #[test]
    fn a_short_or_garbled_key_is_refused() {
        assert_eq!(
            TokenKey::from_encoded("abcd").unwrap_err(),
            KeyError::TooShort(2)
        );
        assert_eq!(
            TokenKey::from_encoded("not a key!").unwrap_err(),
            KeyError::Encoding
        );
    }

    #[test]
    fn matches_accepts_only_the_same_string() {
        let key = TokenKey::from_encoded(HEX_KEY).unwrap();
        let d = key.digest("admin-credential");
        assert!(key.matches("admin-credential", &d));
        assert!(!key.matches("admin-credentiaL", &d));
    }

    #[test]
    fn debug_output_names_the_key_id_and_no_key_material() {
        let key = TokenKey::from_encoded(HEX_KEY).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.id()));
        assert!(!debug.contains("0102030405"));
    }
}
