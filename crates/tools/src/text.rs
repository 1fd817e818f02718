//! Shaping text for a model's context: cutting long output and lines, and telling binary from text.

/// Room kept for the note that replaces the cut middle, so clipped output stays within the limit.
const NOTE_RESERVE: usize = 120;

/// How many leading bytes are inspected for a NUL, git's and ripgrep's heuristic for binary content.
const BINARY_SNIFF_BYTES: usize = 8192;

pub(crate) fn looks_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(BINARY_SNIFF_BYTES).any(|&b| b == 0)
}

/// Whether `text` is lines copied from `read`'s output with its line numbers still in front (the
/// six-wide, right-aligned number and tab `read` prints), in order: models paste them into `write`,
/// `insert` and `edit`, which would put the numbers into the file or never match. Every non-blank
/// line must carry one, counting up by one, so data that merely starts with numbers is left alone.
pub(crate) fn carries_read_gutter(text: &str) -> bool {
    let mut expected: Option<u64> = None;
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((gutter, _)) = line.split_once('\t') else {
            return false;
        };
        let digits = gutter.trim_start_matches(' ');
        let right_aligned = gutter.len() == 6 || (gutter.len() > 6 && digits.len() == gutter.len());
        let Ok(number) = digits.parse::<u64>() else {
            return false;
        };
        if !right_aligned || digits.is_empty() || expected.is_some_and(|e| e != number) {
            return false;
        }
        expected = Some(number + 1);
        lines += 1;
    }
    lines > 0
}

/// Whether every line of `text` starts with a line number the way a model retypes `read`'s gutter:
/// indented, then the number and a colon or a run of spaces (`    7:     def f():`, `    14    x`)
/// or nothing at all (`    16`),
/// the numbers rising, on two lines or more. The 1.5B sent such lines to `write` and `insert` (seen
/// in the field); indentation in front of the number keeps tab- or comma-separated data, whose
/// first column may well count up, out of it.
pub(crate) fn carries_retyped_gutter(text: &str) -> bool {
    let mut last: Option<u64> = None;
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rest = line.trim_start_matches(' ');
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[digits..];
        // A number and nothing after it is a gutter whose code was left out (`    16`, `    17`, …).
        let marked = after.starts_with(':') || after.starts_with("  ") || after.trim().is_empty();
        let Ok(number) = rest[..digits].parse::<u64>() else {
            return false;
        };
        if rest.len() == line.len() || !marked || last.is_some_and(|l| number <= l) {
            return false;
        }
        last = Some(number);
        lines += 1;
    }
    lines >= 2
}

/// Whether some line of `text` is a line number in front of a statement (`    15    def mul(a, b):`,
/// `9: return a`): a number followed by a keyword is a syntax error in every common language, so the
/// number was copied from `read`'s gutter (the field's 1.5B sent such a line with its body below
/// it unnumbered, which [`carries_retyped_gutter`] does not catch).
pub(crate) fn numbers_a_statement(text: &str) -> bool {
    const KEYWORDS: [&str; 16] = [
        "def", "class", "return", "if", "for", "while", "import", "from", "fn", "let", "const", "function",
        "pub", "async", "func", "self.",
    ];
    text.lines().any(|line| {
        let rest = line.trim_start();
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        let after = &rest[digits..];
        let separated = after.starts_with(':') || after.starts_with('\t') || after.starts_with("  ");
        let code = after.trim_start_matches(':').trim_start();
        separated
            && KEYWORDS.iter().any(|k| {
                code.strip_prefix(k)
                    .is_some_and(|r| k.ends_with('.') || r.starts_with([' ', '(', ':']))
            })
    })
}

/// `text` without `read`'s line numbers in front of its lines.
pub(crate) fn without_read_gutter(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.split_once('\t') {
            Some((gutter, rest)) if gutter.trim_start_matches(' ').parse::<u64>().is_ok() => rest,
            _ => line,
        })
        .collect()
}

/// Keeps the head and the tail of `text` when it has more than `max_chars` characters: the start of
/// output says what ran, the end usually holds the error or the summary.
pub(crate) fn clip(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let keep = max_chars.saturating_sub(NOTE_RESERVE);
    let head = first_chars(text, keep / 2);
    let tail = last_chars(text, keep - keep / 2);
    let cut = total - head.chars().count() - tail.chars().count();
    format!("{head}{}{tail}", cut_note(cut as u64, 0))
}

/// Like [`clip`] for output whose middle was already dropped while it was captured: `head` and `tail`
/// are what was kept and `dropped_bytes` is what fell between them.
pub(crate) fn clip_parts(head: &str, tail: &str, dropped_bytes: u64, max_chars: usize) -> String {
    if dropped_bytes == 0 {
        return clip(&format!("{head}{tail}"), max_chars);
    }
    let keep = max_chars.saturating_sub(NOTE_RESERVE);
    let kept_head = first_chars(head, keep / 2);
    let kept_tail = last_chars(tail, keep - kept_head.chars().count());
    let cut = (head.chars().count() - kept_head.chars().count())
        + (tail.chars().count() - kept_tail.chars().count());
    format!("{kept_head}{}{kept_tail}", cut_note(cut as u64, dropped_bytes))
}

