//! Segmentation quality: per-class intersection over union and its mean.

use serde::{Deserialize, Serialize};

/// Intersections and unions per class, accumulated over images: the mIoU of a split
/// is computed from the totals (as torchmetrics' `JaccardIndex` with `average="macro"`
/// over a whole epoch), not averaged per image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IouAccumulator {
    intersections: Vec<u64>,
    unions: Vec<u64>,
}

impl IouAccumulator {
    /// An accumulator for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            intersections: vec![0; classes],
            unions: vec![0; classes],
        }
    }

    /// Add one image: predicted and true class per pixel, same length.
    pub fn add(&mut self, predicted: &[usize], truth: &[usize]) {
        assert_eq!(predicted.len(), truth.len(), "one prediction per pixel");
        for (&p, &t) in predicted.iter().zip(truth) {
            if p == t {
                self.intersections[p] += 1;
                self.unions[p] += 1;
            } else {
                self.unions[p] += 1;
                self.unions[t] += 1;
            }
        }
    }

    /// Add another accumulator's counts (of other images, over the same classes): a
    /// split measured in parts gives the mIoU of the whole.
    pub fn merge(&mut self, other: &Self) -> lumen_core::Result<()> {
        let classes = [self.unions.len(), other.unions.len()];
        if classes[0] != classes[1] || other.intersections.len() != classes[1] {
            return Err(lumen_core::LumenError::InvalidArgument(format!(
                "IoU counts of {} and {} classes cannot be added",
                classes[0], classes[1]
            )));
        }
        for (mine, theirs) in self.intersections.iter_mut().zip(&other.intersections) {
            *mine += theirs;
        }
        for (mine, theirs) in self.unions.iter_mut().zip(&other.unions) {
            *mine += theirs;
        }
        Ok(())
    }

    /// Number of classes counted.
    pub fn classes(&self) -> usize {
        self.unions.len()
    }

    /// IoU per class; `None` for a class neither predicted nor present.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.intersections
            .iter()
            .zip(&self.unions)
            .map(|(&i, &u)| (u > 0).then(|| i as f64 / u as f64))
            .collect()
    }

    /// Mean IoU over the classes that occur (in the truth or the prediction).
    pub fn mean(&self) -> f64 {
        let present: Vec<f64> = self.per_class().into_iter().flatten().collect();
        if present.is_empty() {
            return 0.0;
        }
        present.iter().sum::<f64>() / present.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_counts_intersections_over_unions_per_class() {
        let mut acc = IouAccumulator::new(3);
        // truth 0 0 1 1, predicted 0 1 1 1: class 0 IoU 1/2, class 1 IoU 2/3, class 2 absent.
        acc.add(&[0, 1, 1, 1], &[0, 0, 1, 1]);
        assert_eq!(acc.per_class(), [Some(0.5), Some(2.0 / 3.0), None]);
        assert!((acc.mean() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let mut perfect = IouAccumulator::new(2);
        perfect.add(&[1, 0], &[1, 0]);
        assert_eq!(perfect.mean(), 1.0);
    }

    #[test]
    fn merged_parts_give_the_whole() {
        let mut whole = IouAccumulator::new(3);
        whole.add(&[0, 1, 1, 1], &[0, 0, 1, 1]);
        whole.add(&[2, 2, 0], &[2, 1, 0]);
        let (mut first, mut second) = (IouAccumulator::new(3), IouAccumulator::new(3));
        first.add(&[0, 1, 1, 1], &[0, 0, 1, 1]);
        second.add(&[2, 2, 0], &[2, 1, 0]);
        first.merge(&second).unwrap();
        assert!(first.merge(&IouAccumulator::new(2)).is_err());
        assert_eq!(first, whole);
        assert_ne!(second, whole);
    }
}
