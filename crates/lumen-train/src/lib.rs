//! Training-time monitors for Lumen, for burn-train.
//!
//! Not built yet: this crate will log explanations of fixed samples during training. Depends on `lumen-core` and `lumen-methods`.
