//! Drawing an explained image's figures, and the worker threads that do it during a
//! batch: while the caller's thread runs the model on the next batch, PNG encoding,
//! the largest host stage, runs beside it (the seed's "overlap").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use image::RgbImage;
use lumen_core::profile::{self, stages};
use lumen_core::{LumenError, Result};
use lumen_report::{
    Colormap, Map, Panel, explanation_figure, overlay, polarity_figure, with_notes,
};

use crate::api::{ExplainOptions, caution_lines, figure_stem};
use crate::output::save_png;

/// How an explanation's figures look and where they go.
#[derive(Clone, Debug)]
pub(crate) struct FigureStyle {
    pub dir: PathBuf,
    pub colormap: Colormap,
    pub alpha: f32,
    pub cautions: BTreeMap<String, Vec<String>>,
}

impl FigureStyle {
    /// The style of `options`, when they ask for figures.
    pub fn of<Q>(options: &ExplainOptions<Q>) -> Option<Self> {
        Some(Self {
            dir: options.save_dir.clone()?,
            colormap: options.colormap,
            alpha: options.alpha,
            cautions: options.cautions.clone(),
        })
    }

    /// The files [`Self::draw`] writes for `image` explained by `method`.
    pub fn paths(&self, image: &str, method: &str, signed: bool) -> Vec<PathBuf> {
        let stem = figure_stem(image, method);
        let mut paths = vec![self.dir.join(format!("{stem}.png"))];
        if signed {
            paths.push(self.dir.join(format!("{stem}_polarity.png")));
        }
        paths
    }

    /// One image's figures: original | heatmap | overlay, and the polarity view when
    /// its signed map is given. Returns [`Self::paths`].
    pub fn draw(
        &self,
        image: &str,
        method: &str,
        heatmap: &Map,
        title: &str,
        original: &RgbImage,
        signed: Option<&Map>,
    ) -> Result<Vec<PathBuf>> {
        let _stage = profile::stage(stages::ENCODE);
        let title = format!("{method} | {title}");
        let paths = self.paths(image, method, signed.is_some());
        let mut notes = caution_lines(&self.cautions, &[method.to_string()]);
        notes.extend(flat_map_note(heatmap, ""));
        let figure = with_notes(
            &explanation_figure(original, heatmap, self.colormap, self.alpha, &title),
            &notes,
        );
        let file = |path: &PathBuf| {
            path.file_name()
                .expect("a figure file")
                .to_string_lossy()
                .into_owned()
        };
        save_png(&figure, &self.dir, &file(&paths[0]))?;
        if let Some(signed) = signed {
            let figure = polarity_figure(original, signed, self.colormap, self.alpha, &title);
            save_png(&figure, &self.dir, &file(&paths[1]))?;
        }
        Ok(paths)
    }
}

/// The note under a figure whose map is flat (every pixel the same value, drawn in one
/// colour), which would otherwise read as a finding: a CAM at a layer where nothing
/// raises the target (all its evidence negative, or no gradient reaching it, as after
/// a ViT's last attention), or a gradient that is zero everywhere. `which` names the
/// map among several (`" for box 2"`); `None` for a map that is not flat.
pub(crate) fn flat_map_note(heatmap: &Map, which: &str) -> Option<String> {
    let first = *heatmap.values.first()?;
    heatmap.values.iter().all(|&v| v == first).then(|| {
        format!(
            "flat map{which}: every pixel has the same value, so it shows no evidence, not \
             an even spread (for a CAM, an earlier layer may show some)"
        )
    })
}

/// One image's figures for [`draw_in_parallel`]: name, method, heatmap, title, the
/// picture as shown (outlines drawn) and the signed map of the polarity view.
pub(crate) type ToDraw<'a> = (&'a str, &'a str, &'a Map, String, RgbImage, Option<&'a Map>);

/// The figures of a call's images, drawn and encoded in parallel (the largest host
/// stage of `explain` on a CPU: 35% of a 1000-image GradCAM run drawn one by one); the
/// files of each, in order. The first failure is returned.
pub(crate) fn draw_in_parallel(
    style: &FigureStyle,
    jobs: Vec<ToDraw<'_>>,
) -> Result<Vec<Vec<PathBuf>>> {
    use rayon::prelude::*;
    jobs.into_par_iter()
        .map(|(image, method, heatmap, title, original, signed)| {
            style.draw(image, method, heatmap, &title, &original, signed)
        })
        .collect()
}

/// One image's figures to draw, and its panel of the batch grid when it has one.
pub(crate) struct FigureJob {
    /// The image's place among the inputs (orders the grid).
    pub position: usize,
    pub image: String,
    pub method: String,
    pub heatmap: Map,
    pub title: String,
    /// The image as shown, outlines drawn.
    pub original: RgbImage,
    pub signed: Option<Map>,
    /// The grid panel's title, for the images shown in the grid.
    pub grid_title: Option<String>,
}

type Shared<T> = Arc<Mutex<T>>;

