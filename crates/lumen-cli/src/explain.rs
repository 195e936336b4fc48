//! `lumen explain` and `lumen layers`.

use std::path::PathBuf;

use clap::Args;
use lumen::core::burn::tensor::{Tensor, TensorData};
use lumen::core::{DataConfig, ExplainableModel, LumenError, Result, to_host};
use lumen::methods::{MethodOptions, by_name};
use lumen::report::Colormap;
use lumen::{ExplainOptions, Inputs, LoadedModel, ZooModel, device_from_str, explain_prediction};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

/// Which model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Architecture, as timm names it (e.g. resnet18, vit_tiny_patch16_224, test_resnet).
    #[arg(long)]
    model: String,
    /// Weights: a timm state dict as .safetensors, .pth or .pt.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Number of output classes of the weights (timm architectures; default 1000).
    #[arg(long)]
    num_classes: Option<usize>,
    /// Device: cpu, wgpu, wgpu:N, tch:cpu, tch:cuda:N, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ModelArgs {
    /// Load the model: bundled weights for the shapes models, else `--weights`.
    pub fn load(&self) -> Result<(LoadedModel, lumen::Device)> {
        let device = device_from_str(&self.device)?;
        if lumen::models::BUNDLED.contains(&self.model.as_str()) && self.weights.is_none() {
            return Ok((LoadedModel::bundled(&self.model, &device)?, device));
        }
        let weights = self.weights.as_ref().ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "--weights is required for `{}`: pass a timm state dict (.safetensors, .pth or .pt), \
                 or use a bundled model ({})",
                self.model,
                lumen::models::BUNDLED.join(", ")
            ))
        })?;
        let num_classes = self.num_classes.unwrap_or(1000);
        Ok((
            LoadedModel::load(&self.model, num_classes, weights, &device)?,
            device,
        ))
    }
}

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files (one batch).
    #[arg(long, num_args = 1.., required_unless_present = "input_npy", conflicts_with = "input_npy")]
    image: Vec<PathBuf>,
    /// An already-normalised float32 array [B,3,H,W] (.npy).
    #[arg(long)]
    input_npy: Option<PathBuf>,
    /// Method name.
    #[arg(long)]
    method: String,
    /// Target class per image (comma-separated); the predicted class when omitted.
    #[arg(long, value_delimiter = ',')]
    target_class: Vec<usize>,
    /// Write the raw result as float32 .npy.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Keep attention maps on the patch grid in --save-raw (else resized to the input).
    #[arg(long)]
    grid: bool,
    #[command(flatten)]
    pub method_args: MethodArgs,
    #[command(flatten)]
    pub figure: FigureArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of the methods.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Target layer (CAM methods); the model's default when omitted.
    #[arg(long)]
    layer: Option<String>,
    /// Integrated Gradients: path points.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Integrated Gradients baseline: zeros, black, white, blur, uniform, mean (each image's mean colour).
    #[arg(long, default_value = "zeros")]
    baseline: String,
    /// Integrated Gradients rule: gausslegendre, riemann_left, riemann_right, riemann_middle, riemann_trapezoid.
    #[arg(long, default_value = "gausslegendre")]
    ig_method: String,
    /// Rows per forward/backward for IG, noise tunnels, Score-CAM and Ablation-CAM (the memory knob).
    #[arg(long)]
    internal_batch_size: Option<usize>,
    /// Noise tunnels: samples per image.
    #[arg(long, default_value_t = 25)]
    samples: usize,
    /// Noise tunnels: noise level as a fraction of the input range.
    #[arg(long, default_value_t = 0.15)]
    noise: f32,
    /// Noise tunnels: absolute noise standard deviation (overrides --noise).
    #[arg(long)]
    noise_stdev: Option<f32>,
    /// Noise tunnels: the wrapped method.
    #[arg(long, default_value = "saliency")]
    noise_base: String,
    /// Seed for noise and random baselines.
    #[arg(long)]
    seed: Option<u64>,
    /// Attention methods: head fusion (mean, max, min).
    #[arg(long, default_value = "mean")]
    head_fusion: String,
    /// Attention methods: fraction of the lowest attentions to discard.
    #[arg(long, default_value_t = 0.0)]
    discard_ratio: f32,
    /// Follow the reference implementations where they deviate from the papers.
    #[arg(long)]
    compat: bool,
}

/// Where and how figures are drawn.
#[derive(Args, Debug, Clone)]
pub struct FigureArgs {
    /// Folder for the figures (one PNG per image: original | heatmap | overlay).
    #[arg(long, default_value = "lumen-out")]
    pub out: PathBuf,
    /// Do not write figures.
    #[arg(long)]
    pub no_figures: bool,
    /// Colormap: viridis, plasma, inferno, magma, jet, turbo, hot, gray, rdbu.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// Overlay opacity in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Also write the polarity view (signed, positive, negative, absolute) of gradient methods.
    #[arg(long)]
    pub polarity: bool,
}

#[derive(Serialize)]
struct LayerRow {
    name: String,
    kind: String,
}

