//! The high-level API: explain, compare and batch-visualise predictions in a call,
//! with figures written where asked. Mirrors the guide's `explain_prediction`,
//! `compare_methods`, `visualize_batch`, `explain_batch` and `quick_explain`.
//!
//! Every call is generic over a [`TaskModel`]: a model, its [`Task`] (what it
//! predicts and what can be explained), its data config and device. A zoo
//! [`LoadedModel`] is a classification `TaskModel`; [`Explained`] wraps a user's own
//! Burn model with any task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lumen_core::profile::{self, stages};
use lumen_core::{DataConfig, Device, ExplainableModel, LumenError, Result, Tensor, to_host};
use lumen_methods::{
    Explanation, Method, MethodOptions, by_name, cams_from_one_pass, one_pass_cam,
};
use lumen_models::{LoadedModel, ZooModel};
use lumen_report::{
    Colormap, DrawnBox, Layout, Map, Panel, ReportImage, comparison_figure, outline_boxes,
    with_notes,
};
use lumen_tasks::{ClassPrediction, Classification, Task};
use serde::Serialize;

use crate::cache::{CacheRecord, CachedExplanation, ExplanationCache};
use crate::cached::{
    check_target_count, image_target_keys, input_rows, requested_keys, targets_at,
};
use crate::figures::{FigureJob, FigureStyle, FigureWorkers, figure_threads};
pub use crate::inputs::Inputs;
use crate::inputs::{InputFailure, unique_names};
use crate::output::{save_png, write_npy};
use crate::scale::{GRID_FILE, IndexLine, IndexWriter, Shard, batch_grid};

/// A model with what the high-level calls need around it: its task, preprocessing
/// and device.
pub trait TaskModel {
    /// The model.
    type Model: ExplainableModel + 'static;
    /// Its task.
    type Task: Task<Output = <Self::Model as ExplainableModel>::Output>;

    /// A name for titles and reports.
    fn name(&self) -> &str;
    /// The model, in evaluation mode.
    fn model(&self) -> &Self::Model;
    /// The task (cheap to build: names and counts).
    fn task(&self) -> Self::Task;
    /// Preprocessing the model expects.
    fn data_config(&self) -> &DataConfig;
    /// The device the model lives on.
    fn device(&self) -> &Device;

    /// A picture of one image's prediction for reports, drawn on `original` (the
    /// image at the model's input size): a segmentation's class map with its legend, a
    /// detector's boxes. None by default (a classifier's prediction is its table).
    fn prediction_picture(
        &self,
        prediction: &PredictionOf<Self>,
        original: &image::RgbImage,
    ) -> Option<image::RgbImage> {
        let _ = (prediction, original);
        None
    }

    /// The method called `name` with `options`: the registry's ([`by_name`]), or one
    /// of this task's own that the registry cannot hold (D-RISE on a detector reads
    /// its boxes from the target). Every high-level call builds its methods here.
    fn method(&self, name: &str, options: &MethodOptions) -> Result<Box<dyn Method<Self::Model>>> {
        by_name::<Self::Model>(name, options)
    }
}

/// The prediction type of a [`TaskModel`].
pub type PredictionOf<T> = <<T as TaskModel>::Task as Task>::Prediction;
/// The request type of a [`TaskModel`] (a class index for classification).
pub type RequestOf<T> = <<T as TaskModel>::Task as Task>::Request;

