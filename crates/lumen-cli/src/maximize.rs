//! `lumen maximize`: activation maximization of a layer's channels (or a class: the
//! logits are a layer), with the model's prediction on each optimised image.

use clap::Args;
use lumen::features::{
    FeatureVisualizer, MaximizeOptions, MaximizedImage, Objective, RESTART_FACTOR, SATURATED_SHARE,
};
use lumen::{ExplainableModel, Inputs, LumenError, Result, Task, TaskModel, image_grid, save_png};
use serde::Serialize;

use crate::args::{
    CacheArgs, FigureArgs, JsonOutput, ModelArgs, PrintArgs, progress, with_any_model,
};

/// Channel indices in order (a newtype: clap reads a bare `Vec` as repeated values).
#[derive(Clone, Debug)]
pub struct Channels(pub Vec<usize>);

/// No layer has this many channels (timm's widest logits, ImageNet-21k's, have 21843):
/// a larger index is a typo, refused before a list of that length is built.
const MAX_CHANNEL: usize = 1 << 20;

/// `0-15`, `3`, `1,4,9` or a mix: channel indices in order.
pub(crate) fn channels(s: &str) -> std::result::Result<Channels, String> {
    let mut out = vec![];
    let cap = |c: usize| {
        if c >= MAX_CHANNEL {
            Err(format!("channel {c} is past any layer's channels"))
        } else {
            Ok(c)
        }
    };
    for part in s.split(',').map(str::trim) {
        // `1,,2` is a typo for something (as in --target-class and --methods).
        if part.is_empty() {
            return Err(format!("`{s}` has an empty entry between its commas"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    cap(a.parse().map_err(|e| format!("`{a}`: {e}"))?)?,
                    cap(b.parse().map_err(|e| format!("`{b}`: {e}"))?)?,
                );
                if a > b {
                    return Err(format!("range `{part}` runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(cap(part.parse().map_err(|e| format!("`{part}`: {e}"))?)?),
        }
    }
    if out.is_empty() {
        return Err("no channel given".into());
    }
    // A repeated channel would be optimised (or scanned) twice and drawn twice: a typo.
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = out.iter().find(|&&c| !seen.insert(c)) {
        return Err(format!("channel {c} is given twice"));
    }
    Ok(Channels(out))
}

#[derive(Args, Debug)]
pub struct MaximizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Layer (see `lumen layers`; the logits layer, e.g. `fc` or `head`, or a
    /// segmentor's `head.classifier`, maximises classes).
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
    /// Largest random shift in pixels per step (smaller than the image side).
    #[arg(long, default_value_t = 8)]
    jitter: usize,
    /// Largest random rotation in degrees per step, in [0, 360].
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    rotation: f32,
    /// Channels that stay at exactly 0 from the near-grey start (a ReLU passes them no
    /// gradient) run again from a start 10x noisier, up to this many times (0 to 4).
    #[arg(long, default_value_t = 2)]
    restarts: usize,
    /// Images optimised together per forward and backward (the memory knob; default:
    /// 32 at 224x224, more on smaller inputs). It changes no image.
    #[arg(long)]
    internal_batch_size: Option<usize>,
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
    args.figure.warn_unread(
        &[],
        "the optimised images are drawn as they are, with no map; nothing reads",
    );
    with_any_model!(args.model.load_any()?, |model| run_on(&args, &model))
}

/// `lumen maximize` on a model of any task: a layer's channels are optimised alike,
/// and the task says what the model makes of each image.
fn run_on<T: TaskModel>(args: &MaximizeArgs, model: &T) -> Result<()> {
    let channels = args.channels.0.clone();
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
        mean: model.data_config().mean,
        std: model.data_config().std,
        batch_size: args.internal_batch_size,
        restarts: args.restarts,
        ..MaximizeOptions::default()
    };
    // The images of one call depend on all its objectives (one seeded batch): the whole
    // call is one entry.
    let cache = args.cache.open(&args.model)?;
    let key = cache.as_ref().map(|c| {
        // The internal batch size changes no image: not part of the key.
        let settings = MaximizeOptions {
            batch_size: None,
            ..options.clone()
        };
        c.key(&format!("maximize\n{objectives:?}\n{settings:?}"), b"")
    });
    let cached = match (&cache, &key) {
        (Some(cache), Some(key)) => cache
            .get_record(key)
            .and_then(|(header, pixels)| images_from_record(header, pixels, objectives.len())),
        _ => None,
    };
    // Objectives per internal batch (one probe of the model's layers), for the progress
    // bar and the predictions below.
    let rows = options.rows_per_batch(model.model(), model.device());
    let images = match cached {
        Some(images) => images,
        None => {
            let batches = objectives.len().div_ceil(rows);
            let bar = progress((args.steps * batches) as u64, "maximize", args.print.quiet);
            let images = FeatureVisualizer::new(model.model()).maximize(
                &objectives,
                &options,
                model.device(),
                |step| {
                    // Restarts add `steps` per re-run batch beyond the first estimate.
                    let step = step as u64;
                    if bar.length().is_some_and(|length| step > length) {
                        bar.set_length(step.div_ceil(args.steps as u64) * args.steps as u64);
                    }
                    bar.set_position(step)
                },
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
    crate::args::report_cache(cache.as_deref(), 1, args.print.quiet);
    // What the model makes of each image.
    let pictures: Vec<image::RgbImage> = images.iter().map(to_rgb).collect();
    let names: Vec<String> = channels.iter().map(|c| format!("channel{c}")).collect();
    let inputs = Inputs::from_images(pictures.clone(), names, model.data_config(), model.device())?;
    let task = model.task();
    // In internal batches too: the images may be many.
    let mut predictions = Vec::with_capacity(images.len());
    for range in lumen::core::row_chunks(images.len(), rows) {
        let batch = inputs.tensor.clone().narrow(0, range.start, range.len());
        predictions.extend(task.predict(&model.model().forward(batch))?);
    }
    let mut files = vec![];
    if !args.figure.no_figures {
        let tiles: Vec<(String, image::RgbImage)> = images
            .iter()
            .zip(&pictures)
            .zip(&predictions)
            .map(|((m, p), prediction)| {
                (
                    format!(
                        "{} = {:.1} -> {}{}",
                        // The layer is in the figure's title: tiles keep the room.
                        m.objective
                            .strip_prefix(&format!("{} ", args.layer))
                            .unwrap_or(&m.objective),
                        m.value,
                        top_of(&task, prediction),
                        restart_factor(m)
                            .map(|f| format!(" (start x{f})"))
                            .unwrap_or_default()
                    ),
                    p.clone(),
                )
            })
            .collect();
        let title = format!(
            "{}: activation maximization of {}, {} steps, seed {}",
            model.name(),
            args.layer,
            args.steps,
            args.seed
        );
        let figure = lumen::report::with_notes(
            &image_grid(&title, &tiles, 256, 0),
            &notes(&images, args.restarts, args.learning_rate),
        );
        let name = format!(
            "{}_{}_maximized.png",
            model.name(),
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
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results,
            files,
        }
        .print();
    } else {
        for (m, p) in images.iter().zip(&predictions) {
            println!(
                "{}: {:.3} (first step {:.3}){}; the model: {}",
                m.objective,
                m.value,
                m.trajectory.first().copied().unwrap_or(f32::NAN),
                restart_factor(m)
                    .map(|f| format!(", from a start {f}x noisier"))
                    .unwrap_or_default(),
                task.describe_prediction(p)
            );
        }
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    for note in notes(&images, args.restarts, args.learning_rate) {
        eprintln!("warning: {note}");
    }
    if images.iter().any(|m| !m.value.is_finite()) {
        return Err(LumenError::InvalidArgument(
            "the optimisation diverged (non-finite objective): lower --learning-rate".into(),
        ));
    }
    Ok(())
}

/// What the model sees most in an image, for a tile: the top class and its
/// probability, the largest segmented class and its share of pixels, or the best
/// detection and its score (all in [0, 1], shown in percent); only a detector can
/// see nothing.
fn top_of<K: Task>(task: &K, prediction: &K::Prediction) -> String {
    match task.ranked(prediction).into_iter().next() {
        Some((label, value)) => {
            // A detection's label ends with its box, which leaves a tile no room for
            // the score (the box is in the printout and the JSON).
            let label = label.split_once(" at [").map_or(label.as_str(), |(l, _)| l);
            format!("{label} {:.0}%", 100.0 * value)
        }
        None => "nothing detected".to_string(),
    }
}

/// How much noisier than the first the start of an image that needed restarts (and
/// then moved) was: 10, 100...
fn restart_factor(image: &MaximizedImage) -> Option<f32> {
    (image.restarts > 0 && !image.stayed_at_zero())
        .then(|| RESTART_FACTOR.powi(image.restarts as i32))
}

/// What to tell about the objectives still at 0 after every start: a channel at exactly
/// zero under a ReLU passes no gradient, so its image is the grey start, which looks
/// like a bug when it is the layer's nature (or that start's).
/// What a reader of the figure must know: objectives stuck at 0, images mostly
/// clipped. Written under the figure and as warnings.
fn notes(images: &[MaximizedImage], restarts: usize, learning_rate: f32) -> Vec<String> {
    stuck_note(images, restarts)
        .into_iter()
        .chain(saturation_note(images, learning_rate))
        .collect()
}

/// The images whose pixels are mostly clipped by the sigmoid ([`SATURATED_SHARE`]):
/// a learning rate far above lucid's moves every coefficient that far per step.
fn saturation_note(images: &[MaximizedImage], learning_rate: f32) -> Option<String> {
    let saturated: Vec<(&str, f32)> = images
        .iter()
        .map(|m| (m.objective.as_str(), 100.0 * m.saturation()))
        .filter(|&(_, share)| share > 100.0 * SATURATED_SHARE)
        .collect();
    let (least, most) = saturated
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &(_, s)| {
            (lo.min(s), hi.max(s))
        });
    let which = match saturated.len() {
        0 => return None,
        // Sixteen names would fill the figure's notes.
        n if n == images.len() && n > 3 => format!("all {n} images ({least:.0}-{most:.0}%) are"),
        1 => format!("{} ({most:.0}%) is", saturated[0].0),
        _ => format!(
            "{} are",
            saturated
                .iter()
                .map(|(name, share)| format!("{name} ({share:.0}%)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let cause = if learning_rate > MaximizeOptions::default().learning_rate {
        format!(
            "Adam moves every coefficient by about the learning rate per step, and at \
             {learning_rate} the sigmoid clips; lower --learning-rate (lucid uses {})",
            MaximizeOptions::default().learning_rate
        )
    } else {
        "the objective drove them to the sigmoid's limits".to_string()
    };
    Some(format!(
        "{which} mostly black, white or pure colours (pixel values drawn at 0 or 255): \
         the picture shows clipping, not what the objective likes; {cause}"
    ))
}

fn stuck_note(images: &[MaximizedImage], restarts: usize) -> Option<String> {
    let stuck: Vec<&str> = images
        .iter()
        .filter(|m| m.stayed_at_zero())
        .map(|m| m.objective.as_str())
        .collect();
    if stuck.is_empty() {
        return None;
    }
    let starts = match restarts {
        0 => "the near-grey start image does not excite them (--restarts retries from \
              noisier starts)"
            .to_string(),
        n => format!(
            "neither the near-grey start nor {n} noisier one{} (up to {}x) excite them",
            if n == 1 { "" } else { "s" },
            RESTART_FACTOR.powi(n as i32)
        ),
    };
    Some(format!(
        "{} stayed at 0 from the first step: {starts}, and at 0 their ReLU passes no \
         gradient, so the optimisation cannot start (their images are the start image)",
        stuck.join(", ")
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(objective: &str, value: f32) -> MaximizedImage {
        MaximizedImage {
            objective: objective.into(),
            trajectory: vec![value],
            value,
            height: 1,
            width: 2,
            restarts: 0,
            pixels: vec![value; 6],
        }
    }

    #[test]
    fn clipped_images_are_named_with_their_share_and_the_cause() {
        let grey = image("layer4 #0", 0.5);
        let white = image("layer4 #1", 1.0);
        assert_eq!(saturation_note(&[grey.clone(), grey.clone()], 10.0), None);
        let one = saturation_note(&[grey.clone(), white.clone()], 10.0).unwrap();
        assert!(one.starts_with("layer4 #1 (100%) is mostly black"), "{one}");
        assert!(one.contains("at 10 the sigmoid clips; lower --learning-rate (lucid uses 0.05)"));
        // At the default rate the learning rate is not blamed.
        let default = saturation_note(std::slice::from_ref(&white), 0.05).unwrap();
        assert!(!default.contains("--learning-rate"), "{default}");
        let all = saturation_note(&vec![white; 5], 1.0).unwrap();
        assert!(
            all.starts_with("all 5 images (100-100%) are mostly"),
            "{all}"
        );
        // Under the figure, after the stuck note.
        // A stuck image is its grey start.
        let stuck = MaximizedImage {
            pixels: vec![0.5; 6],
            ..image("layer4 #2", 0.0)
        };
        let notes = notes(&[stuck, image("layer4 #3", 1.0)], 2, 1.0);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("layer4 #2 stayed at 0"), "{notes:?}");
        assert!(notes[1].starts_with("layer4 #3 (100%)"), "{notes:?}");
    }
}
