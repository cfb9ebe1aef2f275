//! Where a token was last used from: `tokens.last_used_ip` and
//! `last_used_user_agent` (empty: unknown), and `recent_ips`, the last five
//! distinct addresses, the latest first, separated by spaces. Written
//! behind in batches with `last_used_time`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Tokens {
    Table,
    LastUsedIp,
    LastUsedUserAgent,
    RecentIps,
}

const COLUMNS: [Tokens; 3] = [
    Tokens::LastUsedIp,
    Tokens::LastUsedUserAgent,
    Tokens::RecentIps,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .add_column(ColumnDef::new(column).text().not_null().default(""))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
