//! Self-contained interactive HTML reports with plotly: plotly.js is embedded once per
//! page (no network request when opened), each figure is inlined. Overlays zoom and
//! pan, and hovering shows x, y and the importance.

use std::fmt::Write as _;

use image::RgbImage;
use plotly::color::Rgb;
use plotly::common::Mode;
use plotly::common::{ColorScale, ColorScaleElement, Title};
use plotly::layout::{Axis, BarMode, Margin};
use plotly::{Bar, HeatMap, Image, Layout, Plot, Scatter};

use crate::Colormap;
use crate::overlay::Map;

/// One image of a report with its prediction and heatmaps.
#[derive(Clone, Debug)]
pub struct ReportImage {
    /// Name shown as the section title.
    pub name: String,
    /// The image as shown to the model.
    pub original: RgbImage,
    /// The five most probable classes with probabilities, best first.
    pub top5: Vec<(String, f32)>,
    /// What the numbers of `top5` are (`probability`; `share of pixels` for a
    /// segmentation).
    pub measure: String,
    /// The class explained.
    pub target: String,
    /// One heatmap per method, values in `[0, 1]`.
    pub maps: Vec<(String, Map)>,
    /// Known weaknesses per method on this model, shown under its overlay.
    pub cautions: std::collections::BTreeMap<String, Vec<String>>,
    /// A picture of the prediction beside its table (a segmentation's class map, a
    /// detector's boxes), when the task has one.
    pub prediction_picture: Option<RgbImage>,
}

/// Summary statistics of a heatmap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapStats {
    /// Mean value.
    pub mean: f32,
    /// Standard deviation.
    pub std: f32,
    /// Minimum.
    pub min: f32,
    /// Maximum.
    pub max: f32,
    /// Fraction of values below 10% of the maximum.
    pub sparsity: f32,
}

impl MapStats {
    /// Statistics of `map`.
    pub fn of(map: &Map) -> Self {
        let n = map.values.len().max(1) as f32;
        let mean = map.values.iter().sum::<f32>() / n;
        let std = (map.values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        let min = map.values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = map.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let threshold = 0.1 * max;
        let sparsity = map.values.iter().filter(|&&v| v < threshold).count() as f32 / n;
        Self {
            mean,
            std,
            min,
            max,
            sparsity,
        }
    }
}

/// Stops sampled from a colormap for plotly: enough that the interpolation between
/// them matches the PNGs.
const COLOR_STOPS: usize = 33;

/// The same colour scale as the PNG figures: plotly's palettes differ from ours (its
/// Jet, no plasma, magma, inferno or turbo), so the colormap itself is sampled.
pub fn color_scale(colormap: Colormap) -> ColorScale {
    ColorScale::Vector(
        (0..COLOR_STOPS)
            .map(|i| {
                let t = i as f64 / (COLOR_STOPS - 1) as f64;
                let [r, g, b] = colormap.rgb(t as f32);
                ColorScaleElement(t, format!("rgb({r},{g},{b})"))
            })
            .collect(),
    )
}

/// Heatmap rows with values rounded to 3 decimals: hover shows 3, and the page is
/// several times smaller than with full-precision floats.
fn rows(map: &Map) -> Vec<Vec<f64>> {
    map.values
        .chunks(map.width as usize)
        .map(|r| {
            r.iter()
                .map(|&v| (v as f64 * 1000.0).round() / 1000.0)
                .collect()
        })
        .collect()
}

/// The image as a base64 PNG data URI: one string instead of a JSON array of pixels.
pub(crate) fn data_uri(image: &RgbImage) -> String {
    use base64::Engine as _;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("encoding a PNG in memory cannot fail");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    )
}

