//! Semantic segmentation: logits `[B, classes, h, w]` (at the model's output stride),
//! per-pixel predictions, targets that sum a class's logits over a region, and
//! uncertainty maps.
//!
//! The target is pytorch-grad-cam's `SemanticSegmentationTarget`: the class's logit
//! summed over a mask at the output resolution. The mask is the class's predicted
//! region by default, or the whole image, a user region (downsampled to the output grid
//! as the fraction of each cell it covers), or one pixel.

use lumen_core::burn::tensor::activation::softmax;
use lumen_core::{
    ClassRegionScore, LumenError, Region, Result, Target, Tensor, named_choices, to_host,
};
use serde::Serialize;

use crate::task::Task;

/// Semantic segmentation with `num_classes` outputs per pixel.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Number of classes, background included.
    pub num_classes: usize,
    /// Class names, index-aligned with the logits.
    pub class_names: Option<Vec<String>>,
    /// The background class, never the default target (AutoTimm: 0).
    pub background: Option<usize>,
    /// The input size `[height, width]` requests' pixels and regions refer to.
    pub input_size: [usize; 2],
}

impl Segmentation {
    /// A segmentation task with class 0 as background.
    pub fn new(
        num_classes: usize,
        class_names: Option<Vec<String>>,
        input_size: [usize; 2],
    ) -> Self {
        Self {
            num_classes,
            class_names,
            background: Some(0),
            input_size,
        }
    }

    /// `name (index)` when the class has a name, else `class index`.
    pub fn label(&self, class: usize) -> String {
        match self.class_names.as_ref().and_then(|n| n.get(class)) {
            Some(name) => format!("{name} ({class})"),
            None => format!("class {class}"),
        }
    }
}

/// One class's share of a segmentation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassShare {
    /// Class index.
    pub class: usize,
    /// Its name, when known.
    pub name: Option<String>,
    /// Fraction of output pixels predicted as this class.
    pub fraction: f32,
    /// Mean softmax probability over those pixels.
    pub confidence: f32,
}

/// One image's segmentation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentationPrediction {
    /// The output grid `[h, w]` (the input size over the model's stride).
    pub grid: [usize; 2],
    /// Predicted class per output pixel, row-major `[h*w]`: what a predicted-region
    /// target sums over.
    #[serde(skip)]
    pub classes: Vec<usize>,
    /// Predicted class per input pixel, row-major `[H*W]` at the task's input size:
    /// the logits resized bilinearly (`align_corners = false`) before the arg-max, as
    /// torchvision's and AutoTimm's segmentors upsample them. What figures draw and mIoU
    /// scores; equal to `classes` when the model predicts at the input size.
    #[serde(skip)]
    pub pixel_classes: Vec<usize>,
    /// The predicted classes, most frequent first.
    pub shares: Vec<ClassShare>,
    /// The most frequent non-background class (the background when nothing else is
    /// predicted): what is explained by default, as in AutoTimm.
    pub dominant: usize,
}

impl SegmentationPrediction {
    /// The predicted mask of `class` on the output grid.
    pub fn mask_of(&self, class: usize) -> Vec<f32> {
        self.classes
            .iter()
            .map(|&c| if c == class { 1.0 } else { 0.0 })
            .collect()
    }
}

/// Which pixels of a class's logits a segmentation target sums.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentRegion {
    /// Where the model predicts the class (pytorch-grad-cam's tutorial mask).
    Predicted,
    /// Every pixel.
    Whole,
    /// One input pixel `(x, y)`.
    Pixel { x: usize, y: usize },
    /// A user region on the input (box or mask), by its bounding box in JSON.
    Region {
        /// Bounding box `[x0, y0, x1, y1]`.
        bbox: [usize; 4],
        /// The region itself.
        #[serde(skip)]
        region: Box<Region>,
    },
}

