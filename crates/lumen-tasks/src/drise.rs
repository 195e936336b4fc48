//! D-RISE (Petsiuk et al. 2021, "Black-box Explanation of Object Detectors via
//! Saliency Maps"): a black-box explanation of one detection for any detector.
//!
//! Random low-resolution binary masks are upsampled (bilinear) with a random shift,
//! the image is multiplied by each, and the detector's decoded detections on the
//! masked image are compared with the target: similarity = IoU(boxes) x objectness x
//! cosine(class vectors), where the target's class vector is one-hot and its
//! objectness 1. A mask's weight is its best similarity over the detections, and the
//! map is the weighted mean of the masks. For a dense detector the class vector of a
//! detection is its location's class scores (sigmoid(class) x sigmoid(centerness))
//! and its objectness sigmoid(centerness). Masks can be given (`DriseMasks`), so a
//! fixture can pin them.

use std::ops::Range;

use lumen_core::burn::tensor::TensorData;
use lumen_core::burn::tensor::activation::sigmoid;
use lumen_core::burn::tensor::module::interpolate;
use lumen_core::burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use lumen_core::profile::{
    self,
    stages::{FORWARD, METHOD},
};
use lumen_core::random::UniformStream;
use lumen_core::{
    DetectorOutput, ExplainableModel, Heatmaps, LumenError, Result, Tensor, row_chunks, to_host,
};

use crate::detection::{BoxRequest, DecodeConfig, box_iou, decode_host, dense_candidates};

/// D-RISE's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriseConfig {
    /// Number of masks (the paper uses 5000; 1000 gives a usable map).
    pub masks: usize,
    /// Cells per side of the low-resolution masks (16 in the paper).
    pub grid: usize,
    /// Probability that a cell is kept (0.5).
    pub keep_probability: f32,
    /// Seed of the masks and shifts.
    pub seed: u64,
    /// Masked images per forward pass (the memory knob); `None` sizes them to the
    /// input and model (`lumen_core::default_forward_rows_for`: fewer on larger
    /// inputs and on models with large activations).
    pub batch_size: Option<usize>,
    /// How masked images' outputs become detections (score threshold 0.05, NMS 0.5).
    pub decode: DecodeConfig,
}

impl Default for DriseConfig {
    fn default() -> Self {
        Self {
            masks: 1000,
            grid: 16,
            keep_probability: 0.5,
            seed: 0,
            batch_size: None,
            decode: DecodeConfig::default(),
        }
    }
}

/// The most masks D-RISE takes: 100x the default, about 6 minutes per image and box on
/// a 2-core CPU with the bundled detector; a count past it could only run for days.
pub const MAX_DRISE_MASKS: usize = 100_000;

impl DriseConfig {
    /// Check the numbers before any work.
    pub fn validate(&self) -> Result<()> {
        if self.masks == 0 || self.grid == 0 || self.batch_size == Some(0) {
            return Err(LumenError::InvalidArgument(
                "D-RISE needs at least 1 mask, 1 grid cell and a batch of 1".into(),
            ));
        }
        if self.masks > MAX_DRISE_MASKS {
            return Err(LumenError::InvalidArgument(format!(
                "D-RISE takes at most {MAX_DRISE_MASKS} masks (its paper uses 5000; each is a \
                 detector pass per image), got {}",
                self.masks
            )));
        }
        if !(self.keep_probability > 0.0 && self.keep_probability <= 1.0) {
            return Err(LumenError::InvalidArgument(format!(
                "the keep probability must be in (0, 1], got {}",
                self.keep_probability
            )));
        }
        self.decode.validate()
    }
}

/// Masks `[N, H, W]` with values in [0, 1] (RISE's: a `grid x grid` binary grid
/// upsampled bilinearly to `(grid + 1)` cells and cropped at a random shift).
pub fn drise_masks(
    config: &DriseConfig,
    size: [usize; 2],
    device: &lumen_core::Device,
) -> Result<Tensor<3>> {
    let (cells, shifts) = MaskCells::new(config, size)?.next(config.masks);
    rise_masks(&cells, &shifts, config.grid, size, device)
}

/// The masks' seeded low-resolution cells (`grid x grid` per mask) and shifts, on the
/// host, drawn a chunk of masks at a time: a kilobyte per mask at the default grid,
/// which for a large `masks` is too much to hold at once.
struct MaskCells {
    grid: usize,
    keep_probability: f32,
    cell_size: [usize; 2],
    cells: UniformStream,
    shifts: UniformStream,
}

impl MaskCells {
    fn new(config: &DriseConfig, size: [usize; 2]) -> Result<Self> {
        config.validate()?;
        let g = config.grid;
        Ok(Self {
            grid: g,
            keep_probability: config.keep_probability,
            cell_size: [size[0].div_ceil(g), size[1].div_ceil(g)],
            cells: UniformStream::unit(config.seed),
            shifts: UniformStream::unit(config.seed ^ 0x5EED),
        })
    }

