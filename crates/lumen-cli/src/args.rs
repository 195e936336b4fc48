//! Argument groups shared by the subcommands, the conversions into the facade's
//! options (one place), and the helpers every command uses (progress, JSON).

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lumen::{
    BaselineKind, Colormap, ExplainOptions, ExplanationCache, HeadFusion, InputFailure, Inputs,
    IntegrationRule, LoadedModel, LumenError, MethodOptions, Noise, Precision, Result, TaskModel,
    methods::Family,
};
use serde::Serialize;

/// `--help` text that lists the valid names.
fn one_of(what: &str, names: &[&str]) -> String {
    format!("{what} [one of: {}]", names.join(", "))
}

pub fn methods_help() -> String {
    format!(
        "{}; on detectors also: drise (black-box, `--masks`)",
        one_of(
            "Method(s), comma-separated (`--method` and `--methods` are the same flag)",
            &lumen::method_names(),
        )
    )
}

/// `--method` of the commands that run one method (explain, batch).
pub fn method_help() -> String {
    format!(
        "{}; on detectors also: drise (black-box, `--masks`)",
        one_of(
            "Method, one (`--method` and `--methods` are the same flag; `compare` and `report` take several)",
            &lumen::method_names(),
        )
    )
}

/// A command that runs one method refuses a list, naming the commands that take one
/// (the name would otherwise be refused as an unknown method `a,b`).
pub fn check_one_method(command: &str, method: &str) -> Result<()> {
    let count = method.split(',').count();
    if count > 1 {
        return Err(LumenError::InvalidArgument(format!(
            "`lumen {command}` runs one method, and `{method}` names {count}: run it once per \
             method, or draw them side by side with `lumen compare --methods {method}` (or \
             `lumen report`)"
        )));
    }
    Ok(())
}

fn models_help() -> String {
    format!(
        "{}; segmentors: shapes-seg (bundled), deeplabv3plus_<resnet>, fcn_<resnet> (AutoTimm); detectors: shapes-det (bundled), fcos_<resnet> (AutoTimm)",
        one_of(
            "Architecture, as timm names it; bundled models need no --weights",
            lumen::ARCHITECTURES,
        )
    )
}

/// Parse a named choice with our message ("unknown baseline `x`; valid baselines: ...").
pub(crate) fn choice<T: std::str::FromStr<Err = LumenError>>(
    s: &str,
) -> std::result::Result<T, String> {
    s.parse().map_err(|e: LumenError| e.to_string())
}

fn colormap(s: &str) -> std::result::Result<Colormap, String> {
    s.parse()
}

/// An overlay opacity in [0, 1], checked at parsing so that every command that draws
/// (features, receptive-field and maximize as well as the explaining ones) refuses a
/// NaN, which would otherwise blend every pixel to black.
fn opacity(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("the opacity must be in [0, 1], got {v}")),
        Err(e) => Err(format!("`{s}` is not a number: {e}")),
    }
}

/// Which model to load, and where.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[arg(long, help = models_help())]
    pub model: String,
    /// Weights: a timm state dict as .safetensors, .pth or .pt.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Number of output classes of the weights (timm architectures; default 1000).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Device: cpu, wgpu, wgpu:N, tch:cpu, tch:cuda:N, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Float precision of the weights and the computation: f32, f16 or bf16. Half
    /// precision is for GPUs with half-precision units; maps differ from float32's
    /// (measured in docs/performance.md).
    #[arg(long, default_value = "f32", value_parser = choice::<Precision>)]
    pub precision: Precision,
}

impl ModelArgs {
    /// The device `--device` names, computing in `--precision`.
    pub fn device(&self) -> Result<lumen::Device> {
        lumen::device_with_precision(&self.device, self.precision)
    }

    /// Whether `--model` names a segmentation architecture.
    pub fn is_segmentation(&self) -> bool {
        lumen::is_segmentation_architecture(&self.model)
    }

    /// Whether `--model` names a detection architecture.
    pub fn is_detection(&self) -> bool {
        lumen::is_detection_architecture(&self.model)
    }

    /// A classifier is needed: say clearly when `--model` is a segmentor or detector.
    fn require_classifier(&self) -> Result<()> {
        let task = if self.is_segmentation() {
            "segmentation"
        } else if self.is_detection() {
            "detection"
        } else {
            return Ok(());
        };
        // Every command dispatches segmentors and detectors before it gets here: this
        // guards the classifier loaders against a command that forgot to.
        Err(LumenError::InvalidArgument(format!(
            "`{}` is a {task} model, where this step loads classifiers only",
            self.model
        )))
    }

    /// The model name is known (before any loading or missing-weights message).
    fn check_name(&self) -> Result<()> {
        lumen::check_model_name(&self.model)
    }

    /// `--num-classes`, else a bundled model's own class count; `None` when neither. A
    /// count a bundled model does not have is an error (it was ignored).
    pub fn classes(&self) -> Result<Option<usize>> {
        if let Some(n) = self.num_classes {
            lumen::models::check_bundled_classes(&self.model, n)?;
            return Ok(Some(n));
        }
        Ok(lumen::models::bundled_classes(&self.model).map(<[_]>::len))
    }

    /// The error for a dense model loaded without its weights or class count: names
    /// what is missing, and only that.
    fn missing_weights_or_classes(&self, kind: &str) -> LumenError {
        let weights = format!("--weights (an {kind} .ckpt, .safetensors or .pth)");
        let classes = "--num-classes (the number of classes the weights were trained for)";
        let missing = match (&self.weights, self.num_classes) {
            (None, None) => format!("{weights} and {classes}"),
            (None, Some(_)) => weights,
            _ => classes.to_string(),
        };
        LumenError::InvalidArgument(format!("`{}` needs {missing}", self.model))
    }

    /// Load a detector: an AutoTimm `ObjectDetector` (FCOS) state dict or Lightning
    /// checkpoint with `--num-classes`.
    pub fn load_detector(&self) -> Result<lumen::LoadedDetector> {
        self.check_name()?;
        let device = self.device()?;
        let classes = self.classes()?;
        if lumen::BUNDLED.contains(&self.model.as_str()) && self.weights.is_none() {
            return lumen::LoadedDetector::bundled(&self.model, &device);
        }
        let (Some(weights), Some(classes)) = (&self.weights, classes) else {
            return Err(self.missing_weights_or_classes("AutoTimm ObjectDetector"));
        };
        lumen::LoadedDetector::load(&self.model, classes, weights, &device)
    }

    /// Load a segmentor: an AutoTimm `SemanticSegmentor` state dict or Lightning
    /// checkpoint with `--num-classes`.
    pub fn load_segmentor(&self) -> Result<lumen::LoadedSegmentor> {
        self.check_name()?;
        let device = self.device()?;
        let classes = self.classes()?;
        if lumen::BUNDLED.contains(&self.model.as_str()) && self.weights.is_none() {
            return lumen::LoadedSegmentor::bundled(&self.model, &device);
        }
        let (Some(weights), Some(classes)) = (&self.weights, classes) else {
            return Err(self.missing_weights_or_classes("AutoTimm SemanticSegmentor"));
        };
        lumen::LoadedSegmentor::load(&self.model, classes, weights, &device)
    }

