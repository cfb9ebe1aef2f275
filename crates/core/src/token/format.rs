//! The token string: `<prefix>_<body><check>`.
//!
//! `body` is 43 base62 characters drawn uniformly from the OS CSPRNG (43 × log2 62
//! ≈ 256.03 bits); `check` is the CRC32 of `<prefix>_<body>` as 6 base62 digits.
//! The checksum lets Verify, and secret scanners, reject typos and random strings
//! offline, before any lookup (the GitHub token design).

use std::fmt;
use std::sync::LazyLock;

/// Base62 digits in ascending order; the checksum is written in this base.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Base62 characters of random body.
pub const BODY_LEN: usize = 43;
/// Base62 characters of CRC32 (62^6 > 2^32).
pub const CHECK_LEN: usize = 6;
/// The longest prefix accepted.
pub const MAX_PREFIX_LEN: usize = 16;

/// The part before `_`. It is part of every issued token and of the checksum,
/// so changing it on a running deployment turns every existing token MALFORMED:
/// choose it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// # Errors
    /// Unless the prefix is 1-16 characters of `a-z0-9`.
    pub fn new(prefix: &str) -> Result<Self, &'static str> {
        let ok = (1..=MAX_PREFIX_LEN).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Prefix(prefix.to_owned()))
        } else {
            Err("must be 1-16 characters of a-z and 0-9")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of every token with this prefix.
    fn token_len(&self) -> usize {
        self.0.len() + 1 + BODY_LEN + CHECK_LEN
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix("lk".to_owned())
    }
}

/// A token secret. Its `Debug` shows only the type, so it cannot reach a log by
/// a stray `{:?}`; read it with [`Secret::expose`] where it must leave the
/// process. Its memory is zeroed when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// Wraps a string that must be treated as secret.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Draws a new token from the OS CSPRNG.
///
/// # Errors
/// If the operating system cannot supply randomness.
pub fn generate(prefix: &Prefix) -> Result<Secret, getrandom::Error> {
    let mut token = String::with_capacity(prefix.token_len());
    token.push_str(prefix.as_str());
    token.push('_');
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < BODY_LEN {
        getrandom::fill(&mut pool)?;
        // Rejection sampling keeps every character uniform: 248 = 4 × 62.
        for &b in pool.iter().filter(|&&b| b < 248) {
            if filled == BODY_LEN {
                break;
            }
            token.push(char::from(ALPHABET[usize::from(b % 62)]));
            filled += 1;
        }
    }
    let check = checksum(token.as_bytes());
    token.push_str(std::str::from_utf8(&check).unwrap_or_default());
    Ok(Secret(token))
}

/// True when `token` has this prefix, the exact length and alphabet, and a
/// checksum that matches. Costs a length check, a scan and a CRC32 over ~50
/// bytes: no allocation, no lookup.
pub fn is_well_formed(prefix: &Prefix, token: &str) -> bool {
    has_shape(prefix, token) && checksum_matches(token)
}

/// True when `token` has this prefix, the exact length and alphabet: the
/// checks of [`is_well_formed`] but the checksum, for a caller that has
/// other proof the token is genuine (its digest is a known token's).
pub fn has_shape(prefix: &Prefix, token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.len() != prefix.token_len() {
        return false;
    }
    let p = prefix.as_str().len();
    if &bytes[..p] != prefix.as_str().as_bytes() || bytes[p] != b'_' {
        return false;
    }
    bytes[p + 1..].iter().all(u8::is_ascii_alphanumeric)
}

/// True when the last characters of a token of the right shape
/// ([`has_shape`]) are the checksum of the rest.
pub fn checksum_matches(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() > CHECK_LEN && {
        let (signed, check) = bytes.split_at(bytes.len() - CHECK_LEN);
        checksum(signed) == check
    }
}

