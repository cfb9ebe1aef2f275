//! Integration tests: the real server on port 0, called through a real tonic
//! client, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

mod helpers;

mod admin_auth;
mod audit;
mod bad_input;
mod change_log;
mod cli;
mod client_details;
mod client_layer;
mod connections;
mod console;
mod console_browser;
mod console_hosted;
mod credits;
mod discovery;
mod envoy;
mod ext_authz;
mod flood;
mod idle;
mod introspection;
mod keys;
mod leaks;
mod lifecycle;
mod limit_changes;
mod limits;
mod listing;
mod metrics;
mod outage;
mod owners;
mod partition;
mod persistence;
mod rate_limits;
mod renewal;
mod replicas;
mod seeding;
mod self_service;
mod server_limits;
mod shutdown;
mod store_status;
mod tls;
mod token_review;
mod usage_counts;
mod verify;
mod workflows;
