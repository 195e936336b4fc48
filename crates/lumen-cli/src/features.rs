//! `lumen features` (feature maps, statistics, layer comparison, top channels) and
//! `lumen receptive-field` (theoretical, gradient or occlusion).

use std::path::PathBuf;

use clap::Args;
use lumen::features::{
    FeatureStatistics, FeatureVisualizer, LayerStatistics, MapChoice, Occlusion, ReceptiveMap,
    SortBy, StatisticsOptions, theoretical_receptive_fields,
};
use lumen::{
    ExplainableModel, LumenError, Map, Result, TaskModel, explanation_figure, feature_grid,
    save_png,
};
use serde::Serialize;

use crate::args::{
    CacheArgs, FigureArgs, InputArgs, JsonOutput, ModelArgs, PrintArgs, choice, warn_ignored,
    with_any_model,
};

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Layer whose feature maps are drawn (see `lumen layers`); the model's default
    /// when omitted.
    #[arg(long)]
    layer: Option<String>,
    /// Also compare the statistics of these layers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Channels shown per image.
    #[arg(long, default_value_t = 16)]
    top: usize,
    /// Channel order: activation (mean), variance (spatial), random (seeded).
    #[arg(long, default_value = "activation", value_parser = choice::<SortBy>)]
    sort: SortBy,
    /// Seed of the random channel pick.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One colour scale for all tiles (with a colorbar) instead of one per tile.
    #[arg(long)]
    shared_scale: bool,
    /// A channel is active when its mean exceeds this (AutoTimm: 0.01).
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    active_threshold: f32,
    /// `near_zero` counts values with |x| at most this.
    #[arg(long, default_value_t = 1e-3)]
    zero_threshold: f32,
    /// Scan all inputs (folders too) in batches and draw, per channel of
    /// --channels, the K images that excite it most.
    #[arg(long, default_value_t = 0)]
    top_images: usize,
    /// Channels for --top-images: `0-7`, `3`, `1,4,9` [default: 0-7].
    #[arg(long, value_parser = crate::maximize::channels)]
    channels: Option<crate::maximize::Channels>,
    /// Images per forward pass (with --top-images, also the files read at a time)
    /// [default: sized to the input and model, 32 at 224x224 on a ResNet; --top-images
    /// reads 16 files at a time].
    #[arg(long)]
    batch_size: Option<usize>,
    #[command(flatten)]
    figure: FigureArgs,
    /// Each image's results are kept (keyed by the weights, the layers, the options,
    /// the preprocessing and the image): its channel maps and statistics, or with
    /// --top-images each file's channel means. A repeated or resumed scan runs only
    /// the new images through the model.
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    print: PrintArgs,
}

#[derive(Serialize)]
struct FeatureResults {
    layer: String,
    /// Per image: the channels drawn, with their scores and ranges.
    channels: Vec<Vec<lumen::features::ChannelMap>>,
    /// The statistics of the drawn layer and of `--layers`.
    statistics: Vec<lumen::features::LayerStatistics>,
}

pub fn features(args: FeaturesArgs) -> Result<()> {
    for (flag, value) in [("--top", Some(args.top)), ("--batch-size", args.batch_size)] {
        if value == Some(0) {
            return Err(LumenError::InvalidArgument(format!(
                "{flag} must be at least 1"
            )));
        }
    }
    for (flag, v) in [
        ("--active-threshold", args.active_threshold),
        ("--zero-threshold", args.zero_threshold),
    ] {
        if !v.is_finite() || (flag == "--zero-threshold" && v < 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "{flag} must be a finite number{}, got {v}",
                if flag == "--zero-threshold" {
                    " >= 0"
                } else {
                    ""
                }
            )));
        }
    }
    with_any_model!(args.model.load_any()?, |model| features_on(&args, &model))
}

