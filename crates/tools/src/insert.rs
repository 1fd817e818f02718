//! `insert {path, text, after_line?}`: adds lines to a file without rewriting it.
//!
//! Small models asked to "add a function" write a file holding only that function, deleting the
//! rest, whatever `write`'s description and results say (the 1.5B did so in every field run). Adding
//! is a different act from rewriting, so it gets its own tool: nothing already in the file can be
//! lost through it, and it needs no read first.

use std::fs;

use crate::edit::{read_text, refuse_read_gutter};
use crate::error::ToolError;
use crate::paths::{Kind, Resolved};
use crate::read::excerpt;

pub(crate) struct InsertRequest<'a> {
    pub file: Resolved,
    pub text: &'a str,
    /// The line the text goes after: 0 is the start of the file, `None` its end.
    pub after_line: Option<u64>,
}

/// Text at least this long (ignoring surrounding blank space) that the file already holds is not
/// inserted again: a second copy of a function is never what was meant, and small models repeat
/// their last step. Shorter text (`}`, `pass`, a blank line) legitimately occurs many times.
const DUPLICATE_MIN_CHARS: usize = 16;

pub(crate) fn insert(req: &InsertRequest<'_>) -> Result<String, ToolError> {
    let rel = req.file.rel.as_str();
    if req.text.trim().is_empty() {
        return Err(ToolError::refused("`text` is empty; there is nothing to insert"));
    }
    req.file.check_not_dir_or_special("")?;
    refuse_read_gutter("text", req.text)?;
    if req.file.kind() == Kind::Missing {
        return create(req);
    }
    let old = read_text(&req.file, "insert")?;
    let newline = if old.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let (at, past_end) = match req.after_line {
        None => (lines.len(), false),
        Some(n) => checked_position(rel, n, lines.len())?,
    };
    refuse_duplicate(rel, &old, req.text)?;
    refuse_block_split(rel, &lines, at, req.text)?;
    if rel.ends_with(".py") {
        refuse_nested_function(rel, &lines, at, req.text)?;
        refuse_stray_test_method(rel, &lines, req.text)?;
    }
    let added = as_lines(req.text, newline);
    let mut new = String::with_capacity(old.len() + req.text.len() + 2);
    for line in &lines[..at] {
        new.push_str(line);
    }
    if !new.is_empty() && !new.ends_with('\n') {
        // The old last line had no newline: the text starts on a line of its own.
        new.push_str(newline);
    }
    new.extend(added.iter().map(String::as_str));
    for line in &lines[at..] {
        new.push_str(line);
    }
    fs::write(&req.file.abs, &new).map_err(|e| ToolError::io(rel, e))?;
    let total = lines.len() + added.len();
    let mut done = format!(
        "inserted {} into {rel} after line {at}; it has {total} lines now:\n",
        count(added.len())
    );
    if past_end {
        done = format!("{rel} had only {at} lines, so the text went at the end: {done}");
    }
    done.push_str(&excerpt(&new, at, added.len()));
    Ok(done)
}

/// A missing file is created when the text goes at its start or end; a line number in a file that
/// does not exist is a mistake worth naming.
fn create(req: &InsertRequest<'_>) -> Result<String, ToolError> {
    let rel = req.file.rel.as_str();
    if let Some(n) = req.after_line.filter(|&n| n > 0) {
        return Err(ToolError::refused(format!(
            "{rel} does not exist, so it has no line {n}; omit `after_line` to create it with this text"
        )));
    }
    if let Some(parent) = req.file.abs.parent() {
        fs::create_dir_all(parent).map_err(|e| ToolError::io(rel, e))?;
    }
    let added = as_lines(req.text, "\n");
    fs::write(&req.file.abs, added.concat()).map_err(|e| ToolError::io(rel, e))?;
    Ok(format!("created {rel} with {}", count(added.len())))
}

/// How far past the last line `after_line` may point and still mean "at the end": models count
/// the final newline as a line, or count from 0.
const PAST_END_SLACK: usize = 2;