    /// Load the model: bundled weights for the shapes models, else `--weights`.
    pub fn load(&self) -> Result<LoadedModel> {
        self.check_name()?;
        self.require_classifier()?;
        let device = self.device()?;
        let classes = self.classes()?.unwrap_or(1000);
        if lumen::BUNDLED.contains(&self.model.as_str()) && self.weights.is_none() {
            return LoadedModel::bundled(&self.model, &device);
        }
        let weights = self.weights.as_ref().ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "--weights is required for `{}`: pass a timm state dict (.safetensors, .pth or .pt), \
                 or use a bundled model ({})",
                self.model,
                lumen::BUNDLED.join(", ")
            ))
        })?;
        LoadedModel::load(&self.model, classes, weights, &device)
    }
}

impl ModelArgs {
    /// The architecture for commands that do not depend on weights (layer names,
    /// geometry): the weights when given, else random ones.
    pub fn architecture(&self) -> Result<LoadedModel> {
        self.require_classifier()?;
        match &self.weights {
            Some(_) => self.load(),
            None => LoadedModel::init(
                &self.model,
                self.classes()?.unwrap_or(1000),
                &self.device()?,
            ),
        }
    }
}

/// Images to explain: `--image` files or folders, positional ones, or a normalised
/// array.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Image files or folders of images (positional inputs are the same).
    #[arg(long = "image", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Image files or folders of images.
    #[arg(value_name = "IMAGES")]
    pub positional: Vec<PathBuf>,
    /// An already-normalised float32 array [B,3,H,W] (.npy) instead of images.
    #[arg(long, conflicts_with_all = ["images", "positional"])]
    pub input_npy: Option<PathBuf>,
    /// Search folders' sub-folders for images too.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Input size HEIGHT[,WIDTH] instead of the model's data config (CNNs take any
    /// size): images are resized (shorter side) and centre-cropped to it.
    #[arg(long, value_parser = parse_size, conflicts_with_all = ["no_resize", "input_npy"])]
    pub size: Option<[usize; 2]>,
    /// Keep the first image's own size (the others are resized and cropped to it).
    #[arg(long, conflicts_with = "input_npy")]
    pub no_resize: bool,
}

/// `H` or `H,W`, each at least 1.
fn parse_size(text: &str) -> std::result::Result<[usize; 2], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let number = |s: &str| match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a size in pixels (a whole number above 0)"
        )),
    };
    match parts.as_slice() {
        [side] => Ok([number(side)?; 2]),
        [h, w] => Ok([number(h)?, number(w)?]),
        _ => Err(format!("expected HEIGHT or HEIGHT,WIDTH, got `{text}`")),
    }
}

/// The largest side `--size` or `--no-resize` may ask for: a ResNet-50 activation at
/// 8192 px is already gigabytes per image.
const MAX_INPUT_SIDE: usize = 8192;

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff", "gif"];

