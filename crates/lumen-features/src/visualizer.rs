//! [`FeatureVisualizer`]: feature maps, statistics, layer comparison and top channels
//! of any explainable model, recorded through taps.

use lumen_core::profile::{self, stages};
use lumen_core::{
    ExplainableModel, LumenError, Recorder, Result, Tensor, as_feature_map,
    default_forward_rows_for, map_chunks, random, to_host, unprobed_forward_rows,
};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use crate::statistics::{
    FeatureStatistics, SortBy, StatisticsOptions, channel_scores, combine, statistics_of_host,
    top_k,
};

/// One channel and its score (mean activation, or variance).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelScore {
    /// Channel index.
    pub channel: usize,
    /// Its score.
    pub score: f64,
}

/// One channel's map of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMap {
    /// Channel index.
    pub channel: usize,
    /// The score it was chosen by.
    pub score: f64,
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Height of the map.
    pub height: usize,
    /// Width of the map.
    pub width: usize,
    /// Row-major values (raw activations).
    #[serde(skip)]
    pub values: Vec<f32>,
}

/// A layer's statistics per image and over the batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerStatistics {
    /// Layer name.
    pub layer: String,
    /// One per image.
    pub per_image: Vec<FeatureStatistics>,
    /// Over the whole batch.
    pub batch: FeatureStatistics,
}

impl LayerStatistics {
    /// The statistics of `layer`'s values of a batch (row-major `[B,C,h,w]`): each
    /// image's, and the batch's combined from them ([`from_images`](Self::from_images)).
    pub fn of_batch(
        layer: &str,
        values: &[f32],
        [b, c, h, w]: [usize; 4],
        options: &StatisticsOptions,
    ) -> Result<Self> {
        let per = c * h * w;
        let per_image = (0..b)
            .map(|i| statistics_of_host(&values[i * per..(i + 1) * per], [1, c, h, w], options))
            .collect();
        Self::from_images(layer, per_image)
    }

    /// The statistics of a batch from its images' (at least one): the batch's are the
    /// images' combined one after another ([`combine`], weighted by value counts). The
    /// same images give the same bits however they were grouped (internal batches,
    /// chunks of a folder, entries of a cache).
    pub fn from_images(layer: &str, per_image: Vec<FeatureStatistics>) -> Result<Self> {
        let Some((first, rest)) = per_image.split_first() else {
            return Err(LumenError::InvalidArgument(format!(
                "the statistics of `{layer}` need at least one image"
            )));
        };
        if let Some(odd) = rest.iter().find(|s| shape(s) != shape(first)) {
            return Err(LumenError::InvalidArgument(format!(
                "cannot combine the statistics of `{layer}` of shapes {:?} and {:?}",
                shape(first),
                shape(odd)
            )));
        }
        let batch = fold_images(first.clone(), 1, rest);
        Ok(Self {
            layer: layer.to_string(),
            per_image,
            batch,
        })
    }

    /// The statistics of another batch of the same layer added, as if both batches had
    /// been one (a folder scanned in chunks): `other`'s images follow, and the batch
    /// statistics are those of one batch of all the images, to the bit.
    pub fn append(&mut self, other: LayerStatistics) -> Result<()> {
        if other.layer != self.layer || shape(&other.batch) != shape(&self.batch) {
            return Err(LumenError::InvalidArgument(format!(
                "cannot add the statistics of `{}` ({:?}) to those of `{}` ({:?})",
                other.layer,
                shape(&other.batch),
                self.layer,
                shape(&self.batch)
            )));
        }
        self.batch = fold_images(self.batch.clone(), self.per_image.len(), &other.per_image);
        self.per_image.extend(other.per_image);
        Ok(())
    }
}

/// What must agree for two statistics to combine: channels and spatial size.
fn shape(s: &FeatureStatistics) -> (usize, [usize; 2]) {
    (s.num_channels, s.spatial_size)
}

