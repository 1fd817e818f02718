//! One test binary for the crate (see `suite/`).

mod suite;