/// The interactive overlay: the image with the heatmap on top and a colour bar.
pub fn overlay_plot(
    original: &RgbImage,
    map: &Map,
    title: &str,
    colormap: Colormap,
    opacity: f64,
) -> Plot {
    let map = map.resized(original.width(), original.height());
    let mut plot = Plot::new();
    plot.add_trace(
        Image::new(Vec::<Vec<Rgb>>::new())
            .source(data_uri(original))
            .name("image")
            .hover_info(plotly::common::HoverInfo::Skip),
    );
    plot.add_trace(
        HeatMap::new_z(rows(&map))
            .name(title)
            .opacity(opacity)
            .zmin(0.0)
            .zmax(1.0)
            .color_scale(color_scale(colormap))
            .hover_template("x %{x}, y %{y}<br>importance %{z:.3f}<extra></extra>"),
    );
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title))
            .height(450)
            // Room above the title for plotly's toolbar, which would cover it.
            .margin(Margin::new().left(10).right(10).top(70).bottom(10))
            .x_axis(Axis::new().show_tick_labels(false).show_grid(false))
            .y_axis(Axis::new().show_tick_labels(false).show_grid(false)),
    );
    fluid(plot)
}

/// The plot takes its container's width and follows window resizes (fixed pixel
/// widths left most of a wide page empty); the height stays fixed.
pub(crate) fn fluid(mut plot: Plot) -> Plot {
    plot.set_configuration(plotly::Configuration::new().responsive(true));
    plot
}

/// Bins of the importance histograms: counts are sent, not every pixel's value.
pub const HISTOGRAM_BINS: usize = 50;

/// Pixel counts of `values` (in `[0, 1]`) in [`HISTOGRAM_BINS`] equal bins.
fn bin_counts(values: &[f32]) -> Vec<f64> {
    let mut counts = vec![0.0; HISTOGRAM_BINS];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let bin = ((v.clamp(0.0, 1.0) * HISTOGRAM_BINS as f32) as usize).min(HISTOGRAM_BINS - 1);
        counts[bin] += 1.0;
    }
    counts
}

/// Importance histograms of several maps, overlaid (binned here).
pub fn histogram_plot(maps: &[(String, Map)]) -> Plot {
    let width = 1.0 / HISTOGRAM_BINS as f64;
    let centres: Vec<f64> = (0..HISTOGRAM_BINS)
        .map(|b| ((b as f64 + 0.5) * width * 1000.0).round() / 1000.0)
        .collect();
    let mut plot = Plot::new();
    for (name, map) in maps {
        plot.add_trace(
            Bar::new(centres.clone(), bin_counts(&map.values))
                .name(name)
                .opacity(0.55)
                .width(width)
                .hover_template(format!(
                    "{}<br>importance %{{x:.2f}}: %{{y}} pixels<extra></extra>",
                    escape(name)
                )),
        );
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text("importance histogram"))
            .bar_mode(BarMode::Overlay)
            .height(320)
            .margin(Margin::new().top(70))
            .x_axis(
                Axis::new()
                    .title(Title::with_text("importance"))
                    .range(vec![0.0, 1.0]),
            )
            .y_axis(Axis::new().title(Title::with_text("pixels"))),
    );
    fluid(plot)
}

/// A line chart: one `(name, x, y)` series per line.
pub fn line_plot(
    title: &str,
    x_title: &str,
    y_title: &str,
    series: &[(String, Vec<f64>, Vec<f64>)],
) -> Plot {
    let mut plot = Plot::new();
    for (name, x, y) in series {
        plot.add_trace(
            Scatter::new(x.clone(), y.clone())
                .name(name)
                .mode(Mode::LinesMarkers)
                .hover_template(format!(
                    "{}<br>%{{x:.3f}}: %{{y:.3f}}<extra></extra>",
                    escape(name)
                )),
        );
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title))
            .height(380)
            .margin(Margin::new().top(70))
            .x_axis(Axis::new().title(Title::with_text(x_title)))
            .y_axis(Axis::new().title(Title::with_text(y_title))),
    );
    fluid(plot)
}

