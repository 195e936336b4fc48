//! The training timeline: one offline page on which a slider walks through the
//! monitored points of a training run, showing the sample explanations as they were
//! then, beside the loss and accuracy curves and the feature statistics. Built from
//! host data by `lumen-train`'s timeline sink.

use std::fmt::Write as _;

use image::RgbImage;
use plotly::common::Title;
use plotly::layout::{Axis, Margin, Slider, SliderMethod, SliderStep};
use plotly::{Image, Layout, Plot};

use crate::html::{data_uri, escape, fluid, line_plot, page};

/// One point of the slider: a label (`epoch 3 · step 300`) and the picture of every
/// sample's explanation at that point.
#[derive(Clone, Debug)]
pub struct TimelineFrame {
    /// Shown on the slider.
    pub label: String,
    /// The samples' explanations, composed into one picture.
    pub image: RgbImage,
}

/// A chart beside the slider: `(name, x, y)` series on shared axes.
#[derive(Clone, Debug)]
pub struct TimelineChart {
    /// Chart title.
    pub title: String,
    /// X axis title (`step`, `epoch`).
    pub x_title: String,
    /// Y axis title.
    pub y_title: String,
    /// One line per series.
    pub series: Vec<(String, Vec<f64>, Vec<f64>)>,
}

/// The timeline page: the frames under one slider (the last frame shown first), then
/// the charts in a grid. `notes` are lines of text under the title.
pub fn timeline_page(
    title: &str,
    notes: &[String],
    frames: &[TimelineFrame],
    charts: &[TimelineChart],
) -> String {
    let mut body = format!("<h1>{}</h1>", escape(title));
    for note in notes {
        let _ = write!(body, "<p>{}</p>", escape(note));
    }
    body.push_str("<section><h2>Explanations</h2>");
    if frames.is_empty() {
        body.push_str("<p>No explanation was logged yet.</p>");
    } else {
        let height = frames.iter().map(|f| f.image.height()).max().unwrap_or(1);
        let _ = write!(
            body,
            "<div class=\"wide\" style=\"height:{}px\">{}</div>",
            height + 190,
            slider_plot(frames, height).to_inline_html(Some("timeline-frames"))
        );
    }
    body.push_str("</section><section><h2>Curves</h2><div class=\"grid wide-cells\">");
    for (i, chart) in charts.iter().enumerate() {
        let plot = line_plot(&chart.title, &chart.x_title, &chart.y_title, &chart.series);
        let _ = write!(
            body,
            "<div class=\"cell\"><div class=\"plot\">{}</div></div>",
            plot.to_inline_html(Some(&format!("timeline-chart-{i}")))
        );
    }
    body.push_str("</div></section>");
    page(title, &body)
}

/// One image trace per frame, only one visible at a time; the slider's steps switch
/// visibility (a restyle, so no frame is re-sent).
fn slider_plot(frames: &[TimelineFrame], height: u32) -> Plot {
    let last = frames.len() - 1;
    let mut plot = Plot::new();
    for (i, frame) in frames.iter().enumerate() {
        plot.add_trace(
            Image::new(Vec::<Vec<plotly::color::Rgb>>::new())
                .source(data_uri(&frame.image))
                .name(frame.label.as_str())
                .visible(if i == last {
                    plotly::common::Visible::True
                } else {
                    plotly::common::Visible::False
                })
                .hover_info(plotly::common::HoverInfo::Skip),
        );
    }
    let steps = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let visible: Vec<bool> = (0..frames.len()).map(|j| j == i).collect();
            SliderStep::new()
                .label(frame.label.as_str())
                .method(SliderMethod::Restyle)
                .args(serde_json::json!([{ "visible": visible }]))
        })
        .collect();
    plot.set_layout(
        Layout::new()
            .height(height as usize + 180)
            .margin(Margin::new().left(10).right(10).top(30).bottom(10))
            .x_axis(Axis::new().show_tick_labels(false).show_grid(false))
            .y_axis(Axis::new().show_tick_labels(false).show_grid(false))
            .title(Title::with_text(
                "drag the slider: the explanations at each point",
            ))
            .sliders(vec![
                // Inset, so that the first and last labels are not cut at the edges.
                Slider::new()
                    .active(last as i32)
                    .x(0.05)
                    .length(0.9)
                    .steps(steps),
            ]),
    );
    fluid(plot)
}