/// What to explain in one segmented image: a class over a region.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentationRequest {
    /// The class whose logits are summed.
    pub class: usize,
    /// Over which pixels.
    pub region: SegmentRegion,
    /// The weights on the output grid once resolved against the prediction
    /// ([`Task::resolve`]); `None` before.
    #[serde(skip)]
    pub mask: Option<Vec<f32>>,
    /// Output pixels the mask covers (sum of its weights), once resolved.
    pub pixels: Option<f32>,
}

impl SegmentationRequest {
    /// A class over its predicted region.
    pub fn predicted(class: usize) -> Self {
        Self::new(class, SegmentRegion::Predicted)
    }

    /// A class over a region.
    pub fn new(class: usize, region: SegmentRegion) -> Self {
        Self {
            class,
            region,
            mask: None,
            pixels: None,
        }
    }
}

/// A region at input size as weights on the output grid: the fraction of each cell's
/// input pixels inside the region (area downsampling).
fn region_to_grid(region: &Region, grid: [usize; 2]) -> Vec<f32> {
    let [gh, gw] = grid;
    let mut sums = vec![0f32; gh * gw];
    let mut counts = vec![0f32; gh * gw];
    for y in 0..region.height {
        let gy = y * gh / region.height;
        for x in 0..region.width {
            let gx = x * gw / region.width;
            counts[gy * gw + gx] += 1.0;
            if region.mask[y * region.width + x] {
                sums[gy * gw + gx] += 1.0;
            }
        }
    }
    sums.iter()
        .zip(&counts)
        .map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })
        .collect()
}

/// The most bytes of resized logits [`Segmentation::predict`] makes at once.
const RESIZED_LOGITS_BYTES: usize = 64 << 20;

/// The class of every pixel at `[h, w]`: logits resized bilinearly (`align_corners =
/// false`) from the output grid, then arg-max; one row-major map per image.
pub fn class_maps_of(logits: Tensor<4>, [h, w]: [usize; 2]) -> Result<Vec<Vec<usize>>> {
    use lumen_core::burn::tensor::module::interpolate;
    use lumen_core::burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    let [b, _, _, _] = logits.dims();
    let logits = interpolate(
        logits,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([h, w]),
    );
    let classes = logits
        .argmax(1)
        .reshape([b * h * w])
        .try_into_vec_as::<i64>()
        .map_err(LumenError::device)?;
    Ok(classes
        .chunks(h * w)
        .map(|c| c.iter().map(|&v| v as usize).collect())
        .collect())
}

/// [`class_maps_of`] a group of images at a time, each group's resized logits at most
/// `max_bytes` (one image at 512 px and 150 classes is 157 MB; a whole chunk of them
/// would be gigabytes), each group read back once.
fn resized_classes(
    logits: &Tensor<4>,
    size: [usize; 2],
    max_bytes: usize,
) -> Result<Vec<Vec<usize>>> {
    let [batch, classes, _, _] = logits.dims();
    let per_image = classes * size[0] * size[1] * std::mem::size_of::<f32>();
    let group = (max_bytes / per_image.max(1)).clamp(1, batch.max(1));
    let mut maps = Vec::with_capacity(batch);
    for start in (0..batch).step_by(group) {
        let images = logits
            .clone()
            .detach()
            .narrow(0, start, group.min(batch - start));
        maps.extend(class_maps_of(images, size)?);
    }
    Ok(maps)
}

impl Task for Segmentation {
    type Output = Tensor<4>;
    type Prediction = SegmentationPrediction;
    type Request = SegmentationRequest;

