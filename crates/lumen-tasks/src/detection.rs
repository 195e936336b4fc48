//! Object detection on dense (FCOS) outputs: decoding into boxes as AutoTimm's
//! `ObjectDetector.predict` does it, class-aware NMS, and the box-score target of
//! pytorch-grad-cam (`FasterRCNNBoxScoreTarget`) that explains one detection.
//!
//! Decoding (AutoTimm 0.7.37): score = sigmoid(class) x sigmoid(centerness) (no square
//! root), the best class per location, kept when strictly above the score threshold;
//! boxes from the location's point `((j + 0.5) s, (i + 0.5) s)` and the ltrb distances
//! in pixels, clamped to the image; class-aware NMS at IoU > the NMS threshold, then
//! the first `max_detections` by score. Boxes are `[x1, y1, x2, y2]` in input pixels.

use lumen_core::burn::tensor::TensorData;
use lumen_core::burn::tensor::activation::sigmoid;
use lumen_core::{DetectorOutput, LumenError, Result, Target, Tensor, named_choices, to_host};
use serde::{Deserialize, Serialize};

use crate::task::{Outline, Task};

/// How raw outputs become detections (AutoTimm's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeConfig {
    /// Scores strictly above it are kept (0.05).
    pub score_threshold: f32,
    /// NMS drops a box whose IoU with a kept box of its class is above it (0.5).
    pub nms_threshold: f32,
    /// At most this many detections per image (100).
    pub max_detections: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.05,
            nms_threshold: 0.5,
            max_detections: 100,
        }
    }
}

impl DecodeConfig {
    /// Check the numbers before any work.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(LumenError::InvalidArgument(format!(
                    "{name} must be in [0, 1], got {v}"
                )))
            }
        };
        unit("the score threshold", self.score_threshold)?;
        unit("the NMS threshold", self.nms_threshold)?;
        if self.max_detections == 0 {
            return Err(LumenError::InvalidArgument(
                "at least 1 detection per image must be kept".into(),
            ));
        }
        Ok(())
    }
}

/// One detected object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in input pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Class index.
    pub label: usize,
    /// Its name, when known.
    pub name: Option<String>,
    /// sigmoid(class) x sigmoid(centerness).
    pub score: f32,
    /// The location that produced it, flattened level by level (row-major within a
    /// level): where targets read its differentiable box and score.
    #[serde(skip)]
    pub location: usize,
}

/// Every location's box `[B, N, 4]` and class scores `[B, N, C]`, levels concatenated
/// in order, row-major within a level; differentiable in the outputs.
pub fn dense_candidates(output: &DetectorOutput) -> Result<(Tensor<3>, Tensor<3>)> {
    let levels = output.classes.len();
    if levels == 0
        || output.boxes.len() != levels
        || output.centerness.len() != levels
        || output.strides.len() != levels
    {
        return Err(LumenError::InvalidArgument(format!(
            "a detector output needs the same number of class, box, centerness and stride levels (got {}, {}, {}, {})",
            levels,
            output.boxes.len(),
            output.centerness.len(),
            output.strides.len()
        )));
    }
    let [height, width] = output.image_size;
    let mut boxes = Vec::with_capacity(levels);
    let mut scores = Vec::with_capacity(levels);
    for level in 0..levels {
        let [b, c, h, w] = output.classes[level].dims();
        let n = h * w;
        let s = output.strides[level] as f32;
        let class = sigmoid(output.classes[level].clone())
            .permute([0, 2, 3, 1])
            .reshape([b, n, c]);
        let center = sigmoid(output.centerness[level].clone())
            .permute([0, 2, 3, 1])
            .reshape([b, n, 1]);
        scores.push(class * center);
        let device = output.classes[level].device();
        let points = |f: &dyn Fn(usize, usize) -> f32| {
            let values: Vec<f32> = (0..n).map(|p| f(p / w, p % w)).collect();
            Tensor::<3>::from_data(TensorData::new(values, [1, n, 1]), &device)
        };
        let px = points(&|_, j| (j as f32 + 0.5) * s);
        let py = points(&|i, _| (i as f32 + 0.5) * s);
        let ltrb = output.boxes[level]
            .clone()
            .permute([0, 2, 3, 1])
            .reshape([b, n, 4]);
        let side = |k: usize| ltrb.clone().narrow(2, k, 1);
        let (wf, hf) = (width as f32, height as f32);
        let x1 = (px.clone() - side(0)).clamp(0.0, wf);
        let y1 = (py.clone() - side(1)).clamp(0.0, hf);
        let x2 = (px + side(2)).clamp(0.0, wf);
        let y2 = (py + side(3)).clamp(0.0, hf);
        boxes.push(Tensor::cat(vec![x1, y1, x2, y2], 2));
    }
    Ok((Tensor::cat(boxes, 1), Tensor::cat(scores, 1)))
}

