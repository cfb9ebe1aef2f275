//! The statements of Verify's lookup by digest, built once at connect: a
//! cache miss should cost the database round trip, not query building.

use std::sync::Arc;

use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, JoinType, QueryFilter, QuerySelect, QueryTrait,
    RelationTrait, Select,
};

use crate::entity::{owners, tokens};

/// Column alias for the owner's disable time in [`Store::find_by_digest`].
pub(crate) const OWNER_DISABLE_TIME: &str = "owner_disable_time";
/// Column alias for the owner's rate limits in [`Store::find_by_digest`].
pub(crate) const OWNER_RATE_LIMITS: &str = "owner_rate_limits";

/// The token with a given digest (unique, so at most one row), with its
/// owner's disable time; the digest is the only parameter.
pub(crate) fn find_by_digest_sql(backend: DbBackend) -> Arc<str> {
    with_owner()
        .filter(tokens::Column::Digest.eq(Vec::<u8>::new()))
        .build(backend)
        .sql
        .into()
}

/// Tokens with their owner's disable time and rate limits: the columns
/// Verify caches a token from.
pub(crate) fn with_owner() -> Select<tokens::Entity> {
    tokens::Entity::find()
        .column_as(owners::Column::DisableTime, OWNER_DISABLE_TIME)
        .column_as(owners::Column::RateLimits, OWNER_RATE_LIMITS)
        .join(JoinType::LeftJoin, tokens::Relation::Owner.def())
}

/// PostgreSQL: [`find_by_digest_sql`] for an array of digests (`$1`,
/// `bytea[]`), each row naming its digest's position in the array (from 1).
/// The point select runs once per digest, unchanged (its `LIMIT` keeps the
/// planner from turning the lot into one join, which on a small table may
/// scan it): a probe of the unique index each, as alone.
pub(crate) fn find_by_digests_sql(one: &str) -> Arc<str> {
    let select = one
        .strip_suffix("$1")
        .expect("the point select ends with its digest parameter");
    format!(
        r#"SELECT "found".*, "lookup"."position" AS "{position}" FROM unnest($1::bytea[]) WITH ORDINALITY AS "lookup"("digest", "position") CROSS JOIN LATERAL ({select}"lookup"."digest" LIMIT 1) AS "found""#,
        position = crate::lanes::BATCH_POSITION,
    )
    .into()
}
