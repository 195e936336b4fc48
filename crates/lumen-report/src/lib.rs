//! Pictures and reports for Lumen: colormaps, overlays, PNG figures and plotly HTML.
//!
//! Not built yet. The only crate that may depend on plotly and image encoders beyond what `lumen-core` needs.
