//! Runs a [`SpanTree`] on an event subscription and sends finished spans to a [`SpanExporter`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use orchestrator_protocol::EventEnvelope;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{traces_endpoint, SpanTree, TelemetryError};

/// An event subscription, as `EventBus::subscribe` hands it out.
pub type Events = mpsc::UnboundedReceiver<Arc<EventEnvelope>>;

/// How the exporter behaves; `Default` is what the CLI uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `gen_ai.provider.name` on session and model-call spans, when the front end knows it.
    pub provider: Option<String>,
    /// The most [`Exporter::finish`] waits for the last spans to be sent.
    pub flush_timeout: Duration,
    /// Finished spans are sent at least this often, so a long mission shows up while it runs.
    pub export_every: Duration,
    /// At most this many spans per request.
    pub max_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            provider: None,
            flush_timeout: Duration::from_secs(5),
            export_every: Duration::from_secs(5),
            max_batch: 512,
        }
    }
}

/// What was sent and what was lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub exported: usize,
    pub dropped: usize,
    /// The first export error, in one line.
    pub error: Option<String>,
}

/// A running export: a task that folds events into spans and sends them.
pub struct Exporter {
    endpoint: String,
    flush_timeout: Duration,
    task: JoinHandle<()>,
    stats: Arc<Mutex<Stats>>,
}

impl Exporter {
    /// For front ends: starts an OTLP export when `flag` or the environment names a collector, and
    /// `Ok(None)` otherwise. `subscribe` is called only when exporting, so a mission without traces
    /// keeps no extra channel. Fails only for an unusable `flag`; an unusable environment variable
    /// may have been set for other programs, so it is a warning.
    pub fn from_flag(
        flag: Option<&str>,
        settings: Settings,
        subscribe: impl FnOnce() -> Events,
    ) -> Result<Option<Exporter>, TelemetryError> {
        let explicit = flag.is_some_and(|f| !f.trim().is_empty());
        let started = traces_endpoint(flag, &|name| std::env::var(name).ok()).and_then(|url| {
            url.map(|url| otlp_exporter(&url).map(|exporter| (url, exporter)))
                .transpose()
        });
        match started {
            Ok(Some((url, exporter))) => Ok(Some(Exporter::start(exporter, url, settings, subscribe()))),
            Ok(None) => Ok(None),
            Err(e) if explicit => Err(e),
            Err(e) => {
                tracing::warn!("traces are not exported: {e}");
                Ok(None)
            }
        }
    }

    /// Sends spans to the OTLP/HTTP (protobuf) collector at `url`, the full traces URL.
    pub fn otlp(url: &str, settings: Settings, events: Events) -> Result<Exporter, TelemetryError> {
        Ok(Exporter::start(
            otlp_exporter(url)?,
            url.to_string(),
            settings,
            events,
        ))
    }

    /// Starts exporting `events` to `exporter`; `endpoint` names it in messages. Needs a Tokio runtime.
    pub fn start<E: SpanExporter + 'static>(
        exporter: E,
        endpoint: String,
        settings: Settings,
        events: Events,
    ) -> Exporter {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let task = tokio::spawn(run(
            exporter,
            events,
            SpanTree::new(settings.provider.clone()),
            settings.clone(),
            stats.clone(),
            endpoint.clone(),
        ));
        Exporter {
            endpoint,
            flush_timeout: settings.flush_timeout,
            task,
            stats,
        }
    }

    /// Where spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Call after the event stream has ended (the bus closed): waits, at most the flush timeout, for
    /// the last spans to be sent. `Err` says what was lost; the spans that were sent stay sent.
    pub async fn finish(mut self) -> Result<Stats, TelemetryError> {
        let ended = tokio::time::timeout(self.flush_timeout, &mut self.task).await;
        let stats = lock(&self.stats).clone();
        match ended {
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    "sending traces to {} did not finish within the flush timeout; the rest are dropped",
                    self.endpoint
                );
                Err(TelemetryError::FlushTimeout {
                    endpoint: self.endpoint,
                    seconds: self.flush_timeout.as_secs_f64(),
                })
            }
            Ok(Err(join)) => Err(TelemetryError::Export {
                endpoint: self.endpoint,
                dropped: stats.dropped,
                reason: format!("the export task stopped: {join}"),
            }),
            Ok(Ok(())) => match (stats.dropped, &stats.error) {
                (0, _) => Ok(stats),
                (dropped, error) => Err(TelemetryError::Export {
                    endpoint: self.endpoint,
                    dropped,
                    reason: error.clone().unwrap_or_else(|| "unknown error".into()),
                }),
            },
        }
    }
}

