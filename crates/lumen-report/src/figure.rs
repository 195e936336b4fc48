//! PNG figures: titled panels laid out in a row, a column or a grid, with text drawn
//! in DejaVu Sans (bundled, see assets/DejaVuSans-LICENSE.txt).

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

use crate::Colormap;
use crate::overlay::{Map, colorize, diverging, overlay};

const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: [u8; 3] = [20, 20, 20];
/// Space around and between panels, in pixels.
pub const MARGIN: u32 = 8;
/// Height of a panel's title strip.
pub const TITLE_HEIGHT: u32 = 22;

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_BYTES).expect("bundled font parses")
}

/// Width in pixels of `text` at `size`.
pub fn text_width(text: &str, size: f32) -> f32 {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// Draw `text` with its top-left corner at (`x`, `y`), anti-aliased, clipped to the canvas.
pub fn draw_text(canvas: &mut RgbImage, text: &str, x: f32, y: f32, size: f32, color: [u8; 3]) {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(size));
    let baseline = y + scaled.ascent();
    let mut caret = x;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            caret += scaled.kern(p, id);
        }
        let glyph =
            id.with_scale_and_position(PxScale::from(size), ab_glyph::point(caret, baseline));
        caret += scaled.h_advance(id);
        previous = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + gx as i64;
                let py = bounds.min.y as i64 + gy as i64;
                if px < 0 || py < 0 || px >= canvas.width() as i64 || py >= canvas.height() as i64 {
                    return;
                }
                let pixel = canvas.get_pixel_mut(px as u32, py as u32);
                for (under, ink) in pixel.0.iter_mut().zip(color) {
                    *under =
                        (*under as f32 + (ink as f32 - *under as f32) * coverage).round() as u8;
                }
            });
        }
    }
}

/// A titled picture in a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title drawn above the picture.
    pub title: String,
    /// The picture.
    pub image: RgbImage,
}

impl Panel {
    /// Shorthand constructor.
    pub fn new(title: impl Into<String>, image: RgbImage) -> Self {
        Self {
            title: title.into(),
            image,
        }
    }
}

/// How panels are arranged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// One row.
    #[default]
    Horizontal,
    /// One column.
    Vertical,
    /// Rows of this many panels.
    Grid(usize),
}

impl Layout {
    /// Parse `horizontal`, `vertical` or `grid` (grid picks a near-square layout for `panels`).
    pub fn from_name(name: &str, panels: usize) -> Result<Self, String> {
        match name {
            "horizontal" => Ok(Self::Horizontal),
            "vertical" => Ok(Self::Vertical),
            "grid" => Ok(Self::Grid((panels as f64).sqrt().ceil().max(1.0) as usize)),
            other => Err(format!(
                "unknown layout `{other}`; valid: horizontal, vertical, grid"
            )),
        }
    }
}

/// Lay panels out with their titles. Panels are drawn at their own size in cells as
/// large as the largest panel.
pub fn grid(panels: &[Panel], layout: Layout) -> RgbImage {
    let columns = match layout {
        Layout::Horizontal => panels.len().max(1),
        Layout::Vertical => 1,
        Layout::Grid(columns) => columns.max(1),
    };
    let rows = panels.len().div_ceil(columns).max(1);
    let cell_w = panels.iter().map(|p| p.image.width()).max().unwrap_or(1);
    let cell_h = panels.iter().map(|p| p.image.height()).max().unwrap_or(1) + TITLE_HEIGHT;
    let width = MARGIN + columns as u32 * (cell_w + MARGIN);
    let height = MARGIN + rows as u32 * (cell_h + MARGIN);
    let mut canvas = RgbImage::from_pixel(width, height, BACKGROUND);
    for (i, panel) in panels.iter().enumerate() {
        let x0 = MARGIN + (i % columns) as u32 * (cell_w + MARGIN);
        let y0 = MARGIN + (i / columns) as u32 * (cell_h + MARGIN);
        let size = 14.0;
        let title = fit(&panel.title, cell_w as f32, size);
        let tx = x0 as f32 + (cell_w as f32 - text_width(&title, size)).max(0.0) / 2.0;
        draw_text(&mut canvas, &title, tx, y0 as f32 + 2.0, size, INK);
        let ix = x0 + (cell_w - panel.image.width()) / 2;
        paste(
            &mut canvas,
            &panel.image,
            ix as i64,
            (y0 + TITLE_HEIGHT) as i64,
        );
    }
    canvas
}

