//! Health: the server itself (`""`, liveness) SERVING until it drains; the
//! API services (readiness) NOT_SERVING until the cache is warm, and while
//! it is not trusted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::changes::Freshness;
use crate::grpc;

/// NOT_SERVING for the API services until `warmed` (warming the cache is
/// over), and while the cache is not trusted (the change log has gone
/// unread past changes.max_staleness: Verify then asks the database for
/// every token), on the same clock Verify judges by; until `draining`.
pub async fn follow(
    freshness: Arc<Freshness>,
    mut warmed: watch::Receiver<bool>,
    health: HealthReporter,
    poll_interval: Duration,
    draining: CancellationToken,
) {
    // As `run_until_stopped` set them.
    let mut serving = false;
    let mut warm = *warmed.borrow_and_update();
    loop {
        let fresh = freshness.is_fresh(std::time::Instant::now());
        let ready = fresh && warm;
        if ready != serving {
            serving = ready;
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            // The API services only: the server itself ("") stays SERVING,
            // so a liveness probe does not restart a replica that waits for
            // its database.
            for service in grpc::API_SERVICES {
                health.set_service_status(service, status).await;
            }
        }
        // Fresh: until the bound passes (the log may be read again
        // meanwhile); stale: until the next read may have come.
        let wake = if fresh {
            tokio::time::Instant::from_std(freshness.stale_at())
        } else {
            tokio::time::Instant::now() + poll_interval
        };
        tokio::select! {
            () = draining.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
            changed = warmed.changed(), if !warm => {
                // Over; or the warming task ended without saying so (it
                // panicked): then serve cold rather than never.
                warm = changed.is_err() || *warmed.borrow_and_update();
            }
        }
    }
}

/// Sets the server to `server` and every API service to `api`.
pub async fn set_health(health: &HealthReporter, server: ServingStatus, api: ServingStatus) {
    health.set_service_status("", server).await;
    for service in grpc::API_SERVICES {
        health.set_service_status(service, api).await;
    }
}
