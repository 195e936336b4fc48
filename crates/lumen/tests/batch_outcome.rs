//! What `explain_batch_with` keeps in memory: by default a lean result per image (no
//! map, no per-pixel classes) while the figures and the index, written as images
//! finish, hold the rest; `BatchRun::keep_maps` keeps the maps, and the index is the
//! same either way.

use std::path::{Path, PathBuf};

use lumen::shapes::{TEST_SEED, shape_scenes};
use lumen::{BatchRun, ExplainOptions, LoadedSegmentor, device_from_str, explain_batch_with};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lumen-batch-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_batch_keeps_lean_results_and_streams_its_index() {
    let model = LoadedSegmentor::bundled("shapes-seg", &device_from_str("cpu").unwrap()).unwrap();
    let inputs = scratch("inputs");
    let paths: Vec<PathBuf> = shape_scenes(TEST_SEED, 0, 3)
        .iter()
        .enumerate()
        .map(|(i, scene)| {
            let path = inputs.join(format!("scene{i}.png"));
            scene.image.save(&path).unwrap();
            path
        })
        .collect();
    let run_into = |name: &str, keep_maps: bool| {
        let out = scratch(name);
        let options = ExplainOptions {
            save_dir: Some(out.clone()),
            ..ExplainOptions::default()
        };
        let run = BatchRun {
            batch_size: 2,
            keep_maps,
            ..BatchRun::default()
        };
        let outcome = explain_batch_with(&model, &paths, &run, &options, |_| {}).unwrap();
        (out, outcome)
    };
    let (lean_dir, lean) = run_into("lean", false);
    let (kept_dir, kept) = run_into("kept", true);
    assert_eq!(lean.results.len(), 3);
    assert!(lean.failures.is_empty());
    for (l, k) in lean.results.iter().zip(&kept.results) {
        // Lean: no map, no per-pixel classes; the summary stays.
        assert_eq!((l.heatmap.width, l.heatmap.height), (0, 0));
        assert!(l.heatmap.values.is_empty());
        assert!(l.prediction.classes.is_empty() && l.prediction.pixel_classes.is_empty());
        assert_eq!(l.prediction.shares, k.prediction.shares);
        assert_eq!(l.target, k.target);
        // Kept: the map at the input size and a class per input pixel.
        assert_eq!((k.heatmap.width, k.heatmap.height), (128, 128));
        assert_eq!(k.heatmap.values.len(), 128 * 128);
        assert_eq!(k.prediction.pixel_classes.len(), 128 * 128);
        assert_eq!(k.prediction.classes.len(), 32 * 32);
        assert!(k.heatmap.values.iter().any(|&v| v > 0.5));
    }
    // The index, written line by line, is the same either way (up to the folder in the
    // figures' paths), in input order, with no temporary left beside it.
    let index = |dir: &Path| {
        std::fs::read_to_string(dir.join("index.jsonl"))
            .unwrap()
            .replace(&dir.display().to_string(), "OUT")
    };
    let lines = index(&lean_dir);
    assert_eq!(lines, index(&kept_dir));
    assert_eq!(lines.lines().count(), 3);
    for (i, line) in lines.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["position"], i);
        assert_eq!(value["result"]["image"], format!("scene{i}"));
    }
    assert!(
        !files_in(&lean_dir).iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        files_in(&lean_dir)
    );
    for dir in [inputs, lean_dir, kept_dir] {
        std::fs::remove_dir_all(dir).ok();
    }
}