/// Shorten `text` with an ellipsis until it fits `width` pixels.
fn fit(text: &str, width: f32, size: f32) -> String {
    if text_width(text, size) <= width {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "…";
        if text_width(&candidate, size) <= width {
            return candidate;
        }
    }
    String::new()
}

/// Most lines of a figure title; a longer title's last line ends in an ellipsis.
const TITLE_LINES: usize = 3;

/// A figure with a title strip above `body`: 28 px for a title that fits one line; a
/// longer one is wrapped at spaces (up to [`TITLE_LINES`] centred lines, 20 px each
/// more) rather than cut, since its end says what is explained (a segmentation's
/// region, a detection's boxes).
pub fn title_bar(title: &str, body: &RgbImage) -> RgbImage {
    let (size, line) = (16.0, 20u32);
    let width = body.width() as f32 - 2.0 * MARGIN as f32;
    let mut lines = wrap(title, width, size, "");
    if lines.len() > TITLE_LINES {
        let rest = lines.split_off(TITLE_LINES - 1).join(" ");
        // Force the ellipsis: the rest fits only when cut.
        lines.push(fit(&(rest + " …"), width, size));
    }
    let strip = 28 + line * (lines.len() as u32 - 1);
    let mut canvas = RgbImage::from_pixel(body.width(), body.height() + strip, BACKGROUND);
    for (k, text) in lines.iter().enumerate() {
        let x = (body.width() as f32 - text_width(text, size)).max(0.0) / 2.0;
        draw_text(
            &mut canvas,
            text,
            x,
            6.0 + (k as u32 * line) as f32,
            size,
            INK,
        );
    }
    paste(&mut canvas, body, 0, strip as i64);
    canvas
}

/// `text` in lines of at most `width` pixels, broken at spaces, continuation lines
/// starting with `indent`; a word wider than a line is cut with an ellipsis. Always at
/// least one line.
fn wrap(text: &str, width: f32, size: f32, indent: &str) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    let mut current = String::new();
    for word in text.split(' ') {
        let candidate = match current.is_empty() {
            true if lines.is_empty() => word.to_string(),
            true => format!("{indent}{word}"),
            false => format!("{current} {word}"),
        };
        if text_width(&candidate, size) <= width || current.is_empty() {
            current = candidate;
        } else {
            lines.push(std::mem::take(&mut current));
            current = format!("{indent}{word}");
        }
    }
    lines.push(current);
    lines.into_iter().map(|l| fit(&l, width, size)).collect()
}

/// Scale a small picture up (nearest neighbour keeps pixels crisp) to at least `min_side`.
pub(crate) fn enlarge(image: &RgbImage, min_side: u32) -> RgbImage {
    let side = image.width().min(image.height()).max(1);
    if side >= min_side {
        return image.clone();
    }
    let factor = min_side.div_ceil(side);
    nearest(image, image.width() * factor, image.height() * factor)
}

/// `image` resized to `width` x `height` by nearest neighbour: the pixels the `image`
/// crate's `Nearest` filter picks (`floor((x + 0.5) * from / to)` in f32), without
/// its per-pixel weights and rounding (a fifth of a feature scan's time went there).
pub(crate) fn nearest(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let indices = |from: u32, to: u32| -> Vec<usize> {
        let ratio = from as f32 / to as f32;
        (0..to)
            .map(|x| (((x as f32 + 0.5) * ratio).floor() as u32).min(from - 1) as usize)
            .collect()
    };
    if image.width() == 0 || image.height() == 0 {
        return RgbImage::new(width, height);
    }
    let (columns, rows) = (
        indices(image.width(), width),
        indices(image.height(), height),
    );
    let source = image.as_raw();
    let stride = image.width() as usize * 3;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for &row in &rows {
        let line = &source[row * stride..(row + 1) * stride];
        for &column in &columns {
            pixels.extend_from_slice(&line[column * 3..column * 3 + 3]);
        }
    }
    RgbImage::from_raw(width, height, pixels).expect("width x height pixels")
}

