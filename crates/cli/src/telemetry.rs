//! `--otlp-endpoint`: the mission's event stream exported as OpenTelemetry traces, best-effort.

use orchestrator_core::config::Provider;
use orchestrator_core::EventBus;
use orchestrator_telemetry::{Exporter, Settings};

use crate::out::errln;
use crate::RunFlags;

/// Starts exporting when the flag or the OTEL_EXPORTER_OTLP_* environment asks for it; `Err` is the
/// exit status for an unusable `--otlp-endpoint` (2: nothing started).
pub fn start(flags: &RunFlags, bus: &EventBus) -> Result<Option<Exporter>, u8> {
    let settings = Settings {
        // Only the flag names the provider here; OpenCode sessions run on whatever OpenCode is set to.
        provider: match flags.provider {
            Some(Provider::OpenAi) => Some("openai".into()),
            Some(Provider::Anthropic) => Some("anthropic".into()),
            Some(Provider::OpenCode) | None => None,
        },
        ..Settings::default()
    };
    Exporter::from_flag(flags.otlp_endpoint.as_deref(), settings, || bus.subscribe()).map_err(|e| {
        errln!("error: --otlp-endpoint: {e}");
        2
    })
}

/// Sends the last spans, waiting at most the exporter's flush timeout. A collector that is gone or
/// slow is a one-line notice; it never changes the exit status.
pub async fn finish(traces: Option<Exporter>) {
    let Some(traces) = traces else {
        return;
    };
    if let Err(e) = traces.finish().await {
        errln!("notice: traces not fully exported: {e}");
    }
}