/// `batch` (the statistics of `images` images) with `more` images' added one at a time.
fn fold_images(
    batch: FeatureStatistics,
    images: usize,
    more: &[FeatureStatistics],
) -> FeatureStatistics {
    let values_per_image = |s: &FeatureStatistics| {
        let [h, w] = s.spatial_size;
        (s.num_channels * h * w) as f64
    };
    let mut count = images as f64 * values_per_image(&batch);
    more.iter().fold(batch, |batch, image| {
        let added = values_per_image(image);
        let combined = combine(&batch, count, image, added);
        count += added;
        combined
    })
}

/// Each layer's statistics of another batch added to `merged` (empty before the first
/// batch: it takes the batch's), layer by layer in the same order, as
/// [`LayerStatistics::append`]: internal batches, or a folder scanned in chunks.
pub fn append_layers(merged: &mut Vec<LayerStatistics>, batch: Vec<LayerStatistics>) -> Result<()> {
    if merged.is_empty() {
        *merged = batch;
        return Ok(());
    }
    if merged.len() != batch.len() {
        return Err(LumenError::InvalidArgument(format!(
            "cannot add the statistics of {} layers to those of {}",
            batch.len(),
            merged.len()
        )));
    }
    for (all, part) in merged.iter_mut().zip(batch) {
        all.append(part)?;
    }
    Ok(())
}

/// Looks inside a model: what its named layers compute for a batch of inputs.
///
/// The scans that return per-image results ([`feature_maps`](Self::feature_maps),
/// [`top_channels`](Self::top_channels), [`channel_means`](Self::channel_means),
/// [`statistics`](Self::statistics), [`compare_layers`](Self::compare_layers)) run the
/// batch through the model in internal batches, so a folder's worth of images does
/// not hold every layer's activations at once; [`features_of`](Self::features_of)
/// returns whole feature tensors and runs the batch in one pass.
pub struct FeatureVisualizer<'a, M: ExplainableModel> {
    pub(crate) model: &'a M,
    batch_size: Option<usize>,
    /// The probed pass size of the last input shape: a scan over a folder calls the
    /// visualizer once per read batch, all of one shape, and probes once.
    probed: Mutex<Option<([usize; 3], usize)>>,
}

impl<'a, M: ExplainableModel> FeatureVisualizer<'a, M> {
    /// A visualizer over `model` (in evaluation mode).
    pub fn new(model: &'a M) -> Self {
        Self {
            model,
            batch_size: None,
            probed: Mutex::new(None),
        }
    }

    /// Images per forward pass of the scans. `None` (the default) sizes it to the input
    /// and the model ([`default_forward_rows_for`]: 32 on a ResNet at 224 px, its stem
    /// binds; a batch of up to 8 goes whole, [`unprobed_forward_rows`]); `Some(0)` is
    /// refused when a scan runs.
    pub fn with_batch_size(mut self, batch_size: Option<usize>) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// [`default_forward_rows_for`] `input`'s shape, probed once per shape in a row.
    fn probed_rows(&self, input: &Tensor<4>) -> usize {
        let [_, c, h, w] = input.dims();
        let mut probed = self
            .probed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match *probed {
            Some((shape, rows)) if shape == [c, h, w] => rows,
            _ => {
                let rows = default_forward_rows_for(self.model, input);
                *probed = Some(([c, h, w], rows));
                rows
            }
        }
    }

