//! The webhook: each notice POSTed as JSON, with a few bounded attempts.

use std::time::Duration;

use reqwest::{StatusCode, Url};

use crate::Notice;

/// Attempts per notice: a receiver that is briefly down (a deploy, a 502) still gets it, one that
/// is gone costs a few seconds of a background task and nothing more.
const ATTEMPTS: u32 = 3;

/// Waits between attempts: 1 s, then 2 s.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// One attempt: connecting, sending and reading the answer's status.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook: {0}")]
    Invalid(String),
    #[error("the webhook {to} did not take a notice: {why}")]
    Failed { to: String, why: String },
}

/// A webhook URL, checked; it is shown only as its scheme and host (the path of a chat webhook is
/// its secret).
#[derive(Debug, Clone)]
pub struct Webhook {
    url: Url,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str) -> Result<Webhook, WebhookError> {
        let url = check(url)?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Invalid(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Webhook { url, client })
    }

    /// POSTs the notice; retries connection failures, timeouts, 429 and 5xx answers, at most
    /// [`ATTEMPTS`] times in all.
    pub async fn post(&self, notice: &Notice) -> Result<(), WebhookError> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let why = match self.client.post(self.url.clone()).json(notice).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) if !retryable(answer.status()) => {
                    return Err(self.failed(format!("it answered {}", answer.status())));
                }
                Ok(answer) => format!("it answered {}", answer.status()),
                Err(e) if e.is_timeout() => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
                Err(e) => format!("cannot reach it: {}", without_url(&e)),
            };
            if attempt >= ATTEMPTS {
                return Err(self.failed(format!("{why} ({attempt} attempts)")));
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            attempt += 1;
        }
    }

    /// The URL as it may be logged.
    pub fn shown(&self) -> String {
        shown(&self.url)
    }

    fn failed(&self, why: String) -> WebhookError {
        WebhookError::Failed {
            to: self.shown(),
            why,
        }
    }
}

/// An http(s) URL with a host; anything else is refused with what was wrong.
pub fn check(url: &str) -> Result<Url, WebhookError> {
    let parsed = Url::parse(url.trim()).map_err(|e| {
        WebhookError::Invalid(format!(
            "`{url}` is not a URL ({e}); give e.g. https://hooks.example.com/…"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::Invalid(format!(
            "`{}` URLs cannot take a POST; give an http:// or https:// URL",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::Invalid(format!("`{url}` names no host")));
    }
    Ok(parsed)
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn shown(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}/…", url.scheme(), url.host_str().unwrap_or("?")),
        None => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?")),
    }
}

/// reqwest's errors carry the URL, path and all; the path of a chat webhook is its secret.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), &shown(url));
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_taken() {
        assert!(check("https://hooks.example.com/services/T0/B0/secret").is_ok());
        assert!(check("http://127.0.0.1:9/x").is_ok());
        for bad in [
            "hooks.example.com/x",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "",
            "https://",
        ] {
            let err = check(bad)
                .map(|_| ())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("invalid webhook"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_path_of_a_webhook_is_never_shown() {
        let url = check("https://hooks.example.com/services/T0/B0/secret").expect("valid");
        assert_eq!(shown(&url), "https://hooks.example.com/…");
        let url = check("http://127.0.0.1:9/secret").expect("valid");
        assert_eq!(shown(&url), "http://127.0.0.1:9/…");
    }
}
