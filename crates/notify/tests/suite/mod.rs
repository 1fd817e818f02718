//! One module per test file, all in the one test binary of `../all.rs`.

mod notifier;