/// `lumen features` on a model of any task: feature maps are a layer's, whatever the
/// head reads from them.
fn features_on<T: TaskModel>(args: &FeaturesArgs, model: &T) -> Result<()> {
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| model.model().default_layer());
    if args.top_images > 0 {
        warn_ignored(
            &[
                ("--layers", !args.layers.is_empty()),
                ("--top", args.top != 16),
                ("--sort", args.sort != SortBy::default()),
                ("--seed", args.seed != 0),
                ("--shared-scale", args.shared_scale),
                ("--active-threshold", args.active_threshold != 0.01),
                ("--zero-threshold", args.zero_threshold != 1e-3),
            ],
            "--top-images draws the images themselves, without feature maps or statistics; nothing reads",
        );
        args.figure.warn_unread(
            &[],
            "--top-images draws the images themselves, with no map; nothing reads",
        );
        return top_images(args, model, &layer);
    }
    warn_ignored(
        &[("--channels", args.channels.is_some())],
        "only --top-images reads",
    );
    args.figure.warn_unread(
        &["--colormap"],
        "feature maps are drawn alone, with no overlay, polarity view or verdicts; nothing reads",
    );
    let visualizer = FeatureVisualizer::new(model.model()).with_batch_size(args.batch_size);
    // The drawn layer and --layers, in forward order.
    let order: Vec<String> = model.model().layers().into_iter().map(|l| l.name).collect();
    let mut layers = vec![layer.clone()];
    layers.extend(args.layers.iter().filter(|l| **l != layer).cloned());
    layers.sort_by_key(|l| order.iter().position(|o| o == l).unwrap_or(usize::MAX));
    let options = StatisticsOptions {
        active_threshold: args.active_threshold,
        zero_threshold: args.zero_threshold,
    };
    // A folder is read, scanned and drawn a chunk at a time; what is printed is kept
    // (the channels without their maps, each layer's statistics merged over chunks).
    let cache = args.cache.open(&args.model)?;
    let scan = CachedScan {
        visualizer: &visualizer,
        cache: cache.as_deref(),
        settings: format!(
            "features\nmaps of {layer}\ntop {}\nsort {}\nstatistics of {layers:?}\nactive threshold {:?}\nzero threshold {:?}\npreprocessing {:?}",
            args.top,
            args.sort,
            args.active_threshold,
            args.zero_threshold,
            model.data_config()
        ),
        layer: &layer,
        layers: &layers,
        top: args.top,
        sort: args.sort,
        seed: args.seed,
        options: &options,
    };
    let mut reused = 0;
    let mut names: Vec<String> = vec![];
    let mut channels: Vec<Vec<lumen::features::ChannelMap>> = vec![];
    let mut statistics: Vec<LayerStatistics> = vec![];
    let mut files = vec![];
    args.input.plan(model)?.for_each_chunk(
        model.device(),
        &[] as &[&str],
        ("images", args.print.quiet),
        |chunk| {
            let inputs = chunk.inputs;
            let (mut chunk_channels, chunk_statistics) =
                scan.run(&inputs, names.len(), &mut reused)?;
            if !args.figure.no_figures {
                files.extend(draw_feature_maps(
                    args,
                    &layer,
                    &inputs.names,
                    &chunk_channels,
                )?);
            }
            for image in &mut chunk_channels {
                for channel in image {
                    channel.values = vec![];
                }
            }
            channels.extend(chunk_channels);
            lumen::features::append_layers(&mut statistics, chunk_statistics)?;
            names.extend(inputs.names);
            Ok(())
        },
    )?;
    crate::args::report_cache_reuse(cache.as_deref(), reused, names.len(), args.print.quiet);
    if !args.figure.no_figures && statistics.len() > 1 {
        let figure = lumen::layer_comparison_figure(
            &format!(
                "{}: layer statistics over {} images",
                model.name(),
                names.len()
            ),
            &lumen::feature_report::comparison_bars(&statistics),
        );
        // First among the files, as when the whole folder was scanned at once.
        files.insert(
            0,
            save_png(&figure, &args.figure.out, "layer_comparison.png")?,
        );
    }
    if args.print.json {
        JsonOutput {
            command: "features",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: FeatureResults {
                layer,
                channels,
                statistics,
            },
            files,
        }
        .print();
    } else {
        println!(
            "{:<12} {:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9}",
            "image", "layer", "mean", "std", "min", "max", "sparsity", "active", "channels"
        );
        for s in &statistics {
            for (i, b) in s.per_image.iter().enumerate() {
                println!(
                    "{:<12} {:<16} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>7.1}% {:>7} {:>9}",
                    names[i],
                    s.layer,
                    b.mean,
                    b.std,
                    b.min,
                    b.max,
                    100.0 * b.sparsity,
                    b.active_channels,
                    b.num_channels
                );
            }
        }
        for (i, image) in channels.iter().enumerate() {
            let top: Vec<String> = image
                .iter()
                .take(5)
                .map(|c| format!("{} ({:.3})", c.channel, c.score))
                .collect();
            println!("{}: top channels of {layer}: {}", names[i], top.join(", "));
        }
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// What `lumen features` scans per chunk of images (each image's channel maps of
/// `layer` and statistics of `layers`), with each image's results kept in `cache`.
struct CachedScan<'a, M: ExplainableModel> {
    visualizer: &'a FeatureVisualizer<'a, M>,
    cache: Option<&'a lumen::ExplanationCache>,
    /// What the results depend on besides the weights and the image.
    settings: String,
    layer: &'a str,
    layers: &'a [String],
    top: usize,
    sort: SortBy,
    seed: u64,
    options: &'a StatisticsOptions,
}

