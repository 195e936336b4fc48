//! Write generated multi-object scenes as PNG files with their boxes, the training and
//! evaluation data of `tools/train/shapes_det.py` (the bundled detector is trained by
//! AutoTimm's own FCOS code; the scenes are drawn by Rust's seeded generator, which
//! Python cannot replay).
//!
//!     cargo run --release -p lumen-examples --example shape_scenes -- OUT_DIR SPLIT COUNT
//!
//! `SPLIT` is `train`, `validation` or `test` (the seeds of `lumen_models::shapes`).
//! Writes `OUT_DIR/scene_00000.png`, ... and `OUT_DIR/annotations.json`: one entry per
//! scene with its file and objects (`label` indexes the four shape classes, `box` is
//! `[x1, y1, x2, y2]` in pixels, the half-open box of the visible pixels).

use lumen_models::shapes::{SHAPE_CLASSES, TEST_SEED, TRAIN_SEED, VALIDATION_SEED, shape_scene};
use serde_json::json;

fn usage(message: &str) -> ! {
    eprintln!("{message}\nusage: shape_scenes OUT_DIR train|validation|test COUNT");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, split, count] = args.as_slice() else {
        usage("expected three arguments");
    };
    let seed = match split.as_str() {
        "train" => TRAIN_SEED,
        "validation" => VALIDATION_SEED,
        "test" => TEST_SEED,
        other => usage(&format!("unknown split `{other}`")),
    };
    let count: u64 = match count.parse() {
        Ok(c) if c > 0 => c,
        _ => usage("COUNT must be a positive integer"),
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("create the output folder");
    let mut entries = Vec::with_capacity(count as usize);
    for index in 0..count {
        let scene = shape_scene(seed, index);
        let file = format!("scene_{index:05}.png");
        scene.image.save(out.join(&file)).expect("write the scene");
        let objects: Vec<_> = scene
            .objects
            .iter()
            .map(|o| json!({"label": o.label, "name": SHAPE_CLASSES[o.label], "box": o.bbox}))
            .collect();
        entries.push(json!({"file": file, "objects": objects}));
    }
    let annotations =
        json!({"split": split, "seed": seed, "classes": SHAPE_CLASSES, "scenes": entries});
    // Written last and atomically: its presence says the folder is complete (the
    // training script reuses a folder that has it).
    let partial = out.join("annotations.json.partial");
    std::fs::write(
        &partial,
        serde_json::to_string(&annotations).expect("serialize"),
    )
    .expect("write annotations.json");
    std::fs::rename(&partial, out.join("annotations.json")).expect("write annotations.json");
    println!("wrote {count} {split} scenes to {}", out.display());
}
