//! The web console's sessions (`console_sessions`), keyed by the digest of
//! the secret a session cookie holds.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::connection::Store;
use crate::entity::console_sessions;
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
        })
        .exec(&self.db)
        .await?;
        Ok(())
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
