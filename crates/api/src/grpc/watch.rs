//! TokenAdmin/WatchEvents as a gRPC stream: a watcher's messages until the
//! server stops or the credential stops being an admin's.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert;
use super::pb;
use crate::auth::AdminAuth;
use crate::watch::{MARK_EVERY, Watched, Watcher, Watching};

/// The events WatchEvents sends.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

/// The event log's watchers, and the signal that ends their streams.
pub struct Watchers {
    pub watching: Arc<Watching>,
    /// Cancelled when the server stops serving.
    pub stop: CancellationToken,
}

/// A watcher's stream: its messages until the server stops or the
/// credential it opened with stops being an admin's (checked again every
/// [`MARK_EVERY`], whether or not events come); the credential is kept only
/// for that.
pub(super) fn event_stream(
    watcher: Watcher,
    auth: Arc<AdminAuth>,
    credential: Option<String>,
    stop: CancellationToken,
) -> EventStream {
    let open = OpenWatch {
        watcher,
        auth,
        credential,
        stop,
        checked: Instant::now(),
    };
    Box::pin(futures_util::stream::unfold(
        Some(open),
        |open| async move {
            let mut open = open?;
            match open.next().await {
                Ok(message) => Some((Ok(message), Some(open))),
                Err(end) => Some((Err(end), None)),
            }
        },
    ))
}

struct OpenWatch {
    watcher: Watcher,
    auth: Arc<AdminAuth>,
    credential: Option<String>,
    stop: CancellationToken,
    checked: Instant,
}

impl OpenWatch {
    /// The next message, or the status that ends the stream.
    async fn next(&mut self) -> Result<pb::WatchEventsResponse, Status> {
        loop {
            let watched = tokio::select! {
                () = self.stop.cancelled() => {
                    return Err(Status::unavailable(
                        "the server is stopping; call WatchEvents again with the last cursor",
                    ));
                }
                watched = self.watcher.next() => watched,
            };
            if self.checked.elapsed() >= MARK_EVERY {
                self.auth
                    .authorize(self.credential.as_deref())
                    .await
                    .map_err(crate::status::status)?;
                self.checked = Instant::now();
            }
            match watched {
                Some(Watched::Event(event, cursor)) => {
                    return Ok(pb::WatchEventsResponse {
                        event: Some(convert::event(&event)),
                        cursor,
                    });
                }
                Some(Watched::Mark(cursor)) => {
                    return Ok(pb::WatchEventsResponse {
                        event: None,
                        cursor,
                    });
                }
                None => {}
            }
        }
    }
}
