//! Heatmaps to pictures: colorize, overlay on the image, signed (diverging) views.

use image::{Rgb, RgbImage};

use crate::Colormap;

/// A single map on the host: `height x width` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Map {
    /// Wrap values; panics if the count does not match the size (a programming error).
    pub fn new(values: Vec<f32>, width: u32, height: u32) -> Self {
        assert_eq!(
            values.len(),
            (width * height) as usize,
            "map values and size disagree"
        );
        Self {
            values,
            width,
            height,
        }
    }

    /// Bilinear resize with half-pixel centres (align_corners = false), a triangle
    /// filter widened to the ratio when shrinking: the `image` crate's `Triangle`,
    /// weights and order of sums alike, but without its clamp of float pixels to
    /// `[0, 1]`, which erased every negative value of a signed map.
    pub fn resized(&self, width: u32, height: u32) -> Map {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 {
            return Map::new(vec![0.0; width as usize * height as usize], width, height);
        }
        // Heights first, then widths, as the image crate samples.
        let mut tall = vec![0.0f32; w * height as usize];
        for (row, (top, weights)) in tall
            .chunks_exact_mut(w)
            .zip(triangle_taps(self.height, height))
        {
            for (x, out) in row.iter_mut().enumerate() {
                let mut t = 0.0f32;
                for (i, weight) in weights.iter().enumerate() {
                    t += self.values[(top + i) * w + x] * weight;
                }
                *out = t;
            }
        }
        let columns = triangle_taps(self.width, width);
        let mut values = Vec::with_capacity(width as usize * height as usize);
        for row in tall.chunks_exact(w) {
            values.extend(columns.iter().map(|(left, weights)| {
                let mut t = 0.0f32;
                for (i, weight) in weights.iter().enumerate() {
                    t += row[left + i] * weight;
                }
                t
            }));
        }
        Map::new(values, width, height)
    }

    /// Min-max normalised copy (a constant map becomes zeros).
    pub fn normalized(&self) -> Map {
        let (min, max) = self
            .values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let range = max - min;
        let values = self
            .values
            .iter()
            .map(|&v| if range > 0.0 { (v - min) / range } else { 0.0 })
            .collect();
        Map::new(values, self.width, self.height)
    }
}

/// Per output pixel of `to` resampled from `from`: the first source pixel and the
/// normalised triangle weights from it on (the `image` crate's `Triangle`, computed
/// the same way in f32).
fn triangle_taps(from: u32, to: u32) -> Vec<(usize, Vec<f32>)> {
    let ratio = from as f32 / to as f32;
    let stretch = if ratio < 1.0 { 1.0 } else { ratio };
    let support = stretch;
    (0..to)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, from as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, from as i64);
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| {
                    let x = ((i as f32 - centre) / stretch).abs();
                    if x < 1.0 { 1.0 - x } else { 0.0 }
                })
                .collect();
            let mut sum = 0.0f32;
            for w in &weights {
                sum += w;
            }
            for w in &mut weights {
                *w /= sum;
            }
            (left as usize, weights)
        })
        .collect()
}

/// Colour a map whose values lie in `[0, 1]`.
pub fn colorize(map: &Map, colormap: Colormap) -> RgbImage {
    RgbImage::from_fn(map.width, map.height, |x, y| {
        Rgb(colormap.rgb(map.values[(y * map.width + x) as usize]))
    })
}

/// Blend a colored map over an image: `(1 - alpha) * image + alpha * color`, the map
/// resized to the image first.
pub fn overlay(image: &RgbImage, map: &Map, colormap: Colormap, alpha: f32) -> RgbImage {
    let alpha = alpha.clamp(0.0, 1.0);
    let heat = map.resized(image.width(), image.height());
    // One pass over the pixels, each coloured as it is blended (no coloured copy).
    let mut blended = image.clone();
    for (pixel, &value) in blended.pixels_mut().zip(&heat.values) {
        let h = colormap.rgb(value);
        for (a, h) in pixel.0.iter_mut().zip(h) {
            *a = round_to_u8((1.0 - alpha) * *a as f32 + alpha * h as f32);
        }
    }
    blended
}

/// `v.round().clamp(0.0, 255.0) as u8` (halves away from zero) for `v >= 0` or NaN,
/// without `roundf`, a library call per channel on x86-64's baseline.
fn round_to_u8(v: f32) -> u8 {
    // `v - whole` is exact: `whole <= v < 2 * whole` once `v >= 1` (Sterbenz), else `whole` is 0.
    let whole = v as u32;
    let rounded = whole + (v - whole as f32 >= 0.5) as u32;
    rounded.min(255) as u8
}