/// Every location's class logits `[B, N, C]` and centerness logit `[B, N]`, in the
/// order of [`dense_candidates`].
pub fn dense_logits(output: &DetectorOutput) -> (Tensor<3>, Tensor<2>) {
    let classes = output
        .classes
        .iter()
        .map(|c| {
            let [b, k, h, w] = c.dims();
            c.clone().permute([0, 2, 3, 1]).reshape([b, h * w, k])
        })
        .collect();
    let centerness = output
        .centerness
        .iter()
        .map(|c| {
            let [b, _, h, w] = c.dims();
            c.clone().reshape([b, h * w])
        })
        .collect();
    (Tensor::cat(classes, 1), Tensor::cat(centerness, 1))
}

/// What a detection target scores of the detection matched to a reference box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DetectionScoreKind {
    /// IoU + score (pytorch-grad-cam's `FasterRCNNBoxScoreTarget`).
    #[default]
    BoxScore,
    /// The class logit at the detection's location (what made it that class).
    ClassLogit,
    /// The centerness logit at the detection's location (what made it centred).
    Centerness,
}

named_choices!(DetectionScoreKind, "detection target", {
    BoxScore => "box-score",
    ClassLogit => "class-logit",
    Centerness => "centerness",
});

pub use lumen_core::region::box_iou;

/// Decode the candidates of a batch on the host: threshold, class-aware NMS, cap.
pub(crate) fn decode_host(
    boxes: &[f32],
    scores: &[f32],
    [batch, n, classes]: [usize; 3],
    config: &DecodeConfig,
    names: Option<&[String]>,
) -> Vec<Vec<Detection>> {
    (0..batch)
        .map(|b| {
            let mut candidates: Vec<Detection> = (0..n)
                .filter_map(|p| {
                    let row = &scores[(b * n + p) * classes..(b * n + p + 1) * classes];
                    // The first maximum, as torch's `max(dim)`; a NaN is the maximum, as
                    // in torch.
                    let (label, score) = match row.iter().position(|v| v.is_nan()) {
                        Some(c) => (c, f32::NAN),
                        None => row.iter().copied().enumerate().fold(
                            (0, f32::NEG_INFINITY),
                            |best, (c, v)| {
                                if v > best.1 { (c, v) } else { best }
                            },
                        ),
                    };
                    let at = (b * n + p) * 4;
                    let bbox = [boxes[at], boxes[at + 1], boxes[at + 2], boxes[at + 3]];
                    // A NaN score or a non-finite box means the model's output broke
                    // (NaN weights, an overflow): kept, so that `ObjectDetection::is_finite`
                    // reports it, rather than dropped under the threshold as "nothing
                    // detected".
                    let broken = score.is_nan()
                        || (score > config.score_threshold && bbox.iter().any(|v| !v.is_finite()));
                    (broken || score > config.score_threshold).then(|| Detection {
                        bbox,
                        label,
                        name: names.and_then(|n| n.get(label).cloned()),
                        score,
                        location: p,
                    })
                })
                .collect();
            // Highest score first; ties keep location order.
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            let mut kept: Vec<Detection> = Vec::new();
            for candidate in candidates {
                let suppressed = kept.iter().any(|k| {
                    k.label == candidate.label
                        && box_iou(&k.bbox, &candidate.bbox) > config.nms_threshold
                });
                if !suppressed {
                    kept.push(candidate);
                    if kept.len() == config.max_detections {
                        break;
                    }
                }
            }
            kept
        })
        .collect()
}