/// Threads drawing [`FigureJob`]s. Jobs wait in a bounded queue (memory stays
/// bounded; a full queue makes the caller wait). The first failure (a full disk) is
/// kept: [`Self::submit`] returns it, so the run stops at the next batch, and
/// [`Self::finish`] too.
pub(crate) struct FigureWorkers<'scope> {
    queue: Option<SyncSender<FigureJob>>,
    workers: Vec<ScopedJoinHandle<'scope, ()>>,
    failure: Shared<Option<LumenError>>,
    panels: Shared<Vec<(usize, Panel)>>,
}

impl<'scope> FigureWorkers<'scope> {
    /// `threads` workers (at least 1) in `scope`, queueing up to `queue` jobs.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        style: FigureStyle,
        threads: usize,
        queue: usize,
    ) -> Self {
        let (sender, receiver) = sync_channel::<FigureJob>(queue.max(1));
        let receiver: Shared<Receiver<FigureJob>> = Arc::new(Mutex::new(receiver));
        let failure: Shared<Option<LumenError>> = Arc::default();
        let panels: Shared<Vec<(usize, Panel)>> = Arc::default();
        let workers = (0..threads.max(1))
            .map(|_| {
                let (receiver, failure, panels, style) = (
                    receiver.clone(),
                    failure.clone(),
                    panels.clone(),
                    style.clone(),
                );
                scope.spawn(move || {
                    loop {
                        // The lock is held only to take one job.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        match draw(&style, job) {
                            Ok(Some(panel)) => panels.lock().expect("panels").push(panel),
                            Ok(None) => {}
                            Err(error) => {
                                failure.lock().expect("failure").get_or_insert(error);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            queue: Some(sender),
            workers,
            failure,
            panels,
        }
    }

    /// Queue a job; the first failure so far, if any, as an error.
    pub fn submit(&self, job: FigureJob) -> Result<()> {
        self.check()?;
        self.queue
            .as_ref()
            .expect("open until finish")
            .send(job)
            .map_err(|_| LumenError::InvalidArgument("the figure workers stopped".into()))
    }

    fn check(&self) -> Result<()> {
        match self.failure.lock().expect("failure").take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Wait for every queued job; the grid panels drawn, or the first failure.
    pub fn finish(mut self) -> Result<Vec<(usize, Panel)>> {
        drop(self.queue.take());
        for worker in self.workers.drain(..) {
            worker
                .join()
                .map_err(|_| LumenError::InvalidArgument("a figure worker panicked".into()))?;
        }
        self.check()?;
        Ok(std::mem::take(&mut *self.panels.lock().expect("panels")))
    }
}

/// Draw one job: its figures, and its grid panel when it has one.
fn draw(style: &FigureStyle, job: FigureJob) -> Result<Option<(usize, Panel)>> {
    style.draw(
        &job.image,
        &job.method,
        &job.heatmap,
        &job.title,
        &job.original,
        job.signed.as_ref(),
    )?;
    Ok(job.grid_title.map(|title| {
        let _stage = profile::stage(stages::ENCODE);
        (
            job.position,
            Panel::new(
                title,
                overlay(&job.original, &job.heatmap, style.colormap, style.alpha),
            ),
        )
    }))
}

/// Figure threads for a batch: half the cores (the other half runs the model's host
/// work), at least one.
pub(crate) fn figure_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(position: usize, grid: bool) -> FigureJob {
        FigureJob {
            position,
            image: format!("image{position}"),
            method: "gradcam++".into(),
            heatmap: Map::new((0..16).map(|v| v as f32 / 15.0).collect(), 4, 4),
            title: "a title".into(),
            original: RgbImage::from_pixel(8, 8, image::Rgb([40, 90, 200])),
            signed: None,
            grid_title: grid.then(|| format!("panel {position}")),
        }
    }

    fn style_in(dir: PathBuf) -> FigureStyle {
        FigureStyle {
            dir,
            colormap: Colormap::Jet,
            alpha: 0.5,
            cautions: BTreeMap::new(),
        }
    }

    /// Every job's figure is written at its announced path and the grid panels come
    /// back; a failed write (a folder under a file) is the run's error, not a lost figure.
    #[test]
    fn workers_write_every_figure_and_report_a_failure() {
        let dir = std::env::temp_dir().join(format!("lumen-figures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let style = style_in(dir.clone());
        let panels = std::thread::scope(|scope| {
            let workers = FigureWorkers::start(scope, style.clone(), 3, 2);
            for position in 0..7 {
                workers.submit(job(position, position % 2 == 0)).unwrap();
            }
            workers.finish()
        })
        .unwrap();
        let mut positions: Vec<usize> = panels.iter().map(|(p, _)| *p).collect();
        positions.sort();
        assert_eq!(positions, [0, 2, 4, 6]);
        for position in 0..7 {
            let path = &style.paths(&format!("image{position}"), "gradcam++", false)[0];
            assert!(path.ends_with(format!("image{position}_gradcampp.png")));
            assert!(path.is_file(), "{}", path.display());
        }
        // A folder under a file cannot be made.
        std::fs::write(dir.join("a-file"), b"").unwrap();
        let missing = style_in(dir.join("a-file").join("figures"));
        let outcome = std::thread::scope(|scope| {
            let workers = FigureWorkers::start(scope, missing, 1, 1);
            workers.submit(job(0, false))?;
            workers.finish()
        });
        assert!(outcome.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
