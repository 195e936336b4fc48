//! The procedural shapes dataset and the two models trained on it, bundled so that
//! Lumen can be tried with no weights at hand.
//!
//! Each sample is a 128x128 image: one shape (circle, square, triangle or cross) in a
//! saturated colour on a textured background (oriented stripes plus noise), with its
//! exact mask and bounding box, the ground truth for localisation metrics. Samples are
//! a pure function of `(seed, index)`.

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Class names, in label order.
pub const SHAPE_CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];
/// Side of every image, in pixels.
pub const SHAPE_IMAGE_SIZE: u32 = 128;
/// Seed of the training split.
pub const TRAIN_SEED: u64 = 1;
/// Seed of the validation split (disjoint from training by construction).
pub const VALIDATION_SEED: u64 = 2;
/// Seed used for demos and evaluation.
pub const EVALUATION_SEED: u64 = 3;
/// Seed of the held-out test split of the bundled models (never used to pick a
/// checkpoint).
pub const TEST_SEED: u64 = 4;
/// Seed of the split on which the bench's settings (curve baselines) are chosen, so
/// that the evaluation split stays for evaluation.
pub const TUNING_SEED: u64 = 5;

/// One generated image with its ground truth.
#[derive(Clone, Debug)]
pub struct ShapeSample {
    /// The picture.
    pub image: RgbImage,
    /// Index into [`SHAPE_CLASSES`].
    pub label: usize,
    /// Bounding box `[x0, y0, x1, y1]`, half-open, in pixels.
    pub bbox: [u32; 4],
    /// Row-major foreground mask.
    pub mask: Vec<bool>,
}

fn inside(label: usize, dx: f32, dy: f32, r: f32) -> bool {
    match label {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
        2 => {
            // Upward triangle with its centroid at the centre.
            let top = -r;
            let bottom = 0.6 * r;
            let half_width = (dy - top) / (bottom - top) * r;
            dy >= top && dy <= bottom && dx.abs() <= half_width
        }
        _ => {
            let arm = 0.33 * r;
            (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
        }
    }
}

/// Generate sample `index` of the split with `seed`.
pub fn shape_sample(seed: u64, index: u64) -> ShapeSample {
    let size = SHAPE_IMAGE_SIZE;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let label = rng.random_range(0..SHAPE_CLASSES.len());
    // Background: two muted tones in oriented stripes, plus pixel noise.
    let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
    let period: f32 = rng.random_range(6.0..24.0);
    let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(60.0..160.0));
    let stripe: [f32; 3] = std::array::from_fn(|c| base[c] + rng.random_range(-40.0..40.0));
    // Shape: a saturated colour, well away from the background's mean.
    let mut colour: [f32; 3] =
        std::array::from_fn(|_| if rng.random_bool(0.5) { 235.0 } else { 25.0 });
    if colour.iter().all(|&c| c == colour[0]) {
        colour[rng.random_range(0..3)] = 255.0 - colour[0];
    }
    let r: f32 = rng.random_range(14.0..30.0);
    let cx: f32 = rng.random_range(r + 4.0..size as f32 - r - 4.0);
    let cy: f32 = rng.random_range(r + 4.0..size as f32 - r - 4.0);
    let (sin, cos) = angle.sin_cos();
    let mut mask = vec![false; (size * size) as usize];
    let mut bbox = [size, size, 0, 0];
    let noise: Vec<f32> = (0..size * size * 3)
        .map(|_| rng.random_range(-18.0..18.0))
        .collect();
    let image = RgbImage::from_fn(size, size, |x, y| {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        let is_shape = inside(label, px - cx, py - cy, r);
        let i = (y * size + x) as usize;
        if is_shape {
            mask[i] = true;
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x + 1),
                bbox[3].max(y + 1),
            ];
        }
        let phase = ((px * cos + py * sin) / period * std::f32::consts::TAU).sin() * 0.5 + 0.5;
        Rgb(std::array::from_fn(|c| {
            let v = if is_shape {
                colour[c]
            } else {
                base[c] * (1.0 - phase) + stripe[c] * phase
            };
            (v + noise[i * 3 + c]).round().clamp(0.0, 255.0) as u8
        }))
    });
    ShapeSample {
        image,
        label,
        bbox,
        mask,
    }
}

