//! The HTML timeline sink: keeps what the monitors log and rewrites one offline page
//! at each flush (each epoch), so that an interrupted run still leaves a page. The
//! page itself is drawn by `lumen-report` ([`lumen_report::timeline_page`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use lumen_report::{Layout, Panel, TimelineChart, TimelineFrame, grid, timeline_page};

use crate::sink::{Histogram, Moment, Sink, SinkError, SinkResult};

/// Suffix of the scalar shown (as a percentage) in an image's caption: a sample logged as
/// `interpretation/sample_0` has its confidence in `interpretation/sample_0/confidence`.
const CAPTION_SUFFIX: &str = "confidence";

/// Writes the timeline page.
pub struct Timeline {
    path: PathBuf,
    title: String,
    /// Tag -> (moment, value), in logging order.
    scalars: BTreeMap<String, Vec<(Moment, f64)>>,
    /// Moment -> the images logged then, by tag.
    images: BTreeMap<Moment, BTreeMap<String, RgbImage>>,
}

impl Timeline {
    /// A timeline written to `path` (an `.html` file; its folder must exist or be
    /// creatable). Checked writable now, before any training.
    pub fn create(path: impl AsRef<Path>, title: &str) -> Result<Self, SinkError> {
        let path = path.as_ref().to_path_buf();
        let timeline = Self {
            path,
            title: title.to_string(),
            scalars: BTreeMap::new(),
            images: BTreeMap::new(),
        };
        timeline.write()?;
        Ok(timeline)
    }

    /// Where the page is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn caption(&self, tag: &str, at: Moment) -> String {
        let name = tag.rsplit('/').next().unwrap_or(tag).replace('_', " ");
        let value = self
            .scalars
            .get(&format!("{tag}/{CAPTION_SUFFIX}"))
            .and_then(|series| series.iter().rev().find(|(m, _)| *m == at))
            .map(|(_, v)| *v);
        match value {
            Some(v) => format!("{name} · {:.0}%", 100.0 * v),
            None => name,
        }
    }

    fn frames(&self) -> Vec<TimelineFrame> {
        self.images
            .iter()
            .map(|(at, images)| {
                let panels: Vec<Panel> = images
                    .iter()
                    .map(|(tag, image)| Panel::new(self.caption(tag, *at), image.clone()))
                    .collect();
                let columns = panels.len().clamp(1, 4);
                TimelineFrame {
                    label: format!("epoch {} · step {}", at.epoch, at.step),
                    image: grid(&panels, Layout::Grid(columns)),
                }
            })
            .collect()
    }

    fn charts(&self) -> Vec<TimelineChart> {
        let mut charts: BTreeMap<String, TimelineChart> = BTreeMap::new();
        for (tag, series) in &self.scalars {
            let (chart, line) = chart_and_series(tag);
            let entry = charts
                .entry(chart.clone())
                .or_insert_with(|| TimelineChart {
                    title: chart.clone(),
                    x_title: "step".into(),
                    y_title: chart.rsplit(": ").next().unwrap_or(&chart).to_string(),
                    series: vec![],
                });
            entry.series.push((
                line,
                series.iter().map(|(m, _)| m.step as f64).collect(),
                series.iter().map(|(_, v)| *v).collect(),
            ));
        }
        // Training metrics first, then the monitors' charts.
        let (mut first, rest): (Vec<_>, Vec<_>) =
            charts.into_values().partition(|c| !c.title.contains(": "));
        first.extend(rest);
        first
    }

    fn write(&self) -> SinkResult {
        let notes = vec![format!(
            "{} monitored points; every scalar as a chart below (x: optimizer step).",
            self.images.len()
        )];
        let html = timeline_page(&self.title, &notes, &self.frames(), &self.charts());
        write_atomically(&self.path, html.as_bytes())
    }
}

/// `train/Loss` -> chart `Loss`, line `train`; `features/layer2/mean` -> chart
/// `features: mean`, line `layer2`; a tag without `/` is its own chart and line.
fn chart_and_series(tag: &str) -> (String, String) {
    let parts: Vec<&str> = tag.split('/').collect();
    match parts.as_slice() {
        [single] => (single.to_string(), single.to_string()),
        [split, metric] => (metric.to_string(), split.to_string()),
        [group, middle @ .., last] => (format!("{group}: {last}"), middle.join("/")),
        [] => unreachable!("split yields at least one part"),
    }
}

/// Write through a temporary file in the same folder and rename it over `path`, so a
/// reader never sees half a page.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> SinkResult {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| SinkError(format!("cannot create {}: {e}", dir.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("page");
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            SinkError(format!("cannot write {}: {e}", path.display()))
        })
}

impl Sink for Timeline {
    fn name(&self) -> String {
        format!("timeline {}", self.path.display())
    }

    fn scalar(&mut self, tag: &str, at: Moment, value: f64) -> SinkResult {
        self.scalars
            .entry(tag.to_string())
            .or_default()
            .push((at, value));
        Ok(())
    }

    fn image(&mut self, tag: &str, at: Moment, image: &RgbImage) -> SinkResult {
        self.images
            .entry(at)
            .or_default()
            .insert(tag.to_string(), image.clone());
        Ok(())
    }

    /// The page shows the statistics as curves, not the histograms.
    fn histogram(&mut self, _tag: &str, _at: Moment, _h: &Histogram) -> SinkResult {
        Ok(())
    }

    fn flush(&mut self, _at: Moment) -> SinkResult {
        self.write()
    }

    fn finish(&mut self) -> SinkResult {
        self.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_group_into_charts() {
        assert_eq!(
            chart_and_series("train/Loss"),
            ("Loss".into(), "train".into())
        );
        assert_eq!(
            chart_and_series("features/layer2/mean"),
            ("features: mean".into(), "layer2".into())
        );
        assert_eq!(
            chart_and_series("interpretation/sample_3/confidence"),
            ("interpretation: confidence".into(), "sample_3".into())
        );
        assert_eq!(chart_and_series("lr"), ("lr".into(), "lr".into()));
    }

    #[test]
    fn the_page_has_a_slider_step_per_moment_and_a_caption_from_the_confidence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.html");
        let mut t = Timeline::create(&path, "run").unwrap();
        for epoch in 1..=3 {
            let at = Moment {
                epoch,
                step: 10 * epoch as u64,
            };
            t.scalar("interpretation/sample_0/confidence", at, 0.5)
                .unwrap();
            t.scalar("valid/Accuracy", at, epoch as f64).unwrap();
            t.image("interpretation/sample_0", at, &RgbImage::new(8, 8))
                .unwrap();
            t.flush(at).unwrap();
        }
        assert_eq!(
            t.caption("interpretation/sample_0", Moment { epoch: 2, step: 20 }),
            "sample 0 · 50%"
        );
        let html = std::fs::read_to_string(&path).unwrap();
        for label in ["epoch 1 · step 10", "epoch 3 · step 30"] {
            assert!(html.contains(label), "{label}");
        }
        assert_eq!(html.matches("\"method\":\"restyle\"").count(), 3);
        assert!(html.contains("Accuracy"));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