/// The detections of every image of a batch, best first.
pub fn decode_detections(
    output: &DetectorOutput,
    config: &DecodeConfig,
    names: Option<&[String]>,
) -> Result<Vec<Vec<Detection>>> {
    config.validate()?;
    let (boxes, scores) = dense_candidates(output)?;
    let dims = scores.dims();
    Ok(decode_host(
        &to_host(boxes)?,
        &to_host(scores)?,
        dims,
        config,
        names,
    ))
}

/// Min-max `(x - min) / (max + 1e-7)` over `values`, in place (pytorch-grad-cam's
/// `scale_cam_image` on one map).
fn scale_in_place(values: &mut [f32]) {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    values.iter_mut().for_each(|v| *v -= min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    values.iter_mut().for_each(|v| *v /= max + 1e-7);
}

/// pytorch-grad-cam's `renormalize_cam_in_bounding_boxes` (its detection tutorials):
/// the map min-max scaled inside every box, zero outside, then min-max scaled as a
/// whole. Boxes are in the map's pixels and truncated to integers as the tutorial's
/// `astype(np.int32)` does; empty boxes are skipped. The tutorial passes a 2-D map to
/// `scale_cam_image`, which scales each *row* of a box on its own (the function
/// iterates over its first axis); Lumen scales each box as a whole, which is what the
/// tutorial describes ("normalize the CAM inside every bounding box").
pub fn renormalize_in_boxes(
    map: &[f32],
    [height, width]: [usize; 2],
    boxes: &[[f32; 4]],
) -> Vec<f32> {
    let mut out = vec![0f32; height * width];
    for b in boxes {
        let clip = |v: f32, limit: usize| (v.max(0.0) as usize).min(limit);
        let (x1, y1, x2, y2) = (
            clip(b[0], width),
            clip(b[1], height),
            clip(b[2], width),
            clip(b[3], height),
        );
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        let mut inside: Vec<f32> = (y1..y2)
            .flat_map(|y| map[y * width + x1..y * width + x2].iter().copied())
            .collect();
        scale_in_place(&mut inside);
        for (row, y) in (y1..y2).enumerate() {
            out[y * width + x1..y * width + x2]
                .copy_from_slice(&inside[row * (x2 - x1)..(row + 1) * (x2 - x1)]);
        }
    }
    scale_in_place(&mut out);
    out
}

/// Object detection on dense outputs.
#[derive(Clone, Debug)]
pub struct ObjectDetection {
    /// Number of object classes.
    pub num_classes: usize,
    /// Class names, when known.
    pub class_names: Option<Vec<String>>,
    /// How outputs become detections.
    pub decode: DecodeConfig,
    /// The box-score target's IoU threshold (pytorch-grad-cam: 0.5).
    pub match_threshold: f32,
    /// What the target scores of the matched detection.
    pub target_kind: DetectionScoreKind,
}

impl ObjectDetection {
    /// AutoTimm's decoding, pytorch-grad-cam's matching threshold.
    pub fn new(num_classes: usize, class_names: Option<Vec<String>>) -> Self {
        Self {
            num_classes,
            class_names,
            decode: DecodeConfig::default(),
            match_threshold: 0.5,
            target_kind: DetectionScoreKind::BoxScore,
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

/// One image's detections, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionPrediction {
    /// The detections after NMS.
    pub detections: Vec<Detection>,
}

/// A box to explain: the detection of this label that overlaps it best is scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxRequest {
    /// `[x1, y1, x2, y2]` in input pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Class index.
    pub label: usize,
}

impl Task for ObjectDetection {
    type Output = DetectorOutput;
    type Prediction = DetectionPrediction;
    type Request = Vec<BoxRequest>;

    fn name(&self) -> &'static str {
        "detection"
    }

    fn predict(&self, output: &DetectorOutput) -> Result<Vec<DetectionPrediction>> {
        let names = self.class_names.as_deref();
        Ok(decode_detections(output, &self.decode, names)?
            .into_iter()
            .map(|detections| DetectionPrediction { detections })
            .collect())
    }

    /// The best detection; none when nothing is detected (the target scores 0).
    fn default_request(&self, prediction: &DetectionPrediction) -> Vec<BoxRequest> {
        prediction
            .detections
            .iter()
            .take(1)
            .map(|d| BoxRequest {
                bbox: d.bbox,
                label: d.label,
            })
            .collect()
    }

    fn check_request(&self, request: &Vec<BoxRequest>) -> Result<()> {
        for r in request {
            if r.label >= self.num_classes {
                return Err(LumenError::ClassOutOfRange {
                    class: r.label,
                    num_classes: self.num_classes,
                });
            }
            let [x1, y1, x2, y2] = r.bbox;
            // Empty boxes are allowed: a detection's own box can be one, and it then
            // matches nothing (its IoU is 0), as in the reference.
            if !r.bbox.iter().all(|v| v.is_finite()) || x2 < x1 || y2 < y1 {
                return Err(LumenError::InvalidArgument(format!(
                    "box {:?} is not [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2",
                    r.bbox
                )));
            }
        }
        Ok(())
    }

    fn target(&self, requests: &[Vec<BoxRequest>]) -> Box<dyn Target<DetectorOutput>> {
        Box::new(BoxScore {
            boxes: requests.to_vec(),
            match_threshold: self.match_threshold,
            decode: self.decode,
            kind: self.target_kind,
        })
    }

    fn describe_prediction(&self, prediction: &DetectionPrediction) -> String {
        let parts: Vec<String> = prediction
            .detections
            .iter()
            .take(3)
            .map(|d| format!("{} {:.2}", self.label(d.label), d.score))
            .collect();
        format!(
            "{} detections{}{}",
            prediction.detections.len(),
            if parts.is_empty() { "" } else { ": " },
            parts.join(", ")
        )
    }

    /// Each explained box, captioned with its label and the score of the detection it
    /// names (the same label and box), when one does.
    fn outlines(
        &self,
        request: &Vec<BoxRequest>,
        prediction: &DetectionPrediction,
    ) -> Vec<Outline> {
        request
            .iter()
            .map(|wanted| {
                let name = match self.class_names.as_ref().and_then(|n| n.get(wanted.label)) {
                    Some(name) => name.clone(),
                    None => format!("class {}", wanted.label),
                };
                let score = prediction
                    .detections
                    .iter()
                    .find(|d| d.label == wanted.label && d.bbox == wanted.bbox)
                    .map(|d| format!(" {:.2}", d.score));
                Outline {
                    bbox: wanted.bbox,
                    class: wanted.label,
                    caption: format!("{name}{}", score.unwrap_or_default()),
                }
            })
            .collect()
    }

    fn describe_request(&self, request: &Vec<BoxRequest>) -> String {
        match request.as_slice() {
            [] => "nothing (no detection)".into(),
            [one] => format!(
                "{} at [{:.0}, {:.0}, {:.0}, {:.0}]",
                self.label(one.label),
                one.bbox[0],
                one.bbox[1],
                one.bbox[2],
                one.bbox[3]
            ),
            many => format!("{} boxes", many.len()),
        }
    }

    fn ranked_measure(&self) -> &'static str {
        "score"
    }

    fn ranked(&self, prediction: &DetectionPrediction) -> Vec<(String, f32)> {
        prediction
            .detections
            .iter()
            .map(|d| {
                let [x1, y1, x2, y2] = d.bbox;
                let label = self.label(d.label);
                (
                    format!("{label} at [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]"),
                    d.score,
                )
            })
            .collect()
    }

    /// Scores and boxes: a detector whose output broke keeps a NaN candidate (see
    /// `decode_host`), and an infinite box draws nothing.
    fn is_finite(&self, prediction: &DetectionPrediction) -> bool {
        prediction
            .detections
            .iter()
            .all(|d| d.score.is_finite() && d.bbox.iter().all(|v| v.is_finite()))
    }
}

