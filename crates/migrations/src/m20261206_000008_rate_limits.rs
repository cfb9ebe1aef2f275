//! Rate limits: `tokens.rate_limits` and `owners.rate_limits` (JSON arrays
//! of `{name, limit, window}`, window in seconds; empty: none), and
//! `rate_windows`, the calls counted in each window of each limit. A
//! replica takes a block of a window's calls with a compare-and-set update
//! and admits them in memory, as it does with credits.
//!
//! Credits gain a refill (`credits_refill_amount`, `credits_refill_interval`
//! in seconds; NULL: none), the refill period `credits_remaining` belongs to
//! (`credits_period`), and a generation (`credits_generation`) that grows
//! each time the credits are set anew, so replicas drop what they held.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    RateLimits,
    CreditsRefillAmount,
    CreditsRefillInterval,
    CreditsPeriod,
    CreditsGeneration,
}

#[derive(DeriveIden)]
enum Owners {
    Table,
    RateLimits,
}

#[derive(DeriveIden)]
enum RateWindows {
    Table,
    Key,
    WindowIndex,
    WindowEnd,
    Used,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(
                        ColumnDef::new(Tokens::RateLimits)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite adds one at a time.
        for (column, nullable) in [
            (Tokens::CreditsRefillAmount, true),
            (Tokens::CreditsRefillInterval, true),
            (Tokens::CreditsPeriod, false),
            (Tokens::CreditsGeneration, false),
        ] {
            let mut def = ColumnDef::new(column);
            def.big_integer();
            if nullable {
                def.null();
            } else {
                def.not_null().default(0);
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .add_column(&mut def)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Owners::Table)
                    .add_column(
                        ColumnDef::new(Owners::RateLimits)
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
                    .table(RateWindows::Table)
                    .col(ColumnDef::new(RateWindows::Key).text().not_null())
                    .col(
                        ColumnDef::new(RateWindows::WindowIndex)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RateWindows::WindowEnd)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RateWindows::Used).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(RateWindows::Key)
                            .col(RateWindows::WindowIndex),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("rate_windows_by_end")
                    .table(RateWindows::Table)
                    .col(RateWindows::WindowEnd)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RateWindows::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Owners::Table)
                    .drop_column(Owners::RateLimits)
                    .to_owned(),
            )
            .await?;
        for column in [
            Tokens::RateLimits,
            Tokens::CreditsRefillAmount,
            Tokens::CreditsRefillInterval,
            Tokens::CreditsPeriod,
            Tokens::CreditsGeneration,
        ] {
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
