//! Localization: does the heatmap point at the object? Host computations on one map
//! `[h*w]` (row-major, at the ground truth's size) and a [`Region`].

pub use lumen_core::Region;
use lumen_core::{LumenError, Result};
use serde::Serialize;

/// The index of the first maximum (NumPy's `argmax`).
pub fn argmax(map: &[f32]) -> usize {
    map.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// Pointing game (Zhang et al., 2016): a hit when the map's maximum falls on the
/// region (any pixel holding the maximum, as Quantus counts ties). With
/// `tolerance > 0` (their 15 pixels), a hit when a region pixel lies within
/// `tolerance` of a maximum (TorchRay's disk: squared distance `< tolerance^2`).
pub fn pointing_game(map: &[f32], region: &Region, tolerance: f32) -> Result<bool> {
    region.check_map(map)?;
    let max = map[argmax(map)];
    let peaks: Vec<usize> = (0..map.len()).filter(|&i| map[i] == max).collect();
    if peaks.iter().any(|&p| region.mask[p]) {
        return Ok(true);
    }
    if tolerance <= 0.0 {
        return Ok(false);
    }
    let w = region.width;
    Ok(peaks.iter().any(|&peak| {
        let (py, px) = ((peak / w) as f32, (peak % w) as f32);
        region.mask.iter().enumerate().any(|(i, &m)| {
            let (y, x) = ((i / w) as f32, (i % w) as f32);
            m && (y - py).powi(2) + (x - px).powi(2) < tolerance * tolerance
        })
    }))
}

/// Share of the map's positive mass inside `mask`; 0 for an all-zero map.
fn mass_inside(map: &[f32], mask: &[bool]) -> f32 {
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    for (&v, &m) in map.iter().zip(mask) {
        let v = v.max(0.0) as f64;
        total += v;
        if m {
            inside += v;
        }
    }
    if total > 0.0 {
        (inside / total) as f32
    } else {
        0.0
    }
}

/// Energy-based pointing game (Wang et al., Score-CAM, 2020): the share of the map's
/// (positive) energy inside the bounding box.
pub fn energy_pointing_game(map: &[f32], region: &Region) -> Result<f32> {
    region.check_map(map)?;
    Ok(mass_inside(map, &region.box_region().mask))
}

/// Relevance mass accuracy (Arras et al., 2022): the share of positive relevance
/// inside the mask.
pub fn relevance_mass(map: &[f32], region: &Region) -> Result<f32> {
    region.check_map(map)?;
    Ok(mass_inside(map, &region.mask))
}

/// Relevance rank accuracy (Arras et al., 2022): with `K` mask pixels, the share of
/// the map's top-`K` pixels that fall in the mask. Ties rank the earlier pixel first.
pub fn relevance_rank(map: &[f32], region: &Region) -> Result<f32> {
    region.check_map(map)?;
    let k = region.mask.iter().filter(|&&m| m).count();
    if k == 0 {
        return Ok(0.0);
    }
    let order = descending_order(map);
    let hits = order[..k].iter().filter(|&&i| region.mask[i]).count();
    Ok(hits as f32 / k as f32)
}

/// Intersection over union of the thresholded map (`value >= threshold * max`) with
/// the mask.
pub fn iou(map: &[f32], region: &Region, threshold: f32) -> Result<f32> {
    region.check_map(map)?;
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let cut = threshold * max;
    let (mut intersection, mut union) = (0usize, 0usize);
    for (&v, &m) in map.iter().zip(&region.mask) {
        let on = max > 0.0 && v >= cut;
        intersection += (on && m) as usize;
        union += (on || m) as usize;
    }
    Ok(if union == 0 {
        0.0
    } else {
        intersection as f32 / union as f32
    })
}

/// Pixel indices from the largest value to the smallest; ties keep index order.
pub fn descending_order(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
    order
}

/// The image side at which Zhang et al.'s 15-pixel pointing tolerance is defined.
pub const TOLERANCE_REFERENCE_SIDE: f32 = 224.0;

/// Settings of the localization metrics.
#[derive(Clone, Debug)]
pub struct LocalizationConfig {
    /// Pointing-game tolerance in pixels of a 224-pixel image (0: the maximum must be
    /// on the mask). It is scaled with the map's shorter side, so that it covers the
    /// same share of the image at any size (15 px at 224 is 8.6 px at 128).
    pub tolerance: f32,
    /// IoU threshold as a fraction of each map's maximum.
    pub iou_threshold: f32,
}

impl Default for LocalizationConfig {
    fn default() -> Self {
        Self {
            tolerance: 15.0,
            iou_threshold: 0.5,
        }
    }
}

impl LocalizationConfig {
    /// Check the settings: the tolerance finite and not negative, the IoU threshold
    /// in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "the pointing-game tolerance must be a finite number >= 0, got {}",
                self.tolerance
            )));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return Err(LumenError::InvalidArgument(format!(
                "the IoU threshold must be in [0, 1], got {}",
                self.iou_threshold
            )));
        }
        Ok(())
    }

    /// The tolerance in pixels of `region`'s image.
    pub fn scaled_tolerance(&self, region: &Region) -> f32 {
        self.tolerance * region.height.min(region.width) as f32 / TOLERANCE_REFERENCE_SIDE
    }
}

