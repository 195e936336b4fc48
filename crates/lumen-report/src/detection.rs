//! Detection figures: boxes with their label and score drawn on the image, and one
//! panel per explained box with its map.

use image::{Rgb, RgbImage};

use crate::colormap::Colormap;
use crate::figure::{
    Layout, Panel, colorbar, draw_text, enlarge, grid, paste, text_width, title_bar,
};
use crate::overlay::{Map, overlay};
use crate::segmentation::class_color;

/// A box to draw: `[x1, y1, x2, y2]` in the image's pixels, its class (for the colour)
/// and its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct DrawnBox {
    /// Corners in image pixels.
    pub bbox: [f32; 4],
    /// Class index (colour).
    pub class: usize,
    /// Caption (`label 0.87`).
    pub caption: String,
}

/// Draw boxes (2-pixel outlines in their class colour, caption on a filled strip) on
/// a copy of `image`; `scale` maps box coordinates to the image's pixels.
pub fn draw_boxes(image: &RgbImage, boxes: &[DrawnBox], scale: f32) -> RgbImage {
    let mut out = image.clone();
    let (w, h) = (out.width() as i64, out.height() as i64);
    for b in boxes {
        // Class 0 is an object class here: skip the background grey.
        let color = class_color(b.class + 1);
        let [x1, y1, x2, y2] = b.bbox.map(|v| (v * scale).round() as i64);
        let mut put = |x: i64, y: i64| {
            if (0..w).contains(&x) && (0..h).contains(&y) {
                out.put_pixel(x as u32, y as u32, Rgb(color));
            }
        };
        for t in 0..2 {
            for x in x1..=x2 {
                put(x, y1 + t);
                put(x, y2 - t);
            }
            for y in y1..=y2 {
                put(x1 + t, y);
                put(x2 - t, y);
            }
        }
        let size = 12.0;
        let tw = text_width(&b.caption, size).ceil() as i64 + 4;
        let ty = (y1 - 15).max(0);
        // A box near the right edge keeps its caption whole: the strip moves left.
        let tx = x1.min(w - tw).max(0);
        for y in ty..(ty + 15).min(h) {
            for x in tx..(tx + tw).min(w) {
                out.put_pixel(x as u32, y as u32, Rgb(color));
            }
        }
        draw_text(
            &mut out,
            &b.caption,
            (tx + 2) as f32,
            ty as f32 + 1.0,
            size,
            [255, 255, 255],
        );
    }
    out
}

/// `image` enlarged as the figures enlarge it (to at least 256 pixels a side, by an
/// integer factor) with `boxes` (in `image`'s pixels) drawn at that size, so that
/// outlines and captions keep their size on small inputs.
pub fn outline_boxes(image: &RgbImage, boxes: &[DrawnBox]) -> RgbImage {
    let enlarged = enlarge(image, 256);
    let scale = enlarged.width() as f32 / image.width().max(1) as f32;
    draw_boxes(&enlarged, boxes, scale)
}

/// The detections on the image, then one panel per explained box: its map over the
/// image with that box drawn; a colorbar under the maps. `boxes` are in the
/// original's pixels.
pub fn detection_figure(
    original: &RgbImage,
    boxes: &[DrawnBox],
    explained: &[(usize, Map)],
    colormap: Colormap,
    alpha: f32,
    title: &str,
) -> RgbImage {
    let enlarged = enlarge(original, 256);
    let scale = enlarged.width() as f32 / original.width().max(1) as f32;
    let mut panels = vec![Panel::new(
        "detections",
        draw_boxes(&enlarged, boxes, scale),
    )];
    for (index, map) in explained {
        let b = &boxes[*index];
        let picture = draw_boxes(
            &overlay(&enlarged, map, colormap, alpha),
            std::slice::from_ref(b),
            scale,
        );
        panels.push(Panel::new(b.caption.clone(), picture));
    }
    let columns = panels.len().min(4);
    let body = grid(&panels, Layout::Grid(columns));
    let bar = colorbar(colormap, enlarged.width(), 0.0, 1.0);
    let mut canvas = RgbImage::from_pixel(
        body.width(),
        body.height() + bar.height() + 4,
        Rgb([255, 255, 255]),
    );
    paste(&mut canvas, &body, 0, 0);
    paste(&mut canvas, &bar, 8, (body.height() + 2) as i64);
    title_bar(title, &canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small image is enlarged as the figures enlarge it, and the box is drawn at that
    /// scale in its class colour: its corner lands on the scaled corner.
    #[test]
    fn outlines_are_drawn_at_the_enlarged_scale() {
        let image = RgbImage::from_pixel(64, 48, Rgb([0, 0, 0]));
        let drawn = outline_boxes(
            &image,
            &[DrawnBox {
                bbox: [10.0, 20.0, 30.0, 40.0],
                class: 2,
                caption: String::new(),
            }],
        );
        // 48 px to at least 256: a factor of 6.
        assert_eq!(drawn.dimensions(), (384, 288));
        let color = Rgb(class_color(3));
        assert_eq!(*drawn.get_pixel(60, 180), color);
        assert_eq!(*drawn.get_pixel(180, 240), color);
        assert_eq!(*drawn.get_pixel(120, 200), Rgb([0, 0, 0]));
        // A caption of a box at the right edge moves left, whole, onto the image.
        let caption = "cross 0.91".to_string();
        let edge = outline_boxes(
            &image,
            &[DrawnBox {
                bbox: [60.0, 20.0, 64.0, 30.0],
                class: 2,
                caption: caption.clone(),
            }],
        );
        let strip = text_width(&caption, 12.0).ceil() as u32 + 4;
        let (w, y) = (edge.width(), 20 * 6 - 15);
        assert_eq!(*edge.get_pixel(w - strip, y), color);
        assert_eq!(*edge.get_pixel(w - 1, y), color);
    }
}
