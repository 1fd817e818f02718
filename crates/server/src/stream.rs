//! `GET /api/missions/{id}/events`: the mission's events as server-sent events.
//!
//! Stored events after `Last-Event-ID` (or `?after=`) are replayed, then new ones follow as they are
//! written. Everything is read from the store, which the engine writes before anyone sees an event,
//! so a replay and the live part can neither miss nor repeat one. A mission this server runs wakes
//! the stream on each event; another process's mission is polled. The stream ends once the mission
//! has stopped and its last event was sent.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use orchestrator_protocol::{Event, EventEnvelope};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::registry::Found;

/// How often a mission run by another process is checked for new events.
const POLL: Duration = Duration::from_millis(250);
/// A mission this server runs wakes its streams itself; this is only a safety net.
const LIVE_POLL: Duration = Duration::from_secs(2);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether there is anything to stream: a stopped mission with nothing after `after` gets
/// `204 No Content`, which also tells a browser's `EventSource` not to reconnect.
pub async fn has_more(found: &Found, after: Option<u64>) -> Result<bool, ApiError> {
    Ok(found.is_running() || !found.events_after(after).await?.is_empty())
}

/// Starts streaming; the stream ends when the mission has stopped, the client goes, or the server
/// shuts down.
pub fn open(found: Found, after: Option<u64>, closing: CancellationToken) -> Response {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = follow(found, after, &tx, closing).await {
            tracing::warn!("event stream ended: {e}");
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

type Sender = mpsc::Sender<Result<SseEvent, Infallible>>;

async fn follow(
    mut found: Found,
    mut after: Option<u64>,
    tx: &Sender,
    closing: CancellationToken,
) -> Result<(), ApiError> {
    let mut woken = found.live.as_ref().map(|live| live.progress.clone());
    loop {
        let batch = found.events_after(after).await?;
        let ended_with_finish = batch
            .last()
            .is_some_and(|e| matches!(e.event, Event::MissionFinished { .. }));
        for envelope in &batch {
            if tx.send(Ok(sse_event(envelope))).await.is_err() {
                return Ok(()); // the client went away
            }
            after = Some(envelope.seq);
        }
        found.refresh().await?;
        if !found.is_running() && (batch.is_empty() || ended_with_finish) {
            return Ok(());
        }
        let wait = async {
            match woken.as_mut() {
                Some(progress) => {
                    let _ = tokio::time::timeout(LIVE_POLL, progress.changed()).await;
                }
                None => tokio::time::sleep(POLL).await,
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = closing.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// One SSE event: id = the sequence number, data = the envelope as JSON.
fn sse_event(envelope: &EventEnvelope) -> SseEvent {
    let data = serde_json::to_string(envelope).unwrap_or_else(|e| {
        serde_json::json!({ "seq": envelope.seq, "error": format!("cannot encode the event: {e}") })
            .to_string()
    });
    SseEvent::default().id(envelope.seq.to_string()).data(data)
}
