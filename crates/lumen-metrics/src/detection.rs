//! Detection on ground truth: how accurate the detector is (COCO-style average
//! precision), and whether the map of one detection points at that detection's object
//! rather than at its neighbours. Host computations on boxes `[x1, y1, x2, y2]` in
//! pixels and maps `[h*w]` (row-major) at the image's size.

use lumen_core::region::box_iou;
use lumen_core::{LumenError, Result};
use serde::{Deserialize, Serialize};

/// A detection: box, class and confidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredBox {
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Class index.
    pub label: usize,
    /// Confidence; higher ranks first.
    pub score: f32,
}

/// A ground-truth object: box and class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthBox {
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Class index.
    pub label: usize,
}

/// Average precision at one IoU threshold.
#[derive(Clone, Debug, Serialize)]
pub struct AveragePrecision {
    /// The mean over the classes that have ground truth.
    pub mean: f64,
    /// Per class; `None` for a class without ground-truth objects.
    pub per_class: Vec<Option<f64>>,
    /// A detection matches an object at IoU >= this.
    pub iou_threshold: f32,
}

/// COCO's average precision at one IoU threshold (pycocotools' `AP50` at 0.5): per
/// class, the detections of all images in score order (ties keep image, then
/// detection order), each matched to the unmatched object of the same image with the
/// highest IoU, when that IoU reaches the threshold; precision made monotone and read
/// at 101 recall points; then the mean over classes with ground truth.
pub fn average_precision(
    detections: &[Vec<ScoredBox>],
    truths: &[Vec<TruthBox>],
    num_classes: usize,
    iou_threshold: f32,
) -> Result<AveragePrecision> {
    if detections.len() != truths.len() {
        return Err(LumenError::InvalidArgument(format!(
            "average precision: {} images of detections but {} of ground truth",
            detections.len(),
            truths.len()
        )));
    }
    if !(iou_threshold > 0.0 && iou_threshold <= 1.0) {
        return Err(LumenError::InvalidArgument(format!(
            "the IoU threshold must be in (0, 1], got {iou_threshold}"
        )));
    }
    let labels = detections
        .iter()
        .flatten()
        .map(|d| d.label)
        .chain(truths.iter().flatten().map(|t| t.label));
    if let Some(bad) = labels.into_iter().find(|&l| l >= num_classes) {
        return Err(LumenError::InvalidArgument(format!(
            "average precision: class {bad} out of range ({num_classes} classes)"
        )));
    }
    if let Some(bad) = detections.iter().flatten().find(|d| !d.score.is_finite()) {
        return Err(LumenError::InvalidArgument(format!(
            "average precision: a detection has score {}",
            bad.score
        )));
    }
    let per_class: Vec<Option<f64>> = (0..num_classes)
        .map(|class| class_average_precision(detections, truths, class, iou_threshold))
        .collect();
    let present: Vec<f64> = per_class.iter().flatten().copied().collect();
    if present.is_empty() {
        return Err(LumenError::InvalidArgument(
            "average precision needs at least one ground-truth object".into(),
        ));
    }
    Ok(AveragePrecision {
        mean: present.iter().sum::<f64>() / present.len() as f64,
        per_class,
        iou_threshold,
    })
}

fn class_average_precision(
    detections: &[Vec<ScoredBox>],
    truths: &[Vec<TruthBox>],
    class: usize,
    iou_threshold: f32,
) -> Option<f64> {
    let objects: Vec<Vec<&TruthBox>> = truths
        .iter()
        .map(|t| t.iter().filter(|o| o.label == class).collect())
        .collect();
    let total: usize = objects.iter().map(Vec::len).sum();
    if total == 0 {
        return None;
    }
    let mut ranked: Vec<(usize, &ScoredBox)> = detections
        .iter()
        .enumerate()
        .flat_map(|(i, d)| d.iter().filter(|d| d.label == class).map(move |d| (i, d)))
        .collect();
    // Stable: equal scores keep image and detection order.
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let mut used: Vec<Vec<bool>> = objects.iter().map(|o| vec![false; o.len()]).collect();
    let mut true_positives = 0usize;
    let mut recall = Vec::with_capacity(ranked.len());
    let mut precision = Vec::with_capacity(ranked.len());
    for (rank, (image, detection)) in ranked.iter().enumerate() {
        let best = objects[*image]
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*image][*j])
            .map(|(j, o)| (j, box_iou(&detection.bbox, &o.bbox)))
            .fold(None, |best: Option<(usize, f32)>, (j, iou)| match best {
                Some((_, b)) if b >= iou => best,
                _ => Some((j, iou)),
            });
        if let Some((j, iou)) = best
            && iou >= iou_threshold
        {
            used[*image][j] = true;
            true_positives += 1;
        }
        recall.push(true_positives as f64 / total as f64);
        precision.push(true_positives as f64 / (rank + 1) as f64);
    }
    // Monotone precision: at each rank, the best precision at this recall or beyond.
    for k in (0..precision.len().saturating_sub(1)).rev() {
        precision[k] = precision[k].max(precision[k + 1]);
    }
    let sum: f64 = (0..=100)
        .map(|step| {
            let r = step as f64 / 100.0;
            let k = recall.partition_point(|&x| x < r);
            precision.get(k).copied().unwrap_or(0.0)
        })
        .sum();
    Some(sum / 101.0)
}