impl InputArgs {
    /// The image files, folders expanded (sorted), in the order given.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let given: Vec<&PathBuf> = self.images.iter().chain(&self.positional).collect();
        if self.input_npy.is_some() {
            // `batch` and `features --top-images` name outputs and cache entries by
            // file; they said "no input" to an array.
            return Err(LumenError::InvalidArgument(
                "this command reads image files or folders, not --input-npy (explain, \
                 compare, report, receptive-field and features without --top-images read \
                 arrays)"
                    .into(),
            ));
        }
        if given.is_empty() {
            return Err(LumenError::InvalidArgument(
                "no input: give --image FILE (or a folder), image paths, or --input-npy".into(),
            ));
        }
        let mut files = vec![];
        let mut skipped_folders = vec![];
        for input in &given {
            if input.is_dir() {
                collect_images(input, self.recursive, &mut files, &mut skipped_folders)?;
            } else {
                files.push(input.to_path_buf());
            }
        }
        if !skipped_folders.is_empty() {
            eprintln!(
                "note: {} sub-folder(s) not searched (add --recursive): {}",
                skipped_folders.len(),
                skipped_folders
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if files.is_empty() {
            return Err(LumenError::InvalidArgument(format!(
                "no images found in {}: expected files ending in {}",
                given
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        Ok(files)
    }

    /// The inputs for `model`, to be read a chunk at a time
    /// ([`InputPlan::for_each_chunk`]): the array opened and checked, the files listed
    /// and named.
    pub fn plan(&self, model: &impl TaskModel) -> Result<InputPlan> {
        Ok(match &self.input_npy {
            Some(path) => {
                let batch = lumen::NpyBatch::open(path)?;
                // Checked whole before any work: a bad value is a preprocessing
                // error, not one bad image.
                batch.check_finite()?;
                InputPlan::Array {
                    batch,
                    config: model.data_config().clone(),
                }
            }
            None => {
                let files = self.files()?;
                let config = self.data_config(model, &files)?;
                let names = lumen::unique_names(&files);
                InputPlan::Files {
                    files,
                    names,
                    config,
                }
            }
        })
    }
}

/// What a command keeps per input pixel of the images of a chunk it holds (inputs,
/// maps, figures; [`DEFAULT_READ_CHUNK_MB`]). Measured with `/usr/bin/time -f
/// %M lumen explain --model shapes-cnn --size 224` on 250 and 1000 images, before
/// `explain` read in chunks: 28 bytes for GradCAM, 49 for saliency (its attributions).
const HELD_BYTES_PER_PIXEL: usize = 28;

/// The size of a chunk of images, in MiB (at [`HELD_BYTES_PER_PIXEL`]): the commands
/// that take images (`explain`, `compare`, `report`, `features`, `receptive-field`)
/// read, explain and draw a folder a chunk at a time, reading the next chunk while
/// one is worked on, so they hold about twice this however many files are given;
/// `LUMEN_READ_CHUNK_MB` changes it. A chunk is passed to the model in its own
/// internal batches; 128 MiB is 95 images at 224x224, three passes of a ResNet, so
/// chunking costs no speed.
pub const DEFAULT_READ_CHUNK_MB: usize = 128;

/// The chunk's size in bytes: `LUMEN_READ_CHUNK_MB`, else the default.
fn read_chunk_bytes() -> Result<usize> {
    match std::env::var("LUMEN_READ_CHUNK_MB") {
        Err(_) => Ok(DEFAULT_READ_CHUNK_MB << 20),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(mb) if mb > 0 && mb <= usize::MAX >> 20 => Ok(mb << 20),
            _ => Err(LumenError::InvalidArgument(format!(
                "LUMEN_READ_CHUNK_MB must be a whole number of MiB above 0, got `{text}`"
            ))),
        },
    }
}

/// Images per chunk of `bytes` at `[height, width]` (at least one).
fn images_per_chunk(bytes: usize, [height, width]: [usize; 2]) -> usize {
    let per_image = height
        .saturating_mul(width)
        .saturating_mul(HELD_BYTES_PER_PIXEL)
        .max(1);
    (bytes / per_image).max(1)
}

/// The inputs of a command that explains them a chunk at a time: the files (or the
/// array's rows) known and counted, nothing read yet.
pub enum InputPlan {
    /// `--input-npy`: the rows of one array, read a chunk at a time.
    Array {
        batch: lumen::NpyBatch,
        config: lumen::core::DataConfig,
    },
    /// Image files, read a chunk at a time at `config`'s size.
    Files {
        files: Vec<PathBuf>,
        names: Vec<String>,
        config: lumen::core::DataConfig,
    },
}

/// One chunk of [`InputPlan::for_each_chunk`]: its readable images and their positions
/// among all inputs (for per-image targets), and how many inputs it covered.
pub struct InputChunk {
    pub inputs: Inputs,
    pub positions: Vec<usize>,
    pub covered: usize,
}

impl InputPlan {
    /// The inputs given (files, or the array's rows), readable or not.
    pub fn len(&self) -> usize {
        match self {
            InputPlan::Array { batch, .. } => batch.len(),
            InputPlan::Files { files, .. } => files.len(),
        }
    }

    /// `[height, width]` the images are read at.
    pub fn input_size(&self) -> [usize; 2] {
        match self {
            InputPlan::Array { batch, .. } => {
                let [_, _, height, width] = batch.dims();
                [height, width]
            }
            InputPlan::Files { config, .. } => [config.input_size[1], config.input_size[2]],
        }
    }

    /// Read the inputs a chunk at a time ([`DEFAULT_READ_CHUNK_MB`]; at most
    /// [`images_per_call`] of `methods`) and give each chunk with a readable image to
    /// `work`, in order, under a progress bar over the inputs that says `what`. A file
    /// that cannot be read is reported (a warning now, a failure in `--json` and exit
    /// code 3 at the end) and the others go on; when none can be, the error names them
    /// all. Adjustments made while reading are warned about.
    pub fn for_each_chunk<S: AsRef<str>>(
        self,
        device: &lumen::core::Device,
        methods: &[S],
        shown: (&str, bool),
        work: impl FnMut(InputChunk) -> Result<()>,
    ) -> Result<()> {
        self.for_each_chunk_of_at_most(device, images_per_call(methods), shown, work)
    }

    /// [`InputPlan::for_each_chunk`] for work other than methods, in chunks of at most
    /// `most_images`.
    pub fn for_each_chunk_of_at_most(
        self,
        device: &lumen::core::Device,
        most_images: usize,
        (what, quiet): (&str, bool),
        mut work: impl FnMut(InputChunk) -> Result<()>,
    ) -> Result<()> {
        let bytes = read_chunk_bytes()?;
        let bar = chunk_progress(self.len(), what, quiet);
        let done = self.for_each_chunk_of(bytes, most_images, device, |chunk| {
            let covered = chunk.covered;
            work(chunk)?;
            bar.inc(covered as u64);
            Ok(())
        });
        bar.finish_and_clear();
        done
    }

    /// The inputs `range` read: the readable ones, the failures, and the positions of
    /// the readable ones among all inputs.
    fn read_chunk(
        &self,
        range: std::ops::Range<usize>,
        device: &lumen::core::Device,
    ) -> Result<(lumen::ReadInputs, Vec<usize>)> {
        match self {
            InputPlan::Array { batch, config } => {
                let tensor = batch.read_rows(range.clone(), device)?;
                let inputs = Inputs::from_rows(tensor, config, range.start)?;
                let read = lumen::ReadInputs {
                    inputs: Some(inputs),
                    failures: vec![],
                };
                Ok((read, range.collect()))
            }
            InputPlan::Files {
                files,
                names,
                config,
            } => {
                let read = Inputs::read_with(
                    config,
                    device,
                    &files[range.clone()],
                    &names[range.clone()],
                )?;
                let kept = read.inputs.as_ref().map_or(&[][..], |i| i.names.as_slice());
                let positions = positions_of(names, range, kept);
                Ok((read, positions))
            }
        }
    }

    /// [`InputPlan::for_each_chunk`] in chunks of `bytes` worth of images, at most
    /// `most_images`, without a bar.
    fn for_each_chunk_of(
        self,
        bytes: usize,
        most_images: usize,
        device: &lumen::core::Device,
        mut work: impl FnMut(InputChunk) -> Result<()>,
    ) -> Result<()> {
        let total = self.len();
        let per_chunk = images_per_chunk(bytes, self.input_size()).min(most_images.max(1));
        let starts: Vec<usize> = (0..total).step_by(per_chunk).collect();
        let range = |start: usize| start..(start + per_chunk).min(total);
        let plan = &self;
        let read = |start: usize| plan.read_chunk(range(start), device);
        let mut failures = vec![];
        let mut any_read = false;
        // The next chunk is read and decoded on its own thread while this one is
        // worked on (the seed's overlap: the device, or the other cores, compute);
        // messages about a chunk are printed when it is worked on, in order.
        std::thread::scope(|scope| -> Result<()> {
            let mut next = starts
                .first()
                .map(|&start| scope.spawn(move || read(start)));
            for (k, &start) in starts.iter().enumerate() {
                let reading = next.take().expect("each chunk is read before its turn");
                next = starts
                    .get(k + 1)
                    .map(|&start| scope.spawn(move || read(start)));
                let (read, positions) = reading.join().map_err(|_| {
                    LumenError::InvalidArgument("the thread reading images panicked".into())
                })??;
                record_failures(&read.failures);
                failures.extend(read.failures);
                let Some(inputs) = read.inputs else {
                    continue;
                };
                warn_notes(&inputs);
                any_read = true;
                work(InputChunk {
                    inputs,
                    positions,
                    covered: range(start).len(),
                })?;
            }
            Ok(())
        })?;
        match any_read {
            true => Ok(()),
            false => Err(lumen::no_readable_input(&failures)),
        }
    }
}

/// Images per chunk for methods that run many rows per image (Integrated Gradients,
/// the noise tunnels, Score-CAM and Ablation-CAM, D-RISE): each image costs seconds
/// on a CPU and fills the internal batches on its own, so more images per call gain
/// nothing, and a small chunk keeps the progress bar moving.
pub const MANY_ROWS_CHUNK_IMAGES: usize = 8;

/// Images per chunk for D-RISE: it runs its masks through the model one image at a
/// time (all of that image's boxes at once), about 3.5 s per image and box on a
/// 2-core CPU at the default 1000 masks, so a chunk of 8 scenes left the bar still
/// for a minute; images in one call share nothing but the masks' generation.
pub const DRISE_CHUNK_IMAGES: usize = 2;

/// The most images a chunk of `methods` holds: [`MANY_ROWS_CHUNK_IMAGES`] when one of
/// them runs many rows per image, else no limit beyond the chunk's bytes.
fn images_per_call<S: AsRef<str>>(methods: &[S]) -> usize {
    if methods
        .iter()
        .any(|name| name.as_ref() == lumen::detection::DRISE)
    {
        return DRISE_CHUNK_IMAGES;
    }
    let many_rows = methods.iter().any(|name| {
        lumen::method_info(name.as_ref()).is_ok_and(|info| {
            matches!(
                info.family,
                Family::Path | Family::NoiseTunnel | Family::PerturbationCam
            )
        })
    });
    match many_rows {
        true => MANY_ROWS_CHUNK_IMAGES,
        false => usize::MAX,
    }
}

/// The positions in `range` of `names` whose images were read (`kept`, in order: the
/// names are unique).
fn positions_of(names: &[String], range: std::ops::Range<usize>, kept: &[String]) -> Vec<usize> {
    let mut kept = kept.iter().peekable();
    range
        .filter(|&i| {
            let found = kept.peek().is_some_and(|k| **k == names[i]);
            if found {
                kept.next();
            }
            found
        })
        .collect()
}

/// One target for every input, or one per input (checked before anything is read):
/// each input's own.
pub fn per_input<R: Clone>(given: Vec<R>, inputs: usize, flag: &str) -> Result<Vec<R>> {
    match given.len() {
        1 => Ok(vec![given[0].clone(); inputs]),
        n if n == inputs => Ok(given),
        n => Err(LumenError::InvalidArgument(format!(
            "{flag}: give one for every image or one per image ({n} given for {inputs} images)"
        ))),
    }
}

/// The targets at `positions` of per-input `targets`.
pub fn targets_at<R: Clone>(targets: &Option<Vec<R>>, positions: &[usize]) -> Option<Vec<R>> {
    targets
        .as_ref()
        .map(|all| positions.iter().map(|&i| all[i].clone()).collect())
}

impl InputArgs {
    /// For commands that read files in batches at the model's own size: refuse
    /// `--size` and `--no-resize` rather than ignore them.
    pub fn require_model_size(&self, command: &str) -> Result<()> {
        if self.size.is_some() || self.no_resize {
            return Err(LumenError::InvalidArgument(format!(
                "`{command}` reads images at the model's own size: --size and --no-resize \
                 work with explain, compare and report"
            )));
        }
        Ok(())
    }

    /// The model's preprocessing, at `--size` or (`--no-resize`) the first readable
    /// image's size when asked; the model must take other sizes.
    fn data_config(
        &self,
        model: &impl TaskModel,
        files: &[PathBuf],
    ) -> Result<lumen::core::DataConfig> {
        let mut config = model.data_config().clone();
        let size = match (self.size, self.no_resize) {
            (Some(size), _) => size,
            (None, true) => match files.iter().find_map(|f| lumen::core::load_image(f).ok()) {
                Some(image) => [image.height() as usize, image.width() as usize],
                None => return Ok(config),
            },
            (None, false) => return Ok(config),
        };
        if size.iter().any(|&side| side > MAX_INPUT_SIDE) {
            return Err(LumenError::InvalidArgument(format!(
                "input size {}x{} is over {MAX_INPUT_SIDE} pixels a side, the most Lumen \
                 takes: the activations of a larger input take tens of gigabytes per \
                 image; give a smaller --size{}",
                size[0],
                size[1],
                if self.no_resize {
                    " instead of --no-resize"
                } else {
                    ""
                }
            )));
        }
        config.input_size = [config.input_size[0], size[0], size[1]];
        Ok(config)
    }
}

/// The image files of `folder`, sorted; its sub-folders searched too when `recursive`,
/// else listed in `skipped`.
fn collect_images(
    folder: &Path,
    recursive: bool,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = std::fs::read_dir(folder).map_err(|source| LumenError::Io {
        path: folder.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            if recursive {
                collect_images(&path, true, files, skipped)?;
            } else {
                skipped.push(path);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// Inputs that could not be read in this run: reported in `--json` and by the exit code.
static FAILURES: std::sync::Mutex<Vec<InputFailure>> = std::sync::Mutex::new(Vec::new());

/// Warn about inputs that could not be read and remember them for the end of the run.
pub fn record_failures(failures: &[InputFailure]) {
    for failure in failures {
        eprintln!(
            "warning: skipped {}: {}",
            failure.path.display(),
            failure.error
        );
    }
    FAILURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(failures.iter().cloned());
}

/// The inputs that could not be read so far.
pub fn recorded_failures() -> Vec<InputFailure> {
    FAILURES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Say what was adjusted while reading images (orientation, transparency).
pub fn warn_notes(inputs: &Inputs) {
    for (name, note) in &inputs.notes {
        eprintln!("note: {name}: {note}");
    }
}

const DEFAULT_NOISE_SAMPLES: usize = 25;
const DEFAULT_NOISE: f32 = 0.15;

/// Options of the methods.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Target layer (CAM methods); the model's default when omitted (see `lumen layers`).
    /// One-pass CAMs take several, comma-separated, and average their maps as
    /// pytorch-grad-cam does for a list of target layers.
    #[arg(long)]
    pub layer: Option<String>,
    /// Target class per image (comma-separated); the predicted class when omitted.
    #[arg(long, value_delimiter = ',')]
    pub target_class: Vec<usize>,
    /// D-RISE (detectors): random masks per box, one detector pass each.
    #[arg(long, default_value_t = lumen::methods::DEFAULT_MASKS)]
    pub masks: usize,
    /// Integrated Gradients: path points [default: 50; evaluate: 32].
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value = "zeros", value_parser = choice::<BaselineKind>,
          help = one_of("Integrated Gradients baseline (mean: each image's mean colour)", BaselineKind::NAMES))]
    pub baseline: BaselineKind,
    #[arg(long, default_value = "gausslegendre", value_parser = choice::<IntegrationRule>,
          help = one_of("Integrated Gradients integration rule", IntegrationRule::NAMES))]
    pub ig_method: IntegrationRule,
    /// Rows per forward/backward for IG, noise tunnels, Score-CAM, Ablation-CAM and D-RISE
    /// (the memory knob) [default: sized to the input and model].
    #[arg(long)]
    pub internal_batch_size: Option<usize>,
    /// Noise tunnels: noisy copies per image.
    #[arg(long, default_value_t = DEFAULT_NOISE_SAMPLES)]
    pub noise_samples: usize,
    /// Noise tunnels: noise level as a fraction of each image's value range (>= 0).
    #[arg(long, default_value_t = DEFAULT_NOISE, allow_negative_numbers = true)]
    pub noise: f32,
    /// Noise tunnels: absolute noise standard deviation (overrides --noise; >= 0).
    #[arg(long, allow_negative_numbers = true)]
    pub noise_stdev: Option<f32>,
    /// Noise tunnels: the wrapped method.
    #[arg(long, default_value = "saliency")]
    pub noise_base: String,
    /// Seed for noise and random baselines.
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value = "mean", value_parser = choice::<HeadFusion>,
          help = one_of("Attention methods: head fusion", HeadFusion::NAMES))]
    pub head_fusion: HeadFusion,
    /// Attention methods: fraction of the lowest attentions to discard, in [0, 1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub discard_ratio: f32,
    /// Follow the reference implementations where they deviate from the papers.
    #[arg(long)]
    pub compat: bool,
}

impl MethodArgs {
    /// The typed options, with `default_steps` when `--steps` is not given.
    pub fn options(&self, default_steps: usize) -> MethodOptions {
        MethodOptions {
            layer: self.layer.clone(),
            steps: self.steps.unwrap_or(default_steps),
            baseline: self.baseline,
            integration: self.ig_method,
            internal_batch_size: self.internal_batch_size,
            noise_samples: self.noise_samples,
            noise: match self.noise_stdev {
                Some(std) => Noise::Absolute(std),
                None => Noise::Relative(self.noise),
            },
            seed: self.seed,
            noise_base: self.noise_base.clone(),
            head_fusion: self.head_fusion,
            discard_ratio: self.discard_ratio,
            compat: self.compat,
            masks: self.masks,
            ..MethodOptions::default()
        }
    }

    /// The classes asked for, if any.
    pub fn targets(&self) -> Option<Vec<usize>> {
        (!self.target_class.is_empty()).then(|| self.target_class.clone())
    }
}

/// Where and how figures are drawn.
#[derive(Args, Debug, Clone)]
pub struct FigureArgs {
    /// Output folder (figures; the report's HTML).
    #[arg(long, default_value = "lumen-out")]
    pub out: PathBuf,
    /// Do not write figures.
    #[arg(long)]
    pub no_figures: bool,
    #[arg(long, default_value = "jet", value_parser = colormap,
          help = one_of("Colormap", &Colormap::NAMES))]
    pub colormap: Colormap,
    /// Overlay opacity in [0, 1].
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true, value_parser = opacity)]
    pub alpha: f32,
    /// Also write the polarity view (signed, positive, negative, absolute) of gradient methods.
    #[arg(long)]
    pub polarity: bool,
    /// An evaluation.json of `lumen evaluate` for this model: its cautions (methods
    /// below a floor, failed sanity checks) are written under the methods' figures
    /// (the bundled models' shipped verdicts are used without it; a file with no
    /// cautions silences them).
    #[arg(long)]
    pub verdicts: Option<PathBuf>,
}

