//! Helpers that several crates' integration tests share: a scratch git repository isolated from the
//! machine's git configuration ([`git`]), OpenCode run offline with everything it writes inside a
//! test's own HOME ([`opencode`]), PostgreSQL schemas ([`pg`]) and a TCP proxy a test can cut
//! ([`cut`]). What only one crate's tests need stays in that crate's `tests/`.

pub mod cut;
pub mod git;
pub mod opencode;
pub mod pg;
