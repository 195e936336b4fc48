//! The input pipeline: image files to normalised `[B,3,H,W]` tensors with a timm data
//! config (resize the shorter side to `size / crop_pct`, centre crop, mean/std), and
//! back to displayable images.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::error::{LumenError, Result};

/// ImageNet mean, as timm's `IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation, as timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// timm's `DEFAULT_CROP_PCT`.
pub const DEFAULT_CROP_PCT: f32 = 0.875;

/// The most pixels [`DataConfig::resize_and_crop`] resizes a picture to before its crop
/// (2^28, 768 MiB of RGB); timm's sizes stay far below it.
const MAX_RESIZED_PIXELS: f64 = (1u64 << 28) as f64;

/// Which implementation of [`DataConfig::resize_and_crop`] made a picture: part of
/// every cache key taken from a file's bytes (`batch`, `features --top-images`), whose
/// entries would otherwise outlive a change of the pictures the same file gives. Keys
/// taken from the preprocessed input need none.
pub const RESIZE_VERSION: &str = "timm eval transform, Pillow filters (2026-12)";

/// Resampling filter used when resizing the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter).
    #[default]
    Bilinear,
    /// Bicubic (Catmull-Rom).
    Bicubic,
}

impl Interpolation {
    /// Pillow's convolution filter of the same name (what torchvision's `Resize` runs
    /// on PIL images; Pillow's bicubic is Catmull-Rom, a = -0.5); nearest is
    /// [`nearest_indices`], not a convolution.
    fn convolution(self) -> Option<fast_image_resize::FilterType> {
        use fast_image_resize::FilterType;
        match self {
            Self::Nearest => None,
            Self::Bilinear => Some(FilterType::Bilinear),
            Self::Bicubic => Some(FilterType::CatmullRom),
        }
    }
}

/// The source index of each of `to` output pixels resized from `from` with Pillow's
/// nearest neighbour (`ImagingScaleAffine`): the centre `(x + 0.5) * from / to`
/// accumulated step by step in doubles and truncated. The accumulation matters:
/// computed directly, 64 -> 48 picks pixel 1 where Pillow picks 2.
fn nearest_indices(from: u32, to: u32) -> Vec<u32> {
    let step = from as f64 / to as f64;
    let mut centre = step * 0.5;
    (0..to)
        .map(|_| {
            let index = (centre as u32).min(from - 1);
            centre += step;
            index
        })
        .collect()
}

