//! The audit trail: `token_events`, written in the transaction of the change
//! it records and listed newest first; and `event_log`, which numbers each
//! event as it is appended, for watchers following every replica's events.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::change_log::numbered_since;
use crate::connection::{Store, Txn};
use crate::entity::{event_log, token_events};
use crate::error::{Result, StoreError};
use crate::sql::{BULK_CHUNK, before, encode_map};
use latchkey_core::audit::{Event, EventEntry, EventFilter, EventKind};
use latchkey_core::clock::Timestamp;
use latchkey_core::query::Cursor;

impl Store {
    /// Up to `limit` events matching `filter`, newest first, strictly after
    /// `after`.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: u64,
    ) -> Result<Vec<Event>> {
        let mut query = token_events::Entity::find();
        if let Some(id) = filter.token_id {
            query = query.filter(token_events::Column::TokenId.eq(id));
        }
        if let Some(owner) = &filter.owner {
            query = query.filter(token_events::Column::Owner.eq(owner.as_str()));
        }
        if let Some(c) = after {
            query = query.filter(before(
                token_events::Column::Time,
                token_events::Column::Id,
                c,
            ));
        }
        query
            .order_by_desc(token_events::Column::Time)
            .order_by_desc(token_events::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }

    /// Up to `limit` entries of the event log numbered above `after` or
    /// among `also`, in order.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn event_log_since(
        &self,
        after: i64,
        also: &[i64],
        limit: u64,
    ) -> Result<Vec<EventEntry>> {
        Ok(event_log::Entity::find()
            .filter(numbered_since(event_log::Column::Seq, after, also))
            .order_by_asc(event_log::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| EventEntry {
                seq: row.seq,
                event_id: row.event_id,
                owner: row.owner,
            })
            .collect())
    }

    /// The highest number in the event log; 0 while it is empty.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn event_log_end(&self) -> Result<i64> {
        Ok(event_log::Entity::find()
            .select_only()
            .column_as(event_log::Column::Seq.max(), "seq")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .unwrap_or(0))
    }

    /// The events with these ids, in no particular order.
    ///
    /// # Errors
    /// On a database fault or a corrupt row.
    pub async fn events_by_id(&self, ids: &[Uuid]) -> Result<Vec<Event>> {
        let mut events = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BULK_CHUNK) {
            for row in token_events::Entity::find()
                .filter(token_events::Column::Id.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await?
            {
                events.push(to_event(row)?);
            }
        }
        Ok(events)
    }
}

impl Txn {
    /// Inserts an event and numbers it in the event log.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_event(&self, event: &Event) -> Result<()> {
        self.insert_events(std::slice::from_ref(event)).await
    }

    /// Inserts many events, [`BULK_CHUNK`] rows per statement, numbers them
    /// in the event log in this order, and (PostgreSQL) wakes the replicas
    /// at commit so that their watchers see them at once.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for chunk in events.chunks(BULK_CHUNK) {
            token_events::Entity::insert_many(chunk.iter().map(event_model))
                .exec_without_returning(&self.txn)
                .await?;
            event_log::Entity::insert_many(chunk.iter().map(|e| event_log::ActiveModel {
                seq: sea_orm::ActiveValue::NotSet,
                event_id: Set(e.id),
                owner: Set(e.owner.clone()),
            }))
            .exec_without_returning(&self.txn)
            .await?;
        }
        self.announce().await
    }
}

fn to_event(m: token_events::Model) -> Result<Event> {
    let corrupt = |what: String| StoreError::Corrupt(anyhow::anyhow!(what));
    Ok(Event {
        kind: EventKind::parse(&m.kind)
            .ok_or_else(|| corrupt(format!("event {} has unknown kind {:?}", m.id, m.kind)))?,
        detail: serde_json::from_str(&m.detail)
            .map_err(|_| corrupt(format!("event {} has a corrupt detail", m.id)))?,
        id: m.id,
        time: Timestamp::from_micros(m.time),
        token_id: m.token_id,
        owner: m.owner,
        actor: m.actor,
    })
}

fn event_model(event: &Event) -> token_events::ActiveModel {
    token_events::ActiveModel {
        id: Set(event.id),
        time: Set(event.time.as_micros()),
        kind: Set(event.kind.as_str().to_owned()),
        token_id: Set(event.token_id),
        owner: Set(event.owner.clone()),
        actor: Set(event.actor.clone()),
        detail: Set(encode_map(&event.detail)),
    }
}