impl TaskModel for LoadedModel {
    type Model = ZooModel;
    type Task = Classification;

    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &ZooModel {
        &self.model
    }
    fn task(&self) -> Classification {
        Classification::new(self.num_classes(), self.class_names.clone())
    }
    fn data_config(&self) -> &DataConfig {
        &self.data_config
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Any explainable Burn model with a task: what a user passes to the high-level calls
/// for their own model.
#[derive(Clone, Debug)]
pub struct Explained<M, T> {
    /// A name for titles and reports.
    pub name: String,
    /// The model, in evaluation mode (`valid()`).
    pub model: M,
    /// Its task.
    pub task: T,
    /// Preprocessing the model expects.
    pub data_config: DataConfig,
    /// Where the model lives.
    pub device: Device,
}

impl<M, T> TaskModel for Explained<M, T>
where
    M: ExplainableModel + 'static,
    T: Task<Output = M::Output> + Clone,
{
    type Model = M;
    type Task = T;

    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &M {
        &self.model
    }
    fn task(&self) -> T {
        self.task.clone()
    }
    fn data_config(&self) -> &DataConfig {
        &self.data_config
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Options of the high-level calls (the guide's keyword arguments). `R` is the task's
/// request type: a class index for classification.
#[derive(Clone, Debug)]
pub struct ExplainOptions<R = usize> {
    /// Method name (see `lumen_methods::method_names`).
    pub method: String,
    /// What to explain, one request per image; the task's default (the predicted
    /// class) when `None`.
    pub targets: Option<Vec<R>>,
    /// Colormap of the figures.
    pub colormap: Colormap,
    /// Overlay opacity in `[0, 1]`.
    pub alpha: f32,
    /// Folder for figures; nothing is written when `None`.
    pub save_dir: Option<PathBuf>,
    /// Method options (layer, steps, noise, ...).
    pub method_options: MethodOptions,
    /// Also write the polarity view of signed attributions (gradient methods).
    pub polarity: bool,
    /// Known weaknesses per method on this model (`lumen evaluate`'s cautions, see
    /// [`crate::verdicts`]): written under the method's figures and report panels, so
    /// that a map from a method that fails a check is not read as a good one. They are
    /// drawn as given: fill them with [`crate::verdicts::Verdicts::at_layer`] of the
    /// run's layer, so that a CAM measured at one layer does not caution a map made at
    /// another (the CLI does, and warns about the ones it leaves out).
    pub cautions: BTreeMap<String, Vec<String>>,
    /// Take each image's explanation from this cache where it holds one, and store the
    /// new ones there ([`explain_prediction`], [`explain_with`], [`compare_methods`],
    /// [`write_report`], and the segmentation and detection calls built on them;
    /// [`explain_batch_with`] takes its cache in [`BatchRun`]). The
    /// key covers the model's weights, the method, its name and options, the layer, the
    /// requested target and the image as the model sees it (shape and normalised
    /// values): a user's own [`Method`] must change its name when its results change.
    pub cache: Option<Arc<ExplanationCache>>,
    /// Images predicted and explained together. `None` (the default) sizes it to the
    /// input and the model like the methods' internal batches (32 at 224 px on a
    /// ResNet, fewer on larger inputs), so a large batch holds one pass's activations;
    /// methods that run many rows per image (IG, the noise tunnels, Score-CAM) chunk
    /// those on their own (`MethodOptions::internal_batch_size`).
    /// [`explain_batch_with`] reads its files in [`BatchRun::batch_size`] and passes
    /// each read batch whole.
    pub batch_size: Option<usize>,
}

impl<R> Default for ExplainOptions<R> {
    fn default() -> Self {
        Self {
            method: "gradcam".into(),
            targets: None,
            colormap: Colormap::Jet,
            alpha: 0.5,
            save_dir: None,
            method_options: MethodOptions::default(),
            polarity: false,
            cautions: BTreeMap::new(),
            cache: None,
            batch_size: None,
        }
    }
}

impl<R> ExplainOptions<R> {
    /// Check the numeric options before any work.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && (0.0..=1.0).contains(&self.alpha)) {
            return Err(LumenError::InvalidArgument(format!(
                "overlay opacity (alpha) must be in [0, 1], got {}",
                self.alpha
            )));
        }
        if self.batch_size == Some(0) {
            return Err(LumenError::InvalidArgument(
                "the batch size (images per pass) must be at least 1".into(),
            ));
        }
        self.method_options.validate()
    }
}

/// What one image's explanation produced. `P` and `R` are the task's prediction and
/// request types.
#[derive(Clone, Debug, Serialize)]
pub struct ExplanationResult<P = ClassPrediction, R = usize> {
    /// Input name.
    pub image: String,
    /// What the model predicted.
    pub prediction: P,
    /// What was explained.
    pub target: R,
    /// Method used.
    pub method: String,
    /// Layer used (CAM methods).
    pub layer: Option<String>,
    /// Integrated Gradients' completeness gap.
    pub convergence_delta: Option<f32>,
    /// Figures written.
    pub paths: Vec<PathBuf>,
    /// The heatmap on the host (input size, or patch grid for attention methods).
    /// Empty (0x0) in a batch's outcome unless `BatchRun::keep_maps`.
    #[serde(skip)]
    pub heatmap: Map,
}

/// The result type of a [`TaskModel`].
pub type ResultOf<T> = ExplanationResult<PredictionOf<T>, RequestOf<T>>;

/// Predictions of a batch and the requests (given or default) with their target.
struct Prepared<T: TaskModel> {
    task: T::Task,
    predictions: Vec<PredictionOf<T>>,
    requests: Vec<RequestOf<T>>,
}

impl<T: TaskModel> Prepared<T> {
    fn new(model: &T, inputs: &Inputs, requested: &Option<Vec<RequestOf<T>>>) -> Result<Self> {
        Self::new_tapped(model, inputs, requested, None)
    }

    /// [`Prepared::new`], handing the forward's output to `tap` once predicted.
    fn new_tapped(
        model: &T,
        inputs: &Inputs,
        requested: &Option<Vec<RequestOf<T>>>,
        tap: Option<OutputTap<'_, T>>,
    ) -> Result<Self> {
        if inputs.is_empty() {
            return Err(LumenError::InvalidArgument("no images to explain".into()));
        }
        model.model().check_input_shape(&inputs.tensor)?;
        let output = {
            let _forward = profile::stage_on(stages::FORWARD, model.device());
            model.model().forward(inputs.tensor.clone())
        };
        let prepared = Self::from_output(model.task(), &output, requested, &inputs.names)?;
        if let Some(tap) = tap {
            tap(&output)?;
        }
        Ok(prepared)
    }

    /// Predictions from an output, and the requests: those given, else each
    /// prediction's default. Non-finite predictions fail first, naming their `names`:
    /// a default request read from one is itself broken (a detector's NaN box).
    fn from_output(
        task: T::Task,
        output: &<T::Model as ExplainableModel>::Output,
        requested: &Option<Vec<RequestOf<T>>>,
        names: &[String],
    ) -> Result<Self> {
        let predictions = task.predict(output)?;
        check_predictions_finite(&task, &predictions, names)?;
        let requests = match requested {
            None => predictions
                .iter()
                .map(|p| task.default_request(p))
                .collect(),
            Some(r) => {
                check_target_count(requested, predictions.len())?;
                r.clone()
            }
        };
        for request in &requests {
            task.check_request(request)?;
        }
        let requests = requests
            .into_iter()
            .zip(&predictions)
            .map(|(request, prediction)| task.resolve(request, prediction))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            task,
            predictions,
            requests,
        })
    }

    fn target(&self) -> Box<dyn lumen_core::Target<<T::Model as ExplainableModel>::Output>> {
        self.task.target(&self.requests)
    }

    /// Consecutive chunks' predictions and requests as one batch's.
    fn join(parts: Vec<Self>) -> Result<Self> {
        let mut parts = parts.into_iter();
        let mut all = parts
            .next()
            .ok_or_else(|| LumenError::InvalidArgument("no images to explain".into()))?;
        for part in parts {
            all.predictions.extend(part.predictions);
            all.requests.extend(part.requests);
        }
        Ok(all)
    }

    fn title(&self, i: usize) -> String {
        format!(
            "{} | explaining {}",
            self.task.describe_prediction(&self.predictions[i]),
            self.task.describe_request(&self.requests[i])
        )
    }
}

/// The default target (each image's prediction) decided from the output of the
/// method's own pass: for methods that score only the input batch itself
/// ([`Method::scores_the_input_itself`]), this saves the forward that would predict
/// first. The prediction is read from the same forward, so it is the one a separate
/// forward would give.
struct PredictedTarget<'t, T: TaskModel> {
    names: Vec<String>,
    task: std::cell::RefCell<Option<T::Task>>,
    resolved: std::cell::RefCell<Option<Prepared<T>>>,
    /// Handed the output the prediction was read from, once.
    tap: std::cell::RefCell<Option<OutputTap<'t, T>>>,
}

pub(crate) type OutputOf<T> = <<T as TaskModel>::Model as ExplainableModel>::Output;

/// What a caller derives from each pass's forward output besides the predictions
/// (segmentation's uncertainty maps), called once per pass in pass order with the
/// output the predictions were read from: no forward of its own. The output may carry
/// the method's autodiff graph; a tap detaches what it keeps.
pub(crate) type OutputTap<'t, T> = &'t mut dyn FnMut(&OutputOf<T>) -> Result<()>;

impl<'t, T: TaskModel> PredictedTarget<'t, T> {
    fn new(model: &T, names: &[String], tap: Option<OutputTap<'t, T>>) -> Self {
        Self {
            names: names.to_vec(),
            task: std::cell::RefCell::new(Some(model.task())),
            resolved: std::cell::RefCell::new(None),
            tap: std::cell::RefCell::new(tap),
        }
    }
}

impl<T: TaskModel> lumen_core::Target<OutputOf<T>> for PredictedTarget<'_, T> {
    fn score(&self, output: &OutputOf<T>) -> Result<Tensor<1>> {
        let mut resolved = self.resolved.borrow_mut();
        if resolved.is_none() {
            let _stage = profile::stage(stages::POSTPROCESS);
            let task = self.task.borrow_mut().take().ok_or_else(|| {
                LumenError::InvalidArgument("the prediction failed at an earlier score".into())
            })?;
            *resolved = Some(Prepared::from_output(task, output, &None, &self.names)?);
            if let Some(tap) = self.tap.borrow_mut().take() {
                tap(output)?;
            }
        }
        let prepared = resolved.as_ref().expect("resolved above");
        prepared.target().score(output)
    }

    fn for_images(&self, images: &[usize]) -> Box<dyn lumen_core::Target<OutputOf<T>>> {
        match &*self.resolved.borrow() {
            Some(prepared) => prepared.target().for_images(images),
            None => Box::new(Unresolved),
        }
    }
}

/// What a [`PredictedTarget`] hands out before it has seen the input's output: an
/// error at the first score, naming the broken promise.
struct Unresolved;

