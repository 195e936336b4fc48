//! The input pipeline: image files to normalised `[B,3,H,W]` tensors with a timm data
//! config (resize the shorter side to `size / crop_pct`, centre crop, mean/std), and
//! back to displayable images.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::{LumenError, Result};

/// ImageNet mean, as timm's `IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation, as timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// timm's `DEFAULT_CROP_PCT`.
pub const DEFAULT_CROP_PCT: f32 = 0.875;

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
    fn filter(self) -> FilterType {
        match self {
            Self::Nearest => FilterType::Nearest,
            Self::Bilinear => FilterType::Triangle,
            Self::Bicubic => FilterType::CatmullRom,
        }
    }
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
    /// transform does.
    pub fn resize_and_crop(&self, image: &RgbImage) -> RgbImage {
        let [out_h, out_w] = self.size();
        let (w, h) = image.dimensions();
        if (w as usize, h as usize) == (out_w, out_h) {
            return image.clone();
        }
        // timm: scale_size = floor(img_size / crop_pct) applied to the shorter side.
        let scale_h = (out_h as f32 / self.crop_pct).floor() as u32;
        let scale_w = (out_w as f32 / self.crop_pct).floor() as u32;
        let (new_w, new_h) = if w <= h {
            (
                scale_w,
                ((h as f32) * scale_w as f32 / w as f32).round() as u32,
            )
        } else {
            (
                ((w as f32) * scale_h as f32 / h as f32).round() as u32,
                scale_h,
            )
        };
        let resized = image::imageops::resize(
            image,
            new_w.max(out_w as u32),
            new_h.max(out_h as u32),
            self.interpolation.filter(),
        );
        let left = (resized.width() - out_w as u32) / 2;
        let top = (resized.height() - out_h as u32) / 2;
        image::imageops::crop_imm(&resized, left, top, out_w as u32, out_h as u32).to_image()
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
        let prepared: Vec<RgbImage> = images.iter().map(|i| self.resize_and_crop(i)).collect();
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
        .map(|path| Ok(config.resize_and_crop(&load_image(path)?)))
        .collect::<Result<Vec<_>>>()?;
    config.to_tensor(&prepared, device)
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
        let out = config.resize_and_crop(&wide);
        assert_eq!(out.dimensions(), (8, 8));
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
