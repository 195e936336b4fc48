//! The high-level API: explain, compare and batch-visualise predictions in a call,
//! with figures written where asked. Mirrors the guide's `explain_prediction`,
//! `compare_methods`, `visualize_batch`, `explain_batch` and `quick_explain`.

use std::path::{Path, PathBuf};

use image::RgbImage;
use lumen_core::burn::tensor::activation::softmax;
use lumen_core::{
    ClassLogit, DataConfig, Device, ExplainableModel, LumenError, Result, Tensor, load_image,
    predicted_classes, to_host,
};
use lumen_methods::{CamKind, Explanation, MethodOptions, by_name, cams_from_one_pass};
use lumen_models::{LoadedModel, ZooModel};
use lumen_report::{
    Colormap, Layout, Map, Panel, ReportImage, comparison_figure, explanation_figure, grid,
    overlay, polarity_figure, report_page, title_bar,
};
use serde::Serialize;

/// Options of the high-level calls (the guide's keyword arguments).
#[derive(Clone, Debug)]
pub struct ExplainOptions {
    /// Method name (see `lumen_methods::METHOD_NAMES`).
    pub method: String,
    /// One class per image; the predicted class when `None`.
    pub target_class: Option<Vec<usize>>,
    /// Colormap of the figures.
    pub colormap: Colormap,
    /// Overlay opacity.
    pub alpha: f32,
    /// Folder for figures; nothing is written when `None`.
    pub save_dir: Option<PathBuf>,
    /// Method options (layer, steps, noise, ...).
    pub method_options: MethodOptions,
    /// Also write the polarity view of signed attributions (gradient methods).
    pub polarity: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self {
            method: "gradcam".into(),
            target_class: None,
            colormap: Colormap::Jet,
            alpha: 0.5,
            save_dir: None,
            method_options: MethodOptions::default(),
            polarity: false,
        }
    }
}

/// A batch of inputs with what is needed to draw them.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Normalised `[B,3,H,W]` on the model's device.
    pub tensor: Tensor<4>,
    /// The images as shown (un-normalised, at input size).
    pub originals: Vec<RgbImage>,
    /// A name per image (file stem), used for output files.
    pub names: Vec<String>,
}

impl Inputs {
    /// Read, resize, crop and normalise image files.
    pub fn from_files<P: AsRef<Path>>(
        paths: &[P],
        config: &DataConfig,
        device: &Device,
    ) -> Result<Self> {
        let images = paths.iter().map(load_image).collect::<Result<Vec<_>>>()?;
        let originals: Vec<RgbImage> = images.iter().map(|i| config.resize_and_crop(i)).collect();
        Ok(Self {
            tensor: config.to_tensor(&originals, device)?,
            originals,
            names: paths
                .iter()
                .map(|p| {
                    p.as_ref()
                        .file_stem()
                        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
                })
                .collect(),
        })
    }

    /// Images already in memory, named, resized and cropped as the model expects.
    pub fn from_images(
        images: Vec<RgbImage>,
        names: Vec<String>,
        config: &DataConfig,
        device: &Device,
    ) -> Result<Self> {
        let originals: Vec<RgbImage> = images.iter().map(|i| config.resize_and_crop(i)).collect();
        Ok(Self {
            tensor: config.to_tensor(&originals, device)?,
            originals,
            names,
        })
    }

    /// Wrap an already-normalised tensor; originals are recovered by undoing the
    /// normalisation.
    pub fn from_tensor(tensor: Tensor<4>, config: &DataConfig) -> Self {
        let originals = config.denormalize(&tensor);
        let names = (0..originals.len()).map(|i| format!("input{i}")).collect();
        Self {
            tensor,
            originals,
            names,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }
}

/// What one image's explanation produced.
#[derive(Clone, Debug, Serialize)]
pub struct ExplanationResult {
    /// Input name.
    pub image: String,
    /// Arg-max class.
    pub predicted_class: usize,
    /// Its name, when the model has class names.
    pub predicted_name: Option<String>,
    /// Softmax probability of the predicted class.
    pub confidence: f32,
    /// The five most probable classes with probabilities.
    pub top5: Vec<(usize, f32)>,
    /// Class explained.
    pub target_class: usize,
    /// Method used.
    pub method: String,
    /// Layer used (CAM methods).
    pub layer: Option<String>,
    /// Integrated Gradients' completeness gap.
    pub convergence_delta: Option<f32>,
    /// Figures written.
    pub paths: Vec<PathBuf>,
    /// The heatmap on the host (input size, or patch grid for attention methods).
    #[serde(skip)]
    pub heatmap: Map,
}

/// Predictions of a batch: arg-max, probabilities `[B, classes]`.
struct Predictions {
    classes: Vec<usize>,
    probabilities: Vec<f32>,
    num_classes: usize,
}

impl Predictions {
    fn of(model: &ZooModel, input: &Tensor<4>) -> Self {
        let logits = model.forward(input.clone());
        let [_, num_classes] = logits.dims();
        Self {
            classes: predicted_classes(&logits),
            probabilities: to_host(softmax(logits, 1)),
            num_classes,
        }
    }