/// Where the text goes, and whether `after_line` pointed a little past the end (then: at the end).
fn checked_position(rel: &str, after_line: u64, lines: usize) -> Result<(usize, bool), ToolError> {
    match usize::try_from(after_line) {
        Ok(n) if n <= lines => Ok((n, false)),
        Ok(n) if n <= lines + PAST_END_SLACK => Ok((lines, true)),
        // Spelled out with the numbers: a small model told to "omit" an argument puts 0 instead.
        _ => Err(ToolError::refused(format!(
            "{rel} has {lines} lines, so there is no line {after_line}. To add at the end, give \
             `after_line` {lines} (or leave it out); 0 puts the text at the start"
        ))),
    }
}

fn refuse_duplicate(rel: &str, old: &str, text: &str) -> Result<(), ToolError> {
    let wanted = text.trim();
    if wanted.chars().count() < DUPLICATE_MIN_CHARS {
        return Ok(());
    }
    let normalized = old.replace("\r\n", "\n");
    match normalized.find(&wanted.replace("\r\n", "\n")) {
        Some(offset) => {
            let line = normalized[..offset].matches('\n').count() + 1;
            Err(ToolError::refused(format!(
                "not inserted: {rel} already holds this text (from line {line}), so a second copy would \
                 only repeat it; `read` the file to see what it holds"
            )))
        }
        None => Ok(()),
    }
}

/// Refuses text that would cut an indented block in two: it goes right after a line that opens a
/// block (the next line is indented deeper) or into the middle of one, and is less indented than the
/// block's lines. In Python that is an `IndentationError` or a class that silently ends early; in
/// any language it puts code where it was not meant to be. Seen in the field: the 1.5B inserted a
/// top-level `def` after `def test_sub(self):`, between the method and its body. Lines starting with
/// `#` (comments, C preprocessor) may sit at any depth and are not counted.
fn refuse_block_split(rel: &str, lines: &[&str], at: usize, text: &str) -> Result<(), ToolError> {
    let Some(depth) = text.lines().filter_map(indent_of_code).min() else {
        return Ok(());
    };
    let before = lines[..at]
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| Some((i, indent_of_code(l)?)));
    let after = lines[at..].iter().find_map(|l| indent_of_code(l));
    let (Some((opener, prev)), Some(next)) = (before, after) else {
        return Ok(());
    };
    let opens_block = prev < next;
    if depth >= next || (!opens_block && depth >= prev) {
        return Ok(());
    }
    let block_end = block_end(lines, at, depth);
    let place = if opens_block {
        format!(
            "between line {} (`{}`) and the block it opens",
            opener + 1,
            lines[opener].trim()
        )
    } else {
        format!("into the middle of the block around line {at}")
    };
    Err(ToolError::refused(format!(
        "not inserted into {rel}: the text would go {place}, less indented than the lines around it, which would \
         cut that block in two. Give `after_line` {block_end} to add it after the block, or indent \
         the text to belong inside it (if this indentation is really meant, use `edit`)"
    )))
}