async fn run<E: SpanExporter>(
    mut exporter: E,
    mut events: Events,
    mut tree: SpanTree,
    settings: Settings,
    stats: Arc<Mutex<Stats>>,
    endpoint: String,
) {
    let every = settings.export_every.max(Duration::from_millis(10));
    let max_batch = settings.max_batch.max(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<SpanData> = Vec::new();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(envelope) => {
                    pending.extend(tree.push(&envelope));
                    if pending.len() >= max_batch {
                        send(&exporter, &mut pending, max_batch, &stats, &endpoint).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    send(&exporter, &mut pending, max_batch, &stats, &endpoint).await;
                }
            }
        }
    }
    pending.extend(tree.finish());
    send(&exporter, &mut pending, max_batch, &stats, &endpoint).await;
    if let Err(e) = exporter.shutdown() {
        tracing::debug!("trace exporter shutdown: {e}");
    }
}

/// Sends everything pending. A failed batch is dropped, not retried: spans must never pile up in a
/// mission that runs for hours against a collector that is gone.
async fn send<E: SpanExporter>(
    exporter: &E,
    pending: &mut Vec<SpanData>,
    max_batch: usize,
    stats: &Mutex<Stats>,
    endpoint: &str,
) {
    while !pending.is_empty() {
        let batch: Vec<SpanData> = pending.drain(..pending.len().min(max_batch)).collect();
        let count = batch.len();
        match exporter.export(batch).await {
            Ok(()) => lock(stats).exported += count,
            Err(e) => {
                let mut stats = lock(stats);
                stats.dropped += count;
                if stats.error.is_none() {
                    let reason = one_line(&e.to_string());
                    tracing::warn!("cannot send traces to {endpoint}: {reason}");
                    stats.error = Some(reason);
                } else {
                    tracing::debug!("cannot send traces to {endpoint}: {e}");
                }
            }
        }
    }
}

fn otlp_exporter(url: &str) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(protocol) = std::env::var(var) {
            if !protocol.trim().is_empty() && protocol.trim() != "http/protobuf" {
                tracing::warn!("{var}={protocol} is not supported; traces are sent as http/protobuf");
            }
        }
    }
    // Headers (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS) and the request timeout
    // (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT) are read from the environment by the builder.
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| match e {
            opentelemetry_otlp::ExporterBuildError::InvalidUri(endpoint, reason) => {
                TelemetryError::InvalidEndpoint { endpoint, reason }
            }
            other => TelemetryError::Build(other.to_string()),
        })?;
    exporter.set_resource(&resource());
    Ok(exporter)
}

/// `service.name` is `orchestrator` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder =
        Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("orchestrator").build()
    }
}

/// Export errors carry whole debug dumps of the HTTP client's error chain; say the gist.
fn one_line(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let gist = if lower.contains("connection refused") || lower.contains("connectionrefused") {
        "connection refused"
    } else if lower.contains("timed out") || lower.contains("timedout") || lower.contains("timeout") {
        "timed out"
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        "cannot resolve the host"
    } else if let Some(at) = error.find("Status Code: ") {
        let code: String = error[at + 13..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return format!("the collector answered HTTP {code}");
    } else {
        let flat = error.split_whitespace().collect::<Vec<_>>().join(" ");
        return match flat.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &flat[..cut]),
            None => flat,
        };
    };
    gist.to_string()
}

/// A poisoned lock only means a panic elsewhere mid-update of plain counters; keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
