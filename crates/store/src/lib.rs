//! Persistence: the only crate that imports sea_orm.
//!
//! It stores [`TokenRecord`]s with their digest, owners and the audit trail,
//! and answers the queries the service needs. Reads go through [`Store`];
//! every change goes through a [`Txn`], so a change and its audit event commit
//! together or not at all, and a refused or failed request leaves nothing
//! half-written. Rows are converted to domain types here; entities never leave
//! the module.

mod bounded;
mod change_log;
mod connection;
mod console;
mod credits;
mod entity;
mod error;
mod events;
mod expiry;
mod keys;
mod lanes;
mod limit_rows;
mod lookup;
mod owners;
mod rate;
mod sql;
mod status;
mod tokens;
mod uses;
mod warm;

pub use latchkey_core::query::{Cursor, ListFilter, TokenPatch};

pub use change_log::{CHANGES_CHANNEL, ChangeListener};
pub use connection::{DEFAULT_TIMEOUT, Store, Txn, sqlite_file};
pub use console::ConsoleSession;
pub use credits::CreditTake;
pub use error::{Result, StoreError};
pub use expiry::Due;
pub use limit_rows::MAX_CREDIT_BLOCK;
pub use owners::Creations;
pub use rate::RateTake;
pub use sql::BULK_CHUNK;
pub use tokens::{FoundToken, NewRow, Retirement, StoredToken};
