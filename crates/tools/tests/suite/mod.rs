//! One module per test file, all in the one test binary of `../all.rs`.

mod bash;
mod common;
mod file_tools;
mod insert;
