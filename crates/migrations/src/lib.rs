//! latchkey's schema, as sea-orm migrations: one file per migration, applied in
//! order by [`Migrator`] on SQLite and PostgreSQL alike.
//!
//! Times are stored as BIGINT microseconds since the Unix epoch (UTC) and
//! durations as BIGINT microseconds. That keeps status arithmetic (`expire_time
//! <= now`, and idle deadlines later) the same portable SQL on both databases.

#![forbid(unsafe_code)]

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_tokens;
mod m20261123_000002_lifecycle_policies;
mod m20261124_000003_change_log;
mod m20261129_000004_self_renewal;
mod m20261129_000005_console_sessions;
mod m20261205_000006_console_links;
mod m20261205_000007_credits;
mod m20261206_000008_rate_limits;
mod m20261207_000009_client_details;
mod m20261207_000010_token_usage;
mod m20261208_000011_event_log;

/// Applies latchkey's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_tokens::Migration),
            Box::new(m20261123_000002_lifecycle_policies::Migration),
            Box::new(m20261124_000003_change_log::Migration),
            Box::new(m20261129_000004_self_renewal::Migration),
            Box::new(m20261129_000005_console_sessions::Migration),
            Box::new(m20261205_000006_console_links::Migration),
            Box::new(m20261205_000007_credits::Migration),
            Box::new(m20261206_000008_rate_limits::Migration),
            Box::new(m20261207_000009_client_details::Migration),
            Box::new(m20261207_000010_token_usage::Migration),
            Box::new(m20261208_000011_event_log::Migration),
        ]
    }
}
