//! Write generated shapes samples as PNG files (image, mask, label in the name), the
//! input of `tools/reference/metric_fixtures.py`'s trained-model fixtures: the shapes
//! are drawn by Rust's seeded generator, which Python cannot replay.
//!
//!     cargo run -p lumen-examples --example shapes_fixture_images -- OUT_DIR [COUNT]
//!
//! Samples `0..COUNT` (default 16) of the held-out test split (`TEST_SEED`).

use image::{GrayImage, Luma};
use lumen_models::shapes::{SHAPE_CLASSES, TEST_SEED, shape_samples};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next().map(std::path::PathBuf::from) else {
        eprintln!("usage: shapes_fixture_images OUT_DIR [COUNT]");
        std::process::exit(2);
    };
    let count: u64 = match args.next().map(|c| c.parse()) {
        None => 16,
        Some(Ok(c)) if c > 0 => c,
        Some(_) => {
            eprintln!("COUNT must be a positive integer");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&out).expect("create the output folder");
    for (i, sample) in shape_samples(TEST_SEED, 0, count).iter().enumerate() {
        let (w, h) = sample.image.dimensions();
        let mask = GrayImage::from_fn(w, h, |x, y| {
            Luma([if sample.mask[(y * w + x) as usize] {
                255
            } else {
                0
            }])
        });
        let stem = format!("{i:02}_{}_{}", sample.label, SHAPE_CLASSES[sample.label]);
        sample
            .image
            .save(out.join(format!("{stem}_image.png")))
            .expect("write the image");
        mask.save(out.join(format!("{stem}_mask.png")))
            .expect("write the mask");
    }
    println!("wrote {count} samples to {}", out.display());
}
