//! An axum service whose routes latchkey guards, each with the scopes it
//! needs. With latchkey running:
//!
//! ```text
//! LATCHKEY_ADDR=http://127.0.0.1:50051 cargo run -p latchkey-client --example protected_service
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/reports
//! ```
//!
//! A request without a valid token gets 401, one whose token lacks the
//! route's scope 403, and every request 503 while latchkey is unreachable.

use axum::routing::{get, post};
use axum::{Extension, Router};
use latchkey_client::{Client, RequireToken, VerifiedToken};

/// The service's routes: any valid token may ask who it is; reading
/// reports needs `reports:read`, and publishing one `reports:write`.
pub fn app(latchkey: Client) -> Router {
    let guard = |scopes: &[&str]| RequireToken::new(latchkey.clone()).scopes(scopes.to_vec());
    Router::new()
        .route("/whoami", get(whoami).route_layer(guard(&[])))
        .route(
            "/reports",
            get(list_reports).route_layer(guard(&["reports:read"])),
        )
        .route(
            "/reports/publish",
            post(publish_report).route_layer(guard(&["reports:write"])),
        )
}

/// The caller, as latchkey knows it.
async fn whoami(Extension(token): Extension<VerifiedToken>) -> String {
    format!(
        "owner={} token={} name={}\n",
        token.owner, token.id, token.name
    )
}

async fn list_reports(Extension(token): Extension<VerifiedToken>) -> String {
    format!("reports of {}\n", token.owner)
}

async fn publish_report(Extension(token): Extension<VerifiedToken>) -> String {
    format!("published by {}\n", token.owner)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("LATCHKEY_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    // Lazy: the service starts (and answers 503) before latchkey does.
    let latchkey = Client::builder(addr).connect_lazy()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(latchkey)).await?;
    Ok(())
}
