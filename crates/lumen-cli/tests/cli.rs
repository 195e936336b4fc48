//! The `lumen` binary: the explain contract (names, shapes of --save-raw) and the exit
//! codes and messages of its error paths.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ndarray::ArrayD;

fn saved_shape(path: &Path) -> Vec<usize> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path).unwrap();
    array.shape().to_vec()
}

#[test]
fn save_raw_shapes_follow_the_contract() {
    let cases: [(&str, &str, &[&str], &[usize]); 5] = [
        ("test_resnet", "gradcam", &[], &[2, 160, 160]),
        ("test_resnet", "ig", &["--steps", "4"], &[2, 3, 160, 160]),
        (
            "test_resnet",
            "smoothgrad",
            &["--noise-samples", "2", "--seed", "1"],
            &[2, 3, 160, 160],
        ),
        ("test_vit", "rollout", &["--grid"], &[2, 10, 10]),
        ("test_vit", "rollout", &[], &[2, 160, 160]),
    ];
    for (model, method, extra, shape) in cases {
        let path = tmp(&format!("{model}-{method}-{}.npy", extra.len()));
        let p = path.display().to_string();
        let mut args = vec![
            "--method",
            method,
            "--target-class",
            "3,7",
            "--save-raw",
            &p,
        ];
        args.extend_from_slice(extra);
        let out = explain(model, &args);
        assert!(out.status.success(), "{model} {method}: {}", stderr(&out));
        assert_eq!(saved_shape(&path), shape, "{model} {method}");
    }
}

/// And in float16 (`--precision f16`): near the reference, but farther from it than
/// float32 may be (1e-3), and kept apart from float32's entries in a shared cache.
#[test]
fn gradcam_from_the_cli_matches_the_reference_fixture() {
    let bytes =
        std::fs::read(root().join("crates/lumen/tests/fixtures/test_resnet_methods.safetensors"))
            .unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // CAM maps are stored as float16 (rounding at most 2.4e-4, inside the tolerance).
    let view = file.tensor("gradcam").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F16);
    let reference: Vec<f32> = view
        .data()
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    let cache = tmp("gradcam-precision-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let cache = cache.display().to_string();
    // (precision, largest difference allowed, smallest difference required)
    for (precision, limit, floor) in [("f32", 1e-3, 0.0), ("f16", 0.04, 1e-3)] {
        let path = tmp(&format!("gradcam-parity-{precision}.npy"));
        let p = path.display().to_string();
        let out = explain(
            "test_resnet",
            &[
                "--method",
                "gradcam",
                "--target-class",
                "3,7",
                "--save-raw",
                &p,
                "--precision",
                precision,
                "--cache",
                &cache,
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        // The JSON says which precision the maps were computed in.
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["precision"], precision);
        assert!(
            stderr(&out).contains("0 of 2 results reused"),
            "{precision}: {}",
            stderr(&out)
        );
        let ours: ArrayD<f32> = ndarray_npy::read_npy(&path).unwrap();
        assert_eq!(reference.len(), ours.len());
        let diff = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < limit && diff >= floor,
            "{precision}: max diff {diff} (expected in [{floor}, {limit}))"
        );
    }
}

#[test]
fn json_output_reports_the_result() {
    let out = explain("test_resnet", &["--method", "gradcam++", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The one JSON shape of every command (docs/cli.md).
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "command",
            "device",
            "failures",
            "files",
            "model",
            "precision",
            "results"
        ]
    );
    assert_eq!(json["precision"], "f32");
    assert_eq!(json["failures"], serde_json::json!([]));
    assert_eq!(json["command"], "explain");
    assert_eq!(json["model"], "test_resnet");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["method"], "gradcam++");
        assert_eq!(r["layer"], "layer4");
        // Without --target-class the predicted class is explained.
        assert_eq!(r["prediction"]["class"], r["target"]);
        assert_eq!(r["prediction"]["top"].as_array().unwrap().len(), 5);
        let p = r["prediction"]["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    // Figures were written (the default folder, inside the scratch folder).
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
}

