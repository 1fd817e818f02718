//! Replies that fall into a loop, noticed while they stream.
//!
//! Small models, and grammar-held ones most of all, sometimes stop making sense and repeat the same
//! few characters until the output token limit: the same line, `, 0, 0, 0`, or whitespace that a
//! JSON grammar allows without end. On a local CPU a cap of 2,048 tokens is ten minutes of a
//! session's time (and a slot's). [`LoopWatch`] sees the text as it arrives and says when its end
//! has become one piece repeated, so the client can hang up (the server then stops generating) and
//! the engine can tell the model what happened, instead of waiting for the cap.
//!
//! What counts as a loop is deliberately far from legitimate text: at least [`MIN_LOOP_BYTES`] of
//! exact, byte-for-byte repetition of a piece of at most [`MAX_PIECE_BYTES`], repeated at least
//! [`MIN_REPEATS`] times (a repeated piece of whitespace only: [`MIN_BLANK_LOOP_BYTES`]). Code and
//! prose repeat patterns, but not 1 KiB of identical bytes in a row; data that really is that
//! regular is better produced by a command than typed out token by token, and the model is told so.

use serde::{Deserialize, Serialize};

/// The least repetition, in bytes, that counts as a loop.
pub const MIN_LOOP_BYTES: usize = 1024;
/// The same for a piece made of whitespace only (what a JSON grammar lets a model emit forever
/// between two tokens): nothing legitimate holds this much blank space in a row.
pub const MIN_BLANK_LOOP_BYTES: usize = 256;
/// The longest piece whose repetition is looked for.
pub const MAX_PIECE_BYTES: usize = 512;
/// The fewest times the piece must appear in a row.
pub const MIN_REPEATS: usize = 4;

/// How much of the end of the text is kept and looked at: enough for the longest loop the rules
/// can find ([`MAX_PIECE_BYTES`] × [`MIN_REPEATS`], or [`MIN_LOOP_BYTES`]).
const WINDOW: usize = if MAX_PIECE_BYTES * MIN_REPEATS > MIN_LOOP_BYTES {
    MAX_PIECE_BYTES * MIN_REPEATS
} else {
    MIN_LOOP_BYTES
};
/// New bytes between two looks. Each look costs time in proportion to [`WINDOW`], so the watch
/// costs a constant per byte; a loop is seen at most this many bytes late.
const LOOK_EVERY: usize = 64;

/// A loop found at the end of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loop {
    /// The repeated piece, as text (lossy where it splits a character), at most
    /// [`MAX_PIECE_BYTES`].
    pub piece: String,
    /// How many times it appears in a row at the end of the text seen.
    pub repeats: usize,
    /// How many bytes of the text the repetition covers.
    pub bytes: usize,
}

/// Watches one reply's text, fed in the order it arrives.
#[derive(Debug, Default)]
pub struct LoopWatch {
    /// The end of the text: at most `2 × WINDOW` bytes, cut back to `WINDOW` when full, so that
    /// feeding costs amortised constant time per byte.
    tail: Vec<u8>,
    unlooked: usize,
    found: Option<Loop>,
}

impl LoopWatch {
    /// Adds text; returns the loop once the text ends in one (and from then on).
    pub fn feed(&mut self, text: &str) -> Option<&Loop> {
        if self.found.is_none() {
            for chunk in text.as_bytes().chunks(LOOK_EVERY) {
                self.tail.extend_from_slice(chunk);
                if self.tail.len() > 2 * WINDOW {
                    self.tail.drain(..self.tail.len() - WINDOW);
                }
                self.unlooked += chunk.len();
                if self.unlooked >= LOOK_EVERY {
                    self.unlooked = 0;
                    self.found = loop_at_end(&self.tail);
                    if self.found.is_some() {
                        break;
                    }
                }
            }
        }
        self.found.as_ref()
    }

    /// The loop found so far, if any.
    pub fn found(&self) -> Option<&Loop> {
        self.found.as_ref()
    }
}

