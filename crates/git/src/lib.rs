//! Git operations.