impl FigureArgs {
    /// Warn about the drawing options given that a command does not read: `reads` names
    /// those it does (of `--colormap`, `--alpha`, `--polarity`, `--verdicts`), `reason`
    /// is the [`warn_ignored`] reason.
    pub fn warn_unread(&self, reads: &[&str], reason: &str) {
        let given = [
            ("--colormap", self.colormap != Colormap::Jet),
            ("--alpha", self.alpha != 0.5),
            ("--polarity", self.polarity),
            ("--verdicts", self.verdicts.is_some()),
        ];
        let unread: Vec<(&str, bool)> = given
            .into_iter()
            .filter(|(flag, _)| !reads.contains(flag))
            .collect();
        warn_ignored(&unread, reason);
    }

    /// The verdicts of `--verdicts` for `model`, else those shipped with a bundled
    /// model (shapes-cnn, shapes-vit, shapes-det, shapes-seg), else none. Read before
    /// the model loads, so that a bad file fails first.
    pub fn verdicts(&self, model: &str) -> Result<lumen::verdicts::Verdicts> {
        match &self.verdicts {
            Some(path) => lumen::verdicts::read_verdicts(path, model),
            None => Ok(lumen::verdicts::bundled_verdicts(model).unwrap_or_default()),
        }
    }

    /// The cautions of `verdicts` for a run whose CAMs use `layer` (`--layer`, else the
    /// `model`'s default layer): a CAM measured at another layer keeps its cautions off
    /// the figures, and a warning says so when the run draws that method (`methods`,
    /// comma-separated). A layer the model does not have, or one no CAM reads (a
    /// ViT's attention probabilities, the logits), is the run's error, not worth a
    /// warning first.
    pub fn cautions_at(
        &self,
        verdicts: &lumen::verdicts::Verdicts,
        layer: Option<&str>,
        model: &impl lumen::ExplainableModel,
        methods: &str,
    ) -> lumen::verdicts::Cautions {
        let default_layer = model.default_layer();
        let layer = layer.unwrap_or(&default_layer);
        let (cautions, dropped) = verdicts.at_layer(Some(layer));
        let known = model.check_layers(layer).is_ok_and(|layers| {
            layers.iter().all(|l| {
                matches!(
                    l.kind,
                    lumen::core::LayerKind::FeatureMap | lumen::core::LayerKind::Tokens { .. }
                )
            })
        });
        let drawn = |method: &str| {
            known && !self.no_figures && methods.split(',').any(|m| m.trim() == method)
        };
        for (method, measured) in dropped.into_iter().filter(|(m, _)| drawn(m)) {
            eprintln!(
                "warning: the verdicts on {method} were measured at layer `{measured}`, not \
                 `{layer}`: its cautions are not drawn"
            );
        }
        cautions
    }
}