/// pytorch-grad-cam's `FasterRCNNBoxScoreTarget` on the decoded detections (after
/// NMS, as the reference sees a detector's output): for each reference box, the
/// detection with the highest IoU; when that IoU is above the threshold and its label
/// is the box's, its IoU plus its score is added. The matching is done on the host;
/// IoU and score are then taken from the differentiable candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxScore {
    /// Reference boxes per image.
    pub boxes: Vec<Vec<BoxRequest>>,
    /// The IoU a match needs (strictly above).
    pub match_threshold: f32,
    /// How outputs become detections.
    pub decode: DecodeConfig,
    /// What is scored of each matched detection (IoU + score by default).
    pub kind: DetectionScoreKind,
}

/// `max(x, c)` for a constant `c`, as `(x + c + |x - c|) / 2`: at a tie the gradient
/// is split in half, as `torch.max` does. It matters: the box-score target compares a
/// detection with its own box, where every side ties, and torchvision's IoU then has a
/// zero gradient in the box.
fn max_with(x: Tensor<1>, c: f32) -> Tensor<1> {
    (x.clone() + c + (x - c).abs()) / 2.0
}

/// `min(x, c)` with the same tie rule.
fn min_with(x: Tensor<1>, c: f32) -> Tensor<1> {
    (x.clone() + c - (x - c).abs()) / 2.0
}

