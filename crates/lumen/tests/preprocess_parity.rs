//! The input pipeline against timm's own evaluation transform (`create_transform`,
//! `is_training=False`: torchvision's `Resize` on PIL images, `CenterCrop`, `ToTensor`,
//! `Normalize`). Fixtures from tools/reference/preprocess_fixtures.py: generated
//! pictures of seven sizes (downscaled, upscaled, odd margins) under seven configs
//! (bilinear, bicubic and nearest; square and non-square input sizes; crop_pct 0.875
//! to 1.1, where the crop pads black). The resized and cropped pictures agree within
//! `TOLERANCE` levels of 255 (the generator asserts that the other filters and the
//! guessed geometries are farther), the normalised tensors within
//! `TOLERANCE / 255 / std` (one level).

mod common;

use std::path::PathBuf;

use common::read;
use lumen::core::{
    DataConfig, Device, Interpolation,
    input::{IMAGENET_MEAN, IMAGENET_STD},
    to_host,
};

const TOLERANCE: f32 = 1.0;
const SOURCES: usize = 7;
const CONFIGS: [(Interpolation, [usize; 2], f32); 7] = [
    (Interpolation::Bilinear, [64, 64], 0.875),
    (Interpolation::Bicubic, [80, 80], 0.95),
    (Interpolation::Nearest, [48, 48], 1.0),
    (Interpolation::Bilinear, [64, 64], 1.0),
    (Interpolation::Bicubic, [56, 56], 0.9),
    (Interpolation::Bilinear, [48, 64], 0.9),
    // The picture scaled smaller than the input: padded black.
    (Interpolation::Bicubic, [64, 64], 1.1),
];

fn fixture(key: &str) -> (Vec<f32>, Vec<usize>) {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/timm_preprocess.safetensors"),
        key,
    )
}

fn picture(key: &str) -> image::RgbImage {
    let (values, shape) = fixture(key);
    let bytes = values.iter().map(|&v| v as u8).collect();
    image::RgbImage::from_raw(shape[1] as u32, shape[0] as u32, bytes).unwrap()
}

fn config((interpolation, [h, w], crop_pct): (Interpolation, [usize; 2], f32)) -> DataConfig {
    DataConfig {
        input_size: [3, h, w],
        interpolation,
        crop_pct,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    }
}

#[test]
fn resize_and_crop_match_timms_eval_transform() {
    let mut failures = vec![];
    let mut exact = 0;
    for (c, &setting) in CONFIGS.iter().enumerate() {
        let config = config(setting);
        for i in 0..SOURCES {
            let source = picture(&format!("source_{i}"));
            let expected = picture(&format!("crop_{c}_{i}"));
            let ours = config.resize_and_crop(&source).unwrap();
            if ours.dimensions() != expected.dimensions() {
                failures.push(format!(
                    "config {c} {setting:?}, source {i} {:?}: {:?} against {:?}",
                    source.dimensions(),
                    ours.dimensions(),
                    expected.dimensions()
                ));
                continue;
            }
            let worst = ours
                .as_raw()
                .iter()
                .zip(expected.as_raw())
                .map(|(&a, &b)| (a as f32 - b as f32).abs())
                .fold(0.0f32, f32::max);
            exact += (worst == 0.0) as usize;
            if worst > TOLERANCE {
                failures.push(format!(
                    "config {c} {setting:?}, source {i} {:?}: {worst} levels apart",
                    source.dimensions()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{exact} of {} pictures exact", CONFIGS.len() * SOURCES);
}

#[test]
fn preprocessed_tensors_match_timms_eval_transform() {
    let device = Device::default();
    for (c, &setting) in CONFIGS.iter().enumerate() {
        let config = config(setting);
        let source = picture("source_0");
        let (expected, shape) = fixture(&format!("tensor_{c}_0"));
        let tensor = config.preprocess(&[source], &device).unwrap();
        assert_eq!(tensor.dims()[1..], shape[..], "config {c}");
        let ours = to_host(tensor).unwrap();
        // One level of 255 is largest in the channel of the smallest std.
        let smallest_std = IMAGENET_STD.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let limit = TOLERANCE / 255.0 / smallest_std + 1e-5;
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= limit, "config {c} {setting:?}: {worst} > {limit}");
    }
}

/// JPEG files decoded as Pillow decodes them (libjpeg-turbo), which is what timm's
/// transform and every Python pipeline start from. Fixtures from
/// tools/reference/jpeg_fixtures.py: baseline and progressive, chroma 4:4:4, 4:2:2 and
/// 4:2:0, grayscale and CMYK, sizes that leave their last block partial. Lumen decodes
/// with the `image` crate (zune-jpeg): within `JPEG_TOLERANCE` levels per channel and
/// a mean difference of at most `JPEG_MEAN_TOLERANCE` levels (the generator asserts
/// that BT.709's colour matrix, limited-range YCbCr and unsmoothed chroma are
/// farther).
#[test]
fn jpeg_files_decode_as_pillow_decodes_them() {
    // zune-jpeg measured up to 3 levels, mean 0.388 (4:2:0 chroma upsampling).
    const JPEG_TOLERANCE: f32 = 4.0;
    const JPEG_MEAN_TOLERANCE: f32 = 0.5;
    const CASES: [&str; 9] = [
        "q95_444",
        "q90_422",
        "q75_420",
        "q85_420_progressive",
        "q50_420_odd",
        "q80_422_odd_progressive",
        "q100_444_odd",
        "q90_gray",
        "q90_cmyk",
    ];
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg_decode.safetensors");
    let dir = std::env::temp_dir().join(format!("lumen-jpeg-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = vec![];
    for name in CASES {
        let (bytes, _) = read(path.clone(), &format!("jpeg_{name}"));
        let file = dir.join(format!("{name}.jpg"));
        std::fs::write(&file, bytes.iter().map(|&b| b as u8).collect::<Vec<u8>>()).unwrap();
        let (expected, shape) = read(path.clone(), &format!("decoded_{name}"));
        let ours = match lumen::core::input::read_image(&file) {
            Ok(read) => read.image,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        assert_eq!(
            [ours.height() as usize, ours.width() as usize, 3],
            shape[..],
            "{name}"
        );
        let diffs: Vec<f32> = ours
            .as_raw()
            .iter()
            .zip(&expected)
            .map(|(&a, &b)| (a as f32 - b).abs())
            .collect();
        let worst = diffs.iter().fold(0.0f32, |a, &b| a.max(b));
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("{name}: worst {worst} levels, mean {mean:.3}");
        if worst > JPEG_TOLERANCE || mean > JPEG_MEAN_TOLERANCE {
            failures.push(format!("{name}: worst {worst} levels, mean {mean:.3}"));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
