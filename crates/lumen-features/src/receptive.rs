//! Receptive fields, three ways:
//!
//! - theoretical: size, jump and start of each layer from the sliding-window
//!   operations on the model's main path (Araujo et al. 2019, "Computing receptive
//!   fields of convolutional neural networks");
//! - gradient (effective receptive field, Luo et al. 2016): the input gradient of one
//!   activation `[c, y, x]`; on a linear stack its non-zero support is the
//!   theoretical field;
//! - occlusion (AutoTimm's `visualize_receptive_field`): the change of the activation
//!   when a patch of the input is zeroed. AutoTimm writes each patch's change over the
//!   previous ones and never places a patch on the last row and column; we average
//!   overlapping patches and cover the edges (a last patch flush with each border).

use lumen_core::profile::{self, stages};
use lumen_core::{ExplainableModel, LumenError, Recorder, Result, Tensor, as_feature_map, to_host};
use serde::Serialize;

use crate::visualizer::FeatureVisualizer;

/// The theoretical receptive field of a layer, in input pixels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceptiveField {
    /// Layer name.
    pub layer: String,
    /// Side of the field (input pixels one output unit can see).
    pub size: usize,
    /// Distance in input pixels between neighbouring output units (the total stride).
    pub jump: usize,
    /// Centre of the first output unit's field, in input pixel coordinates (pixel `i`
    /// spans `[i, i + 1)`); negative when the field starts in the padding.
    pub start: f64,
}

/// Each spatial layer's theoretical receptive field, from
/// [`ExplainableModel::window_ops`]; empty when the model does not describe its
/// geometry (ViTs: every token sees the whole image after the first block).
pub fn theoretical_receptive_fields<M: ExplainableModel>(model: &M) -> Vec<ReceptiveField> {
    let (mut size, mut jump, mut start) = (1usize, 1usize, 0.5f64);
    model
        .window_ops()
        .into_iter()
        .map(|(layer, ops)| {
            for op in ops {
                let effective = op.dilation * (op.kernel - 1) + 1;
                size += (effective - 1) * jump;
                start += ((effective - 1) as f64 / 2.0 - op.padding as f64) * jump as f64;
                jump *= op.stride;
            }
            ReceptiveField {
                layer,
                size,
                jump,
                start,
            }
        })
        .collect()
}

/// A receptive-field map of one image over the input.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ReceptiveMap {
    /// Layer.
    pub layer: String,
    /// Channel of the activation.
    pub channel: usize,
    /// `[y, x]` of the activation in the layer's map.
    pub position: [usize; 2],
    /// The activation's value on the unoccluded image. At 0 after a ReLU it passes no
    /// gradient, and its gradient field is empty.
    pub activation: f32,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// The box `[x0, y0, x1, y1]` (half-open) of the non-zero values, if any.
    pub support: Option<[usize; 4]>,
    /// Row-major values over the input.
    #[serde(skip)]
    pub values: Vec<f32>,
}

fn support(values: &[f32], width: usize) -> Option<[usize; 4]> {
    let mut bbox: Option<[usize; 4]> = None;
    for (i, _) in values.iter().enumerate().filter(|(_, v)| **v != 0.0) {
        let (y, x) = (i / width, i % width);
        bbox = Some(match bbox {
            None => [x, y, x + 1, y + 1],
            Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)],
        });
    }
    bbox
}

/// Check `channel` and `at` against a layer's `[B,C,h,w]` map; `at` defaults to the
/// centre.
fn unit_position(
    layer: &str,
    [_, c, h, w]: [usize; 4],
    channel: usize,
    at: Option<[usize; 2]>,
) -> Result<[usize; 2]> {
    if channel >= c {
        return Err(LumenError::InvalidArgument(format!(
            "channel {channel} is out of range: layer `{layer}` has {c} channels (0..{c})"
        )));
    }
    let position = at.unwrap_or([h / 2, w / 2]);
    if position[0] >= h || position[1] >= w {
        return Err(LumenError::InvalidArgument(format!(
            "position {position:?} is outside layer `{layer}`'s {h}x{w} map"
        )));
    }
    Ok(position)
}

