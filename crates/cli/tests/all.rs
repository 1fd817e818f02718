//! This crate's integration tests in one binary: each file under `suite/` is a module of it. A
//! binary per test file would each be linked on its own, which took much of CI's time on two cores.

mod suite;
