//! The status filter in SQL agrees with the status the service derives in
//! memory, for every combination of revocation, expiry, idle timeout, last
//! use and idle-clock restart, on both databases.

use std::collections::HashSet;
use std::time::Duration;

use latchkey::clock::Timestamp;
use latchkey::store::{ListFilter, NewRow, Store};
use latchkey::token::{Digest, Status, TokenRecord};
use uuid::Uuid;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(listing_by_status_agrees_with_the_derived_status);

fn at(s: i64) -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000 + s * 1_000_000)
}

fn records() -> Vec<TokenRecord> {
    let mut out = Vec::new();
    for idle in [None, Some(Duration::from_secs(10))] {
        for last_used in [None, Some(5), Some(15)] {
            for reset in [None, Some(8), Some(20)] {
                for expire in [None, Some(12), Some(30)] {
                    for revoked in [false, true] {
                        out.push(TokenRecord {
                            expire_time: expire.map(at),
                            idle_timeout: idle,
                            last_used_time: last_used.map(at),
                            revoke_time: revoked.then(|| at(1)),
                            idle_reset_time: reset.map(at),
                            ..TokenRecord::new(Uuid::now_v7(), "grid".into(), at(0))
                        });
                    }
                }
            }
        }
    }
    out
}

async fn listing_by_status_agrees_with_the_derived_status(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let records = records();
    let txn = store.begin().await.unwrap();
    for (i, r) in records.iter().enumerate() {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
        txn.insert_token(&NewRow {
            record: r,
            digest: &Digest(digest),
            key_id: "k",
        })
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();

    for now in [9, 10, 11, 16, 25, 30, 31].map(at) {
        for status in [
            Status::Active,
            Status::Revoked,
            Status::Expired,
            Status::Inactive,
        ] {
            let listed: HashSet<Uuid> = store
                .list_tokens(
                    &ListFilter {
                        statuses: vec![status],
                        ..ListFilter::default()
                    },
                    None,
                    1000,
                    now,
                )
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
            let derived: HashSet<Uuid> = records
                .iter()
                .filter(|r| r.status(now) == status)
                .map(|r| r.id)
                .collect();
            assert_eq!(listed, derived, "{status:?} at {now:?}");
        }
    }
    store.close().await.unwrap();
}