    fn name(&self) -> &'static str {
        "segmentation"
    }

    fn predict(&self, logits: &Tensor<4>) -> Result<Vec<SegmentationPrediction>> {
        let [batch, classes, h, w] = logits.dims();
        if classes != self.num_classes {
            return Err(LumenError::shape(
                "segmentor output",
                format!("[B,{},h,w]", self.num_classes),
                format!("{:?}", logits.dims()),
            ));
        }
        let probabilities = to_host(softmax(logits.clone(), 1))?;
        let pixel_classes: Vec<Option<Vec<usize>>> = if [h, w] == self.input_size {
            vec![None; batch]
        } else {
            resized_classes(logits, self.input_size, RESIZED_LOGITS_BYTES)?
                .into_iter()
                .map(Some)
                .collect()
        };
        let plane = h * w;
        Ok((0..batch)
            .zip(pixel_classes)
            .map(|(b, pixel_classes)| {
                let image = &probabilities[b * classes * plane..(b + 1) * classes * plane];
                let mut predicted = vec![0usize; plane];
                let mut best = vec![f32::NEG_INFINITY; plane];
                for c in 0..classes {
                    for (p, &v) in image[c * plane..(c + 1) * plane].iter().enumerate() {
                        if v > best[p] {
                            best[p] = v;
                            predicted[p] = c;
                        }
                    }
                }
                let mut counts = vec![0usize; classes];
                let mut confidence = vec![0f32; classes];
                for (p, &c) in predicted.iter().enumerate() {
                    counts[c] += 1;
                    confidence[c] += best[p];
                }
                let mut shares: Vec<ClassShare> = (0..classes)
                    .filter(|&c| counts[c] > 0)
                    .map(|c| ClassShare {
                        class: c,
                        name: self.class_names.as_ref().and_then(|n| n.get(c).cloned()),
                        fraction: counts[c] as f32 / plane as f32,
                        confidence: confidence[c] / counts[c] as f32,
                    })
                    .collect();
                // Most frequent first; ties to the lower index.
                shares.sort_by(|a, b| {
                    b.fraction
                        .total_cmp(&a.fraction)
                        .then(a.class.cmp(&b.class))
                });
                let dominant = shares
                    .iter()
                    .map(|s| s.class)
                    .find(|&c| Some(c) != self.background)
                    .unwrap_or_else(|| self.background.unwrap_or(0));
                SegmentationPrediction {
                    grid: [h, w],
                    pixel_classes: pixel_classes.unwrap_or_else(|| predicted.clone()),
                    classes: predicted,
                    shares,
                    dominant,
                }
            })
            .collect())
    }

    /// The per-pixel classes (eight bytes a pixel, twice): the shares stay.
    fn release_maps(&self, prediction: &mut SegmentationPrediction) {
        prediction.classes = Vec::new();
        prediction.pixel_classes = Vec::new();
    }

    fn default_request(&self, prediction: &SegmentationPrediction) -> SegmentationRequest {
        SegmentationRequest::predicted(prediction.dominant)
    }

    fn check_request(&self, request: &SegmentationRequest) -> Result<()> {
        if request.class >= self.num_classes {
            return Err(LumenError::ClassOutOfRange {
                class: request.class,
                num_classes: self.num_classes,
            });
        }
        let [height, width] = self.input_size;
        match &request.region {
            SegmentRegion::Pixel { x, y } if *x >= width || *y >= height => {
                Err(LumenError::InvalidArgument(format!(
                    "pixel ({x}, {y}) is outside the {width}x{height} input"
                )))
            }
            SegmentRegion::Region { region, .. }
                if [region.height, region.width] != self.input_size =>
            {
                Err(LumenError::shape(
                    "segmentation target region",
                    format!("{height}x{width} (the model input)"),
                    format!("{}x{}", region.height, region.width),
                ))
            }
            SegmentRegion::Region { region, .. } if !region.mask.iter().any(|&m| m) => Err(
                LumenError::InvalidArgument("the target region is empty".into()),
            ),
            _ => Ok(()),
        }
    }

    fn resolve(
        &self,
        mut request: SegmentationRequest,
        prediction: &SegmentationPrediction,
    ) -> Result<SegmentationRequest> {
        let [gh, gw] = prediction.grid;
        let [height, width] = self.input_size;
        let mask = match &request.region {
            SegmentRegion::Predicted => prediction.mask_of(request.class),
            SegmentRegion::Whole => vec![1.0; gh * gw],
            SegmentRegion::Pixel { x, y } => {
                let mut mask = vec![0.0; gh * gw];
                mask[(y * gh / height) * gw + x * gw / width] = 1.0;
                mask
            }
            SegmentRegion::Region { region, .. } => region_to_grid(region, prediction.grid),
        };
        request.pixels = Some(mask.iter().sum());
        request.mask = Some(mask);
        Ok(request)
    }

    fn target(&self, requests: &[SegmentationRequest]) -> Box<dyn Target<Tensor<4>>> {
        Box::new(ClassRegionScore {
            classes: requests.iter().map(|r| r.class).collect(),
            masks: requests.iter().map(|r| r.mask.clone()).collect(),
        })
    }

    fn describe_prediction(&self, prediction: &SegmentationPrediction) -> String {
        let parts: Vec<String> = prediction
            .shares
            .iter()
            .take(3)
            .map(|s| format!("{} {:.0}%", self.label(s.class), 100.0 * s.fraction))
            .collect();
        format!("segmented {}", parts.join(", "))
    }

    fn describe_request(&self, request: &SegmentationRequest) -> String {
        let over = match &request.region {
            SegmentRegion::Predicted => "its predicted region".to_string(),
            SegmentRegion::Whole => "the whole image".to_string(),
            SegmentRegion::Pixel { x, y } => format!("pixel ({x}, {y})"),
            SegmentRegion::Region { bbox, .. } => format!("region {bbox:?}"),
        };
        format!("{} over {over}", self.label(request.class))
    }

    fn ranked_measure(&self) -> &'static str {
        "share of pixels"
    }

    fn ranked(&self, prediction: &SegmentationPrediction) -> Vec<(String, f32)> {
        prediction
            .shares
            .iter()
            .map(|s| (self.label(s.class), s.fraction))
            .collect()
    }

    /// The classes' mean confidences: a pixel whose logits hold NaN has no most probable
    /// class, so it is read as class 0 with a confidence of minus infinity, while the
    /// shares of pixels (what [`Task::ranked`] scores) stay finite.
    fn is_finite(&self, prediction: &SegmentationPrediction) -> bool {
        prediction.shares.iter().all(|s| s.confidence.is_finite())
    }
}