    fn confidence(&self, image: usize) -> f32 {
        self.probabilities[image * self.num_classes + self.classes[image]]
    }

    fn top5(&self, image: usize) -> Vec<(usize, f32)> {
        let row = &self.probabilities[image * self.num_classes..(image + 1) * self.num_classes];
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(5);
        ranked
    }

    fn targets(&self, requested: &Option<Vec<usize>>) -> Result<Vec<usize>> {
        let targets = match requested {
            None => self.classes.clone(),
            Some(t) if t.len() == self.classes.len() => t.clone(),
            Some(t) => {
                return Err(LumenError::InvalidArgument(format!(
                    "--target-class takes one class per image: {} given for {} images",
                    t.len(),
                    self.classes.len()
                )));
            }
        };
        if let Some(&class) = targets.iter().find(|&&c| c >= self.num_classes) {
            return Err(LumenError::ClassOutOfRange {
                class,
                num_classes: self.num_classes,
            });
        }
        Ok(targets)
    }
}

fn class_label(model: &LoadedModel, class: usize) -> String {
    match model.class_names.as_ref().and_then(|n| n.get(class)) {
        Some(name) => format!("{name} ({class})"),
        None => format!("class {class}"),
    }
}

fn uses_layer(method: &str) -> bool {
    CamKind::ALL.iter().any(|k| k.name() == method) || matches!(method, "scorecam" | "ablationcam")
}

fn host_maps(explanation: &Explanation) -> Vec<Map> {
    let [b, h, w] = explanation.heatmaps.dims();
    let values = explanation.heatmaps.to_vec();
    (0..b)
        .map(|i| {
            Map::new(
                values[i * h * w..(i + 1) * h * w].to_vec(),
                w as u32,
                h as u32,
            )
            .normalized()
        })
        .collect()
}

/// Image `i` of a `[B,3,H,W]` attribution, summed over channels (signed).
fn signed_map(attributions: &Tensor<4>, i: usize) -> Map {
    let [_, _, h, w] = attributions.dims();
    let summed = attributions
        .clone()
        .narrow(0, i, 1)
        .sum_dim(1)
        .reshape([h * w]);
    Map::new(to_host(summed), w as u32, h as u32)
}

fn save(figure: &RgbImage, dir: &Path, file: String) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| LumenError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(file);
    figure.save(&path).map_err(|e| LumenError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(path)
}

/// Explain every image of a batch with one method (one batched method call) and, with
/// `save_dir`, write one figure per image: original | heatmap | overlay.
pub fn explain_prediction(
    model: &LoadedModel,
    inputs: &Inputs,
    options: &ExplainOptions,
) -> Result<(Explanation, Vec<ExplanationResult>)> {
    let zoo = &model.model;
    let mut method_options = options.method_options.clone();
    method_options.mean = model.data_config.mean;
    method_options.std = model.data_config.std;
    let method = by_name::<ZooModel>(&options.method, &method_options)?;
    if let Some(layer) = &method_options.layer {
        zoo.layer(layer)?;
    }
    zoo.check_input(&inputs.tensor)?;
    let predictions = Predictions::of(zoo, &inputs.tensor);
    let targets = predictions.targets(&options.target_class)?;
    let explanation = method.explain(zoo, inputs.tensor.clone(), &ClassLogit(targets.clone()))?;
    let maps = host_maps(&explanation);
    let layer = uses_layer(&options.method).then(|| {
        method_options
            .layer
            .clone()
            .unwrap_or_else(|| zoo.default_layer())
    });
    let mut results = Vec::with_capacity(inputs.len());
    for (i, map) in maps.into_iter().enumerate() {
        let mut paths = vec![];
        if let Some(dir) = &options.save_dir {
            let title = format!(
                "{} | predicted {} {:.1}% | explaining {}",
                options.method,
                class_label(model, predictions.classes[i]),
                100.0 * predictions.confidence(i),
                class_label(model, targets[i])
            );
            let figure = explanation_figure(
                &inputs.originals[i],
                &map,
                options.colormap,
                options.alpha,
                &title,
            );
            // `+` is awkward in file names: gradcam++ -> gradcampp.
            let stem = format!("{}_{}", inputs.names[i], options.method.replace('+', "p"));
            paths.push(save(&figure, dir, format!("{stem}.png"))?);
            if let (true, Some(attributions)) = (options.polarity, &explanation.attributions) {
                let signed = signed_map(attributions, i);
                let figure = polarity_figure(
                    &inputs.originals[i],
                    &signed,
                    options.colormap,
                    options.alpha,
                    &title,
                );
                paths.push(save(&figure, dir, format!("{stem}_polarity.png"))?);
            }
        }
        results.push(ExplanationResult {
            image: inputs.names[i].clone(),
            predicted_class: predictions.classes[i],
            predicted_name: model
                .class_names
                .as_ref()
                .and_then(|n| n.get(predictions.classes[i]).cloned()),
            confidence: predictions.confidence(i),
            top5: predictions.top5(i),
            target_class: targets[i],
            method: options.method.clone(),
            layer: layer.clone(),
            convergence_delta: explanation.convergence_delta.as_ref().map(|d| d[i]),
            paths,
            heatmap: map,
        });
    }
    Ok((explanation, results))
}

/// One image's comparison across methods.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonResult {
    /// Input name.
    pub image: String,
    /// Class explained.
    pub target_class: usize,
    /// The five most probable classes with probabilities.
    pub top5: Vec<(usize, f32)>,
    /// Methods in order.
    pub methods: Vec<String>,
    /// Figure written.
    pub path: Option<PathBuf>,
    /// Heatmaps per method.
    #[serde(skip)]
    pub heatmaps: Vec<Map>,
}

