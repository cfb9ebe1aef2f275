//! The event log and expiry warnings.
//!
//! `event_log` numbers every audit event in the order replicas append it,
//! written in the event's own transaction, so that WatchEvents can follow
//! the events of every replica from a cursor (a number) and resume there.
//! Events written before this migration are numbered in (time, id) order.
//! Rows are kept as long as their events.
//!
//! `tokens.expiry_warned`: the lead time (seconds) of the last EXPIRING
//! event given for the token, NULL for none; the warning task sets it with
//! a conditional update, so each lead is warned once across replicas. An
//! index on `expire_time` lets it find the tokens near their expiry.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventLog {
    Table,
    Seq,
    EventId,
    Owner,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    ExpiryWarned,
    ExpireTime,
}

const EXPIRE_TIME_INDEX: &str = "tokens_expire_time_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventLog::Table)
                    .col(
                        ColumnDef::new(EventLog::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(EventLog::EventId).uuid().not_null())
                    // The event's owner, so that a watcher of one owner
                    // passes over the others' numbers without reading them.
                    .col(ColumnDef::new(EventLog::Owner).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO event_log (event_id, owner) \
                 SELECT id, owner FROM token_events ORDER BY time, id",
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(ColumnDef::new(Tokens::ExpiryWarned).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EXPIRE_TIME_INDEX)
                    .table(Tokens::Table)
                    .col(Tokens::ExpireTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(EXPIRE_TIME_INDEX)
                    .table(Tokens::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::ExpiryWarned)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(EventLog::Table).to_owned())
            .await
    }
}
