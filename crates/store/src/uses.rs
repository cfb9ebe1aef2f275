//! When and where tokens were used: the last-use times, the last client
//! and the recent addresses, written behind in batches.

use std::net::IpAddr;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::connection::Store;
use crate::entity::{token_usage, tokens};
use crate::error::Result;
use crate::sql::BULK_CHUNK;

/// Rows per last-used statement: a few parameters each, far below every
/// backend's bind-parameter limit.
const LAST_USED_CHUNK: usize = 500;
use latchkey_core::client::Client;
use latchkey_core::usage::{Use, put_first};

/// `recent_ips` as stored: the addresses, the latest first, separated by
/// spaces.
pub(crate) fn encode_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stored addresses; one that does not read is skipped (it says only where
/// a token was used from).
pub(crate) fn decode_ips(stored: &str) -> Vec<IpAddr> {
    stored
        .split_ascii_whitespace()
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

pub(crate) fn decode_client(ip: &str, user_agent: String) -> Option<Client> {
    let ip = ip.parse().ok();
    (ip.is_some() || !user_agent.is_empty()).then_some(Client { ip, user_agent })
}

impl Store {
    /// Records last-use times, many tokens per statement. A time never moves
    /// backwards: a replica flushing an older time leaves a newer one alone.
    /// Deleted tokens are skipped. Not an admin change: no event.
    ///
    /// # Errors
    /// On a database fault; nothing of the failing chunk is written.
    pub async fn record_last_used(&self, uses: &[Use]) -> Result<()> {
        let column = || Expr::col(tokens::Column::LastUsedTime);
        // Tokens only presented (a revoked one, say) have no time to write.
        let times: Vec<(Uuid, i64)> = uses
            .iter()
            .filter_map(|u| Some((u.id, u.time?.as_micros())))
            .collect();
        for chunk in times.chunks(LAST_USED_CHUNK) {
            let mut when = sea_orm::sea_query::CaseStatement::new();
            for (id, t) in chunk {
                when = when.case(tokens::Column::Id.eq(*id), Expr::value(*t));
            }
            let new_time: Expr = when.into();
            let newer = Expr::case(
                Condition::any()
                    .add(column().is_null())
                    .add(column().lt(new_time.clone())),
                new_time,
            )
            .finally(column());
            tokens::Entity::update_many()
                .col_expr(tokens::Column::LastUsedTime, newer.into())
                .filter(tokens::Column::Id.is_in(chunk.iter().map(|(id, _)| *id)))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Writes where `uses` came from, after their times
    /// ([`Store::record_last_used`]): each token's recent addresses gain
    /// those seen (the latest first), and its last client is replaced when
    /// its use is the token's latest. One transaction per token, its row
    /// locked on PostgreSQL so that replicas flushing at once keep every
    /// address. Deleted tokens are skipped.
    ///
    /// # Errors
    /// On a database fault; the tokens before it are written.
    pub async fn record_clients(&self, uses: &[Use]) -> Result<()> {
        for u in uses {
            let Some(clients) = &u.clients else { continue };
            let txn = self.begin().await?;
            let mut find = tokens::Entity::find_by_id(u.id)
                .select_only()
                .column(tokens::Column::LastUsedTime)
                .column(tokens::Column::RecentIps);
            if self.is_postgres() {
                find = find.lock_exclusive();
            }
            let Some((last_used, stored)) = find
                .into_tuple::<(Option<i64>, String)>()
                .one(&txn.txn)
                .await?
            else {
                continue;
            };
            let mut ips = decode_ips(&stored);
            put_first(&mut ips, &clients.ips);
            let mut update = tokens::Entity::update_many()
                .col_expr(tokens::Column::RecentIps, Expr::value(encode_ips(&ips)))
                .filter(tokens::Column::Id.eq(u.id));
            if let Some((at, client)) = &clients.latest
                && last_used.is_none_or(|t| at.as_micros() >= t)
            {
                let (ip, user_agent) = Client::as_text(Some(client));
                update = update
                    .col_expr(tokens::Column::LastUsedIp, Expr::value(ip))
                    .col_expr(tokens::Column::LastUsedUserAgent, Expr::value(user_agent));
            }
            update.exec(&txn.txn).await?;
            txn.commit().await?;
        }
        Ok(())
    }
}

impl Store {
    /// Adds each use's calls per verdict to the counts of `day` (days since
    /// the epoch, UTC), several tokens per statement, in one transaction.
    ///
    /// # Errors
    /// On a database fault; then nothing is added.
    pub async fn record_usage(&self, day: i64, uses: &[Use]) -> Result<()> {
        let rows: Vec<token_usage::ActiveModel> = uses
            .iter()
            .flat_map(|u| {
                u.counts
                    .iter()
                    .map(move |(verdict, n)| token_usage::ActiveModel {
                        token_id: Set(u.id),
                        day: Set(day),
                        verdict: Set(verdict.label().to_owned()),
                        count: Set(i64::from(*n)),
                    })
            })
            .collect();
        let added = Expr::col((token_usage::Entity, token_usage::Column::Count)).add(Expr::col((
            Alias::new("excluded"),
            token_usage::Column::Count,
        )));
        // All or nothing: a failed write is retried whole.
        let txn = self.begin().await?;
        for chunk in rows.chunks(BULK_CHUNK) {
            token_usage::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        token_usage::Column::TokenId,
                        token_usage::Column::Day,
                        token_usage::Column::Verdict,
                    ])
                    .value(token_usage::Column::Count, added.clone())
                    .to_owned(),
                )
                .exec_without_returning(&txn.txn)
                .await?;
        }
        txn.commit().await
    }

    /// Token `id`'s counts from `from_day` on: (day, verdict, calls), the
    /// latest day first.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn token_usage(&self, id: Uuid, from_day: i64) -> Result<Vec<(i64, String, i64)>> {
        Ok(token_usage::Entity::find()
            .filter(token_usage::Column::TokenId.eq(id))
            .filter(token_usage::Column::Day.gte(from_day))
            .order_by_desc(token_usage::Column::Day)
            .order_by_asc(token_usage::Column::Verdict)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| (m.day, m.verdict, m.count))
            .collect())
    }

    /// Drops the counts of days before `day`. Returns how many rows went.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn prune_usage(&self, day: i64) -> Result<u64> {
        Ok(token_usage::Entity::delete_many()
            .filter(token_usage::Column::Day.lt(day))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_unreadable_ones_are_skipped() {
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(decode_ips(&encode_ips(&ips)), ips);
        assert_eq!(decode_ips("192.0.2.1 bogus"), ips[..1]);
        assert_eq!(decode_client("", String::new()), None);
    }
}
