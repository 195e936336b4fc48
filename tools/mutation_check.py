#!/usr/bin/env python3
"""Mutation check: plant one plausible bug at a time and run the tests that should
catch it. Every mutation must make its tests fail; one that survives marks a fixture or
an assertion too weak to refute wrong code.

    python3 tools/mutation_check.py [NAME ...]     # all mutations, or the named ones

Each mutation replaces one exact snippet (it must occur exactly once, so a refactor
that moves the code makes the script say so instead of silently testing nothing), runs
its cargo tests, and restores the file whatever happens. About a minute per mutation on
2 cores with a warm target folder (the methods crate and one test binary rebuild).
Exit status: 0 when every mutation was caught, 1 otherwise.

Run it in the checkout it tests, not in a copy (a git worktree) that shares the target
folder: Cargo keys workspace crates by their path inside the workspace, so the copy's
last mutated build would look up to date to the original checkout, whose files are
older. (Seen once: `touch` the sources to force a rebuild.)
"""

import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
METHOD_PARITY = ["cargo", "test", "--workspace", "--test", "method_parity"]
CLI_CHUNKS = ["cargo", "test", "-p", "lumen-cli", "--test", "scale", "chunks"]


def facade_test(name):
    """One integration test binary of the facade."""
    return ["cargo", "test", "-p", "lumen", "--test", name]