pub fn layers(args: LayersArgs) -> Result<()> {
    let device = device_from_str(&args.model.device)?;
    // Layer names do not depend on weights: build the architecture when none are given.
    let loaded = match &args.model.weights {
        Some(_) => args.model.load()?.0,
        None => LoadedModel::init(
            &args.model.model,
            args.model.num_classes.unwrap_or(1000),
            &device,
        )?,
    };
    let rows: Vec<LayerRow> = loaded
        .model
        .layers()
        .into_iter()
        .map(|l| LayerRow {
            name: l.name,
            kind: l.kind.to_string(),
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serialisable")
        );
    } else {
        let default = loaded.model.default_layer();
        for row in rows {
            let mark = if row.name == default {
                "  (default)"
            } else {
                ""
            };
            println!("{:<24} {}{mark}", row.name, row.kind);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ExplainReport<'a> {
    model: &'a str,
    method: &'a str,
    device: &'a str,
    results: &'a [lumen::ExplanationResult],
    heatmap_shape: Vec<usize>,
    saved_raw: Option<PathBuf>,
}

fn read_npy(path: &PathBuf, config: &DataConfig, device: &lumen::Device) -> Result<Tensor<4>> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| LumenError::Io {
        path: path.clone(),
        source: std::io::Error::other(format!("not a float32 .npy array: {e}")),
    })?;
    let shape = array.shape().to_vec();
    if shape.len() != 4 || shape[1] != 3 {
        return Err(LumenError::shape(
            format!("--input-npy {}", path.display()),
            format!(
                "[B,3,{},{}] float32",
                config.input_size[1], config.input_size[2]
            ),
            format!("{shape:?}"),
        ));
    }
    let values: Vec<f32> = array.iter().copied().collect();
    Ok(Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        device,
    ))
}

fn write_npy(path: &PathBuf, values: Vec<f32>, shape: &[usize]) -> Result<()> {
    let array = ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches values");
    ndarray_npy::write_npy(path, &array).map_err(|e| LumenError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The method options of the command line.
pub fn method_options(args: &MethodArgs) -> MethodOptions {
    MethodOptions {
        layer: args.layer.clone(),
        steps: args.steps,
        baseline: args.baseline.clone(),
        ig_method: args.ig_method.clone(),
        internal_batch_size: args.internal_batch_size,
        samples: args.samples,
        noise: args.noise,
        noise_stdev: args.noise_stdev,
        seed: args.seed,
        noise_base: args.noise_base.clone(),
        head_fusion: args.head_fusion.clone(),
        discard_ratio: args.discard_ratio,
        compat: args.compat,
        ..MethodOptions::default()
    }
}

pub fn colormap(name: &str) -> Result<Colormap> {
    Colormap::from_name(name).map_err(LumenError::InvalidArgument)
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let method_options = method_options(&args.method_args);
    // Check the method and its options before loading anything.
    by_name::<ZooModel>(&args.method, &method_options)?;
    let colormap = colormap(&args.figure.colormap)?;
    let (loaded, device) = args.model.load()?;
    let inputs = match &args.input_npy {
        Some(path) => Inputs::from_tensor(
            read_npy(path, &loaded.data_config, &device)?,
            &loaded.data_config,
        ),
        None => Inputs::from_files(&args.image, &loaded.data_config, &device)?,
    };
    let options = ExplainOptions {
        method: args.method.clone(),
        target_class: (!args.target_class.is_empty()).then(|| args.target_class.clone()),
        colormap,
        alpha: args.figure.alpha,
        save_dir: (!args.figure.no_figures).then(|| args.figure.out.clone()),
        method_options,
        polarity: args.figure.polarity,
    };
    let (explanation, results) = explain_prediction(&loaded, &inputs, &options)?;
    let [_, _, height, width] = inputs.tensor.dims();

    if let Some(path) = &args.save_raw {
        match &explanation.attributions {
            Some(attr) => write_npy(path, to_host(attr.clone()), &attr.dims())?,
            None => {
                let maps = explanation.heatmaps.clone();
                let [_, h, w] = maps.dims();
                let maps = if args.grid || [h, w] == [height, width] {
                    maps
                } else {
                    maps.resize([height, width])
                };
                write_npy(path, maps.to_vec(), &maps.dims())?;
            }
        }
    }

    if args.json {
        let report = ExplainReport {
            model: &loaded.name,
            method: &args.method,
            device: &args.model.device,
            results: &results,
            heatmap_shape: explanation.heatmaps.dims().to_vec(),
            saved_raw: args.save_raw.clone(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        for r in &results {
            let name = r
                .predicted_name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            println!(
                "{}: predicted {}{name} ({:.1}%), explained class {} with {}",
                r.image,
                r.predicted_class,
                100.0 * r.confidence,
                r.target_class,
                r.method
            );
            for p in &r.paths {
                println!("  wrote {}", p.display());
            }
        }
        if let Some(path) = &args.save_raw {
            println!("raw result written to {}", path.display());
        }
    }
    Ok(())
}