/// Occluding patches `[start, start + patch)` along a side of `len` pixels: every
/// `stride`, plus one flush with the far edge so that every pixel is covered.
fn patch_starts(len: usize, patch: usize, stride: usize) -> Vec<usize> {
    if patch >= len {
        return vec![0];
    }
    let mut starts: Vec<usize> = (0..=len - patch).step_by(stride).collect();
    if starts.last() != Some(&(len - patch)) {
        starts.push(len - patch);
    }
    starts
}

/// Refuse patch geometries whose map would look like a result but is not one: a patch
/// covering the whole image (one occlusion, a uniform map), or a stride longer than the
/// patch (pixels between patches never occluded, drawn as "no effect").
fn check_occlusion_geometry(
    patch: usize,
    stride: usize,
    [height, width]: [usize; 2],
) -> Result<()> {
    if patch >= height && patch >= width {
        return Err(LumenError::InvalidArgument(format!(
            "an occlusion patch of {patch} px covers the whole {height}x{width} input: \
             one occlusion gives a uniform map; use a patch smaller than the image"
        )));
    }
    if stride > patch {
        return Err(LumenError::InvalidArgument(format!(
            "an occlusion stride of {stride} px is longer than the {patch} px patch: the \
             pixels between patches would never be occluded; use a stride of at most {patch}"
        )));
    }
    Ok(())
}

/// Settings of the occlusion receptive field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occlusion {
    /// Side of the zeroed square, in pixels.
    pub patch: usize,
    /// Distance between squares, in pixels.
    pub stride: usize,
    /// Occluded copies per forward pass; `None` sizes them to the input and model
    /// (`lumen_core::default_forward_rows_for`: 64 at 3x224x224, 32 on a ResNet whose
    /// stem binds, fewer on larger inputs).
    pub batch_size: Option<usize>,
}

impl Default for Occlusion {
    /// AutoTimm's 16-pixel patches every 8 pixels; copies per pass sized to the input.
    fn default() -> Self {
        Self {
            patch: 16,
            stride: 8,
            batch_size: None,
        }
    }
}

