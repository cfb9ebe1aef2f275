//! Properties of the token format and of scope matching, over generated
//! inputs (proptest): what a typo, a scanner or an attacker can send.

use latchkey::token::format::{self, Prefix};
use latchkey::token::scope;
use proptest::prelude::*;

fn prefix() -> impl Strategy<Value = Prefix> {
    "[a-z0-9]{1,16}".prop_map(|p| Prefix::new(&p).expect("a valid prefix"))
}

/// Scopes from a small alphabet, so that matches and wildcards happen often.
fn scope_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{1,3}(:[ab]{1,2}){0,2}",
        "[ab]{1,3}(:[ab]{1,2}){0,1}:\\*",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Every generated token parses, under every prefix.
    #[test]
    fn generated_tokens_are_well_formed(prefix in prefix()) {
        let token = format::generate(&prefix).unwrap();
        prop_assert!(format::is_well_formed(&prefix, token.expose()));
        let start = format!("{}_", prefix.as_str());
        prop_assert!(token.expose().starts_with(&start));
    }

    /// Any one character replaced, by anything else (ASCII or not), is
    /// MALFORMED: the checksum or the shape catches every single change.
    #[test]
    fn any_single_character_change_is_malformed(
        prefix in prefix(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let token = format::generate(&prefix).unwrap();
        let mut chars: Vec<char> = token.expose().chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        prop_assert!(!format::is_well_formed(&prefix, &changed), "{i}: {replacement:?} passed");
    }

    /// A character added or removed anywhere is MALFORMED.
    #[test]
    fn any_insertion_or_deletion_is_malformed(
        prefix in prefix(),
        at in any::<prop::sample::Index>(),
        inserted in "[0-9A-Za-z_]",
    ) {
        let token = format::generate(&prefix).unwrap();
        let s = token.expose();
        let i = at.index(s.len());
        let deleted = format!("{}{}", &s[..i], &s[i + 1..]);
        let longer = format!("{}{inserted}{}", &s[..i], &s[i..]);
        prop_assert!(!format::is_well_formed(&prefix, &deleted));
        prop_assert!(!format::is_well_formed(&prefix, &longer));
    }

    /// The parser takes any string without panicking, and accepts only the
    /// shape `prefix_` + 49 base62 characters.
    #[test]
    fn arbitrary_strings_never_panic_and_rarely_pass(prefix in prefix(), s in ".{0,80}") {
        if format::is_well_formed(&prefix, &s) {
            let start = format!("{}_", prefix.as_str());
            prop_assert!(s.starts_with(&start));
            prop_assert!(s[prefix.as_str().len() + 1..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    /// Covering is a preorder: every scope covers itself, and a scope
    /// covered by one covered by a third is covered by the third.
    #[test]
    fn covering_is_reflexive_and_transitive(a in scope_string(), b in scope_string(), c in scope_string()) {
        prop_assert!(scope::covers(&a, &a));
        if scope::covers(&a, &b) && scope::covers(&b, &c) {
            prop_assert!(scope::covers(&a, &c), "{a} ⊇ {b} ⊇ {c}");
        }
    }

    /// Only a `stem:*` grant covers anything but itself, and then exactly
    /// the scopes under its stem.
    #[test]
    fn only_a_wildcard_widens(granted in scope_string(), required in scope_string()) {
        let expected = granted == required
            || granted.strip_suffix('*').is_some_and(|stem| stem.ends_with(':') && required.starts_with(stem));
        prop_assert_eq!(scope::covers(&granted, &required), expected);
    }

    /// The scopes Verify reports missing are exactly the required ones no
    /// grant covers: a subset of the request, empty when every one is
    /// granted, never larger when more is granted, and never smaller when
    /// more is required.
    #[test]
    fn missing_scopes_are_the_uncovered_subset(
        granted in prop::collection::vec(scope_string(), 0..5),
        extra_grant in scope_string(),
        required in prop::collection::vec(scope_string(), 0..5),
        extra_required in scope_string(),
    ) {
        let missing = scope::missing(granted.iter().map(String::as_str), &required);
        for m in &missing {
            prop_assert!(required.iter().any(|r| r == m));
            prop_assert!(!granted.iter().any(|g| scope::covers(g, m)));
        }
        for r in &required {
            prop_assert_eq!(missing.contains(&r.as_str()), !granted.iter().any(|g| scope::covers(g, r)));
        }
        prop_assert!(scope::missing(required.iter().map(String::as_str), &required).is_empty());

        let mut more_granted = granted.clone();
        more_granted.push(extra_grant);
        let fewer = scope::missing(more_granted.iter().map(String::as_str), &required);
        prop_assert!(fewer.iter().all(|m| missing.contains(m)));

        let mut more_required = required.clone();
        more_required.push(extra_required);
        let more = scope::missing(granted.iter().map(String::as_str), &more_required);
        prop_assert!(missing.iter().all(|m| more.contains(m)));
    }
}
