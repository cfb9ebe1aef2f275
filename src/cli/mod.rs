//! The client subcommands of the `latchkey` binary: TokenAdmin and Verify
//! over gRPC, with human durations in and a table (or proto3 JSON) out.
//! They talk to a running server through `latchkey-client`; the server's
//! configuration file and database are not read.

mod render;
mod run;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use latchkey_core::limit::{RateLimit, Refill, parse_rate_limit, parse_refill};

pub use run::run;

/// Where the server is and how to reach it; flags of every client command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// latchkey's gRPC address; https:// for TLS.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// The admin credential, sent as a bearer token (prefer the variable:
    /// arguments show in `ps` and shell history).
    #[arg(long, global = true, env = "LATCHKEY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output: a table for people, or the response message as proto3 JSON.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// PEM of the CA that signed the server's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for a server that asks for one.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The client commands, as the binary's subcommands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create, list, change, revoke, restore, delete and renew tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// An owner's tokens at once: look up, disable, enable, delete.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// The audit trail of a token or an owner, newest first, every page.
    Events(EventsArgs),
    /// Events as they happen on any replica, until stopped: a line per
    /// event ending with its cursor (`-o json`: a WatchEventsResponse per
    /// line, cursor-only ones included).
    Watch {
        /// Only this owner's events.
        #[arg(long)]
        owner: Option<String>,
        /// Resume after this cursor (from an earlier watch); unset: from now.
        #[arg(long)]
        after: Option<String>,
    },
    /// The HMAC keys and how many tokens each one digests.
    Keys,
    /// Read a token from stdin and say whether it is valid; the exit status
    /// is 0 only for VALID.
    Verify {
        /// A scope the token must hold; repeat for more.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again.
    Create {
        /// Whose token: the user, device or app id.
        #[arg(long)]
        owner: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A scope the token holds; repeat for more.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Metadata as KEY=VALUE; repeat for more.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        #[command(flatten)]
        expiry: Expiry,
        /// Expire after this long unused, such as 30d.
        #[arg(long, value_parser = duration)]
        idle_timeout: Option<Duration>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List tokens, newest first, every page.
    List {
        /// Only this owner's tokens.
        #[arg(long)]
        owner: Option<String>,
        /// Only tokens with this status; repeat for more.
        #[arg(long = "status", value_enum, value_name = "STATUS")]
        statuses: Vec<Status>,
        /// Only tokens that expire before this time, in RFC 3339
        /// (2027-01-31T00:00:00Z).
        #[arg(long, value_parser = time, value_name = "TIME")]
        expires_before: Option<SystemTime>,
    },
    /// Show one token.
    Get { id: String },
    /// Calls that presented a token, per day (UTC) and verdict.
    Usage {
        id: String,
        /// Days back, counting today: 1 to 90.
        #[arg(long, default_value_t = 30)]
        days: i32,
    },
    /// Change a token's name, description or metadata (only what is given).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Replaces the metadata with these KEY=VALUE pairs; repeat for more.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// Replace the rate limits with those given by --rate-limit.
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove every rate limit of the token.
        #[arg(long, conflicts_with = "rate_limits")]
        no_rate_limits: bool,
        /// Remove the credits: unlimited use from now on.
        #[arg(long, conflicts_with_all = ["credits", "refill"])]
        unlimited: bool,
    },
    /// Revoke a token: it stops verifying at once.
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make a revoked or inactive token active again.
    Restore { id: String },
    /// Delete a token for good (asks first on a terminal).
    Delete {
        id: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Issue a new secret for a token; the old one dies at once or after
    /// the grace period.
    Renew {
        id: String,
        /// How long the old secret keeps working, such as 1h.
        #[arg(long, value_parser = duration)]
        grace: Option<Duration>,
        #[command(flatten)]
        expiry: Expiry,
    },
}

/// A token's expiry: a lifetime or a time, not both.
#[derive(Args)]
#[group(multiple = false)]
pub struct Expiry {
    /// Lifetime, such as 30d, 12h or 90s.
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// Expiry time, in RFC 3339 (2027-01-31T00:00:00Z).
    #[arg(long, value_parser = time)]
    pub expires: Option<SystemTime>,
}

#[derive(Subcommand)]
pub enum OwnerCommand {
    /// Show an owner: disabled or not, and its tokens by status.
    Get { owner: String },
    /// Make every token of the owner verify as OWNER_DISABLED.
    Disable {
        owner: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let the owner's tokens verify again.
    Enable { owner: String },
    /// Set the rate limits all of the owner's tokens share (none given:
    /// remove them).
    Limits {
        owner: String,
        /// A rate limit as NAME=LIMIT/WINDOW, such as per-minute=600/1m;
        /// repeat for more.
        #[arg(long = "rate-limit", value_name = "NAME=LIMIT/WINDOW", value_parser = parse_rate_limit)]
        rate_limits: Vec<RateLimit>,
    },
    /// A link that opens the owner's hosted token page once, to send to
    /// the owner's browser: it carries a secret, so do not log it.
    ConsoleLink {
        owner: String,
        /// How long the link may wait to be opened, at most 1h; unset: 15m.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Where the page's "Back" link goes: an absolute http(s) URL.
        #[arg(long, default_value = "")]
        return_url: String,
    },
    /// Delete every token of the owner (asks first on a terminal).
    DeleteTokens {
        owner: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct EventsArgs {
    /// The events of this token.
    #[arg(long)]
    pub token_id: Option<String>,
    /// The events of this owner and its tokens.
    #[arg(long)]
    pub owner: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Status {
    Active,
    Revoked,
    Expired,
    Inactive,
}

/// `30d`, `12h`, `90s`, `1h 30m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (use a duration such as 30d, 12h or 90s)"))
}

/// An RFC 3339 time.
fn time(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e} (use RFC 3339, such as 2027-01-31T00:00:00Z)"))
}

/// Rate limits and credits, on create and update.
#[derive(Args, Clone, Debug)]
pub struct LimitArgs {
    /// Usage credits: each VALID Verify spends its cost; unset: unlimited.
    #[arg(long)]
    pub credits: Option<i64>,
    /// Set the credits to AMOUNT at every INTERVAL (aligned to the epoch),
    /// such as 1000/1d; needs --credits.
    #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse_refill, requires = "credits")]
    pub refill: Option<Refill>,
    /// A rate limit as NAME=LIMIT/WINDOW, such as per-second=50/1s;
    /// repeat for more.
    #[arg(long = "rate-limit", value_name = "NAME=LIMIT/WINDOW", value_parser = parse_rate_limit)]
    pub rate_limits: Vec<RateLimit>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}
