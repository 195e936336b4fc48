//! A small fuzz of the readers a user's files reach: images, `.npy` arrays and weight
//! files (safetensors and PyTorch pickles). Valid files are corrupted (bytes
//! overwritten, cut short, spliced) and every reader must return `Ok` or an error,
//! never panic. Bounded for CI: `PROPTEST_CASES` (default 48 per reader) and small
//! seeds.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;

/// How a valid file is damaged.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite bytes at these (fractional) positions.
    Overwrite(Vec<(f64, u8)>),
    /// Keep only this fraction of the file.
    Truncate(f64),
    /// Insert bytes at a (fractional) position.
    Insert(f64, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    // Headers are where parsers branch: half the damage lands in the first 2%.
    let position = prop_oneof![0.0..0.02f64, 0.0..1.0f64];
    prop_oneof![
        prop::collection::vec((position.clone(), any::<u8>()), 1..16).prop_map(Damage::Overwrite),
        (0.0..1.0f64).prop_map(Damage::Truncate),
        (position, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let at = |f: f64| ((f * bytes.len() as f64) as usize).min(bytes.len().saturating_sub(1));
    let mut out = bytes.to_vec();
    match damage {
        Damage::Overwrite(changes) => {
            for &(f, byte) in changes {
                let i = at(f);
                out[i] = byte;
            }
        }
        Damage::Truncate(f) => out.truncate(at(*f)),
        Damage::Insert(f, extra) => {
            let i = at(*f);
            out.splice(i..i, extra.iter().copied());
        }
    }
    out
}

/// Write `bytes` to a scratch file named like `original` (the extension picks the reader).
fn scratch_copy(original: &Path, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = original.file_name().unwrap().to_string_lossy();
    let path = std::env::temp_dir().join(format!(
        "lumen-fuzz-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_png() -> Vec<u8> {
    let image = image::RgbaImage::from_fn(24, 16, |x, y| {
        image::Rgba([
            (x * 10) as u8,
            (y * 15) as u8,
            90,
            if x < 4 { 0 } else { 255 },
        ])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn valid_jpeg() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lumen-cli/tests/data/exif_rotate90.jpg"),
    )
    .unwrap()
}

fn valid_npy() -> Vec<u8> {
    let array = ndarray::ArrayD::<f32>::from_shape_fn(ndarray::IxDyn(&[1, 3, 40, 40]), |i| {
        (i[2] * 40 + i[3]) as f32 / 1600.0
    });
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&array, &mut bytes).unwrap();
    bytes
}

#[test]
fn undamaged_files_read() {
    let png = scratch_copy(Path::new("x.png"), &valid_png());
    let read = lumen::core::read_image(&png);
    std::fs::remove_file(png).ok();
    assert!(read.is_ok());
    let npy = scratch_copy(Path::new("x.npy"), &valid_npy());
    let read = lumen::read_npy_batch(&npy, &device());
    std::fs::remove_file(npy).ok();
    assert!(read.is_ok());
    for name in ["test_resnet.pth", "test_resnet.safetensors"] {
        lumen::LoadedModel::load("test_resnet", 10, models_fixture(name), &device()).unwrap();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn damaged_images_never_panic(damage in damage(), jpeg in any::<bool>()) {
        let (name, bytes) = match jpeg {
            true => ("x.jpg", valid_jpeg()),
            false => ("x.png", valid_png()),
        };
        let path = scratch_copy(Path::new(name), &apply(&bytes, &damage));
        let read = lumen::core::read_image(&path);
        std::fs::remove_file(path).ok();
        // PNG checks its data; JPEG decoders fill a cut-short scan, as browsers do.
        if let (Damage::Truncate(f), false) = (damage, jpeg) {
            prop_assert!(read.is_err() || f > 0.9, "a cut-short PNG was read");
        }
    }

    #[test]
    fn damaged_arrays_never_panic(damage in damage()) {
        let path = scratch_copy(Path::new("x.npy"), &apply(&valid_npy(), &damage));
        let read = lumen::read_npy_batch(&path, &device());
        std::fs::remove_file(path).ok();
        if let Damage::Truncate(_) = damage {
            prop_assert!(read.is_err(), "a cut-short array was read");
        }
        if let Ok(tensor) = read {
            // What is read back must be checkable as an input without a panic too.
            let _ = lumen::Inputs::from_tensor(tensor, &lumen::core::DataConfig::imagenet(40));
        }
    }

    #[test]
    fn damaged_weight_files_never_panic(damage in damage(), pickle in any::<bool>()) {
        let name = match pickle {
            true => "test_resnet.pth",
            false => "test_resnet.safetensors",
        };
        let original = models_fixture(name);
        let bytes = std::fs::read(&original).unwrap();
        let path = scratch_copy(&original, &apply(&bytes, &damage));
        let loaded = lumen::LoadedModel::load("test_resnet", 10, &path, &device());
        std::fs::remove_file(path).ok();
        if let Damage::Truncate(f) = damage {
            prop_assert!(loaded.is_err() || f > 0.99, "a cut-short weights file loaded");
        }
    }
}