/// `<prefix>_…<last 4 characters>`: recognisable in a list, useless to an attacker.
pub fn display_hint(prefix: &Prefix, secret: &Secret) -> String {
    let s = secret.expose();
    let tail = &s[s.len().saturating_sub(4)..];
    format!("{}_…{}", prefix.as_str(), tail)
}

/// CRC32 of `data` as 6 base62 digits, most significant first.
fn checksum(data: &[u8]) -> [u8; CHECK_LEN] {
    // `crc32fast::hash` probes the CPU on every call; Verify runs this on
    // every request, so the probe is done once and its hasher cloned.
    static CRC32: LazyLock<crc32fast::Hasher> = LazyLock::new(crc32fast::Hasher::new);
    let mut crc = CRC32.clone();
    crc.update(data);
    let mut n = crc.finalize();
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk() -> Prefix {
        Prefix::default()
    }

    #[test]
    fn a_generated_token_has_the_documented_shape_and_passes_its_own_check() {
        let t = generate(&lk()).unwrap();
        let s = t.expose();
        assert_eq!(s.len(), 3 + BODY_LEN + CHECK_LEN);
        assert!(s.starts_with("lk_"));
        assert!(s[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(is_well_formed(&lk(), s));
    }

    #[test]
    fn two_generated_tokens_differ() {
        assert_ne!(generate(&lk()).unwrap(), generate(&lk()).unwrap());
    }

    #[test]
    fn a_token_with_a_typo_is_malformed() {
        let t = generate(&lk()).unwrap();
        let s = t.expose();
        for i in 3..s.len() {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(b).unwrap();
            assert!(!is_well_formed(&lk(), &typo), "typo at {i} passed");
            // The shape alone passes; the checksum catches the typo.
            assert!(has_shape(&lk(), &typo) && !checksum_matches(&typo));
        }
        assert!(has_shape(&lk(), s) && checksum_matches(s));
        assert!(!checksum_matches("") && !checksum_matches("abc"));
    }

    #[test]
    fn a_token_with_another_prefix_or_length_or_alphabet_is_malformed() {
        let t = generate(&lk()).unwrap();
        let s = t.expose();
        assert!(!is_well_formed(&Prefix::new("ab").unwrap(), s));
        assert!(!is_well_formed(&lk(), &s[..s.len() - 1]));
        assert!(!is_well_formed(&lk(), &format!("{s}x")));
        assert!(!is_well_formed(&lk(), &s.replacen('_', "-", 1)));
        assert!(!is_well_formed(&lk(), ""));
        assert!(!is_well_formed(&lk(), &format!("lk_{}", "é".repeat(24))));
    }

    #[test]
    fn the_checksum_is_six_zero_padded_base62_digits() {
        assert_eq!(&checksum(b""), b"000000");
        // CRC32("lk_") = 0xc351155f = 3_276_871_007, "3ZlPqB" in base62.
        assert_eq!(crc32fast::hash(b"lk_"), 3_276_871_007);
        assert_eq!(&checksum(b"lk_"), b"3ZlPqB");
    }

    #[test]
    fn prefixes_are_short_lowercase_alphanumerics() {
        assert!(Prefix::new("lk").is_ok());
        assert!(Prefix::new("acme2").is_ok());
        assert!(Prefix::new("").is_err());
        assert!(Prefix::new("Lk").is_err());
        assert!(Prefix::new("l_k").is_err());
        assert!(Prefix::new(&"a".repeat(17)).is_err());
    }

    #[test]
    fn the_display_hint_shows_the_prefix_and_last_four_characters_only() {
        let t = generate(&lk()).unwrap();
        let hint = display_hint(&lk(), &t);
        assert_eq!(hint, format!("lk_…{}", &t.expose()[t.expose().len() - 4..]));
    }

    #[test]
    fn a_secret_debug_prints_no_secret() {
        let t = generate(&lk()).unwrap();
        assert_eq!(format!("{t:?}"), "Secret(..)");
    }
}
