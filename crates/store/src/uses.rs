//! When and where tokens were used: the last-use times, the last client
//! and the recent addresses, written behind in batches.

use std::net::IpAddr;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};

use crate::connection::Store;
use crate::entity::tokens;
use crate::error::Result;

/// Rows per last-used statement: a few parameters each, far below every
/// backend's bind-parameter limit.
const LAST_USED_CHUNK: usize = 500;
use latchkey_core::client::Client;
use latchkey_core::usage::{Use, note_first};

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
        for chunk in uses.chunks(LAST_USED_CHUNK) {
            let mut when = sea_orm::sea_query::CaseStatement::new();
            for u in chunk {
                when = when.case(tokens::Column::Id.eq(u.id), Expr::value(u.time.as_micros()));
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
                .filter(tokens::Column::Id.is_in(chunk.iter().map(|u| u.id)))
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
            for ip in clients.ips.iter().rev() {
                note_first(&mut ips, *ip);
            }
            let mut update = tokens::Entity::update_many()
                .col_expr(tokens::Column::RecentIps, Expr::value(encode_ips(&ips)))
                .filter(tokens::Column::Id.eq(u.id));
            if let Some((at, client)) = &clients.latest
                && last_used.is_none_or(|t| at.as_micros() >= t)
            {
                update = update
                    .col_expr(
                        tokens::Column::LastUsedIp,
                        Expr::value(client.ip.map_or_else(String::new, |ip| ip.to_string())),
                    )
                    .col_expr(
                        tokens::Column::LastUsedUserAgent,
                        Expr::value(client.user_agent.clone()),
                    );
            }
            update.exec(&txn.txn).await?;
            txn.commit().await?;
        }
        Ok(())
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