/// The evaluation-time data config of a model, as timm's `resolve_data_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct DataConfig {
    /// `[channels, height, width]`.
    pub input_size: [usize; 3],
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Fraction of the resized image kept by the centre crop.
    pub crop_pct: f32,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl DataConfig {
    /// ImageNet normalisation at a square `size`, timm's default crop.
    pub fn imagenet(size: usize) -> Self {
        Self {
            input_size: [3, size, size],
            interpolation: Interpolation::Bilinear,
            crop_pct: DEFAULT_CROP_PCT,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Output height and width.
    pub fn size(&self) -> [usize; 2] {
        [self.input_size[1], self.input_size[2]]
    }

    /// Resize and centre-crop one image to the model's input size, as timm's eval
    /// transform does (`transforms_imagenet_eval`, crop mode `center`): the scale
    /// size is `floor(size / crop_pct)`; a square one is the shorter side's (the
    /// longer side `int(scale * long / short)`, torchvision's `Resize(int)`), another
    /// scales both sides by the smaller ratio (timm's `ResizeKeepRatio`, rounded half
    /// to even); the resize is Pillow's filter, and the crop is centred with offsets
    /// rounded half to even, padded with black where the picture is smaller
    /// (torchvision's `CenterCrop`). Checked against timm's own transform in
    /// `crates/lumen/tests/preprocess_parity.rs`.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage> {
        let [out_h, out_w] = self.size();
        let (w, h) = image.dimensions();
        if !(self.crop_pct.is_finite() && self.crop_pct > 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "crop_pct must be a finite number above 0, got {}",
                self.crop_pct
            )));
        }
        if w == 0 || h == 0 || out_h == 0 || out_w == 0 {
            return Err(LumenError::shape(
                "image to preprocess",
                "at least one pixel, and an input size of at least 1x1",
                format!("{w}x{h} pixels to {out_w}x{out_h}"),
            ));
        }
        // Python reads crop_pct as a double: its shortest decimal, parsed as f64
        // (0.85 as f32 is above 0.85, and 170 / it would floor to 199, not 200).
        let crop_pct: f64 = self
            .crop_pct
            .to_string()
            .parse()
            .unwrap_or(self.crop_pct as f64);
        let scale_h = (out_h as f64 / crop_pct).floor().max(1.0);
        let scale_w = (out_w as f64 / crop_pct).floor().max(1.0);
        let (h, w) = (h as f64, w as f64);
        let (new_w, new_h) = if scale_h == scale_w {
            let scale = scale_h;
            if w <= h {
                (scale, (scale * h / w).trunc())
            } else {
                ((scale * w / h).trunc(), scale)
            }
        } else {
            let ratio = (h / scale_h).min(w / scale_w);
            ((w / ratio).round_ties_even(), (h / ratio).round_ties_even())
        };
        // A tiny crop_pct or an extreme aspect ratio would ask for a picture that only
        // exhausts memory: refused, not allocated.
        if new_w * new_h > MAX_RESIZED_PIXELS {
            return Err(LumenError::InvalidArgument(format!(
                "a {}x{} picture with crop_pct {} resizes to {new_w}x{new_h} pixels before the \
                 crop, more than {MAX_RESIZED_PIXELS}",
                image.width(),
                image.height(),
                self.crop_pct
            )));
        }
        let (new_w, new_h) = (new_w.max(1.0) as u32, new_h.max(1.0) as u32);
        let resized = if (new_w, new_h) == image.dimensions() {
            std::borrow::Cow::Borrowed(image)
        } else {
            std::borrow::Cow::Owned(self.resize(image, new_w, new_h)?)
        };
        Ok(centre_crop(&resized, out_w as u32, out_h as u32))
    }

    /// `image` resized to `width` x `height` as Pillow resizes it.
    fn resize(&self, image: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
        let Some(filter) = self.interpolation.convolution() else {
            let columns = nearest_indices(image.width(), width);
            let rows = nearest_indices(image.height(), height);
            return Ok(RgbImage::from_fn(width, height, |x, y| {
                *image.get_pixel(columns[x as usize], rows[y as usize])
            }));
        };
        // Pillow resamples the width first, then the height, rounding to bytes between
        // the passes; fast_image_resize runs bytes height first, and where a cubic
        // overshoots, the other order clips other values (up to 10 levels apart). One
        // pass per call keeps Pillow's order.
        let (w, h) = image.dimensions();
        let wide = match w == width {
            true => None,
            false => Some(convolve(image.as_raw(), [w, h], [width, h], filter)?),
        };
        let source = wide.as_deref().unwrap_or(image.as_raw());
        let pixels = match h == height {
            true => source.to_vec(),
            false => convolve(source, [width, h], [width, height], filter)?,
        };
        RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
            LumenError::InvalidArgument(format!("resizing to {width}x{height} lost pixels"))
        })
    }

    /// Normalise images already at the input size into a `[B,3,H,W]` tensor.
    pub fn to_tensor(&self, images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
        let [out_h, out_w] = self.size();
        let mut values = Vec::with_capacity(images.len() * 3 * out_h * out_w);
        for (i, image) in images.iter().enumerate() {
            let (w, h) = image.dimensions();
            if (w as usize, h as usize) != (out_w, out_h) {
                return Err(LumenError::shape(
                    format!("image {i}"),
                    format!("{out_w}x{out_h} pixels"),
                    format!("{w}x{h} pixels"),
                ));
            }
            for c in 0..3 {
                values.extend(
                    image
                        .pixels()
                        .map(|p| (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c]),
                );
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(values, [images.len(), 3, out_h, out_w]),
            device,
        ))
    }

    /// Resize, crop and normalise a batch of images of any size.
    pub fn preprocess(&self, images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
        let prepared = images
            .iter()
            .map(|i| self.resize_and_crop(i))
            .collect::<Result<Vec<_>>>()?;
        self.to_tensor(&prepared, device)
    }

    /// Undo the normalisation of a `[B,3,H,W]` batch, for display.
    pub fn denormalize(&self, batch: &Tensor<4>) -> Result<Vec<RgbImage>> {
        let values = crate::to_host(batch.clone())?;
        self.denormalize_values(&values, batch.dims())
    }

    /// [`denormalize`](Self::denormalize) of a batch's `values` of shape `dims` already
    /// on the host.
    pub fn denormalize_values(
        &self,
        values: &[f32],
        [b, c, h, w]: [usize; 4],
    ) -> Result<Vec<RgbImage>> {
        if c != 3 || values.len() != b * c * h * w {
            return Err(crate::LumenError::shape(
                "images to display",
                format!("{} RGB values [{b},3,{h},{w}]", b * 3 * h * w),
                format!("{} values [{b},{c},{h},{w}]", values.len()),
            ));
        }
        Ok((0..b)
            .map(|i| {
                let base = i * 3 * h * w;
                RgbImage::from_fn(w as u32, h as u32, |x, y| {
                    let offset = y as usize * w + x as usize;
                    image::Rgb(std::array::from_fn(|ch| {
                        let v = values[base + ch * h * w + offset] * self.std[ch] + self.mean[ch];
                        (v * 255.0).round().clamp(0.0, 255.0) as u8
                    }))
                })
            })
            .collect())
    }
}

