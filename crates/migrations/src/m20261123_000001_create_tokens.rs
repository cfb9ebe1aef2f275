//! The `tokens` table and `latchkey_meta`, the service's own key-value record
//! (it remembers, for one, that the bootstrap admin token was issued).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    Owner,
    Name,
    Description,
    Scopes,
    Metadata,
    Digest,
    KeyId,
    DisplayHint,
    CreateTime,
    UpdateTime,
    ExpireTime,
    IdleTimeout,
    LastUsedTime,
    RevokeTime,
    RevokeReason,
    Replaces,
    ReplacedBy,
}

#[derive(DeriveIden)]
enum LatchkeyMeta {
    Table,
    Key,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Tokens::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Tokens::Owner).text().not_null())
                    .col(ColumnDef::new(Tokens::Name).text().not_null())
                    .col(ColumnDef::new(Tokens::Description).text().not_null())
                    // Space-separated: a scope cannot contain a space.
                    .col(ColumnDef::new(Tokens::Scopes).text().not_null())
                    // A JSON object of strings.
                    .col(ColumnDef::new(Tokens::Metadata).text().not_null())
                    // HMAC-SHA256(server key, whole token): never the token.
                    .col(ColumnDef::new(Tokens::Digest).blob().not_null())
                    // Which server key made the digest, so keys can rotate.
                    .col(ColumnDef::new(Tokens::KeyId).text().not_null())
                    .col(ColumnDef::new(Tokens::DisplayHint).text().not_null())
                    .col(ColumnDef::new(Tokens::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(Tokens::UpdateTime).big_integer().not_null())
                    .col(ColumnDef::new(Tokens::ExpireTime).big_integer().null())
                    .col(ColumnDef::new(Tokens::IdleTimeout).big_integer().null())
                    .col(ColumnDef::new(Tokens::LastUsedTime).big_integer().null())
                    .col(ColumnDef::new(Tokens::RevokeTime).big_integer().null())
                    .col(ColumnDef::new(Tokens::RevokeReason).text().not_null())
                    .col(ColumnDef::new(Tokens::Replaces).uuid().null())
                    .col(ColumnDef::new(Tokens::ReplacedBy).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tokens_digest_key")
                    .table(Tokens::Table)
                    .col(Tokens::Digest)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // ListTokens pages newest first, by (create_time, id), with or without
        // an owner.
        manager
            .create_index(
                Index::create()
                    .name("tokens_owner_create_time_idx")
                    .table(Tokens::Table)
                    .col(Tokens::Owner)
                    .col(Tokens::CreateTime)
                    .col(Tokens::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tokens_create_time_idx")
                    .table(Tokens::Table)
                    .col(Tokens::CreateTime)
                    .col(Tokens::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LatchkeyMeta::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LatchkeyMeta::Key)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LatchkeyMeta::Value).text().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LatchkeyMeta::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Tokens::Table).to_owned())
            .await
    }
}