/// One image's cached results: its channel maps (their values in the entry's body,
/// one after another) and its statistics of each layer.
#[derive(Serialize, serde::Deserialize)]
struct FeatureEntry {
    channels: Vec<lumen::features::ChannelMap>,
    statistics: Vec<FeatureStatistics>,
}

impl<M: ExplainableModel> CachedScan<'_, M> {
    /// The maps and statistics of `inputs`, the images from place `first` on among
    /// all those scanned: from the cache where it has them (counted in `reused`), the
    /// others computed together (a pass per run of consecutive missing images). The
    /// same bits either way: the random channel pick is seeded by the image's place,
    /// and batch statistics combine per-image ones.
    fn run(
        &self,
        inputs: &lumen::Inputs,
        first: usize,
        reused: &mut usize,
    ) -> Result<(Vec<Vec<lumen::features::ChannelMap>>, Vec<LayerStatistics>)> {
        let choice = |index: usize| MapChoice {
            layer: self.layer.to_string(),
            count: self.top,
            sort: self.sort,
            seed: self.seed.wrapping_add(index as u64),
        };
        let Some(cache) = self.cache else {
            return self.visualizer.maps_and_statistics(
                &inputs.tensor,
                &choice(first),
                self.layers,
                self.options,
            );
        };
        let keys: Vec<String> = cache
            .image_keys(&self.settings, &inputs.tensor)?
            .into_iter()
            .enumerate()
            .map(|(i, key)| match self.sort {
                // The pick is drawn with the seed of the image's place: part of its key.
                SortBy::Random => cache.key(
                    &format!("random seed {}", self.seed.wrapping_add((first + i) as u64)),
                    key.as_bytes(),
                ),
                _ => key,
            })
            .collect();
        let mut entries: Vec<Option<FeatureEntry>> =
            keys.iter().map(|key| self.read(cache, key)).collect();
        *reused += entries.iter().flatten().count();
        let missing: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].is_none())
            .collect();
        for run in missing.chunk_by(|a, b| b - a == 1) {
            let (maps, statistics) = self.visualizer.maps_and_statistics(
                &inputs.select(run)?.tensor,
                &choice(first + run[0]),
                self.layers,
                self.options,
            )?;
            for ((j, &i), channels) in run.iter().enumerate().zip(maps) {
                let entry = FeatureEntry {
                    channels,
                    statistics: statistics.iter().map(|s| s.per_image[j].clone()).collect(),
                };
                let header = serde_json::to_value(&entry)
                    .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
                let values: Vec<f32> = entry
                    .channels
                    .iter()
                    .flat_map(|c| c.values.iter().copied())
                    .collect();
                cache.put_record(&keys[i], &header, &values)?;
                entries[i] = Some(entry);
            }
        }
        let entries: Vec<FeatureEntry> = entries.into_iter().flatten().collect();
        let statistics = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let per_image = entries.iter().map(|e| e.statistics[l].clone()).collect();
                LayerStatistics::from_images(layer, per_image)
            })
            .collect::<Result<_>>()?;
        Ok((
            entries.into_iter().map(|e| e.channels).collect(),
            statistics,
        ))
    }

    /// The entry of `key` when the cache has a whole one (a damaged one is a miss).
    fn read(&self, cache: &lumen::ExplanationCache, key: &str) -> Option<FeatureEntry> {
        let (header, values) = cache.get_record(key)?;
        let mut entry: FeatureEntry = serde_json::from_value(header).ok()?;
        let sizes: Vec<usize> = entry.channels.iter().map(|c| c.height * c.width).collect();
        if entry.statistics.len() != self.layers.len()
            || sizes.iter().sum::<usize>() != values.len()
        {
            return None;
        }
        let mut rest = values.as_slice();
        for (channel, size) in entry.channels.iter_mut().zip(sizes) {
            let (own, after) = rest.split_at(size);
            channel.values = own.to_vec();
            rest = after;
        }
        Some(entry)
    }
}

