//! `lumen maximize`: activation maximization of a layer's channels (or a class: the
//! logits are a layer), with the model's prediction on each optimised image.

use clap::Args;
use lumen::features::{FeatureVisualizer, MaximizeOptions, MaximizedImage, Objective};
use lumen::{Inputs, LumenError, Result, Task, TaskModel, image_grid, save_png};
use serde::Serialize;

use crate::args::{CacheArgs, FigureArgs, JsonOutput, ModelArgs, PrintArgs, progress};

/// Channel indices in order (a newtype: clap reads a bare `Vec` as repeated values).
#[derive(Clone, Debug)]
pub struct Channels(pub Vec<usize>);

/// `0-15`, `3`, `1,4,9` or a mix: channel indices in order.
pub(crate) fn channels(s: &str) -> std::result::Result<Channels, String> {
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.parse().map_err(|e| format!("`{a}`: {e}"))?,
                    b.parse().map_err(|e| format!("`{b}`: {e}"))?,
                );
                if a > b {
                    return Err(format!("range `{part}` runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|e| format!("`{part}`: {e}"))?),
        }
    }
    if out.is_empty() {
        return Err("no channel given".into());
    }
    Ok(Channels(out))
}

#[derive(Args, Debug)]
pub struct MaximizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Layer (see `lumen layers`; the logits layer, e.g. `fc` or `head`, maximises classes).
    #[arg(long)]
    layer: String,
    /// Channels: `0-15`, `3`, `1,4,9`.
    #[arg(long, default_value = "0-15", value_parser = channels)]
    channels: Channels,
    /// Maximise one unit Y,X of each channel instead of the channel mean.
    #[arg(long, value_parser = crate::features::position)]
    at: Option<[usize; 2]>,
    /// Optimisation steps.
    #[arg(long, default_value_t = 256)]
    steps: usize,
    /// Adam's learning rate (> 0).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    learning_rate: f32,
    /// Seed of the initial image and the transformations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest random shift in pixels per step.
    #[arg(long, default_value_t = 8)]
    jitter: usize,
    /// Largest random rotation in degrees per step (>= 0).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    rotation: f32,
    #[command(flatten)]
    figure: FigureArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    print: PrintArgs,
}

#[derive(Serialize)]
struct Maximized<'a, P: Serialize> {
    #[serde(flatten)]
    image: &'a MaximizedImage,
    /// The model's prediction on the optimised image.
    prediction: &'a P,
}

pub fn run(args: MaximizeArgs) -> Result<()> {
    let channels = args.channels.0.clone();
    let model = args.model.load()?;
    let objectives: Vec<Objective> = channels
        .iter()
        .map(|&channel| match args.at {
            Some(at) => Objective::Neuron {
                layer: args.layer.clone(),
                channel,
                at,
            },
            None => Objective::Channel {
                layer: args.layer.clone(),
                channel,
            },
        })
        .collect();
    let options = MaximizeOptions {
        steps: args.steps,
        learning_rate: args.learning_rate,
        seed: args.seed,
        jitter: args.jitter,
        rotation: args.rotation,
        mean: model.data_config.mean,
        std: model.data_config.std,
        ..MaximizeOptions::default()
    };
    // The images of one call depend on all its objectives (one seeded batch): the whole
    // call is one entry.
    let cache = args.cache.open(&args.model)?;
    let key = cache
        .as_ref()
        .map(|c| c.key(&format!("maximize\n{objectives:?}\n{options:?}"), b""));
    let cached = match (&cache, &key) {
        (Some(cache), Some(key)) => cache
            .get_record(key)
            .and_then(|(header, pixels)| images_from_record(header, pixels, objectives.len())),
        _ => None,
    };
    let images = match cached {
        Some(images) => images,
        None => {
            let bar = progress(args.steps as u64, "maximize", args.print.quiet);
            let images = FeatureVisualizer::new(&model.model).maximize(
                &objectives,
                &options,
                &model.device,
                |step| bar.set_position(step as u64),
            )?;
            bar.finish_and_clear();
            if let (Some(cache), Some(key)) = (&cache, &key) {
                let pixels: Vec<f32> = images
                    .iter()
                    .flat_map(|m| m.pixels.iter().copied())
                    .collect();
                let header = serde_json::to_value(&images)
                    .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
                cache.put_record(key, &header, &pixels)?;
            }
            images
        }
    };
    crate::args::report_cache(cache.as_deref(), 1);
    // What the model makes of each image.
    let pictures: Vec<image::RgbImage> = images.iter().map(to_rgb).collect();
    let names: Vec<String> = channels.iter().map(|c| format!("channel{c}")).collect();
    let inputs = Inputs::from_images(pictures.clone(), names, &model.data_config, &model.device)?;
    let task = model.task();
    let predictions = task.predict(&lumen::ExplainableModel::forward(
        &model.model,
        inputs.tensor,
    ))?;
    let mut files = vec![];
    if !args.figure.no_figures {
        let tiles: Vec<(String, image::RgbImage)> = images
            .iter()
            .zip(&pictures)
            .zip(&predictions)
            .map(|((m, p), prediction)| {
                (
                    format!(
                        "{} = {:.1} -> {}",
                        m.objective,
                        m.value,
                        task.describe_request(&task.default_request(prediction))
                    ),
                    p.clone(),
                )
            })
            .collect();
        let title = format!(
            "{}: activation maximization of {}, {} steps, seed {}",
            model.name, args.layer, args.steps, args.seed
        );
        let figure = image_grid(&title, &tiles, 256, 0);
        let name = format!(
            "{}_{}_maximized.png",
            model.name,
            args.layer.replace('.', "-")
        );
        files.push(save_png(&figure, &args.figure.out, &name)?);
    }
    if args.print.json {
        let results: Vec<Maximized<_>> = images
            .iter()
            .zip(&predictions)
            .map(|(image, prediction)| Maximized { image, prediction })
            .collect();
        JsonOutput {
            command: "maximize",
            model: &model.name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results,
            files,
        }
        .print();
    } else {
        for (m, p) in images.iter().zip(&predictions) {
            println!(
                "{}: {:.3} (first step {:.3}); the model: {}",
                m.objective,
                m.value,
                m.trajectory.first().copied().unwrap_or(f32::NAN),
                task.describe_prediction(p)
            );
        }
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    if images.iter().any(|m| !m.value.is_finite()) {
        return Err(LumenError::InvalidArgument(
            "the optimisation diverged (non-finite objective): lower --learning-rate".into(),
        ));
    }
    Ok(())
}

/// The images of a cache record: the header's fields and each image's pixels in
/// order; `None` (recomputed) when the record does not hold `count` whole images.
fn images_from_record(
    header: serde_json::Value,
    pixels: Vec<f32>,
    count: usize,
) -> Option<Vec<MaximizedImage>> {
    let mut images: Vec<MaximizedImage> = serde_json::from_value(header).ok()?;
    let sizes: Vec<usize> = images.iter().map(|m| 3 * m.height * m.width).collect();
    if images.len() != count || sizes.iter().sum::<usize>() != pixels.len() {
        return None;
    }
    let mut start = 0;
    for (image, size) in images.iter_mut().zip(sizes) {
        image.pixels = pixels[start..start + size].to_vec();
        start += size;
    }
    Some(images)
}

fn to_rgb(m: &MaximizedImage) -> image::RgbImage {
    let plane = m.height * m.width;
    image::RgbImage::from_fn(m.width as u32, m.height as u32, |x, y| {
        let i = y as usize * m.width + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            (m.pixels[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}
