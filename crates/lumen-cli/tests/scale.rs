//! Runs beyond one machine: `lumen batch --shard` + `lumen merge` write what one run
//! writes, and `--cache` lets a repeated shard skip the model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn index_lines(path: &Path, out_dir: &Path) -> Vec<serde_json::Value> {
    // Paths name the output folder; the two runs compared wrote to different ones.
    let prefix = out_dir.display().to_string();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(&line.replace(&prefix, "OUT")).unwrap())
        .collect()
}

fn batch(images: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (i, o) = (images.display().to_string(), out.display().to_string());
    let mut args = vec![
        "batch",
        "--model",
        "shapes-cnn",
        &i,
        "--batch-size",
        "2",
        "--save-raw",
        "--out",
        &o,
    ];
    args.extend_from_slice(extra);
    lumen(&args)
}

#[test]
fn shards_merge_into_the_single_run_and_a_cache_skips_the_model() {
    let images = shape_folder("shard-images", 21, 7, "s");
    std::fs::write(images.join("s3b.png"), b"not a png").unwrap();
    let whole = tmp("shard-whole");
    let out = batch(&images, &whole, &[]);
    // One unreadable file: reported, the others written, exit 3.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let expected = index_lines(&whole.join("index.jsonl"), &whole);
    assert_eq!(expected.len(), 8);
    assert!(expected[4]["error"].is_string(), "{:?}", expected[4]);
    assert_eq!(
        expected[4]["file"],
        images.join("s3b.png").display().to_string()
    );

    let split = tmp("shard-split");
    let cache = tmp("shard-cache");
    let c = cache.display().to_string();
    for index in 0..3 {
        let spec = format!("{index}/3");
        let out = batch(&images, &split, &["--shard", &spec, "--cache", &c]);
        let code = out.status.code();
        // Whole batches of 2: shard 0 holds inputs 0..2, shard 1 2..4, shard 2 4..8
        // with the unreadable one.
        assert_eq!(
            code,
            Some(if index == 2 { 3 } else { 0 }),
            "{}",
            stderr(&out)
        );
        let name = format!("index.shard-{index:04}-of-0003.jsonl");
        assert!(split.join(name).is_file());
    }
    let out = lumen(&["merge", &split.display().to_string(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["shards"], 3);
    assert_eq!(
        (summary["inputs"].clone(), summary["failed"].clone()),
        (8.into(), 1.into())
    );
    assert_eq!(index_lines(&split.join("index.jsonl"), &split), expected);
    // The same figures, maps and grid, byte for byte.
    for i in [0, 1, 2, 3, 4, 5, 6] {
        for file in [format!("s{i}_gradcam.png"), format!("s{i}_gradcam.npy")] {
            let (a, b) = (whole.join(&file), split.join(&file));
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{file}"
            );
        }
    }
    assert_eq!(
        std::fs::read(whole.join("batch_grid.png")).unwrap(),
        std::fs::read(split.join("batch_grid.png")).unwrap()
    );

    // A rerun of a shard (resumed after preemption) takes every result from the cache
    // and writes the same index and figures.
    let before = std::fs::read(split.join("index.shard-0001-of-0003.jsonl")).unwrap();
    let figure = std::fs::read(split.join("s3_gradcam.png")).unwrap();
    std::fs::remove_file(split.join("s3_gradcam.png")).unwrap();
    let out = batch(&images, &split, &["--shard", "1/3", "--cache", &c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 of 2 results reused, 0 stored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        before,
        std::fs::read(split.join("index.shard-0001-of-0003.jsonl")).unwrap()
    );
    assert_eq!(figure, std::fs::read(split.join("s3_gradcam.png")).unwrap());
    // Another method is another key.
    let out = batch(
        &images,
        &split,
        &["--shard", "2/3", "--cache", &c, "--method", "gradcam++"],
    );
    assert!(
        stderr(&out).contains("0 of 4 results reused, 3 stored"),
        "{}",
        stderr(&out)
    );

    // A Kubernetes Indexed Job's index, with the count from the flag.
    let k8s = tmp("shard-k8s");
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args([
            "batch",
            "--model",
            "shapes-cnn",
            "--shard",
            "auto/3",
            "--batch-size",
            "2",
            "--save-raw",
            "--out",
        ])
        .arg(&k8s)
        .arg(&images)
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same shard as `--shard 1/3` wrote above.
    let read = |dir: &Path| {
        std::fs::read_to_string(dir.join("index.shard-0001-of-0003.jsonl"))
            .unwrap()
            .replace(&dir.display().to_string(), "OUT")
    };
    assert_eq!(read(&k8s), read(&split));

    // A missing shard is named; a bad spec is a usage error.
    std::fs::remove_file(split.join("index.shard-0001-of-0003.jsonl")).unwrap();
    let out = lumen(&["merge", &split.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("shard(s) 1 of 3 missing"),
        "{}",
        stderr(&out)
    );
    let out = batch(&images, &split, &["--shard", "3/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("count from 0 to 2"),
        "{}",
        stderr(&out)
    );
    for dir in [images, whole, split, cache, k8s] {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn profile_prints_the_time_of_every_stage() {
    let images = shape_folder("profile-images", 22, 2, "p");
    let out_dir = tmp("profile-out");
    let out = batch(&images, &out_dir, &["--profile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    let table = text.split("profile:").nth(1).expect("a profile table");
    // GradCAM: one tapped forward (the prediction is read from its output, no forward of
    // its own) and one backward; post-processing reads the prediction, then the maps.
    // Preprocessing: each image resized as it is decoded, then the batch normalised.
    for (stage, calls) in [
        ("read/decode", 2),
        ("preprocess", 3),
        ("forward", 1),
        ("backward", 1),
        ("method math", 1),
        ("post-process", 2),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(stage))
            .unwrap_or_else(|| panic!("no {stage} row in\n{table}"));
        let fields: Vec<&str> = row[stage.len()..].split_whitespace().collect();
        assert_eq!(fields[1], calls.to_string(), "{row}");
        assert!(fields[0].parse::<f64>().unwrap() >= 0.0, "{row}");
    }
    for stage in ["draw/encode", "write", "wall"] {
        assert!(
            table.lines().any(|l| l.starts_with(stage)),
            "{stage}:\n{table}"
        );
    }
    // Without the flag, no table.
    let out = batch(&images, &out_dir, &[]);
    assert!(!stderr(&out).contains("profile:"), "{}", stderr(&out));
    std::fs::remove_dir_all(images).ok();
    std::fs::remove_dir_all(out_dir).ok();
}

/// `lumen batch` follows the model's task: a detector's index lines hold its boxes and
/// the explained one, a segmentor's its class shares and the explained class; a rerun
/// with `--cache` reuses every result (the hidden parts included: the figures drawn
/// from the cache are the same bytes).
#[test]
fn batch_explains_detectors_and_segmentors_and_caches_them() {
    let scenes = scene_folder("batch-dense-scenes", 5, 3);
    std::fs::write(scenes.join("scene9.png"), b"not a png").unwrap();
    let cache = tmp("batch-dense-cache");
    let c = cache.display().to_string();
    for (model, method) in [("shapes-det", "hirescam"), ("shapes-seg", "gradcam")] {
        let out_dir = tmp(&format!("batch-{model}"));
        let run = || {
            let mut args = vec![
                "batch",
                "--model",
                model,
                "--method",
                method,
                "--cache",
                &c,
                "--save-raw",
            ];
            let (i, o) = (scenes.display().to_string(), out_dir.display().to_string());
            args.extend_from_slice(&[&i, "--out", &o, "--batch-size", "2"]);
            lumen(&args)
        };
        let first = run();
        // The damaged scene is reported; the three others are explained.
        assert_eq!(first.status.code(), Some(3), "{model}: {}", stderr(&first));
        assert!(stderr(&first).contains("scene9.png"), "{}", stderr(&first));
        let lines = index_lines(&out_dir.join("index.jsonl"), &out_dir);
        assert_eq!(lines.len(), 4, "{model}");
        for line in &lines[..3] {
            let result = &line["result"];
            assert_eq!(result["method"], method, "{line}");
            match model {
                "shapes-det" => {
                    let detections = result["prediction"]["detections"].as_array().unwrap();
                    assert!(!detections.is_empty(), "{line}");
                    // The best detection is explained by default.
                    assert_eq!(result["target"][0]["box"], detections[0]["box"], "{line}");
                    assert_eq!(result["target"][0]["label"], detections[0]["label"]);
                }
                _ => {
                    let dominant = &result["prediction"]["dominant"];
                    assert_ne!(dominant, 0, "{line}");
                    assert_eq!(&result["target"]["class"], dominant, "{line}");
                    assert_eq!(result["target"]["region"], "predicted");
                }
            }
            let raw = line["raw"]
                .as_str()
                .unwrap()
                .replace("OUT", &out_dir.display().to_string());
            assert!(Path::new(&raw).is_file(), "{raw}");
        }
        let figure = out_dir.join(format!("scene1_{method}.png"));
        let bytes = std::fs::read(&figure).unwrap();
        std::fs::remove_file(&figure).unwrap();
        let second = run();
        assert_eq!(
            second.status.code(),
            Some(3),
            "{model}: {}",
            stderr(&second)
        );
        assert!(
            stderr(&second).contains("3 of 4 results reused, 0 stored"),
            "{model}: {}",
            stderr(&second)
        );
        // A resumed run writes the same index as a fresh one.
        assert_eq!(
            index_lines(&out_dir.join("index.jsonl"), &out_dir),
            lines,
            "{model}"
        );
        assert_eq!(std::fs::read(&figure).unwrap(), bytes, "{model}");
        std::fs::remove_dir_all(out_dir).ok();
    }
    // A class for every image is what `explain` and `compare` are for.
    let out = lumen(&[
        "batch",
        "--model",
        "shapes-seg",
        &scenes.display().to_string(),
        "--target-class",
        "1",
        "--no-figures",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("drop --target-class"),
        "{}",
        stderr(&out)
    );
    for dir in [scenes, cache] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// `explain`, `compare` and `report` take `--cache`: a rerun reuses every result and
/// writes the same bytes (figures, the polarity view, `--save-raw`'s attributions), a
/// report reuses the maps a comparison stored, and segmentors' and detectors'
/// explanations are cached too.
#[test]
fn explain_compare_and_report_reuse_the_cache() {
    let images = shape_folder("cache-commands-images", 23, 3, "c");
    let scenes = scene_folder("cache-commands-scenes", 6, 2);
    let cache = tmp("cache-commands");
    let out_dir = tmp("cache-commands-out");
    let (i, c, o) = (
        images.display().to_string(),
        cache.display().to_string(),
        out_dir.display().to_string(),
    );
    let raw = out_dir.join("ig.npy");
    let r = raw.display().to_string();
    let explain = [
        "explain",
        "--model",
        "shapes-cnn",
        &i,
        "--method",
        "ig",
        "--steps",
        "8",
        "--polarity",
        "--save-raw",
        &r,
        "--cache",
        &c,
        "--out",
        &o,
    ];
    let methods = |command| {
        [
            command,
            "--model",
            "shapes-cnn",
            &i,
            "--methods",
            "gradcam,saliency",
            "--cache",
            &c,
            "--out",
            &o,
        ]
    };
    let (compare, report) = (methods("compare"), methods("report"));
    let figures = [
        "c1_ig.png",
        "c1_ig_polarity.png",
        "ig.npy",
        "c2_comparison.png",
        "report.html",
    ];
    let run = |args: &[&str], expected: &str| {
        let out = lumen(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    };
    run(&explain, "0 of 3 results reused, 3 stored");
    run(&compare, "0 of 6 results reused, 6 stored");
    // The report's maps are the comparison's.
    run(&report, "6 of 6 results reused, 0 stored");
    let first: Vec<Vec<u8>> = figures
        .iter()
        .map(|f| std::fs::read(out_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    for f in figures {
        std::fs::remove_file(out_dir.join(f)).unwrap();
    }
    run(&explain, "3 of 3 results reused, 0 stored");
    run(&compare, "6 of 6 results reused, 0 stored");
    run(&report, "6 of 6 results reused, 0 stored");
    for (f, bytes) in figures.iter().zip(&first) {
        assert_eq!(&std::fs::read(out_dir.join(f)).unwrap(), bytes, "{f}");
    }
    // Another class is another result.
    let mut other = explain.to_vec();
    other.extend(["--target-class", "2,0,1"]);
    run(&other, "0 of 3 results reused, 3 stored");

    let s = scenes.display().to_string();
    let segment = [
        "explain",
        "--model",
        "shapes-seg",
        &s,
        "--method",
        "gradcam",
        "--cache",
        &c,
        "--out",
        &o,
    ];
    run(&segment, "0 of 2 results reused, 2 stored");
    run(&segment, "2 of 2 results reused, 0 stored");
    // A detector: each explained box is an entry (the forward that finds the boxes
    // still runs); D-RISE and a gradient method with its attributions alike.
    let raw_boxes = out_dir.join("boxes.npy");
    let rb = raw_boxes.display().to_string();
    for method in ["saliency", "drise"] {
        let detect = [
            "explain",
            "--model",
            "shapes-det",
            &s,
            "--method",
            method,
            "--masks",
            "64",
            "--max-boxes",
            "2",
            "--save-raw",
            &rb,
            "--cache",
            &c,
            "--out",
            &o,
            "--json",
        ];
        let first = lumen(&detect);
        assert!(first.status.success(), "{}", stderr(&first));
        assert!(
            stderr(&first).contains("results reused, "),
            "{}",
            stderr(&first)
        );
        let boxes = std::fs::read(&raw_boxes).unwrap();
        let again = lumen(&detect);
        let text = stderr(&again);
        let reused = text.split("cache ").nth(1).unwrap_or_default();
        let (hits, total) = reused
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(" results").next())
            .and_then(|r| r.split_once(" of "))
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(hits, total, "{method}: {text}");
        assert!(text.contains(", 0 stored"), "{method}: {text}");
        assert_eq!(again.stdout, first.stdout, "{method}");
        assert_eq!(std::fs::read(&raw_boxes).unwrap(), boxes, "{method}");
    }
    // `--quiet` leaves stderr empty: no cache line, no summary.
    let mut quiet = explain.to_vec();
    quiet.push("-q");
    let batch = [
        "batch",
        "--model",
        "shapes-cnn",
        &i,
        "--cache",
        &c,
        "--out",
        &o,
        "-q",
    ];
    for args in [&quiet[..], &batch[..]] {
        let out = lumen(args);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    for dir in [images, scenes, cache, out_dir] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// `features --top-images` keeps each file's channel means, `features` each image's
/// maps and statistics and `receptive-field` each image's field: a rerun reuses them,
/// a new file or image is the only one computed, and the results equal a run without
/// the cache.
#[test]
fn feature_scans_and_receptive_fields_reuse_the_cache() {
    let images = shape_folder("cache-features-images", 24, 5, "f");
    let cache = tmp("cache-features");
    let out_dir = tmp("cache-features-out");
    let (i, c, o) = (
        images.display().to_string(),
        cache.display().to_string(),
        out_dir.display().to_string(),
    );
    let run = |args: &[&str], cached: bool, expected: &str| {
        let mut args = args.to_vec();
        if cached {
            args.extend(["--cache", &c]);
        }
        let out = lumen(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        out.stdout
    };
    // `features` on the folder with `extra`, printing JSON, figures in `out_dir`.
    let features = |extra: &[&str]| -> Vec<String> {
        let head = ["features", "--model", "shapes-cnn", "--image", &i];
        let tail = ["--out", &o, "--json"];
        head.iter()
            .chain(extra)
            .chain(&tail)
            .map(|a| a.to_string())
            .collect()
    };
    let scan = features(&[
        "--layer",
        "layer4",
        "--top-images",
        "2",
        "--channels",
        "0-2",
        "--batch-size",
        "2",
    ]);
    let scan: Vec<&str> = scan.iter().map(String::as_str).collect();
    run(&scan, true, "0 of 5 results reused, 5 stored");
    std::fs::copy(images.join("f0.png"), images.join("g0.png")).unwrap();
    let sample = lumen_models::shapes::shape_sample(25, 0);
    sample.image.save(images.join("f5.png")).unwrap();
    // g0.png has f0.png's bytes: its entry is f0's.
    let cached = run(&scan, true, "6 of 7 results reused, 1 stored");
    assert_eq!(cached, run(&scan, false, ""));

    let field = [
        "receptive-field",
        "--model",
        "shapes-cnn",
        "--image",
        &i,
        "--layer",
        "layer3",
        "--channel",
        "3",
        "--mode",
        "occlusion",
        "--patch",
        "16",
        "--stride",
        "16",
        "--out",
        &o,
        "--json",
    ];
    // A first run stores all 7 entries, a second reuses them: the same output and
    // the same bytes of `figure`.
    let stored_then_reused = |args: &[&str], figure: &str| {
        let first = run(args, true, "0 of 7 results reused, 7 stored");
        let bytes = std::fs::read(out_dir.join(figure)).unwrap();
        assert_eq!(run(args, true, "7 of 7 results reused, 0 stored"), first);
        assert_eq!(std::fs::read(out_dir.join(figure)).unwrap(), bytes);
        first
    };
    let first = stored_then_reused(&field, "f5_layer3_c3_occlusion.png");
    assert_eq!(run(&field, false, ""), first);

    // Maps and statistics: each image's channel maps and per-layer statistics are
    // kept; the batch statistics combine them, so reused entries give the same bits.
    let maps = |sort: &str| {
        features(&[
            "--layer",
            "layer3",
            "--layers",
            "layer1,layer4",
            "--top",
            "4",
            "--sort",
            sort,
            "--seed",
            "3",
        ])
    };
    fn strs(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }
    let (activation, random) = (maps("activation"), maps("random"));
    stored_then_reused(&strs(&activation), "f5_layer3_features.png");
    run(&strs(&random), true, "0 of 7 results reused, 7 stored");
    // e0.png sorts first: the others keep their results but move one place on, and
    // the random pick, seeded by an image's place, is drawn anew for every image.
    lumen_models::shapes::shape_sample(26, 0)
        .image
        .save(images.join("e0.png"))
        .unwrap();
    for (args, expected) in [
        (&activation, "7 of 8 results reused, 1 stored"),
        (&random, "0 of 8 results reused, 8 stored"),
    ] {
        let cached = run(&strs(args), true, expected);
        assert_eq!(cached, run(&strs(args), false, ""), "{expected}");
    }
    for dir in [images, cache, out_dir] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// `a` and `b` agree: the same keys and strings, numbers within `tolerance` of each
/// other relative to their size; times (`seconds_per_image`) and the `cheapest`
/// recommendation, which differ from run to run, are left out.
fn assert_same_evaluation(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
                "{path}: {x} against {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys()
                    .filter(|k| *k != "seconds_per_image")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(x), keys(y), "{path}");
            for key in keys(x) {
                assert_same_evaluation(&x[&key], &y[&key], &format!("{path}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let kept = |v: &Vec<Value>| -> Vec<Value> {
                v.iter()
                    .filter(|item| item["use_case"] != "cheapest")
                    .cloned()
                    .collect()
            };
            let (x, y) = (kept(x), kept(y));
            assert_eq!(x.len(), y.len(), "{path}: {x:?} against {y:?}");
            for (i, (x, y)) in x.iter().zip(&y).enumerate() {
                assert_same_evaluation(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// One `lumen evaluate` run in `out`, with `shard` when given.
fn evaluate(model: &str, out: &Path, options: &[&str], shard: Option<&str>) {
    let o = out.display().to_string();
    let mut args = vec!["evaluate", "--model", model, "--out", &o, "--quiet"];
    args.extend_from_slice(options);
    if let Some(spec) = shard {
        args.extend_from_slice(&["--shard", spec]);
    }
    let run = lumen(&args);
    assert!(run.status.success(), "{model} {shard:?}: {}", stderr(&run));
    // Quiet: no "wrote ..." or shard line either.
    assert!(run.stderr.is_empty(), "{model} {shard:?}: {}", stderr(&run));
}

/// A preempted evaluation: one batch's entry is gone from the cache, so rerunning
/// every shard measures that batch only, and writes what the first runs wrote.
fn resume_from_the_cache(split: &Path, cache: &Path, options: &[&str], shards: usize) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lumen"))
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 4, "one entry per batch: {entries:?}");
    std::fs::remove_file(&entries[0]).unwrap();
    let o = split.display().to_string();
    let (mut reused, mut measured) = (0, 0);
    for index in 0..shards {
        let spec = format!("{index}/{shards}");
        let mut args = vec![
            "evaluate",
            "--model",
            "shapes-cnn",
            "--out",
            &o,
            "--shard",
            &spec,
        ];
        args.extend_from_slice(options);
        let run = lumen(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        let line = stderr(&run)
            .lines()
            .find(|l| l.starts_with("cache "))
            .unwrap_or_else(|| panic!("no cache line: {}", stderr(&run)))
            .to_string();
        let counts: Vec<usize> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        reused += counts[0];
        measured += counts[2];
    }
    assert_eq!(
        (reused, measured),
        (3, 1),
        "3 batches reused, the lost one measured"
    );
    let merged = lumen(&["merge", &o]);
    assert!(merged.status.success(), "{}", stderr(&merged));
}

#[test]
fn evaluation_shards_merge_into_the_single_run() {
    let classifier: &[&str] = &[
        "--images",
        "7",
        "--batch-size",
        "2",
        "--methods",
        "gradcam,saliency",
        "--metrics",
        "pointing_game,relevance_mass,deletion_auc,insertion_auc,average_drop,max_sensitivity,randomization_spearman,randomization_pass",
        "--curve-steps",
        "4",
        "--detail-images",
        "3",
        "--sensitivity-samples",
        "2",
    ];
    let dense: &[&str] = &[
        "--images",
        "5",
        "--batch-size",
        "2",
        "--methods",
        "hirescam",
        "--curve-steps",
        "2",
    ];
    // Shards of unequal sizes (2, 2 and 3 images; 2 and 3 scenes): a mean of the
    // parts' means unweighted would differ.
    for (model, options, shards) in [
        ("shapes-cnn", classifier, 3),
        ("shapes-seg", dense, 2),
        ("shapes-det", dense, 2),
    ] {
        let whole = tmp(&format!("eval-whole-{model}"));
        evaluate(model, &whole, options, None);
        let split = tmp(&format!("eval-split-{model}"));
        // The classifier's shards measure batch by batch through a cache: their merge
        // must still be one run's.
        let cache = tmp(&format!("eval-cache-{model}"));
        let c = cache.display().to_string();
        let mut shard_options = options.to_vec();
        if model == "shapes-cnn" {
            shard_options.extend_from_slice(&["--cache", &c]);
        }
        for index in 0..shards {
            evaluate(
                model,
                &split,
                &shard_options,
                Some(&format!("{index}/{shards}")),
            );
        }
        assert!(
            !split.join("evaluation.json").exists(),
            "a shard writes only its part"
        );
        let merged = lumen(&["merge", &split.display().to_string(), "-q"]);
        assert!(merged.status.success(), "{model}: {}", stderr(&merged));
        assert_eq!(stderr(&merged), "", "{model}: --quiet prints nothing");
        let expected = read_json(&whole.join("evaluation.json"));
        let got = read_json(&split.join("evaluation.json"));
        assert_same_evaluation(&expected, &got, model);
        let page = std::fs::read_to_string(split.join("evaluation.html")).unwrap();
        assert!(page.contains(model), "{model}: the merged page");
        if model == "shapes-cnn" {
            // The detail metrics were measured by shard 0 only, on the run's images.
            assert_eq!(got["detail_samples"], 3);
            assert!(got["methods"][0]["scores"]["randomization_pass"].is_boolean());
            assert!(expected["recommendations"].as_array().unwrap().len() > 1);
            resume_from_the_cache(&split, &cache, &shard_options, shards);
            let resumed = read_json(&split.join("evaluation.json"));
            assert_same_evaluation(&expected, &resumed, "resumed");
        }

        // A missing shard, or one run with other settings, is named.
        let last = split.join(format!(
            "evaluation.shard-{:04}-of-{shards:04}.json",
            shards - 1
        ));
        let text = std::fs::read_to_string(&last).unwrap();
        std::fs::remove_file(&last).unwrap();
        let out = lumen(&["merge", &split.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
        let changed = text.replacen("\"batch_size\": 2", "\"batch_size\": 3", 1);
        assert_ne!(changed, text);
        std::fs::write(&last, changed).unwrap();
        let out = lumen(&["merge", &split.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("different settings"),
            "{}",
            stderr(&out)
        );
        std::fs::remove_dir_all(whole).ok();
        std::fs::remove_dir_all(split).ok();
        std::fs::remove_dir_all(cache).ok();
    }

    // More shards than batches: refused before any work.
    let out = lumen(&[
        "evaluate",
        "--model",
        "shapes-cnn",
        "--images",
        "4",
        "--batch-size",
        "2",
        "--shard",
        "2/3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at most 2 shard"), "{}", stderr(&out));
}

/// `lumen ARGS` from a scratch folder, with `LUMEN_READ_CHUNK_MB` when given.
fn lumen_with_chunk(args: &[&str], chunk_mb: Option<&str>) -> std::process::Output {
    let scratch = tmp(&format!("chunk-cwd-{}", chunk_mb.unwrap_or("default")));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lumen"));
    command.args(args).current_dir(&scratch);
    match chunk_mb {
        Some(mb) => command.env("LUMEN_READ_CHUNK_MB", mb),
        None => command.env_remove("LUMEN_READ_CHUNK_MB"),
    };
    command.output().expect("lumen runs")
}

/// Run `args` (with `--out` and `--json` added) once whole and once in chunks of two
/// images; both must print the same results, write the same `raw` arrays (file names
/// in the output folder) and the same figures. The results and the arrays' shapes.
fn assert_chunks_change_nothing(
    name: &str,
    args: &[&str],
    raw: &[&str],
) -> (serde_json::Value, Vec<Vec<usize>>) {
    chunks_compared(name, args, raw, true)
}

/// [`assert_chunks_change_nothing`]; the inputs include an unreadable file
/// (exit 3, reported) when `one_skipped`, else every input is read (exit 0).
fn chunks_compared(
    name: &str,
    args: &[&str],
    raw: &[&str],
    one_skipped: bool,
) -> (serde_json::Value, Vec<Vec<usize>>) {
    let mut printed = vec![];
    let outs = [
        tmp(&format!("{name}-whole")),
        tmp(&format!("{name}-chunks")),
    ];
    for (out, chunk) in outs.iter().zip([None, Some("1")]) {
        let o = out.display().to_string();
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for file in raw {
            // Each array flag is followed by a placeholder file name in `args`.
            let at = full.iter().position(|a| a == file).unwrap();
            full[at] = out.join(file).display().to_string();
        }
        full.extend(["--out".into(), o.clone(), "--json".into()]);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let run = lumen_with_chunk(&full, chunk);
        // The unreadable file is reported (exit 3); the others are explained.
        let code = if one_skipped { 3 } else { 0 };
        assert_eq!(run.status.code(), Some(code), "{}", stderr(&run));
        assert_eq!(
            stderr(&run).contains("skipped"),
            one_skipped,
            "{}",
            stderr(&run)
        );
        let text = String::from_utf8_lossy(&run.stdout).replace(&o, "OUT");
        printed.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
    }
    assert!(
        printed[0] == printed[1],
        "{name}: results differ in chunks:\n{}\n{}",
        printed[0],
        printed[1]
    );
    let mut shapes = vec![];
    for file in raw {
        let whole = std::fs::read(outs[0].join(file)).unwrap();
        assert_eq!(
            whole,
            std::fs::read(outs[1].join(file)).unwrap(),
            "{name}: {file}"
        );
        let array: ndarray::ArrayD<f32> =
            ndarray_npy::ReadNpyExt::read_npy(whole.as_slice()).unwrap();
        shapes.push(array.shape().to_vec());
    }
    let figures: Vec<PathBuf> = std::fs::read_dir(&outs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(!figures.is_empty(), "{name}: no figures");
    for figure in figures {
        let other = outs[1].join(figure.file_name().unwrap());
        assert_eq!(
            std::fs::read(&figure).unwrap(),
            std::fs::read(&other).unwrap()
        );
    }
    (printed.swap_remove(0), shapes)
}

#[test]
fn folders_read_in_chunks_give_the_results_of_one_chunk() {
    // Five images and an unreadable file between them: chunks of two at 128 px (the
    // 1 MiB chunk) are [s0 s1] [s2 s2x] [s3 s4], the middle one with one image.
    let shapes = shape_folder("chunk-shapes", 4, 5, "s");
    std::fs::write(shapes.join("s2x.png"), b"not a png").unwrap();
    let folder = shapes.display().to_string();

    // Classification, a class per file (the unreadable one's is dropped with it).
    let (json, shapes) = assert_chunks_change_nothing(
        "cnn",
        &[
            "explain",
            "--model",
            "shapes-cnn",
            &folder,
            "--size",
            "128",
            "--method",
            "saliency",
            "--target-class",
            "0,1,2,0,1,2",
            "--save-raw",
            "raw.npy",
        ],
        &["raw.npy"],
    );
    let targets: Vec<u64> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_u64().unwrap())
        .collect();
    assert_eq!(targets, [0, 1, 2, 1, 2]);
    // `report` writes its page as the chunks come, with the same per-file classes:
    // the same bytes as one chunk, feature statistics included.
    let pages: Vec<String> = [None, Some("1")]
        .into_iter()
        .map(|chunk| {
            let report = tmp(&format!("chunk-report-{}", chunk.is_some()));
            let run = lumen_with_chunk(
                &[
                    "report",
                    "--model",
                    "shapes-cnn",
                    &folder,
                    "--size",
                    "128",
                    "--methods",
                    "gradcam,layercam",
                    "--features",
                    "layer1,layer2",
                    "--target-class",
                    "0,1,2,0,1,2",
                    "--out",
                    &report.display().to_string(),
                ],
                chunk,
            );
            assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
            std::fs::read_to_string(report.join("report.html")).unwrap()
        })
        .collect();
    assert!(pages[0] == pages[1], "the report differs in chunks");
    let html = &pages[1];
    // Every image's plots and picture are named by its place on the whole page.
    for i in 0..5 {
        assert_eq!(html.matches(&format!("const lumenImage{i} =")).count(), 1);
    }
    assert!(!html.contains("lumenImage5"));
    assert_eq!(html.matches("<td>layer2</td>").count(), 5, "feature rows");
    let explained: Vec<&str> = html
        .split("<p>explaining <b>")
        .skip(1)
        .map(|rest| rest.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        explained,
        ["circle", "square", "triangle", "square", "triangle"]
    );
    for bad in ["0", "abc", "-1"] {
        let run = lumen_with_chunk(&["explain", "--model", "shapes-cnn", &folder], Some(bad));
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(
            stderr(&run).contains(&format!(
                "LUMEN_READ_CHUNK_MB must be a whole number of MiB above 0, got `{bad}`"
            )),
            "{}",
            stderr(&run)
        );
    }
    // A gradient method's raw result is its attributions, one row per read image.
    assert_eq!(shapes, [[5, 3, 128, 128]]);

    // Feature maps (a random channel pick, seeded by each image's place among all)
    // and the statistics of two layers, merged over the chunks: the same bits (the
    // batch statistics combine the images' one after another in any grouping).
    let (json, _) = assert_chunks_change_nothing(
        "features",
        &[
            "features",
            "--model",
            "shapes-cnn",
            &folder,
            "--size",
            "128",
            "--sort",
            "random",
            "--top",
            "4",
            "--layers",
            "layer1",
        ],
        &[],
    );
    let statistics = json["results"]["statistics"].as_array().unwrap();
    assert_eq!(statistics.len(), 2, "{json}");
    for layer in statistics {
        assert_eq!(layer["per_image"].as_array().unwrap().len(), 5, "{layer}");
    }
    assert!(
        json["files"][0]
            .as_str()
            .unwrap()
            .ends_with("layer_comparison.png")
    );

    // Receptive fields: each image's most active unit, by gradient and by occlusion
    // (chunks of at most 8 images there).
    for mode in ["gradient", "occlusion"] {
        assert_chunks_change_nothing(
            &format!("field-{mode}"),
            &[
                "receptive-field",
                "--model",
                "shapes-cnn",
                &folder,
                "--size",
                "128",
                "--layer",
                "layer2",
                "--mode",
                mode,
                "--patch",
                "32",
                "--stride",
                "32",
            ],
            &[],
        );
    }

    // Compare: one figure per image, the same in chunks.
    assert_chunks_change_nothing(
        "compare",
        &[
            "compare",
            "--model",
            "shapes-cnn",
            &folder,
            "--size",
            "128",
            "--methods",
            "gradcam,layercam",
        ],
        &[],
    );

    let scenes = scene_folder("chunk-scenes", 6, 5);
    std::fs::write(scenes.join("scene2x.png"), b"not a png").unwrap();
    let scenes = scenes.display().to_string();
    // Segmentation with its uncertainty maps.
    let (_, shapes) = assert_chunks_change_nothing(
        "seg",
        &[
            "explain",
            "--model",
            "shapes-seg",
            &scenes,
            "--size",
            "128",
            "--uncertainty",
            "entropy",
            "--save-raw",
            "raw.npy",
            "--save-uncertainty",
            "unc.npy",
        ],
        &["raw.npy", "unc.npy"],
    );
    assert_eq!(shapes, [[5, 128, 128], [5, 128, 128]]);

    // Detection: a row per explained box, numbered on across the chunks.
    let (json, shapes) = assert_chunks_change_nothing(
        "det",
        &[
            "explain",
            "--model",
            "shapes-det",
            &scenes,
            "--size",
            "128",
            "--save-raw",
            "raw.npy",
        ],
        &["raw.npy"],
    );
    let images = json["results"].as_array().unwrap();
    let mut next = 0;
    for image in images {
        let rows = &image["rows"];
        assert_eq!(rows["start"].as_u64().unwrap(), next, "{image}");
        next = rows["end"].as_u64().unwrap();
    }
    assert!(next > 0, "no box explained: {json}");
    assert_eq!(shapes[0][0] as u64, next);
}

/// `--input-npy` is read a chunk of rows at a time like a folder (it was read whole,
/// and every map and figure held to the end): the same results, arrays and figures as
/// in one chunk, in C and Fortran layout; a bad value anywhere is refused before any
/// work, by its place in the whole array.
#[test]
fn arrays_read_in_chunks_give_the_results_of_one_chunk() {
    let dir = tmp("chunk-arrays");
    std::fs::create_dir_all(&dir).unwrap();
    // Five rows at 128 px: chunks of two in 1 MiB, [0 1] [2 3] [4].
    let values = ndarray::Array4::<f32>::from_shape_fn((5, 3, 128, 128), |(b, c, h, w)| {
        let (y, x) = (h as f32 - 40.0 - 10.0 * b as f32, w as f32 - 64.0);
        ((y * y + x * x).sqrt() / (20.0 + 5.0 * c as f32)).cos() * 1.5
    });
    let c_layout = dir.join("c.npy");
    ndarray_npy::write_npy(&c_layout, &values).unwrap();
    let fortran = dir.join("fortran.npy");
    let reversed = values.t().as_standard_layout().to_owned().reversed_axes();
    assert!(!reversed.is_standard_layout());
    ndarray_npy::write_npy(&fortran, &reversed).unwrap();
    let mut printed = vec![];
    for (name, array) in [("c", &c_layout), ("fortran", &fortran)] {
        let array = array.display().to_string();
        let (json, shapes) = chunks_compared(
            &format!("array-{name}"),
            &[
                "explain",
                "--model",
                "shapes-cnn",
                "--input-npy",
                &array,
                "--method",
                "gradcam",
                "--target-class",
                "0,1,2,0,1",
                "--save-raw",
                "raw.npy",
            ],
            &["raw.npy"],
            false,
        );
        assert_eq!(shapes, [[5, 128, 128]]);
        let results = json["results"].as_array().unwrap();
        let names: Vec<&str> = results
            .iter()
            .map(|r| r["image"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["input0", "input1", "input2", "input3", "input4"],
            "{json}"
        );
        let targets: Vec<u64> = results
            .iter()
            .map(|r| r["target"].as_u64().unwrap())
            .collect();
        assert_eq!(targets, [0, 1, 2, 0, 1]);
        printed.push(json);
    }
    assert_eq!(printed[0], printed[1], "the layouts explain alike");

    // A NaN in the last row: refused before the first chunk is explained.
    let mut bad = values.clone();
    bad[[4, 1, 3, 9]] = f32::NAN;
    let bad_path = dir.join("nan.npy");
    ndarray_npy::write_npy(&bad_path, &bad).unwrap();
    let out = dir.join("nan-out");
    let run = lumen_with_chunk(
        &[
            "explain",
            "--model",
            "shapes-cnn",
            "--input-npy",
            &bad_path.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        Some("1"),
    );
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("image 4, channel 1, row 3, column 9"),
        "{}",
        stderr(&run)
    );
    let written = std::fs::read_dir(&out).map_or(0, |entries| entries.count());
    assert_eq!(written, 0, "nothing is written before the refusal");
}