impl<O> lumen_core::Target<O> for Unresolved {
    fn score(&self, _: &O) -> Result<Tensor<1>> {
        Err(LumenError::InvalidArgument(
            "this method scored derived images before the input itself, although it says it \
             scores only the input (Method::scores_the_input_itself): give explicit targets"
                .into(),
        ))
    }

    fn for_images(&self, _: &[usize]) -> Box<dyn lumen_core::Target<O>> {
        Box::new(Unresolved)
    }
}

pub(crate) fn method_options<T: TaskModel>(model: &T, options: &MethodOptions) -> MethodOptions {
    MethodOptions {
        mean: model.data_config().mean,
        std: model.data_config().std,
        ..options.clone()
    }
}

fn host_maps(heatmaps: &lumen_core::Heatmaps) -> Result<Vec<Map>> {
    let _stage = profile::stage(stages::POSTPROCESS);
    Ok(split_maps(heatmaps)?
        .into_iter()
        .map(|m| m.normalized())
        .collect())
}

/// Fails, naming the images, when a prediction is not finite ([`Task::is_finite`]):
/// checked before anything is explained or counted, since a broken output reads as
/// a plausible answer (a detector's NaN scores as "nothing detected").
pub(crate) fn check_predictions_finite<K: Task>(
    task: &K,
    predictions: &[K::Prediction],
    names: &[String],
) -> Result<()> {
    name_non_finite(names, |i| {
        predictions.get(i).is_some_and(|p| !task.is_finite(p))
    })
}

/// Fails, naming the images, when a prediction's scores or a map hold NaN or infinite
/// values; checked before any figure is drawn, since such an image draws as a blank,
/// plausible figure (a ReLU in a CAM turns NaN into 0).
fn check_finite<K: Task>(
    task: &K,
    predictions: &[K::Prediction],
    maps: &[Map],
    names: &[String],
) -> Result<()> {
    name_non_finite(names, |i| {
        predictions.get(i).is_some_and(|p| !task.is_finite(p))
            || maps
                .get(i)
                .is_some_and(|m| m.values.iter().any(|v| !v.is_finite()))
    })
}

/// [`LumenError::NonFinite`] naming the images `i` for which `broken(i)` holds, if any.
pub(crate) fn name_non_finite(names: &[String], broken: impl Fn(usize) -> bool) -> Result<()> {
    let images: Vec<String> = (0..names.len())
        .filter(|&i| broken(i))
        .map(|i| names[i].clone())
        .collect();
    if images.is_empty() {
        Ok(())
    } else {
        Err(LumenError::NonFinite { images })
    }
}

/// The raw (unnormalised) map of every image of `heatmaps`, on the host.
pub(crate) fn raw_maps(heatmaps: &lumen_core::Heatmaps) -> Result<Vec<Map>> {
    let _stage = profile::stage(stages::POSTPROCESS);
    split_maps(heatmaps)
}

/// One host map per image of `heatmaps`.
fn split_maps(heatmaps: &lumen_core::Heatmaps) -> Result<Vec<Map>> {
    let [b, h, w] = heatmaps.dims();
    let values = heatmaps.to_vec()?;
    Ok((0..b)
        .map(|i| {
            Map::new(
                values[i * h * w..(i + 1) * h * w].to_vec(),
                w as u32,
                h as u32,
            )
        })
        .collect())
}

/// Image `i` of a `[B,3,H,W]` attribution, summed over channels (signed).
fn signed_map(attributions: &Tensor<4>, i: usize) -> Result<Map> {
    let [_, _, h, w] = attributions.dims();
    let summed = attributions
        .clone()
        .narrow(0, i, 1)
        .sum_dim(1)
        .reshape([h * w]);
    Ok(Map::new(to_host(summed)?, w as u32, h as u32))
}

/// A method name as a file-name part: `gradcam++` -> `gradcampp`.
fn file_part(method: &str) -> String {
    method.replace('+', "p")
}

/// Explain every image of a batch with one method (one batched method call) and, with
/// `save_dir`, write one figure per image: original | heatmap | overlay.
pub fn explain_prediction<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    options: &ExplainOptions<RequestOf<T>>,
) -> Result<(Explanation, Vec<ResultOf<T>>)>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    options.validate()?;
    let method = model.method(
        &options.method,
        &method_options(model, &options.method_options),
    )?;
    explain_with(model, inputs, method.as_ref(), options)
}

/// [`explain_prediction`] with a method already built (a user's own [`Method`] too).
pub fn explain_with<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    options: &ExplainOptions<RequestOf<T>>,
) -> Result<(Explanation, Vec<ResultOf<T>>)>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    let (explanation, explained) = explain_and_draw(model, inputs, method, options)?;
    Ok((
        explanation,
        explained.into_iter().map(|e| e.result).collect(),
    ))
}

/// One explained image with what its figures are drawn from (kept by the cache).
pub(crate) struct Drawn<R> {
    pub(crate) result: R,
    pub(crate) title: String,
    pub(crate) signed: Option<Map>,
}

/// [`explain_with`], keeping each image's figure title and signed map; through the
/// options' cache when there is one.
fn explain_and_draw<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    options: &ExplainOptions<RequestOf<T>>,
) -> Result<(Explanation, Vec<Drawn<ResultOf<T>>>)>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    match options.cache.as_deref() {
        Some(cache) => crate::cached::explain_through_cache(model, inputs, method, options, cache),
        None => explain_and_draw_uncached(model, inputs, method, options, None),
    }
}

/// [`explain_and_draw`] without a cache.
pub(crate) fn explain_and_draw_uncached<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    options: &ExplainOptions<RequestOf<T>>,
    tap: Option<OutputTap<'_, T>>,
) -> Result<(Explanation, Vec<Drawn<ResultOf<T>>>)> {
    let layer = method.layer(model.model());
    if let Some(layer) = &layer {
        model.model().check_layers(layer)?;
    }
    let (prepared, explanation) = predict_and_explain(model, inputs, method, options, tap)?;
    let name = method.name();
    let task = model.task();
    let maps = host_maps(&explanation.heatmaps)?;
    check_finite(&task, &prepared.predictions, &maps, &inputs.names)?;
    let mut explained = Vec::with_capacity(inputs.len());
    for (i, map) in maps.into_iter().enumerate() {
        let signed = match (options.polarity, &explanation.attributions) {
            (true, Some(attributions)) => Some(signed_map(attributions, i)?),
            _ => None,
        };
        let result = ExplanationResult {
            image: inputs.names[i].clone(),
            prediction: prepared.predictions[i].clone(),
            target: prepared.requests[i].clone(),
            method: name.clone(),
            layer: layer.clone(),
            convergence_delta: explanation.convergence_delta.as_ref().map(|d| d[i]),
            paths: vec![],
            heatmap: map,
        };
        let title = prepared.title(i);
        explained.push(Drawn {
            result,
            title,
            signed,
        });
    }
    draw_explained(&task, inputs, &mut explained, options)?;
    Ok((explanation, explained))
}