/// `top` copied into `canvas` with its corner at `(x, y)`, clipped to the canvas: what
/// `image::imageops::replace` does, a row at a time instead of a bounds-checked pixel
/// at a time (a tenth of an `explain` run's time went there).
pub(crate) fn paste(canvas: &mut RgbImage, top: &RgbImage, x: i64, y: i64) {
    let (cw, ch) = (canvas.width() as i64, canvas.height() as i64);
    let (tw, th) = (top.width() as i64, top.height() as i64);
    let (left, right) = (x.max(0), (x + tw).min(cw));
    let (first, last) = (y.max(0), (y + th).min(ch));
    if left >= right || first >= last {
        return;
    }
    let (canvas_stride, top_stride) = (cw as usize * 3, tw as usize * 3);
    let length = (right - left) as usize * 3;
    let source = top.as_raw();
    let target: &mut [u8] = canvas;
    for row in first..last {
        let from = (row - y) as usize * top_stride + (left - x) as usize * 3;
        let to = row as usize * canvas_stride + left as usize * 3;
        target[to..to + length].copy_from_slice(&source[from..from + length]);
    }
}

/// `top` above `bottom`, left-aligned, a small gap between.
pub(crate) fn stack(top: &RgbImage, bottom: &RgbImage) -> RgbImage {
    let width = top.width().max(bottom.width());
    let mut canvas = RgbImage::from_pixel(width, top.height() + 4 + bottom.height(), BACKGROUND);
    paste(&mut canvas, top, 0, 0);
    paste(&mut canvas, bottom, 0, (top.height() + 4) as i64);
    canvas
}

/// The single-explanation figure: original | heatmap (with its colorbar) | overlay,
/// titled.
pub fn explanation_figure(
    original: &RgbImage,
    map: &Map,
    colormap: Colormap,
    alpha: f32,
    title: &str,
) -> RgbImage {
    let original = enlarge(original, 192);
    let (w, h) = original.dimensions();
    let heat = colorize(&map.resized(w, h), colormap);
    let panels = [
        Panel::new("original", original.clone()),
        Panel::new("heatmap", stack(&heat, &colorbar(colormap, w, 0.0, 1.0))),
        Panel::new("overlay", overlay(&original, map, colormap, alpha)),
    ];
    title_bar(title, &grid(&panels, Layout::Horizontal))
}

/// Method comparison: the original, then one overlay per method, titled.
pub fn comparison_figure(
    original: &RgbImage,
    maps: &[(String, Map)],
    colormap: Colormap,
    alpha: f32,
    layout: Layout,
    title: &str,
) -> RgbImage {
    let original = enlarge(original, 160);
    let mut panels = vec![Panel::new("original", original.clone())];
    panels.extend(
        maps.iter()
            .map(|(name, map)| Panel::new(name.clone(), overlay(&original, map, colormap, alpha))),
    );
    // Every overlay shares the 0..1 scale: one colorbar under the panels.
    let body = grid(&panels, layout);
    let bar = colorbar(colormap, original.width(), 0.0, 1.0);
    let mut canvas = RgbImage::from_pixel(
        body.width(),
        body.height() + bar.height() + MARGIN,
        BACKGROUND,
    );
    paste(&mut canvas, &body, 0, 0);
    paste(&mut canvas, &bar, MARGIN as i64, body.height() as i64);
    title_bar(title, &canvas)
}

