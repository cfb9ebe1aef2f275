//! Verify's answer: a verdict per presented token, whichever surface asked
//! (Verify, Envoy's Check, introspection, TokenReview).

/// The answer, in the order it is judged: the first that applies wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    OwnerDisabled,
    Inactive,
    InsufficientScope,
    /// A rate limit of the token or its owner has no calls left in this
    /// window.
    RateLimited,
    /// The token's credits do not cover the call's cost.
    UsageExceeded,
}

impl Verdict {
    /// What a client is told about a token that was not accepted: no more
    /// than RFC 6750 allows, and the same for every kind of bad token.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Valid => "the token is valid",
            Verdict::InsufficientScope => "the token lacks a required scope",
            Verdict::RateLimited => "the token has made too many calls; retry later",
            Verdict::UsageExceeded => "the token has used up its credits",
            Verdict::Expired | Verdict::Inactive => "the token has expired",
            Verdict::Revoked | Verdict::OwnerDisabled => "the token has been revoked",
            Verdict::Malformed | Verdict::Unknown => "the token is not valid",
        }
    }
}

impl Verdict {
    /// Every verdict, in the order they are judged.
    pub const ALL: [Verdict; 10] = [
        Verdict::Valid,
        Verdict::Malformed,
        Verdict::Unknown,
        Verdict::Revoked,
        Verdict::Expired,
        Verdict::OwnerDisabled,
        Verdict::Inactive,
        Verdict::InsufficientScope,
        Verdict::RateLimited,
        Verdict::UsageExceeded,
    ];

    /// Its name in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Malformed => "malformed",
            Verdict::Unknown => "unknown",
            Verdict::Revoked => "revoked",
            Verdict::Expired => "expired",
            Verdict::OwnerDisabled => "owner_disabled",
            Verdict::Inactive => "inactive",
            Verdict::InsufficientScope => "insufficient_scope",
            Verdict::RateLimited => "rate_limited",
            Verdict::UsageExceeded => "usage_exceeded",
        }
    }
}
