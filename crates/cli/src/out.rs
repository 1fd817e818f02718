//! Writing to stdout and stderr without panicking.
//!
//! `println!` and `eprintln!` panic when their stream is a closed pipe (`orchestrator logs | head`):
//! Rust ignores SIGPIPE, so the write fails with EPIPE and the macro turns the failure into a panic.
//! Setting SIGPIPE back to its default would end the process quietly instead — but on any write to
//! any pipe whose reader left, such as a git or agent command the orchestrator feeds, which would
//! kill a running mission or server in the middle of its work. So writes stay fallible and each
//! command says what a closed stream means to it: a command whose output is its whole job ends
//! quietly ([`outln!`]); a server or a mission goes on without the stream ([`line`], [`errln!`]).

use std::fmt;
use std::io::{self, Write};

/// Prints a line on stdout for a command whose output is its whole job (`logs`, `status`, …): when
/// the reader went away (`| head`) nothing is left to do, so the command ends quietly with exit 0.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line_or_exit(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: a diagnostic nobody can read is no reason to stop, and a panic in
/// a signal handler's task would leave the process deaf to the next signal.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::error_line(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

/// Writes `args` and a newline on stdout, flushed, so a closed pipe shows up here and not later.
pub fn line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes `text` as it is on stdout, flushed.
pub fn text(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// [`line`], ending the process when stdout is gone; see [`outln!`].
pub fn line_or_exit(args: fmt::Arguments<'_>) {
    if let Err(e) = line(args) {
        stdout_failed(e);
    }
}

/// Ends the process after a failed write to stdout: quietly with 0 when the reader left (what a pipe
/// into `head` means), else with the reason and 1 (a full disk, say).
pub fn stdout_failed(e: io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    error_line(format_args!("error: cannot write to stdout: {e}"));
    std::process::exit(1);
}

pub fn error_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// The end of a command whose result is one sentence (`cancel`, `approve`, `tell`): the sentence on
/// stdout and exit 0, or the error on stderr and its exit code.
pub fn sentence_or_error(done: Result<String, orchestrator_core::EngineError>) -> u8 {
    match done {
        Ok(sentence) => {
            outln!("{sentence}");
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code() as u8
        }
    }
}
