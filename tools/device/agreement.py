#!/usr/bin/env python3
"""Do Lumen's maps on a GPU agree with the references on the same GPU, on every GPU
backend and precision? Run by tools/device/run.sh on the device machine (it also runs
on a CPU, for a dry run of the kit: `--torch-device cpu --devices tch:cpu`).

One seeded timm model (random weights, as in benches/peers) and one seeded batch, each
image explained for its predicted class; `peer_lumen --save-maps` (the maps `lumen
explain --save-raw` writes) on each Lumen device and precision; then per method:
- against the reference library on the torch device, float32 (TF32 off: run.sh sets
  NVIDIA_TF32_OVERRIDE=0): pytorch-grad-cam's GradCAM and GradCAM++ (maps in [0, 1])
  and captum's Saliency (the signed input gradient, abs=False), IntegratedGradients
  (Gauss-Legendre, 50 steps, zero baseline);
- the same numbers for every Lumen device and precision, so that wgpu on a real GPU
  and float16/bfloat16 are measured against the reference, not against tch.

Each row: the largest absolute difference of the maps, each divided by the reference's
largest absolute value (so 1e-3 means 0.1% of the map's range), and the Spearman rank
correlation of the flattened maps (scipy's, ties averaged). The generator asserts that
every image's reference map has content and that the nearest wrong answer is more than
5% away (GradCAM against GradCAM++ and back; saliency against the zero map; IG against
saliency), so that a small difference is a finding. Float32 passes within 1e-3, or
within twice the reference's own error where that is larger: captum's saliency and IG
against the same attributions in float64 on the same GPU, and IG against itself with
another internal batch (cuDNN picks its float32 algorithms per shape, and they differ
in accuracy; measured there, printed with the table, which also gives each Lumen map's
distance from the float64 one).
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches" / "peers"))
from peers import seeded_model_and_batch, write_atomically, write_for_lumen  # noqa: E402

# float32 on two backends differs by summation order: the parity suites hold CAMs to
# 1e-3 and gradients to 1e-4 of the map's range (crates/lumen/tests/method_parity.rs);
# a real bug is far above either.
F32_TOLERANCE = 1e-3


def compare(lumen_map, reference):
    """(max |difference| / max |reference|, Spearman rank correlation)."""
    lumen_map, reference = np.asarray(lumen_map, np.float64), np.asarray(reference, np.float64)
    assert lumen_map.shape == reference.shape, (lumen_map.shape, reference.shape)
    scale = np.abs(reference).max()
    difference = float(np.abs(lumen_map - reference).max() / scale) if scale > 0 else float("inf")
    correlation = float(spearmanr(lumen_map.ravel(), reference.ravel()).statistic)
    return difference, correlation


def references(model, x, classes, steps):
    from captum.attr import IntegratedGradients, Saliency
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(c) for c in classes]
    target = torch.tensor(classes, device=x.device)
    out = {}
    for name, kind in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        with kind(model=model, target_layers=[model.layer4]) as cam:
            out[name] = cam(input_tensor=x, targets=targets)
    out["saliency"] = Saliency(model).attribute(x, target=target, abs=False).detach().cpu().numpy()
    out["ig"] = IntegratedGradients(model).attribute(
        x, target=target, n_steps=steps, method="gausslegendre", internal_batch_size=steps
    ).detach().cpu().numpy()
    # The reference's own error on this device, two ways: against the same attribution
    # in float64 (cuDNN's float32 algorithms differ in accuracy, and it picks them per
    # shape), and against itself with another internal batch. A Lumen difference within
    # that is not a finding; the float64 maps also measure Lumen's error directly.
    model64, x64 = copy.deepcopy(model).double(), x.double()
    exact = {
        "saliency": Saliency(model64).attribute(x64, target=target, abs=False).detach().cpu().numpy(),
        "ig": IntegratedGradients(model64).attribute(
            x64, target=target, n_steps=steps, method="gausslegendre", internal_batch_size=steps
        ).detach().cpu().numpy(),
    }
    del model64
    other_batch = IntegratedGradients(model).attribute(
        x, target=target, n_steps=steps, method="gausslegendre", internal_batch_size=steps // 2 + 1
    ).detach().cpu().numpy()
    spread = {name: compare(out[name], exact[name])[0] for name in exact}
    spread["ig"] = max(spread["ig"], compare(other_batch, out["ig"])[0])
    # The fixture must be able to fail: every image's map has content, and the nearest
    # wrong answer is far from it.
    for name, maps in out.items():
        flat = np.asarray(maps).reshape(len(classes), -1)
        assert (flat.max(1) > flat.min(1)).all(), f"{name}: an image's reference map is constant"
    nearest = {"gradcam": out["gradcam++"], "gradcam++": out["gradcam"],
               "saliency": np.zeros_like(out["saliency"]), "ig": out["saliency"]}
    for name, wrong in nearest.items():
        difference, _ = compare(wrong, out[name])
        assert difference > 0.05, f"{name}: its nearest neighbour is within {difference:.3g}"
    return out, spread, exact


def lumen_maps(peer_lumen, weights, input_path, args, device, precision, methods, folder):
    """({method: maps}, seconds, error): one peer_lumen process for all methods.

    It runs in the temporary folder: a gpu-autotune build keeps its tuning database
    under the Cargo workspace it runs in, and run.sh's speed steps measure that
    database empty and then read back in the repository."""
    command = [str(peer_lumen), "--model", args.model, "--weights", str(weights),
               "--input", str(input_path), "--works", ",".join(methods), "--device", device,
               "--precision", precision, "--heavy-images", str(args.images), "--repeats", "1",
               "--steps", str(args.steps), "--classes", ",".join(str(c) for c in args.classes),
               "--save-maps", str(folder)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder.parent)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        return None, seconds, (result.stderr or result.stdout).strip()[-500:]
    return {method: np.load(folder / f"{method}.npy") for method in methods}, seconds, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-lumen", required=True, help="the peer_lumen binary (benches)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--torch-device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--devices", default="tch:cuda:0,wgpu", help="Lumen devices, comma-separated")
    parser.add_argument("--half-devices", default="tch:cuda:0",
                        help="devices also run in --half-precisions (comma-separated; empty: none)")
    parser.add_argument("--half-precisions", default="f16,bf16")
    parser.add_argument("--autotune-peer-lumen",
                        help="peer_lumen built with wgpu and gpu-autotune: its wgpu maps are checked last")
    parser.add_argument("--methods", default="gradcam,gradcam++,saliency,ig")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    if args.images < 1 or args.steps < 1:
        parser.error("--images and --steps must be at least 1")

    model, x = seeded_model_and_batch(args.model, args.images, torch.device(args.torch_device))
    # Each image's predicted class: for an arbitrary class a random-weight network's
    # GradCAM is often all zero after the ReLU, a reference that nothing can fail.
    with torch.no_grad():
        args.classes = model(x).argmax(1).tolist()
    reference, spread, exact = references(model, x, args.classes, args.steps)
    # Float32 tolerance per method: F32_TOLERANCE, or twice the reference's own error
    # where that is larger (stated in the table).
    tolerance = {method: max(F32_TOLERANCE, 2 * spread.get(method, 0.0)) for method in reference}
    for method, value in spread.items():
        print(f"reference's own error ({method}; against float64 or another internal batch, "
              f"the larger): {value:.2e}", flush=True)
    methods = [m for m in args.methods.split(",") if m]
    half_devices = [d for d in args.half_devices.split(",") if d]
    half_precisions = [p for p in args.half_precisions.split(",") if p]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights, input_path = write_for_lumen(model, args.model, x, tmp)
        runs = [(args.peer_lumen, device, device, precision)
                for device in args.devices.split(",") if device
                for precision in ["f32"] + (half_precisions if device in half_devices else [])]
        if args.autotune_peer_lumen:
            runs.append((args.autotune_peer_lumen, "wgpu", "wgpu+autotune", "f32"))
        for peer_lumen, lumen_device, label, precision in runs:
            folder = tmp / f"{label.replace(':', '_')}-{precision}"
            maps, seconds, error = lumen_maps(peer_lumen, weights, input_path, args,
                                              lumen_device, precision, methods, folder)
            for method in methods:
                row = {"device": label, "precision": precision, "method": method,
                       "seconds_all_methods": round(seconds, 2)}
                if error:
                    row["error"] = error
                else:
                    row["max_difference"], row["rank_correlation"] = compare(maps[method], reference[method])
                    if method in exact:
                        row["max_difference_float64"] = compare(maps[method], exact[method])[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
            write_json(args, rows, spread)  # after every device: a timed-out run keeps what it did
    print(f"\n{args.model}, {args.images} images; reference on {args.torch_device} (float32)\n")
    print("| device | precision | method | max difference / max reference | against float64 | rank correlation | verdict |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            cells = f"error: {row['error'][-80:]} | - | - | FAIL"
        else:
            verdict = "-" if row["precision"] != "f32" else (
                "ok" if row["max_difference"] <= tolerance[row["method"]] else "FAIL")
            against64 = f"{row['max_difference_float64']:.2e}" if "max_difference_float64" in row else "-"
            cells = f"{row['max_difference']:.2e} | {against64} | {row['rank_correlation']:.5f} | {verdict}"
        print(f"| {row['device']} | {row['precision']} | {row['method']} | {cells} |")
    print(f"\nverdict: float32 maps within {F32_TOLERANCE:g} of the reference's largest value, or twice "
          f"the reference's own error where larger ({', '.join(f'{m} {t:.2e}' for m, t in tolerance.items())}); "
          "half precision is measured, not judged")
    failed = [row for row in rows if "error" in row or
              (row["precision"] == "f32" and row["max_difference"] > tolerance[row["method"]])]
    if failed:
        sys.exit(1)


def write_json(args, rows, spread):
    write_atomically(args.json, json.dumps({"model": args.model, "images": args.images,
                                            "torch_device": args.torch_device, "reference_spread": spread,
                                            "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
