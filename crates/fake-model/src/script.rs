//! Scripted mission brain (owned by the engine author; see lib.rs for the server).
