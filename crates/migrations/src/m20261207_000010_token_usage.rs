//! `token_usage`: how many calls found each token, per day (days since the
//! Unix epoch, UTC) and verdict (its name: `VALID`, `REVOKED`, …), added to
//! by each replica's flusher; days older than 90 are pruned.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TokenUsage {
    Table,
    TokenId,
    Day,
    Verdict,
    Count,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TokenUsage::Table)
                    .col(ColumnDef::new(TokenUsage::TokenId).uuid().not_null())
                    .col(ColumnDef::new(TokenUsage::Day).big_integer().not_null())
                    .col(ColumnDef::new(TokenUsage::Verdict).text().not_null())
                    .col(ColumnDef::new(TokenUsage::Count).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(TokenUsage::TokenId)
                            .col(TokenUsage::Day)
                            .col(TokenUsage::Verdict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("token_usage_by_day")
                    .table(TokenUsage::Table)
                    .col(TokenUsage::Day)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TokenUsage::Table).to_owned())
            .await
    }
}