/// With `save_dir`, each explained image's figures, drawn in parallel; their paths go
/// to the results.
pub(crate) fn draw_explained<K: Task, Q>(
    task: &K,
    inputs: &Inputs,
    explained: &mut [Drawn<ExplanationResult<K::Prediction, K::Request>>],
    options: &ExplainOptions<Q>,
) -> Result<()> {
    let Some(style) = FigureStyle::of(options) else {
        return Ok(());
    };
    // Outlines are drawn here (a task is not shared across threads), the figures on
    // every core.
    let jobs: Vec<_> = explained
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let r = &d.result;
            let original = outlined(task, &r.prediction, &r.target, &inputs.originals[i]);
            // A CAM's layer is part of what the figure shows: any of a ResNet's 170
            // points may be chosen.
            let title = match &r.layer {
                Some(layer) => format!("{layer} | {}", d.title),
                None => d.title.clone(),
            };
            (
                r.image.as_str(),
                r.method.as_str(),
                &r.heatmap,
                title,
                original,
                d.signed.as_ref(),
            )
        })
        .collect();
    let paths = crate::figures::draw_in_parallel(&style, jobs)?;
    for (d, paths) in explained.iter_mut().zip(paths) {
        d.result.paths = paths;
    }
    Ok(())
}

/// Images per pass through the model in the facade's calls (predicting and explaining
/// a batch): the caller's choice, or sized to the input and the model like the
/// methods' internal batches ([`lumen_core::default_batch_rows_for`]: 32 at 224 px on
/// a ResNet; a batch of up to 8 goes whole). `input` must have passed `check_input_shape`.
pub(crate) fn images_per_pass<M: ExplainableModel>(
    model: &M,
    input: &Tensor<4>,
    chosen: Option<usize>,
) -> usize {
    match chosen {
        Some(n) => n.max(1),
        None => lumen_core::default_batch_rows_for(model, input),
    }
}

/// The predictions and the method's explanation of `inputs`, [`images_per_pass`]
/// images at a time: a folder given to `explain` holds one pass's activations, not
/// every image's. Seeded methods draw per image from its own values, so the chunks
/// change no result.
fn predict_and_explain<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    options: &ExplainOptions<RequestOf<T>>,
    mut tap: Option<OutputTap<'_, T>>,
) -> Result<(Prepared<T>, Explanation)> {
    check_target_count(&options.targets, inputs.len())?;
    let parts = per_pass(model, inputs, options.batch_size, |chunk, positions| {
        let targets = targets_at(&options.targets, positions);
        let tap = tap.as_mut().map(|tap| &mut **tap as OutputTap<'_, T>);
        predict_and_explain_once(model, chunk, method, &targets, tap)
    })?;
    let (prepared, explanations): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok((
        Prepared::join(prepared)?,
        Explanation::concat(explanations)?,
    ))
}

/// `work` on each chunk of [`images_per_pass`] images of `inputs` with their positions
/// (the whole batch, not copied, when it fits one pass), after checking the input.
fn per_pass<T: TaskModel, R>(
    model: &T,
    inputs: &Inputs,
    batch_size: Option<usize>,
    mut work: impl FnMut(&Inputs, &[usize]) -> Result<R>,
) -> Result<Vec<R>> {
    model.model().check_input_shape(&inputs.tensor)?;
    let rows = images_per_pass(model.model(), &inputs.tensor, batch_size);
    if rows >= inputs.len() {
        let all: Vec<usize> = (0..inputs.len()).collect();
        return Ok(vec![work(inputs, &all)?]);
    }
    lumen_core::map_chunks(inputs.len(), rows, |range| {
        let positions: Vec<usize> = range.collect();
        work(&inputs.select(&positions)?, &positions)
    })
}

/// [`predict_and_explain`] in one pass.
fn predict_and_explain_once<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    targets: &Option<Vec<RequestOf<T>>>,
    tap: Option<OutputTap<'_, T>>,
) -> Result<(Prepared<T>, Explanation)> {
    // The method's passes are stages of their own: METHOD is the rest of its work.
    Ok(
        if targets.is_none() && method.scores_the_input_itself() && !inputs.is_empty() {
            let target = PredictedTarget::new(model, &inputs.names, tap);
            let explanation = {
                let _stage = profile::stage_on(stages::METHOD, model.device());
                method.explain(model.model(), inputs.tensor.clone(), &target)?
            };
            let tap = target.tap.into_inner();
            match target.resolved.into_inner() {
                Some(prepared) => (prepared, explanation),
                // The method never scored (it needs no target): predict on the side.
                None => (
                    Prepared::new_tapped(model, inputs, &None, tap)?,
                    explanation,
                ),
            }
        } else {
            let prepared = Prepared::new_tapped(model, inputs, targets, tap)?;
            let explanation = {
                let _stage = profile::stage_on(stages::METHOD, model.device());
                method.explain(
                    model.model(),
                    inputs.tensor.clone(),
                    prepared.target().as_ref(),
                )?
            };
            (prepared, explanation)
        },
    )
}

/// The file stem of an image's figures and raw map: `cat_gradcampp`.
pub(crate) fn figure_stem(image: &str, method: &str) -> String {
    format!("{image}_{}", file_part(method))
}

/// One image's comparison across methods.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonResult<P = ClassPrediction, R = usize> {
    /// Input name.
    pub image: String,
    /// What the model predicted.
    pub prediction: P,
    /// What was explained.
    pub target: R,
    /// Methods in order.
    pub methods: Vec<String>,
    /// Figure written.
    pub path: Option<PathBuf>,
    /// Heatmaps per method.
    #[serde(skip)]
    pub heatmaps: Vec<Map>,
}

/// A cache entry of a [`TaskModel`]'s explanation.
pub(crate) type EntryOf<T> = CachedExplanation<PredictionOf<T>, RequestOf<T>>;

/// An image's prediction, request and figure title.
type Described<T> = (PredictionOf<T>, RequestOf<T>, String);

/// The comparison type of a [`TaskModel`].
pub type ComparisonOf<T> = ComparisonResult<PredictionOf<T>, RequestOf<T>>;

