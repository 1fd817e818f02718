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
}