/// The polarity view of a signed attribution map (the guide's `visualize_polarity`):
/// original | signed (blue negative, red positive) | positive | negative | absolute.
pub fn polarity_figure(
    original: &RgbImage,
    signed: &Map,
    colormap: Colormap,
    alpha: f32,
    title: &str,
) -> RgbImage {
    let original = enlarge(original, 160);
    let (w, h) = original.dimensions();
    let signed = signed.resized(w, h);
    let scale = signed
        .values
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let part =
        |f: fn(f32) -> f32| Map::new(signed.values.iter().map(|&v| f(v) / scale).collect(), w, h);
    let zero_bar = signed_colorbar(w, scale);
    let panels = [
        Panel::new("original", original.clone()),
        Panel::new("signed", stack(&diverging(&signed), &zero_bar)),
        Panel::new(
            "positive",
            overlay(&original, &part(|v| v.max(0.0)), colormap, alpha),
        ),
        Panel::new(
            "negative",
            overlay(&original, &part(|v| (-v).max(0.0)), colormap, alpha),
        ),
        Panel::new(
            "absolute",
            overlay(&original, &part(f32::abs), colormap, alpha),
        ),
    ];
    title_bar(title, &grid(&panels, Layout::Horizontal))
}

/// The signed view's colorbar: blue `-scale`, white at a marked `0`, red `+scale`.
fn signed_colorbar(width: u32, scale: f32) -> RgbImage {
    let mut bar = colorbar(Colormap::RedBlue, width, -scale, scale);
    let middle = bar.width() / 2;
    for y in 0..14 {
        bar.put_pixel(middle, y, Rgb(INK));
    }
    let x = middle as f32 - text_width("0", 12.0) / 2.0;
    draw_text(&mut bar, "0", x, 13.0, 12.0, INK);
    bar
}

/// `figure` with `notes` written under it in a warning colour, each wrapped at spaces
/// to the width (a narrow figure, a detection's two panels say, would otherwise cut
/// the numbers off); unchanged without notes.
pub fn with_notes(figure: &RgbImage, notes: &[String]) -> RgbImage {
    if notes.is_empty() {
        return figure.clone();
    }
    let (size, line) = (13.0, 18u32);
    let width = figure.width().saturating_sub(2 * MARGIN) as f32;
    let lines: Vec<String> = notes
        .iter()
        .flat_map(|n| wrap(n, width, size, "  "))
        .collect();
    let height = figure.height() + MARGIN + line * lines.len() as u32;
    let mut canvas = RgbImage::from_pixel(figure.width(), height, BACKGROUND);
    paste(&mut canvas, figure, 0, 0);
    for (k, text) in lines.iter().enumerate() {
        let y = figure.height() + k as u32 * line;
        draw_text(&mut canvas, text, MARGIN as f32, y as f32, size, CAUTION);
    }
    canvas
}

/// Colour of caution notes under figures.
const CAUTION: [u8; 3] = [170, 40, 20];

/// A horizontal colorbar `width` pixels wide with its two end values written under it.
pub fn colorbar(colormap: Colormap, width: u32, low: f32, high: f32) -> RgbImage {
    let (bar, text) = (12u32, 16u32);
    let mut canvas = RgbImage::from_pixel(width.max(2), bar + text, BACKGROUND);
    for x in 0..canvas.width() {
        let color = colormap.rgb(x as f32 / (canvas.width() - 1) as f32);
        for y in 0..bar {
            canvas.put_pixel(x, y, Rgb(color));
        }
    }
    let (lo, hi) = (format!("{low:.3}"), format!("{high:.3}"));
    draw_text(&mut canvas, &lo, 0.0, bar as f32 + 1.0, 12.0, INK);
    let right = canvas.width() as f32 - text_width(&hi, 12.0);
    draw_text(
        &mut canvas,
        &hi,
        right.max(0.0),
        bar as f32 + 1.0,
        12.0,
        INK,
    );
    canvas
}