/// An HTML table with a caption; cells are escaped.
pub fn table(caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = String::new();
    let _ = write!(html, "<table><caption>{}</caption><tr>", escape(caption));
    for h in headers {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

/// Escape text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A full report page: per image the prediction and top-5 table, heatmap statistics
/// per method, one interactive overlay per method (the comparison view), and an
/// importance histogram; `extra_sections` (raw HTML, e.g. metrics) are appended.
pub fn report_page(
    title: &str,
    images: &[ReportImage],
    colormap: Colormap,
    extra_sections: &[String],
) -> String {
    let mut body = report_title(title);
    for (i, image) in images.iter().enumerate() {
        body.push_str(&report_section(image, i, colormap));
    }
    for section in extra_sections {
        body.push_str(section);
    }
    page(title, &body)
}

/// The heading of a report page.
pub fn report_title(title: &str) -> String {
    format!("<h1>{}</h1>", escape(title))
}

/// One image's section of a report (see [`report_page`]); `index` is its place on the
/// page, which names its plots and its shared picture (unique on a page).
pub fn report_section(image: &ReportImage, index: usize, colormap: Colormap) -> String {
    let i = index;
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h2>{}</h2><div class=row><div>",
        escape(&image.name)
    );
    let predictions: Vec<Vec<String>> = image
        .top5
        .iter()
        .map(|(class, p)| vec![class.clone(), format!("{:.2}%", 100.0 * p)])
        .collect();
    body.push_str(&table(
        "prediction",
        &["class", &image.measure],
        &predictions,
    ));
    let _ = write!(body, "<p>explaining <b>{}</b></p>", escape(&image.target));
    let statistics: Vec<Vec<String>> = image
        .maps
        .iter()
        .map(|(method, map)| {
            let s = MapStats::of(map);
            vec![
                method.clone(),
                format!("{:.3}", s.mean),
                format!("{:.3}", s.std),
                format!("{:.3}", s.min),
                format!("{:.3}", s.max),
                format!("{:.1}%", 100.0 * s.sparsity),
            ]
        })
        .collect();
    body.push_str(&table(
        "heatmap statistics",
        &["method", "mean", "std", "min", "max", "sparsity"],
        &statistics,
    ));
    body.push_str("</div>");
    if let Some(picture) = &image.prediction_picture {
        let _ = write!(
            body,
            "<figure class=prediction><img src=\"{}\" alt=\"prediction of {}\"><figcaption>prediction</figcaption></figure>",
            data_uri(picture),
            escape(&image.name)
        );
    }
    let _ = write!(body, "</div><div class=grid>");
    // The picture is embedded once per image and shared by its overlays.
    let uri = data_uri(&image.original);
    let shared = format!("lumenImage{i}");
    let _ = write!(body, "<script>const {shared} = \"{uri}\";</script>");
    for (j, (method, map)) in image.maps.iter().enumerate() {
        let plot = overlay_plot(&image.original, map, method, colormap, 0.5);
        let html = plot
            .to_inline_html(Some(&format!("overlay-{i}-{j}")))
            .replacen(&format!("\"{uri}\""), &shared, 1);
        let notes: String = image
            .cautions
            .get(method)
            .into_iter()
            .flatten()
            .map(|reason| format!("<p class=caution>caution: {}</p>", escape(reason)))
            .collect();
        // plotly's div takes 100% of its parent: give each overlay a cell of its own.
        // The plot sits in a box of its own height: plotly's div is 100% of its
        // parent, which in a grid cell would be the whole row, notes included.
        let _ = write!(
            body,
            "<div class=cell><div class=plotbox>{html}</div>{notes}</div>"
        );
    }
    body.push_str("</div>");
    let _ = write!(
        body,
        "<div class=wide>{}</div>",
        histogram_plot(&image.maps).to_inline_html(Some(&format!("histogram-{i}")))
    );
    body.push_str("</section>");
    body
}

/// A self-contained page around `body` (raw HTML): plotly.js inlined once, the
/// report style, no network request; plots drawn as they come into view
/// ([`deferred_plots`]).
pub fn page(title: &str, body: &str) -> String {
    format!("{}{}{}", page_head(title), page_part(body), page_tail())
}

/// A page written in parts (a report of a folder, a chunk at a time): this head, then
/// each [`page_part`] of the body, then [`page_tail`]; the same bytes as [`page`] of
/// the whole body.
pub fn page_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>{}<style>{}</style></head><body>",
        escape(title),
        embedded_js(),
        STYLE,
    )
}

/// A part of a page's body as written between [`page_head`] and [`page_tail`]: its
/// plots deferred ([`deferred_plots`]).
pub fn page_part(body: &str) -> String {
    deferred_plots(body)
}

