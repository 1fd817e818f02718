//! One module per test file, all in the one test binary of `../all.rs`.

mod confine;
mod environ;
mod orphans;

/// The name libtest gives the test `name` of `module` (its `module_path!()`): the module path without
/// the crate. For the tests that run one test of this binary again in a child process (`--exact`).
fn test_name(module: &str, name: &str) -> String {
    let (_crate, path) = module.split_once("::").expect("a module inside the test crate");
    format!("{path}::{name}")
}