fn cut_note(chars: u64, bytes: u64) -> String {
    if bytes == 0 {
        format!("\n[... {chars} characters cut from the middle of this output ...]\n")
    } else {
        format!("\n[... {chars} characters and {bytes} more bytes cut from the middle of this output ...]\n")
    }
}

/// Cuts a single line so one minified file cannot fill the context.
pub(crate) fn cut_line(line: &str, max_chars: usize) -> String {
    let head = first_chars(line, max_chars);
    if head.len() == line.len() {
        return line.to_string();
    }
    let rest = line[head.len()..].chars().count();
    format!("{head}... [line cut: {rest} more characters]")
}

fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

fn last_chars(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match text.char_indices().rev().nth(n - 1) {
        Some((index, _)) => &text[index..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(clip("hello", 10), "hello");
    }

    #[test]
    fn long_text_keeps_head_and_tail_and_says_how_much_was_cut() {
        let text = format!("START{}END", "é".repeat(10_000));
        let out = clip(&text, 1_000);
        assert!(out.starts_with("START") && out.ends_with("END"), "{out}");
        assert!(out.chars().count() <= 1_000);
        let kept = 1_000 - NOTE_RESERVE;
        assert!(
            out.contains(&format!("{} characters cut", 10_008 - kept)),
            "{out}"
        );
    }

    #[test]
    fn parts_report_dropped_bytes() {
        let out = clip_parts(&"a".repeat(500), &"b".repeat(500), 42, 400);
        assert!(out.starts_with('a') && out.ends_with('b'));
        assert!(out.contains("and 42 more bytes cut"), "{out}");
        assert!(out.chars().count() <= 400);
    }

    #[test]
    fn lines_are_cut_on_char_boundaries() {
        assert_eq!(cut_line("ééé", 5), "ééé");
        assert_eq!(cut_line("éééé", 2), "éé... [line cut: 2 more characters]");
    }

    #[test]
    fn nul_means_binary() {
        assert!(looks_binary(b"PNG\0\x01"));
        assert!(!looks_binary("plain ✓ text".as_bytes()));
    }

    #[test]
    fn read_output_pasted_back_is_recognised_and_data_is_not() {
        let pasted = "     4\tdef add(a, b):\n     5\t    return a + b\n";
        assert!(carries_read_gutter(pasted));
        assert_eq!(without_read_gutter(pasted), "def add(a, b):\n    return a + b\n");
        assert!(carries_read_gutter("    10\tx = 1"));
        // Tab-separated data, a number out of order, a line without a number: left alone.
        assert!(!carries_read_gutter("1\tone\n2\ttwo\n"));
        assert!(!carries_read_gutter("     4\ta\n     6\tb\n"));
        assert!(!carries_read_gutter("     4\ta\nplain\n"));
        assert!(!carries_read_gutter(""));
        assert!(!carries_read_gutter("def mul(a, b):\n    return a * b\n"));
    }

    #[test]
    fn retyped_line_numbers_are_recognised_and_data_and_code_are_not() {
        // As the field's 1.5B sent them.
        assert!(carries_retyped_gutter(
            "    7:     def test_add(self):\n    8:         self.assertEqual(add(2, 3), 5)\n    9: \n   14:    x\n"
        ));
        assert!(carries_retyped_gutter(
            "    14    if __name__ == '__main__':\n    15        unittest.main()\n"
        ));
        // Numbers alone, as the field's 1.5B inserted them into a test class.
        assert!(carries_retyped_gutter("\n\n    16\n\n    17\n\n    18\n"));
        // A numbered statement with its body unnumbered; numbers in code that are not a gutter.
        assert!(numbers_a_statement(
            "\n    15    def mul(a, b):\n        return a * b\n"
        ));
        assert!(numbers_a_statement("9: return a * b"));
        assert!(!numbers_a_statement(
            "x = [\n    15,  16]\n    1  +  2\ndefault = 3\n"
        ));
        assert!(!numbers_a_statement("    2  definitions\n"));
        // One line, data without indentation, falling numbers, code: left alone.
        assert!(!carries_retyped_gutter("    14    x = 1\n"));
        assert!(!carries_retyped_gutter("1: one\n2: two\n"));
        assert!(!carries_retyped_gutter("1\tone\n2\ttwo\n"));
        assert!(!carries_retyped_gutter("    9: a\n    3: b\n"));
        assert!(!carries_retyped_gutter("def mul(a, b):\n    return a * b\n"));
        assert!(!carries_retyped_gutter("    x = 1\n    y = 2\n"));
        assert!(!carries_retyped_gutter("    1 + 2\n    3 + 4\n"));
    }
}
