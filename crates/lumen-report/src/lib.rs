//! Pictures and reports for Lumen: colormaps, overlays and PNG figures.
//!
//! Works on host data (`&[f32]` maps, `RgbImage`s) so that it depends on neither
//! Burn nor a backend: the only crate that pulls in image encoders, fonts and plotly.

pub mod colormap;
pub mod detection;
pub mod evaluation;
pub mod figure;
pub mod html;
pub mod overlay;
pub mod segmentation;
pub mod timeline;
mod turbo;

pub use colormap::Colormap;
pub use detection::{DrawnBox, detection_figure, draw_boxes, outline_boxes};
pub use evaluation::{CurveChart, EvaluationView, MetricColumn, evaluation_section};
pub use figure::{
    Layout, Panel, colorbar, comparison_figure, explanation_figure, feature_grid, grid, image_grid,
    layer_comparison_figure, polarity_figure, title_bar, with_notes,
};
pub use html::{
    MapStats, ReportImage, escape, layer_comparison_section, line_plot, page, page_head, page_part,
    page_tail, report_page, report_section, report_title, table,
};
pub use overlay::{Map, colorize, diverging, overlay};
pub use segmentation::{
    SegmentationView, class_color, class_legend, class_map_picture, class_overlay,
    segmentation_figure,
};
pub use timeline::{TimelineChart, TimelineFrame, timeline_page};
