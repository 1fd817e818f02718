//! One-line descriptions of tool calls for progress displays and the event log.

use serde_json::Value;

const MAX_SUMMARY_CHARS: usize = 100;

/// Describes a call in one line of at most 100 characters, such as `read src/a.rs`, `bash: cargo test`
/// or `grep 'foo' in src`. Never includes file contents (`write`'s `content`, `edit`'s strings, `insert`'s text): they
/// can be large and may be secret, and event logs are kept.
pub fn summarize_call(name: &str, arguments: &Value) -> String {
    let arg = |key: &str| arguments.get(key).and_then(Value::as_str);
    let path = || arg("path").unwrap_or("?");
    let line = match name {
        "read" | "write" | "edit" | "insert" => format!("{name} {}", path()),
        "list" => format!("list {}", arg("path").unwrap_or(".")),
        "glob" => format!("glob {}", arg("pattern").unwrap_or("?")),
        "grep" => grep_summary(arg("pattern"), arg("path"), arg("include")),
        "bash" => bash_summary(arg("command").unwrap_or("?")),
        other => other.to_string(),
    };
    shorten(&single_line(&line))
}

fn grep_summary(pattern: Option<&str>, path: Option<&str>, include: Option<&str>) -> String {
    let mut line = format!("grep '{}'", pattern.unwrap_or("?"));
    if let Some(path) = path {
        line.push_str(&format!(" in {path}"));
    }
    if let Some(include) = include {
        line.push_str(&format!(" ({include})"));
    }
    line
}

/// The first non-blank line of the command, marked when more follows.
fn bash_summary(command: &str) -> String {
    let mut lines = command.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let more = if lines.next().is_some() { " ..." } else { "" };
    format!("bash: {first}{more}")
}

fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_SUMMARY_CHARS {
        return text.to_string();
    }
    let kept: String = text.chars().take(MAX_SUMMARY_CHARS - 3).collect();
    kept + "..."
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_match_the_documented_shapes() {
        assert_eq!(
            summarize_call("read", &json!({"path": "src/a.rs"})),
            "read src/a.rs"
        );
        assert_eq!(
            summarize_call("bash", &json!({"command": "cargo test"})),
            "bash: cargo test"
        );
        assert_eq!(
            summarize_call(
                "edit",
                &json!({"path": "src/a.rs", "old_string": "x", "new_string": "y"})
            ),
            "edit src/a.rs"
        );
        assert_eq!(
            summarize_call("grep", &json!({"pattern": "foo", "path": "src"})),
            "grep 'foo' in src"
        );
        assert_eq!(summarize_call("list", &json!({})), "list .");
        assert_eq!(summarize_call("spawn", &json!({"tasks": []})), "spawn");
    }

    #[test]
    fn contents_never_appear_and_lines_stay_short() {
        let secret = "SECRET".repeat(50);
        let out = summarize_call("write", &json!({"path": "a.txt", "content": secret}));
        assert_eq!(out, "write a.txt");
        let long = format!("echo {}\nsecond line", "x".repeat(300));
        let out = summarize_call("bash", &json!({"command": long}));
        assert!(out.chars().count() <= 100 && out.ends_with("..."), "{out}");
        let out = summarize_call("bash", &json!({"command": "cd x\ncargo build"}));
        assert_eq!(out, "bash: cd x ...");
        let out = summarize_call("read", &Value::Null);
        assert_eq!(out, "read ?");
    }
}
