//! Pictures and reports for Lumen: colormaps, overlays and PNG figures.
//!
//! Works on host data (`&[f32]` maps, `RgbImage`s) so that it depends on neither
//! Burn nor a backend: the only crate that pulls in image encoders, fonts and (later)
//! plotly. Interactive HTML reports are not built yet.

pub mod colormap;
pub mod figure;
pub mod overlay;
mod turbo;

pub use colormap::Colormap;
pub use figure::{Layout, Panel, comparison_figure, explanation_figure, grid, title_bar};
pub use overlay::{Map, colorize, diverging, overlay};
