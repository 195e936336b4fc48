//! Training-time monitors for Lumen, for burn-train.
//!
//! Not built yet (issue 11): the crate is empty and depends on `lumen-core` only. The
//! explanation and feature monitors will add `lumen-methods`, `lumen-features` and
//! `lumen-report` (and burn-train) to its manifest when they land.