#[test]
fn explain_writes_one_figure_per_image() {
    let dir = tmp("figure-check");
    let d = dir.display().to_string();
    let w = weights("test_resnet");
    let i = input();
    let out = lumen(&[
        "explain",
        "--model",
        "test_resnet",
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--input-npy",
        &i,
        "--out",
        &d,
        "--colormap",
        "viridis",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without --method, GradCAM (the figures are named after the method).
    for name in ["input0_gradcam.png", "input1_gradcam.png"] {
        let figure = image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Three 192-pixel panels (the 160-pixel input enlarged) side by side with titles.
        assert!(
            figure.width() > 3 * 192 && figure.height() > 192,
            "{:?}",
            (figure.width(), figure.height())
        );
    }
    let out = lumen(&[
        "explain",
        "--model",
        "test_resnet",
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--input-npy",
        &i,
        "--method",
        "gradcam",
        "--out",
        &d,
        "--colormap",
        "rainbow",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown colormap `rainbow`"));
}

#[test]
fn usage_errors_exit_2_with_the_valid_choices() {
    let out = explain("test_resnet", &["--method", "gradcam+++"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown method `gradcam+++`")
            && stderr(&out).contains("eigengradcam")
    );

    let out = explain("test_resnet", &["--method", "gradcam", "--layer", "layer9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown layer `layer9`") && stderr(&out).contains("layer4.0"));

    let out = explain("test_resnet", &["--method", "gradcam", "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown device `gpu`"));

    let out = explain(
        "test_resnet",
        &["--method", "gradcam", "--target-class", "3,12"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("class index 12 is out of range"));

    // One class serves every image (as on a segmentor); a list must have one per image.
    let out = explain(
        "test_resnet",
        &["--method", "gradcam", "--target-class", "3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("explained class 3 with gradcam")
            .count(),
        2,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = explain(
        "test_resnet",
        &["--method", "gradcam", "--target-class", "3,1,2"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "--target-class: give one for every image or one per image (3 given for 2 images)"
        ),
        "{}",
        stderr(&out)
    );

    let out = lumen(&[
        "explain",
        "--model",
        "resnet18",
        "--input-npy",
        &input(),
        "--method",
        "gradcam",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--weights is required"));

    let out = lumen(&[
        "explain",
        "--model",
        "resnet19",
        "--weights",
        "x.safetensors",
        "--input-npy",
        &input(),
        "--method",
        "gradcam",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown model `resnet19`"));

    // No input is a usage error naming the ways to give one.
    let out = lumen(&["explain", "--model", "shapes-cnn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no input: give --image FILE"));
}

#[test]
fn runtime_errors_exit_1_naming_the_file() {
    let out = explain("test_resnet", &["--method", "gradcam"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let w = weights("test_resnet");
    let out = lumen(&[
        "explain",
        "--model",
        "test_resnet",
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--image",
        "/nonexistent/cat.png",
        "--method",
        "gradcam",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/cat.png"),
        "{}",
        stderr(&out)
    );

    // Weights for another architecture.
    let out = lumen(&[
        "explain",
        "--model",
        "test_vit",
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--input-npy",
        &input(),
        "--method",
        "gradcam",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing keys"), "{}", stderr(&out));

    // An input of the wrong size for the model.
    let small = tmp("small.npy");
    ndarray_npy::write_npy(
        &small,
        &ArrayD::<f32>::zeros(ndarray::IxDyn(&[1, 3, 16, 48])),
    )
    .unwrap();
    let s = small.display().to_string();
    let out = lumen(&[
        "explain",
        "--model",
        "test_resnet",
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--input-npy",
        &s,
        "--method",
        "gradcam",
    ]);
    // A ResNet takes any size down to its stride, and says so below it.
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("at least 32"), "{}", stderr(&out));
}

#[test]
fn layers_lists_names_and_kinds() {
    // `-q` is accepted here as by every command.
    let out = lumen(&["layers", "--model", "test_vit", "--num-classes", "10", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("blocks.5.attn") && text.contains("attention [B,2,N,N]"),
        "{text}"
    );
    assert!(
        text.contains("blocks.5.norm1") && text.contains("(default)"),
        "{text}"
    );
}

#[test]
fn demo_writes_figures_and_an_offline_report() {
    let dir = tmp("demo");
    let d = dir.display().to_string();
    let out = lumen(&["demo", "--out", &d, "--images", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Both bundled models, 2 images each.
    assert!(stdout.contains("4/4 predictions correct"), "{stdout}");
    for file in [
        "shapes-cnn/shape0_triangle_gradcam.png",
        "shapes-cnn/shape1_circle_comparison.png",
        "shapes-vit/shape0_triangle_rollout.png",
        "shapes-vit/shape1_circle_comparison.png",
        "shapes-vit-report.html",
        "shapes-det/scene0_hirescam.png",
        "shapes-det/scene1_hirescam.png",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    assert!(
        stdout.contains("explained (HiResCAM), mAP@0.5 "),
        "the detector's part: {stdout}"
    );
    // The scenes the demo wrote are inputs of `lumen explain` on the bundled detector,
    // which needs no weights.
    let scene = dir.join("images/scene0.png").display().to_string();
    let out = lumen(&[
        "explain",
        "--model",
        "shapes-det",
        "--image",
        &scene,
        "--method",
        "hirescam",
        "--json",
        "--no-figures",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let detections = json["results"][0]["detections"].as_array().unwrap();
    assert!(!detections.is_empty(), "{json}");
    assert!(
        detections
            .iter()
            .all(|d| d["name"].is_string() && d["box"].as_array().unwrap().len() == 4)
    );
    // Both classifiers ship their measured verdicts: their reports carry them.
    let vit_html = std::fs::read_to_string(dir.join("shapes-vit-report.html")).unwrap();
    assert!(
        vit_html.contains("<p class=caution>caution: "),
        "no verdicts in the ViT report"
    );
    let html = std::fs::read_to_string(dir.join("shapes-cnn-report.html")).unwrap();
    assert!(
        html.contains("<p class=caution>caution: fails the check `randomization_pass`"),
        "no verdicts in the CNN report"
    );
    assert!(!html.contains("src=\"http"), "report must work offline");
    assert_eq!(
        html.matches("<div id=\"overlay-").count(),
        2 * 7,
        "one overlay per image and method"
    );
    // The detector's report: each scene's best box with a CAM, a gradient and D-RISE.
    let det_html = std::fs::read_to_string(dir.join("shapes-det-report.html")).unwrap();
    assert_eq!(det_html.matches("<div id=\"overlay-").count(), 2 * 4);
    assert!(det_html.contains("drise") && det_html.contains(" at ["));
    assert!(stdout.contains("report: ") && stdout.contains("shapes-det-report.html"));
}

#[test]
fn batch_explains_a_folder_and_compare_and_report_run() {
    let images = shape_folder("batch-images", 9, 3, "s");
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let out_dir = tmp("batch-out");
    let (i, o) = (images.display().to_string(), out_dir.display().to_string());
    let out = lumen(&[
        "batch",
        "--model",
        "shapes-cnn",
        &i,
        "--batch-size",
        "2",
        "--out",
        &o,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for n in 0..3 {
        assert!(out_dir.join(format!("s{n}_gradcam.png")).is_file());
    }
    let grid = image::open(out_dir.join("batch_grid.png")).unwrap();
    assert!(
        grid.width() > 2 * 128 && grid.height() > 2 * 128,
        "2x2 grid of overlays"
    );
    let first = images.join("s0.png").display().to_string();
    let out = lumen(&[
        "explain",
        "--model",
        "shapes-cnn",
        "--image",
        &first,
        "--method",
        "saliency",
        "--polarity",
        "--out",
        &o,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_dir.join("s0_saliency_polarity.png").is_file());
    let first = images.join("s0.png").display().to_string();
    let out = lumen(&[
        "compare",
        "--model",
        "shapes-cnn",
        "--image",
        &first,
        "--methods",
        "gradcam,hirescam,saliency",
        "--out",
        &o,
        "--layout",
        "grid",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_dir.join("s0_comparison.png").is_file());
    let out = lumen(&[
        "report",
        "--model",
        "shapes-cnn",
        "--image",
        &first,
        "--method",
        "gradcam,kpcacam",
        "--out",
        &o,
        "--name",
        "r.html",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(out_dir.join("r.html")).unwrap();
    assert!(html.contains("kpcacam") && !html.contains("src=\"http"));
    let out = lumen(&[
        "batch",
        "--model",
        "shapes-cnn",
        &o,
        "--out",
        &tmp("none").display().to_string(),
    ]);
    // The output folder has PNGs, so it is a valid input; an empty folder is not.
    assert!(out.status.success(), "{}", stderr(&out));
    let empty = tmp("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = lumen(&[
        "batch",
        "--model",
        "shapes-cnn",
        &empty.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no images found"), "{}", stderr(&out));
}

#[test]
fn evaluate_prints_the_summary_object_and_writes_json_and_html() {
    let out_dir = tmp("evaluate");
    let o = out_dir.display().to_string();
    let out = lumen(&[
        "evaluate",
        "--model",
        "shapes-cnn",
        "--images",
        "2",
        "--methods",
        "gradcam",
        "--metrics",
        "pointing_game,deletion_auc,insertion_auc,randomization_pass",
        "--curve-steps",
        "4",
        "--detail-images",
        "1",
        "--json",
        "--out",
        &o,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["command"], "evaluate");
    assert_eq!(json["model"], "shapes-cnn");
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
    let summary = &json["results"];
    assert_eq!(summary["samples"], 2);
    let methods = summary["methods"].as_object().unwrap();
    let names: Vec<&str> = methods.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["center", "gradcam", "random"],
        "the floors are added"
    );
    for scores in methods.values() {
        let keys: Vec<&str> = scores
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "deletion_auc",
                "insertion_auc",
                "pointing_game",
                "randomization_pass"
            ]
        );
        assert!(scores["randomization_pass"].is_boolean());
        let pg = scores["pointing_game"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&pg));
    }
    // The floors do not depend on the model: they fail the randomisation check.
    assert_eq!(methods["random"]["randomization_pass"], false);
    let full = std::fs::read_to_string(out_dir.join("evaluation.json")).unwrap();
    let full: serde_json::Value = serde_json::from_str(&full).unwrap();
    let curve = &full["methods"][0]["curves"]["deletion_auc"];
    assert_eq!(curve["x"].as_array().unwrap().len(), 5);
    assert_eq!(curve["rows"][0].as_array().unwrap().len(), 5);
    // Each CAM row says the layer its verdicts hold for (the model's default here);
    // the floors have none.
    let layers: Vec<(&str, Option<&str>)> = full["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["layer"].as_str()))
        .collect();
    assert_eq!(
        layers,
        [
            ("gradcam", Some("layer4")),
            ("random", None),
            ("center", None)
        ]
    );
    let html = std::fs::read_to_string(out_dir.join("evaluation.html")).unwrap();
    assert!(html.contains("Recommendations") && html.contains("deletion_auc"));
    assert!(!html.contains("src=\"http"), "self-contained");
    std::fs::remove_dir_all(out_dir).ok();
}

#[test]
fn evaluate_rejects_unknown_names_with_the_valid_ones() {
    let cases: [(&[&str], &str); 4] = [
        (&["--methods", "gradkam"], "valid methods"),
        (&["--metrics", "accuracy"], "valid metrics: deletion_auc"),
        (&["--dataset", "imagenet"], "valid datasets: shapes"),
        (&["--insertion-baseline", "grey"], "valid baselines"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["evaluate", "--model", "shapes-cnn", "--images", "1"];
        args.extend_from_slice(extra);
        let out = lumen(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn evaluate_measures_detectors_and_segmentors_on_scenes_against_the_floors() {
    for (model, accuracy, metric) in [
        ("shapes-det", "map50", "beats_other_boxes"),
        ("shapes-seg", "miou", "relevance_mass"),
    ] {
        let out_dir = tmp(&format!("evaluate-{model}"));
        let o = out_dir.display().to_string();
        let out = lumen(&[
            "evaluate",
            "--model",
            model,
            "--images",
            "4",
            "--methods",
            "hirescam",
            "--json",
            "--curve-steps",
            "4",
            "--out",
            &o,
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let results = &json["results"];
        assert_eq!(results["images"], 4);
        let value = results["accuracy"][accuracy].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{model}: {accuracy} {value}");
        let rows = results["methods"].as_array().unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["hirescam", "random", "center"],
            "{model}: the floors are added"
        );
        for row in rows {
            let v = row["scores"][metric].as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&v),
                "{model} {}: {metric} {v}",
                row["method"]
            );
            for curve in ["deletion", "insertion"] {
                let area = row["scores"][format!("{curve}_auc")].as_f64();
                assert!(
                    area.is_some_and(f64::is_finite),
                    "{model} {}: {curve}",
                    row["method"]
                );
                // The mean curve: 4 steps from the whole image to none, divided by the
                // unperturbed score, which is therefore where it starts (deletion) or
                // ends (insertion).
                let mean = row["curves"][curve]["mean"].as_array().unwrap();
                assert_eq!(mean.len(), 5, "{model} {curve}");
                let unperturbed = if curve == "deletion" {
                    &mean[0]
                } else {
                    &mean[4]
                };
                assert!(
                    (unperturbed.as_f64().unwrap() - 1.0).abs() < 1e-4,
                    "{model} {curve}: {mean:?}"
                );
            }
        }
        assert!(out_dir.join("evaluation.json").is_file());
        let html = std::fs::read_to_string(out_dir.join("evaluation.html")).unwrap();
        for part in [
            metric,
            "random (floor)",
            "deletion (lower is better)",
            "plotly",
        ] {
            assert!(html.contains(part), "{model}: {part}");
        }
        std::fs::remove_dir_all(out_dir).ok();
    }
    let cases: [(&[&str], &str); 5] = [
        (
            &["--model", "shapes-det", "--detail-images", "3"],
            "apply to classifiers",
        ),
        (
            &["--model", "shapes-seg", "--metrics", "pointing_game"],
            "--metrics chooses among the classification metrics",
        ),
        (
            &["--model", "shapes-seg", "--score-threshold", "0.3"],
            "--score-threshold applies to detection models",
        ),
        (
            &["--model", "shapes-cnn", "--score-threshold", "0.3"],
            "--score-threshold applies to detection models",
        ),
        (
            &["--model", "shapes-det", "--methods", "gradkam"],
            "valid methods",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["evaluate", "--images", "1"];
        args.extend_from_slice(extra);
        let out = lumen(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
    // An output that cannot be written is found before the work.
    let blocked = tmp("evaluate-out-is-a-file");
    std::fs::write(&blocked, b"").unwrap();
    for model in ["shapes-det", "shapes-cnn"] {
        let out = lumen(&[
            "evaluate",
            "--model",
            model,
            "--images",
            "1",
            "--out",
            &blocked.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("is a file, not a folder"),
            "{}",
            stderr(&out)
        );
    }
    std::fs::remove_file(blocked).ok();
    let out = lumen(&[
        "evaluate",
        "--model",
        "shapes-det",
        "--images",
        "1",
        "--score-threshold",
        "1.5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("score threshold must be in [0, 1]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn compare_and_report_take_segmentors_and_detectors() {
    let scenes = scene_folder("dense-scenes", 3, 2);
    let input = scenes.display().to_string();
    for model in ["shapes-seg", "shapes-det"] {
        let out_dir = tmp(&format!("dense-{model}"));
        let o = out_dir.display().to_string();
        let out = lumen(&[
            "compare",
            "--model",
            model,
            "--methods",
            "hirescam,saliency",
            "--image",
            &input,
            "--out",
            &o,
            "--json",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let results = json["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{model}");
        for r in results {
            assert_eq!(r["methods"], serde_json::json!(["hirescam", "saliency"]));
            assert!(std::path::Path::new(r["path"].as_str().unwrap()).is_file());
        }
        let out = lumen(&[
            "report",
            "--model",
            model,
            "--methods",
            "hirescam",
            "--image",
            &input,
            "--out",
            &o,
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
        assert!(
            html.contains("scene0") && html.contains("hirescam"),
            "{model}"
        );
        // A detector's report lists its boxes; both draw their prediction.
        assert_eq!(html.contains(" at ["), model == "shapes-det", "{model}");
        assert_eq!(
            html.matches("<figure class=prediction>").count(),
            2,
            "{model}"
        );
        std::fs::remove_dir_all(out_dir).ok();
    }
    // A class per image for a segmentor; none for a detector (its boxes are chosen
    // with `lumen explain --box`).
    let out = lumen(&[
        "compare",
        "--model",
        "shapes-seg",
        "--methods",
        "gradcam",
        "--image",
        &input,
        "--target-class",
        "1,2,3",
        "--no-figures",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 given for 2 images"),
        "{}",
        stderr(&out)
    );
    let out = lumen(&[
        "compare",
        "--model",
        "shapes-det",
        "--methods",
        "gradcam",
        "--image",
        &input,
        "--target-class",
        "1",
        "--no-figures",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not apply to detectors"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(scenes).ok();
}

/// D-RISE is a method of every command that takes a detector's methods, not only of
/// `explain` and `evaluate` (its `--methods` help said so while compare, report and
/// batch refused it as unknown); a classifier refuses it, naming detectors.
#[test]
fn drise_runs_in_compare_report_and_batch_on_a_detector() {
    let scenes = scene_folder("drise-scenes", 5, 2);
    let input = scenes.display().to_string();
    let out_dir = tmp("drise-out");
    let o = out_dir.display().to_string();
    let out = lumen(&[
        "compare",
        "--model",
        "shapes-det",
        "--methods",
        "hirescam,drise",
        "--masks",
        "8",
        "--image",
        &input,
        "--out",
        &o,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["methods"], serde_json::json!(["hirescam", "drise"]));
        assert!(std::path::Path::new(r["path"].as_str().unwrap()).is_file());
    }
    let out = lumen(&[
        "report",
        "--model",
        "shapes-det",
        "--methods",
        "drise",
        "--masks",
        "8",
        "--image",
        &input,
        "--out",
        &o,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("drise") && html.contains(" at ["));
    let out = lumen(&[
        "batch",
        "--model",
        "shapes-det",
        "--method",
        "drise",
        "--masks",
        "8",
        &input,
        "--out",
        &o,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for n in 0..2 {
        assert!(
            out_dir.join(format!("scene{n}_drise.png")).is_file(),
            "scene{n}"
        );
    }
    for command in ["compare", "report", "batch", "explain"] {
        let out = lumen(&[
            command,
            "--model",
            "shapes-cnn",
            "--method",
            "drise",
            "--image",
            &input,
            "--no-figures",
        ]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("explains the boxes of object detectors"),
            "{command}: {}",
            stderr(&out)
        );
    }
    std::fs::remove_dir_all(out_dir).ok();
    std::fs::remove_dir_all(scenes).ok();
}

#[test]
fn features_and_receptive_fields_write_figures_and_json() {
    let out_dir = tmp("features");
    let o = out_dir.display().to_string();
    let out = on_fixture_input(
        "test_resnet",
        "features",
        &[
            "--layer",
            "layer3",
            "--layers",
            "layer2,layer4",
            "--top",
            "4",
            "--sort",
            "variance",
            "--shared-scale",
            "--out",
            &o,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["command"], "features");
    let results = &json["results"];
    assert_eq!(results["layer"], "layer3");
    let statistics = results["statistics"].as_array().unwrap();
    let layers: Vec<&str> = statistics
        .iter()
        .map(|s| s["layer"].as_str().unwrap())
        .collect();
    // In forward order, the drawn layer among them.
    assert_eq!(layers, ["layer2", "layer3", "layer4"]);
    assert_eq!(statistics[0]["per_image"].as_array().unwrap().len(), 2);
    let channels = results["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2);
    assert_eq!(channels[0].as_array().unwrap().len(), 4);
    // Variance order: scores descending.
    let scores: Vec<f64> = channels[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for name in [
        "input0_layer3_features.png",
        "input1_layer3_features.png",
        "layer_comparison.png",
    ] {
        assert!(out_dir.join(name).is_file(), "{name}");
    }

    // A scan over a folder: the images that excite each channel most.
    let images = tmp("feature-scan");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..5u64 {
        let sample = lumen_models::shapes::shape_sample(4, i);
        sample.image.save(images.join(format!("s{i}.png"))).unwrap();
    }
    let out = lumen(&[
        "features",
        "--model",
        "shapes-cnn",
        "--image",
        &images.display().to_string(),
        "--layer",
        "layer4",
        "--top-images",
        "2",
        "--channels",
        "0-2",
        "--batch-size",
        "2",
        "--out",
        &o,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let ranked: Vec<f64> = row["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[1].as_f64().unwrap())
            .collect();
        assert_eq!(ranked.len(), 2);
        assert!(ranked[0] >= ranked[1]);
    }
    assert!(out_dir.join("layer4_top_images.png").is_file());
    let out = lumen(&[
        "report",
        "--model",
        "shapes-cnn",
        "--image",
        &images.display().to_string(),
        "--methods",
        "gradcam",
        "--features",
        "layer1,layer4",
        "--out",
        &o,
        "--name",
        "f.html",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(out_dir.join("f.html")).unwrap();
    assert!(html.contains("Layer statistics") && html.contains("layer-statistics-0"));

    let out = on_fixture_input(
        "test_resnet",
        "receptive-field",
        &[
            "--layer",
            "layer2",
            "--channel",
            "5",
            "--mode",
            "gradient",
            "--out",
            &o,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let support = json["results"][0]["support"].as_array().unwrap();
    assert_eq!(support.len(), 4);
    assert!(out_dir.join("input0_layer2_c5_gradient.png").is_file());
    // Without --channel, each image's most active channel at the centre (the arg-max
    // itself is tested in lumen-features): the first image's unit is active, no less
    // than the first eight channels, and the same as asking for that channel.
    let field = |extra: &[&str]| {
        let out = on_fixture_input(
            "test_resnet",
            "receptive-field",
            &[&["--layer", "layer2", "--no-figures", "--json"][..], extra].concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["results"].as_array().unwrap().clone()
    };
    let chosen = field(&[]);
    let first = &chosen[0];
    let best = first["activation"].as_f64().unwrap();
    let channel = first["channel"].as_u64().unwrap();
    let all: Vec<f64> = (0..8)
        .map(|c| {
            field(&["--channel", &c.to_string()])[0]["activation"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        all.iter().all(|&a| a <= best),
        "{channel}: {best} against {all:?}"
    );
    assert!(best > 0.0, "the most active unit is active");
    let asked = field(&["--channel", &channel.to_string()]);
    assert_eq!(asked[0]["activation"], first["activation"]);
    assert_eq!(asked[0]["support"], first["support"]);
    assert_eq!(asked[0]["channel"], first["channel"]);

    let out = lumen(&[
        "receptive-field",
        "--model",
        "resnet50",
        "--layer",
        "layer4",
        "--mode",
        "theoretical",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["results"]["size"], 427);
    assert_eq!(json["results"]["jump"], 32);

    let out = on_fixture_input(
        "test_resnet",
        "receptive-field",
        &["--layer", "layer2", "--channel", "999"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("channel 999 is out of range"),
        "{}",
        stderr(&out)
    );
    let out = on_fixture_input("test_resnet", "features", &["--sort", "loudest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("valid channel orders: activation, variance, random"));
    std::fs::remove_dir_all(out_dir).ok();
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["layers", "--model", "resnet101"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe before the listing is done.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn maximize_writes_a_grid_and_reports_what_the_model_sees() {
    let out_dir = tmp("maximize");
    let cache = tmp("maximize-cache");
    let (o, c) = (out_dir.display().to_string(), cache.display().to_string());
    let args = [
        "maximize",
        "--model",
        "shapes-cnn",
        "--layer",
        "fc",
        "--channels",
        "0,2",
        "--steps",
        "24",
        "--out",
        &o,
        "--json",
        "--cache",
        &c,
    ];
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("0 of 1 results reused, 1 stored"),
        "{}",
        stderr(&out)
    );
    // A rerun takes the images from the cache: the same results and figure.
    let figure = std::fs::read(out_dir.join("shapes-cnn_fc_maximized.png")).unwrap();
    let again = lumen(&args);
    assert!(
        stderr(&again).contains("1 of 1 results reused, 0 stored"),
        "{}",
        stderr(&again)
    );
    assert_eq!(again.stdout, out.stdout);
    assert_eq!(
        std::fs::read(out_dir.join("shapes-cnn_fc_maximized.png")).unwrap(),
        figure
    );
    std::fs::remove_dir_all(cache).ok();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, class) in results.iter().zip([0, 2]) {
        assert_eq!(r["prediction"]["class"], class);
        assert_eq!(r["trajectory"].as_array().unwrap().len(), 24);
    }
    assert!(out_dir.join("shapes-cnn_fc_maximized.png").is_file());
    for (bad, message) in [
        (&["--channels", "5-2"][..], "runs backwards"),
        (&["--learning-rate", "-1"][..], "learning rate"),
        (&["--channels", "9"][..], "out of range"),
    ] {
        let mut args = vec![
            "maximize",
            "--model",
            "shapes-cnn",
            "--layer",
            "fc",
            "--steps",
            "2",
        ];
        args.extend_from_slice(bad);
        let out = lumen(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&out).contains(message), "{bad:?}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(out_dir).ok();
}

/// A float32 tensor of a safetensors fixture (values only).
fn safetensors_values(path: &Path, key: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `features`, `receptive-field` and `maximize` take segmentors and detectors (they
/// were refused as classifier-only): a layer is a layer, whatever head reads it.
/// `features` on AutoTimm's DeepLabV3+ and FCOS fixtures prints AutoTimm's own
/// `FeatureVisualizer` statistics and top channels (tools/reference/feature_fixtures.py;
/// 1e-5 relative, as crates/lumen/tests/feature_parity.rs).
#[test]
fn feature_commands_take_segmentors_and_detectors() {
    let fixtures = root().join("crates/lumen-models/tests/fixtures");
    let expected = root().join("crates/lumen/tests/fixtures/task_features.safetensors");
    let out_dir = tmp("task-features");
    std::fs::create_dir_all(&out_dir).unwrap();
    let o = out_dir.display().to_string();
    for (task, model, weights, classes, io, layer, others) in [
        (
            "seg",
            "deeplabv3plus_test_resnet",
            "seg_deeplabv3plus.safetensors",
            "5",
            "seg_deeplabv3plus_io.safetensors",
            "head.aspp",
            "backbone.layer3,head.decoder",
        ),
        (
            "det",
            "fcos_test_resnet",
            "det_fcos.ckpt",
            "3",
            "det_fcos_io.safetensors",
            "fpn.p3",
            "backbone.layer3,fpn.p7",
        ),
    ] {
        let bytes = std::fs::read(fixtures.join(io)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let shape = file.tensor("input").unwrap().shape().to_vec();
        let npy = out_dir.join(format!("{task}.npy"));
        ndarray_npy::write_npy(
            &npy,
            &ArrayD::from_shape_vec(shape, safetensors_values(&fixtures.join(io), "input"))
                .unwrap(),
        )
        .unwrap();
        let w = fixtures.join(weights).display().to_string();
        let n = npy.display().to_string();
        let out = lumen(&[
            "features",
            "--model",
            model,
            "--weights",
            &w,
            "--num-classes",
            classes,
            "--input-npy",
            &n,
            "--layer",
            layer,
            "--layers",
            others,
            "--top",
            "5",
            "--out",
            &o,
            "--json",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let results = &json["results"];
        let statistics = results["statistics"].as_array().unwrap();
        assert_eq!(statistics.len(), 3, "{model}");
        for s in statistics {
            let name = s["layer"].as_str().unwrap();
            for (i, image) in s["per_image"].as_array().unwrap().iter().enumerate() {
                let want = safetensors_values(&expected, &format!("{task}_stats_{name}_{i}"));
                for (k, key) in ["mean", "std", "min", "max", "sparsity"].iter().enumerate() {
                    let got = image[key].as_f64().unwrap();
                    // A mean is compared at the scale of the std (see feature_parity.rs).
                    let scale = match *key {
                        "mean" => want[0].abs().max(want[1]),
                        _ => want[k].abs(),
                    } as f64;
                    assert!(
                        (got - want[k] as f64).abs() <= 1e-5 * scale.max(1e-6),
                        "{model} {name} image {i} {key}: {got} vs {}",
                        want[k]
                    );
                }
                assert_eq!(image["active_channels"], want[5] as u64, "{model} {name}");
                assert_eq!(image["num_channels"], want[6] as u64, "{model} {name}");
            }
        }
        for (i, image) in results["channels"].as_array().unwrap().iter().enumerate() {
            let want = safetensors_values(&expected, &format!("{task}_top_{layer}_{i}"));
            let got: Vec<u64> = image
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["channel"].as_u64().unwrap())
                .collect();
            let want: Vec<u64> = want.chunks(2).map(|c| c[0] as u64).collect();
            assert_eq!(got, want, "{model} {layer} image {i}: top channels");
        }
        let figure = format!("input0_{}_features.png", layer.replace('.', "-"));
        assert!(out_dir.join(&figure).is_file(), "{figure}");
    }

    // The bundled models: a receptive field of an FPN level, a class of the segmentor
    // maximised (its logits are the `head.classifier` layer), and a detector's
    // channel, with what each model makes of the image.
    let scenes = scene_folder("task-features-scenes", 5, 1);
    let scene = scenes.join("scene0.png").display().to_string();
    let out = lumen(&[
        "receptive-field",
        "--model",
        "shapes-det",
        &scene,
        "--layer",
        "fpn.p3",
        "--out",
        &o,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = &json["results"][0];
    assert!(field["support"].is_array(), "an empty field: {field}");
    assert_eq!(
        json["files"].as_array().unwrap().len(),
        1,
        "{}",
        json["files"]
    );
    let out = lumen(&[
        "receptive-field",
        "--model",
        "shapes-seg",
        "--mode",
        "theoretical",
        "--layer",
        "backbone.layer3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("receptive field 103 px, jump 16 px"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (model, layer, channel, seen) in [
        ("shapes-seg", "head.classifier", "1", "shares"),
        ("shapes-det", "fpn.p3", "33", "detections"),
    ] {
        let out = lumen(&[
            "maximize",
            "--model",
            model,
            "--layer",
            layer,
            "--channels",
            channel,
            "--steps",
            "16",
            "--out",
            &o,
            "--json",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let result = &json["results"][0];
        let trajectory: Vec<f64> = result["trajectory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            trajectory.last() > trajectory.first(),
            "{model} {layer} #{channel} did not rise: {trajectory:?}"
        );
        assert!(result["prediction"][seen].is_array(), "{model}: {result}");
        let figure = format!("{model}_{}_maximized.png", layer.replace('.', "-"));
        assert!(out_dir.join(&figure).is_file(), "{figure}");
    }
    std::fs::remove_dir_all(out_dir).ok();
}

#[test]
fn explain_on_a_segmentor_writes_maps_uncertainty_and_figures() {
    let checkpoint = root()
        .join("crates/lumen-models/tests/fixtures/seg_deeplabv3plus.ckpt")
        .display()
        .to_string();
    let i = input();
    let out_dir = tmp("segmentation");
    let (maps, uncertainty) = (out_dir.join("maps.npy"), out_dir.join("u.npy"));
    let (m, u, o) = (
        maps.display().to_string(),
        uncertainty.display().to_string(),
        out_dir.display().to_string(),
    );
    let base = [
        "explain",
        "--model",
        "deeplabv3plus_test_resnet",
        "--weights",
        &checkpoint,
        "--num-classes",
        "5",
        "--input-npy",
        &i,
        "--method",
        "gradcam",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--uncertainty",
        "margin",
        "--save-raw",
        &m,
        "--save-uncertainty",
        &u,
        "--out",
        &o,
        "--json",
        "-q",
    ]);
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        // The default target: the dominant class over its predicted region.
        assert_eq!(r["target"]["class"], r["prediction"]["dominant"]);
        assert_eq!(r["target"]["region"], "predicted");
        assert_eq!(r["layer"], "backbone.layer4");
        assert!(r["target"]["pixels"].as_f64().unwrap() > 0.0);
        let png = PathBuf::from(r["paths"][0].as_str().unwrap());
        assert!(
            image::open(&png).unwrap().width() > 600,
            "{}",
            png.display()
        );
    }
    assert_eq!(saved_shape(&maps), [2, 160, 160]);
    assert_eq!(saved_shape(&uncertainty), [2, 160, 160]);
    let margin: ArrayD<f32> = ndarray_npy::read_npy(&uncertainty).unwrap();
    assert!(margin.iter().all(|v| (0.0..=1.0).contains(v)));

    // A pixel target with a class; the JSON says which pixel.
    let mut args = base.to_vec();
    args.extend([
        "--target-class",
        "3",
        "--region",
        "10,20",
        "--json",
        "--no-figures",
    ]);
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["results"][1]["target"]["region"]["pixel"]["y"], 20);
    assert_eq!(json["results"][1]["target"]["pixels"], 1.0);

    // Mistakes are usage errors naming the flag.
    for (extra, message) in [
        (&["--region", "whole"][..], "needs --target-class"),
        (&["--region", "3,x", "--target-class", "1"], "X,Y"),
        (&["--target-class", "5"], "out of range"),
        (
            &["--target-class", "1,2,3"],
            "one for every image or one per image",
        ),
        (&["--save-uncertainty", "u.npy"], "needs --uncertainty"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        args.push("--no-figures");
        let out = lumen(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
    let out = explain(
        "test_resnet",
        &["--method", "gradcam", "--uncertainty", "entropy"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("segmentation models"),
        "{}",
        stderr(&out)
    );
    let out = lumen(&[
        "compare",
        "--model",
        "fcn_resnet18",
        "--methods",
        "gradcam",
        &i,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("needs --weights (an AutoTimm SemanticSegmentor"),
        "{}",
        stderr(&out)
    );
    // Own weights for a bundled model: read in its bundled format with its own 5
    // classes (the run goes on to the input, the same error as the bundled weights
    // give); another class count is refused, naming the model's.
    let seg_weights = root()
        .join("crates/lumen-models/weights/shapes-seg.safetensors")
        .display()
        .to_string();
    let seg = |extra: &[&str]| {
        let mut args = vec!["explain", "--model", "shapes-seg", "--method", "gradcam"];
        args.extend_from_slice(extra);
        args.extend(["--input-npy", &i]);
        lumen(&args)
    };
    let bundled = seg(&[]);
    let own = seg(&["--weights", &seg_weights]);
    assert_eq!(own.status.code(), Some(1));
    assert!(
        stderr(&own).contains("expected [B,3,128,128], found [2, 3, 160, 160]")
            && stderr(&own) == stderr(&bundled),
        "{}",
        stderr(&own)
    );
    let out = seg(&["--weights", &seg_weights, "--num-classes", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`shapes-seg` has 5 classes (background, circle"),
        "{}",
        stderr(&out)
    );
    // Layers of a segmentor: the backbone's under `backbone.`, then the head's.
    let out = lumen(&["layers", "--model", "deeplabv3plus_test_resnet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for layer in [
        "backbone.layer4",
        "backbone.layer3.0.conv2",
        "backbone.layer4.0.downsample",
        "head.aspp",
        "head.decoder",
        "head.classifier",
    ] {
        assert!(text.contains(layer), "{layer} missing:\n{text}");
    }
    // Points inside a block, in one column with the others; the shortcut's projection
    // is off the main path and has no field of its own.
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(line("backbone.layer3.0.conv2").contains("receptive field 71 px, jump 16"));
    assert!(!line("backbone.layer4.0.downsample").contains("receptive field"));
    let column = |name: &str| line(name).find("feature map").unwrap();
    assert_eq!(column("backbone.layer4.0.downsample"), column("head.aspp"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("backbone.layer4 ") && l.contains("(default)"))
    );
}

#[test]
fn explain_on_a_detector_writes_one_map_per_box() {
    // The detector fixture's input as an array file.
    let fixtures = root().join("crates/lumen-models/tests/fixtures");
    let bytes = std::fs::read(fixtures.join("det_fcos_io.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("input").unwrap();
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let out_dir = tmp("detection");
    std::fs::create_dir_all(&out_dir).unwrap();
    let input = out_dir.join("input.npy");
    let array = ArrayD::from_shape_vec(view.shape().to_vec(), values).unwrap();
    ndarray_npy::write_npy(&input, &array).unwrap();
    let weights = fixtures.join("det_fcos.ckpt").display().to_string();
    let (i, maps) = (input.display().to_string(), out_dir.join("maps.npy"));
    let m = maps.display().to_string();
    let base = [
        "explain",
        "--model",
        "fcos_test_resnet",
        "--weights",
        &weights,
        "--num-classes",
        "3",
        "--input-npy",
        &i,
        "--method",
        "gradcam",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--box",
        "0,1",
        "--save-raw",
        &m,
        "--json",
        "-q",
        "--no-figures",
    ]);
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(saved_shape(&maps), [4, 256, 256]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &json["results"][0];
    assert_eq!(first["explained"], serde_json::json!([0, 1]));
    assert_eq!(first["rows"], serde_json::json!({"start": 0, "end": 2}));
    assert_eq!(first["detections"][0]["box"].as_array().unwrap().len(), 4);
    // Renormalised in its box: zero outside the box, maximum 1 inside.
    let mut args = base.to_vec();
    args.extend([
        "--box",
        "0",
        "--renormalize",
        "--save-raw",
        &m,
        "-q",
        "--no-figures",
    ]);
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let renormalized: ArrayD<f32> = ndarray_npy::read_npy(&maps).unwrap();
    assert_eq!(renormalized.shape(), [2, 256, 256]);
    // The fixture's best boxes are under a pixel, so the maps are zero almost
    // everywhere; the values themselves are checked in crates/lumen/tests/detection_parity.rs.
    let zeros = renormalized.iter().filter(|v| **v == 0.0).count();
    assert!(zeros > 2 * 256 * 250, "{zeros} zeros");
    // D-RISE through the same command: one map per box too.
    let mut args = base.to_vec();
    args.retain(|a| *a != "gradcam");
    args.extend([
        "drise",
        "--masks",
        "8",
        "--box",
        "0",
        "--save-raw",
        &m,
        "-q",
        "--no-figures",
    ]);
    let out = lumen(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(saved_shape(&maps), [2, 256, 256]);
    for (extra, message) in [
        (&["--box", "999"][..], "does not exist"),
        // Was explained and drawn twice.
        (&["--box", "1,0,1"], "box 1 is given twice"),
        (&["--target-class", "1"], "--target-class does not apply"),
        (&["--score-threshold", "1.5"], "score threshold"),
        (
            &["--detection-target", "objectness"],
            "box-score, class-logit, centerness",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        args.push("--no-figures");
        let out = lumen(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
}

/// `--batch-size` of explain and compare sets the images per pass (counted by
/// `--profile`'s forward calls) and changes no map.
#[test]
fn explain_and_compare_run_their_passes_in_batch_size() {
    let images = shape_folder("pass-images", 31, 3, "p");
    let i = images.display().to_string();
    let forwards = |out: &std::process::Output| -> usize {
        assert!(out.status.success(), "{}", stderr(out));
        let text = stderr(out);
        let table = text.split("profile:").nth(1).expect("a profile table");
        let row = table
            .lines()
            .find(|l| l.starts_with("forward"))
            .unwrap_or_else(|| panic!("no forward row in\n{table}"));
        row["forward".len()..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let explain_run = |extra: &[&str], raw: &Path| {
        let r = raw.display().to_string();
        let mut args = vec![
            "--profile",
            "explain",
            "--model",
            "shapes-cnn",
            &i,
            "--method",
            "gradcam",
            "--no-figures",
            "--save-raw",
            &r,
        ];
        args.extend_from_slice(extra);
        let out = lumen(&args);
        let maps: ArrayD<f32> = ndarray_npy::read_npy(raw).unwrap();
        (forwards(&out), maps)
    };
    let (raw_whole, raw_single) = (tmp("pass-whole.npy"), tmp("pass-single.npy"));
    let (whole_passes, whole) = explain_run(&[], &raw_whole);
    let (single_passes, single) = explain_run(&["--batch-size", "1"], &raw_single);
    assert_eq!((whole_passes, single_passes), (1, 3));
    assert_eq!(whole.shape(), &[3, 128, 128]);
    let diff = whole
        .iter()
        .zip(single.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-5, "maps differ by {diff} between pass sizes");

    let compare_run = |extra: &[&str]| {
        let mut args = vec![
            "--profile",
            "compare",
            "--model",
            "shapes-cnn",
            &i,
            "--methods",
            "gradcam,layercam",
            "--no-figures",
        ];
        args.extend_from_slice(extra);
        forwards(&lumen(&args))
    };
    assert_eq!(compare_run(&["--batch-size", "2"]), 2 * compare_run(&[]));
}

/// `--profile` counts the passes of the commands outside the methods too: each
/// `maximize` step is a forward and a backward, the gradient receptive field one of
/// each, `features` a forward per chunk's pass, and `evaluate`'s metrics their own
/// stage with their passes as forwards; none of it lands in "other".
#[test]
fn every_computing_command_profiles_its_passes() {
    let images = shape_folder("profile-images", 37, 2, "p");
    let i = images.display().to_string();
    let out = tmp("profile-out");
    let o = out.display().to_string();
    let table = |args: &[&str]| -> Vec<(String, f64, usize)> {
        let mut all = vec!["--profile"];
        all.extend_from_slice(args);
        let run = lumen(&all);
        assert!(run.status.success(), "{args:?}: {}", stderr(&run));
        let text = stderr(&run);
        let table = text.split("profile:").nth(1).expect("a profile table");
        table
            .lines()
            .skip(2)
            .filter(|l| {
                !["other", "wall", "overlapped"]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
            .filter_map(|l| {
                // "name (may hold a space)   ms   calls   share"
                let fields: Vec<&str> = l.split_whitespace().collect();
                let n = fields.len();
                (n >= 4).then(|| {
                    (
                        fields[..n - 3].join(" "),
                        fields[n - 3].parse().unwrap(),
                        fields[n - 2].parse().unwrap(),
                    )
                })
            })
            .collect()
    };
    let calls = |rows: &[(String, f64, usize)], stage: &str| {
        rows.iter()
            .find(|(name, _, _)| name == stage)
            .map_or(0, |(_, _, calls)| *calls)
    };
    let model = ["--model", "shapes-cnn", "--out", &o, "--quiet"];

    // A blank image's probe of the layer, then 3 steps of a forward and a backward
    // each, then the final value.
    let maximize = table(
        &[
            &[
                "maximize",
                "--layer",
                "layer2",
                "--channels",
                "0",
                "--steps",
                "3",
                "--restarts",
                "0",
            ][..],
            &model,
        ]
        .concat(),
    );
    assert_eq!(calls(&maximize, "forward"), 5, "{maximize:?}");
    assert_eq!(calls(&maximize, "backward"), 3, "{maximize:?}");
    assert_eq!(calls(&maximize, "method math"), 3, "{maximize:?}");

    let field = table(
        &[
            &["receptive-field", &i, "--layer", "layer2", "--channel", "1"][..],
            &model,
        ]
        .concat(),
    );
    assert_eq!(calls(&field, "backward"), 1, "{field:?}");
    assert!(calls(&field, "forward") >= 1, "{field:?}");

    let features = table(&[&["features", &i, "--layers", "layer1"][..], &model].concat());
    assert_eq!(calls(&features, "forward"), 1, "{features:?}");

    let evaluate = table(
        &[
            &[
                "evaluate",
                "--images",
                "2",
                "--methods",
                "gradcam",
                "--metrics",
                "deletion_auc,pointing_game",
                "--curve-steps",
                "4",
            ][..],
            &model,
        ]
        .concat(),
    );
    assert!(calls(&evaluate, "metrics") >= 2, "{evaluate:?}");
    // The predictions, the method's pass and the curve's 5 points.
    assert!(calls(&evaluate, "forward") >= 3, "{evaluate:?}");

    // D-RISE on a detector (its passes were in no stage): the prediction's forward,
    // then 8 masks in 2 passes of 4 for the scene's boxes; the masks and their
    // weights are its method math.
    let scene = scene_folder("profile-scene", 5, 1);
    let s = scene.join("scene0.png").display().to_string();
    let drise = table(&[
        "explain",
        "--model",
        "shapes-det",
        &s,
        "--method",
        "drise",
        "--masks",
        "8",
        "--internal-batch-size",
        "4",
        "--out",
        &o,
        "--quiet",
    ]);
    assert_eq!(calls(&drise, "forward"), 3, "{drise:?}");
    assert!(calls(&drise, "method math") >= 2, "{drise:?}");
    assert!(calls(&drise, "post-process") >= 1, "{drise:?}");
}