/// How results are printed.
#[derive(Args, Debug, Clone)]
pub struct PrintArgs {
    /// Print the result as one JSON object on stdout (see docs/cli.md).
    #[arg(long)]
    pub json: bool,
    /// Only warnings and errors on stderr: no progress, cache line or summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The facade's options from the argument groups: the one place they are assembled.
/// `batch_size` is images per pass (`None`: sized to the input and model).
pub fn explain_options(
    method: &str,
    method_args: &MethodArgs,
    figure: &FigureArgs,
    batch_size: Option<usize>,
    default_steps: usize,
) -> ExplainOptions {
    ExplainOptions {
        targets: method_args.targets(),
        ..figure_options(method, method_args, figure, batch_size, default_steps)
    }
}

/// [`explain_options`] without targets, for any task's request type.
pub fn figure_options<R>(
    method: &str,
    method_args: &MethodArgs,
    figure: &FigureArgs,
    batch_size: Option<usize>,
    default_steps: usize,
) -> ExplainOptions<R> {
    ExplainOptions {
        method: method.to_string(),
        targets: None,
        colormap: figure.colormap,
        alpha: figure.alpha,
        save_dir: (!figure.no_figures).then(|| figure.out.clone()),
        method_options: method_args.options(default_steps),
        polarity: figure.polarity,
        cautions: Default::default(),
        cache: None,
        batch_size,
    }
}

/// `--batch-size` of the commands that explain the images given (explain, compare,
/// report); `lumen batch` has its own, which also sets how many files it reads at once.
#[derive(Args, Debug, Clone)]
pub struct PassArgs {
    /// Images per forward/backward pass: the memory knob for many or large images
    /// [default: sized to the input and model, 32 at 224 px on a ResNet].
    #[arg(long)]
    pub batch_size: Option<usize>,
}

impl PassArgs {
    /// The options of a command that runs several methods (the method named later).
    pub fn several_methods_options<R>(
        &self,
        method_args: &MethodArgs,
        figure: &FigureArgs,
    ) -> ExplainOptions<R> {
        figure_options("", method_args, figure, self.batch_size, 50)
    }
}

/// `--cache DIR` of the commands that explain given images (explain, compare, report).
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Reuse explanations from this folder and store new ones there, per image and
    /// method (keyed by the weights, the method and its options, the target and the
    /// image as the model sees it): a repeated run skips the model.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

impl CacheArgs {
    /// The cache, checked writable before any work.
    pub fn open(&self, model: &ModelArgs) -> Result<Option<std::sync::Arc<ExplanationCache>>> {
        Ok(open_cache(self.cache.as_deref(), model)?.map(std::sync::Arc::new))
    }
}

/// The cache in `dir` (when given) for `model`'s weights, checked writable first.
pub fn open_cache(dir: Option<&Path>, model: &ModelArgs) -> Result<Option<ExplanationCache>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    check_folder_writable("--cache", dir)?;
    let mut fingerprint = lumen::model_fingerprint(
        &model.model,
        model.num_classes.unwrap_or(1000),
        model.weights.as_deref(),
    )?;
    // Half precision changes the maps: its results are kept apart from float32's
    // (float32 keys stay as they were, so existing caches remain valid).
    if model.precision != Precision::F32 {
        fingerprint.push_str(&format!(" precision {}", model.precision));
    }
    Ok(Some(ExplanationCache::open(dir, fingerprint)?))
}