/// Segmentation classes of the scenes: background, then the shapes.
pub const SCENE_CLASSES: [&str; 5] = ["background", "circle", "square", "triangle", "cross"];

/// One shape of a scene: its class and what is visible of it.
#[derive(Clone, Debug)]
pub struct SceneObject {
    /// Index into [`SHAPE_CLASSES`] (scene class `label + 1`).
    pub label: usize,
    /// Bounding box of the visible pixels `[x0, y0, x1, y1]`, half-open.
    pub bbox: [u32; 4],
    /// Row-major mask of the visible pixels (later shapes cover earlier ones).
    pub mask: Vec<bool>,
}

/// A multi-object scene: 1 to 4 shapes (overlaps allowed) on a textured background,
/// with exact per-pixel classes, masks and boxes: ground truth for segmentation and
/// detection.
#[derive(Clone, Debug)]
pub struct ShapeScene {
    /// The picture.
    pub image: RgbImage,
    /// The shapes, in drawing order, with at least 60 visible pixels (smaller
    /// fragments keep their class in `classes` but are not objects).
    pub objects: Vec<SceneObject>,
    /// Row-major class per pixel: 0 background, `label + 1` for a shape.
    pub classes: Vec<u8>,
}

/// Generate scene `index` of the split with `seed` (a pure function of both).
pub fn shape_scene(seed: u64, index: u64) -> ShapeScene {
    let size = SHAPE_IMAGE_SIZE;
    let n = (size * size) as usize;
    // A different stream from the single-shape samples of the same split.
    let mut rng =
        StdRng::seed_from_u64(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index ^ 0x005C_E7E5);
    let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
    let period: f32 = rng.random_range(6.0..24.0);
    let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(60.0..160.0));
    let stripe: [f32; 3] = std::array::from_fn(|c| base[c] + rng.random_range(-40.0..40.0));
    let (sin, cos) = angle.sin_cos();
    let mut pixels: Vec<[f32; 3]> = (0..n)
        .map(|i| {
            let (px, py) = (
                (i as u32 % size) as f32 + 0.5,
                (i as u32 / size) as f32 + 0.5,
            );
            let phase = ((px * cos + py * sin) / period * std::f32::consts::TAU).sin() * 0.5 + 0.5;
            std::array::from_fn(|c| base[c] * (1.0 - phase) + stripe[c] * phase)
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; n];
    let count = rng.random_range(1..=4usize);
    let mut labels = Vec::with_capacity(count);
    for k in 0..count {
        let label = rng.random_range(0..SHAPE_CLASSES.len());
        let mut colour: [f32; 3] =
            std::array::from_fn(|_| if rng.random_bool(0.5) { 235.0 } else { 25.0 });
        if colour.iter().all(|&c| c == colour[0]) {
            colour[rng.random_range(0..3)] = 255.0 - colour[0];
        }
        let r: f32 = rng.random_range(10.0..22.0);
        let cx: f32 = rng.random_range(r + 2.0..size as f32 - r - 2.0);
        let cy: f32 = rng.random_range(r + 2.0..size as f32 - r - 2.0);
        for (i, pixel) in pixels.iter_mut().enumerate() {
            let (px, py) = (
                (i as u32 % size) as f32 + 0.5,
                (i as u32 / size) as f32 + 0.5,
            );
            if inside(label, px - cx, py - cy, r) {
                *pixel = colour;
                owner[i] = Some(k);
            }
        }
        labels.push(label);
    }
    let noise: Vec<f32> = (0..n * 3).map(|_| rng.random_range(-18.0..18.0)).collect();
    let image = RgbImage::from_fn(size, size, |x, y| {
        let i = (y * size + x) as usize;
        Rgb(std::array::from_fn(|c| {
            (pixels[i][c] + noise[i * 3 + c]).round().clamp(0.0, 255.0) as u8
        }))
    });
    let objects: Vec<SceneObject> = labels
        .iter()
        .enumerate()
        .map(|(k, &label)| {
            let mask: Vec<bool> = owner.iter().map(|o| *o == Some(k)).collect();
            let mut bbox = [size, size, 0, 0];
            for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
                let (x, y) = (i as u32 % size, i as u32 / size);
                bbox = [
                    bbox[0].min(x),
                    bbox[1].min(y),
                    bbox[2].max(x + 1),
                    bbox[3].max(y + 1),
                ];
            }
            SceneObject { label, bbox, mask }
        })
        // A shape almost covered by later ones is not an object anyone could see.
        .filter(|o| o.mask.iter().filter(|&&m| m).count() >= 60)
        .collect();
    // Every visible shape pixel has its class, fragments too small to be objects
    // included: the picture shows them.
    let classes = owner
        .iter()
        .map(|o| o.map_or(0, |k| labels[k] as u8 + 1))
        .collect();
    ShapeScene {
        image,
        objects,
        classes,
    }
}

