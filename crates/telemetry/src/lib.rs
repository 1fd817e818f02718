//! Optional OpenTelemetry export of a mission as trace spans (OTLP over HTTP, protobuf).
//!
//! [`SpanTree`] turns the engine's event stream — and nothing else — into spans; [`Exporter`] runs it
//! on a subscriber channel and sends finished spans to any [`SpanExporter`], normally the OTLP one.
//! Exporting is best-effort by design: a collector that is slow or gone costs at most the flush
//! timeout at the end of the mission and is reported, never failing the mission.

mod endpoint;
mod export;
mod spans;

pub use endpoint::{traces_endpoint, EnvLookup};
pub use export::{Exporter, Settings, Stats};
pub use opentelemetry_sdk::trace::{SpanData, SpanExporter};
pub use spans::SpanTree;

/// What can go wrong while exporting traces. None of it should change how a mission ends.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid OTLP endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot set up the OTLP exporter: {0}")]
    Build(String),
    #[error("{dropped} span(s) could not be sent to {endpoint}: {reason}")]
    Export {
        endpoint: String,
        dropped: usize,
        reason: String,
    },
    #[error("sending traces to {endpoint} did not finish within {seconds:.1} s")]
    FlushTimeout { endpoint: String, seconds: f64 },
}
