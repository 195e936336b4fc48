//! Cost of bringing one picture to a model's input (`DataConfig::resize_and_crop`,
//! timm's eval transform with Pillow's filters): a 1600x1200 photo-sized picture to
//! 224 px (bilinear, crop 0.875; bicubic, crop 0.95), and a 128 px picture up to 224
//! (`--size 224` on the bundled models).
//!
//! `cargo bench -p lumen-benches --bench input`

use criterion::{Criterion, criterion_group, criterion_main};
use image::{Rgb, RgbImage};
use lumen::core::{DataConfig, Interpolation};

/// Smooth gradients, hard edges and texture: what a filter has to work through.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let wave = (128.0 + 100.0 * ((x as f32) / 9.0).sin() * ((y as f32) / 13.0).cos()) as u8;
        let checker = if (x / 7 + y / 7) % 2 == 0 { 220 } else { 30 };
        Rgb([wave, checker, ((x * 7 + y * 3) % 256) as u8])
    })
}

fn input(c: &mut Criterion) {
    let photo = picture(1600, 1200);
    let small = picture(128, 128);
    let bicubic = DataConfig {
        interpolation: Interpolation::Bicubic,
        crop_pct: 0.95,
        ..DataConfig::imagenet(224)
    };
    let cases = [
        (
            "bilinear-0.875/1600x1200-to-224",
            &photo,
            DataConfig::imagenet(224),
        ),
        ("bicubic-0.95/1600x1200-to-224", &photo, bicubic),
        (
            "bilinear-1.0/128-to-224",
            &small,
            DataConfig {
                crop_pct: 1.0,
                ..DataConfig::imagenet(224)
            },
        ),
    ];
    let mut group = c.benchmark_group("resize-and-crop");
    for (name, image, config) in cases {
        group.bench_function(name, |b| b.iter(|| config.resize_and_crop(image).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, input);
criterion_main!(benches);
