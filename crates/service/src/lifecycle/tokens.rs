//! Creating, reading, listing, changing and removing tokens, and their
//! audit trail.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::Lifecycle;
use super::paging::{Paging, event_fingerprint, list_fingerprint};
use super::requests::{EventQuery, Expiry, Gain, ListQuery, NewToken, Page};
use super::settings::ADMIN_OWNER;
use super::writing::{created_detail, expired_precondition, status_name};
use super::{describe_credits, describe_rate_limits};
use crate::audit::{Event, EventKind};
use crate::auth::Actor;
use crate::error::Error;
use crate::store::{NewRow, TokenPatch};
use crate::token::{self, ADMIN_SCOPE, Secret, Status, Text, TokenRecord, limits};
use latchkey_core::limit::{Credits, check_credits, check_rate_limits};

impl Lifecycle {
    /// Creates a token; the secret is returned here and never again.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first bad field; `FailedPrecondition` if
    /// the owner is disabled; `ResourceExhausted` naming the creation limit
    /// reached; store faults.
    #[tracing::instrument(skip_all, fields(owner = ?new.owner, token_id = tracing::field::Empty))]
    pub async fn create(
        &self,
        new: NewToken,
        actor: Actor,
    ) -> Result<(TokenRecord, Secret), Error> {
        let now = self.clock.now();
        let (record, secret, digest) = self.prepare(new, now)?;
        tracing::Span::current().record("token_id", tracing::field::display(record.id));

        let txn = self.store.begin().await?;
        self.admit(&txn, &record.owner, now, Gain::Creation).await?;
        txn.insert_token(&self.row(&record, &digest)).await?;
        txn.insert_event(&self.event(
            EventKind::Created,
            &record,
            actor,
            now,
            created_detail(&record),
        ))
        .await?;
        txn.commit().await?;
        tracing::info!(token_id = %record.id, owner = ?record.owner, %actor, "token created");
        Ok((record, secret))
    }

    /// Creates many tokens in one transaction with batched inserts, each with
    /// its CREATED event: for loading a token store (benchmarks, migrations
    /// from another system). Fields are checked as CreateToken checks them;
    /// creation limits do not apply.
    ///
    /// # Errors
    /// `InvalidArgument` naming the first bad field (nothing is written);
    /// store faults (nothing is written).
    #[tracing::instrument(skip_all, fields(count = batch.len()))]
    pub async fn bulk_create(
        &self,
        batch: Vec<NewToken>,
        actor: Actor,
    ) -> Result<Vec<(TokenRecord, Secret)>, Error> {
        let now = self.clock.now();
        let mut minted = Vec::with_capacity(batch.len());
        for new in batch {
            minted.push(self.prepare(new, now)?);
        }
        let rows: Vec<NewRow<'_>> = minted
            .iter()
            .map(|(record, _, digest)| self.row(record, digest))
            .collect();
        let events: Vec<Event> = minted
            .iter()
            .map(|(record, _, _)| {
                self.event(
                    EventKind::Created,
                    record,
                    actor,
                    now,
                    created_detail(record),
                )
            })
            .collect();
        let txn = self.store.begin().await?;
        txn.insert_tokens(&rows).await?;
        txn.insert_events(&events).await?;
        txn.commit().await?;
        Ok(minted
            .into_iter()
            .map(|(record, secret, _)| (record, secret))
            .collect())
    }

