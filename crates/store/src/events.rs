//! The audit trail: `token_events`, written in the transaction of the change
//! it records and listed newest first.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::connection::{Store, Txn};
use crate::entity::token_events;
use crate::error::{Result, StoreError};
use crate::sql::{BULK_CHUNK, before, encode_map};
use latchkey_core::audit::{Event, EventFilter, EventKind};
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
}

impl Txn {
    /// # Errors
    /// On a database fault.
    pub async fn insert_event(&self, event: &Event) -> Result<()> {
        token_events::Entity::insert(event_model(event))
            .exec_without_returning(&self.txn)
            .await?;
        Ok(())
    }

    /// Inserts many events, [`BULK_CHUNK`] rows per statement.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_events(&self, events: &[Event]) -> Result<()> {
        for chunk in events.chunks(BULK_CHUNK) {
            token_events::Entity::insert_many(chunk.iter().map(event_model))
                .exec_without_returning(&self.txn)
                .await?;
        }
        Ok(())
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
