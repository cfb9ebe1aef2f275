//! Credentials as they arrive: `Authorization: Bearer <credential>`.

/// The credential of a `Bearer` authorization value (scheme case-insensitive).
pub fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let credential = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_credential("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credential("bearer  abc"), Some("abc"));
        assert_eq!(bearer_credential("Basic abc"), None);
        assert_eq!(bearer_credential("abc"), None);
        assert_eq!(bearer_credential("Bearer "), None);
    }
}