/// Explain a batch with several methods and draw one comparison figure per image.
/// One-pass CAMs on the same layer share a single forward/backward.
pub fn compare_methods(
    model: &LoadedModel,
    inputs: &Inputs,
    methods: &[String],
    options: &ExplainOptions,
    layout: Layout,
) -> Result<Vec<ComparisonResult>> {
    let zoo = &model.model;
    zoo.check_input(&inputs.tensor)?;
    let predictions = Predictions::of(zoo, &inputs.tensor);
    let targets = predictions.targets(&options.target_class)?;
    let target = ClassLogit(targets.clone());
    let mut method_options = options.method_options.clone();
    method_options.mean = model.data_config.mean;
    method_options.std = model.data_config.std;
    // Validate every name before any work.
    for name in methods {
        by_name::<ZooModel>(name, &method_options)?;
    }
    let one_pass: Vec<CamKind> = methods
        .iter()
        .filter_map(|m| CamKind::ALL.into_iter().find(|k| k.name() == m))
        .collect();
    let layer = method_options
        .layer
        .clone()
        .unwrap_or_else(|| zoo.default_layer());
    let shared = if one_pass.is_empty() {
        vec![]
    } else {
        cams_from_one_pass(zoo, inputs.tensor.clone(), &target, &layer, &one_pass)?
    };
    let mut per_method: Vec<Vec<Map>> = Vec::with_capacity(methods.len());
    for name in methods {
        let maps = match one_pass.iter().position(|k| k.name() == name) {
            Some(i) => host_maps(&Explanation {
                heatmaps: shared[i].clone(),
                attributions: None,
                convergence_delta: None,
            }),
            None => {
                let method = by_name::<ZooModel>(name, &method_options)?;
                host_maps(&method.explain(zoo, inputs.tensor.clone(), &target)?)
            }
        };
        per_method.push(maps);
    }
    let mut results = vec![];
    for i in 0..inputs.len() {
        let maps: Vec<(String, Map)> = methods
            .iter()
            .zip(&per_method)
            .map(|(name, maps)| (name.clone(), maps[i].clone()))
            .collect();
        let path = match &options.save_dir {
            Some(dir) => {
                let title = format!(
                    "{}: predicted {} {:.1}%, explaining {}",
                    inputs.names[i],
                    class_label(model, predictions.classes[i]),
                    100.0 * predictions.confidence(i),
                    class_label(model, targets[i])
                );
                let figure = comparison_figure(
                    &inputs.originals[i],
                    &maps,
                    options.colormap,
                    options.alpha,
                    layout,
                    &title,
                );
                Some(save(
                    &figure,
                    dir,
                    format!("{}_comparison.png", inputs.names[i]),
                )?)
            }
            None => None,
        };
        results.push(ComparisonResult {
            image: inputs.names[i].clone(),
            target_class: targets[i],
            top5: predictions.top5(i),
            methods: methods.to_vec(),
            path,
            heatmaps: maps.into_iter().map(|(_, m)| m).collect(),
        });
    }
    Ok(results)
}