/// What a cache gave back, on stderr: `cache DIR: R of N results reused, S stored`;
/// nothing with `--quiet`.
pub fn report_cache(cache: Option<&ExplanationCache>, results: usize, quiet: bool) {
    report_cache_reuse(
        cache,
        cache.map_or(0, ExplanationCache::hits),
        results,
        quiet,
    );
}

/// [`report_cache`] with the reused count given: a batch counts the results it took
/// whole from the cache, not the cache's key lookups.
pub fn report_cache_reuse(
    cache: Option<&ExplanationCache>,
    reused: usize,
    results: usize,
    quiet: bool,
) {
    if let Some(cache) = cache.filter(|_| !quiet) {
        eprintln!(
            "cache {}: {reused} of {results} results reused, {} stored",
            cache.dir().display(),
            cache.stored()
        );
    }
}

/// One warning for the options a run was given but does not read: `flags` pairs each
/// option with whether it was given, `reason` says what would read them ("only
/// --top-images reads"; " it" or " them" is added).
pub fn warn_ignored(flags: &[(&str, bool)], reason: &str) {
    let given: Vec<&str> = flags
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect();
    if !given.is_empty() {
        eprintln!(
            "warning: {} ignored: {reason} {}",
            given.join(", "),
            if given.len() == 1 { "it" } else { "them" }
        );
    }
}

/// Check method names and options before loading anything, and warn about options
/// that none of the methods reads. `detector`: the model is a detector, which takes
/// D-RISE besides the registry's methods.
pub fn check_methods<R>(
    methods: &[String],
    method_args: &MethodArgs,
    options: &ExplainOptions<R>,
    detector: bool,
) -> Result<()> {
    if methods.is_empty() {
        return Err(LumenError::InvalidArgument("no method given".into()));
    }
    for (i, name) in methods.iter().enumerate() {
        if !(detector && name == lumen::detection::DRISE) {
            lumen::method_info(name)?;
        }
        if methods[..i].contains(name) {
            return Err(LumenError::InvalidArgument(format!(
                "method `{name}` is given twice: each method is one panel of the same maps"
            )));
        }
    }
    options.validate()?;
    if let Some(dir) = &options.save_dir {
        check_folder_writable("--out", dir)?;
    }
    warn_unused_method_options(methods, method_args)
}

/// Warn about the method options that none of `methods` reads (and refuse an unknown
/// `--noise-base`, read or not). Names outside the registry are black boxes: D-RISE
/// reads only `--masks`, `--seed` and `--internal-batch-size` (masks per pass), the evaluation
/// floors (random, center) only `--seed`.
pub fn warn_unused_method_options(methods: &[String], method_args: &MethodArgs) -> Result<()> {
    let base = lumen::method_info(&method_args.noise_base)
        .map_err(|e| LumenError::InvalidArgument(format!("--noise-base: {e}")))?
        .family;
    let families: Vec<Family> = methods
        .iter()
        .filter_map(|m| lumen::method_info(m).ok().map(|info| info.family))
        .collect();
    let drise = methods.iter().any(|m| m == lumen::detection::DRISE);
    for warning in method_args.unused(&families, base, drise) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

impl MethodArgs {
    /// The options given (different from their defaults) that no method of `families`
    /// reads, and a noise level that drowns the image; `base` is the noise tunnels'
    /// wrapped method, `drise` whether D-RISE runs too (it reads
    /// `--internal-batch-size`).
    fn unused(&self, families: &[Family], base: Family, drise: bool) -> Vec<String> {
        let tunnel = families.contains(&Family::NoiseTunnel);
        let uses = |wanted: &dyn Fn(Family) -> bool| {
            families.iter().any(|f| wanted(*f)) || (tunnel && wanted(base))
        };
        let mut unused = vec![];
        let mut check = |given: bool, flags: &str, read_by: &str, used: bool| {
            if given && !used {
                unused.push(format!("{flags} ignored: only {read_by} read it"));
            }
        };
        check(
            self.layer.is_some(),
            "--layer",
            "CAM methods",
            uses(&|f: Family| f.uses_layer()),
        );
        check(
            self.steps.is_some()
                || self.baseline != BaselineKind::default()
                || self.ig_method != IntegrationRule::default(),
            "--steps/--baseline/--ig-method",
            "Integrated Gradients (ig)",
            uses(&|f| f == Family::Path),
        );
        check(
            self.noise_samples != DEFAULT_NOISE_SAMPLES
                || self.noise != DEFAULT_NOISE
                || self.noise_stdev.is_some()
                || self.noise_base != "saliency",
            "--noise-samples/--noise/--noise-stdev/--noise-base",
            "the noise tunnels (smoothgrad, smoothgrad-sq, vargrad)",
            tunnel,
        );
        check(
            self.head_fusion != HeadFusion::default() || self.discard_ratio != 0.0,
            "--head-fusion/--discard-ratio",
            "the attention methods (rollout, attention-flow, grad-rollout)",
            uses(&|f| f == Family::Attention),
        );
        check(
            self.internal_batch_size.is_some(),
            "--internal-batch-size",
            "ig, the noise tunnels, scorecam, ablationcam and drise",
            drise
                || uses(&|f| {
                    matches!(
                        f,
                        Family::Path | Family::NoiseTunnel | Family::PerturbationCam
                    )
                }),
        );
        check(
            self.masks != lumen::methods::DEFAULT_MASKS,
            "--masks",
            "drise (detectors)",
            drise,
        );
        if tunnel && self.noise_stdev.is_none() && self.noise > 1.0 {
            unused.push(format!(
                "--noise {}: the noise's standard deviation is {}x each image's whole value \
                 range, so the noisy copies are mostly noise and the map says little about \
                 the image (SmoothGrad's paper uses 0.1-0.2; the default is {DEFAULT_NOISE})",
                self.noise, self.noise
            ));
        }
        if drise && self.masks < FEW_MASKS {
            unused.push(format!(
                "--masks {}: D-RISE averages the detector's response over random masks, and \
                 with fewer than {FEW_MASKS} its map is mostly the masks' sampling noise (the \
                 default is {}; the paper uses 5000)",
                self.masks,
                lumen::methods::DEFAULT_MASKS
            ));
        }
        unused
    }
}

/// Below this many masks a D-RISE map is mostly sampling noise: its noise's standard
/// deviation is twice the default's (it falls as one over the square root of the
/// count), and on shapes-det a 16-mask map shows no box.
const FEW_MASKS: usize = lumen::methods::DEFAULT_MASKS / 4;

/// The whole value range of an image normalised by `config`: pixels in `[0, 1]`
/// become `[-mean/std, (1-mean)/std]`, so the widest channel spans `1 / std` (4.4 for
/// ImageNet's statistics). What `--noise-stdev` and `--sensitivity-radius`, in
/// normalised units, compare against.
fn normalised_range(config: &lumen::core::DataConfig) -> f32 {
    config
        .std
        .iter()
        .map(|s| 1.0 / s)
        .fold(f32::NEG_INFINITY, f32::max)
}

impl MethodArgs {
    /// Warn when `--noise-stdev` (normalised units, known against the image only once
    /// the model is loaded) is larger than an image's whole value range: the noisy
    /// copies would be mostly noise, as with `--noise` above 1 (warned before loading).
    pub fn warn_drowning_noise<S: AsRef<str>>(
        &self,
        methods: &[S],
        config: &lumen::core::DataConfig,
    ) {
        let tunnel = methods.iter().any(|m| {
            lumen::method_info(m.as_ref()).is_ok_and(|info| info.family == Family::NoiseTunnel)
        });
        let (Some(stdev), true) = (self.noise_stdev, tunnel) else {
            return;
        };
        let advice =
            "SmoothGrad's paper uses 0.1-0.2 of the range; --noise sets it as that fraction";
        if let Some(warning) = drowning_warning("--noise-stdev", stdev, config, advice) {
            eprintln!("warning: {warning}");
        }
    }
}

/// The warning for a noise level `value` of `flag` (normalised units) above an image's
/// whole value range under `config`, ending with `advice`.
pub fn drowning_warning(
    flag: &str,
    value: f32,
    config: &lumen::core::DataConfig,
    advice: &str,
) -> Option<String> {
    let range = normalised_range(config);
    // 1e30 as written, not as thirty-one digits.
    let readable = |v: f32| match v.abs() >= 1e5 {
        true => format!("{v:.1e}"),
        false => format!("{}", (v * 100.0).round() / 100.0),
    };
    (value > range).then(|| {
        format!(
            "{flag} {}: {}x the whole value range of an image normalised for this model \
             ({range:.2} in normalised units), so the perturbed copies are mostly noise and \
             say little about the image ({advice})",
            readable(value),
            readable(value / range)
        )
    })
}

/// A progress bar on stderr: drawn on a terminal, a line every
/// [`PROGRESS_LINE_EVERY`] otherwise (logs, CI), nothing with `--quiet`.
pub fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    report_when_not_a_terminal(&bar, what);
    bar
}