/// The end of a page: the loader of its deferred plots.
pub fn page_tail() -> String {
    format!("{DRAW_PLOTS_IN_VIEW}</body></html>")
}

/// plotly's inline figures, kept as text until [`DRAW_PLOTS_IN_VIEW`] runs them: a
/// plot's script is drawn as the page is parsed otherwise, and a report of 250 images
/// and 4 methods (1000 figures, 114 MB) kept a browser busy for minutes before it
/// showed anything. Only plotly's scripts are typed `text/javascript`; the page's own
/// (the shared image data) run at once.
fn deferred_plots(body: &str) -> String {
    body.replace(
        "<script type=\"text/javascript\">",
        "<script type=\"text/plain\" class=lumen-plot>",
    )
}

/// Runs each deferred plot once its div is within two screens of the view (all of them
/// at once without IntersectionObserver, and before printing).
const DRAW_PLOTS_IN_VIEW: &str = "<script>(function(){\
const plots=Array.from(document.querySelectorAll('script.lumen-plot'));\
const draw=s=>{if(s.dataset.drawn)return;s.dataset.drawn='1';(new Function(s.textContent))();};\
const all=()=>plots.forEach(draw);\
window.addEventListener('beforeprint',all);\
if(!('IntersectionObserver' in window)){all();return;}\
const seen=new IntersectionObserver(es=>es.forEach(e=>{if(e.isIntersecting){seen.unobserve(e.target);draw(e.target.lumenPlot);}}),{rootMargin:'200% 0px'});\
plots.forEach(s=>{const div=s.previousElementSibling;if(div){div.lumenPlot=s;seen.observe(div);}else{draw(s);}});\
})();</script>";