/// Scenes `start..start + count` of a split.
pub fn shape_scenes(seed: u64, start: u64, count: u64) -> Vec<ShapeScene> {
    (start..start + count)
        .map(|i| shape_scene(seed, i))
        .collect()
}

/// Samples `start..start + count` of a split.
pub fn shape_samples(seed: u64, start: u64, count: u64) -> Vec<ShapeSample> {
    (start..start + count)
        .map(|i| shape_sample(seed, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_have_consistent_ground_truth() {
        let mut counts = std::collections::HashSet::new();
        for i in 0..60 {
            let s = shape_scene(TRAIN_SEED, i);
            assert_eq!(s.image, shape_scene(TRAIN_SEED, i).image);
            counts.insert(s.objects.len());
            for o in &s.objects {
                let [x0, y0, x1, y1] = o.bbox;
                assert!(x0 < x1 && y0 < y1);
                for (i, _) in o.mask.iter().enumerate().filter(|(_, m)| **m) {
                    let (x, y) = (i as u32 % SHAPE_IMAGE_SIZE, i as u32 / SHAPE_IMAGE_SIZE);
                    assert!(x >= x0 && x < x1 && y >= y0 && y < y1);
                    assert_eq!(s.classes[i] as usize, o.label + 1);
                }
            }
            // Masks of different objects never share a pixel.
            let covered: usize = s
                .objects
                .iter()
                .map(|o| o.mask.iter().filter(|&&m| m).count())
                .sum();
            let labelled = s.classes.iter().filter(|&&c| c > 0).count();
            assert!(covered <= labelled);
        }
        assert!(counts.contains(&1) && counts.contains(&4), "{counts:?}");
    }

    #[test]
    fn samples_are_deterministic_with_consistent_ground_truth() {
        let a = shape_sample(TRAIN_SEED, 5);
        let b = shape_sample(TRAIN_SEED, 5);
        assert_eq!(a.image, b.image);
        assert_eq!(a.label, b.label);
        for seed in [TRAIN_SEED, VALIDATION_SEED] {
            for i in 0..40 {
                let s = shape_sample(seed, i);
                let area = s.mask.iter().filter(|&&m| m).count();
                assert!(area > 150, "shape too small: {area}");
                let [x0, y0, x1, y1] = s.bbox;
                assert!(x0 < x1 && y0 < y1 && x1 <= SHAPE_IMAGE_SIZE && y1 <= SHAPE_IMAGE_SIZE);
                // Every mask pixel lies in the box.
                for (i, _) in s.mask.iter().enumerate().filter(|(_, m)| **m) {
                    let (x, y) = (i as u32 % SHAPE_IMAGE_SIZE, i as u32 / SHAPE_IMAGE_SIZE);
                    assert!(x >= x0 && x < x1 && y >= y0 && y < y1);
                }
            }
        }
        let labels: std::collections::HashSet<usize> =
            (0..40).map(|i| shape_sample(TRAIN_SEED, i).label).collect();
        assert_eq!(labels.len(), SHAPE_CLASSES.len(), "all classes appear");
    }
}