    /// The next `count` masks' cells (`count x grid x grid`, row-major) and shifts.
    fn next(&mut self, count: usize) -> (Vec<f32>, Vec<[usize; 2]>) {
        let keep = self.keep_probability;
        let cells = self
            .cells
            .take(count * self.grid * self.grid)
            .into_iter()
            .map(|u| if u < keep { 1.0 } else { 0.0 })
            .collect();
        let [cell_h, cell_w] = self.cell_size;
        let shifts = self
            .shifts
            .take(count * 2)
            .chunks(2)
            .map(|s| {
                [
                    (s[0] * cell_h as f32) as usize,
                    (s[1] * cell_w as f32) as usize,
                ]
            })
            .collect();
        (cells, shifts)
    }
}

/// RISE masks from their low-resolution cells (`N x grid x grid`, row-major) and
/// shifts `[dy, dx]` (each below one cell): the cells upsampled bilinearly
/// (`align_corners = false`) to `grid + 1` cells of `ceil(size / grid)` pixels, then
/// cropped at the shift.
pub fn rise_masks(
    cells: &[f32],
    shifts: &[[usize; 2]],
    grid: usize,
    size: [usize; 2],
    device: &lumen_core::Device,
) -> Result<Tensor<3>> {
    let n = shifts.len();
    let [h, w] = size;
    let (cell_h, cell_w) = (h.div_ceil(grid.max(1)), w.div_ceil(grid.max(1)));
    if n == 0 || cells.len() != n * grid * grid {
        return Err(LumenError::shape(
            "RISE mask cells",
            format!("{n} x {grid} x {grid}"),
            cells.len(),
        ));
    }
    if let Some(bad) = shifts
        .iter()
        .find(|[dy, dx]| *dy >= cell_h || *dx >= cell_w)
    {
        return Err(LumenError::InvalidArgument(format!(
            "RISE shift {bad:?} is not within one cell ({cell_h}x{cell_w})"
        )));
    }
    let low = Tensor::<4>::from_data(TensorData::new(cells.to_vec(), [n, 1, grid, grid]), device);
    let up = interpolate(
        low,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([(grid + 1) * cell_h, (grid + 1) * cell_w]),
    );
    let crops: Vec<Tensor<4>> = shifts
        .iter()
        .enumerate()
        .map(|(i, &[dy, dx])| up.clone().slice([i..i + 1, 0..1, dy..dy + h, dx..dx + w]))
        .collect();
    Ok(Tensor::cat(crops, 0).reshape([n, h, w]))
}

/// D-RISE maps `[B, H, W]` for one reference box per image, with `masks` `[N, H, W]`
/// shared by all images.
pub fn drise_with_masks<M: ExplainableModel<Output = DetectorOutput>>(
    model: &M,
    input: &Tensor<4>,
    targets: &[BoxRequest],
    masks: &Tensor<3>,
    config: &DriseConfig,
) -> Result<Heatmaps> {
    let [_, _, h, w] = input.dims();
    let [n, mh, mw] = masks.dims();
    if [mh, mw] != [h, w] {
        return Err(LumenError::shape(
            "D-RISE masks",
            format!("[N,{h},{w}]"),
            format!("{:?}", masks.dims()),
        ));
    }
    drise_in_chunks(model, input, &one_box_each(targets), n, config, |rows| {
        Ok(masks.clone().narrow(0, rows.start, rows.len()))
    })
}

/// `targets` as groups of one box.
fn one_box_each(targets: &[BoxRequest]) -> Vec<Vec<BoxRequest>> {
    targets.iter().map(|t| vec![t.clone()]).collect()
}

/// D-RISE with masks generated from the config, one chunk of masks at a time: all of
/// them at once would be `masks` images (1 GB for the default 1000 at 512 x 512).
pub fn drise<M: ExplainableModel<Output = DetectorOutput>>(
    model: &M,
    input: &Tensor<4>,
    targets: &[BoxRequest],
    config: &DriseConfig,
) -> Result<Heatmaps> {
    drise_boxes(model, input, &one_box_each(targets), config)
}

/// [`drise`] for several boxes per image: `boxes[b]` are image `b`'s, and the maps
/// `[sum of boxes, H, W]` come image by image in that order. Each masked image goes
/// through the model once for all its boxes (a scene of three objects costs the
/// forwards of one), and the maps are those of [`drise`] on the image repeated per box.
pub fn drise_boxes<M: ExplainableModel<Output = DetectorOutput>>(
    model: &M,
    input: &Tensor<4>,
    boxes: &[Vec<BoxRequest>],
    config: &DriseConfig,
) -> Result<Heatmaps> {
    let [_, _, h, w] = input.dims();
    let mut stream = MaskCells::new(config, [h, w])?;
    let device = input.device();
    // Chunks come in order, so each takes the next part of the seeded streams: the
    // masks are those of `drise_masks`, drawn as they are needed.
    drise_in_chunks(model, input, boxes, config.masks, config, |rows| {
        let (cells, shifts) = stream.next(rows.len());
        rise_masks(&cells, &shifts, config.grid, [h, w], &device)
    })
}

