//! The change log: one row for every committed change that affects how a
//! token verifies, written in the change's own transaction, so that every
//! replica can drop what its cache holds about it. Rows are kept only as long
//! as a replica may take to catch up, then pruned.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TokenChanges {
    Table,
    Seq,
    Time,
    Digest,
    Owner,
    Origin,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TokenChanges::Table)
                    .if_not_exists()
                    // Replicas read the log in this order, from the last
                    // number they have seen.
                    .col(
                        ColumnDef::new(TokenChanges::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TokenChanges::Time).big_integer().not_null())
                    // The changed token's digest (not a secret: the tokens
                    // table holds the same); NULL for an owner change.
                    .col(ColumnDef::new(TokenChanges::Digest).binary().null())
                    // The owner whose every token changed (disabled, enabled);
                    // NULL for a change to one token.
                    .col(ColumnDef::new(TokenChanges::Owner).text().null())
                    // A number each server process draws at start: a replica
                    // skips its own changes, which it applied as it made them.
                    .col(
                        ColumnDef::new(TokenChanges::Origin)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by age.
        manager
            .create_index(
                Index::create()
                    .name("token_changes_time_idx")
                    .table(TokenChanges::Table)
                    .col(TokenChanges::Time)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TokenChanges::Table).to_owned())
            .await
    }
}