    /// # Errors
    /// `NotFound`; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn get(&self, id: Uuid) -> Result<TokenRecord, Error> {
        self.store.get_token(id).await?.ok_or(Error::NotFound)
    }

    /// # Errors
    /// `InvalidArgument` for a bad page size or page token; store faults.
    #[tracing::instrument(skip_all)]
    pub async fn list(&self, query: ListQuery) -> Result<Page<TokenRecord>, Error> {
        let paging = Paging::new(
            query.page_size,
            &query.page_token,
            list_fingerprint(&query.filter),
        )?;
        let now = self.clock.now();
        let mut items = self
            .store
            .list_tokens(&query.filter, paging.after, paging.limit(), now)
            .await?;
        let next_page_token = paging.finish(&mut items, |t| crate::store::Cursor {
            time: t.create_time,
            id: t.id,
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Applies the fields set in `patch`.
    ///
    /// # Errors
    /// `InvalidArgument` naming a bad field; `NotFound`; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn update(
        &self,
        id: Uuid,
        patch: TokenPatch,
        actor: Actor,
    ) -> Result<TokenRecord, Error> {
        if let Some(name) = &patch.name {
            token::check_text("token.name", name, limits::MAX_NAME_CHARS, Text::Line)?;
        }
        if let Some(description) = &patch.description {
            token::check_text(
                "token.description",
                description,
                limits::MAX_DESCRIPTION_CHARS,
                Text::Prose,
            )?;
        }
        if let Some(metadata) = &patch.metadata {
            token::check_metadata("token.metadata", metadata)?;
        }
        if let Some(limits) = &patch.rate_limits {
            check_rate_limits("token.rate_limits", limits)?;
        }
        let now = self.clock.now();
        let mut patch = patch;
        if let Some(Some(c)) = &mut patch.credits {
            check_credits("token.credits", c.remaining, c.refill)?;
            *c = Credits::new(c.remaining, c.refill, now, 0);
        }
        let txn = self.store.begin().await?;
        let stored = txn
            .update_token(id, &patch, now)
            .await?
            .ok_or(Error::NotFound)?;
        let named = |fields: &[(&str, bool)]| {
            fields
                .iter()
                .filter(|(_, set)| *set)
                .map(|(f, _)| *f)
                .collect::<Vec<_>>()
                .join(",")
        };
        let fields = named(&[
            ("name", patch.name.is_some()),
            ("description", patch.description.is_some()),
            ("metadata", patch.metadata.is_some()),
        ]);
        let limits = named(&[
            ("rate_limits", patch.rate_limits.is_some()),
            ("credits", patch.credits.is_some()),
        ]);
        let mut events = Vec::new();
        if !fields.is_empty() {
            events.push(self.event(
                EventKind::Updated,
                &stored.record,
                actor,
                now,
                [("fields", fields)],
            ));
        }
        if !limits.is_empty() {
            let record = &stored.record;
            events.push(self.event(
                EventKind::LimitsChanged,
                record,
                actor,
                now,
                [
                    ("fields", limits),
                    ("rate_limits", describe_rate_limits(&record.rate_limits)),
                    ("credits", describe_credits(record.credits.as_ref())),
                ],
            ));
        }
        self.commit_tokens(txn, &events, &[stored.digest], now)
            .await?;
        tracing::info!(token_id = %id, %actor, "token updated");
        Ok(stored.record)
    }

    /// Revokes at once. Idempotent: revoking a revoked token changes nothing
    /// and writes no event.
    ///
    /// # Errors
    /// `InvalidArgument` for an over-long reason; `NotFound`; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn revoke(&self, id: Uuid, reason: &str, actor: Actor) -> Result<TokenRecord, Error> {
        token::check_text("reason", reason, limits::MAX_REASON_CHARS, Text::Prose)?;
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let Some(stored) = txn.revoke_token(id, reason, now).await? else {
            drop(txn);
            return self.get(id).await;
        };
        let event = self.event(
            EventKind::Revoked,
            &stored.record,
            actor,
            now,
            [("reason", reason.to_owned())],
        );
        self.commit(txn, &event, &stored).await?;
        tracing::info!(token_id = %id, %actor, "token revoked");
        Ok(stored.record)
    }

    /// Brings a revoked or inactive token back to ACTIVE and restarts its
    /// idle clock. An active token is returned unchanged.
    ///
    /// # Errors
    /// `FailedPrecondition` if the token has expired or was replaced by a
    /// renewal; `ResourceExhausted` if the owner already holds the most
    /// active tokens allowed; `NotFound`; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn restore(&self, id: Uuid, actor: Actor) -> Result<TokenRecord, Error> {
        // Two rounds: if the token changed between the read and the
        // conditional write, judge it again as it now stands.
        for _ in 0..2 {
            let now = self.clock.now();
            let current = self.get(id).await?;
            let from = current.status(now);
            match from {
                Status::Active => return Ok(current),
                Status::Expired => return Err(expired_precondition()),
                Status::Revoked | Status::Inactive => {}
            }
            if current.replaced_by.is_some() {
                return Err(Error::FailedPrecondition(
                    "the token was replaced by a renewal and cannot be restored".into(),
                ));
            }
            if current.is_expired(now) {
                return Err(expired_precondition());
            }
            let txn = self.store.begin().await?;
            self.admit(&txn, &current.owner, now, Gain::Restore).await?;
            if let Some(stored) = txn.restore_token(id, now).await? {
                let event = self.event(
                    EventKind::Restored,
                    &stored.record,
                    actor,
                    now,
                    [("from", status_name(from).to_owned())],
                );
                self.commit(txn, &event, &stored).await?;
                tracing::info!(token_id = %id, %actor, "token restored");
                return Ok(stored.record);
            }
        }
        Err(Error::FailedPrecondition(
            "the token changed while it was being restored; try again".into(),
        ))
    }

    /// Deletes permanently, whatever the status.
    ///
    /// # Errors
    /// `NotFound`; store faults.
    #[tracing::instrument(skip_all, fields(token_id = %id))]
    pub async fn delete(&self, id: Uuid, actor: Actor) -> Result<(), Error> {
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        let stored = txn.delete_token(id).await?.ok_or(Error::NotFound)?;
        let event = self.event(
            EventKind::Deleted,
            &stored.record,
            actor,
            now,
            [("name", stored.record.name.clone())],
        );
        self.commit(txn, &event, &stored).await?;
        tracing::info!(token_id = %id, %actor, "token deleted");
        Ok(())
    }

    /// # Errors
    /// `InvalidArgument` for a bad filter, page size or page token; store
    /// faults.
    #[tracing::instrument(skip_all, fields(token_id = ?query.filter.token_id))]
    pub async fn list_events(&self, query: EventQuery) -> Result<Page<Event>, Error> {
        if let Some(owner) = &query.filter.owner {
            token::check_owner("owner", owner)?;
        }
        let paging = Paging::new(
            query.page_size,
            &query.page_token,
            event_fingerprint(&query.filter),
        )?;
        let mut items = self
            .store
            .list_events(&query.filter, paging.after, paging.limit())
            .await?;
        let next_page_token = paging.finish(&mut items, |e| crate::store::Cursor {
            time: e.time,
            id: e.id,
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Issues an admin token (scope `latchkey:admin`, owner `latchkey`)
    /// named `name`, lasting `ttl` (none: no expiry, unless `policy.max_ttl`
    /// requires one), with a CREATED event by [`Actor::System`].
    ///
    /// # Errors
    /// As [`Lifecycle::create`].
    #[tracing::instrument(skip_all)]
    pub async fn issue_admin_token(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<(TokenRecord, Secret), Error> {
        let new = NewToken {
            owner: ADMIN_OWNER.to_owned(),
            name: name.to_owned(),
            description: "Issued by `latchkey admin-token issue`.".to_owned(),
            scopes: vec![ADMIN_SCOPE.to_owned()],
            metadata: BTreeMap::new(),
            expiry: ttl.map_or(Expiry::Never, Expiry::After),
            idle_timeout: None,
            credits: None,
            rate_limits: Vec::new(),
        };
        self.create(new, Actor::System).await
    }

    /// The HMAC keys: each of `configured` (the primary first), then any
    /// other that stored tokens still name, with how many tokens each has.
    ///
    /// # Errors
    /// Store faults.
    pub async fn keys(&self, configured: &[String]) -> Result<Vec<KeyUsage>, Error> {
        let stored = self.store.tokens_by_key().await?;
        let count = |id: &str| stored.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
        let mut keys: Vec<KeyUsage> = configured
            .iter()
            .enumerate()
            .map(|(i, id)| KeyUsage {
                id: id.clone(),
                primary: i == 0,
                configured: true,
                tokens: count(id),
            })
            .collect();
        keys.extend(
            stored
                .iter()
                .filter(|(id, _)| !configured.contains(id))
                .map(|(id, n)| KeyUsage {
                    id: id.clone(),
                    primary: false,
                    configured: false,
                    tokens: *n,
                }),
        );
        Ok(keys)
    }
}

/// An HMAC key and the tokens stored under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUsage {
    /// Derived from the key; names it without revealing it.
    pub id: String,
    /// New tokens are digested with it.
    pub primary: bool,
    /// In the server's configuration: tokens under a key that is not
    /// verify as UNKNOWN.
    pub configured: bool,
    pub tokens: u64,
}
