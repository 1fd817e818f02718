//! Where traces go: the `--otlp-endpoint` flag or the standard OpenTelemetry environment variables.

use crate::TelemetryError;

/// Reads an environment variable; a parameter so the rules can be tested without touching the process.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const TRACES_PATH: &str = "/v1/traces";

/// The OTLP/HTTP traces URL, or `None` when export is off (the default).
///
/// In order: `flag` (a base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/traces` is appended unless
/// already there), then `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is, per the spec), then
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL). `OTEL_SDK_DISABLED=true` turns the variables off; an
/// explicit flag still counts.
pub fn traces_endpoint(flag: Option<&str>, env: EnvLookup) -> Result<Option<String>, TelemetryError> {
    let set = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let url = if let Some(flag) = flag.map(str::trim).filter(|f| !f.is_empty()) {
        with_traces_path(flag)
    } else if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    } else if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        url
    } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
        with_traces_path(&base)
    } else {
        return Ok(None);
    };
    check(&url)?;
    Ok(Some(url))
}

fn with_traces_path(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// Only OTLP over HTTP is built in; a gRPC-style `host:4317` or a typo should say so up front.
fn check(url: &str) -> Result<(), TelemetryError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| TelemetryError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: "expected an http:// or https:// URL (OTLP over HTTP, e.g. http://localhost:4318)".into(),
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(TelemetryError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: "the URL has no host".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<String>, TelemetryError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        traces_endpoint(flag, &|name| vars.get(name).cloned())
    }

    #[test]
    fn off_unless_asked_for() {
        assert_eq!(resolve(None, &[]).ok().flatten(), None);
        assert_eq!(resolve(Some(" "), &[]).ok().flatten(), None);
    }

    #[test]
    fn the_flag_is_a_base_url_like_the_generic_variable() {
        let url = |flag| resolve(Some(flag), &[]).ok().flatten();
        assert_eq!(
            url("http://127.0.0.1:4318").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            url("http://collector:4318/").as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url("https://otel.example/v1/traces").as_deref(),
            Some("https://otel.example/v1/traces")
        );
    }

    #[test]
    fn environment_follows_the_otlp_exporter_spec() {
        let generic = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")];
        assert_eq!(
            resolve(None, &generic).ok().flatten().as_deref(),
            Some("http://base:4318/v1/traces")
        );
        // The per-signal variable is the full URL and wins over the generic one.
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
        ];
        assert_eq!(
            resolve(None, &both).ok().flatten().as_deref(),
            Some("http://traces:9999/custom")
        );
        // The flag wins over both.
        assert_eq!(
            resolve(Some("http://flag:1"), &both).ok().flatten().as_deref(),
            Some("http://flag:1/v1/traces")
        );
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ];
        assert_eq!(resolve(None, &disabled).ok().flatten(), None);
    }

    #[test]
    fn non_http_endpoints_are_refused_with_the_reason() {
        for bad in ["localhost:4317", "grpc://collector:4317", "http://"] {
            let result = resolve(Some(bad), &[]);
            assert!(
                matches!(result, Err(TelemetryError::InvalidEndpoint { .. })),
                "{bad}: {result:?}"
            );
        }
    }
}