/// D-RISE over `n` masks, made `config.batch_size` (or the sized default) at a time by
/// `masks_of(rows)` (`[rows, H, W]`, called for the chunks in order): each chunk of
/// masks serves every image before the next is made, each masked image is scored
/// against all of its `boxes`, and each box's weighted sum is accumulated, so memory
/// is one chunk of masks and one map per box.
fn drise_in_chunks<M: ExplainableModel<Output = DetectorOutput>>(
    model: &M,
    input: &Tensor<4>,
    boxes: &[Vec<BoxRequest>],
    n: usize,
    config: &DriseConfig,
    mut masks_of: impl FnMut(Range<usize>) -> Result<Tensor<3>>,
) -> Result<Heatmaps> {
    config.validate()?;
    model.check_input(input)?;
    let [batch, c, h, w] = input.dims();
    if boxes.len() != batch {
        return Err(LumenError::shape(
            "D-RISE targets",
            format!("the boxes of each image ({batch})"),
            boxes.len(),
        ));
    }
    let total: usize = boxes.iter().map(Vec::len).sum();
    if total == 0 {
        return Err(LumenError::InvalidArgument(
            "D-RISE needs at least 1 box to explain".into(),
        ));
    }
    if n == 0 {
        return Err(LumenError::InvalidArgument(
            "D-RISE needs at least 1 mask".into(),
        ));
    }
    let device = input.device();
    let mut sums = vec![Tensor::<3>::zeros([1, h, w], &device); total];
    let chunk = config
        .batch_size
        .unwrap_or_else(|| lumen_core::default_forward_rows_for(model, input));
    for rows in row_chunks(n, chunk) {
        let r = rows.len();
        let chunk = {
            let _masks = profile::stage_on(METHOD, &device);
            masks_of(rows)?
        };
        let spread = chunk.clone().reshape([r, 1, h, w]).expand([r, c, h, w]);
        let mut row = 0;
        for (b, targets) in boxes.iter().enumerate() {
            if targets.is_empty() {
                continue;
            }
            let output = {
                let _forward = profile::stage_on(FORWARD, &device);
                model.forward(input.clone().narrow(0, b, 1) * spread.clone())
            };
            // Decoding the masked detections and weighting the masks: D-RISE's own work.
            let _weights = profile::stage_on(METHOD, &device);
            for weights in mask_weights(&output, targets, &config.decode)? {
                let weights = Tensor::<3>::from_data(TensorData::new(weights, [r, 1, 1]), &device);
                sums[row] = sums[row].clone() + (chunk.clone() * weights).sum_dim(0);
                row += 1;
            }
        }
    }
    Ok(Heatmaps::new(Tensor::cat(sums, 0) / n as f32))
}

/// Per target, each masked image's best similarity to it over the image's detections
/// (decoded once for all targets).
fn mask_weights(
    output: &DetectorOutput,
    targets: &[BoxRequest],
    decode: &DecodeConfig,
) -> Result<Vec<Vec<f32>>> {
    let (boxes, scores) = dense_candidates(output)?;
    let [batch, locations, classes] = scores.dims();
    if let Some(target) = targets.iter().find(|t| t.label >= classes) {
        return Err(LumenError::ClassOutOfRange {
            class: target.label,
            num_classes: classes,
        });
    }
    let objectness: Vec<f32> = output
        .centerness
        .iter()
        .map(|c| {
            let [b, _, h, w] = c.dims();
            sigmoid(c.clone()).reshape([b, h * w])
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(|a, b| Tensor::cat(vec![a, b], 1))
        .map(to_host)
        .transpose()?
        .unwrap_or_default();
    let boxes = to_host(boxes)?;
    let scores = to_host(scores)?;
    let detections = decode_host(&boxes, &scores, [batch, locations, classes], decode, None);
    let weights_of = |target: &BoxRequest| {
        detections
            .iter()
            .enumerate()
            .map(|(m, found)| {
                found
                    .iter()
                    .map(|d| {
                        let row = &scores[(m * locations + d.location) * classes
                            ..(m * locations + d.location + 1) * classes];
                        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                        // The target's class vector is one-hot: the cosine is its entry.
                        let cosine = if norm > 0.0 {
                            row[target.label] / norm
                        } else {
                            0.0
                        };
                        box_iou(&target.bbox, &d.bbox)
                            * objectness[m * locations + d.location]
                            * cosine
                    })
                    .fold(0.0f32, f32::max)
            })
            .collect()
    };
    Ok(targets.iter().map(weights_of).collect())
}
