//! SQL pieces shared by the tables' queries: keyset paging and JSON maps.

use std::collections::BTreeMap;

use latchkey_core::query::Cursor;
use sea_orm::{ColumnTrait, Condition};

/// Rows per multi-row INSERT in bulk loads: 1,000 tokens bind about 19,000
/// parameters, under both SQLite's and PostgreSQL's limits.
pub const BULK_CHUNK: usize = 1_000;

/// Rows strictly after cursor `c` in newest-first `(time, id)` order.
pub(crate) fn before<C: ColumnTrait>(time: C, id: C, c: Cursor) -> Condition {
    let t = c.time.as_micros();
    Condition::any()
        .add(time.lt(t))
        .add(Condition::all().add(time.eq(t)).add(id.lt(c.id)))
}

/// A map of strings as a JSON object (metadata, event detail).
pub(crate) fn encode_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}
