//! `lumen explain` and `lumen layers`.

use std::path::PathBuf;

use clap::Args;
use lumen::core::burn::tensor::activation::softmax;
use lumen::core::burn::tensor::{Tensor, TensorData};
use lumen::core::{
    ClassLogit, DataConfig, ExplainableModel, LumenError, Result, load_batch, predicted_classes,
    to_host,
};
use lumen::methods::{MethodOptions, by_name};
use lumen::{LoadedModel, ZooModel, device_from_str};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

/// Which model to load.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Architecture, as timm names it (e.g. resnet18, vit_tiny_patch16_224, test_resnet).
    #[arg(long)]
    model: String,
    /// Weights: a timm state dict as .safetensors, .pth or .pt.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Number of output classes of the weights.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Device: cpu, wgpu, wgpu:N, tch:cpu, tch:cuda:N, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ModelArgs {
    fn load(&self) -> Result<(LoadedModel, lumen::Device)> {
        let device = device_from_str(&self.device)?;
        let weights = self.weights.as_ref().ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "--weights is required for `{}`: pass a timm state dict (.safetensors, .pth or .pt)",
                self.model
            ))
        })?;
        Ok((
            LoadedModel::load(&self.model, self.num_classes, weights, &device)?,
            device,
        ))
    }
}

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (one batch).
    #[arg(long, num_args = 1.., required_unless_present = "input_npy", conflicts_with = "input_npy")]
    image: Vec<PathBuf>,
    /// An already-normalised float32 array [B,3,H,W] (.npy).
    #[arg(long)]
    input_npy: Option<PathBuf>,
    /// Method name.
    #[arg(long)]
    method: String,
    /// Target layer (CAM methods); the model's default when omitted.
    #[arg(long)]
    layer: Option<String>,
    /// Target class per image (comma-separated); the predicted class when omitted.
    #[arg(long, value_delimiter = ',')]
    target_class: Vec<usize>,
    /// Write the raw result as float32 .npy.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Keep attention maps on the patch grid in --save-raw (else resized to the input).
    #[arg(long)]
    grid: bool,
    /// Integrated Gradients: path points.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Integrated Gradients baseline: zeros, black, white, blur, uniform.
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
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
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
        None => LoadedModel::init(&args.model.model, args.model.num_classes, &device)?,
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
struct ExplainReport {
    model: String,
    method: String,
    layer: Option<String>,
    device: String,
    predicted_class: Vec<usize>,
    target_class: Vec<usize>,
    confidence: Vec<f32>,
    heatmap_shape: Vec<usize>,
    convergence_delta: Option<Vec<f32>>,
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

pub fn run(args: ExplainArgs) -> Result<()> {
    let mut options = MethodOptions {
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
    };
    // Check the method and its options before loading anything.
    by_name::<ZooModel>(&args.method, &options)?;
    let (loaded, device) = args.model.load()?;
    let model = &loaded.model;
    if let Some(layer) = &args.layer {
        model.layer(layer)?;
    }
    let input = match &args.input_npy {
        Some(path) => read_npy(path, &loaded.data_config, &device)?,
        None => load_batch(&args.image, &loaded.data_config, &device)?,
    };
    model.check_input(&input)?;
    let [batch, _, height, width] = input.dims();

    let logits = model.forward(input.clone());
    let predicted = predicted_classes(&logits);
    let probabilities = to_host(softmax(logits, 1));
    let num_classes = probabilities.len() / batch;
    let targets = if args.target_class.is_empty() {
        predicted.clone()
    } else if args.target_class.len() == batch {
        args.target_class.clone()
    } else {
        return Err(LumenError::InvalidArgument(format!(
            "--target-class takes one class per image: {} given for {batch} images",
            args.target_class.len()
        )));
    };
    if let Some(&class) = targets.iter().find(|&&c| c >= num_classes) {
        return Err(LumenError::ClassOutOfRange { class, num_classes });
    }
    let confidence = predicted
        .iter()
        .enumerate()
        .map(|(i, &c)| probabilities[i * num_classes + c])
        .collect();

    options.mean = loaded.data_config.mean;
    options.std = loaded.data_config.std;
    let method = by_name::<ZooModel>(&args.method, &options)?;
    let explanation = method.explain(model, input, &ClassLogit(targets.clone()))?;

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

    let uses_layer = matches!(
        args.method.as_str(),
        "gradcam"
            | "gradcam++"
            | "xgradcam"
            | "layercam"
            | "hirescam"
            | "gradcam-elementwise"
            | "eigencam"
            | "eigengradcam"
            | "scorecam"
            | "ablationcam"
    );
    let report = ExplainReport {
        model: loaded.name.clone(),
        method: args.method.clone(),
        layer: uses_layer.then(|| args.layer.clone().unwrap_or_else(|| model.default_layer())),
        device: args.model.device.clone(),
        predicted_class: predicted,
        target_class: targets,
        confidence,
        heatmap_shape: explanation.heatmaps.dims().to_vec(),
        convergence_delta: explanation.convergence_delta.clone(),
        saved_raw: args.save_raw.clone(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        for i in 0..batch {
            println!(
                "image {i}: predicted {} ({:.1}%), explained class {} with {}",
                report.predicted_class[i],
                100.0 * report.confidence[i],
                report.target_class[i],
                report.method
            );
        }
        if let Some(path) = &report.saved_raw {
            println!("raw result written to {}", path.display());
        }
    }
    Ok(())
}
