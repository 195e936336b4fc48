//! Ground-truth and target regions on an image: a pixel mask and its bounding box.
//! Shared by targets (segmentation and detection regions) and the localization metrics.

use crate::error::{LumenError, Result};

/// A ground-truth region on an image: a pixel mask and its bounding box.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Row-major foreground mask `[height*width]`.
    pub mask: Vec<bool>,
    /// Bounding box `[x0, y0, x1, y1]`, half-open.
    pub bbox: [usize; 4],
}

impl Region {
    /// A region from a mask; the box is the mask's extent.
    pub fn from_mask(height: usize, width: usize, mask: Vec<bool>) -> Result<Self> {
        if mask.len() != height * width {
            return Err(LumenError::shape(
                "ground-truth mask",
                format!("{height}x{width} = {} pixels", height * width),
                mask.len(),
            ));
        }
        let mut bbox = [width, height, 0, 0];
        for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            let (y, x) = (i / width, i % width);
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x + 1),
                bbox[3].max(y + 1),
            ];
        }
        if bbox[2] == 0 {
            bbox = [0, 0, 0, 0];
        }
        Ok(Self {
            height,
            width,
            mask,
            bbox,
        })
    }

    /// A region that is a box `[x0, y0, x1, y1]` (half-open): its mask fills the box.
    pub fn from_box(height: usize, width: usize, bbox: [usize; 4]) -> Result<Self> {
        let [x0, y0, x1, y1] = bbox;
        if x0 >= x1 || y0 >= y1 || x1 > width || y1 > height {
            return Err(LumenError::InvalidArgument(format!(
                "bounding box {bbox:?} is empty or outside the {height}x{width} image"
            )));
        }
        let mask = (0..height * width)
            .map(|i| {
                let (y, x) = (i / width, i % width);
                (x0..x1).contains(&x) && (y0..y1).contains(&y)
            })
            .collect();
        Ok(Self {
            height,
            width,
            mask,
            bbox,
        })
    }

    /// The same region with its box as the mask.
    pub fn box_region(&self) -> Self {
        let [x0, y0, x1, y1] = self.bbox;
        let mask = (0..self.height * self.width)
            .map(|i| {
                let (y, x) = (i / self.width, i % self.width);
                (x0..x1).contains(&x) && (y0..y1).contains(&y)
            })
            .collect();
        Self {
            mask,
            ..self.clone()
        }
    }

    /// Check that a host map `[h*w]` has this region's size.
    pub fn check_map(&self, map: &[f32]) -> Result<()> {
        if map.len() != self.mask.len() {
            return Err(LumenError::shape(
                "heatmap for localization",
                format!(
                    "{}x{} (the ground truth's size; resize the heatmap first)",
                    self.height, self.width
                ),
                format!("{} pixels", map.len()),
            ));
        }
        Ok(())
    }
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 for empty unions).
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}
