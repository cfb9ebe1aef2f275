//! The hosted token page: one-time links (`console_links`) that a product's
//! backend makes for one owner, and sessions limited to that owner
//! (`console_sessions.owner`, with the product's `return_url`). Like
//! sessions, a link is kept only as the HMAC digest of its secret.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Owner,
    ReturnUrl,
}

#[derive(DeriveIden)]
enum ConsoleLinks {
    Table,
    Digest,
    Owner,
    Actor,
    CredentialDigest,
    ReturnUrl,
    CreateTime,
    ExpireTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ConsoleSessions::Table)
                    .add_column(ColumnDef::new(ConsoleSessions::Owner).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ConsoleSessions::Table)
                    .add_column(
                        ColumnDef::new(ConsoleSessions::ReturnUrl)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsoleLinks::Table)
                    .col(
                        ColumnDef::new(ConsoleLinks::Digest)
                            .blob()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ConsoleLinks::Owner).text().not_null())
                    .col(ColumnDef::new(ConsoleLinks::Actor).text().not_null())
                    .col(
                        ColumnDef::new(ConsoleLinks::CredentialDigest)
                            .blob()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ConsoleLinks::ReturnUrl).text().not_null())
                    .col(
                        ColumnDef::new(ConsoleLinks::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsoleLinks::ExpireTime)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("console_links_expire_time")
                    .table(ConsoleLinks::Table)
                    .col(ConsoleLinks::ExpireTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleLinks::Table).to_owned())
            .await?;
        for column in [ConsoleSessions::Owner, ConsoleSessions::ReturnUrl] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConsoleSessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