/// Feature maps as a grid of tiles (nearest-neighbour enlarged to `tile` pixels), each
/// titled (channel and value range); with `shared_scale` every tile uses the range of
/// all tiles and one colorbar is drawn under the grid, else each tile is min-max
/// scaled on its own.
pub fn feature_grid(
    title: &str,
    tiles: &[(String, Map)],
    colormap: Colormap,
    shared_scale: bool,
    tile: u32,
) -> RgbImage {
    let (low, high) = tiles
        .iter()
        .flat_map(|(_, m)| m.values.iter())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let panels: Vec<Panel> = tiles
        .iter()
        .map(|(name, map)| {
            let scaled = if shared_scale {
                let range = high - low;
                Map::new(
                    map.values
                        .iter()
                        .map(|&v| if range > 0.0 { (v - low) / range } else { 0.0 })
                        .collect(),
                    map.width,
                    map.height,
                )
            } else {
                map.normalized()
            };
            let picture = nearest(
                &colorize(&scaled, colormap),
                tile,
                tile * map.height / map.width.max(1),
            );
            Panel::new(name.clone(), picture)
        })
        .collect();
    let columns = (panels.len() as f64).sqrt().ceil().max(1.0) as usize;
    let body = grid(&panels, Layout::Grid(columns));
    let body = if shared_scale && low.is_finite() {
        let bar = colorbar(colormap, body.width().saturating_sub(2 * MARGIN), low, high);
        let mut canvas = RgbImage::from_pixel(
            body.width(),
            body.height() + bar.height() + MARGIN,
            BACKGROUND,
        );
        paste(&mut canvas, &body, 0, 0);
        paste(&mut canvas, &bar, MARGIN as i64, body.height() as i64);
        canvas
    } else {
        body
    };
    title_bar(title, &body)
}

/// Titled pictures in rows of `columns` (0: a near-square grid), each enlarged
/// (nearest neighbour) to at least `size` pixels, under one title.
pub fn image_grid(
    title: &str,
    tiles: &[(String, RgbImage)],
    size: u32,
    columns: usize,
) -> RgbImage {
    let panels: Vec<Panel> = tiles
        .iter()
        .map(|(name, picture)| Panel::new(name.clone(), enlarge(picture, size)))
        .collect();
    let columns = if columns == 0 {
        (panels.len() as f64).sqrt().ceil().max(1.0) as usize
    } else {
        columns
    };
    title_bar(title, &grid(&panels, Layout::Grid(columns)))
}

/// A bar chart panel: one labelled bar per `(label, value)`, the value written above.
fn bar_chart(title: &str, bars: &[(String, f64)], width: u32, height: u32) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(width, height, BACKGROUND);
    draw_text(&mut canvas, title, 4.0, 2.0, 14.0, INK);
    let (top, bottom) = (40u32, 24u32);
    let max = bars
        .iter()
        .fold(0f64, |m, (_, v)| m.max(v.abs()))
        .max(1e-12);
    let slot = (width - 8) / bars.len().max(1) as u32;
    let color = Rgb(Colormap::Viridis.rgb(0.35));
    for (i, (label, value)) in bars.iter().enumerate() {
        let bar_height = ((value.abs() / max) * (height - top - bottom) as f64) as u32;
        let x0 = 4 + i as u32 * slot + slot / 6;
        let x1 = 4 + (i as u32 + 1) * slot - slot / 6;
        let y1 = height - bottom;
        for x in x0..x1.min(width) {
            for y in (y1 - bar_height)..y1 {
                canvas.put_pixel(x, y, color);
            }
        }
        let text = format!("{value:.3}");
        let tx = x0 as f32 + ((x1 - x0) as f32 - text_width(&text, 11.0)) / 2.0;
        draw_text(
            &mut canvas,
            &text,
            tx.max(0.0),
            (y1 - bar_height) as f32 - 14.0,
            11.0,
            INK,
        );
        let lx = x0 as f32 + ((x1 - x0) as f32 - text_width(label, 11.0)) / 2.0;
        draw_text(&mut canvas, label, lx.max(0.0), y1 as f32 + 4.0, 11.0, INK);
    }
    canvas
}

