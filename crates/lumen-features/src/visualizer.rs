//! [`FeatureVisualizer`]: feature maps, statistics, layer comparison and top channels
//! of any explainable model, recorded through taps.

use lumen_core::{
    ExplainableModel, LumenError, Recorder, Result, Tensor, as_feature_map,
    default_forward_rows_for, map_chunks, random, to_host, unprobed_forward_rows,
};
use serde::Serialize;
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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

    /// `work` on each internal batch of `input`'s rows, with the index of its first
    /// row; results in row order.
    fn per_batch<T>(
        &self,
        input: &Tensor<4>,
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
                    "the batch size (images per forward pass) must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => match unprobed_forward_rows(input) {
                Some(rows) => rows,
                None => self.probed_rows(input),
            },
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
        // Per internal batch and layer: its images' statistics and the batch's own,
        // with its value count; the batches' statistics combine exactly.
        let batches = self.per_batch(input, |batch, _| {
            self.features_of(&batch, layers)?
                .into_iter()
                .map(|f| {
                    // One copy to the host per layer; images are slices of it.
                    let [b, c, h, w] = f.dims();
                    let values = to_host(f)?;
                    let per = c * h * w;
                    let per_image: Vec<FeatureStatistics> = (0..b)
                        .map(|i| {
                            let image = &values[i * per..(i + 1) * per];
                            statistics_of_host(image, [1, c, h, w], options)
                        })
                        .collect();
                    let whole = statistics_of_host(&values, [b, c, h, w], options);
                    Ok((per_image, whole, values.len() as f64))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(layers
            .iter()
            .enumerate()
            .map(|(k, layer)| {
                let mut per_image = vec![];
                let mut total: Option<(FeatureStatistics, f64)> = None;
                for batch in &batches {
                    let (images, whole, count) = &batch[k];
                    per_image.extend(images.iter().cloned());
                    total = Some(match total {
                        None => (whole.clone(), *count),
                        Some((t, n)) => (combine(&t, n, whole, *count), n + count),
                    });
                }
                LayerStatistics {
                    layer: layer.clone(),
                    per_image,
                    batch: total.expect("a non-empty input has one internal batch").0,
                }
            })
            .collect())
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
        if count == 0 {
            return Err(LumenError::InvalidArgument(
                "at least one channel must be shown".into(),
            ));
        }
        self.per_image_of_layer(input, layer, |image, [c, h, w], index| {
            let plane = h * w;
            let scores = channel_scores(image, plane, sort);
            let channels = match sort {
                SortBy::Random => {
                    // Seeded per image of the whole input, whatever the batches.
                    let keys = random::unit_values(c, seed.wrapping_add(index as u64));
                    let keys: Vec<f64> = keys.iter().map(|&k| k as f64).collect();
                    top_k(&keys, count)
                }
                _ => top_k(&scores, count),
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
        })
    }
}
