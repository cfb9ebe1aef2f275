//! What renewal, idle expiry, owners, creation limits and the audit trail
//! need: the idle clock's restart time on `tokens`, the `owners` table, and the
//! `token_events` audit trail.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    IdleResetTime,
}

#[derive(DeriveIden)]
enum Owners {
    Table,
    Owner,
    DisableTime,
    DisableReason,
    UpdateTime,
}

#[derive(DeriveIden)]
enum TokenEvents {
    Table,
    Id,
    Time,
    Kind,
    TokenId,
    Owner,
    Actor,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // When the idle clock last restarted (RestoreToken); NULL: at creation.
        // A token is inactive once creation, last use and this time all lie
        // more than idle_timeout in the past.
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(ColumnDef::new(Tokens::IdleResetTime).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // One row per owner that was ever disabled or given a token; an owner
        // without a row is enabled. Creation locks the owner's row, which
        // serialises one owner's creations across replicas so that the
        // creation limits hold exactly.
        manager
            .create_table(
                Table::create()
                    .table(Owners::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Owners::Owner)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Owners::DisableTime).big_integer().null())
                    .col(ColumnDef::new(Owners::DisableReason).text().not_null())
                    .col(ColumnDef::new(Owners::UpdateTime).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The audit trail, written in the same transaction as each change.
        // Rows outlive the tokens they describe.
        manager
            .create_table(
                Table::create()
                    .table(TokenEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TokenEvents::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TokenEvents::Time).big_integer().not_null())
                    // CREATED, UPDATED, REVOKED, RESTORED, RENEWED, DELETED,
                    // OWNER_DISABLED, OWNER_ENABLED.
                    .col(ColumnDef::new(TokenEvents::Kind).text().not_null())
                    // NULL for owner events.
                    .col(ColumnDef::new(TokenEvents::TokenId).uuid().null())
                    .col(ColumnDef::new(TokenEvents::Owner).text().not_null())
                    // `admin`, `system`, or the acting token's id.
                    .col(ColumnDef::new(TokenEvents::Actor).text().not_null())
                    // A JSON object of strings; never a secret.
                    .col(ColumnDef::new(TokenEvents::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;
        // ListTokenEvents pages newest first by (time, id): for one token,
        // for one owner (which also counts an owner's recent creations for the
        // rate limit), or for everyone.
        for (name, cols) in [
            (
                "token_events_token_time_idx",
                vec![TokenEvents::TokenId, TokenEvents::Time, TokenEvents::Id],
            ),
            (
                "token_events_owner_time_idx",
                vec![TokenEvents::Owner, TokenEvents::Time, TokenEvents::Id],
            ),
            (
                "token_events_time_idx",
                vec![TokenEvents::Time, TokenEvents::Id],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(TokenEvents::Table).if_not_exists();
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TokenEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Owners::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::IdleResetTime)
                    .to_owned(),
            )
            .await
    }
}