/// Explain a batch with several methods and draw one comparison figure per image.
/// Each method is built once; one-pass CAMs on the same layer share a single
/// forward/backward. With the options' cache, each image's map of each method is taken
/// from it where it holds one; the missing ones are computed together (the images
/// missing any, the methods missing on any of them) and stored.
pub fn compare_methods<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    methods: &[String],
    options: &ExplainOptions<RequestOf<T>>,
    layout: Layout,
) -> Result<Vec<ComparisonOf<T>>>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    options.validate()?;
    if methods.is_empty() {
        return Err(LumenError::InvalidArgument("no methods to compare".into()));
    }
    let method_options = method_options(model, &options.method_options);
    let built: Vec<Box<dyn Method<T::Model>>> = methods
        .iter()
        .map(|name| model.method(name, &method_options))
        .collect::<Result<_>>()?;
    for layer in built.iter().filter_map(|m| m.layer(model.model())) {
        model.model().check_layers(&layer)?;
    }
    if inputs.is_empty() {
        return Err(LumenError::InvalidArgument("no images to explain".into()));
    }
    let n = inputs.len();
    check_target_count(&options.targets, n)?;
    // keys[m][i]: method m on image i (only with a cache).
    let keys: Option<Vec<Vec<String>>> = match options.cache.as_deref() {
        Some(cache) => {
            model.model().check_input_shape(&inputs.tensor)?;
            let requested = requested_keys(&options.targets, n)?;
            let rows = input_rows(&inputs.tensor)?;
            Some(
                built
                    .iter()
                    .map(|m| {
                        let settings = format!(
                            "compare\nmethod {}\nlayer {:?}\noptions {method_options:?}\npreprocessing {:?}",
                            m.name(),
                            m.layer(model.model()),
                            model.data_config()
                        );
                        image_target_keys(cache, &settings, &rows, &requested)
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let mut entries: Vec<Vec<Option<EntryOf<T>>>> = match (&keys, options.cache.as_deref()) {
        (Some(keys), Some(cache)) => keys
            .iter()
            .map(|per_image| per_image.iter().map(|key| cache.get(key)).collect())
            .collect(),
        _ => built.iter().map(|_| vec![None; n]).collect(),
    };
    let missing_images: Vec<usize> = (0..n)
        .filter(|&i| entries.iter().any(|per_image| per_image[i].is_none()))
        .collect();
    let missing_methods: Vec<usize> = (0..built.len())
        .filter(|&m| missing_images.iter().any(|&i| entries[m][i].is_none()))
        .collect();
    // Each image's prediction, request and title: fresh for the images computed now.
    let mut described: Vec<Option<Described<T>>> = vec![None; n];
    if !missing_images.is_empty() {
        let selected;
        let subset = if missing_images.len() == n {
            inputs
        } else {
            selected = inputs.select(&missing_images)?;
            &selected
        };
        let to_run: Vec<&dyn Method<T::Model>> =
            missing_methods.iter().map(|&m| built[m].as_ref()).collect();
        let (prepared, maps) = predict_and_map(
            model,
            subset,
            &targets_at(&options.targets, &missing_images),
            &to_run,
            options.batch_size,
        )?;
        for (k, &i) in missing_images.iter().enumerate() {
            described[i] = Some((
                prepared.predictions[k].clone(),
                prepared.requests[k].clone(),
                prepared.title(k),
            ));
        }
        for (maps, &m) in maps.into_iter().zip(&missing_methods) {
            for (heatmap, (k, &i)) in maps.into_iter().zip(missing_images.iter().enumerate()) {
                if entries[m][i].is_some() {
                    continue;
                }
                let entry = CachedExplanation {
                    prediction: prepared.predictions[k].clone(),
                    target: prepared.requests[k].clone(),
                    layer: built[m].layer(model.model()),
                    convergence_delta: None,
                    title: prepared.title(k),
                    heatmap,
                    signed: None,
                    attributions: None,
                };
                if let (Some(cache), Some(keys)) = (options.cache.as_deref(), &keys) {
                    cache.put(&keys[m][i], &entry)?;
                }
                entries[m][i] = Some(entry);
            }
        }
    }
    let task = model.task();
    let mut results = vec![];
    // The picture of each figure with its outlines, drawn here (a task is not shared
    // across threads); the figures are drawn and encoded on every core below.
    let mut originals = vec![];
    for i in 0..n {
        let (prediction, request, description) = match described[i].take() {
            Some(fresh) => fresh,
            None => {
                let first = entries[0][i]
                    .as_ref()
                    .expect("an image without a miss has entries");
                (
                    first.prediction.clone(),
                    first.target.clone(),
                    first.title.clone(),
                )
            }
        };
        let heatmaps: Vec<Map> = entries
            .iter()
            .map(|per_image| {
                per_image[i]
                    .as_ref()
                    .expect("every map was computed or reused")
                    .heatmap
                    .clone()
            })
            .collect();
        if options.save_dir.is_some() {
            originals.push((
                format!("{}: {description}", inputs.names[i]),
                outlined(&task, &prediction, &request, &inputs.originals[i]),
            ));
        }
        results.push(ComparisonResult {
            image: inputs.names[i].clone(),
            prediction,
            target: request,
            methods: methods.to_vec(),
            path: None,
            heatmaps,
        });
    }
    if let Some(dir) = &options.save_dir {
        use rayon::prelude::*;
        let notes = caution_lines(&options.cautions, methods);
        let (colormap, alpha) = (options.colormap, options.alpha);
        // (A prediction need not be shared across threads: the jobs borrow the maps.)
        let jobs: Vec<(&str, &[Map], String, image::RgbImage)> = results
            .iter()
            .zip(originals)
            .map(|(r, (title, original))| {
                (r.image.as_str(), r.heatmaps.as_slice(), title, original)
            })
            .collect();
        let paths: Vec<PathBuf> = jobs
            .into_par_iter()
            .map(|(image, heatmaps, title, original)| {
                let _stage = profile::stage(stages::ENCODE);
                let maps: Vec<(String, Map)> = methods
                    .iter()
                    .cloned()
                    .zip(heatmaps.iter().cloned())
                    .collect();
                let figure = with_notes(
                    &comparison_figure(&original, &maps, colormap, alpha, layout, &title),
                    &notes,
                );
                save_png(&figure, dir, &format!("{image}_comparison.png"))
            })
            .collect::<Result<_>>()?;
        for (result, path) in results.iter_mut().zip(paths) {
            result.path = Some(path);
        }
    }
    Ok(results)
}

/// The predictions of `inputs` and each method's maps, [`images_per_pass`] images at a
/// time (the comparison's [`predict_and_explain`]).
fn predict_and_map<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    targets: &Option<Vec<RequestOf<T>>>,
    methods: &[&dyn Method<T::Model>],
    batch_size: Option<usize>,
) -> Result<(Prepared<T>, Vec<Vec<Map>>)> {
    let parts = per_pass(model, inputs, batch_size, |chunk, positions| {
        let prepared = Prepared::new(model, chunk, &targets_at(targets, positions))?;
        let maps = method_maps(model, chunk, methods, &prepared)?;
        Ok((prepared, maps))
    })?;
    let mut maps: Vec<Vec<Map>> = vec![vec![]; methods.len()];
    let mut prepared = vec![];
    for (part, part_maps) in parts {
        for (all, chunk_maps) in maps.iter_mut().zip(part_maps) {
            all.extend(chunk_maps);
        }
        prepared.push(part);
    }
    Ok((Prepared::join(prepared)?, maps))
}

/// The host maps of `methods` on `inputs` for the prepared targets, one list per
/// method: one-pass CAMs on the same layer share one pass (a multi-layer spec runs on
/// its own).
fn method_maps<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    methods: &[&dyn Method<T::Model>],
    prepared: &Prepared<T>,
) -> Result<Vec<Vec<Map>>> {
    let target = prepared.target();
    let cams: Vec<(usize, &'static dyn lumen_methods::CamMap, String)> = methods
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i, one_pass_cam(&m.name())?, m.layer(model.model())?)))
        .filter(|(_, _, layer)| lumen_core::layer_list(layer).len() == 1)
        .collect();
    let mut per_method: Vec<Option<Vec<Map>>> = vec![None; methods.len()];
    let mut layers: Vec<String> = cams.iter().map(|c| c.2.clone()).collect();
    layers.sort();
    layers.dedup();
    for layer in &layers {
        let group: Vec<_> = cams.iter().filter(|c| &c.2 == layer).collect();
        let kinds: Vec<&dyn lumen_methods::CamMap> = group.iter().map(|c| c.1).collect();
        let maps = cams_from_one_pass(
            model.model(),
            inputs.tensor.clone(),
            target.as_ref(),
            layer,
            &kinds,
        )?;
        for (c, heatmaps) in group.iter().zip(maps) {
            per_method[c.0] = Some(host_maps(&heatmaps)?);
        }
    }
    for (i, method) in methods.iter().enumerate() {
        if per_method[i].is_none() {
            let explanation =
                method.explain(model.model(), inputs.tensor.clone(), target.as_ref())?;
            per_method[i] = Some(host_maps(&explanation.heatmaps)?);
        }
    }
    let per_method: Vec<Vec<Map>> = per_method
        .into_iter()
        .map(|m| m.expect("every method ran"))
        .collect();
    for maps in &per_method {
        check_finite(&prepared.task, &prepared.predictions, maps, &inputs.names)?;
    }
    Ok(per_method)
}

