//! One module per test file, all in the one test binary of `../all.rs`.

mod caching;
mod common;
mod failures;
mod governor;
mod limits;
mod loops;
mod preflight;
mod replies;
