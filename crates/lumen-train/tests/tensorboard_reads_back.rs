//! TensorBoard itself reads back every scalar, image (size and bytes) and histogram
//! the sink wrote: `tools/monitor/read_tensorboard.py` runs TensorBoard's
//! EventAccumulator (keeping every event) and prints what it found.
//!
//! Needs Python with the `tensorboard` package:
//! `LUMEN_MONITOR_PYTHON=/path/to/python cargo test -p lumen-train --test tensorboard_reads_back -- --ignored`
//! (CI installs it and runs this).

use std::path::PathBuf;
use std::process::Command;

use image::{Rgb, RgbImage};
use lumen_train::{Histogram, Moment, Sink, TensorBoard};
use serde_json::Value;

fn python() -> String {
    std::env::var("LUMEN_MONITOR_PYTHON")
        .expect("set LUMEN_MONITOR_PYTHON to a Python with the tensorboard package")
}

fn reader() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/monitor/read_tensorboard.py")
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
#[ignore = "needs LUMEN_MONITOR_PYTHON with the tensorboard package"]
fn tensorboard_reads_every_value_we_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = TensorBoard::create(dir.path()).unwrap();
    let scalars: Vec<(u64, f64)> = vec![(0, 1.5), (10, -0.25), (20, 3.0e-4), (35, 42.0)];
    for &(step, value) in &scalars {
        tb.scalar("train/Loss", Moment { epoch: 1, step }, value)
            .unwrap();
    }
    let images: Vec<(u64, RgbImage)> = (0..3u64)
        .map(|k| {
            let image = RgbImage::from_fn(7 + k as u32, 5, |x, y| {
                Rgb([(x * 30) as u8, (y * 50) as u8, (k * 80) as u8])
            });
            (k * 10, image)
        })
        .collect();
    for (step, image) in &images {
        tb.image(
            "interpretation/sample_0",
            Moment {
                epoch: 1,
                step: *step,
            },
            image,
        )
        .unwrap();
    }
    let values: Vec<f32> = (0..500)
        .map(|i| ((i * 37) % 101) as f32 / 7.0 - 3.0)
        .collect();
    let histogram = Histogram::of(&values);
    tb.histogram(
        "features/layer2/activations",
        Moment { epoch: 2, step: 20 },
        &histogram,
    )
    .unwrap();
    tb.finish().unwrap();

    let out = Command::new(python())
        .arg(reader())
        .arg(dir.path())
        .output()
        .expect("running the reader");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();

    let got: Vec<(u64, f64)> = read["scalars"]["train/Loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), scalars.len());
    for ((s, v), (gs, gv)) in scalars.iter().zip(&got) {
        assert_eq!(s, gs);
        // Stored as float32, as TensorFlow's simple_value.
        assert_eq!(*gv, *v as f32 as f64);
    }

    let got = read["images"]["interpretation/sample_0"]
        .as_array()
        .unwrap();
    assert_eq!(got.len(), images.len());
    for ((step, image), g) in images.iter().zip(got) {
        assert_eq!(g[0].as_u64(), Some(*step));
        assert_eq!(g[1].as_u64(), Some(image.width() as u64));
        assert_eq!(g[2].as_u64(), Some(image.height() as u64));
        let bytes: Vec<u8> = g[3]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, png(image));
    }

    let got = &read["histograms"]["features/layer2/activations"][0];
    assert_eq!(got[0].as_u64(), Some(20));
    // serde_json's default float parser may be off by one unit in the last place of
    // the shortest repr Python prints, so doubles compare at 1e-14 relative.
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-14 * a.abs().max(b.abs());
    let number = |i: usize| got[i].as_f64().unwrap();
    let expected = [
        histogram.min,
        histogram.max,
        histogram.count,
        histogram.sum,
        histogram.sum_squares,
    ];
    for (k, e) in expected.iter().enumerate() {
        assert!(
            same(number(k + 1), *e),
            "field {}: {} vs {e}",
            k + 1,
            number(k + 1)
        );
    }
    let list = |i: usize| -> Vec<f64> {
        got[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    for (i, expected) in [(6, &histogram.bucket_limits), (7, &histogram.bucket_counts)] {
        let read = list(i);
        assert_eq!(read.len(), expected.len());
        assert!(
            read.iter().zip(expected).all(|(a, b)| same(*a, *b)),
            "{read:?} vs {expected:?}"
        );
    }
}