/// Each image's grid of channel maps (`<image>_<layer>_features.png`), drawn on every
/// core (a quarter of a run's time drawn one by one); the files, in order.
fn draw_feature_maps(
    args: &FeaturesArgs,
    layer: &str,
    names: &[String],
    channels: &[Vec<lumen::features::ChannelMap>],
) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    names
        .par_iter()
        .zip(channels)
        .map(|(name, image)| {
            let tiles: Vec<(String, Map)> = image
                .iter()
                .map(|c| {
                    (
                        format!("#{} [{:.1}, {:.1}]", c.channel, c.min, c.max),
                        Map::new(c.values.clone(), c.width as u32, c.height as u32),
                    )
                })
                .collect();
            let title = format!("{name} {layer}: {} channels by {}", tiles.len(), args.sort);
            let figure = lumen::core::profile::timed(lumen::core::profile::stages::ENCODE, || {
                feature_grid(&title, &tiles, args.figure.colormap, args.shared_scale, 96)
            });
            let file = format!("{name}_{}_features.png", layer.replace('.', "-"));
            save_png(&figure, &args.figure.out, &file)
        })
        .collect()
}

/// How a receptive field is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldMode {
    /// From the architecture's kernels, strides, paddings and dilations.
    Theoretical,
    /// The input gradient of one activation (effective receptive field).
    Gradient,
    /// The activation change when input patches are zeroed.
    Occlusion,
}

lumen::named_choices!(FieldMode, "receptive-field mode", {
    Theoretical => "theoretical",
    Gradient => "gradient",
    Occlusion => "occlusion",
});

pub(crate) fn position(s: &str) -> std::result::Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts.as_slice() {
        [y, x] => Ok([
            y.trim().parse().map_err(|e| format!("row `{y}`: {e}"))?,
            x.trim().parse().map_err(|e| format!("column `{x}`: {e}"))?,
        ]),
        _ => Err(format!(
            "expected Y,X (row and column in the layer's map), got `{s}`"
        )),
    }
}

#[derive(Args, Debug)]
pub struct ReceptiveFieldArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Layer (see `lumen layers`); the model's default when omitted.
    #[arg(long)]
    layer: Option<String>,
    /// Channel of the activation [default: per image, the most active one at --at].
    #[arg(long)]
    channel: Option<usize>,
    /// Position Y,X in the layer's map (the centre when omitted).
    #[arg(long, value_parser = position)]
    at: Option<[usize; 2]>,
    /// theoretical (no image needed), gradient, occlusion.
    #[arg(long, default_value = "gradient", value_parser = choice::<FieldMode>)]
    mode: FieldMode,
    /// Occlusion: patch side in pixels [default: 16].
    #[arg(long)]
    patch: Option<usize>,
    /// Occlusion: distance between patches in pixels [default: 8].
    #[arg(long)]
    stride: Option<usize>,
    /// Occlusion: occluded copies per forward pass [default: sized to the input and
    /// model, 32 at 224x224 on a ResNet].
    #[arg(long)]
    batch_size: Option<usize>,
    #[command(flatten)]
    figure: FigureArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    print: PrintArgs,
}

