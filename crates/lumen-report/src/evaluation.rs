//! The evaluation bench as an HTML section: recommendations, one table per metric
//! (best first), the cost, and the curves as plotly charts. Takes plain data, so that
//! the bench (in the facade) writes no HTML itself.

use std::fmt::Write;

use crate::html::{escape, line_plot, table};

/// One metric's column of the results.
#[derive(Clone, Debug)]
pub struct MetricColumn {
    /// Key.
    pub name: String,
    /// What it measures.
    pub description: String,
    /// Whether lower is better.
    pub lower_is_better: bool,
    /// `(method, value as shown, value for sorting)`; a floor's name ends in "(floor)".
    pub rows: Vec<(String, String, f64)>,
}

/// A chart of one curve per method.
#[derive(Clone, Debug)]
pub struct CurveChart {
    /// Title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// `(method, x, y)`.
    pub series: Vec<(String, Vec<f64>, Vec<f64>)>,
    /// A note under the chart (e.g. the names of the x positions).
    pub note: Option<String>,
}

/// Everything the section shows.
#[derive(Clone, Debug)]
pub struct EvaluationView {
    /// Heading.
    pub heading: String,
    /// A sentence under the heading.
    pub summary: String,
    /// `(use case, method, reason)`.
    pub recommendations: Vec<(String, String, String)>,
    /// Metric tables.
    pub metrics: Vec<MetricColumn>,
    /// `(method, milliseconds per image)`.
    pub cost: Vec<(String, f64)>,
    /// Curves.
    pub charts: Vec<CurveChart>,
}

/// The section's HTML; needs a page with plotly.js ([`crate::page`]).
pub fn evaluation_section(view: &EvaluationView) -> String {
    let mut html = format!(
        "<section><h2>{}</h2><p>{}</p><h3>Recommendations</h3><ul class=advice>",
        escape(&view.heading),
        escape(&view.summary)
    );
    for (use_case, method, reason) in &view.recommendations {
        let _ = write!(
            html,
            "<li><b>{}</b>: {} — {}</li>",
            escape(use_case),
            escape(method),
            escape(reason)
        );
    }
    html.push_str("</ul><h3>Metrics</h3><div class=row>");
    for metric in &view.metrics {
        let mut rows = metric.rows.clone();
        rows.sort_by(|a, b| {
            if metric.lower_is_better {
                a.2.total_cmp(&b.2)
            } else {
                b.2.total_cmp(&a.2)
            }
        });
        let cells: Vec<Vec<String>> = rows.into_iter().map(|(m, v, _)| vec![m, v]).collect();
        let header = if metric.lower_is_better {
            "value (lower better)"
        } else {
            "value"
        };
        let _ = write!(
            html,
            "<div title=\"{}\">{}</div>",
            escape(&metric.description),
            table(&metric.name, &["method", header], &cells)
        );
    }
    html.push_str("</div><h3>Cost</h3>");
    let cost: Vec<Vec<String>> = view
        .cost
        .iter()
        .map(|(m, ms)| vec![m.clone(), format!("{ms:.1}")])
        .collect();
    html.push_str(&table(
        "explanation time",
        &["method", "ms per image"],
        &cost,
    ));
    html.push_str("<h3>Curves</h3><div class=\"grid wide-cells\">");
    for (i, chart) in view
        .charts
        .iter()
        .filter(|c| !c.series.is_empty())
        .enumerate()
    {
        let _ = write!(
            html,
            "<div class=plot>{}",
            line_plot(&chart.title, &chart.x_label, &chart.y_label, &chart.series)
                .to_inline_html(Some(&format!("curve-{i}")))
        );
        if let Some(note) = &chart.note {
            let _ = write!(html, "<p>{}</p>", escape(note));
        }
        html.push_str("</div>");
    }
    html.push_str("</div></section>");
    html
}
