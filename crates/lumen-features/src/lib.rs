//! Feature visualization for Lumen: feature maps, per-layer statistics, layer
//! comparison, receptive fields and activation maximization.
//!
//! Not built yet (issue 10): the crate is empty. It will record layers through
//! [`Recorder`](lumen_core::Recorder) taps and return plain data; drawing stays in
//! `lumen-report`, reached through the facade. Depends on `lumen-core` only.