pub fn receptive_field(args: ReceptiveFieldArgs) -> Result<()> {
    if args.mode != FieldMode::Occlusion {
        warn_ignored(
            &[
                ("--patch", args.patch.is_some()),
                ("--stride", args.stride.is_some()),
                ("--batch-size", args.batch_size.is_some()),
            ],
            "only --mode occlusion reads",
        );
    }
    if args.mode == FieldMode::Theoretical {
        let input = &args.input;
        warn_ignored(
            &[
                (
                    "the input images",
                    !input.images.is_empty()
                        || !input.positional.is_empty()
                        || input.input_npy.is_some(),
                ),
                ("--channel", args.channel.is_some()),
                ("--at", args.at.is_some()),
            ],
            "the theoretical field depends on the layer alone; --mode gradient or occlusion reads",
        );
        args.figure.warn_unread(
            &[],
            "the theoretical field is printed, not drawn; nothing reads",
        );
    } else {
        args.figure.warn_unread(
            &["--colormap", "--alpha"],
            "a receptive field is drawn as one overlay, with no polarity view or verdicts; nothing reads",
        );
    }
    let defaults = Occlusion::default();
    let occlusion = Occlusion {
        patch: args.patch.unwrap_or(defaults.patch),
        stride: args.stride.unwrap_or(defaults.stride),
        batch_size: args.batch_size.or(defaults.batch_size),
    };
    // The theoretical field depends on the architecture alone.
    let model = if args.mode == FieldMode::Theoretical {
        args.model.architecture_any()?
    } else {
        args.model.load_any()?
    };
    with_any_model!(model, |model| receptive_field_on(&args, &model, occlusion))
}