/// Default cap on the memory one decoded image may take, in MiB (the `image` crate's
/// own default); `LUMEN_MAX_IMAGE_MB` raises or lowers it.
pub const DEFAULT_MAX_IMAGE_MB: u64 = 512;

/// The decoding memory cap in bytes: `LUMEN_MAX_IMAGE_MB`, else the default.
fn max_image_bytes() -> Result<u64> {
    match std::env::var("LUMEN_MAX_IMAGE_MB") {
        Err(_) => Ok(DEFAULT_MAX_IMAGE_MB << 20),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(mb) if mb > 0 => Ok(mb << 20),
            _ => Err(LumenError::InvalidArgument(format!(
                "LUMEN_MAX_IMAGE_MB must be a whole number of MiB above 0, got `{text}`"
            ))),
        },
    }
}

/// An image read from a file as RGB, with what was done to make it one.
#[derive(Clone, Debug)]
pub struct ReadImage {
    /// The upright RGB picture.
    pub image: RgbImage,
    /// Adjustments worth telling the user (transparency composited, orientation applied).
    pub notes: Vec<String>,
}

/// Read an image file as an upright RGB picture: the EXIF orientation is applied (as
/// a phone camera means it), transparent pixels are composited on white, and 16-bit
/// or grayscale images are converted. The error names the file and the reason.
pub fn read_image(path: impl AsRef<Path>) -> Result<ReadImage> {
    let _stage = crate::profile::stage(crate::profile::stages::DECODE);
    let path = path.as_ref();
    let fail = |message: String| LumenError::Image {
        path: path.to_path_buf(),
        message,
    };
    if path.is_dir() {
        return Err(fail("this is a folder, not an image file".into()));
    }
    let max_bytes = max_image_bytes()?;
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| fail(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_bytes);
    reader.limits(limits.clone());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| fail(decode_message(&e, path, max_bytes)))?;
    use image::ImageDecoder;
    // `into_decoder` does not check the size of the picture itself (`decode` would, but
    // it drops the orientation): reserve it against the limit before allocating.
    limits
        .reserve(decoder.total_bytes())
        .map_err(|e| fail(decode_message(&e, path, max_bytes)))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| fail(decode_message(&e, path, max_bytes)))?;
    let mut notes = vec![];
    if orientation != image::metadata::Orientation::NoTransforms {
        image.apply_orientation(orientation);
        notes.push(format!(
            "turned upright from its EXIF orientation ({orientation:?})"
        ));
    }
    let image = if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        let transparent = rgba.pixels().filter(|p| p[3] < 255).count();
        if transparent > 0 {
            notes.push(format!(
                "{transparent} transparent or translucent pixels composited on white"
            ));
        }
        composite_on_white(&rgba)
    } else {
        image.to_rgb8()
    };
    Ok(ReadImage { image, notes })
}

/// Alpha-blend every pixel over a white background.
fn composite_on_white(rgba: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y);
        let alpha = p[3] as f32 / 255.0;
        image::Rgb(std::array::from_fn(|c| {
            (p[c] as f32 * alpha + 255.0 * (1.0 - alpha)).round() as u8
        }))
    })
}

