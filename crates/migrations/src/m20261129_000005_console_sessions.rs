//! Signed-in sessions of the web console: one row per session, keyed by the
//! HMAC digest of the session's secret (the cookie holds the secret, the
//! database never does), with who signed in and until when.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Digest,
    Actor,
    CredentialDigest,
    CreateTime,
    ExpireTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .col(
                        ColumnDef::new(ConsoleSessions::Digest)
                            .blob()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ConsoleSessions::Actor).text().not_null())
                    .col(
                        ColumnDef::new(ConsoleSessions::CredentialDigest)
                            .blob()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsoleSessions::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsoleSessions::ExpireTime)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("console_sessions_expire_time")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::ExpireTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}