/// A [`progress`] bar over the inputs of a chunked run (finish it with
/// `finish_and_clear`, on errors too); its elapsed time ticks while a chunk is worked on.
fn chunk_progress(inputs: usize, what: &str, quiet: bool) -> ProgressBar {
    let bar = progress(inputs as u64, what, quiet);
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

/// How often progress is written as a line when stderr is not a terminal.
pub const PROGRESS_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// indicatif draws nothing off a terminal: there, write a line now and then until the
/// bar finishes, so that long work in a log is not silent.
fn report_when_not_a_terminal(bar: &ProgressBar, what: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        return;
    }
    let (bar, what) = (bar.clone(), what.to_string());
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut next = PROGRESS_LINE_EVERY;
        while !bar.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if start.elapsed() >= next && !bar.is_finished() {
                let counted = match bar.length() {
                    Some(len) if len > 0 => format!(" {}/{len}", bar.position()),
                    _ => String::new(),
                };
                eprintln!("{what}:{counted} {} s", start.elapsed().as_secs());
                next += PROGRESS_LINE_EVERY;
            }
        }
    });
}

/// The one JSON shape of every command's `--json`.
#[derive(Serialize)]
pub struct JsonOutput<'a, T: Serialize> {
    /// The subcommand.
    pub command: &'static str,
    /// The model's name.
    pub model: &'a str,
    /// The device used.
    pub device: &'a str,
    /// The float precision the model computed in (`--precision`): f32, f16 or bf16.
    pub precision: &'static str,
    /// The command's results.
    pub results: T,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl<T: Serialize> JsonOutput<'_, T> {
    /// Print on stdout, with the inputs that could not be read under `failures`; a
    /// closed pipe (`| head`) ends quietly.
    pub fn print(&self) {
        use std::io::Write;
        let mut value = serde_json::to_value(self).expect("results serialise");
        value["failures"] = serde_json::to_value(recorded_failures()).expect("failures serialise");
        let text = serde_json::to_string_pretty(&value).expect("results serialise");
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}").is_err() {
            std::process::exit(0);
        }
    }
}

/// Check before any work that files can be written into the folder `dir` (it exists
/// or can be made, and is writable); the error names the flag.
pub fn check_folder_writable(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(LumenError::InvalidArgument(format!(
            "{flag} {} is a file, not a folder: give a folder for the outputs",
            dir.display()
        )));
    }
    let fail = |e: std::io::Error| {
        LumenError::InvalidArgument(format!(
            "{flag} {}: cannot write there ({e})",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".lumen-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(probe).ok();
    Ok(())
}

/// Check before any work that a file can be written at `path` (its folder exists or
/// can be made, and is writable); the error names the flag.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(LumenError::InvalidArgument(format!(
            "{flag} {} is a folder: give a file name",
            path.display()
        )));
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    check_folder_writable(flag, &dir).map_err(|e| match e {
        LumenError::InvalidArgument(_) => LumenError::InvalidArgument(format!(
            "{flag} {}: cannot write there ({} is not a writable folder)",
            path.display(),
            dir.display()
        )),
        other => other,
    })
}

/// A model of any task, as `--model` names it.
pub enum AnyModel {
    Classifier(Box<LoadedModel>),
    Segmentor(Box<lumen::LoadedSegmentor>),
    Detector(Box<lumen::LoadedDetector>),
}

impl ModelArgs {
    /// Load the model, whatever its task.
    pub fn load_any(&self) -> Result<AnyModel> {
        Ok(if self.is_segmentation() {
            AnyModel::Segmentor(Box::new(self.load_segmentor()?))
        } else if self.is_detection() {
            AnyModel::Detector(Box::new(self.load_detector()?))
        } else {
            AnyModel::Classifier(Box::new(self.load()?))
        })
    }
}

impl ModelArgs {
    /// The architecture of any task for commands that do not depend on weights (layer
    /// names, geometry): the weights when given, else random ones (a segmentor with 2
    /// classes, a detector with 1, a classifier with 1000, unless --num-classes or a
    /// bundled model says otherwise).
    pub fn architecture_any(&self) -> Result<AnyModel> {
        if self.weights.is_some() {
            return self.load_any();
        }
        self.check_name()?;
        let device = self.device()?;
        let classes = self.classes()?;
        Ok(if self.is_segmentation() {
            AnyModel::Segmentor(Box::new(lumen::LoadedSegmentor::init(
                &self.model,
                classes.unwrap_or(2),
                &device,
            )?))
        } else if self.is_detection() {
            AnyModel::Detector(Box::new(lumen::LoadedDetector::init(
                &self.model,
                classes.unwrap_or(1),
                &device,
            )?))
        } else {
            AnyModel::Classifier(Box::new(self.architecture()?))
        })
    }
}