    /// `work` on each forward-only internal batch of `input`'s rows, with the index of
    /// its first row; results in row order.
    fn per_batch<T>(
        &self,
        input: &Tensor<4>,
        work: impl FnMut(Tensor<4>, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let forward_rows = || match unprobed_forward_rows(input) {
            Some(rows) => rows,
            None => self.probed_rows(input),
        };
        self.in_batches(input, forward_rows, work)
    }

    /// `work` on each internal batch of `input`'s rows (the visualizer's batch size,
    /// else `default_rows()`), with the index of its first row; results in row order.
    pub(crate) fn in_batches<T>(
        &self,
        input: &Tensor<4>,
        default_rows: impl FnOnce() -> usize,
        mut work: impl FnMut(Tensor<4>, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = input.dims()[0];
        if rows == 0 {
            return Err(LumenError::InvalidArgument(
                "the input batch is empty".into(),
            ));
        }
        self.model.check_input(input)?;
        let chunk = match self.batch_size {
            Some(0) => {
                return Err(LumenError::InvalidArgument(
                    "the batch size (images per pass) must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => default_rows(),
        };
        if chunk >= rows {
            return Ok(vec![work(input.clone(), 0)?]);
        }
        map_chunks(rows, chunk, |range| {
            work(
                input.clone().narrow(0, range.start, range.len()),
                range.start,
            )
        })
    }

    /// The feature maps `[B,C,h,w]` of several layers from one forward pass (token
    /// layers laid on their patch grid, prefix tokens dropped).
    pub fn features_of(&self, input: &Tensor<4>, layers: &[String]) -> Result<Vec<Tensor<4>>> {
        let infos = self.check_layers(layers)?;
        self.model.check_input(input)?;
        let recorder = Recorder::new(layers.iter().cloned());
        let _forward = profile::stage_on(stages::FORWARD, &input.device());
        self.model
            .forward_tapped(input.clone().without_autodiff(), &recorder);
        infos
            .iter()
            .map(|info| {
                let recorded = recorder.get(&info.name).ok_or_else(|| {
                    LumenError::InvalidArgument(format!(
                        "layer `{}` is listed by the model but its forward pass never visited it",
                        info.name
                    ))
                })?;
                as_feature_map(recorded, &info.kind, &info.name)
            })
            .collect()
    }

    /// The model's descriptions of `layers`: an unknown name (or none) is an error that
    /// lists the valid ones.
    fn check_layers(&self, layers: &[String]) -> Result<Vec<lumen_core::LayerInfo>> {
        if layers.is_empty() {
            return Err(LumenError::InvalidArgument("no layer given".into()));
        }
        layers.iter().map(|l| self.model.layer(l)).collect()
    }

    /// The feature maps `[B,C,h,w]` of one layer.
    pub fn features(&self, input: &Tensor<4>, layer: &str) -> Result<Tensor<4>> {
        Ok(self.features_of(input, &[layer.to_string()])?.remove(0))
    }

    /// Statistics of a layer per image and over the batch.
    pub fn statistics(
        &self,
        input: &Tensor<4>,
        layer: &str,
        options: &StatisticsOptions,
    ) -> Result<LayerStatistics> {
        Ok(self
            .compare_layers(input, &[layer.to_string()], options)?
            .remove(0))
    }

    /// Statistics of several layers side by side, from one forward pass.
    pub fn compare_layers(
        &self,
        input: &Tensor<4>,
        layers: &[String],
        options: &StatisticsOptions,
    ) -> Result<Vec<LayerStatistics>> {
        options.validate()?;
        self.check_layers(layers)?;
        Ok(self.scan(input, None, layers, options)?.1)
    }

    /// [`feature_maps`](Self::feature_maps) of `maps.layer` and
    /// [`compare_layers`](Self::compare_layers) of `layers` from one forward pass per
    /// internal batch (what `lumen features` draws and prints).
    pub fn maps_and_statistics(
        &self,
        input: &Tensor<4>,
        maps: &MapChoice,
        layers: &[String],
        options: &StatisticsOptions,
    ) -> Result<(Vec<Vec<ChannelMap>>, Vec<LayerStatistics>)> {
        maps.validate()?;
        options.validate()?;
        self.check_layers(std::slice::from_ref(&maps.layer))?;
        self.check_layers(layers)?;
        self.scan(input, Some(maps), layers, options)
    }

    /// Each image's channel maps of `maps` (none without it) and the statistics of
    /// `layers` (any number), recorded together: one forward pass per internal batch.
    fn scan(
        &self,
        input: &Tensor<4>,
        maps: Option<&MapChoice>,
        layers: &[String],
        options: &StatisticsOptions,
    ) -> Result<(Vec<Vec<ChannelMap>>, Vec<LayerStatistics>)> {
        let mut recorded: Vec<String> = vec![];
        for layer in layers.iter().chain(maps.map(|m| &m.layer)) {
            if !recorded.contains(layer) {
                recorded.push(layer.clone());
            }
        }
        let batches = self.per_batch(input, |batch, first| {
            // One copy to the host per layer; images are slices of it.
            let host = self
                .features_of(&batch, &recorded)?
                .into_iter()
                .map(|f| Ok((f.dims(), to_host(f)?)))
                .collect::<Result<Vec<_>>>()?;
            let _math = profile::stage(stages::METHOD);
            let of = |layer: &String| &host[recorded.iter().position(|r| r == layer).unwrap()];
            let images = match maps {
                Some(choice) => {
                    let ([b, c, h, w], values) = of(&choice.layer);
                    let per = c * h * w;
                    (0..*b)
                        .map(|i| {
                            choice.of_image(
                                &values[i * per..(i + 1) * per],
                                [*c, *h, *w],
                                first + i,
                            )
                        })
                        .collect()
                }
                None => vec![],
            };
            let statistics: Vec<LayerStatistics> = layers
                .iter()
                .map(|layer| {
                    let (dims, values) = of(layer);
                    LayerStatistics::of_batch(layer, values, *dims, options)
                })
                .collect::<Result<_>>()?;
            Ok((images, statistics))
        })?;
        let mut images = vec![];
        let mut merged = vec![];
        for (batch_images, batch_statistics) in batches {
            images.extend(batch_images);
            append_layers(&mut merged, batch_statistics)?;
        }
        Ok((images, merged))
    }

    /// Per image, every channel's mean activation over positions: what a scan over a
    /// folder ranks images by.
    pub fn channel_means(&self, input: &Tensor<4>, layer: &str) -> Result<Vec<Vec<f64>>> {
        self.per_image_of_layer(input, layer, |image, [_, h, w], _| {
            channel_scores(image, h * w, SortBy::Activation)
        })
    }

    /// `work` on each image's values of `layer` (row-major `[C, h, w]`, with that shape
    /// and the image's index in `input`), run in internal batches; results in image
    /// order.
    fn per_image_of_layer<T>(
        &self,
        input: &Tensor<4>,
        layer: &str,
        mut work: impl FnMut(&[f32], [usize; 3], usize) -> T,
    ) -> Result<Vec<T>> {
        self.check_layers(&[layer.to_string()])?;
        let batches = self.per_batch(input, |batch, first| {
            let features = self.features(&batch, layer)?;
            let [b, c, h, w] = features.dims();
            let values = to_host(features)?;
            let per = c * h * w;
            Ok((0..b)
                .map(|i| work(&values[i * per..(i + 1) * per], [c, h, w], first + i))
                .collect::<Vec<_>>())
        })?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Per image, the `k` channels of highest mean activation, best first (AutoTimm's
    /// `get_top_activating_features`).
    pub fn top_channels(
        &self,
        input: &Tensor<4>,
        layer: &str,
        k: usize,
    ) -> Result<Vec<Vec<ChannelScore>>> {
        let maps = self.feature_maps(input, layer, k, SortBy::Activation, 0)?;
        Ok(maps
            .into_iter()
            .map(|image| {
                image
                    .into_iter()
                    .map(|m| ChannelScore {
                        channel: m.channel,
                        score: m.score,
                    })
                    .collect()
            })
            .collect())
    }

    /// Per image, `count` channel maps of a layer chosen by `sort` (`seed` for the
    /// random pick), in that order.
    pub fn feature_maps(
        &self,
        input: &Tensor<4>,
        layer: &str,
        count: usize,
        sort: SortBy,
        seed: u64,
    ) -> Result<Vec<Vec<ChannelMap>>> {
        let choice = MapChoice {
            layer: layer.to_string(),
            count,
            sort,
            seed,
        };
        choice.validate()?;
        self.check_layers(std::slice::from_ref(&choice.layer))?;
        Ok(self
            .scan(input, Some(&choice), &[], &StatisticsOptions::default())?
            .0)
    }
}

/// Which channel maps of a layer to keep per image ([`FeatureVisualizer::feature_maps`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MapChoice {
    /// The layer.
    pub layer: String,
    /// Channels per image (at least 1).
    pub count: usize,
    /// Their order.
    pub sort: SortBy,
    /// Seed of the random order: image `i` of the input draws with `seed + i`.
    pub seed: u64,
}

impl MapChoice {
    fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(LumenError::InvalidArgument(
                "at least one channel must be shown".into(),
            ));
        }
        Ok(())
    }

    /// The chosen maps of one image's values (row-major `[C, h, w]`), the image at
    /// `index` in the input.
    fn of_image(&self, image: &[f32], [c, h, w]: [usize; 3], index: usize) -> Vec<ChannelMap> {
        let plane = h * w;
        let scores = channel_scores(image, plane, self.sort);
        let channels = match self.sort {
            SortBy::Random => {
                // Seeded per image of the whole input, whatever the batches.
                let keys = random::unit_values(c, self.seed.wrapping_add(index as u64));
                let keys: Vec<f64> = keys.iter().map(|&k| k as f64).collect();
                top_k(&keys, self.count)
            }
            _ => top_k(&scores, self.count),
        };
        channels
            .into_iter()
            .map(|ch| {
                let map = image[ch * plane..(ch + 1) * plane].to_vec();
                let (min, max) = map
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                ChannelMap {
                    channel: ch,
                    score: scores[ch],
                    min,
                    max,
                    height: h,
                    width: w,
                    values: map,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statistics_combine_the_images_in_any_grouping() {
        let [b, c, h, w] = [5, 3, 4, 2];
        // Values with zeros, negatives and an image mean far from the others'.
        let values: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 7) % 13) as f32 - 4.0 + if i < c * h * w { 50.0 } else { 0.0 })
            .collect();
        let options = StatisticsOptions::default();
        let whole = LayerStatistics::of_batch("x", &values, [b, c, h, w], &options).unwrap();
        // The pooled statistics are those of all the values at once.
        let direct = statistics_of_host(&values, [b, c, h, w], &options);
        for (name, got, want) in [
            ("mean", whole.batch.mean, direct.mean),
            ("std", whole.batch.std, direct.std),
            ("sparsity", whole.batch.sparsity, direct.sparsity),
            ("near_zero", whole.batch.near_zero, direct.near_zero),
        ] {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{name}: {got} vs {want}"
            );
        }
        assert_eq!((whole.batch.min, whole.batch.max), (direct.min, direct.max));
        assert_eq!(whole.batch.active_channels, direct.active_channels);
        // Chunks of 2, 1 and 2 images appended: the same bits.
        let per = c * h * w;
        let part = |from: usize, to: usize| {
            LayerStatistics::of_batch(
                "x",
                &values[from * per..to * per],
                [to - from, c, h, w],
                &options,
            )
            .unwrap()
        };
        let mut merged = part(0, 2);
        merged.append(part(2, 3)).unwrap();
        merged.append(part(3, 5)).unwrap();
        assert_eq!(merged, whole);
        assert_eq!(
            LayerStatistics::from_images("x", whole.per_image.clone()).unwrap(),
            whole
        );

        let error = LayerStatistics::from_images("x", vec![]).unwrap_err();
        assert!(error.to_string().contains("at least one image"), "{error}");
        let mut odd = whole.per_image.clone();
        odd[3].spatial_size = [2, 2];
        let error = LayerStatistics::from_images("x", odd).unwrap_err();
        assert!(error.to_string().contains("shapes"), "{error}");
    }
}
