//! Mission engine.
