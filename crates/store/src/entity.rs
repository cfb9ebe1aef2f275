//! sea-orm entities, private to the store. The schema itself is defined by the
//! migrations crate; these mirror it.

pub mod tokens {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub owner: String,
        pub name: String,
        pub description: String,
        pub scopes: String,
        pub metadata: String,
        #[sea_orm(unique)]
        pub digest: Vec<u8>,
        pub key_id: String,
        pub display_hint: String,
        pub create_time: i64,
        pub update_time: i64,
        pub expire_time: Option<i64>,
        pub idle_timeout: Option<i64>,
        pub last_used_time: Option<i64>,
        pub revoke_time: Option<i64>,
        pub revoke_reason: String,
        pub replaces: Option<Uuid>,
        pub replaced_by: Option<Uuid>,
        pub idle_reset_time: Option<i64>,
        pub self_renewed: bool,
        /// Usage credits left; NULL: unlimited.
        pub credits_remaining: Option<i64>,
        /// Rate limits, JSON (`[{name, limit, window}]`, window in
        /// seconds); empty: none.
        pub rate_limits: String,
        /// The credits' refill: amount and interval (seconds); NULL: none.
        pub credits_refill_amount: Option<i64>,
        pub credits_refill_interval: Option<i64>,
        /// The refill period `credits_remaining` belongs to.
        pub credits_period: i64,
        /// Grows each time the credits are set anew.
        pub credits_generation: i64,
        /// Where the last use with client details came from; empty:
        /// unknown.
        pub last_used_ip: String,
        pub last_used_user_agent: String,
        /// The last five distinct addresses, the latest first, separated by
        /// spaces.
        pub recent_ips: String,
        /// The lead time (seconds) of the last EXPIRING event given; NULL:
        /// none yet.
        pub expiry_warned: Option<i64>,
    }

    /// Tokens name their owner; the owner's row may not exist (enabled).
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::owners::Entity",
            from = "Column::Owner",
            to = "super::owners::Column::Owner"
        )]
        Owner,
    }

    impl Related<super::owners::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Owner.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod owners {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "owners")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner: String,
        pub disable_time: Option<i64>,
        pub disable_reason: String,
        pub update_time: i64,
        /// Rate limits shared by the owner's tokens, as `tokens.rate_limits`.
        pub rate_limits: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod console_sessions {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: Vec<u8>,
        pub actor: String,
        pub credential_digest: Vec<u8>,
        pub create_time: i64,
        pub expire_time: i64,
        /// The owner a hosted token page's session is limited to; `None`
        /// for an admin's session.
        pub owner: Option<String>,
        pub return_url: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod console_links {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: Vec<u8>,
        pub owner: String,
        pub actor: String,
        pub credential_digest: Vec<u8>,
        pub return_url: String,
        pub create_time: i64,
        pub expire_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod token_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "token_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub time: i64,
        pub kind: String,
        pub token_id: Option<Uuid>,
        pub owner: String,
        pub actor: String,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod meta {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "latchkey_meta")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod token_changes {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "token_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub time: i64,
        pub digest: Option<Vec<u8>>,
        pub owner: Option<String>,
        pub origin: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_log {
    use sea_orm::entity::prelude::*;

    /// Every audit event, numbered in the order replicas appended it.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub event_id: Uuid,
        pub owner: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rate_windows {
    use sea_orm::entity::prelude::*;

    /// The calls taken in one window of one rate limit, by every replica.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rate_windows")]
    pub struct Model {
        /// `t/<token id>/<name>` or `o/<owner>/<name>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub window_index: i64,
        pub window_end: i64,
        pub used: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod token_usage {
    use sea_orm::entity::prelude::*;

    /// Calls that found a token on one day (since the epoch, UTC) with one
    /// verdict, over every replica.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "token_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub verdict: String,
        pub count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
