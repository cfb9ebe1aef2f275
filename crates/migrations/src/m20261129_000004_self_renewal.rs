//! Which renewal links reuse detection follows: `tokens.self_renewed` is
//! true for a token its predecessor (`replaces`) issued through RenewSelf.
//! Presenting a replaced secret revokes a chain only along such links; an
//! admin renewal (false) or a restore (which clears it) starts a new chain.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    SelfRenewed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(
                        ColumnDef::new(Tokens::SelfRenewed)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        // Links made before the column existed: a token renewed itself when
        // its RENEWED event names itself as the actor. UUIDs are stored as
        // `uuid` on PostgreSQL and as 16 bytes on SQLite; actors as text.
        let db = manager.get_connection();
        let uuid_text = match db.get_database_backend() {
            DbBackend::Postgres => "CAST(tokens.replaces AS TEXT)".to_owned(),
            _ => {
                let part =
                    |from: u32, len: u32| format!("substr(hex(tokens.replaces), {from}, {len})");
                format!(
                    "lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {})",
                    part(1, 8),
                    part(9, 4),
                    part(13, 4),
                    part(17, 4),
                    part(21, 12)
                )
            }
        };
        db.execute_unprepared(&format!(
            "UPDATE tokens SET self_renewed = TRUE WHERE replaces IS NOT NULL AND EXISTS \
             (SELECT 1 FROM token_events e WHERE e.token_id = tokens.replaces \
              AND e.kind = 'RENEWED' AND e.actor = {uuid_text})"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::SelfRenewed)
                    .to_owned(),
            )
            .await
    }
}
