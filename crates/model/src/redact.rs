//! Keeping secrets and huge bodies out of errors and logs.
//!
//! Error bodies from model endpoints end up in mission logs and terminals; some proxies echo the
//! request headers back, so everything a server says is scrubbed before it is shown.

/// What replaces a secret.
const MASK: &str = "[REDACTED]";

/// Things that announce a secret: (marker, whether separators like `: ` or `=` may follow, shortest
/// secret worth masking). `sk-` covers OpenAI (`sk-`, `sk-proj-`), Anthropic (`sk-ant-`) and most
/// OpenAI-compatible gateways.
const MARKERS: &[(&str, bool, usize)] = &[
    ("sk-", false, 8),
    ("bearer ", false, 8),
    ("x-api-key", true, 4),
    ("api-key", true, 4),
    ("api_key", true, 4),
];

/// Masks anything that looks like an API key (`sk-…` tokens, `Bearer …` credentials, `x-api-key: …`
/// and `api_key=…` pairs) so the text can go into an error message or a log.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase(); // same byte offsets: only ASCII letters change
    let mut out = String::with_capacity(text.len());
    let mut rest_from = 0; // text[..rest_from] has been copied or masked
    for (at, _) in text.char_indices() {
        if at < rest_from {
            continue;
        }
        if let Some(end) = secret_at(text, &lower, at) {
            out.push_str(&text[rest_from..end.0]);
            out.push_str(MASK);
            rest_from = end.1;
        }
    }
    out.push_str(&text[rest_from..]);
    out
}

/// If a marker starts at `at` and a long enough secret follows, the byte range of the secret. The
/// marker itself stays visible so a reader still knows what kind of thing was hidden.
fn secret_at(text: &str, lower: &str, at: usize) -> Option<(usize, usize)> {
    let preceded_by_word = text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    for &(marker, separators, min_len) in MARKERS {
        if !lower[at..].starts_with(marker) || preceded_by_word {
            continue;
        }
        let mut start = at + marker.len();
        if separators {
            start += text[start..]
                .bytes()
                .take_while(|b| b" :=\"'".contains(b))
                .count();
        }
        let secret_len = text[start..].bytes().take_while(|b| is_secret_byte(*b)).count();
        if secret_len >= min_len {
            return Some((start, start + secret_len));
        }
    }
    None
}

fn is_secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b)
}

/// Masks the configured key wherever it appears verbatim, then anything else that looks like a key.
pub(crate) fn redact_with_key(text: &str, key: Option<&str>) -> String {
    match key {
        // Short "keys" (`x`, `local` for local servers) are placeholders, and masking them would rewrite
        // "localhost" in every URL; real keys are far longer.
        Some(key) if key.len() >= 12 => redact(&text.replace(key, MASK)),
        _ => redact(text),
    }
}

/// Bodies quoted in errors are cut to about this many characters: enough for a JSON error's message,
/// short enough that a retried failure does not fill a terminal.
pub(crate) const BODY_QUOTE_CHARS: usize = 300;

/// An error body as one short line: a JSON error's `message` when there is one, an HTML page's title
/// (or its text without tags), every run of whitespace as one space. A server that is not a model API
/// answers with whole HTML pages; quoting one per retry buried the actual reason.
pub(crate) fn summarize_body(body: &str) -> String {
    let body = body.trim();
    let text = json_error_message(body)
        .or_else(|| html_text(body))
        .unwrap_or_else(|| body.to_string());
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `{"error": {"message": "..."}}`, `{"error": "..."}` or `{"message": "..."}`, with the error's type or
/// code before it when the server gave one (`model_not_found: The model ... does not exist`).
fn json_error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    if let Some(text) = error.as_str() {
        return Some(text.to_string());
    }
    let message = error.get("message")?.as_str()?;
    let kind = ["code", "type"]
        .iter()
        .find_map(|key| error.get(*key).and_then(|v| v.as_str()))
        .filter(|kind| !message.contains(kind));
    Some(match kind {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_string(),
    })
}

/// The readable part of an HTML page, or `None` when the body is not one.
fn html_text(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    if !(lower.starts_with("<!doctype") || lower.starts_with("<html") || lower.contains("<body")) {
        return None;
    }
    if let Some(start) = lower.find("<title>") {
        let after = start + "<title>".len();
        if let Some(len) = lower[after..].find("</title>") {
            let title = body[after..after + len].trim();
            if !title.is_empty() {
                return Some(format!("(an HTML page titled \"{title}\")"));
            }
        }
    }
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(format!("(an HTML page: {})", text.trim()))
}

/// Cuts `text` to `max` characters, saying how much was left out.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => {
            let left_out = text[cut..].chars().count();
            format!("{}… ({left_out} more characters)", &text[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_key_shapes() {
        assert_eq!(
            redact("key sk-abc123def456 rejected"),
            "key sk-[REDACTED] rejected"
        );
        assert_eq!(redact("sk-ant-api03-XYZ_xyz-123"), "sk-[REDACTED]");
        assert_eq!(
            redact("Authorization: Bearer abcd.efgh"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(redact("x-api-key: secret123"), "x-api-key: [REDACTED]");
        assert_eq!(
            redact("{\"api_key\": \"secret123\"}"),
            "{\"api_key\": \"[REDACTED]\"}"
        );
        assert_eq!(redact("url?api-key=zzzzzz&x=1"), "url?api-key=[REDACTED]&x=1");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for text in [
            "task-12345678 done",
            "sk-short",
            "the bearer of news",
            "",
            "héllo wörld",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn masks_the_configured_key_whatever_its_shape() {
        assert_eq!(
            redact_with_key("echo: hunter2hunter2!", Some("hunter2hunter2")),
            "echo: [REDACTED]!"
        );
        assert_eq!(redact_with_key("a x b", Some("x")), "a x b");
    }

    #[test]
    fn error_bodies_are_summarized_to_one_line() {
        assert_eq!(
            summarize_body(
                r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#
            ),
            "model_not_found: The model `gpt-9` does not exist"
        );
        assert_eq!(
            summarize_body(r#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(summarize_body("404 page not found\n"), "404 page not found");
        let page = "<!DOCTYPE html>\n<html><head><title>501 Not Implemented</title></head>\n<body>\n<h1>Not\n Implemented</h1>\n</body></html>";
        assert_eq!(
            summarize_body(page),
            "(an HTML page titled \"501 Not Implemented\")"
        );
        let untitled = "<html><body><h1>Error</h1>\n\n<p>Unsupported   method</p></body></html>";
        assert_eq!(
            summarize_body(untitled),
            "(an HTML page: Error Unsupported method)"
        );
        assert_eq!(summarize_body("{not json"), "{not json");
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé… (3 more characters)");
    }
}