/// `lumen receptive-field` on a model of any task.
fn receptive_field_on<T: TaskModel>(
    args: &ReceptiveFieldArgs,
    model: &T,
    occlusion: Occlusion,
) -> Result<()> {
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| model.model().default_layer());
    model.model().layer(&layer)?;
    if args.mode == FieldMode::Theoretical {
        let fields = theoretical_receptive_fields(model.model());
        let field = fields.into_iter().find(|f| f.layer == layer).ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "`{}` does not describe the geometry of layer `{layer}` (theoretical fields are known for CNN layers)",
                model.name()
            ))
        })?;
        if args.print.json {
            JsonOutput {
                command: "receptive-field",
                model: model.name(),
                device: &args.model.device,
                precision: args.model.precision.name(),
                results: &field,
                files: vec![],
            }
            .print();
        } else {
            println!(
                "{layer}: receptive field {} px, jump {} px, first centre at {:.1} px",
                field.size, field.jump, field.start
            );
        }
        return Ok(());
    }
    if occlusion.patch == 0 || occlusion.stride == 0 || occlusion.batch_size == Some(0) {
        return Err(LumenError::InvalidArgument(
            "--patch, --stride and --batch-size must be at least 1".into(),
        ));
    }
    let cache = args.cache.open(&args.model)?;
    let plan = args.input.plan(model)?;
    let visualizer = FeatureVisualizer::new(model.model());
    let field_of_channel = |images: &lumen::core::Tensor<4>, channel: usize| match args.mode {
        FieldMode::Gradient => {
            visualizer.receptive_field_gradient(images, &layer, channel, args.at)
        }
        _ => visualizer.receptive_field_occlusion(images, &layer, channel, args.at, occlusion),
    };
    // Without --channel, each image's most active unit at the position: channel 0 is
    // often silent there (an empty field), and which one fires differs by image.
    let field = |inputs: &lumen::Inputs| -> Result<Vec<ReceptiveMap>> {
        let channels = match args.channel {
            Some(channel) => vec![channel; inputs.len()],
            None => visualizer.most_active_channels(&inputs.tensor, &layer, args.at)?,
        };
        // One pass per distinct channel, over the images that chose it.
        let mut distinct = channels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut maps: Vec<Option<ReceptiveMap>> = vec![None; inputs.len()];
        for channel in distinct {
            let positions: Vec<usize> = (0..channels.len())
                .filter(|&i| channels[i] == channel)
                .collect();
            let computed = match positions.len() == inputs.len() {
                true => field_of_channel(&inputs.tensor, channel)?,
                false => field_of_channel(&inputs.select(&positions)?.tensor, channel)?,
            };
            for (map, i) in computed.into_iter().zip(positions) {
                maps[i] = Some(map);
            }
        }
        Ok(maps.into_iter().flatten().collect())
    };
    // A folder is read a chunk at a time (an occlusion field is many passes per
    // image: chunks of a few images keep the bar moving); what is printed is kept.
    let most_images = match args.mode {
        FieldMode::Occlusion => crate::args::MANY_ROWS_CHUNK_IMAGES,
        _ => usize::MAX,
    };
    let mut names: Vec<String> = vec![];
    let mut kept: Vec<ReceptiveMap> = vec![];
    let mut files: Vec<PathBuf> = vec![];
    plan.for_each_chunk_of_at_most(
        model.device(),
        most_images,
        ("receptive fields", args.print.quiet),
        |chunk| {
            let inputs = chunk.inputs;
            // Each image's field depends on that image alone: cached per image, the missing
            // ones computed together. The occlusion batch size changes no value.
            let maps: Vec<ReceptiveMap> = match cache.as_deref() {
                None => field(&inputs)?,
                Some(cache) => {
                    let geometry = match args.mode {
                        FieldMode::Occlusion => {
                            format!("patch {} stride {}", occlusion.patch, occlusion.stride)
                        }
                        _ => String::new(),
                    };
                    let settings = format!(
                        "receptive-field\nmode {}\nlayer {layer}\nchannel {}\nat {:?}\n{geometry}\npreprocessing {:?}",
                        args.mode,
                        args.channel
                            .map_or("most active".to_string(), |c| c.to_string()),
                        args.at,
                        model.data_config()
                    );
                    let keys = cache.image_keys(&settings, &inputs.tensor)?;
                    let mut maps: Vec<Option<ReceptiveMap>> = keys
                        .iter()
                        .map(|key| {
                            let (header, values) = cache.get_record(key)?;
                            let mut map: ReceptiveMap = serde_json::from_value(header).ok()?;
                            (values.len() == map.height * map.width).then(|| {
                                map.values = values;
                                map
                            })
                        })
                        .collect();
                    let missing: Vec<usize> = (0..maps.len()).filter(|&i| maps[i].is_none()).collect();
                    if !missing.is_empty() {
                        let computed = field(&inputs.select(&missing)?)?;
                        for (map, &i) in computed.into_iter().zip(&missing) {
                            let header = serde_json::to_value(&map)
                                .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
                            cache.put_record(&keys[i], &header, &map.values)?;
                            maps[i] = Some(map);
                        }
                    }
                    maps.into_iter().flatten().collect()
                }
            };
            if !args.figure.no_figures {
                files.extend(draw_fields(args, &layer, &inputs, &maps)?);
            }
            // The figures are written: keep what is printed.
            kept.extend(maps.into_iter().map(|m| ReceptiveMap { values: vec![], ..m }));
            names.extend(inputs.names);
            Ok(())
        },
    )?;
    let maps = kept;
    crate::args::report_cache(cache.as_deref(), maps.len(), args.print.quiet);
    if args.print.json {
        JsonOutput {
            command: "receptive-field",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &maps,
            files,
        }
        .print();
    } else {
        for (i, m) in maps.iter().enumerate() {
            let extent = m
                .support
                .map(|[x0, y0, x1, y1]| {
                    format!("{}x{} px at x {x0}..{x1}, y {y0}..{y1}", x1 - x0, y1 - y0)
                })
                .or_else(|| empty_field_reason(m, args.mode, &layer))
                .unwrap_or_default();
            println!(
                "{}: {} field of {layer}[{}, {:?}] (activation {:.3}): {extent}",
                names[i], args.mode, m.channel, m.position, m.activation
            );
        }
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// Each image's receptive field drawn over it (`<image>_<layer>_c<channel>_<mode>.png`,
/// with the reason under an empty one), on every core; the files, in order.
fn draw_fields(
    args: &ReceptiveFieldArgs,
    layer: &str,
    inputs: &lumen::Inputs,
    maps: &[ReceptiveMap],
) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    maps.par_iter()
        .zip(inputs.names.par_iter())
        .zip(inputs.originals.par_iter())
        .map(|((m, name), original)| {
            let map = Map::new(m.values.clone(), m.width as u32, m.height as u32).normalized();
            let title = format!(
                "{name} {layer} channel {} at {:?} (activation {:.3}): {} receptive field",
                m.channel, m.position, m.activation, args.mode
            );
            let figure = lumen::core::profile::timed(lumen::core::profile::stages::ENCODE, || {
                let figure = explanation_figure(
                    original,
                    &map,
                    args.figure.colormap,
                    args.figure.alpha,
                    &title,
                );
                let notes: Vec<String> = empty_field_reason(m, args.mode, layer)
                    .into_iter()
                    .collect();
                lumen::report::with_notes(&figure, &notes)
            });
            let file = format!(
                "{name}_{}_c{}_{}.png",
                layer.replace('.', "-"),
                m.channel,
                args.mode
            );
            save_png(&figure, &args.figure.out, &file)
        })
        .collect()
}