/// Explain image files in batches of `batch_size`, writing one figure per image named
/// after its file and a grid of the first [`BATCH_GRID_LIMIT`] overlays
/// (`batch_grid.png`). `progress` is called with the number of images done.
pub fn explain_batch<P: AsRef<Path>>(
    model: &LoadedModel,
    paths: &[P],
    batch_size: usize,
    options: &ExplainOptions,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ExplanationResult>> {
    if options.target_class.is_some() {
        return Err(LumenError::InvalidArgument(
            "a batch over many files explains each image's predicted class; drop --target-class"
                .into(),
        ));
    }
    let mut results = Vec::with_capacity(paths.len());
    let mut thumbnails = vec![];
    for chunk in paths.chunks(batch_size.max(1)) {
        let inputs = Inputs::from_files(chunk, &model.data_config, device)?;
        let (_, chunk_results) = explain_prediction(model, &inputs, options)?;
        for (r, original) in chunk_results.iter().zip(&inputs.originals) {
            if thumbnails.len() < BATCH_GRID_LIMIT {
                let title = format!("{} {}", r.image, class_label(model, r.predicted_class));
                thumbnails.push(Panel::new(
                    title,
                    overlay(original, &r.heatmap, options.colormap, options.alpha),
                ));
            }
        }
        results.extend(chunk_results);
        progress(results.len());
    }
    if let (Some(dir), false) = (&options.save_dir, thumbnails.is_empty()) {
        let columns = (thumbnails.len() as f64).sqrt().ceil() as usize;
        let figure = title_bar(
            &format!("{} on {} images", options.method, results.len()),
            &grid(&thumbnails, Layout::Grid(columns)),
        );
        save(&figure, dir, "batch_grid.png".into())?;
    }
    Ok(results)
}

/// Images shown in the batch grid figure at most.
pub const BATCH_GRID_LIMIT: usize = 64;

/// [`explain_batch`] with figures written to `output_dir`.
pub fn visualize_batch<P: AsRef<Path>>(
    model: &LoadedModel,
    paths: &[P],
    output_dir: impl Into<PathBuf>,
    options: &ExplainOptions,
    device: &Device,
) -> Result<Vec<ExplanationResult>> {
    let options = ExplainOptions {
        save_dir: Some(output_dir.into()),
        ..options.clone()
    };
    explain_batch(model, paths, 8, &options, device, |_| {})
}

/// One image, one method, the defaults: GradCAM on the predicted class, figure written
/// to `save_path`'s folder when given.
pub fn quick_explain(
    model: &LoadedModel,
    image: impl AsRef<Path>,
    device: &Device,
) -> Result<ExplanationResult> {
    let inputs = Inputs::from_files(&[image], &model.data_config, device)?;
    let (_, mut results) = explain_prediction(model, &inputs, &ExplainOptions::default())?;
    Ok(results.remove(0))
}

/// Write a self-contained interactive HTML report to `path`: per image the prediction
/// and top-5, heatmap statistics, one zoomable overlay per method and an importance
/// histogram; `extra_sections` (HTML) are appended, e.g. metrics.
pub fn write_report(
    model: &LoadedModel,
    inputs: &Inputs,
    methods: &[String],
    options: &ExplainOptions,
    path: &Path,
    extra_sections: &[String],
) -> Result<PathBuf> {
    let figureless = ExplainOptions {
        save_dir: None,
        ..options.clone()
    };
    let comparisons = compare_methods(model, inputs, methods, &figureless, Layout::Horizontal)?;
    let images: Vec<ReportImage> = comparisons
        .into_iter()
        .enumerate()
        .map(|(i, c)| ReportImage {
            name: c.image.clone(),
            original: inputs.originals[i].clone(),
            top5: c
                .top5
                .iter()
                .map(|&(class, p)| (class_label(model, class), p))
                .collect(),
            target: class_label(model, c.target_class),
            maps: c.methods.into_iter().zip(c.heatmaps).collect(),
        })
        .collect();
    let title = format!("Lumen report: {}", model.name);
    let html = report_page(&title, &images, options.colormap, extra_sections);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LumenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, html).map_err(|source| LumenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}
