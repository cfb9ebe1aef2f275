//! Scopes: what a token may do. A required scope is covered by the same string,
//! or by a granted `x:*` when it starts with `x:`; latchkey's own scopes
//! (`latchkey:…`) only by the same string.

/// The longest scope accepted.
pub const MAX_SCOPE_LEN: usize = 128;

/// # Errors
/// Unless `scope` is 1-128 characters of `A-Za-z0-9_.:/*-`.
pub fn validate(scope: &str) -> Result<(), &'static str> {
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN {
        return Err("a scope must be 1-128 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.:/*-".contains(&b);
    if scope.bytes().all(allowed) {
        Ok(())
    } else {
        Err("a scope may contain only A-Z, a-z, 0-9 and _ . : / * -")
    }
}

/// The namespace of the scopes latchkey itself honours (administration,
/// self-renewal, introspection, TokenReview). No wildcard covers them: a
/// token given `latchkey:*`, or any `x:*` a product hands out freely, must
/// never become an admin credential by accident.
pub const RESERVED_PREFIX: &str = "latchkey:";

/// Whether `granted` covers `required`.
pub fn covers(granted: &str, required: &str) -> bool {
    if granted == required {
        return true;
    }
    if required.starts_with(RESERVED_PREFIX) {
        return false;
    }
    match granted.strip_suffix('*') {
        Some(stem) if stem.ends_with(':') => required.starts_with(stem),
        _ => false,
    }
}

/// The required scopes that no granted scope covers, in the order given.
pub fn missing<'a, 'g, S: AsRef<str>>(
    granted: impl Iterator<Item = &'g str> + Clone,
    required: &'a [S],
) -> Vec<&'a str> {
    required
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| !granted.clone().any(|g| covers(g, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_itself_only() {
        assert!(covers("repo:read", "repo:read"));
        assert!(!covers("repo:read", "repo:write"));
        assert!(!covers("repo", "repo:read"));
    }

    #[test]
    fn a_wildcard_covers_every_scope_under_its_stem() {
        assert!(covers("repo:*", "repo:read"));
        assert!(covers("repo:*", "repo:admin:all"));
        assert!(covers("repo:*", "repo:*"));
        assert!(!covers("repo:*", "repository:read"));
        assert!(!covers("repo:*", "repo"));
        assert!(!covers("*", "repo:read"));
        assert!(!covers("repo*", "repo:read"));
    }

    #[test]
    fn latchkey_scopes_are_covered_only_by_themselves() {
        assert!(covers("latchkey:admin", "latchkey:admin"));
        assert!(!covers("latchkey:*", "latchkey:admin"));
        assert!(!covers("latchkey:*", "latchkey:self-renew"));
        assert!(covers("latchkey:*", "latchkey:*"));
    }

    #[test]
    fn missing_lists_uncovered_scopes_in_request_order() {
        let granted = ["a:*", "b"];
        let required: Vec<String> = ["c", "a:x", "b", "d"].map(String::from).to_vec();
        assert_eq!(missing(granted.into_iter(), &required), vec!["c", "d"]);
    }

    #[test]
    fn scopes_are_short_and_from_a_fixed_alphabet() {
        assert!(validate("latchkey:admin").is_ok());
        assert!(validate("api/v1.read_all-x:*").is_ok());
        assert!(validate(&"a".repeat(128)).is_ok());
        assert!(validate("").is_err());
        assert!(validate(&"a".repeat(129)).is_err());
        assert!(validate("has space").is_err());
        assert!(validate("naïve").is_err());
    }
}