/// Why a receptive field is empty (all zero), for the printout and under the figure;
/// `None` when it is not. The common cause is a unit at 0 after its ReLU: no gradient
/// reaches the input, and no occlusion lowers it.
fn empty_field_reason(map: &ReceptiveMap, mode: FieldMode, layer: &str) -> Option<String> {
    if map.support.is_some() {
        return None;
    }
    let why = match mode {
        FieldMode::Occlusion => "no occluding patch changed the activation",
        _ if map.activation <= 0.0 => "a unit at or below 0 after its ReLU passes no gradient",
        _ => "no input pixel changes the activation locally",
    };
    Some(format!(
        "empty: {why}; pick a channel active here (`lumen features --layer {layer}` lists \
         the most active ones) or another --at"
    ))
}

/// The images of a scan that excite one channel most.
#[derive(Serialize)]
struct ChannelTopImages {
    channel: usize,
    /// `(image path, channel mean)`, best first.
    images: Vec<(PathBuf, f64)>,
}

/// `--top-images`: scan every input in batches and keep, per channel, the K images of
/// highest channel mean; one grid figure (a row per channel).
fn top_images<T: TaskModel>(args: &FeaturesArgs, model: &T, layer: &str) -> Result<()> {
    // Files read (decoded at full size) at a time; each read chunk runs in forward
    // batches of --batch-size or the visualizer's sized default.
    let batch_size = args.batch_size.unwrap_or(16);
    args.input
        .require_model_size("lumen features --top-images")?;
    let files = args.input.files()?;
    // More images per channel than there are inputs would only pad the grid with empty
    // tiles (10^5 of them exhausted memory): each channel shows at most every input.
    let per_channel = args.top_images.min(files.len());
    let default_channels: Vec<usize> = (0..8).collect();
    let channels = args.channels.as_ref().map_or(&default_channels, |c| &c.0);
    let visualizer = FeatureVisualizer::new(model.model()).with_batch_size(args.batch_size);
    let cache = args.cache.open(&args.model)?;
    let settings = format!(
        "channel means\nlayer {layer}\npreprocessing {:?} ({})",
        model.data_config(),
        lumen::core::input::RESIZE_VERSION
    );
    let mut best: Vec<Vec<(f64, usize)>> = vec![vec![]; channels.len()];
    let bar = crate::args::progress(files.len() as u64, "scanning", args.print.quiet);
    for (chunk_index, chunk) in files.chunks(batch_size).enumerate() {
        let keys: Vec<Option<String>> = chunk
            .iter()
            .map(|path| Some(cache.as_ref()?.key(&settings, &std::fs::read(path).ok()?)))
            .collect();
        // Per file of the chunk: its channel means, from the cache or computed.
        let mut chunk_means: Vec<Option<Vec<f64>>> = keys
            .iter()
            .map(|key| serde_json::from_value(cache.as_ref()?.get_json(key.as_ref()?)?).ok())
            .collect();
        let missing: Vec<usize> = (0..chunk.len())
            .filter(|&i| chunk_means[i].is_none())
            .collect();
        // An unreadable file is skipped (and listed at the end); the others are scanned.
        let read = lumen::Inputs::read(
            model,
            &missing.iter().map(|&i| &chunk[i]).collect::<Vec<_>>(),
        )?;
        crate::args::record_failures(&read.failures);
        bar.inc(chunk.len() as u64);
        if let Some(inputs) = read.inputs {
            let readable = missing
                .iter()
                .filter(|&&i| !read.failures.iter().any(|f| f.path == chunk[i]));
            for (&i, means) in readable.zip(visualizer.channel_means(&inputs.tensor, layer)?) {
                if let (Some(cache), Some(key)) = (&cache, &keys[i]) {
                    cache.put_json(key, &serde_json::json!(means))?;
                }
                chunk_means[i] = Some(means);
            }
        }
        let kept: Vec<usize> = (0..chunk.len())
            .filter(|&i| chunk_means[i].is_some())
            .map(|i| chunk_index * batch_size + i)
            .collect();
        let means: Vec<Vec<f64>> = chunk_means.into_iter().flatten().collect();
        if means.is_empty() {
            continue;
        }
        let available = means.first().map_or(0, Vec::len);
        if let Some(&c) = channels.iter().find(|&&c| c >= available) {
            return Err(LumenError::InvalidArgument(format!(
                "channel {c} is out of range: layer `{layer}` has {available} channels (0..{available})"
            )));
        }
        for (k, &channel) in channels.iter().enumerate() {
            for (image, &file) in means.iter().zip(&kept) {
                best[k].push((image[channel], file));
            }
            best[k].sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            best[k].truncate(per_channel);
        }
    }
    if best.iter().all(Vec::is_empty) {
        return Err(lumen::no_readable_input(&crate::args::recorded_failures()));
    }
    bar.finish_and_clear();
    crate::args::report_cache(cache.as_deref(), files.len(), args.print.quiet);
    let results: Vec<ChannelTopImages> = channels
        .iter()
        .zip(&best)
        .map(|(&channel, top)| ChannelTopImages {
            channel,
            images: top.iter().map(|&(v, i)| (files[i].clone(), v)).collect(),
        })
        .collect();
    let mut written = vec![];
    if !args.figure.no_figures {
        let mut tiles = vec![];
        for row in &results {
            let paths: Vec<&PathBuf> = row.images.iter().map(|(p, _)| p).collect();
            let inputs = lumen::Inputs::load(model, &paths)?;
            for ((path, value), original) in row.images.iter().zip(inputs.originals) {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tiles.push((format!("#{} {stem} {value:.2}", row.channel), original));
            }
            // Short rows (fewer images than K) are padded so each channel keeps its row.
            for _ in row.images.len()..per_channel {
                tiles.push((String::new(), image::RgbImage::new(1, 1)));
            }
        }
        let title = format!(
            "{}: the {} images of {} that excite each channel of {layer} most",
            model.name(),
            per_channel,
            files.len()
        );
        let figure = lumen::image_grid(&title, &tiles, 112, per_channel);
        let name = format!("{}_top_images.png", layer.replace('.', "-"));
        written.push(save_png(&figure, &args.figure.out, &name)?);
    }
    if args.print.json {
        JsonOutput {
            command: "features",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &results,
            files: written,
        }
        .print();
    } else {
        for row in &results {
            let names: Vec<String> = row
                .images
                .iter()
                .map(|(p, v)| format!("{} ({v:.3})", p.display()))
                .collect();
            println!("channel {}: {}", row.channel, names.join(", "));
        }
        for f in &written {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(activation: f32, support: Option<[usize; 4]>) -> ReceptiveMap {
        ReceptiveMap {
            layer: "layer3".into(),
            channel: 0,
            position: [4, 4],
            activation,
            height: 8,
            width: 8,
            support,
            values: vec![0.0; 64],
        }
    }

    #[test]
    fn an_empty_field_says_why_and_a_drawn_one_says_nothing() {
        assert_eq!(
            empty_field_reason(&field(0.5, Some([0, 0, 2, 2])), FieldMode::Gradient, "l"),
            None
        );
        let dead = empty_field_reason(&field(0.0, None), FieldMode::Gradient, "layer3").unwrap();
        assert!(dead.contains("at or below 0 after its ReLU"), "{dead}");
        assert!(dead.contains("lumen features --layer layer3"), "{dead}");
        let live = empty_field_reason(&field(2.0, None), FieldMode::Gradient, "l").unwrap();
        assert!(live.contains("no input pixel changes"), "{live}");
        let occluded = empty_field_reason(&field(0.0, None), FieldMode::Occlusion, "l").unwrap();
        assert!(occluded.contains("no occluding patch"), "{occluded}");
    }
}
