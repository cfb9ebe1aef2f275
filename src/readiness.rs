//! Health: the server itself (`""`, liveness) SERVING until it drains; the
//! API services (readiness) NOT_SERVING while the cache is not trusted.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::changes::Freshness;
use crate::grpc;

/// NOT_SERVING for the API services while the cache is not trusted (the
/// change log has gone unread past changes.max_staleness: Verify then asks
/// the database for every token), on the same clock Verify judges by;
/// until `draining`.
pub async fn follow(
    freshness: Arc<Freshness>,
    health: HealthReporter,
    poll_interval: Duration,
    draining: CancellationToken,
) {
    let mut serving = true;
    loop {
        let fresh = freshness.is_fresh(std::time::Instant::now());
        if fresh != serving {
            serving = fresh;
            let status = if fresh {
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
        }
    }
}

/// Sets the server and every API service to `status`.
pub async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in grpc::API_SERVICES {
        health.set_service_status(service, status).await;
    }
}
