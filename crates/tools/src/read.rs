//! `read {path, offset?, limit?}`: a page of a text file, numbered like `cat -n`.

use std::fs::File;
use std::io::{BufRead, BufReader};

use crate::error::ToolError;
use crate::paths::Resolved;
use crate::text::{cut_line, looks_binary};

pub(crate) const DEFAULT_LIMIT: u64 = 2000;
const MAX_LINE_CHARS: usize = 2000;

pub(crate) struct ReadRequest {
    pub file: Resolved,
    /// 1-based number of the first line to show.
    pub offset: u64,
    pub limit: u64,
    /// Stop adding lines once the page is this long, so the page ends on a whole line and the model is
    /// told where to continue, rather than having the middle clipped away.
    pub max_chars: usize,
}

/// One page of a file, and whether it ends where the file does.
#[derive(Debug)]
pub(crate) struct Page {
    pub text: String,
    /// No line of the file is left after this page.
    pub reaches_the_end: bool,
}

/// Reads one page of a text file. A page that starts at line 1 and reaches the end is the whole file.
pub(crate) fn read(req: &ReadRequest) -> Result<Page, ToolError> {
    let rel = &req.file.rel;
    req.file
        .check_not_dir_or_special("; use `list` to see its entries")?;
    let file = File::open(&req.file.abs).map_err(|e| ToolError::io(rel.as_str(), e))?;
    let mut reader = BufReader::new(file);
    let sniff = reader.fill_buf().map_err(|e| ToolError::io(rel.as_str(), e))?;
    if looks_binary(sniff) {
        return Err(ToolError::refused(format!(
            "{rel} is a binary file; `read` only shows text (try `bash` with a tool like `xxd` or `file`)"
        )));
    }
    page(&mut reader, req)
}

fn page(reader: &mut impl BufRead, req: &ReadRequest) -> Result<Page, ToolError> {
    let rel = req.file.rel.as_str();
    let mut out = String::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut next_unshown = None;
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ToolError::io(rel, e))?
            == 0
        {
            break;
        }
        number += 1;
        if number < req.offset {
            continue;
        }
        let full = number - req.offset >= req.limit || out.len() >= req.max_chars;
        if full {
            next_unshown = Some(number);
            break;
        }
        push_numbered(&mut out, number, &line);
    }
    let total = match next_unshown {
        Some(next) => next + count_lines(reader).map_err(|e| ToolError::io(rel, e))?,
        None => number,
    };
    Ok(Page {
        text: finish(out, req, total, next_unshown)?,
        reaches_the_end: next_unshown.is_none(),
    })
}

pub(crate) fn push_numbered(out: &mut String, number: u64, raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    out.push_str(&format!("{number:>6}\t{}\n", cut_line(text, MAX_LINE_CHARS)));
}

/// Counts the lines left in `reader`, including a last line without a newline.
fn count_lines(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut count = 0;
    let mut ends_with_newline = true;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        ends_with_newline = buf[n - 1] == b'\n';
    }
    Ok(count + u64::from(!ends_with_newline))
}

fn finish(
    mut out: String,
    req: &ReadRequest,
    total: u64,
    next_unshown: Option<u64>,
) -> Result<String, ToolError> {
    let rel = &req.file.rel;
    if total == 0 {
        return Ok(format!("({rel} is empty)"));
    }
    if req.offset > total {
        return Err(ToolError::refused(format!(
            "offset {} is past the end of {rel}, which has {total} lines",
            req.offset
        )));
    }
    if let Some(next) = next_unshown {
        out.push_str(&format!(
            "({} more lines follow, {total} in total; continue with offset={next})\n",
            total - next + 1
        ));
    }
    Ok(out)
}

/// Lines of a file shown around the ones a tool changed, so the model sees what its change left.
const CONTEXT_LINES: usize = 2;

/// The most changed lines shown back; a long change is shown by its first lines.
const SHOWN_LINES: usize = 30;

/// The changed lines of `file` (lines `at + 1 ..= at + added`) numbered like `read`, with a few lines
/// around them; a long change shows its first lines.
pub(crate) fn excerpt(file: &str, at: usize, added: usize) -> String {
    let lines: Vec<&str> = file.split_inclusive('\n').collect();
    let start = at.saturating_sub(CONTEXT_LINES);
    let shown_end = at + added.min(SHOWN_LINES);
    let end = (at + added + CONTEXT_LINES).min(lines.len());
    let mut out = String::new();
    for (index, line) in lines.iter().enumerate().take(end).skip(start) {
        if index >= shown_end && index < at + added {
            if index == shown_end {
                out.push_str(&format!(
                    "   ...\t({} more changed lines)\n",
                    at + added - shown_end
                ));
            }
            continue;
        }
        push_numbered(&mut out, index as u64 + 1, line.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;

    fn request(offset: u64, limit: u64, max_chars: usize) -> ReadRequest {
        ReadRequest {
            file: Resolved {
                abs: PathBuf::from("/unused"),
                rel: "f.txt".into(),
            },
            offset,
            limit,
            max_chars,
        }
    }

    #[test]
    fn pages_are_numbered_and_say_where_to_continue() {
        let mut input = Cursor::new("one\ntwo\r\nthree\nfour");
        let out = page(&mut input, &request(2, 2, 10_000)).expect("page");
        assert!(!out.reaches_the_end);
        let out = out.text;
        assert_eq!(
            out,
            "     2\ttwo\n     3\tthree\n(1 more lines follow, 4 in total; continue with offset=4)\n"
        );
    }

    #[test]
    fn the_last_page_has_no_note() {
        let mut input = Cursor::new("one\ntwo\n");
        let out = page(&mut input, &request(1, 10, 10_000)).expect("page").text;
        assert_eq!(out, "     1\tone\n     2\ttwo\n");
    }

    #[test]
    fn a_page_stops_at_the_character_budget() {
        let text = "x".repeat(50) + "\n";
        let mut input = Cursor::new(text.repeat(10));
        let out = page(&mut input, &request(1, 100, 100)).expect("page").text;
        assert!(out.contains("continue with offset=3"), "{out}");
    }

    #[test]
    fn offsets_past_the_end_and_empty_files_are_reported() {
        let err = page(&mut Cursor::new("a\n"), &request(5, 10, 100)).expect_err("past end");
        assert!(err.to_string().contains("has 1 lines"), "{err}");
        let out = page(&mut Cursor::new(""), &request(1, 10, 100)).expect("empty");
        assert_eq!(out.text, "(f.txt is empty)");
        assert!(out.reaches_the_end);
    }

    #[test]
    fn an_excerpt_shows_the_new_lines_among_their_neighbours() {
        let file = "a\nb\nc\nNEW1\nNEW2\nd\ne\nf\n";
        let shown = excerpt(file, 3, 2);
        let numbers: Vec<&str> = shown
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").trim())
            .collect();
        assert_eq!(numbers, ["2", "3", "4", "5", "6", "7"]);
        assert!(shown.contains("4\tNEW1") && shown.contains("5\tNEW2"), "{shown}");
    }

    #[test]
    fn a_long_insertion_is_shown_by_its_first_lines() {
        let new: String = (1..=100).map(|i| format!("n{i}\n")).collect();
        let file = format!("top\n{new}bottom\n");
        let shown = excerpt(&file, 1, 100);
        assert!(shown.contains("n30\n") && !shown.contains("n31\n"), "{shown}");
        assert!(shown.contains("(70 more changed lines)"), "{shown}");
        assert!(shown.contains("102\tbottom"), "{shown}");
    }
}
