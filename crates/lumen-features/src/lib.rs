//! Feature visualization for Lumen: feature-map grids and per-channel statistics.
//!
//! Not built yet: this crate will record layers through [`Recorder`](lumen_core::Recorder) taps and summarise them. Depends on `lumen-core` only.