/// Cautions written under a figure per method at most; the rest are counted.
pub const CAUTIONS_PER_METHOD: usize = 2;

/// The lines written under a figure for `methods`: the first cautions of each, named
/// by method, and how many more the verdicts hold.
pub(crate) fn caution_lines(
    cautions: &BTreeMap<String, Vec<String>>,
    methods: &[String],
) -> Vec<String> {
    let mut lines = vec![];
    for m in methods {
        let Some(reasons) = cautions.get(m) else {
            continue;
        };
        for reason in reasons.iter().take(CAUTIONS_PER_METHOD) {
            lines.push(format!("caution, {m}: {reason}"));
        }
        if reasons.len() > CAUTIONS_PER_METHOD {
            lines.push(format!(
                "caution, {m}: and {} more (see the verdicts)",
                reasons.len() - CAUTIONS_PER_METHOD
            ));
        }
    }
    lines
}

/// What a batch over many files produced: a result per readable image, and a failure
/// per file that could not be read (the others were explained regardless).
#[derive(Clone, Debug, Serialize)]
pub struct BatchOutcome<R> {
    /// One result per explained image, in input order.
    pub results: Vec<R>,
    /// The files that could not be read, with the reason.
    pub failures: Vec<InputFailure>,
    /// Results taken from the cache instead of the model.
    pub reused: usize,
}

/// Explain image files in batches of `batch_size`, writing one figure per image named
/// after its file (unique names: `a.png` and `a.jpg` do not overwrite each other), a
/// grid of the first [`BATCH_GRID_LIMIT`] overlays (`batch_grid.png`) and an index
/// (`index.jsonl`). A file that cannot be read is reported in the outcome and the
/// others go on. `progress` is called with the number of files done.
pub fn explain_batch<T: TaskModel, P: AsRef<Path>>(
    model: &T,
    paths: &[P],
    batch_size: usize,
    options: &ExplainOptions<RequestOf<T>>,
    progress: impl FnMut(usize),
) -> Result<BatchOutcome<ResultOf<T>>>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    let run = BatchRun {
        batch_size,
        ..BatchRun::default()
    };
    explain_batch_with(model, paths, &run, options, progress)
}

/// How a batch is run: images per forward, the shard of the inputs it explains, a
/// cache of results and whether the maps are written as `.npy`.
#[derive(Debug)]
pub struct BatchRun {
    /// Images per forward/backward.
    pub batch_size: usize,
    /// Explain only this shard of the inputs (see [`crate::scale`]).
    pub shard: Option<Shard>,
    /// Take results from (and store them in) this cache.
    pub cache: Option<ExplanationCache>,
    /// Write each image's map (scaled to [0, 1], as drawn) as `{image}_{method}.npy`.
    pub save_raw: bool,
    /// Keep each result's heatmap (and a segmentation's per-pixel classes) in the
    /// outcome. Off by default: over a large folder they would grow memory by a map per
    /// image (about 70 KB at 128 px, 200 KB at 224), while the figures, the index and
    /// the `.npy` maps of `save_raw` already hold them.
    pub keep_maps: bool,
}

impl Default for BatchRun {
    fn default() -> Self {
        Self {
            batch_size: 8,
            shard: None,
            cache: None,
            save_raw: false,
            keep_maps: false,
        }
    }
}

/// The part of a cache key that is not the input file: everything else a result
/// depends on, the resize's implementation included.
fn cache_settings<T: TaskModel>(model: &T, options: &ExplainOptions<RequestOf<T>>) -> String {
    format!(
        "method {}\noptions {:?}\ntarget predicted\npreprocessing {:?} ({})\npolarity {}",
        options.method,
        method_options(model, &options.method_options),
        model.data_config(),
        lumen_core::input::RESIZE_VERSION,
        options.polarity
    )
}