/// Where one detection's map puts its evidence, against the ground-truth boxes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BoxLocalization {
    /// Share of the map's positive mass inside the explained object's box (the
    /// energy-based pointing game of that box).
    pub energy_in_box: f32,
    /// Of the positive mass that falls inside any object's box, the share inside the
    /// explained one's (pixels of both count for the explained one); `None` when the
    /// image has no other object.
    pub share_among_boxes: Option<f32>,
    /// More positive mass in the explained box than in the other boxes together;
    /// `None` when the image has no other object.
    pub beats_other_boxes: Option<bool>,
    /// A maximum of the map lies inside the explained box (false for a map without
    /// positive values).
    pub pointing: bool,
}

/// Whether pixel `(x, y)`'s centre lies in `[x1, y1, x2, y2]` (a half-open integer box
/// holds exactly its pixels).
fn holds(b: &[f32; 4], x: usize, y: usize) -> bool {
    let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
    b[0] <= cx && cx <= b[2] && b[1] <= cy && cy <= b[3]
}

/// Measure a detection's map `[height * width]` against its object's box `own` and the
/// image's other objects' boxes `others`.
pub fn box_localization(
    map: &[f32],
    [height, width]: [usize; 2],
    own: &[f32; 4],
    others: &[[f32; 4]],
) -> Result<BoxLocalization> {
    if map.len() != height * width || map.is_empty() {
        return Err(LumenError::InvalidArgument(format!(
            "a map of {} values does not fit a {height}x{width} image",
            map.len()
        )));
    }
    for b in std::iter::once(own).chain(others) {
        if !b.iter().all(|v| v.is_finite()) || b[2] < b[0] || b[3] < b[1] {
            return Err(LumenError::InvalidArgument(format!(
                "bad box {b:?}: expected finite [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2"
            )));
        }
    }
    let (mut total, mut inside, mut elsewhere) = (0.0f64, 0.0f64, 0.0f64);
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut pointing = false;
    for (i, &v) in map.iter().enumerate() {
        let (x, y) = (i % width, i / width);
        let in_own = holds(own, x, y);
        if in_own && v == max && max > 0.0 {
            pointing = true;
        }
        let v = v.max(0.0) as f64;
        total += v;
        if in_own {
            inside += v;
        } else if others.iter().any(|b| holds(b, x, y)) {
            elsewhere += v;
        }
    }
    let share = |part: f64, whole: f64| {
        if whole > 0.0 {
            (part / whole) as f32
        } else {
            0.0
        }
    };
    let has_others = !others.is_empty();
    Ok(BoxLocalization {
        energy_in_box: share(inside, total),
        share_among_boxes: has_others.then(|| share(inside, inside + elsewhere)),
        beats_other_boxes: has_others.then_some(inside > elsewhere),
        pointing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(bbox: [f32; 4]) -> TruthBox {
        TruthBox { bbox, label: 0 }
    }

    fn det(bbox: [f32; 4], score: f32) -> ScoredBox {
        ScoredBox {
            bbox,
            label: 0,
            score,
        }
    }

    #[test]
    fn average_precision_reads_101_recall_points_of_monotone_precision() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [20.0, 20.0, 30.0, 30.0];
        let miss = [50.0, 50.0, 60.0, 60.0];
        // Ranks: hit, false positive, hit. Recall .5 .5 1, precision 1 .5 .667, made
        // monotone 1 .667 .667: 51 recall points at 1, 50 at 2/3.
        let ap = average_precision(
            &[vec![det(a, 0.9), det(miss, 0.8), det(b, 0.7)]],
            &[vec![truth(a), truth(b)]],
            1,
            0.5,
        )
        .unwrap();
        let expected = (51.0 + 50.0 * 2.0 / 3.0) / 101.0;
        assert!(
            (ap.mean - expected).abs() < 1e-12,
            "{} vs {expected}",
            ap.mean
        );
        // The false positive ranked last instead costs nothing.
        let ap = average_precision(
            &[vec![det(a, 0.9), det(b, 0.8), det(miss, 0.7)]],
            &[vec![truth(a), truth(b)]],
            1,
            0.5,
        )
        .unwrap();
        assert!((ap.mean - 1.0).abs() < 1e-12);
        // A duplicate of a matched object is a false positive; a missed object caps
        // recall at 1/2 (51 of 101 points).
        let ap = average_precision(
            &[vec![det(a, 0.9), det(a, 0.8)]],
            &[vec![truth(a), truth(b)]],
            1,
            0.5,
        )
        .unwrap();
        assert!((ap.mean - 51.0 / 101.0).abs() < 1e-12, "{}", ap.mean);
    }

    #[test]
    fn average_precision_matches_within_images_and_classes_only() {
        let a = [0.0, 0.0, 10.0, 10.0];
        // The right box in the wrong image, or with the wrong class, matches nothing.
        let wrong_image = average_precision(
            &[vec![], vec![det(a, 0.9)]],
            &[vec![truth(a)], vec![]],
            1,
            0.5,
        )
        .unwrap();
        assert_eq!(wrong_image.mean, 0.0);
        let other_class = ScoredBox {
            label: 1,
            ..det(a, 0.9)
        };
        let ap = average_precision(&[vec![other_class]], &[vec![truth(a)]], 2, 0.5).unwrap();
        assert_eq!(ap.per_class, vec![Some(0.0), None]);
        // IoU just under and at the threshold: [0,0,10,10] vs [0,0,10,20] has IoU 0.5.
        let half = [0.0, 0.0, 10.0, 20.0];
        let at = average_precision(&[vec![det(half, 0.9)]], &[vec![truth(a)]], 1, 0.5).unwrap();
        assert_eq!(at.mean, 1.0);
        let above = average_precision(&[vec![det(half, 0.9)]], &[vec![truth(a)]], 1, 0.51).unwrap();
        assert_eq!(above.mean, 0.0);
    }

    #[test]
    fn average_precision_rejects_bad_input() {
        let a = [0.0, 0.0, 10.0, 10.0];
        for (detections, truths, classes, threshold) in [
            (vec![vec![]], vec![], 1, 0.5),
            (vec![vec![]], vec![vec![truth(a)]], 1, 0.0),
            (vec![vec![]], vec![vec![truth(a)]], 1, f32::NAN),
            (vec![vec![det(a, f32::NAN)]], vec![vec![truth(a)]], 1, 0.5),
            (
                vec![vec![]],
                vec![vec![TruthBox { bbox: a, label: 3 }]],
                2,
                0.5,
            ),
            (vec![vec![det(a, 0.5)]], vec![vec![]], 1, 0.5),
        ] {
            assert!(average_precision(&detections, &truths, classes, threshold).is_err());
        }
    }

    #[test]
    fn box_localization_weighs_the_explained_box_against_the_others() {
        // 4x4 image; own box the left half, another object the top-right quarter.
        let own = [0.0, 0.0, 2.0, 4.0];
        let other = [2.0, 0.0, 4.0, 2.0];
        #[rustfmt::skip]
        let map = [
            0.0, 1.0, 3.0, 3.0,
            0.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 2.0,
            -5.0, 0.0, 0.0, 0.0,
        ];
        let m = box_localization(&map, [4, 4], &own, &[other]).unwrap();
        assert!((m.energy_in_box - 2.0 / 10.0).abs() < 1e-6);
        assert_eq!(m.share_among_boxes, Some(2.0 / 8.0));
        assert_eq!(m.beats_other_boxes, Some(false));
        assert!(!m.pointing);
        let flipped: Vec<f32> = map
            .chunks(4)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        let m = box_localization(&flipped, [4, 4], &own, &[other]).unwrap();
        assert_eq!(m.beats_other_boxes, Some(true));
        assert!(m.pointing);
        // Alone in its image, the share among boxes is undefined; a zero map points
        // nowhere.
        let alone = box_localization(&[0.0; 16], [4, 4], &own, &[]).unwrap();
        assert_eq!(
            (alone.share_among_boxes, alone.pointing, alone.energy_in_box),
            (None, false, 0.0)
        );
        assert!(box_localization(&map, [4, 3], &own, &[]).is_err());
        assert!(box_localization(&map, [4, 4], &[3.0, 0.0, 1.0, 2.0], &[]).is_err());
        assert!(box_localization(&map, [4, 4], &own, &[[f32::NAN, 0.0, 1.0, 1.0]]).is_err());
    }
}
