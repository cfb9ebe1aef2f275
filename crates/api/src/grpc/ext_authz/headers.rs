//! The headers Check writes: their names, and values made safe to write.

use std::borrow::Cow;

/// Headers set on an allowed request for the upstream service.
pub const TOKEN_ID_HEADER: &str = "x-latchkey-token-id";
pub const OWNER_HEADER: &str = "x-latchkey-owner";
pub const SCOPES_HEADER: &str = "x-latchkey-scopes";

/// `value` with every control character percent-encoded (`%0D%0A`), so no
/// header Envoy writes can be split or cut short, whatever a stored owner
/// holds. Text fields refuse control characters on the way in; this guards
/// rows written before that rule, or straight into the database.
pub(super) fn header_safe(value: &str) -> Cow<'_, str> {
    // Bytes first: a control character is a byte under 0x20, 0x7F, or
    // (U+0080 to U+009F) 0xC2 and a second byte.
    let maybe = |b: &u8| *b < 0x20 || *b == 0x7f || *b == 0xc2;
    if !value.as_bytes().iter().any(maybe) || !value.chars().any(char::is_control) {
        return Cow::Borrowed(value);
    }
    let mut safe = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}