/// [`explain_batch`] with a shard, a cache and raw maps. With `shard`, only its slice
/// of `paths` is explained (names stay unique over all of `paths`), and the index is
/// the shard's (`index.shard-IIII-of-NNNN.jsonl`), for [`crate::merge_shards`].
pub fn explain_batch_with<T: TaskModel, P: AsRef<Path>>(
    model: &T,
    paths: &[P],
    run: &BatchRun,
    options: &ExplainOptions<RequestOf<T>>,
    mut progress: impl FnMut(usize),
) -> Result<BatchOutcome<ResultOf<T>>>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    if options.targets.is_some() {
        return Err(LumenError::InvalidArgument(
            "a batch over many files explains each image's prediction; give no targets".into(),
        ));
    }
    if run.batch_size == 0 {
        return Err(LumenError::InvalidArgument(
            "batch size must be at least 1".into(),
        ));
    }
    if options.cache.is_some() {
        return Err(LumenError::InvalidArgument(
            "a batch keeps its cache in BatchRun::cache (its entries are keyed by the files' \
             bytes): leave ExplainOptions::cache empty"
                .into(),
        ));
    }
    if run.save_raw && options.save_dir.is_none() {
        return Err(LumenError::InvalidArgument(
            "raw maps are written beside the figures: give an output folder".into(),
        ));
    }
    options.validate()?;
    let method = model.method(
        &options.method,
        &method_options(model, &options.method_options),
    )?;
    let task = model.task();
    let names = unique_names(paths);
    let range = run
        .shard
        .map_or(0..paths.len(), |s| s.range(paths.len(), run.batch_size));
    let settings = cache_settings(model, options);
    // Figures are drawn by worker threads while this thread runs the model on the
    // next batch; the model's own pass draws none.
    let style = FigureStyle::of(options);
    // Each read batch is predicted and explained whole: --batch-size is the pass.
    let quiet = ExplainOptions {
        save_dir: None,
        batch_size: Some(run.batch_size),
        ..options.clone()
    };
    // The index is written as images finish and the results kept lean (see
    // `BatchRun::keep_maps`): memory stays flat however many files the run has.
    let mut index = options
        .save_dir
        .as_ref()
        .map(|dir| IndexWriter::create(dir, run.shard))
        .transpose()?;
    let mut reused = 0;
    let mut results = Vec::with_capacity(range.len());
    let mut failures = vec![];
    let mut grid_slots = 0;
    let mut done = 0;
    let thumbnails = std::thread::scope(|scope| -> Result<Vec<(usize, Panel)>> {
        let workers = style
            .clone()
            // Two batches of figures queued at most; a batch is never more images than
            // the run has (the queue's slots are allocated up front).
            .map(|style| {
                let batch = run.batch_size.min(range.len()).max(1);
                FigureWorkers::start(scope, style, figure_threads(), 2 * batch)
            });
        // An image's figures (and its grid panel while the grid has room) to the workers.
        let mut draw = |position: usize,
                        result: &mut ResultOf<T>,
                        title: String,
                        original: image::RgbImage,
                        signed: Option<Map>|
         -> Result<()> {
            let (Some(workers), Some(style)) = (&workers, &style) else {
                return Ok(());
            };
            result.paths = style.paths(&result.image, &result.method, signed.is_some());
            let grid_title = (grid_slots < BATCH_GRID_LIMIT).then(|| {
                grid_slots += 1;
                format!("{} {}", result.image, task.describe_request(&result.target))
            });
            workers.submit(FigureJob {
                position,
                image: result.image.clone(),
                method: result.method.clone(),
                heatmap: result.heatmap.clone(),
                title,
                original,
                signed,
                grid_title,
            })
        };
        for start in range.clone().step_by(run.batch_size) {
            let positions = start..(start + run.batch_size).min(range.end);
            let chunk = &paths[positions.clone()];
            let chunk_names = &names[positions.clone()];
            // Keys from the files' bytes; an unreadable file gets none and is reported
            // by the reader below.
            let keys: Vec<Option<String>> = chunk
                .iter()
                .map(|path| {
                    let cache = run.cache.as_ref()?;
                    let bytes = std::fs::read(path).ok()?;
                    Some(cache.key(&settings, &bytes))
                })
                .collect();
            let cached: Vec<Option<CachedExplanation<_, _>>> = keys
                .iter()
                .map(|key| run.cache.as_ref()?.get(key.as_ref()?))
                .collect();
            let (hit, miss): (Vec<usize>, Vec<usize>) =
                (0..chunk.len()).partition(|&j| cached[j].is_some());
            let mut explained: Vec<Option<(ResultOf<T>, bool)>> =
                (0..chunk.len()).map(|_| None).collect();
            let mut chunk_failures = vec![];
            let pick = |js: &[usize]| -> (Vec<&P>, Vec<String>) {
                (
                    js.iter().map(|&j| &chunk[j]).collect(),
                    js.iter().map(|&j| chunk_names[j].clone()).collect(),
                )
            };
            // Images whose explanation is not finite are reported like unreadable files
            // and the rest of the chunk is explained again without them.
            let mut todo = miss;
            while !todo.is_empty() {
                let (todo_paths, todo_names) = pick(&todo);
                let read = Inputs::read_named(model, &todo_paths, &todo_names)?;
                chunk_failures.extend(read.failures);
                let Some(inputs) = read.inputs else {
                    break;
                };
                let drawn = match explain_and_draw(model, &inputs, method.as_ref(), &quiet) {
                    Ok((_, drawn)) => drawn,
                    Err(LumenError::NonFinite { images }) => {
                        for name in &images {
                            if let Some(k) = todo_names.iter().position(|n| n == name) {
                                chunk_failures.push(InputFailure {
                                    path: todo_paths[k].as_ref().to_path_buf(),
                                    error: "its explanation is NaN or infinite (the model's \
                                            output or its gradients overflowed)"
                                        .into(),
                                });
                            }
                        }
                        // Unreadable files were reported above and are not read again.
                        todo.retain(|&j| {
                            inputs.names.contains(&chunk_names[j])
                                && !images.contains(&chunk_names[j])
                        });
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                for (d, original) in drawn.into_iter().zip(&inputs.originals) {
                    let k = todo_names
                        .iter()
                        .position(|n| *n == d.result.image)
                        .expect("every explained image is one of the chunk's, by its unique name");
                    let j = todo[k];
                    if let (Some(cache), Some(key)) = (&run.cache, &keys[j]) {
                        cache.put(
                            key,
                            &CachedExplanation {
                                prediction: d.result.prediction.clone(),
                                target: d.result.target.clone(),
                                layer: d.result.layer.clone(),
                                convergence_delta: d.result.convergence_delta,
                                title: d.title.clone(),
                                heatmap: d.result.heatmap.clone(),
                                signed: d.signed.clone(),
                                attributions: None,
                            },
                        )?;
                    }
                    let mut result = d.result;
                    let original = outlined(&task, &result.prediction, &result.target, original);
                    draw(start + j, &mut result, d.title, original, d.signed)?;
                    explained[j] = Some((result, false));
                }
                break;
            }
            for &j in &hit {
                let Some(entry) = cached[j].clone() else {
                    continue;
                };
                let mut result = ExplanationResult {
                    image: chunk_names[j].clone(),
                    prediction: entry.prediction,
                    target: entry.target,
                    method: method.name(),
                    layer: entry.layer,
                    convergence_delta: entry.convergence_delta,
                    paths: vec![],
                    heatmap: entry.heatmap,
                };
                if style.is_some() {
                    // Decoded again only to draw the figures: no tensor, no model.
                    let original = match lumen_core::read_image(&chunk[j]) {
                        Ok(read) => outlined(
                            &task,
                            &result.prediction,
                            &result.target,
                            &model.data_config().resize_and_crop(&read.image)?,
                        ),
                        // A bad setting (the decoding limit's variable) is not the file's fault.
                        Err(error @ LumenError::InvalidArgument(_)) => return Err(error),
                        Err(error) => {
                            chunk_failures.push(InputFailure {
                                path: chunk[j].as_ref().to_path_buf(),
                                error: match error {
                                    LumenError::Image { message, .. } => message,
                                    other => other.to_string(),
                                },
                            });
                            continue;
                        }
                    };
                    draw(start + j, &mut result, entry.title, original, entry.signed)?;
                }
                explained[j] = Some((result, true));
            }
            for (j, slot) in explained.into_iter().enumerate() {
                let position = start + j;
                let path = chunk[j].as_ref();
                let mut line = IndexLine {
                    position,
                    total: paths.len(),
                    file: path.to_path_buf(),
                    result: None,
                    raw: None,
                    error: None,
                    cached: false,
                };
                match slot {
                    Some((mut result, cached)) => {
                        if let (true, Some(dir)) = (run.save_raw, &options.save_dir) {
                            let raw = dir.join(format!(
                                "{}.npy",
                                figure_stem(&result.image, &result.method)
                            ));
                            let map = &result.heatmap;
                            write_npy(
                                &raw,
                                map.values.clone(),
                                &[map.height as usize, map.width as usize],
                            )?;
                            line.raw = Some(raw);
                        }
                        line.result = Some(serde_json::to_value(&result).map_err(|e| {
                            LumenError::InvalidArgument(format!("result as JSON: {e}"))
                        })?);
                        line.cached = cached;
                        reused += usize::from(cached);
                        if !run.keep_maps {
                            // The figure workers hold their own copy of the map.
                            result.heatmap = Map::new(vec![], 0, 0);
                            task.release_maps(&mut result.prediction);
                        }
                        results.push(result);
                    }
                    None => {
                        let failure = chunk_failures
                            .iter()
                            .position(|f| f.path == path)
                            .map(|k| chunk_failures.remove(k));
                        line.error = Some(
                            failure
                                .as_ref()
                                .map_or_else(|| "not explained".to_string(), |f| f.error.clone()),
                        );
                        failures.extend(failure);
                    }
                }
                if let Some(index) = &mut index {
                    index.push(&line)?;
                }
            }
            done += chunk.len();
            progress(done);
        }
        workers.map_or(Ok(vec![]), FigureWorkers::finish)
    })?;
    let mut thumbnails = thumbnails;
    thumbnails.sort_by_key(|(position, _)| *position);
    if let (Some(dir), Some(index)) = (&options.save_dir, index) {
        match run.shard {
            None if !thumbnails.is_empty() => {
                let panels: Vec<Panel> = thumbnails.into_iter().map(|(_, p)| p).collect();
                save_png(
                    &batch_grid(&options.method, results.len(), &panels),
                    dir,
                    GRID_FILE,
                )?;
                index.finish(vec![])?;
            }
            _ => {
                index.finish(thumbnails)?;
            }
        }
    }
    Ok(BatchOutcome {
        results,
        failures,
        reused,
    })
}

/// `original` with the request's outlines drawn (a detector's explained box), so that
/// every figure of the image shows what was explained.
pub(crate) fn outlined<T: Task>(
    task: &T,
    prediction: &T::Prediction,
    request: &T::Request,
    original: &image::RgbImage,
) -> image::RgbImage {
    let boxes: Vec<DrawnBox> = task
        .outlines(request, prediction)
        .into_iter()
        .map(|o| DrawnBox {
            bbox: o.bbox,
            class: o.class,
            caption: o.caption,
        })
        .collect();
    if boxes.is_empty() {
        original.clone()
    } else {
        outline_boxes(original, &boxes)
    }
}

/// Images shown in the batch grid figure at most.
pub const BATCH_GRID_LIMIT: usize = 64;

/// [`explain_batch`] in batches of 8 with figures written to `output_dir`.
pub fn visualize_batch<T: TaskModel, P: AsRef<Path>>(
    model: &T,
    paths: &[P],
    output_dir: impl Into<PathBuf>,
    options: &ExplainOptions<RequestOf<T>>,
) -> Result<BatchOutcome<ResultOf<T>>>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    let options = ExplainOptions {
        save_dir: Some(output_dir.into()),
        ..options.clone()
    };
    explain_batch(model, paths, 8, &options, |_| {})
}