# (name, file, original snippet, mutated snippet, test command)
MUTATIONS = [
    (
        "gradcam-weights-as-hirescam",
        "crates/lumen-methods/src/cam.rs",
        """        weighted_sum(
            pass.gradients().mean_dims(&[2, 3]).flatten(1, 3),
            &pass.activations,
        )""",
        """        channel_sum(pass.gradients() * pass.activations.clone())""",
        METHOD_PARITY,
    ),
    (
        "layercam-as-gradcam-elementwise",
        "crates/lumen-methods/src/cam.rs",
        "channel_sum(pass.gradients().clamp_min(0.0) * pass.activations.clone())",
        "channel_sum((pass.gradients() * pass.activations.clone()).clamp_min(0.0))",
        METHOD_PARITY,
    ),
    (
        "xgradcam-without-its-normaliser",
        "crates/lumen-methods/src/cam.rs",
        "(pass.gradients() * a.clone() / (sum_a + 1e-7))",
        "(pass.gradients() * a.clone() + sum_a * 0.0)",
        METHOD_PARITY,
    ),
    (
        "integrated-gradients-sign-flipped",
        "crates/lumen-methods/src/gradient.rs",
        "let attributions = delta * total_grad;",
        "let attributions = (delta * total_grad).neg();",
        METHOD_PARITY,
    ),
    (
        "integrated-gradients-zero-delta",
        "crates/lumen-methods/src/gradient.rs",
        ".map(|i| sums[i] - (end_scores[i] - end_scores[b + i]))",
        ".map(|i| 0.0 * (sums[i] - (end_scores[i] - end_scores[b + i])))",
        METHOD_PARITY,
    ),
    (
        "rollout-vit-explain-normalisation-dropped",
        "crates/lumen-methods/src/attention.rs",
        "RolloutCompat::VitExplain => a.clone() / a.sum_dim(2).reshape([b, 1, n]),",
        "RolloutCompat::VitExplain => a.clone() / a.sum_dim(2),",
        METHOD_PARITY,
    ),
    (
        "rollout-discard-ignored",
        "crates/lumen-methods/src/attention.rs",
        "    let k = ((n * n) as f32 * ratio) as usize;\n    if k == 0 {",
        "    let k = ((n * n) as f32 * ratio) as usize;\n    if k < usize::MAX {",
        METHOD_PARITY,
    ),
    (
        "vargrad-as-mean-absolute-deviation",
        "crates/lumen-methods/src/noise.rs",
        "(samples - mean).powi_scalar(2).mean_dim(1)",
        "(samples - mean).abs().mean_dim(1)",
        METHOD_PARITY,
    ),
    (
        "vargrad-chunk-merge-without-cross-term",
        "crates/lumen-methods/src/noise.rs",
        "Some(a + b + delta.clone().powi_scalar(2) * cross)",
        "Some(a + b + delta.clone().powi_scalar(2) * (cross * 0.0))",
        METHOD_PARITY,
    ),
    (
        "smoothgrad-noise-doubled",
        "crates/lumen-methods/src/noise.rs",
        "                standard * column\n",
        "                standard * (column * 2.0)\n",
        METHOD_PARITY,
    ),
    (
        "randomisation-verdict-on-signed-spearman",
        "crates/lumen-metrics/src/sanity.rs",
        "abs_rho += r.abs();",
        "abs_rho += r;",
        ["cargo", "test", "--workspace", "--test", "sanity"],
    ),
    (
        "pointing-tolerance-unscaled",
        "crates/lumen-metrics/src/localization.rs",
        "self.tolerance * region.height.min(region.width) as f32 / TOLERANCE_REFERENCE_SIDE",
        "self.tolerance + 0.0 * region.height.min(region.width) as f32 / TOLERANCE_REFERENCE_SIDE",
        ["cargo", "test", "-p", "lumen-metrics", "--lib"],
    ),
    (
        "detection-score-without-centerness",
        "crates/lumen-tasks/src/detection.rs",
        "scores.push(class * center);",
        "scores.push(class + center * 0.0);",
        facade_test("detection_parity"),
    ),
    (
        "detection-nms-across-classes",
        "crates/lumen-tasks/src/detection.rs",
        "k.label == candidate.label\n                        && box_iou",
        "(k.label == candidate.label || k.label != candidate.label)\n                        && box_iou",
        # The parity fixture's detections of different labels never overlap past 0.5;
        # the unit test's do.
        ["cargo", "test", "-p", "lumen-tasks", "--lib"],
    ),
    (
        "box-score-target-without-iou",
        "crates/lumen-tasks/src/detection.rs",
        "iou_tensor(candidate, &reference.bbox) + score",
        "iou_tensor(candidate, &reference.bbox) * 0.0 + score",
        facade_test("detection_parity"),
    ),
    (
        "drise-weight-without-objectness",
        "crates/lumen-tasks/src/drise.rs",
        "box_iou(&target.bbox, &d.bbox) * objectness[m * locations + d.location] * cosine",
        "box_iou(&target.bbox, &d.bbox) * cosine",
        facade_test("detection_parity"),
    ),
    (
        "segmentation-target-ignores-its-mask",
        "crates/lumen-core/src/target.rs",
        "Some(mask) => row.copy_from_slice(mask),",
        "Some(_) => row.fill(1.0),",
        facade_test("segmentation_parity"),
    ),
    (
        "batch-keeps-every-map",
        "crates/lumen/src/api.rs",
        "if !run.keep_maps {",
        "if false {",
        facade_test("batch_outcome"),
    ),
    (
        "pixel-classes-resized-with-aligned-corners",
        "crates/lumen-tasks/src/segmentation.rs",
        ".with_align_corners(false)\n            .with_output_size([h, w]),",
        ".with_align_corners(true)\n            .with_output_size([h, w]),",
        facade_test("segmentation_parity"),
    ),
    (
        "segmentation-region-rounded-up",
        "crates/lumen-tasks/src/segmentation.rs",
        ".map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })",
        ".map(|(s, c)| if *c > 0.0 { (s / c).ceil() } else { 0.0 })",
        ["cargo", "test", "-p", "lumen-tasks", "--lib"],
    ),
    (
        "entropy-normalised-by-class-count",
        "crates/lumen-tasks/src/segmentation.rs",
        "entropy / (c as f32).ln()",
        "entropy / (c as f32)",
        facade_test("segmentation_parity"),
    ),
    (
        "feature-std-biased",
        "crates/lumen-features/src/statistics.rs",
        "        / (n - 1.0).max(1.0);",
        "        / n;",
        facade_test("feature_parity"),
    ),
    (
        "gradient-receptive-field-signed",
        "crates/lumen-features/src/receptive.rs",
        "gradient.abs().sum_dim(1)",
        "gradient.sum_dim(1)",
        facade_test("feature_parity"),
    ),
    (
        "maximize-without-spectrum-scaling",
        "crates/lumen-features/src/maximize.rs",
        ".matmul(p * scale.clone())",
        ".matmul(p + scale.clone() * 0.0)",
        facade_test("maximize"),
    ),
    (
        "maximize-adam-without-bias-correction",
        "crates/lumen-features/src/maximize.rs",
        "let m_hat = m.clone() / (1.0 - beta1.powi(step as i32));",
        "let m_hat = m.clone() + 0.0 * (1.0 - beta1.powi(step as i32));",
        facade_test("maximize"),
    ),
    (
        "maximize-colour-matrix-unscaled",
        "crates/lumen-features/src/maximize.rs",
        ".map(|v| v / max_norm)",
        ".map(|v| v / (max_norm * 0.0 + 1.0))",
        facade_test("maximize"),
    ),
    (
        "deletion-auc-as-plain-mean",
        "crates/lumen-metrics/src/faithfulness.rs",
        "(sum - values[0] / 2.0 - values[n - 1] / 2.0) / (n - 1) as f32",
        "sum / n as f32",
        facade_test("metric_parity"),
    ),
    (
        "average-drop-unclamped",
        "crates/lumen-metrics/src/faithfulness.rs",
        "(y - o).max(0.0) / y * 100.0",
        "(y - o) / y * 100.0",
        facade_test("metric_parity"),
    ),
    (
        "sensitivity-not-relative",
        "crates/lumen-metrics/src/sensitivity.rs",
        "(diff / norm) as f32",
        "(diff + 0.0 * norm) as f32",
        facade_test("metric_parity"),
    ),
    (
        "complexity-in-bits",
        "crates/lumen-metrics/src/complexity.rs",
        "p * (p + 1e-12).ln()",
        "p * (p + 1e-12).log2()",
        facade_test("metric_parity"),
    ),
    (
        "monitor-step-schedule-off-by-one",
        "crates/lumen-train/src/monitor.rs",
        "self.every_n_steps.is_some_and(|n| step % n == 0)",
        "self.every_n_steps.is_some_and(|n| (step + 1) % n == 0)",
        ["cargo", "test", "-p", "lumen-train"],
    ),
    (
        "rise-masks-upsampled-with-aligned-corners",
        "crates/lumen-tasks/src/drise.rs",
        ".with_align_corners(false)",
        ".with_align_corners(true)",
        facade_test("detection_parity"),
    ),
    (
        "drise-class-similarity-not-a-cosine",
        "crates/lumen-tasks/src/drise.rs",
        "row[target.label] / norm",
        "row[target.label] + 0.0 * norm",
        facade_test("detection_parity"),
    ),
    (
        "margin-uncertainty-not-complemented",
        "crates/lumen-tasks/src/segmentation.rs",
        "(p1 - p2).neg() + 1.0",
        "(p1 - p2).neg() + 0.0",
        facade_test("segmentation_parity"),
    ),
    (
        "road-imputation-weights-swapped",
        "crates/lumen-metrics/src/imputation.rs",
        "    (1, 1, 1.0 / 12.0),\n    (0, 1, 1.0 / 6.0),",
        "    (1, 1, 1.0 / 6.0),\n    (0, 1, 1.0 / 12.0),",
        facade_test("metric_parity"),
    ),
    (
        "relevance-mass-counts-negative-relevance",
        "crates/lumen-metrics/src/localization.rs",
        "        let v = v.max(0.0) as f64;\n        total += v;",
        "        let v = v.abs() as f64;\n        total += v;",
        facade_test("metric_parity"),
    ),
    (
        "theoretical-receptive-field-jump-not-accumulated",
        "crates/lumen-features/src/receptive.rs",
        "                jump *= op.stride;",
        "                jump = op.stride;",
        facade_test("feature_parity"),
    ),
    (
        "colormap-lookup-rounded",
        "crates/lumen-report/src/colormap.rs",
        "let index = ((t * 256.0) as usize).min(255);",
        "let index = ((t * 255.0).round() as usize).min(255);",
        ["cargo", "test", "-p", "lumen-report", "--lib"],
    ),
    (
        "gradcam-plus-plus-without-the-factor-two",
        "crates/lumen-methods/src/cam.rs",
        "(g2.mul_scalar(2.0) + sum_a * g3 + 1e-6)",
        "(g2.mul_scalar(1.0) + sum_a * g3 + 1e-6)",
        METHOD_PARITY,
    ),
    (
        "scorecam-weights-without-softmax",
        "crates/lumen-methods/src/cam.rs",
        "            softmax(scores.reshape([b, c]), 1),",
        "            scores.reshape([b, c]),",
        METHOD_PARITY,
    ),
    (
        "ssim-constants-swapped",
        "crates/lumen-metrics/src/sanity.rs",
        "    let c1 = (0.01 * data_range as f64).powi(2);",
        "    let c1 = (0.03 * data_range as f64).powi(2);",
        facade_test("metric_parity"),
    ),
    (
        "spearman-ties-ranked-in-order",
        "crates/lumen-metrics/src/sanity.rs",
        "        let rank = (start + 1 + end) as f64 / 2.0;\n        for &i in &order[start..end] {\n            ranks[i] = rank;\n        }",
        "        for (k, &i) in order[start..end].iter().enumerate() {\n            ranks[i] = (start + 1 + k) as f64;\n        }",
        facade_test("metric_parity"),
    ),
    (
        "gini-without-abs",
        "crates/lumen-metrics/src/axioms.rs",
        "map.iter().map(|v| v.abs() as f64 + 1e-7).collect();",
        "map.iter().map(|v| *v as f64 + 1e-7).collect();",
        facade_test("metric_parity"),
    ),
    # Bad input (the sweep of 2026-12-01): a NaN batch explained as NaN or zero maps.
    (
        "check-input-lets-non-finite-through",
        "crates/lumen-core/src/model.rs",
        "        if !finite {",
        "        if !finite && false {",
        facade_test("library_inputs"),
    ),
    # A dense verdict that lets a tie with a floor pass as beating it.
    (
        "dense-caution-ties-beat-the-floor",
        "crates/lumen/src/task_evaluation.rs",
        "let beaten = if lower { v < fv } else { v > fv };",
        "let beaten = if lower { v <= fv } else { v >= fv };",
        ["cargo", "test", "-p", "lumen", "--lib", "task_evaluation"],
    ),
    # Restarts of stuck maximisations that restart from the same start (still stuck).
    (
        "maximize-restart-without-more-noise",
        "crates/lumen-features/src/maximize.rs",
        "                scale *= RESTART_FACTOR;",
        "                scale *= 1.0;",
        facade_test("maximize"),
    ),
    # A folder explained in chunks: each chunk's targets and box rows are its own.
    (
        "chunk-targets-from-the-chunk-start",
        "crates/lumen-cli/src/explain.rs",
        "targets: crate::args::targets_at(&targets, &chunk.positions),",
        "targets: crate::args::targets_at(&targets, &(0..chunk.positions.len()).collect::<Vec<_>>()),",
        CLI_CHUNKS,
    ),
    (
        "chunk-box-rows-restart-at-zero",
        "crates/lumen-cli/src/detect.rs",
        "image.rows = image.rows.start + before..image.rows.end + before;",
        "let _ = before;",
        CLI_CHUNKS,
    ),
    # `features` over a folder in chunks: the random pick seeded from each chunk's
    # start, and the statistics of the last chunk only.
    (
        "features-chunk-seed-restarts",
        "crates/lumen-cli/src/features.rs",
        "let seed = args.seed.wrapping_add(names.len() as u64);",
        "let seed = args.seed;",
        CLI_CHUNKS,
    ),
    (
        "features-statistics-of-the-last-chunk",
        "crates/lumen-cli/src/features.rs",
        "lumen::features::append_layers(&mut statistics, chunk_statistics)?;",
        "statistics = chunk_statistics;",
        CLI_CHUNKS,
    ),
    # A report written chunk by chunk: each chunk's sections numbered from zero (the
    # plots and pictures of one image would take another's).
    (
        "report-sections-numbered-per-chunk",
        "crates/lumen/src/api.rs",
        "let first = self.images + g * group;",
        "let first = g * group;",
        CLI_CHUNKS,
    ),
    # The receptive field's default unit: always channel 0 (often silent there).
    (
        "receptive-field-default-channel-zero",
        "crates/lumen-features/src/receptive.rs",
        ".fold((0, f32::NEG_INFINITY), |best, (k, &v)| {",
        ".fold((0, f32::INFINITY), |best, (k, &v)| {",
        ["cargo", "test", "-p", "lumen-features", "--test", "receptive"],
    ),
    # D-RISE as a method: a row with several boxes keeps only its first box's map.
    (
        "drise-method-first-box-only",
        "crates/lumen/src/detection.rs",
        ".narrow(0, rows.start, rows.len())",
        ".narrow(0, rows.start, 1)",
        facade_test("detection_ground_truth"),
    ),
    # ... its masks drawn from a fixed seed whatever the options say.
    (
        "drise-method-ignores-the-seed",
        "crates/lumen/src/detection.rs",
        "seed: options.seed.unwrap_or(0),",
        "seed: 0,",
        facade_test("detection_ground_truth"),
    ),
    # ... and the zoo detectors building their methods from the registry alone again
    # (compare, report and batch refused drise as unknown).
    (
        "drise-not-a-method-of-detectors",
        "crates/lumen/src/detection.rs",
        "DRISE => Ok(Box::new(Drise::new(drise_config(options))?)),",
        "DRISE => lumen_methods::by_name(name, options),",
        ["cargo", "test", "-p", "lumen-cli", "--test", "cli", "drise"],
    ),
    (
        "convolution-point-after-its-batchnorm",
        "crates/lumen-models/src/resnet.rs",
        "bn.forward(tap.visit(conv_name, conv.forward(x)))",
        "tap.visit(conv_name, bn.forward(conv.forward(x)))",
        ["cargo", "test", "-p", "lumen", "--test", "method_parity", "inside"],
    ),
    (
        "fpn-level-before-its-relu",
        "crates/lumen-models/src/detection.rs",
        """            last = relu(conv.forward(last));
            outputs.push(last.clone());""",
        """            outputs.push(conv.forward(last.clone()));
            last = relu(outputs.last().unwrap().clone());""",
        ["cargo", "test", "-p", "lumen", "--test", "feature_parity", "segmentor"],
    ),
    (
        "vit-mlp-activation-before-its-gelu",
        "crates/lumen-models/src/vit.rs",
        'let hidden = tap.visit(&at("mlp.act"), gelu(hidden));',
        'let hidden = gelu(tap.visit(&at("mlp.act"), hidden));',
        ["cargo", "test", "-p", "lumen", "--test", "method_parity", "inside"],
    ),
    (
        "vit-attention-output-after-the-residual-sum",
        "crates/lumen-models/src/vit.rs",
        'x = x + tap.visit(&at("attn.proj"), attended);',
        'x = tap.visit(&at("attn.proj"), x + attended);',
        ["cargo", "test", "-p", "lumen", "--test", "method_parity", "inside"],
    ),
]