/// A decoding error in words a user can act on: the memory cap says what it is and
/// how to raise it.
fn decode_message(error: &image::ImageError, path: &Path, max_bytes: u64) -> String {
    match error {
        image::ImageError::Limits(_) => {
            let size = image::image_dimensions(path)
                .map(|(w, h)| format!("{w}x{h} pixels, "))
                .unwrap_or_default();
            format!(
                "the image ({size}per its header) needs more than the {} MiB decoding limit: \
                 resize it, or raise the limit with LUMEN_MAX_IMAGE_MB",
                max_bytes >> 20
            )
        }
        image::ImageError::Unsupported(e) => {
            format!("{e} (readable formats: PNG, JPEG, BMP, WebP, TIFF, GIF)")
        }
        other => other.to_string(),
    }
}

/// Read an image file as RGB ([`read_image`] without the notes).
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    read_image(path).map(|read| read.image)
}

/// Load image files and preprocess them into one batch.
pub fn load_batch<P: AsRef<Path>>(
    paths: &[P],
    config: &DataConfig,
    device: &Device,
) -> Result<Tensor<4>> {
    // Each image is brought to the input size as it is decoded: one full-size image
    // in memory at a time.
    let prepared = paths
        .iter()
        .map(|path| config.resize_and_crop(&load_image(path)?))
        .collect::<Result<Vec<_>>>()?;
    config.to_tensor(&prepared, device)
}

/// RGB bytes of `[w, h]` pixels resized to `[width, height]` with a Pillow filter.
fn convolve(
    pixels: &[u8],
    [w, h]: [u32; 2],
    [width, height]: [u32; 2],
    filter: fast_image_resize::FilterType,
) -> Result<Vec<u8>> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
    let failed = |e: &dyn std::fmt::Display| {
        LumenError::InvalidArgument(format!(
            "cannot resize {w}x{h} pixels to {width}x{height}: {e}"
        ))
    };
    let source = ImageRef::new(w, h, pixels, PixelType::U8x3).map_err(|e| failed(&e))?;
    let mut target = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|e| failed(&e))?;
    Ok(target.into_vec())
}

