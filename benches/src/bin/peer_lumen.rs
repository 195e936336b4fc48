//! Lumen's side of the peer harness (`benches/peers/peers.py`): times the same work
//! the harness gives pytorch-grad-cam, captum and AutoTimm, on the same weights and
//! input, and prints one JSON object per work on stdout.
//!
//! ```text
//! peer_lumen --model resnet18 --weights W.safetensors --input x.npy \
//!     --works forward,gradcam,gradcam++,ig,smoothgrad [--device cpu] [--precision f32] [--repeats 5]
//! ```
//!
//! Each run ends with the maps on the host, so a GPU's queued work is counted.

use std::time::Instant;

use clap::Parser;
use lumen::core::{ClassLogit, ExplainableModel, to_host};
use lumen::methods::{CamMap, MethodOptions, Noise, ONE_PASS_CAMS, by_name, cams_from_one_pass};
use lumen::{LoadedModel, Precision, ZooModel, device_with_precision, read_npy_batch, write_npy};

#[derive(Parser)]
struct Args {
    /// timm architecture.
    #[arg(long)]
    model: String,
    /// Its weights (a timm state dict as .safetensors).
    #[arg(long)]
    weights: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Normalised input [B,3,H,W] as float32 .npy.
    #[arg(long)]
    input: std::path::PathBuf,
    /// Comma-separated: forward, cams8 (eight CAMs from one pass), or any method name
    /// (gradcam, gradcam++, ig, smoothgrad, scorecam, ...).
    #[arg(long, value_delimiter = ',')]
    works: Vec<String>,
    /// Images of the input used by the costly works (ig, smoothgrad, scorecam).
    #[arg(long, default_value_t = 2)]
    heavy_images: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Float precision: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Integrated Gradients steps and noise-tunnel samples.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// CAM layer.
    #[arg(long, default_value = "layer4")]
    layer: String,
    /// Rows per internal batch of IG and noise tunnels (default: the methods' own).
    #[arg(long)]
    internal_batch_size: Option<usize>,
    /// Let the device draw the noise (no seed) instead of the seeded host stream.
    #[arg(long)]
    unseeded: bool,
    /// Target class of each image, comma-separated (default: image i gets 7i mod
    /// num_classes).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<usize>,
    /// Also write each method's maps to DIR/WORK.npy, as `lumen explain --save-raw`
    /// writes them (attributions of gradient methods, else heatmaps), for
    /// tools/device/agreement.py.
    #[arg(long)]
    save_maps: Option<std::path::PathBuf>,
    /// Also report each timed run's stages (forward, backward, method math, ...), as
    /// `lumen --profile` does; each stage waits for the device at its end, so the
    /// runs are slower and the plain medians should come from a run without it.
    #[arg(long)]
    profile: bool,
}

fn main() -> lumen::Result<()> {
    let args = Args::parse();
    if args.repeats == 0 {
        return Err(lumen::LumenError::InvalidArgument(
            "--repeats must be at least 1 (the median of no runs is undefined)".into(),
        ));
    }
    if let Some(folder) = &args.save_maps {
        // Before the work, so that an unwritable folder fails at once.
        std::fs::create_dir_all(folder).map_err(|e| {
            lumen::LumenError::InvalidArgument(format!("--save-maps {}: {e}", folder.display()))
        })?;
    }
    if args.profile {
        lumen::core::profile::enable();
    }
    let device = device_with_precision(&args.device, args.precision)?;
    let loaded = LoadedModel::load(&args.model, args.num_classes, &args.weights, &device)?;
    let model: &ZooModel = &loaded.model;
    let input = read_npy_batch(&args.input, &device)?;
    let options = MethodOptions {
        layer: Some(args.layer.clone()),
        steps: args.steps,
        noise_samples: args.steps,
        noise: Noise::Absolute(0.15),
        seed: (!args.unseeded).then_some(0),
        internal_batch_size: args.internal_batch_size,
        ..MethodOptions::default()
    };
    for work in &args.works {
        let heavy = matches!(work.as_str(), "ig" | "smoothgrad" | "scorecam");
        let images = if heavy {
            args.heavy_images.min(input.dims()[0])
        } else {
            input.dims()[0]
        };
        let x = input.clone().narrow(0, 0, images);
        let classes: Vec<usize> = (0..images)
            .map(|i| {
                args.classes
                    .get(i)
                    .copied()
                    .unwrap_or(i * 7 % args.num_classes)
            })
            .collect();
        if let Some(&class) = classes.iter().find(|&&class| class >= args.num_classes) {
            return Err(lumen::LumenError::InvalidArgument(format!(
                "--classes: {class} is out of range for {} classes",
                args.num_classes
            )));
        }
        let target = ClassLogit(classes);
        let run = || -> lumen::Result<()> {
            if work == "forward" {
                to_host(model.forward(x.clone()))?;
            } else if work == "cams8" {
                // The eight gradient and activation CAMs from one forward and backward
                // (what `compare` does); KPCA-CAM's kernel PCA is another cost class.
                let kinds: Vec<&dyn CamMap> = ONE_PASS_CAMS
                    .iter()
                    .copied()
                    .filter(|kind| kind.name() != "kpcacam")
                    .collect();
                for maps in cams_from_one_pass(model, x.clone(), &target, &args.layer, &kinds)? {
                    maps.to_vec()?;
                }
            } else {
                let method = by_name::<ZooModel>(work, &options)?;
                method
                    .explain(model, x.clone(), &target)?
                    .heatmaps
                    .to_vec()?;
            }
            Ok(())
        };
        // Warm-up (kernel compilation, autotuning, allocator), timed apart: on a GPU
        // backend it is the first call's cost a user pays once per process.
        let first_start = Instant::now();
        run()?;
        let first_run_ms = first_start.elapsed().as_secs_f64() * 1e3;
        lumen::core::profile::reset();
        let mut times: Vec<f64> = (0..args.repeats)
            .map(|_| {
                let start = Instant::now();
                run().map(|_| start.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<lumen::Result<_>>()?;
        // Mean milliseconds per timed run in each stage (empty without --profile).
        let stages: serde_json::Map<String, serde_json::Value> = lumen::core::profile::totals()
            .iter()
            .map(|stage| {
                let ms = stage.total.as_secs_f64() * 1e3 / args.repeats.max(1) as f64;
                (stage.stage.to_string(), ms.into())
            })
            .collect();
        if let Some(folder) = &args.save_maps
            && !matches!(work.as_str(), "forward" | "cams8")
        {
            let method = by_name::<ZooModel>(work, &options)?;
            let explanation = method.explain(model, x.clone(), &target)?;
            let path = folder.join(format!("{work}.npy"));
            match &explanation.attributions {
                Some(attributions) => {
                    write_npy(&path, to_host(attributions.clone())?, &attributions.dims())?
                }
                None => {
                    let maps = &explanation.heatmaps;
                    write_npy(&path, maps.to_vec()?, &maps.dims())?
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({
                "work": work,
                "images": images,
                "median_ms": median,
                "median_ms_per_image": median / images as f64,
                "runs_ms": times,
                "first_run_ms": first_run_ms,
                "stages_ms_per_run": stages,
            })
        );
    }
    Ok(())
}
