//! The token parser and the scope rules on arbitrary input: no panic, and
//! every answer consistent with the format's definition.
#![no_main]

use latchkey::token::{format, scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A prefix of its own from the first line, when it is a valid one.
    let (first, rest) = text.split_once('\n').unwrap_or(("", text));
    let prefix = format::Prefix::new(first).unwrap_or_default();
    if format::is_well_formed(&prefix, rest) {
        // Only prefix, `_`, 43 base62 characters and a matching checksum pass.
        assert!(rest.starts_with(prefix.as_str()));
        assert!(rest.is_ascii());
        // Any other character in any one place breaks it.
        let bytes = rest.as_bytes();
        let at = data.len() % bytes.len();
        for replacement in [b'0', b'a', b'Z', b'_', b'-'] {
            if replacement != bytes[at] {
                let mut changed = bytes.to_vec();
                changed[at] = replacement;
                let changed = String::from_utf8(changed).expect("ASCII");
                assert!(
                    !format::is_well_formed(&prefix, &changed),
                    "one change still passes"
                );
            }
        }
    }
    // Scopes: validation never panics, and coverage is reflexive and only
    // ever widened by a `stem:*` grant.
    let mut words = rest.split(' ');
    if let (Some(granted), Some(required)) = (words.next(), words.next()) {
        let _ = scope::validate(granted);
        assert!(scope::covers(granted, granted));
        if scope::covers(granted, required) && granted != required {
            let stem = granted.strip_suffix('*').expect("only a wildcard widens");
            assert!(stem.ends_with(':') && required.starts_with(stem));
        }
    }
});