impl<M: ExplainableModel> FeatureVisualizer<'_, M> {
    /// Check a channel and position against a layer's map; the centre when `at` is
    /// `None`.
    fn locate(
        &self,
        input: &Tensor<4>,
        layer: &str,
        channel: usize,
        at: Option<[usize; 2]>,
    ) -> Result<(Tensor<4>, [usize; 2])> {
        let features = self.features(input, layer)?;
        let position = unit_position(layer, features.dims(), channel, at)?;
        Ok((features, position))
    }

    /// Per image, the channel of `layer` with the largest activation at `at` (the map's
    /// centre when `None`; ties to the lower index): the unit whose receptive field
    /// says most about that spot when no channel is chosen. One forward pass.
    pub fn most_active_channels(
        &self,
        input: &Tensor<4>,
        layer: &str,
        at: Option<[usize; 2]>,
    ) -> Result<Vec<usize>> {
        let (features, [y, x]) = self.locate(input, layer, 0, at)?;
        let [b, c, _, _] = features.dims();
        let values = to_host(features.narrow(2, y, 1).narrow(3, x, 1).reshape([b, c]))?;
        Ok(values
            .chunks(c)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (k, &v)| {
                        if v > best.1 { (k, v) } else { best }
                    })
                    .0
            })
            .collect())
    }

    /// The effective receptive field of activation `[channel, y, x]` of `layer` (the
    /// map's centre when `at` is `None`) for every image: the absolute input gradient
    /// summed over input channels. One forward and one backward per internal batch
    /// (the visualizer's batch size, else sized like the methods' gradient passes: a
    /// folder's chunk does not hold every image's activations for the backward).
    pub fn receptive_field_gradient(
        &self,
        input: &Tensor<4>,
        layer: &str,
        channel: usize,
        at: Option<[usize; 2]>,
    ) -> Result<Vec<ReceptiveMap>> {
        self.model.layer(layer)?;
        let gradient_rows = || lumen_core::default_batch_rows_for(self.model, input);
        let parts = self.in_batches(input, gradient_rows, |batch, _| {
            self.gradient_field_batch(&batch, layer, channel, at)
        })?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// [`Self::receptive_field_gradient`] of one internal batch.
    fn gradient_field_batch(
        &self,
        input: &Tensor<4>,
        layer: &str,
        channel: usize,
        at: Option<[usize; 2]>,
    ) -> Result<Vec<ReceptiveMap>> {
        let info = self.model.layer(layer)?;
        self.model.check_input(input)?;
        let [b, _, height, width] = input.dims();
        let input = input
            .clone()
            .detach()
            .without_autodiff()
            .autodiff()
            .require_grad();
        let recorder = Recorder::new([layer]);
        {
            let _forward = profile::stage_on(stages::FORWARD, &input.device());
            self.model.forward_tapped(input.clone(), &recorder);
        }
        let recorded = recorder.get(layer).ok_or_else(|| {
            LumenError::InvalidArgument(format!("layer `{layer}` was never visited"))
        })?;
        let map = as_feature_map(recorded, &info.kind, layer)?;
        // Checked on the map of this (autodiff) pass: no second forward needed.
        let [y, x] = unit_position(layer, map.dims(), channel, at)?;
        // Images do not interact in eval mode: one backward of the sum gives each
        // image's own gradient.
        let units = map.narrow(1, channel, 1).narrow(2, y, 1).narrow(3, x, 1);
        let activations = to_host(units.clone().detach().reshape([b]))?;
        let grads = {
            let _backward = profile::stage_on(stages::BACKWARD, &input.device());
            units.sum().backward()
        };
        let gradient = input
            .grad(&grads)
            .unwrap_or_else(|| input.zeros_like().without_autodiff());
        let magnitude = to_host(gradient.abs().sum_dim(1).reshape([b, height * width]))?;
        Ok(magnitude
            .chunks(height * width)
            .zip(activations)
            .map(|(values, activation)| ReceptiveMap {
                layer: layer.to_string(),
                channel,
                position: [y, x],
                activation,
                height,
                width,
                support: support(values, width),
                values: values.to_vec(),
            })
            .collect())
    }

    /// The occlusion receptive field of activation `[channel, y, x]` for every image:
    /// `patch x patch` squares every `stride` pixels (and flush with the far edges)
    /// are set to 0 in the input; each pixel gets the mean activation change of the
    /// patches covering it; absolute values, divided by their maximum. The occluded
    /// copies run in batches of `batch_size` ([`Occlusion`]).
    pub fn receptive_field_occlusion(
        &self,
        input: &Tensor<4>,
        layer: &str,
        channel: usize,
        at: Option<[usize; 2]>,
        occlusion: Occlusion,
    ) -> Result<Vec<ReceptiveMap>> {
        let Occlusion {
            patch,
            stride,
            batch_size,
        } = occlusion;
        if patch == 0 || stride == 0 || batch_size == Some(0) {
            return Err(LumenError::InvalidArgument(
                "occlusion patch size, stride and batch size must be at least 1".into(),
            ));
        }
        let [b, c, height, width] = input.dims();
        check_occlusion_geometry(patch, stride, [height, width])?;
        let (features, [y, x]) = self.locate(input, layer, channel, at)?;
        let unit = |f: Tensor<4>| {
            let [n, _, _, _] = f.dims();
            to_host(
                f.narrow(1, channel, 1)
                    .narrow(2, y, 1)
                    .narrow(3, x, 1)
                    .reshape([n]),
            )
        };
        let baseline = unit(features)?;
        let device = input.device();
        let ys = patch_starts(height, patch, stride);
        let xs = patch_starts(width, patch, stride);
        let patches: Vec<(usize, usize)> = ys
            .iter()
            .flat_map(|&py| xs.iter().map(move |&px| (py, px)))
            .collect();
        // Rows image-major: row = image * patches + patch.
        let rows = b * patches.len();
        let mut change = vec![0f32; rows];
        let chunk =
            batch_size.unwrap_or_else(|| lumen_core::default_forward_rows_for(self.model, input));
        for range in lumen_core::row_chunks(rows, chunk) {
            // Building the occluded copies; their passes are a stage of their own.
            let _occlude = profile::stage(stages::METHOD);
            let n = range.len();
            let images: Vec<usize> = range.clone().map(|r| r / patches.len()).collect();
            let mut keep = vec![1f32; n * height * width];
            for (k, row) in range.clone().enumerate() {
                let (py, px) = patches[row % patches.len()];
                for yy in py..(py + patch).min(height) {
                    let line = k * height * width + yy * width;
                    keep[line + px..line + (px + patch).min(width)].fill(0.0);
                }
            }
            let keep = Tensor::<4>::from_data(
                lumen_core::burn::tensor::TensorData::new(keep, [n, 1, height, width]),
                &device,
            );
            let occluded = input
                .clone()
                .without_autodiff()
                .select(0, lumen_core::index_tensor(&images, &device))
                * keep.expand([n, c, height, width]);
            let activation = unit(self.features(&occluded, layer)?)?;
            for (k, row) in range.enumerate() {
                change[row] = baseline[row / patches.len()] - activation[k];
            }
        }
        Ok((0..b)
            .map(|i| {
                let mut sum = vec![0f32; height * width];
                let mut count = vec![0u32; height * width];
                for (p, &(py, px)) in patches.iter().enumerate() {
                    let delta = change[i * patches.len() + p];
                    for yy in py..(py + patch).min(height) {
                        for xx in px..(px + patch).min(width) {
                            sum[yy * width + xx] += delta;
                            count[yy * width + xx] += 1;
                        }
                    }
                }
                let mut values: Vec<f32> = sum
                    .iter()
                    .zip(&count)
                    .map(|(s, &n)| (s / n.max(1) as f32).abs())
                    .collect();
                let max = values.iter().fold(0f32, |m, &v| m.max(v));
                if max > 0.0 {
                    values.iter_mut().for_each(|v| *v /= max);
                }
                ReceptiveMap {
                    layer: layer.to_string(),
                    channel,
                    position: [y, x],
                    activation: baseline[i],
                    height,
                    width,
                    support: support(&values, width),
                    values,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_cover_every_pixel_once_or_more() {
        assert_eq!(patch_starts(32, 16, 8), vec![0, 8, 16]);
        assert_eq!(patch_starts(30, 16, 8), vec![0, 8, 14]);
        assert_eq!(patch_starts(8, 16, 8), vec![0]);
    }

    #[test]
    fn occlusion_geometry_that_would_draw_a_false_map_is_refused() {
        assert!(check_occlusion_geometry(16, 8, [224, 224]).is_ok());
        assert!(check_occlusion_geometry(16, 16, [224, 224]).is_ok());
        // Taller than the image but narrower: still a map along the width.
        assert!(check_occlusion_geometry(300, 8, [224, 448]).is_ok());
        let whole = check_occlusion_geometry(224, 8, [224, 224]).unwrap_err();
        assert!(
            whole.to_string().contains("covers the whole 224x224 input"),
            "{whole}"
        );
        let gaps = check_occlusion_geometry(8, 16, [224, 224]).unwrap_err();
        assert!(
            gaps.to_string()
                .contains("stride of 16 px is longer than the 8 px patch"),
            "{gaps}"
        );
    }

    #[test]
    fn support_is_the_box_of_non_zero_values() {
        let values = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0];
        assert_eq!(support(&values, 3), Some([1, 1, 2, 3]));
        assert_eq!(support(&[0.0; 4], 2), None);
    }
}
