//! Segmentation figures: a class map drawn with a categorical palette and its legend,
//! beside the explanation and the uncertainty map.

use image::{Rgb, RgbImage};

use crate::colormap::Colormap;
use crate::figure::{Layout, Panel, colorbar, draw_text, enlarge, grid, stack, title_bar};
use crate::overlay::{Map, colorize, overlay};

/// The colour of a class: background (0) dark grey, then Tableau 10, cycling.
pub fn class_color(class: usize) -> [u8; 3] {
    if class == 0 {
        return [40, 40, 40];
    }
    let c = colorous::TABLEAU10[(class - 1) % colorous::TABLEAU10.len()];
    [c.r, c.g, c.b]
}

/// A class map on a `grid` (row-major) drawn over `image` with opacity `alpha`, each
/// cell as a block (nearest neighbour: no class is invented between two cells). A map at
/// the input size is drawn pixel for pixel, enlarged as the image is.
///
/// The class colours are blended over the image's luminance, not its colours: a red
/// class over a cyan shape would otherwise come out grey, a colour the legend does not
/// have. The picture's structure stays, its hue is the class's.
pub fn class_overlay(
    image: &RgbImage,
    classes: &[usize],
    grid: [usize; 2],
    alpha: f32,
) -> RgbImage {
    let (w, h) = image.dimensions();
    let [gh, gw] = grid;
    let mut out = image.clone();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let gy = (y as usize * gh / h as usize).min(gh - 1);
        let gx = (x as usize * gw / w as usize).min(gw - 1);
        let color = class_color(classes[gy * gw + gx]);
        let [r, g, b] = pixel.0.map(f32::from);
        // ITU-R BT.601 luma, what `image`'s grayscale conversion uses.
        let luma = 0.299 * r + 0.587 * g + 0.114 * b;
        for (p, c) in pixel.0.iter_mut().zip(color) {
            *p = (luma * (1.0 - alpha) + c as f32 * alpha).round() as u8;
        }
    }
    out
}

/// A legend: a colour swatch and a label per entry, wrapped to `width` pixels.
pub fn class_legend(entries: &[(usize, String)], width: u32) -> RgbImage {
    let (size, row, swatch) = (13.0, 20u32, 12u32);
    let widths: Vec<u32> = entries
        .iter()
        .map(|(_, label)| swatch + 6 + crate::figure::text_width(label, size).ceil() as u32 + 14)
        .collect();
    let mut rows = 1u32;
    let mut x = 0u32;
    for w in &widths {
        if x > 0 && x + w > width {
            rows += 1;
            x = 0;
        }
        x += w;
    }
    let mut canvas = RgbImage::from_pixel(width.max(1), rows * row, Rgb([255, 255, 255]));
    let (mut x, mut y) = (0u32, 0u32);
    for ((class, label), w) in entries.iter().zip(widths) {
        if x > 0 && x + w > width {
            x = 0;
            y += row;
        }
        let color = Rgb(class_color(*class));
        for dy in 0..swatch {
            for dx in 0..swatch {
                if x + dx < canvas.width() {
                    canvas.put_pixel(x + dx, y + 4 + dy, color);
                }
            }
        }
        draw_text(
            &mut canvas,
            label,
            (x + swatch + 6) as f32,
            y as f32 + 2.0,
            size,
            [20, 20, 20],
        );
        x += w;
    }
    canvas
}

/// What a segmentation figure shows besides the explanation.
pub struct SegmentationView<'a> {
    /// Predicted class per cell of `grid`, row-major.
    pub classes: &'a [usize],
    /// The grid `[h, w]` the classes are on: the input size for per-pixel classes
    /// (`SegmentationPrediction::pixel_classes`), or the model's output grid.
    pub grid: [usize; 2],
    /// The classes present with their labels, for the legend.
    pub legend: &'a [(usize, String)],
    /// An uncertainty map at any size with its name and value range (low, high).
    pub uncertainty: Option<(&'a str, &'a Map, [f32; 2])>,
}

/// The class map over the image (enlarged as the figures enlarge it) with its legend
/// underneath: a report's picture of a segmentation.
pub fn class_map_picture(
    original: &RgbImage,
    classes: &[usize],
    grid: [usize; 2],
    legend: &[(usize, String)],
) -> RgbImage {
    let original = enlarge(original, 256);
    let segmented = class_overlay(&original, classes, grid, 0.55);
    stack(&segmented, &class_legend(legend, original.width()))
}

/// original | segmentation (palette, legend) | explanation overlay (colorbar) |
/// uncertainty (colorbar), titled.
pub fn segmentation_figure(
    original: &RgbImage,
    view: &SegmentationView,
    map: &Map,
    colormap: Colormap,
    alpha: f32,
    title: &str,
) -> RgbImage {
    let original = enlarge(original, 192);
    let (w, h) = original.dimensions();
    let segmented = class_overlay(&original, view.classes, view.grid, 0.55);
    let mut panels = vec![
        Panel::new("original", original.clone()),
        Panel::new(
            "segmentation",
            stack(&segmented, &class_legend(view.legend, w)),
        ),
        Panel::new(
            "explanation",
            stack(
                &overlay(&original, map, colormap, alpha),
                &colorbar(colormap, w, 0.0, 1.0),
            ),
        ),
    ];
    if let Some((name, uncertainty, [low, high])) = view.uncertainty {
        let span = (high - low).max(f32::MIN_POSITIVE);
        let scaled = Map::new(
            uncertainty
                .values
                .iter()
                .map(|v| ((v - low) / span).clamp(0.0, 1.0))
                .collect(),
            uncertainty.width,
            uncertainty.height,
        )
        .resized(w, h);
        panels.push(Panel::new(
            name,
            stack(
                &colorize(&scaled, Colormap::Viridis),
                &colorbar(Colormap::Viridis, w, low, high),
            ),
        ));
    }
    title_bar(title, &grid(&panels, Layout::Horizontal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_colours_keep_their_hue_over_any_picture() {
        // A cyan picture under a class drawn red (Tableau's third colour): blending
        // with the colours gives a grey-cyan, with the luminance a red.
        let cyan = RgbImage::from_pixel(4, 2, Rgb([0, 230, 230]));
        let drawn = class_overlay(&cyan, &[0, 3], [1, 2], 0.55);
        let [r, g, b] = drawn.get_pixel(3, 0).0.map(i32::from);
        let [cr, cg, cb] = class_color(3).map(i32::from);
        assert!(cr > cg && cr > cb, "class 3 is red: {:?}", class_color(3));
        assert!(r > g + 40 && r > b + 40, "{:?}", [r, g, b]);
        // The background (dark grey) over cyan stays grey: no hue of its own.
        let [r, g, b] = drawn.get_pixel(0, 0).0.map(i32::from);
        assert!(r == g && g == b, "{:?}", [r, g, b]);
        // The picture's structure stays: a brighter pixel stays brighter.
        let mut two = RgbImage::from_pixel(2, 1, Rgb([40, 40, 40]));
        two.put_pixel(1, 0, Rgb([220, 220, 220]));
        let drawn = class_overlay(&two, &[1, 1], [1, 2], 0.55);
        assert!(drawn.get_pixel(1, 0).0[0] > drawn.get_pixel(0, 0).0[0] + 50);
    }
}
