//! Usage limits as the console's forms write them: rate limits as
//! `name=limit/window` pairs (`per-second=50/1s, per-day=10000/1d`, as the
//! CLI's `--rate-limit`), credits as a count with an optional refill
//! (`1000/1d`). The lifecycle checks what they say; this only reads them.

use latchkey_core::limit::{Credits, RateLimit, parse_rate_limit, parse_refill};

use crate::clock::Timestamp;

use crate::error::Error;

/// A form's `rate_limits` field, if it has one: `NAME=LIMIT/WINDOW`
/// pairs, comma-separated; blank: none.
///
/// # Errors
/// `InvalidArgument` naming `rate_limits` for what does not read.
pub(super) fn rate_limits(field: Option<&str>) -> Result<Option<Vec<RateLimit>>, Error> {
    let Some(text) = field else {
        return Ok(None);
    };
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| parse_rate_limit(part).map_err(|why| Error::invalid("rate_limits", why)))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A form's `credits` and `refill` fields, if it has them: a blank count
/// is unlimited use.
///
/// # Errors
/// `InvalidArgument` naming `credits` or `refill` for what does not read.
pub(super) fn credits(
    count: Option<&str>,
    refill: Option<&str>,
) -> Result<Option<Option<Credits>>, Error> {
    let Some(count) = count else {
        return Ok(None);
    };
    let count = count.trim();
    if count.is_empty() {
        return Ok(Some(None));
    }
    let remaining = count
        .parse()
        .map_err(|_| Error::invalid("credits", "a whole number, or blank for unlimited"))?;
    let refill = match refill.map_or("", str::trim) {
        "" => None,
        text => Some(parse_refill(text).map_err(|why| Error::invalid("refill", why))?),
    };
    Ok(Some(Some(Credits {
        remaining,
        refill,
        period: 0,
        generation: 0,
    })))
}

/// Rate limits as the form writes them.
pub(super) fn written(limits: &[RateLimit]) -> String {
    limits
        .iter()
        .map(|l| {
            format!(
                "{}={}/{}",
                l.name,
                l.limit,
                humantime::format_duration(l.window)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rate limits as "50 per 1s (per-second)", and credits, in words.
pub(super) fn in_words(
    rate_limits: &[RateLimit],
    credits: Option<&Credits>,
    now: Timestamp,
) -> String {
    let span = humantime::format_duration;
    let mut words: Vec<String> = (rate_limits.iter())
        .map(|l| format!("{} per {} ({})", l.limit, span(l.window), l.name))
        .collect();
    if let Some(c) = credits {
        words.push(format!("{} credits left", c.remaining_at(now)));
        if let Some(r) = c.refill {
            words.push(format!(
                "refilled to {} every {}",
                r.amount,
                span(r.interval)
            ));
        }
    }
    if words.is_empty() {
        "none".to_owned()
    } else {
        words.join(", ")
    }
}

/// The token page's form fields: rate limits, credits left (blank:
/// unlimited) and refill.
pub(super) fn fields(
    rate_limits: &[RateLimit],
    credits: Option<&Credits>,
    now: Timestamp,
) -> [String; 3] {
    [
        written(rate_limits),
        credits.map_or_else(String::new, |c| c.remaining_at(now).to_string()),
        credits
            .and_then(|c| c.refill)
            .map_or_else(String::new, |r| {
                format!("{}/{}", r.amount, humantime::format_duration(r.interval))
            }),
    ]
}