/// The IoU of a differentiable box `[4]` with a fixed one, as a `[1]` tensor, with
/// torchvision's `box_iou` gradients.
fn iou_tensor(candidate: Tensor<1>, fixed: &[f32; 4]) -> Tensor<1> {
    let side = |k: usize| candidate.clone().narrow(0, k, 1);
    let (x1, y1, x2, y2) = (side(0), side(1), side(2), side(3));
    let w = (min_with(x2.clone(), fixed[2]) - max_with(x1.clone(), fixed[0])).clamp_min(0.0);
    let h = (min_with(y2.clone(), fixed[3]) - max_with(y1.clone(), fixed[1])).clamp_min(0.0);
    let inter = w * h;
    let area = (x2 - x1) * (y2 - y1);
    let fixed_area = (fixed[2] - fixed[0]) * (fixed[3] - fixed[1]);
    inter.clone() / (area + fixed_area - inter)
}

impl Target<DetectorOutput> for BoxScore {
    fn score(&self, output: &DetectorOutput) -> Result<Tensor<1>> {
        let (boxes, scores) = dense_candidates(output)?;
        let dims = scores.dims();
        let [batch, _, _] = dims;
        if self.boxes.len() != batch {
            return Err(LumenError::shape(
                "box-score targets",
                format!("one list of boxes per image ({batch})"),
                self.boxes.len(),
            ));
        }
        let detections = decode_host(
            &to_host(boxes.clone())?,
            &to_host(scores.clone())?,
            dims,
            &self.decode,
            None,
        );
        let device = scores.device();
        let logits = (self.kind != DetectionScoreKind::BoxScore).then(|| dense_logits(output));
        let per_image: Vec<Tensor<1>> = (0..batch)
            .map(|b| {
                let mut total = Tensor::<1>::zeros([1], &device);
                for reference in &self.boxes[b] {
                    let best = detections[b]
                        .iter()
                        .map(|d| (d, box_iou(&reference.bbox, &d.bbox)))
                        .fold(
                            None,
                            |best: Option<(&Detection, f32)>, (d, iou)| match best {
                                Some((_, top)) if top >= iou => best,
                                _ => Some((d, iou)),
                            },
                        );
                    if let Some((d, iou)) = best
                        && iou > self.match_threshold
                        && d.label == reference.label
                    {
                        let at = d.location..d.location + 1;
                        total = total
                            + match (&logits, self.kind) {
                                (Some((classes, _)), DetectionScoreKind::ClassLogit) => classes
                                    .clone()
                                    .slice([b..b + 1, at, d.label..d.label + 1])
                                    .reshape([1]),
                                (Some((_, centerness)), DetectionScoreKind::Centerness) => {
                                    centerness.clone().slice([b..b + 1, at]).reshape([1])
                                }
                                _ => {
                                    let candidate = boxes
                                        .clone()
                                        .slice([b..b + 1, at.clone(), 0..4])
                                        .reshape([4]);
                                    let score = scores
                                        .clone()
                                        .slice([b..b + 1, at, d.label..d.label + 1])
                                        .reshape([1]);
                                    iou_tensor(candidate, &reference.bbox) + score
                                }
                            };
                    }
                }
                total
            })
            .collect();
        Ok(Tensor::cat(per_image, 0))
    }