/// Localization scores of one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Localization {
    /// Pointing game hit (with the configured tolerance).
    pub pointing_game: bool,
    /// Energy inside the bounding box.
    pub energy_pointing_game: f32,
    /// IoU of the thresholded map with the mask.
    pub iou: f32,
    /// Relevance mass inside the mask.
    pub relevance_mass: f32,
    /// Relevance rank accuracy.
    pub relevance_rank: f32,
}

/// All localization scores of one image.
pub fn localization(
    map: &[f32],
    region: &Region,
    config: &LocalizationConfig,
) -> Result<Localization> {
    config.validate()?;
    Ok(Localization {
        pointing_game: pointing_game(map, region, config.scaled_tolerance(region))?,
        energy_pointing_game: energy_pointing_game(map, region)?,
        iou: iou(map, region, config.iou_threshold)?,
        relevance_mass: relevance_mass(map, region)?,
        relevance_rank: relevance_rank(map, region)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        // 4x4 image, mask on the 2x2 block at rows 1-2, cols 1-2.
        let mask = (0..16).map(|i| [5, 6, 9, 10].contains(&i)).collect();
        Region::from_mask(4, 4, mask).unwrap()
    }

    #[test]
    fn box_is_the_masks_extent() {
        assert_eq!(region().bbox, [1, 1, 3, 3]);
        let b = Region::from_box(4, 4, [1, 1, 3, 3]).unwrap();
        assert_eq!(b.mask, region().mask);
        assert!(Region::from_box(4, 4, [2, 2, 2, 3]).is_err());
    }

    #[test]
    fn pointing_game_with_and_without_tolerance() {
        let mut map = vec![0.0; 16];
        map[0] = 1.0; // corner, diagonal neighbour of pixel 5
        assert!(!pointing_game(&map, &region(), 0.0).unwrap());
        // Distance to pixel 5 is sqrt(2): inside a tolerance of 1.5, not of 1.4.
        assert!(pointing_game(&map, &region(), 1.5).unwrap());
        assert!(!pointing_game(&map, &region(), 1.4).unwrap());
        map[10] = 2.0;
        assert!(pointing_game(&map, &region(), 0.0).unwrap());
    }

    #[test]
    fn the_tolerance_scales_with_the_shorter_side() {
        let config = LocalizationConfig::default();
        let at = |h, w| config.scaled_tolerance(&Region::from_box(h, w, [0, 0, 1, 1]).unwrap());
        assert!((at(224, 300) - 15.0).abs() < 1e-5);
        assert!((at(128, 128) - 15.0 * 128.0 / 224.0).abs() < 1e-5);
        // A peak 9 px from a 128 px image's mask: a hit with 15 px unscaled, a miss
        // with the 8.6 px that cover the same share of the image.
        let mut mask = vec![false; 128 * 128];
        mask[64 * 128 + 64] = true;
        let region = Region::from_mask(128, 128, mask).unwrap();
        let mut map = vec![0.0; 128 * 128];
        map[64 * 128 + 73] = 1.0;
        assert!(pointing_game(&map, &region, 15.0).unwrap());
        assert!(!localization(&map, &region, &config).unwrap().pointing_game);
    }

    #[test]
    fn masses_ranks_and_iou_by_hand() {
        let mut map = vec![0.0; 16];
        map[5] = 3.0;
        map[6] = 1.0;
        map[0] = 1.0;
        map[15] = 2.0;
        let r = region();
        assert!((relevance_mass(&map, &r).unwrap() - 4.0 / 7.0).abs() < 1e-6);
        assert!((energy_pointing_game(&map, &r).unwrap() - 4.0 / 7.0).abs() < 1e-6);
        // Top 4: 5 (3), 15 (2), 0 (1, earlier than 6), 6 (1): two hits.
        assert!((relevance_rank(&map, &r).unwrap() - 0.5).abs() < 1e-6);
        // >= 1.5: pixels 5 and 15; intersection 1, union 5.
        assert!((iou(&map, &r, 0.5).unwrap() - 0.2).abs() < 1e-6);
        assert!(relevance_mass(&[0.0; 9], &r).is_err());
    }
}