/// Refuses an indented Python `def` that would land in the body of a function: a function local to
/// it, which nothing else can call. Seen in the field: asked to add `mul(a, b)` to calc.py, the 1.5B
/// inserted `    def mul(a, b):` after `return a - b`, the last line of `def sub`, and the tests
/// said `mul` was not defined. A method goes in a class, a new function at the top level; a local
/// function that is really meant can be written with `edit`.
fn refuse_nested_function(rel: &str, lines: &[&str], at: usize, text: &str) -> Result<(), ToolError> {
    let Some(first) = text.lines().find(|l| indent_of_code(l).is_some()) else {
        return Ok(());
    };
    let depth = indent_of_code(first).unwrap_or(0);
    let code = first.trim_start();
    if depth == 0 || !(code.starts_with("def ") || code.starts_with("async def ")) {
        return Ok(());
    }
    let enclosing = lines[..at]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| indent_of_code(l).is_some_and(|i| i < depth));
    let Some((line, opener)) = enclosing else {
        return Ok(());
    };
    let opener = opener.trim();
    if !(opener.starts_with("def ") || opener.starts_with("async def ")) {
        return Ok(());
    }
    let name = code
        .trim_start_matches("async ")
        .trim_start_matches("def ")
        .split('(')
        .next()
        .unwrap_or_default()
        .trim();
    Err(ToolError::refused(format!(
        "not inserted into {rel}: indented like this, `def {name}` would go inside the body of `{opener}` \
         (line {}), a function local to it that nothing else can call. For a function of the module, \
         send the text without indentation (it starts at column 0); for a method, insert it inside the \
         class (if a local function is really meant, use `edit`)",
        line + 1
    )))
}

/// Refuses a Python `def test_…(self…)` sent at the top level of a file that has a `TestCase` class:
/// no runner collects it there (unittest runs only the class's methods; pytest would ask for a
/// fixture named `self`). Seen in the field: the 1.5B inserted `def test_mul(self):` after
/// `unittest.main()` and at line 0, and the test never ran. Says where the method goes.
fn refuse_stray_test_method(rel: &str, lines: &[&str], text: &str) -> Result<(), ToolError> {
    let Some(first) = text.lines().find(|l| indent_of_code(l).is_some()) else {
        return Ok(());
    };
    let code = first.trim_start_matches("async ");
    let takes_self = code
        .strip_prefix("def test")
        .and_then(|rest| rest.split_once('('))
        .is_some_and(|(_, args)| args.trim_start().starts_with("self"));
    if indent_of_code(first) != Some(0) || !takes_self {
        return Ok(());
    }
    let Some(class) = lines.iter().rposition(|l| {
        let l = l.trim_end();
        l.starts_with("class ") && l.contains("TestCase") && l.ends_with(':')
    }) else {
        return Ok(());
    };
    let end = block_end(lines, class + 1, 0);
    let name = code
        .trim_start_matches("def ")
        .split('(')
        .next()
        .unwrap_or_default();
    Err(ToolError::refused(format!(
        "not inserted into {rel}: `def {name}(self…)` at the top level is no test method, so it would \
         never run (unittest collects only methods of a `TestCase` class). Insert it inside `{}` \
         (lines {}–{end}): `after_line` {end}, the `def` indented by 4 spaces and its body by 8",
        lines[class].trim(),
        class + 1
    )))
}

/// The indentation of a line that counts for blocks: `None` for blank lines and `#` lines.
fn indent_of_code(line: &str) -> Option<usize> {
    let code = line.trim_start();
    if code.is_empty() || code.starts_with('#') {
        return None;
    }
    Some(line.len() - code.len())
}

/// The last line (1-based) of the block that continues from index `at`: the last code line before
/// the first one indented no deeper than `depth` (or the file's end).
fn block_end(lines: &[&str], at: usize, depth: usize) -> usize {
    let stop = lines[at..]
        .iter()
        .position(|l| indent_of_code(l).is_some_and(|i| i <= depth))
        .map_or(lines.len(), |p| at + p);
    lines[..stop]
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(stop, |i| i + 1)
}

/// The text as whole lines, each ending with the file's newline.
fn as_lines(text: &str, newline: &str) -> Vec<String> {
    text.lines().map(|line| format!("{line}{newline}")).collect()
}