/// The loop `text` ends in, if any: the longest run at its end that repeats one piece, judged by
/// the rules above. Linear in `text`'s length (at most [`WINDOW`] of it is looked at).
pub fn loop_at_end(text: &[u8]) -> Option<Loop> {
    let text = &text[text.len().saturating_sub(WINDOW)..];
    // The end of `text` read backwards: a run that repeats a piece at the end of `text` is a
    // prefix of this with a short period, and the smallest period of each prefix is what the
    // prefix function (as in Knuth-Morris-Pratt) gives.
    let reversed: Vec<u8> = text.iter().rev().copied().collect();
    let mut border = vec![0usize; reversed.len()];
    let mut best: Option<(usize, usize)> = None; // (run length, period)
    for i in 1..reversed.len() {
        let mut k = border[i - 1];
        while k > 0 && reversed[i] != reversed[k] {
            k = border[k - 1];
        }
        if reversed[i] == reversed[k] {
            k += 1;
        }
        border[i] = k;
        let run = i + 1;
        let period = run - k;
        // The smallest period only grows with the prefix, so once it is too long it stays so.
        if period > MAX_PIECE_BYTES {
            break;
        }
        if run >= period * MIN_REPEATS {
            best = Some((run, period));
        }
    }
    let (run, period) = best?;
    let piece = &text[text.len() - period..];
    // The tail may end inside an escape (`…\n\`): a rotation of the piece is the same loop.
    let rotated = [&piece[1..], &piece[..1]].concat();
    let blank = is_blank(piece) || is_blank(&rotated);
    let least = if blank {
        MIN_BLANK_LOOP_BYTES
    } else {
        MIN_LOOP_BYTES
    };
    (run >= least).then(|| Loop {
        piece: String::from_utf8_lossy(piece).into_owned(),
        repeats: run / period,
        bytes: run,
    })
}

/// Whether a piece is blank space only, as it is or written inside a JSON string (`\n`, `\t`,
/// `\r`): the 1.5B ran away writing `\n` inside a file's content.
fn is_blank(piece: &[u8]) -> bool {
    let mut bytes = piece.iter();
    while let Some(byte) = bytes.next() {
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'\\' if matches!(bytes.next(), Some(b'n' | b't' | b'r')) => {}
            _ => return false,
        }
    }
    true
}

