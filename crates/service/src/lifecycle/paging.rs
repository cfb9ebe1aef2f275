//! Cursor paging shared by ListTokens and ListTokenEvents: page sizes, and
//! opaque page tokens bound to the query they were issued for.

use base64::Engine as _;
use uuid::Uuid;

use crate::audit::EventFilter;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{Cursor, ListFilter};

/// Default and largest page.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Page tokens are opaque: a version byte, the cursor, and a fingerprint of
/// the filter they were issued for, so a token cannot be replayed against
/// another query.
const PAGE_TOKEN_VERSION: u8 = 1;
const PAGE_TOKEN_LEN: usize = 1 + 8 + 16 + 4;

/// A validated paging request.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub size: u32,
    pub after: Option<Cursor>,
    fingerprint: u32,
}

impl Paging {
    /// # Errors
    /// `InvalidArgument` for a page size out of range, or a page token not
    /// issued for a query with this `fingerprint`.
    pub fn new(page_size: i32, page_token: &str, fingerprint: u32) -> Result<Self, Error> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n @ 1.. if n.unsigned_abs() <= MAX_PAGE_SIZE => n.unsigned_abs(),
            _ => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
                ));
            }
        };
        let after = match page_token {
            "" => None,
            t => Some(decode(t, fingerprint)?),
        };
        Ok(Paging {
            size,
            after,
            fingerprint,
        })
    }

    /// Rows to ask the store for: one more than a page, to know if another
    /// page follows.
    pub fn limit(&self) -> u64 {
        u64::from(self.size) + 1
    }

    /// Cuts `rows` to a page; returns the token for the next page (empty on
    /// the last one).
    pub fn finish<T>(&self, rows: &mut Vec<T>, cursor_of: impl Fn(&T) -> Cursor) -> String {
        if rows.len() <= self.size as usize {
            return String::new();
        }
        rows.truncate(self.size as usize);
        rows.last()
            .map(|last| encode(cursor_of(last), self.fingerprint))
            .unwrap_or_default()
    }
}

/// A fingerprint of a query's filter, from its parts in a fixed order.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for part in parts {
        h.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(part);
    }
    h.finalize()
}

fn encode(c: Cursor, fingerprint: u32) -> String {
    let mut b = Vec::with_capacity(PAGE_TOKEN_LEN);
    b.push(PAGE_TOKEN_VERSION);
    b.extend_from_slice(&c.time.as_micros().to_be_bytes());
    b.extend_from_slice(c.id.as_bytes());
    b.extend_from_slice(&fingerprint.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn decode(token: &str, fingerprint: u32) -> Result<Cursor, Error> {
    let bad = || Error::invalid("page_token", "is not a page token issued for this query");
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    if b.len() != PAGE_TOKEN_LEN || b[0] != PAGE_TOKEN_VERSION {
        return Err(bad());
    }
    let micros = i64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?);
    let id = Uuid::from_slice(&b[9..25]).map_err(|_| bad())?;
    let fp = u32::from_be_bytes(b[25..29].try_into().map_err(|_| bad())?);
    if fp != fingerprint {
        return Err(bad());
    }
    Ok(Cursor {
        time: Timestamp::from_micros(micros),
        id,
    })
}

pub(super) fn list_fingerprint(filter: &ListFilter) -> u32 {
    let mut statuses = filter.statuses.clone();
    statuses.sort();
    statuses.dedup();
    let statuses: Vec<u8> = statuses.into_iter().map(|s| s as u8).collect();
    let owner = filter.owner.as_deref().map(str::as_bytes);
    // Added last and only when set, so that page tokens of queries without
    // it keep their fingerprint.
    let expire_before = filter.expire_before.map(|t| t.as_micros().to_be_bytes());
    fingerprint(
        [
            b"tokens".as_slice(),
            owner.map_or(b"*".as_slice(), |o| o),
            if owner.is_some() { b"o" } else { b"-" },
            &statuses,
        ]
        .into_iter()
        .chain(expire_before.as_ref().map(<[u8; 8]>::as_slice)),
    )
}

pub(super) fn event_fingerprint(filter: &EventFilter) -> u32 {
    let id = filter.token_id.map(|u| *u.as_bytes());
    let owner = filter.owner.as_deref().map(str::as_bytes);
    fingerprint([
        b"events".as_slice(),
        id.as_ref().map_or(b"-".as_slice(), |b| b.as_slice()),
        owner.map_or(b"-".as_slice(), |o| o),
        if owner.is_some() { b"o" } else { b"-" },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Status;

    #[test]
    fn a_page_token_round_trips_for_its_own_query_only() {
        let a = fingerprint([b"owner".as_slice(), b"a"]);
        let b = fingerprint([b"owner".as_slice(), b"b"]);
        let c = Cursor {
            time: Timestamp::from_micros(42),
            id: Uuid::now_v7(),
        };
        let t = encode(c, a);
        assert_eq!(decode(&t, a).unwrap(), c);
        assert!(decode(&t, b).is_err());
        assert!(decode("garbage", a).is_err());
    }

    #[test]
    fn fingerprints_keep_part_boundaries() {
        assert_ne!(
            fingerprint([b"ab".as_slice(), b"c"]),
            fingerprint([b"a".as_slice(), b"bc"])
        );
    }

    #[test]
    fn page_sizes_outside_the_range_are_refused() {
        assert_eq!(Paging::new(0, "", 0).unwrap().size, DEFAULT_PAGE_SIZE);
        assert!(Paging::new(-1, "", 0).is_err());
        assert!(Paging::new(1001, "", 0).is_err());
        assert_eq!(Paging::new(1000, "", 0).unwrap().size, 1000);
    }

    #[test]
    fn the_status_filter_fingerprint_ignores_order_and_repeats() {
        let f = |s: Vec<Status>| {
            list_fingerprint(&ListFilter {
                statuses: s,
                ..ListFilter::default()
            })
        };
        assert_eq!(
            f(vec![Status::Revoked, Status::Active]),
            f(vec![Status::Active, Status::Revoked, Status::Active])
        );
        assert_ne!(f(vec![Status::Active]), f(vec![Status::Revoked]));
    }

    #[test]
    fn owner_filters_fingerprint_apart_from_no_filter() {
        let f = |owner: Option<&str>| {
            list_fingerprint(&ListFilter {
                owner: owner.map(str::to_owned),
                ..ListFilter::default()
            })
        };
        assert_ne!(f(Some("*")), f(None));
        assert_ne!(f(Some("a")), f(Some("b")));
    }

    #[test]
    fn an_expiry_bound_fingerprints_apart_and_leaves_unbounded_queries_alone() {
        let f = |micros: Option<i64>| {
            list_fingerprint(&ListFilter {
                expire_before: micros.map(Timestamp::from_micros),
                ..ListFilter::default()
            })
        };
        assert_ne!(f(Some(1)), f(None));
        assert_ne!(f(Some(1)), f(Some(2)));
        // As before the bound existed.
        assert_eq!(
            f(None),
            fingerprint([b"tokens".as_slice(), b"*", b"-", b""])
        );
    }
}