/// A signed map on a diverging colormap, symmetric around zero (white), scaled by the
/// largest magnitude: negative evidence blue, positive red.
pub fn diverging(map: &Map) -> RgbImage {
    let scale = map
        .values
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let centred = Map::new(
        map.values.iter().map(|v| 0.5 + 0.5 * v / scale).collect(),
        map.width,
        map.height,
    );
    colorize(&centred, Colormap::RedBlue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_is_the_image_crates_triangle_without_its_clamp() {
        use image::{ImageBuffer, Luma};
        let theirs = |map: &Map, w: u32, h: u32| -> Vec<f32> {
            let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
                ImageBuffer::from_raw(map.width, map.height, map.values.clone()).unwrap();
            image::imageops::resize(&buffer, w, h, image::imageops::FilterType::Triangle).into_raw()
        };
        for (w, h) in [(1, 1), (4, 4), (7, 3), (14, 14), (128, 96)] {
            // Values in [0, 1]: the same bits, up and down, odd ratios.
            let unit = Map::new(
                (0..w * h)
                    .map(|i| ((i * 37) % 101) as f32 / 100.0)
                    .collect(),
                w,
                h,
            );
            for (tw, th) in [(1, 1), (192, 192), (w * 3, h), (5, 300), (w, 2 * h)] {
                assert_eq!(
                    unit.resized(tw, th).values,
                    theirs(&unit, tw, th),
                    "{w}x{h} to {tw}x{th}"
                );
            }
            // A signed map keeps its negatives and its values above 1: the same as the
            // image crate's on the map moved into [0, 1] and back.
            let signed = Map::new(unit.values.iter().map(|v| 4.0 * v - 2.0).collect(), w, h);
            let ours = signed.resized(192, 160);
            let shifted = theirs(&unit, 192, 160);
            for (a, b) in ours.values.iter().zip(shifted) {
                assert!(
                    (a - (4.0 * b - 2.0)).abs() < 1e-5,
                    "{a} vs {}",
                    4.0 * b - 2.0
                );
            }
            if w * h > 1 {
                assert!(ours.values.iter().any(|&v| v < -1.0), "{w}x{h}");
                assert!(ours.values.iter().any(|&v| v > 1.0), "{w}x{h}");
            }
        }
    }

    #[test]
    fn rounding_to_bytes_is_the_standard_library_s() {
        // Blends of every byte with every fifth byte at 69 alphas, and the values
        // around each half.
        let mut values: Vec<f32> = vec![0.0, 0.5, 254.5, 255.0, 255.00002, 300.0, f32::NAN];
        for k in 0..=255u32 {
            let half = k as f32 + 0.5;
            values.extend([half, half.next_down(), half.next_up(), k as f32]);
        }
        for alpha in (0..=64)
            .map(|i| i as f32 / 64.0)
            .chain([0.1, 0.3, 0.45, 0.7])
        {
            for a in 0..=255u8 {
                for h in (0..=255u8).step_by(5) {
                    values.push((1.0 - alpha) * a as f32 + alpha * h as f32);
                }
            }
        }
        for v in values {
            assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    #[test]
    fn overlay_blends_with_alpha() {
        let image = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
        let map = Map::new(vec![1.0; 4], 2, 2);
        let out = overlay(&image, &map, Colormap::Gray, 0.25);
        // Gray at 1.0 is white: 0.75 * 100 + 0.25 * 255 = 138.75.
        assert_eq!(out.get_pixel(0, 0).0, [139, 139, 139]);
        assert_eq!(out.dimensions(), (4, 4));
        assert_eq!(overlay(&image, &map, Colormap::Gray, 0.0), image);
    }

    #[test]
    fn resize_uses_half_pixel_centres() {
        // As torch's bilinear with align_corners=False: [0, 1] -> [0, .25, .75, 1].
        let map = Map::new(vec![0.0, 1.0], 2, 1).resized(4, 1);
        for (a, e) in map.values.iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((a - e).abs() < 1e-6, "{:?}", map.values);
        }
    }

    #[test]
    fn diverging_is_white_at_zero_and_symmetric() {
        let map = Map::new(vec![-2.0, 0.0, 2.0], 3, 1);
        let image = diverging(&map);
        let [neg, zero, pos] = [0, 1, 2].map(|x| image.get_pixel(x, 0).0);
        assert!(neg[2] > neg[0] && pos[0] > pos[2], "{neg:?} {pos:?}");
        assert!(zero.iter().all(|&c| c > 230), "{zero:?}");
    }

    #[test]
    fn normalized_handles_constant_maps() {
        assert_eq!(
            Map::new(vec![3.0; 4], 2, 2).normalized().values,
            vec![0.0; 4]
        );
        assert_eq!(
            Map::new(vec![1.0, 3.0], 2, 1).normalized().values,
            vec![0.0, 1.0]
        );
    }
}