/// One image, the defaults: GradCAM on the task's default target (the predicted
/// class), no figure written. Use [`explain_prediction`] to choose more.
pub fn quick_explain<T: TaskModel>(model: &T, image: impl AsRef<Path>) -> Result<ResultOf<T>>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    let inputs = Inputs::load(model, &[image])?;
    let (_, mut results) = explain_prediction(model, &inputs, &ExplainOptions::default())?;
    Ok(results.remove(0))
}

/// Write a self-contained interactive HTML report to `path`: per image the prediction
/// and its ranked alternatives, heatmap statistics, one zoomable overlay per method
/// and an importance histogram; `extra_sections` (HTML) are appended, e.g. metrics.
pub fn write_report<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    methods: &[String],
    options: &ExplainOptions<RequestOf<T>>,
    path: &Path,
    extra_sections: &[String],
) -> Result<PathBuf>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    let mut report = ReportWriter::create(path, &report_title_of(model), options.colormap)?;
    report.add(model, inputs, methods, options)?;
    report.finish(extra_sections)
}

/// The title of `model`'s report.
pub fn report_title_of<T: TaskModel>(model: &T) -> String {
    format!("Lumen report: {}", model.name())
}

/// Images whose report sections are made at once, on every core, before they are
/// written: a section is about 0.45 MB per method at 128 px (the picture and each
/// overlay inlined), so a few per core keep the cores busy and memory small.
const SECTIONS_PER_CORE: usize = 2;

/// A report page written as its images come ([`write_report`] a chunk of a folder at
/// a time): the page's head at [`ReportWriter::create`], each image's section at
/// [`ReportWriter::add`], extra sections and the end at [`ReportWriter::finish`]. The
/// page is the same bytes as one [`write_report`] of all the images, and memory holds
/// one chunk's maps and a few sections, not the page. Written to a temporary file
/// renamed at the end; dropped unfinished, it leaves nothing.
pub struct ReportWriter {
    file: crate::output::AtomicFile,
    colormap: Colormap,
    images: usize,
}

impl ReportWriter {
    /// Start the page at `path` titled `title` (its folder created now: an unwritable
    /// place fails before any work).
    pub fn create(path: &Path, title: &str, colormap: Colormap) -> Result<Self> {
        let mut file = crate::output::AtomicFile::create(path)?;
        file.write(lumen_report::page_head(title).as_bytes())?;
        file.write(lumen_report::page_part(&lumen_report::report_title(title)).as_bytes())?;
        Ok(Self {
            file,
            colormap,
            images: 0,
        })
    }

    /// Images written so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Explain `inputs` by each of `methods` (cached as `options` say; no figure files)
    /// and write their sections.
    pub fn add<T: TaskModel>(
        &mut self,
        model: &T,
        inputs: &Inputs,
        methods: &[String],
        options: &ExplainOptions<RequestOf<T>>,
    ) -> Result<()>
    where
        PredictionOf<T>: CacheRecord,
        RequestOf<T>: CacheRecord,
    {
        use rayon::prelude::*;
        let figureless = ExplainOptions {
            save_dir: None,
            ..options.clone()
        };
        let comparisons = compare_methods(model, inputs, methods, &figureless, Layout::Horizontal)?;
        // The task's pictures and texts here (a task is not shared across threads); the
        // sections, with their encoded pictures and plots, on every core.
        let task = model.task();
        let images: Vec<ReportImage> = comparisons
            .into_iter()
            .enumerate()
            .map(|(i, c)| ReportImage {
                name: c.image.clone(),
                prediction_picture: model.prediction_picture(&c.prediction, &inputs.originals[i]),
                original: outlined(&task, &c.prediction, &c.target, &inputs.originals[i]),
                top5: task.ranked(&c.prediction),
                measure: task.ranked_measure().into(),
                target: task.describe_request(&c.target),
                maps: c.methods.into_iter().zip(c.heatmaps).collect(),
                cautions: options.cautions.clone(),
            })
            .collect();
        let group = SECTIONS_PER_CORE * rayon::current_num_threads();
        for (g, images) in images.chunks(group).enumerate() {
            let first = self.images + g * group;
            let sections: Vec<String> = images
                .par_iter()
                .enumerate()
                .map(|(k, image)| {
                    let _stage = profile::stage(stages::ENCODE);
                    lumen_report::page_part(&lumen_report::report_section(
                        image,
                        first + k,
                        self.colormap,
                    ))
                })
                .collect();
            for section in sections {
                self.file.write(section.as_bytes())?;
            }
        }
        self.images += images.len();
        Ok(())
    }

    /// Append `extra_sections` (raw HTML: metrics, feature statistics), end the page
    /// and put it in place; returns its path.
    pub fn finish(mut self, extra_sections: &[String]) -> Result<PathBuf> {
        for section in extra_sections {
            self.file
                .write(lumen_report::page_part(section).as_bytes())?;
        }
        self.file.write(lumen_report::page_tail().as_bytes())?;
        self.file.finish()
    }
}