/// `text` without the repetition at its end but for `keep` copies of the piece: what the history
/// keeps of a looping reply, so that the model is not shown (and does not pay for) the loop again.
/// Cut on a character boundary.
pub fn without_loop(text: &str, found: &Loop, keep: usize) -> String {
    let period = found.bytes / found.repeats.max(1);
    let drop = found.bytes.saturating_sub(period * keep);
    let mut end = text.len().saturating_sub(drop);
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_all(text: &str, piece_size: usize) -> Option<Loop> {
        let mut watch = LoopWatch::default();
        for piece in text.as_bytes().chunks(piece_size) {
            watch.feed(std::str::from_utf8(piece).unwrap_or(""));
        }
        watch.found().cloned()
    }

    #[test]
    fn a_repeated_line_is_a_loop() {
        let text = format!("def mul(a, b):\n{}", "    return a * b\n".repeat(80));
        let found = watch_all(&text, 7).expect("a loop");
        // Seen at some byte of the line: the piece is the line, or a rotation of it.
        assert_eq!(found.piece.len(), 17);
        assert!("    return a * b\n".repeat(2).contains(&found.piece), "{found:?}");
        assert!(found.repeats >= MIN_LOOP_BYTES / 17, "{found:?}");
    }

    #[test]
    fn blank_space_loops_sooner() {
        let text = format!("{{\"tool\": \"read\", \"arguments\": {}", "\n".repeat(300));
        let found = watch_all(&text, 3).expect("a loop");
        assert_eq!(found.piece, "\n");
        // Seen within one look of the threshold.
        let mut watch = LoopWatch::default();
        assert!(watch
            .feed(&"\n".repeat(MIN_BLANK_LOOP_BYTES - LOOK_EVERY))
            .is_none());
    }

    #[test]
    fn escaped_line_breaks_in_a_json_string_are_blank_space_too() {
        // What the 1.5B sent inside a `write`'s content (docs/field-tests.md).
        let text = format!(
            r#"{{"tool":"write","arguments":{{"path":"calc.py","content":"def mul(a, b):\n    return a * b{}"#,
            r"\n".repeat(200)
        );
        let found = watch_all(&text, 4).expect("a loop");
        assert!(found.piece == r"\n" || found.piece == r"n\", "{found:?}");
        assert!(found.bytes < 400, "{found:?}");
        // A piece that only starts like an escape is not blank.
        assert!(!is_blank(br"\x"));
        assert!(is_blank(b" \t\n"));
    }

    #[test]
    fn a_long_paragraph_said_four_times_is_a_loop() {
        let paragraph: String = (0..40).map(|i| format!("word{i} ")).collect();
        assert!(paragraph.len() > 256 && paragraph.len() <= MAX_PIECE_BYTES);
        let found = watch_all(&paragraph.repeat(5), 100).expect("a loop");
        assert_eq!(found.piece.len(), paragraph.len());
    }

    #[test]
    fn a_plan_that_lists_the_same_tasks_over_and_over_is_a_loop() {
        // What Qwen2.5-Coder 0.5B sent under a JSON grammar (docs/field-tests.md): two tasks, then
        // the same two again, until the token limit.
        let pair = r#"{"id":"add","title":"Add","description":"Add two numbers","depends_on":["sub","add"],"files":["calc.py","calc.py"]},{"id":"sub","title":"Subtract","description":"Subtract the second number from the first","depends_on":["add","sub"],"files":["calc.py","calc.py"]},"#;
        let head = r#"{"tool":"submit_plan","arguments":{"tasks":["#;
        let text = format!("{head}{}", pair.repeat(30));
        let mut watch = LoopWatch::default();
        let mut fed = 0;
        for piece in text.as_bytes().chunks(6) {
            fed += piece.len();
            if watch.feed(std::str::from_utf8(piece).unwrap_or("")).is_some() {
                break;
            }
        }
        let found = watch.found().expect("a loop");
        assert_eq!(found.piece.len(), pair.len());
        // Seen after some five copies, not thirty.
        assert!(fed < head.len() + 6 * pair.len(), "{fed}");
    }

    #[test]
    fn ordinary_code_and_regular_data_are_not_loops() {
        // Code with a repeated shape but different values.
        let tests: String = (0..200)
            .map(|i| {
                format!(
                    "    def test_{i}(self):\n        self.assertEqual(mul({i}, 2), {})\n",
                    i * 2
                )
            })
            .collect();
        assert_eq!(watch_all(&tests, 13), None);
        // A rule line of 120 characters and a short table of zeros.
        let rules = format!("{}\n{}\n", "=".repeat(120), "0, ".repeat(100));
        assert_eq!(watch_all(&rules, 5), None);
        // Indentation, however deep, within normal lines.
        let nested: String = (0..60).map(|i| format!("{}x{i}\n", " ".repeat(i % 40))).collect();
        assert_eq!(watch_all(&nested, 9), None);
        // Three copies of a long block: a pattern, not yet a loop.
        let block: String = (0..60).map(|i| format!("w{i} ")).collect();
        assert_eq!(watch_all(&block.repeat(3), 50), None);
    }

    #[test]
    fn the_watch_keeps_bounded_memory_and_reports_once_found() {
        let mut watch = LoopWatch::default();
        let varied: String = (0..20_000).map(|i| format!("{i},")).collect();
        assert!(watch.feed(&varied).is_none());
        assert!(watch.tail.len() <= 2 * WINDOW);
        let found = watch.feed(&"ab".repeat(600)).cloned().expect("a loop");
        assert_eq!(found.piece.len(), 2);
        // More text after the loop does not unsee it.
        assert_eq!(watch.feed("anything else"), Some(&found));
    }

    #[test]
    fn the_history_keeps_the_text_before_the_loop_and_two_copies() {
        let text = format!("start: {}", "é-".repeat(400));
        let found = loop_at_end(text.as_bytes()).expect("a loop");
        let kept = without_loop(&text, &found, 2);
        assert!(kept.starts_with("start: "), "{kept}");
        assert!(kept.len() < 7 + 4 * 3 + 3, "{kept:?}");
    }
}