/// Run `$body` with `$model` bound to the loaded model of any task (the commands are
/// generic over [`lumen::TaskModel`]; each arm instantiates them for one task).
macro_rules! with_any_model {
    ($any:expr, |$model:ident| $body:expr) => {
        match $any {
            $crate::args::AnyModel::Classifier($model) => {
                let $model = *$model;
                $body
            }
            $crate::args::AnyModel::Segmentor($model) => {
                let $model = *$model;
                $body
            }
            $crate::args::AnyModel::Detector($model) => {
                let $model = *$model;
                $body
            }
        }
    };
}
pub(crate) use with_any_model;

/// What `--target-class` asks of a task: its requests for `images` inputs, or `None`
/// for the task's default (the predicted class, the dominant class over its predicted
/// region, the best detection).
pub trait RequestFromClasses: Sized {
    fn from_classes(classes: &[usize], images: usize) -> Result<Option<Vec<Self>>>;
}

impl RequestFromClasses for usize {
    fn from_classes(classes: &[usize], images: usize) -> Result<Option<Vec<Self>>> {
        (!classes.is_empty())
            .then(|| per_input(classes.to_vec(), images, "--target-class"))
            .transpose()
    }
}

impl RequestFromClasses for lumen::SegmentationRequest {
    fn from_classes(classes: &[usize], images: usize) -> Result<Option<Vec<Self>>> {
        if classes.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            per_input(classes.to_vec(), images, "--target-class")?
                .into_iter()
                .map(lumen::SegmentationRequest::predicted)
                .collect(),
        ))
    }
}

impl RequestFromClasses for Vec<lumen::BoxRequest> {
    fn from_classes(classes: &[usize], _images: usize) -> Result<Option<Vec<Self>>> {
        if classes.is_empty() {
            Ok(None)
        } else {
            Err(LumenError::InvalidArgument(
                "--target-class does not apply to detectors: each image's best detection is explained (`lumen explain --box` chooses detections)".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_a_bounded_share_of_a_folder() {
        let default = DEFAULT_READ_CHUNK_MB << 20;
        assert_eq!(images_per_chunk(default, [224, 224]), 95);
        assert_eq!(images_per_chunk(default, [8192, 8192]), 1);
        assert!(images_per_chunk(default, [1, 1]) > 1_000_000);
        // What the CLI tests set (LUMEN_READ_CHUNK_MB=1 at 128 px): two images a chunk.
        assert_eq!(images_per_chunk(1 << 20, [128, 128]), 2);
    }

    #[test]
    fn a_folder_is_read_in_chunks_that_skip_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![];
        for name in ["a", "b", "c", "d", "e", "f"] {
            let path = dir.path().join(format!("{name}.png"));
            match name {
                "d" => std::fs::write(&path, b"not a png").unwrap(),
                _ => image::RgbImage::new(8, 8).save(&path).unwrap(),
            }
            files.push(path);
        }
        let plan = |files: Vec<PathBuf>| InputPlan::Files {
            names: lumen::unique_names(&files),
            files,
            config: lumen::core::DataConfig::imagenet(128),
        };
        let device = lumen::core::default_device().unwrap();
        let mut chunks = vec![];
        // 1 MiB at 128 px: two images a chunk.
        plan(files.clone())
            .for_each_chunk_of(1 << 20, usize::MAX, &device, |chunk| {
                assert_eq!(chunk.inputs.len(), chunk.positions.len());
                chunks.push((chunk.positions, chunk.covered));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            chunks,
            [(vec![0, 1], 2), (vec![2], 2), (vec![4, 5], 2)],
            "positions and files covered of each chunk"
        );
        // Fewer images a chunk for the methods that run many rows per image.
        let mut sizes = vec![];
        plan(files.clone())
            .for_each_chunk_of(1 << 30, 2, &device, |chunk| {
                sizes.push(chunk.covered);
                Ok(())
            })
            .unwrap();
        assert_eq!(sizes, [2, 2, 2]);
        assert_eq!(images_per_call(&["gradcam", "saliency"]), usize::MAX);
        for heavy in ["ig", "smoothgrad", "scorecam"] {
            assert_eq!(images_per_call(&["gradcam", heavy]), MANY_ROWS_CHUNK_IMAGES);
        }
        assert_eq!(images_per_call(&["drise"]), DRISE_CHUNK_IMAGES);
        // Nothing readable: the error names the file.
        let error = plan(vec![files[3].clone()])
            .for_each_chunk_of(1 << 20, usize::MAX, &device, |_| {
                panic!("no chunk has an image")
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("d.png"), "{error}");
    }

    #[test]
    fn a_chunk_knows_which_inputs_it_read() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let kept: Vec<String> = ["b", "d"].map(String::from).to_vec();
        assert_eq!(positions_of(&names, 1..5, &kept), vec![1, 3]);
        assert_eq!(positions_of(&names, 0..2, &[]), Vec::<usize>::new());
        assert_eq!(positions_of(&names, 2..5, &names[2..]), vec![2, 3, 4]);
    }

    #[test]
    fn one_target_serves_every_input_and_a_list_must_match() {
        assert_eq!(per_input(vec![3], 4, "--target-class").unwrap(), vec![3; 4]);
        assert_eq!(
            per_input(vec![1, 2], 2, "--target-class").unwrap(),
            vec![1, 2]
        );
        let error = per_input(vec![1, 2], 3, "--target-class")
            .unwrap_err()
            .to_string();
        assert!(error.contains("2 given for 3 images"), "{error}");
        let all = Some(vec![10, 11, 12, 13]);
        assert_eq!(targets_at(&all, &[1, 3]), Some(vec![11, 13]));
        assert_eq!(targets_at::<usize>(&None, &[0]), None);
    }

    #[test]
    fn too_few_drise_masks_are_warned_about_from_the_bound_down() {
        #[derive(clap::Parser)]
        struct Parsed {
            #[command(flatten)]
            method: MethodArgs,
        }
        let warnings = |masks: usize| {
            let masks = masks.to_string();
            let parsed = <Parsed as clap::Parser>::parse_from(["lumen", "--masks", &masks]);
            let drise = parsed.method.unused(&[], Family::Gradient, true);
            let other = parsed
                .method
                .unused(&[Family::Gradient], Family::Gradient, false);
            (drise, other)
        };
        let (few, elsewhere) = warnings(FEW_MASKS - 1);
        assert!(
            few.iter()
                .any(|w| w.contains("mostly the masks' sampling noise")),
            "{few:?}"
        );
        // Without D-RISE the flag is unread, which is the warning instead.
        assert!(
            elsewhere.iter().all(|w| !w.contains("sampling noise")),
            "{elsewhere:?}"
        );
        assert!(warnings(FEW_MASKS).0.is_empty());
        assert!(warnings(lumen::methods::DEFAULT_MASKS).0.is_empty());
    }
}