/// A per-pixel uncertainty of a segmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uncertainty {
    /// Entropy of the softmax, `-sum p ln p` (in nats; `normalized` divides by ln C).
    Entropy,
    /// `1 - (p1 - p2)`: one minus the gap between the two most probable classes.
    Margin,
}

named_choices!(Uncertainty, "uncertainty kind", {
    Entropy => "entropy",
    Margin => "margin",
});

/// How an uncertainty map is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UncertaintyScale {
    /// Entropy in nats, margin as is.
    Raw,
    /// Entropy divided by ln C: [0, 1] whatever the number of classes (margin is
    /// already in [0, 1]). The default: comparable across images and models.
    #[default]
    Normalized,
    /// Per-image min-max to [0, 1], as AutoTimm draws them: every image then looks
    /// equally uncertain somewhere, however confident the model is, so it is an option
    /// for contrast, not the default.
    MinMax,
}

named_choices!(UncertaintyScale, "uncertainty scale", {
    Raw => "raw",
    Normalized => "normalized",
    MinMax => "minmax",
});

impl UncertaintyScale {
    /// The range of the map's values for a model with `classes` classes.
    pub fn range(self, kind: Uncertainty, classes: usize) -> [f32; 2] {
        match (self, kind) {
            (Self::Raw, Uncertainty::Entropy) => [0.0, (classes as f32).ln()],
            _ => [0.0, 1.0],
        }
    }
}