/// plotly.js, inline (the plotly crate also bundles MathJax, which reports do not use:
/// its script, the second, is dropped). plotly.min.js has one URL in a string
/// assignment (`v.src="https://unpkg.com/maki..."`, icons fetched only by map traces,
/// which reports never draw); its `h` is written as the JS escape `\x68` so that the
/// page contains no `src="http` at all, with the same string value.
fn embedded_js() -> String {
    let sources = Plot::offline_js_sources();
    let plotly_only = match sources.find("</script>") {
        Some(end) => &sources[..end + "</script>".len()],
        None => &sources,
    };
    plotly_only.replace("src=\"https://unpkg.com/", "src=\"\\x68ttps://unpkg.com/")
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222}\
section{border-top:1px solid #ddd;margin-top:24px}.row{display:flex;flex-wrap:wrap;gap:12px}\
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td:first-child{text-align:left}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px}\
.wide-cells{grid-template-columns:repeat(auto-fill,minmax(480px,1fr))}.cell{min-width:0}.plotbox{height:450px}\
.caution{color:#a82814;font-size:13px;margin:2px 10px}.wide{max-width:1300px}\
caption{font-weight:bold;text-align:left;padding:4px 0}.plot{min-width:0;min-height:380px}\
.floor td{color:#888;font-style:italic}ul.advice li{margin:4px 0}";

/// `(statistic, value)`.
pub type Statistic = (String, f64);
/// `(layer, its statistics)`.
pub type LayerStatistics = (String, Vec<Statistic>);

/// A report section comparing layers: a table per image and one bar chart per
/// statistic (layers on the x axis, one bar group per image). `images` holds
/// `(image, [(layer, [(statistic, value)])])`.
pub fn layer_comparison_section(images: &[(String, Vec<LayerStatistics>)]) -> String {
    let mut html = String::from("<section><h2>Layer statistics</h2><div class=row>");
    for (image, layers) in images {
        let headers: Vec<&str> = std::iter::once("layer")
            .chain(
                layers
                    .first()
                    .map(|(_, s)| s.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
            .collect();
        let rows: Vec<Vec<String>> = layers
            .iter()
            .map(|(layer, stats)| {
                std::iter::once(layer.clone())
                    .chain(stats.iter().map(|(_, v)| {
                        if v.fract() == 0.0 {
                            format!("{v:.0}")
                        } else {
                            format!("{v:.4}")
                        }
                    }))
                    .collect()
            })
            .collect();
        html.push_str(&table(image, &headers, &rows));
    }
    html.push_str("</div><div class=\"grid wide-cells\">");
    let statistics: Vec<String> = images
        .first()
        .and_then(|(_, l)| l.first())
        .map(|(_, s)| s.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for (k, statistic) in statistics.iter().enumerate() {
        let mut plot = Plot::new();
        for (image, layers) in images {
            let x: Vec<String> = layers.iter().map(|(l, _)| l.clone()).collect();
            let y: Vec<f64> = layers.iter().map(|(_, s)| s[k].1).collect();
            plot.add_trace(plotly::Bar::new(x, y).name(image));
        }
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(statistic))
                .height(320)
                .x_axis(Axis::new().title(Title::with_text("layer")))
                .y_axis(Axis::new().title(Title::with_text(statistic))),
        );
        let _ = write!(
            html,
            "<div class=plot>{}</div>",
            fluid(plot).to_inline_html(Some(&format!("layer-statistics-{k}")))
        );
    }
    html.push_str("</div></section>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReportImage {
        ReportImage {
            measure: "probability".into(),
            name: "shape <0>".into(),
            original: RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 30])),
            top5: vec![("circle".into(), 0.9), ("square".into(), 0.1)],
            target: "circle".into(),
            maps: vec![
                (
                    "gradcam".into(),
                    Map::new((0..64).map(|v| v as f32 / 63.0).collect(), 8, 8),
                ),
                ("rollout".into(), Map::new(vec![0.0; 16], 4, 4)),
            ],
            cautions: [(
                "rollout".to_string(),
                vec!["pointing_game 0.100 does not beat the `center` floor".to_string()],
            )]
            .into(),
            prediction_picture: None,
        }
    }

    #[test]
    fn a_page_written_in_parts_is_the_whole_page() {
        let extra = layer_comparison_section(&[(
            "shape <0>".into(),
            vec![("layer1".into(), vec![("mean".into(), 0.5)])],
        )]);
        let whole = report_page(
            "Report",
            &[sample(), sample(), sample()],
            Colormap::Jet,
            std::slice::from_ref(&extra),
        );
        let mut parts = page_head("Report") + &page_part(&report_title("Report"));
        for i in 0..3 {
            parts += &page_part(&report_section(&sample(), i, Colormap::Jet));
        }
        parts += &page_part(&extra);
        parts += &page_tail();
        assert!(parts == whole, "the parts differ from the page");
        // The section's place names its plots and shared picture.
        let second = report_section(&sample(), 1, Colormap::Jet);
        assert!(second.contains("const lumenImage1 =") && second.contains("overlay-1-1"));
        assert!(!second.contains("lumenImage0") && !second.contains("overlay-0-"));
    }

    #[test]
    fn plots_are_drawn_when_they_come_into_view() {
        let html = report_page("Report", &[sample(), sample()], Colormap::Jet, &[]);
        // Every plotly figure waits as text, right after its div (the loader finds the
        // div as the script's previous element); none runs as the page is parsed.
        let plots = html.matches("<div id=\"overlay-").count()
            + html.matches("<div id=\"histogram-").count();
        assert_eq!(plots, 6);
        let waiting: Vec<_> = html
            .match_indices("<script type=\"text/plain\" class=lumen-plot>")
            .collect();
        assert_eq!(waiting.len(), plots);
        // (plotly.js itself, in the head, runs at once.)
        let body = &html[html.find("<body>").unwrap()..];
        assert!(!body.contains("<script type=\"text/javascript\">"));
        for (at, _) in waiting {
            let before = html[..at].trim_end();
            assert!(
                before.ends_with(
                    "class=\"plotly-graph-div\" style=\"height:100%; width:100%;\"></div>"
                ),
                "a deferred plot not right after its div: {}",
                &before[before.len().saturating_sub(120)..]
            );
            assert!(html[at..].contains("Plotly.newPlot("));
        }
        // The loader comes after every plot, and draws them all before printing.
        let loader = html
            .find(DRAW_PLOTS_IN_VIEW)
            .expect("the loader is on the page");
        assert!(html.rfind("class=lumen-plot").unwrap() < loader);
        assert!(DRAW_PLOTS_IN_VIEW.contains("beforeprint"));
        // The shared picture is still defined at once, for the plots that use it.
        assert!(html.contains("<script>const lumenImage0 = \"data:image/png;base64,"));
    }

    #[test]
    fn report_is_self_contained() {
        let html = report_page(
            "Report",
            &[sample()],
            Colormap::Jet,
            &["<section>metrics</section>".into()],
        );
        assert!(
            !html.contains("src=\"http"),
            "the page must not load anything from the network"
        );
        assert!(
            !html.contains("<script src") && !html.contains("<link"),
            "no external script or stylesheet"
        );
        // plotly.js once, one overlay per method, a histogram, the extra section.
        assert_eq!(
            html.matches("<div id=\"overlay-").count(),
            2,
            "one overlay per method"
        );
        assert_eq!(html.matches("<div id=\"histogram-").count(), 1);
        assert!(html.contains("<section>metrics</section>"));
        assert!(html.contains("shape &lt;0&gt;"), "names are escaped");
        assert!(html.contains("importance %{z:.3f}"));
        // A known weakness is written under its method's overlay only.
        assert_eq!(html.matches("<p class=caution>").count(), 1);
        assert!(html.contains("caution: pointing_game 0.100 does not beat the `center` floor"));
        // A task's prediction picture (none here) is drawn beside the table when given,
        // as one more embedded picture.
        assert!(!html.contains("<figure class=prediction>"));
        let mut with_picture = sample();
        with_picture.prediction_picture = Some(RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])));
        let pictured = report_page("Report", &[with_picture], Colormap::Jet, &[]);
        assert!(pictured.contains("<figure class=prediction><img src=\"data:image/png;base64,"));
        assert!(pictured.contains("alt=\"prediction of shape &lt;0&gt;\""));
        // The picture once for its two overlays; histogram counts, not pixel values.
        let in_plotly_js = page("", "").matches("data:image/png;base64,").count();
        assert_eq!(
            html.matches("data:image/png;base64,").count(),
            in_plotly_js + 1
        );
        assert_eq!(html.matches("source\":lumenImage0").count(), 2);
        assert!(!html.contains("\"type\":\"histogram\""));
    }

    #[test]
    fn html_colour_scales_are_the_png_colormaps() {
        for colormap in [
            Colormap::Plasma,
            Colormap::Magma,
            Colormap::Inferno,
            Colormap::Turbo,
        ] {
            let ColorScale::Vector(stops) = color_scale(colormap) else {
                panic!("{colormap:?}: a palette name, not our colours");
            };
            assert_eq!(stops.len(), COLOR_STOPS);
            for stop in [&stops[0], &stops[COLOR_STOPS / 2], &stops[COLOR_STOPS - 1]] {
                let [r, g, b] = colormap.rgb(stop.0 as f32);
                assert_eq!(
                    stop.1,
                    format!("rgb({r},{g},{b})"),
                    "{colormap:?} at {}",
                    stop.0
                );
            }
        }
        // Two colormaps plotly would both have drawn as Viridis differ here.
        let page = |c| report_page("r", &[sample()], c, &[]);
        assert_ne!(page(Colormap::Plasma), page(Colormap::Magma));
    }

    #[test]
    fn histogram_bins_count_every_finite_pixel() {
        let counts = bin_counts(&[0.0, 0.001, 0.5, 1.0, 1.0, f32::NAN]);
        assert_eq!(counts.len(), HISTOGRAM_BINS);
        assert_eq!(counts.iter().sum::<f64>(), 5.0);
        assert_eq!(
            (counts[0], counts[25], counts[HISTOGRAM_BINS - 1]),
            (2.0, 1.0, 2.0)
        );
    }

    #[test]
    fn statistics_are_computed() {
        let s = MapStats::of(&Map::new(vec![0.0, 0.0, 0.5, 1.0], 2, 2));
        assert!((s.mean - 0.375).abs() < 1e-6);
        assert_eq!((s.min, s.max), (0.0, 1.0));
        assert!((s.sparsity - 0.5).abs() < 1e-6);
        assert!((s.std - (0.171875f32).sqrt()).abs() < 1e-6);
    }
}
