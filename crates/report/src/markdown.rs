//! Putting text someone else wrote (models, commands, build output) into Markdown without it being
//! read as Markdown: a title with `|` must not split a table cell, a summary starting with `#` must not
//! become a heading, and build output with ``` in it must not close its code block.

/// Text for one line of Markdown — a list item, a table cell, a heading. Line breaks become spaces and
/// every character Markdown could read as formatting is backslash-escaped (valid everywhere, also in
/// GitHub's tables, where `\|` keeps a cell whole).
pub fn inline(text: &str) -> String {
    let flat = one_line(text);
    let mut out = String::with_capacity(flat.len() + 8);
    for c in flat.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~') {
            out.push('\\');
        }
        out.push(c);
    }
    escape_line_start(out)
}

/// Text as inline code: a backtick run longer than any inside it, padded when the text itself starts
/// or ends with a backtick. For a table cell use [`cell_code`].
pub fn code(text: &str) -> String {
    let flat = one_line(text);
    if flat.is_empty() {
        return "(none)".to_string();
    }
    let fence = "`".repeat(longest_run(&flat, '`') + 1);
    let pad = if flat.starts_with('`') || flat.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

/// Inline code inside a table cell: GitHub splits cells at `|` even within code, unless escaped.
pub fn cell_code(text: &str) -> String {
    code(text).replace('|', "\\|")
}

/// A fenced code block that `text` cannot close early: the fence is longer than any backtick run in it.
pub fn fenced(text: &str, info: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
    let body = text.trim_end_matches(['\n', '\r']);
    format!("{fence}{info}\n{body}\n{fence}\n")
}

/// The last `max_lines` lines of `text`, at most `max_chars` characters, with a note of what was cut.
pub fn tail(text: &str, max_lines: usize, max_chars: usize) -> String {
    let text = text.trim_end();
    let lines: Vec<&str> = text.lines().collect();
    let keep_from = lines.len().saturating_sub(max_lines);
    let mut kept = lines[keep_from..].join("\n");
    let mut cut_chars = false;
    let count = kept.chars().count();
    if count > max_chars {
        kept = kept.chars().skip(count - max_chars).collect();
        cut_chars = true;
    }
    match (keep_from, cut_chars) {
        (0, false) => kept,
        (0, true) => format!("[… earlier output cut]\n{kept}"),
        (n, _) => format!("[… {n} earlier line(s) cut]\n{kept}"),
    }
}

/// Lines of free text (a description) as lines of escaped Markdown, each starting with `prefix`.
/// Blank lines are kept as paragraph breaks.
pub fn paragraphs(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.trim().lines() {
        let line = line.trim();
        if line.is_empty() {
            out.push_str(prefix.trim_end());
        } else {
            out.push_str(prefix);
            out.push_str(&inline(line));
        }
        out.push('\n');
    }
    out
}

fn one_line(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn longest_run(text: &str, of: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == of { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// At the start of a line `#`, `-`, `+`, `=` and `1.` / `1)` open headings, lists or underlines.
fn escape_line_start(text: String) -> String {
    let opens_block = text.starts_with(['#', '-', '+', '=']);
    if opens_block {
        return format!("\\{text}");
    }
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && text[digits..].starts_with(['.', ')']) {
        return format!("{}\\{}", &text[..digits], &text[digits..]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keeps_table_cells_whole_and_headings_out() {
        assert_eq!(inline("a | b"), "a \\| b");
        assert_eq!(inline("# not a heading"), "\\# not a heading");
        assert_eq!(inline("- not a list"), "\\- not a list");
        assert_eq!(inline("1. not a list"), "1\\. not a list");
        assert_eq!(inline("2024 was fine"), "2024 was fine");
        assert_eq!(inline("a # b"), "a # b");
    }

    #[test]
    fn inline_escapes_emphasis_links_html_and_code() {
        assert_eq!(inline("*bold* _it_"), "\\*bold\\* \\_it\\_");
        assert_eq!(inline("[x](y) <b>"), "\\[x\\](y) \\<b\\>");
        assert_eq!(inline("run `ls`"), "run \\`ls\\`");
        assert_eq!(inline("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn inline_is_one_line() {
        assert_eq!(inline("first\nsecond\r\n\tthird  "), "first second third");
        assert_eq!(inline("a\n# b"), "a # b");
    }

    #[test]
    fn code_spans_outlast_backticks_inside() {
        assert_eq!(code("cargo test"), "`cargo test`");
        assert_eq!(code("echo `date`"), "`` echo `date` ``");
        assert_eq!(code("a``b"), "```a``b```");
        assert_eq!(code(""), "(none)");
        assert_eq!(code("a\nb"), "`a b`");
    }

    #[test]
    fn code_in_a_cell_escapes_pipes() {
        assert_eq!(cell_code("cargo test | tee log"), "`cargo test \\| tee log`");
        assert_eq!(code("a | b"), "`a | b`");
    }

    #[test]
    fn fences_are_longer_than_any_fence_inside() {
        assert_eq!(fenced("plain\n", "text"), "```text\nplain\n```\n");
        let nasty = "before\n```\ninjected\n````\nafter";
        let block = fenced(nasty, "");
        assert!(block.starts_with("`````\n"), "{block}");
        assert!(block.ends_with("\n`````\n"), "{block}");
    }

    #[test]
    fn tail_bounds_lines_and_characters() {
        let text = (1..=10)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            tail(&text, 3, 1000),
            "[… 7 earlier line(s) cut]\nline 8\nline 9\nline 10"
        );
        assert_eq!(tail("short", 3, 1000), "short");
        assert_eq!(tail("ééééé", 3, 2), "[… earlier output cut]\néé");
    }

    #[test]
    fn paragraphs_escape_each_line_and_keep_breaks() {
        assert_eq!(
            paragraphs("# Do it\n\n- step | one\n", "  "),
            "  \\# Do it\n\n  \\- step \\| one\n"
        );
    }
}