/// Uncertainty maps `[B, h, w]` of segmentation logits `[B, C, h, w]`, on the output
/// grid, scaled as `scale` says.
pub fn uncertainty_map(
    logits: &Tensor<4>,
    kind: Uncertainty,
    scale: UncertaintyScale,
) -> Result<Tensor<3>> {
    let normalized = scale != UncertaintyScale::Raw;
    let [b, c, h, w] = logits.dims();
    if c < 2 {
        return Err(LumenError::InvalidArgument(format!(
            "uncertainty needs at least 2 classes (the logits have {c})"
        )));
    }
    let p = softmax(logits.clone(), 1);
    let map = match kind {
        Uncertainty::Entropy => {
            let entropy = (p.clone() * p.clamp_min(1e-12).log()).sum_dim(1).neg();
            if normalized {
                entropy / (c as f32).ln()
            } else {
                entropy
            }
        }
        Uncertainty::Margin => {
            let top = p.topk(2, 1);
            let p1 = top.clone().narrow(1, 0, 1);
            let p2 = top.narrow(1, 1, 1);
            (p1 - p2).neg() + 1.0
        }
    };
    let map = map.reshape([b, h * w]);
    let map = if scale == UncertaintyScale::MinMax {
        let shifted = map.clone() - map.min_dim(1);
        shifted.clone() / (shifted.max_dim(1) + 1e-7)
    } else {
        map
    };
    Ok(map.reshape([b, h, w]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_core::Device;
    use lumen_core::burn::tensor::TensorData;

    fn logits(device: &Device) -> Tensor<4> {
        // 1 image, 3 classes, 1x4 grid: pixels predict 0, 1, 1, 2.
        Tensor::<4>::from_data(
            TensorData::new(
                vec![
                    5.0, 0.0, 0.0, 0.0, //
                    0.0, 4.0, 3.0, 0.0, //
                    0.0, 0.0, 0.0, 2.0,
                ],
                [1, 3, 1, 4],
            ),
            device,
        )
    }

    #[test]
    fn pixel_classes_resized_in_groups_equal_one_resize() {
        let device = Device::flex();
        // 5 images, 3 classes on a 3x3 grid, resized to 8x8.
        let values: Vec<f32> = (0..5 * 3 * 9).map(|i| ((i * 37) % 11) as f32).collect();
        let logits = Tensor::<4>::from_data(TensorData::new(values, [5, 3, 3, 3]), &device);
        let whole = class_maps_of(logits.clone(), [8, 8]).unwrap();
        assert_eq!(whole.len(), 5);
        // 768 bytes per image: groups of 1, 2 (the last one short) and all 5.
        for max_bytes in [1, 2 * 768, 1 << 20] {
            assert_eq!(resized_classes(&logits, [8, 8], max_bytes).unwrap(), whole);
        }
        // The prediction carries them, one map per image at the task's input size.
        let task = Segmentation::new(3, None, [8, 8]);
        let predictions = task.predict(&logits).unwrap();
        let carried: Vec<Vec<usize>> = predictions.into_iter().map(|p| p.pixel_classes).collect();
        assert_eq!(carried, whole);
        // More than one class among the pixels, or the comparison proves little.
        assert!(whole.iter().flatten().any(|&c| c != whole[0][0]));
    }

    #[test]
    fn a_pixel_with_nan_logits_makes_the_prediction_not_finite() {
        let device = Device::default();
        let task = Segmentation::new(3, None, [4, 16]);
        assert!(task.is_finite(&task.predict(&logits(&device)).unwrap()[0]));
        let mut values = to_host(logits(&device)).unwrap();
        values[6] = f32::NAN; // class 1 at the third pixel
        let broken = Tensor::<4>::from_data(TensorData::new(values, [1, 3, 1, 4]), &device);
        let p = &task.predict(&broken).unwrap()[0];
        // The shares alone (Task::ranked) look fine: every pixel has a class.
        assert!(p.shares.iter().all(|s| s.fraction.is_finite()));
        assert!(!task.is_finite(p));
    }

    #[test]
    fn default_is_the_most_frequent_foreground_class_over_its_region() {
        let device = Device::default();
        let task = Segmentation::new(3, None, [4, 16]);
        let p = &task.predict(&logits(&device)).unwrap()[0];
        assert_eq!(p.classes, [0, 1, 1, 2]);
        assert_eq!(p.dominant, 1);
        assert_eq!(p.shares[0].class, 1);
        let request = task.resolve(task.default_request(p), p).unwrap();
        assert_eq!(request.mask.as_deref(), Some(&[0.0, 1.0, 1.0, 0.0][..]));
        let score = to_host(task.target(&[request]).score(&logits(&device)).unwrap()).unwrap();
        assert_eq!(score, [7.0]);
        // A pixel on the input maps to its output cell; the whole image sums all.
        let pixel = SegmentationRequest::new(2, SegmentRegion::Pixel { x: 15, y: 0 });
        task.check_request(&pixel).unwrap();
        let pixel = task.resolve(pixel, p).unwrap();
        assert_eq!(pixel.mask.as_deref(), Some(&[0.0, 0.0, 0.0, 1.0][..]));
        let whole = task
            .resolve(SegmentationRequest::new(1, SegmentRegion::Whole), p)
            .unwrap();
        assert_eq!(
            to_host(task.target(&[whole]).score(&logits(&device)).unwrap()).unwrap(),
            [7.0]
        );
    }

    #[test]
    fn regions_become_covered_fractions_and_bad_requests_are_errors() {
        let region = Region::from_box(4, 16, [0, 0, 6, 4]).unwrap();
        // Cells are 4 pixels wide: the box covers cell 0 and half of cell 1.
        assert_eq!(region_to_grid(&region, [1, 4]), [1.0, 0.5, 0.0, 0.0]);
        let task = Segmentation::new(3, None, [4, 16]);
        assert!(
            task.check_request(&SegmentationRequest::predicted(3))
                .is_err()
        );
        let outside = SegmentationRequest::new(0, SegmentRegion::Pixel { x: 16, y: 0 });
        assert!(task.check_request(&outside).is_err());
        let small = Region::from_box(2, 2, [0, 0, 1, 1]).unwrap();
        let wrong = SegmentationRequest::new(
            0,
            SegmentRegion::Region {
                bbox: small.bbox,
                region: Box::new(small),
            },
        );
        assert!(task.check_request(&wrong).is_err());
    }

    #[test]
    fn uncertainty_maps_follow_their_definitions() {
        let device = Device::default();
        let l = logits(&device);
        let p: Vec<f32> = to_host(softmax(l.clone(), 1)).unwrap();
        let col = |i: usize| [p[i], p[4 + i], p[8 + i]];
        let entropy =
            to_host(uncertainty_map(&l, Uncertainty::Entropy, UncertaintyScale::Raw).unwrap())
                .unwrap();
        let normalized = to_host(
            uncertainty_map(&l, Uncertainty::Entropy, UncertaintyScale::Normalized).unwrap(),
        )
        .unwrap();
        let margin =
            to_host(uncertainty_map(&l, Uncertainty::Margin, UncertaintyScale::Raw).unwrap())
                .unwrap();
        for i in 0..4 {
            let q = col(i);
            let h: f32 = -q.iter().map(|v| v * v.ln()).sum::<f32>();
            assert!((entropy[i] - h).abs() < 1e-5);
            assert!((normalized[i] - h / 3f32.ln()).abs() < 1e-5);
            let mut s = q;
            s.sort_by(|a, b| b.total_cmp(a));
            assert!((margin[i] - (1.0 - (s[0] - s[1]))).abs() < 1e-5);
        }
        // Pixels lead by 5, 4, 3 and 2: uncertainty rises along the row.
        assert!(margin.windows(2).all(|w| w[0] < w[1]), "{margin:?}");
        assert!(normalized.windows(2).all(|w| w[0] < w[1]), "{normalized:?}");
        let stretched =
            to_host(uncertainty_map(&l, Uncertainty::Margin, UncertaintyScale::MinMax).unwrap())
                .unwrap();
        assert!(
            stretched[0].abs() < 1e-6 && (stretched[3] - 1.0).abs() < 1e-5,
            "{stretched:?}"
        );
    }
}