/// The centred `width` x `height` window of `image`, as torchvision's `CenterCrop`:
/// offsets `round((size - crop) / 2)` (half to even, as Python's `round`), and black
/// where the window reaches past the picture.
fn centre_crop(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    let offset = |size: u32, crop: u32| -> i64 {
        if crop > size {
            // Padded by (crop - size) / 2 on the left or top, rounded down.
            -(((crop - size) / 2) as i64)
        } else {
            ((size - crop) as f64 / 2.0).round_ties_even() as i64
        }
    };
    let (left, top) = (offset(image.width(), width), offset(image.height(), height));
    if left >= 0 && top >= 0 && width <= image.width() && height <= image.height() {
        return image::imageops::crop_imm(image, left as u32, top as u32, width, height).to_image();
    }
    RgbImage::from_fn(width, height, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx < 0 || sy < 0 || sx >= image.width() as i64 || sy >= image.height() as i64 {
            image::Rgb([0, 0, 0])
        } else {
            *image.get_pixel(sx as u32, sy as u32)
        }
    })
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn normalize_then_denormalize_round_trips() {
        let config = DataConfig::imagenet(4);
        let image = RgbImage::from_fn(4, 4, |x, y| {
            image::Rgb([(x * 60) as u8, (y * 60) as u8, 200])
        });
        let device = Device::flex();
        let batch = config
            .to_tensor(std::slice::from_ref(&image), &device)
            .unwrap();
        assert_eq!(batch.dims(), [1, 3, 4, 4]);
        // Red channel of pixel (1, 0): (60/255 - 0.485) / 0.229.
        let v = crate::to_host(batch.clone()).unwrap();
        assert!((v[1] - (60.0 / 255.0 - 0.485) / 0.229).abs() < 1e-6);
        assert_eq!(config.denormalize(&batch).unwrap()[0], image);
        // Values that are not an RGB batch of the shape given: an error, not a panic.
        for (values, dims) in [(&v[..], [1, 1, 4, 4]), (&v[..47], [1, 3, 4, 4])] {
            let error = config.denormalize_values(values, dims).unwrap_err();
            assert!(error.to_string().contains("images to display"), "{error}");
        }
    }

    #[test]
    fn resize_and_crop_keeps_aspect_then_centres() {
        let config = DataConfig::imagenet(8);
        let wide = RgbImage::new(40, 20);
        let out = config.resize_and_crop(&wide).unwrap();
        assert_eq!(out.dimensions(), (8, 8));
        // A bad crop_pct or an empty picture: an error, not a panic or a blank input.
        for crop_pct in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let bad = DataConfig {
                crop_pct,
                ..config.clone()
            };
            let error = bad.resize_and_crop(&wide).unwrap_err().to_string();
            assert!(error.contains("crop_pct"), "{error}");
        }
        let error = config.resize_and_crop(&RgbImage::new(0, 5)).unwrap_err();
        assert!(error.to_string().contains("0x5"), "{error}");
        // A scale that would only exhaust memory: refused before any allocation.
        let tiny = DataConfig {
            crop_pct: 1e-6,
            ..config.clone()
        };
        let error = tiny.resize_and_crop(&wide).unwrap_err().to_string();
        assert!(error.contains("more than"), "{error}");
    }

    #[test]
    fn nearest_picks_pillows_pixels() {
        // Pillow 13, `Image.resize(..., NEAREST)` of a row 0..n to m pixels.
        let pillow_64_to_48: Vec<u32> = vec![
            0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20, 21, 23, 24, 25, 27, 28, 29,
            31, 32, 33, 35, 36, 38, 39, 40, 42, 43, 44, 46, 47, 48, 50, 51, 52, 54, 55, 56, 58, 59,
            60, 62, 63,
        ];
        assert_eq!(nearest_indices(64, 48), pillow_64_to_48);
        assert_eq!(nearest_indices(5, 7), [0, 1, 1, 2, 3, 3, 4]);
        assert_eq!(nearest_indices(10, 3), [1, 5, 8]);
    }

    #[test]
    fn wrong_image_size_is_an_error() {
        let config = DataConfig::imagenet(8);
        let err = config
            .to_tensor(&[RgbImage::new(7, 8)], &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(err.contains("8x8") && err.contains("7x8"), "{err}");
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let err = load_image("/nonexistent/cat.png").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cat.png"), "{err}");
        let path = std::env::temp_dir().join(format!(
            "lumen-core-not-an-image-{}.png",
            std::process::id()
        ));
        std::fs::write(&path, b"not a png").unwrap();
        let err = load_image(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).ok();
        assert!(err.contains("not-an-image"), "{err}");
    }

    #[test]
    fn exif_orientation_is_applied_and_said() {
        // Stored 48x24 with red on the left, orientation 6 (rotate 90 clockwise): shown
        // 24x48 with red on top (tools/reference/bad_input_files.py).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../lumen-cli/tests/data/exif_rotate90.jpg"
        );
        let read = read_image(path).unwrap();
        assert_eq!(read.image.dimensions(), (24, 48));
        let top = read.image.get_pixel(12, 4);
        let bottom = read.image.get_pixel(12, 44);
        assert!(top[0] > 200 && top[2] < 60, "{top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
        assert!(
            read.notes[0].contains("EXIF orientation"),
            "{:?}",
            read.notes
        );
    }

    #[test]
    fn transparency_is_composited_on_white() {
        let path = std::env::temp_dir().join(format!("lumen-alpha-{}.png", std::process::id()));
        let rgba = image::RgbaImage::from_fn(2, 1, |x, _| {
            image::Rgba([0, 0, 0, if x == 0 { 0 } else { 255 }])
        });
        rgba.save(&path).unwrap();
        let read = read_image(&path).unwrap();
        assert_eq!(read.image.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(read.image.get_pixel(1, 0).0, [0, 0, 0]);
        assert_eq!(read.notes.len(), 1, "{:?}", read.notes);
        // Fully opaque images need no note.
        image::RgbaImage::from_pixel(2, 2, image::Rgba([9, 9, 9, 255]))
            .save(&path)
            .unwrap();
        let opaque = read_image(&path);
        std::fs::remove_file(&path).ok();
        assert!(opaque.unwrap().notes.is_empty());
    }
}
