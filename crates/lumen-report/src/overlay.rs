//! Heatmaps to pictures: colorize, overlay on the image, signed (diverging) views.

use image::imageops::FilterType;
use image::{ImageBuffer, Luma, Rgb, RgbImage};

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

    /// Bilinear resize with half-pixel centres (align_corners = false).
    pub fn resized(&self, width: u32, height: u32) -> Map {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(self.width, self.height, self.values.clone())
                .expect("size checked");
        let resized = image::imageops::resize(&buffer, width, height, FilterType::Triangle);
        Map::new(resized.into_raw(), width, height)
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
    let heat = colorize(&map.resized(image.width(), image.height()), colormap);
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let a = image.get_pixel(x, y).0;
        let h = heat.get_pixel(x, y).0;
        Rgb(std::array::from_fn(|c| {
            ((1.0 - alpha) * a[c] as f32 + alpha * h[c] as f32)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
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