fn count(lines: usize) -> String {
    if lines == 1 {
        "1 line".to_string()
    } else {
        format!("{lines} lines")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTS: &str = "import unittest\n\n\nclass CalcTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n    def test_sub(self):\n        self.assertEqual(sub(5, 3), 2)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";

    fn split(text: &str, at: usize) -> Result<(), ToolError> {
        let lines: Vec<&str> = TESTS.split_inclusive('\n').collect();
        refuse_block_split("t.py", &lines, at, text)
    }

    #[test]
    fn a_top_level_function_between_a_method_and_its_body_is_refused_with_the_line_to_use() {
        // The field's case: after line 8, `def test_sub(self):`.
        let err = split("def mul(a, b):\n    return a * b\n", 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("between line 8 (`def test_sub(self):`)"), "{err}");
        assert!(
            err.contains("`after_line` 9"),
            "the end of test_sub's block: {err}"
        );
        // Less indented than the class's body, in the middle of it.
        let err = split("def mul(a, b):\n    return a * b\n", 6)
            .unwrap_err()
            .to_string();
        assert!(err.contains("middle of the block"), "{err}");
        assert!(err.contains("`after_line` 9"), "the class ends at line 9: {err}");
    }

    #[test]
    fn text_that_fits_where_it_goes_is_inserted() {
        let method = "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n";
        assert!(split(method, 6).is_ok(), "a method between two methods");
        assert!(split(method, 9).is_ok(), "after the last method");
        assert!(
            split("        x = 1\n", 8).is_ok(),
            "the first line of a body, indented as it"
        );
        assert!(
            split("def mul(a, b):\n    return a * b\n", 10).is_ok(),
            "top level"
        );
        assert!(split("def mul(a, b):\n    return a * b\n", 13).is_ok(), "the end");
        assert!(split("import os\n", 0).is_ok(), "the start");
        assert!(split("# a note\n", 8).is_ok(), "comments may sit at any depth");
        assert!(split("\n\n", 8).is_ok(), "blank lines");
    }

    #[test]
    fn an_indented_def_in_a_functions_body_is_refused_and_a_method_in_a_class_is_not() {
        let calc = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";
        let lines: Vec<&str> = calc.split_inclusive('\n').collect();
        // The field's case: after the last line of `def sub`.
        let err = refuse_nested_function("calc.py", &lines, 6, "    def mul(a, b):\n        return a * b\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inside the body of `def sub(a, b):` (line 5)"),
            "{err}"
        );
        assert!(err.contains("without indentation"), "{err}");
        assert!(refuse_nested_function("calc.py", &lines, 6, "def mul(a, b):\n    return a * b\n").is_ok());
        assert!(
            refuse_nested_function("calc.py", &lines, 6, "    x = 1\n").is_ok(),
            "not a def"
        );
        let tests: Vec<&str> = TESTS.split_inclusive('\n').collect();
        let method = "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n";
        assert!(
            refuse_nested_function("t.py", &tests, 9, method).is_ok(),
            "a method in a class"
        );
    }

    #[test]
    fn a_test_method_sent_to_the_top_level_is_refused_with_where_it_goes() {
        let lines: Vec<&str> = TESTS.split_inclusive('\n').collect();
        let stray = "def test_mul(self):\n    self.assertEqual(mul(2, 3), 6)\n";
        let err = refuse_stray_test_method("test_calc.py", &lines, stray)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inside `class CalcTest(unittest.TestCase):` (lines 4–9): `after_line` 9"),
            "{err}"
        );
        // Indented (a method), a free function, a pytest test, or no TestCase class: not this rule.
        let method = "    def test_mul(self):\n        pass\n";
        assert!(refuse_stray_test_method("t.py", &lines, method).is_ok());
        assert!(refuse_stray_test_method("t.py", &lines, "def mul(a, b):\n    return a * b\n").is_ok());
        assert!(refuse_stray_test_method("t.py", &lines, "def test_mul():\n    assert 1\n").is_ok());
        let plain: Vec<&str> = vec!["def add(a, b):\n", "    return a + b\n"];
        assert!(refuse_stray_test_method("t.py", &plain, stray).is_ok());
    }

    #[test]
    fn text_becomes_whole_lines() {
        assert_eq!(as_lines("x\ny", "\n"), ["x\n", "y\n"]);
        assert_eq!(as_lines("x\n", "\r\n"), ["x\r\n"]);
    }
}