    fn for_images(&self, images: &[usize]) -> Box<dyn Target<DetectorOutput>> {
        lumen_core::target_for_rows("detection targets", &self.boxes, images, |boxes| {
            Box::new(Self {
                boxes,
                ..self.clone()
            })
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures outline each explained box; the caption carries the score of the
    /// detection the box names, and only the label when no detection is that box.
    #[test]
    fn outlines_caption_the_explained_boxes() {
        let task = ObjectDetection::new(2, Some(vec!["circle".into(), "square".into()]));
        let found = Detection {
            bbox: [4.0, 5.0, 20.0, 30.0],
            label: 1,
            name: Some("square".into()),
            score: 0.734,
            location: 9,
        };
        let prediction = DetectionPrediction {
            detections: vec![found.clone()],
        };
        let request = vec![
            BoxRequest {
                bbox: found.bbox,
                label: 1,
            },
            // The same box under another label names no detection.
            BoxRequest {
                bbox: found.bbox,
                label: 0,
            },
        ];
        let outlines = task.outlines(&request, &prediction);
        assert_eq!(
            outlines
                .iter()
                .map(|o| (o.bbox, o.class, o.caption.as_str()))
                .collect::<Vec<_>>(),
            [(found.bbox, 1, "square 0.73"), (found.bbox, 0, "circle")]
        );
        assert_eq!(
            task.ranked(&prediction),
            [("square (1) at [4, 5, 20, 30]".to_string(), 0.734)]
        );
    }

    #[test]
    fn a_broken_output_is_kept_and_reported_not_dropped_under_the_threshold() {
        let task = ObjectDetection::new(2, None);
        let config = DecodeConfig::default();
        let finite = [0.0, 0.0, 10.0, 10.0];
        // A NaN score, even beside a finite one, is a detection that is not finite.
        let nan_score = decode_host(&finite, &[0.1, f32::NAN], [1, 1, 2], &config, None);
        assert_eq!(nan_score[0].len(), 1);
        assert_eq!(nan_score[0][0].label, 1);
        assert!(nan_score[0][0].score.is_nan());
        let prediction = |detections: Vec<Detection>| DetectionPrediction { detections };
        assert!(!task.is_finite(&prediction(nan_score[0].clone())));
        // An infinite box with a confident score is kept and not finite; under the
        // threshold it is dropped like any unconfident candidate.
        let infinite = [0.0, 0.0, f32::INFINITY, 10.0];
        let confident = decode_host(&infinite, &[0.9, 0.0], [1, 1, 2], &config, None);
        assert_eq!(confident[0].len(), 1);
        assert!(!task.is_finite(&prediction(confident[0].clone())));
        let unconfident = decode_host(&infinite, &[0.01, 0.0], [1, 1, 2], &config, None);
        assert!(unconfident[0].is_empty());
        assert!(task.is_finite(&prediction(unconfident[0].clone())));
        // Finite outputs are finite predictions.
        let fine = decode_host(&finite, &[0.9, 0.0], [1, 1, 2], &config, None);
        assert!(task.is_finite(&prediction(fine[0].clone())));
    }

    #[test]
    fn nms_is_class_aware_and_keeps_the_best_first() {
        // Three candidates: two overlapping of class 0, one overlapping of class 1.
        let boxes = [
            0.0, 0.0, 10.0, 10.0, //
            1.0, 1.0, 11.0, 11.0, //
            0.0, 0.0, 10.0, 10.0,
        ];
        let scores = [
            0.9, 0.0, //
            0.8, 0.0, //
            0.0, 0.7,
        ];
        let config = DecodeConfig::default();
        let d = &decode_host(&boxes, &scores, [1, 3, 2], &config, None)[0];
        assert_eq!(
            d.iter().map(|d| (d.label, d.location)).collect::<Vec<_>>(),
            [(0, 0), (1, 2)]
        );
        let capped = DecodeConfig {
            max_detections: 1,
            ..config
        };
        assert_eq!(
            decode_host(&boxes, &scores, [1, 3, 2], &capped, None)[0].len(),
            1
        );
        assert!(
            (box_iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6
        );
        assert_eq!(box_iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
        assert!(
            DecodeConfig {
                score_threshold: f32::NAN,
                ..config
            }
            .validate()
            .is_err()
        );
    }
}