/// Statistics of several layers side by side: one bar chart per statistic (AutoTimm's
/// layer comparison figure), `rows` as `(statistic, [(layer, value)])`.
pub fn layer_comparison_figure(title: &str, rows: &[(String, Vec<(String, f64)>)]) -> RgbImage {
    let panels: Vec<Panel> = rows
        .iter()
        .map(|(statistic, bars)| {
            let width = (90 * bars.len() as u32).max(240);
            Panel::new(statistic.clone(), bar_chart("", bars, width, 220))
        })
        .collect();
    title_bar(title, &grid(&panels, Layout::Grid(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paste_copies_what_the_image_crate_replaces() {
        let top = RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8 + 1, y as u8 + 1, 9]));
        // Inside, at every edge, past every edge and wholly outside.
        for (x, y) in [
            (0, 0),
            (3, 2),
            (6, 8),
            (-3, -2),
            (10, 1),
            (-8, 0),
            (2, 13),
            (-7, -5),
        ] {
            let mut ours = RgbImage::from_pixel(12, 10, BACKGROUND);
            let mut theirs = ours.clone();
            paste(&mut ours, &top, x, y);
            image::imageops::replace(&mut theirs, &top, x, y);
            assert_eq!(ours, theirs, "at {x},{y}");
        }
    }

    #[test]
    fn nearest_picks_the_image_crates_pixels() {
        // Every pixel distinct, so a wrong pick shows; up and down, odd ratios.
        for (w, h) in [(1, 1), (3, 5), (7, 7), (13, 4), (28, 28), (128, 96)] {
            let image = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, (x * 31 + y) as u8]));
            for (tw, th) in [(1, 1), (2 * w, 2 * h), (96, 96), (96, 37), (5, 300), (w, h)] {
                let theirs =
                    image::imageops::resize(&image, tw, th, image::imageops::FilterType::Nearest);
                assert_eq!(nearest(&image, tw, th), theirs, "{w}x{h} to {tw}x{th}");
            }
        }
    }

    #[test]
    fn text_is_drawn_with_ink() {
        let mut canvas = RgbImage::from_pixel(120, 30, BACKGROUND);
        draw_text(&mut canvas, "GradCAM 97%", 2.0, 4.0, 16.0, INK);
        let dark = canvas.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 40, "{dark} dark pixels");
        assert!(text_width("GradCAM 97%", 16.0) > 60.0);
    }

    #[test]
    fn figure_sizes_follow_the_layout() {
        let panel = Panel::new("a", RgbImage::new(50, 40));
        let panels = vec![panel; 4];
        let cell = (50 + MARGIN, 40 + TITLE_HEIGHT + MARGIN);
        assert_eq!(
            grid(&panels, Layout::Horizontal).dimensions(),
            (MARGIN + 4 * cell.0, MARGIN + cell.1)
        );
        assert_eq!(
            grid(&panels, Layout::Vertical).dimensions(),
            (MARGIN + cell.0, MARGIN + 4 * cell.1)
        );
        assert_eq!(
            grid(&panels, Layout::Grid(2)).dimensions(),
            (MARGIN + 2 * cell.0, MARGIN + 2 * cell.1)
        );
        assert_eq!(Layout::from_name("grid", 5), Ok(Layout::Grid(3)));
    }

    #[test]
    fn polarity_figure_splits_signs_into_panels() {
        let image = RgbImage::from_pixel(160, 160, Rgb([128, 128, 128]));
        let signed = Map::new(vec![-1.0, 1.0], 2, 1);
        let figure = polarity_figure(&image, &signed, Colormap::Hot, 1.0, "ig");
        assert_eq!(figure.width(), MARGIN + 5 * (160 + MARGIN));
        // In the positive panel the right half is hot and the left half is cold.
        let panel_x = |panel: u32, x: u32| MARGIN + panel * (160 + MARGIN) + x;
        let y = 28 + MARGIN + TITLE_HEIGHT + 80;
        let left = figure.get_pixel(panel_x(2, 10), y).0;
        let right = figure.get_pixel(panel_x(2, 150), y).0;
        assert!(right[0] > 200 && left[0] < 100, "{left:?} {right:?}");
        // The negative panel mirrors it, and the signed panel is blue on the left: the
        // map is enlarged to the picture first, and that must keep its negatives.
        let left = figure.get_pixel(panel_x(3, 10), y).0;
        let right = figure.get_pixel(panel_x(3, 150), y).0;
        assert!(left[0] > 200 && right[0] < 100, "{left:?} {right:?}");
        let blue = figure.get_pixel(panel_x(1, 10), y).0;
        assert!(blue[2] > blue[0] + 50, "{blue:?}");
    }

    #[test]
    fn explanation_figure_has_three_panels_and_a_title() {
        let image = RgbImage::from_pixel(200, 200, Rgb([90, 120, 150]));
        let map = Map::new((0..100).map(|i| i as f32 / 99.0).collect(), 10, 10);
        let figure = explanation_figure(&image, &map, Colormap::Jet, 0.5, "class 3 (97.0%)");
        assert_eq!(figure.width(), MARGIN + 3 * (200 + MARGIN));
        // The heatmap panel carries its colorbar (a 4 px gap, 12 px bar, 16 px labels).
        assert_eq!(
            figure.height(),
            28 + MARGIN + 200 + 4 + 28 + TITLE_HEIGHT + MARGIN
        );
        // The bar runs the colormap from its low end on the left to its high end.
        let bar_y = 28 + MARGIN + TITLE_HEIGHT + 200 + 4 + 6;
        let x0 = MARGIN + 200 + MARGIN;
        assert_eq!(figure.get_pixel(x0, bar_y).0, Colormap::Jet.rgb(0.0));
        assert_eq!(figure.get_pixel(x0 + 199, bar_y).0, Colormap::Jet.rgb(1.0));
    }
    #[test]
    fn notes_wrap_at_spaces_to_the_figure_width() {
        let note = "caution, eigencam: beats_other_boxes 0.238 does not beat the `center` floor (0.317; higher is better)".to_string();
        let wide = RgbImage::from_pixel(1200, 10, Rgb(BACKGROUND.0));
        let narrow = RgbImage::from_pixel(300, 10, Rgb(BACKGROUND.0));
        let one = with_notes(&wide, std::slice::from_ref(&note));
        let wrapped = with_notes(&narrow, std::slice::from_ref(&note));
        // One line (18 px) on the wide figure, several on the narrow one.
        assert_eq!(one.height(), 10 + MARGIN + 18);
        assert!(
            wrapped.height() >= 10 + MARGIN + 3 * 18,
            "{}",
            wrapped.height()
        );
        let lines = wrap(&note, 300.0 - 2.0 * MARGIN as f32, 13.0, "  ");
        assert!(lines.iter().all(|l| !l.contains('…')), "{lines:?}");
        let rejoined: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(rejoined.join(" "), note);
    }

    #[test]
    fn long_titles_wrap_to_at_most_three_lines_instead_of_losing_their_end() {
        let body = RgbImage::from_pixel(400, 10, Rgb(BACKGROUND.0));
        let inked_rows = |figure: &RgbImage| {
            (0..figure.height() - 10)
                .filter(|&y| (0..figure.width()).any(|x| figure.get_pixel(x, y).0[0] < 128))
                .collect::<Vec<u32>>()
        };
        let short = title_bar("class 3", &body);
        assert_eq!(short.height(), 10 + 28);
        let title =
            "scene1: segmented background (0) 93%, triangle (3) 3% | explaining triangle (3)";
        let lines = wrap(title, 400.0 - 2.0 * MARGIN as f32, 16.0, "");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines.join(" "), title);
        let two = title_bar(title, &body);
        assert_eq!(two.height(), 10 + 28 + 20);
        // Ink on the second line's band, not only the first.
        assert!(
            inked_rows(&two).iter().any(|&y| y >= 28),
            "{:?}",
            inked_rows(&two)
        );
        let long = title_bar(&title.repeat(4), &body);
        assert_eq!(long.height(), 10 + 28 + 2 * 20);
    }
}
