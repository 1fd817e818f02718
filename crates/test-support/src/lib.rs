//! Helpers that several crates' integration tests share: a scratch git repository isolated from the
//! machine's git configuration ([`git`]), and OpenCode run offline with everything it writes inside a
//! test's own HOME ([`opencode`]). What only one crate's tests need stays in that crate's `tests/`.

pub mod git;
pub mod opencode;
pub mod pg;
