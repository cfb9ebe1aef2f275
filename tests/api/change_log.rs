//! The change log as the store keeps it, on both databases: rows read back
//! in order and marked with the process that wrote them, a start position
//! that rereads recent rows, and pruning that keeps the newest.

use std::time::Duration;

use latchkey::changes::{Change, Logged};
use latchkey::clock::Timestamp;
use latchkey::store::Store;
use latchkey::token::Digest;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(the_log_reads_back_in_order_and_old_rows_are_pruned);

fn at(s: i64) -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000 + s * 1_000_000)
}

async fn write(store: &Store, changes: &[Change], when: Timestamp) {
    let txn = store.begin().await.unwrap();
    txn.log_changes(changes, when).await.unwrap();
    txn.commit().await.unwrap();
}

async fn the_log_reads_back_in_order_and_old_rows_are_pruned(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mine = Store::connect(&db.url, 2).await.unwrap();
    mine.migrate().await.unwrap();
    let other = Store::connect(&db.url, 2).await.unwrap();
    assert_eq!(
        mine.change_log_start(at(100)).await.unwrap(),
        0,
        "empty log"
    );

    let digest = Digest::from_slice(&[7; 32]).unwrap();
    write(&mine, &[Change::Token(digest)], at(0)).await;
    write(&other, &[Change::Owner("alice".into())], at(10)).await;
    write(&other, &[Change::Owner("bob".into())], at(20)).await;
    // A change that rolls back leaves no row.
    let txn = other.begin().await.unwrap();
    txn.log_changes(&[Change::Owner("carol".into())], at(20))
        .await
        .unwrap();
    drop(txn);

    let rows = mine.changes_since(0, &[], 100).await.unwrap();
    let seen: Vec<(Change, bool)> = rows.iter().map(|r| (r.change.clone(), r.ours)).collect();
    assert_eq!(
        seen,
        [
            (Change::Token(digest), true),
            (Change::Owner("alice".into()), false),
            (Change::Owner("bob".into()), false),
        ]
    );
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Asked for by number too (a gap being filled in).
    let again = mine.changes_since(seqs[2], &[seqs[0]], 100).await.unwrap();
    assert_eq!(again.iter().map(|r| r.seq).collect::<Vec<_>>(), [seqs[0]]);
    // Paged.
    let first: Vec<Logged> = mine.changes_since(0, &[], 2).await.unwrap();
    assert_eq!(first.len(), 2);

    // A replica starting at 25 s with a settling time of 10 s rereads what
    // was written after 15 s.
    assert_eq!(mine.change_log_start(at(15)).await.unwrap(), seqs[1]);
    // Nothing settled yet: from before the oldest row.
    assert_eq!(mine.change_log_start(at(-1)).await.unwrap(), seqs[0] - 1);

    // Pruning at 1 h removes all but the newest row, whatever its age.
    let pruned = mine
        .prune_changes(at(0).checked_add(Duration::from_secs(3600)).unwrap())
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let kept = mine.changes_since(0, &[], 100).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.seq).collect::<Vec<_>>(), [seqs[2]]);
    assert_eq!(mine.change_log_start(at(100)).await.unwrap(), seqs[2]);
}
