//! The web console's sessions (`console_sessions`), keyed by the digest of
//! the secret a session cookie holds, and the one-time links to the hosted
//! token page (`console_links`), keyed by the digest of the link's secret.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::connection::Store;
use crate::entity::{console_links, console_sessions};
use crate::error::Result;
use latchkey_core::clock::Timestamp;
use latchkey_core::token::Digest;

/// A signed-in session: who, with which credential, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    /// `admin` for the static credential, else the id of the admin token.
    pub actor: String,
    /// The digest of the credential signed in with, so that the session
    /// ends when that credential stops being valid.
    pub credential_digest: Digest,
    pub create_time: Timestamp,
    pub expire_time: Timestamp,
    /// The owner whose tokens the session may see and change (the hosted
    /// token page); `None`: an admin's session, over every token.
    pub owner: Option<String>,
    /// Where the hosted page links back to (the product); may be empty.
    pub return_url: String,
}

impl Store {
    /// Stores a new session under `digest`, and drops sessions that have
    /// expired.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_console_session(
        &self,
        digest: &Digest,
        session: &ConsoleSession,
    ) -> Result<()> {
        console_sessions::Entity::delete_many()
            .filter(console_sessions::Column::ExpireTime.lte(session.create_time.as_micros()))
            .exec(&self.db)
            .await?;
        console_sessions::Entity::insert(console_sessions::ActiveModel {
            digest: Set(digest.as_bytes().to_vec()),
            actor: Set(session.actor.clone()),
            credential_digest: Set(session.credential_digest.as_bytes().to_vec()),
            create_time: Set(session.create_time.as_micros()),
            expire_time: Set(session.expire_time.as_micros()),
            owner: Set(session.owner.clone()),
            return_url: Set(session.return_url.clone()),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Stores a one-time link to the hosted token page of `link.owner`
    /// under `digest`, and drops links that have expired.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn insert_console_link(&self, digest: &Digest, link: &ConsoleSession) -> Result<()> {
        let owner = link.owner.clone().unwrap_or_default();
        console_links::Entity::delete_many()
            .filter(console_links::Column::ExpireTime.lte(link.create_time.as_micros()))
            .exec(&self.db)
            .await?;
        console_links::Entity::insert(console_links::ActiveModel {
            digest: Set(digest.as_bytes().to_vec()),
            owner: Set(owner),
            actor: Set(link.actor.clone()),
            credential_digest: Set(link.credential_digest.as_bytes().to_vec()),
            return_url: Set(link.return_url.clone()),
            create_time: Set(link.create_time.as_micros()),
            expire_time: Set(link.expire_time.as_micros()),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Takes the link stored under `digest`: it is deleted, and returned
    /// if it had not expired at `now`. Of two replicas taking one link at
    /// once, only one gets it.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn take_console_link(
        &self,
        digest: &Digest,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>> {
        let key = digest.as_bytes().to_vec();
        let Some(row) = console_links::Entity::find_by_id(key.clone())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let taken = console_links::Entity::delete_by_id(key)
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        if !taken || row.expire_time <= now.as_micros() {
            return Ok(None);
        }
        Ok(
            Digest::from_slice(&row.credential_digest).map(|credential_digest| ConsoleSession {
                actor: row.actor,
                credential_digest,
                create_time: Timestamp::from_micros(row.create_time),
                expire_time: Timestamp::from_micros(row.expire_time),
                owner: Some(row.owner),
                return_url: row.return_url,
            }),
        )
    }

    /// The session stored under `digest`, if it has not expired at `now`.
    ///
    /// # Errors
    /// On a database fault.
    pub async fn get_console_session(
        &self,
        digest: &Digest,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>> {
        let row = console_sessions::Entity::find_by_id(digest.as_bytes().to_vec())
            .filter(console_sessions::Column::ExpireTime.gt(now.as_micros()))
            .one(&self.db)
            .await?;
        Ok(row.and_then(|r| {
            Some(ConsoleSession {
                actor: r.actor,
                credential_digest: Digest::from_slice(&r.credential_digest)?,
                create_time: Timestamp::from_micros(r.create_time),
                expire_time: Timestamp::from_micros(r.expire_time),
                owner: r.owner,
                return_url: r.return_url,
            })
        }))
    }

    /// Ends the session stored under `digest` (signing out).
    ///
    /// # Errors
    /// On a database fault.
    pub async fn delete_console_session(&self, digest: &Digest) -> Result<()> {
        console_sessions::Entity::delete_by_id(digest.as_bytes().to_vec())
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