def run(name, path, original, mutated, command):
    full = os.path.join(ROOT, path)
    with open(full) as f:
        source = f.read()
    count = source.count(original)
    if count != 1:
        return f"NOT APPLIED (snippet found {count} times in {path})"
    try:
        with open(full, "w") as f:
            f.write(source.replace(original, mutated))
        started = time.time()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        took = time.time() - started
        output = result.stdout + result.stderr
        if "error[E" in output or "could not compile" in output:
            return f"DID NOT COMPILE ({took:.0f} s)"
        failed = [line for line in output.splitlines() if line.endswith("... FAILED")]
        if result.returncode != 0:
            return f"caught ({took:.0f} s): " + ", ".join(l.split()[1] for l in failed)
        return f"SURVIVED ({took:.0f} s)"
    finally:
        with open(full, "w") as f:
            f.write(source)


def main():
    wanted = set(sys.argv[1:])
    unknown = wanted - {m[0] for m in MUTATIONS}
    if unknown:
        sys.exit(f"unknown mutations {sorted(unknown)}; known: {[m[0] for m in MUTATIONS]}")
    survived = 0
    for mutation in MUTATIONS:
        if wanted and mutation[0] not in wanted:
            continue
        verdict = run(*mutation)
        print(f"{mutation[0]}: {verdict}", flush=True)
        survived += not verdict.startswith("caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
