#!/usr/bin/env python3
"""Peer harness: the same work on Lumen, pytorch-grad-cam, captum and AutoTimm, in one
run, with a table of times per image (median) and Lumen's ratio to the best peer.

Both sides get the same timm model (random weights, seeded, written as safetensors for
Lumen), the same normalised input batch and the same target classes. CPU by default;
`--device cuda` on a GPU (Lumen then runs on `tch:cuda:0`). Run from the repository
root with the reference environment of tools/reference:

    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r tools/reference/requirements.txt
    cargo build --release -p lumen-cli -p lumen-benches --bins
    .venv-ref/bin/python benches/peers/peers.py [--model resnet18] [--batch 8]
        [--works forward,gradcam,gradcam++,ig,smoothgrad] [--folder 32] [--json out.json]

Work per peer (what each library offers for it; "-" where it has none):
- forward: torch eager under no_grad, Lumen's forward.
- gradcam, gradcam++: pytorch-grad-cam (its own resize and normalisation on the host),
  captum's LayerGradCam + upsampling (GradCAM only), AutoTimm one image at a time.
- ig: captum IntegratedGradients (Gauss-Legendre, 50 steps, one internal batch per
  image), AutoTimm's IntegratedGradients (one image at a time), Lumen's `ig`.
- smoothgrad: captum NoiseTunnel(Saliency), 50 samples, stdev 0.15; Lumen's
  `smoothgrad` (saliency base, same noise level). AutoTimm's SmoothGrad wraps one of
  its CAM/IG explainers, not saliency: not comparable, left out.
- cams8: GradCAM, GradCAM++, XGradCAM, LayerCAM, HiResCAM, GradCAM element-wise,
  EigenCAM and EigenGradCAM of one batch: Lumen from one forward and backward
  (`cams_from_one_pass`, what `lumen compare` does), pytorch-grad-cam as eight calls.
- scorecam: pytorch-grad-cam's ScoreCAM; Lumen's `scorecam` (opt in: slow on a CPU).
- folder: end to end on a folder of JPEGs: decode, resize, GradCAM, overlay, PNG
  encode and write. Python: PIL + timm transform + pytorch-grad-cam +
  show_cam_on_image + PIL save; Lumen: `lumen batch`, timed as a whole process
  (start-up and model loading included).

The costly works (ig, smoothgrad, scorecam) use the first `--heavy-images` images.
"""

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"ig", "smoothgrad", "scorecam"}


def median_ms(run, repeats, sync):
    run()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def python_peers(model, x, classes, works, repeats, device, steps):
    """{work: {peer: ms per image}} for the Python libraries."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    try:
        import autotimm.interpretation as at
    except ImportError as error:
        # AutoTimm pulls in a training stack (albumentations, jsonargparse, plotly, ...)
        # that a GPU image may lack; its column is then "-", and the table says why.
        print(f"AutoTimm left out: {error}", file=sys.stderr)
        at = None

    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    layer = model.layer4
    results = {}
    for work in works:
        # pytorch-grad-cam keeps its hooks on the layer until the object is released:
        # left registered, every later forward (captum's too) would copy the layer's
        # activations to the host for each of them. Released at the end of each work.
        with contextlib.ExitStack() as hooks:
            xs = x[: len(classes[work])]
            cls = classes[work]
            n = len(cls)
            row = {}
            targets = [ClassifierOutputTarget(int(c)) for c in cls]
            if work == "forward":
                def run():
                    with torch.no_grad():
                        model(xs)
                row["torch"] = median_ms(run, repeats, sync) / n
            elif work in ("gradcam", "gradcam++"):
                kind = GradCAM if work == "gradcam" else GradCAMPlusPlus
                # Released before captum runs, so captum's forwards do not feed its hooks.
                with kind(model=model, target_layers=[layer]) as cam:
                    row["pytorch-grad-cam"] = median_ms(
                        lambda: cam(input_tensor=xs, targets=targets), repeats, sync) / n
                if work == "gradcam":
                    lgc = LayerGradCam(model, layer)
                    target = torch.tensor(cls, device=device)

                    def run():
                        a = lgc.attribute(xs, target=target, relu_attributions=True)
                        LayerAttribution.interpolate(a, xs.shape[-2:], interpolate_mode="bilinear").cpu()
                    row["captum"] = median_ms(run, repeats, sync) / n
                if at is not None:
                    explainer = (at.GradCAM if work == "gradcam" else at.GradCAMPlusPlus)(
                        model, target_layer=layer, use_cuda=device.type == "cuda")
                    row["AutoTimm"] = median_ms(
                        lambda: [explainer.explain(xs[i : i + 1], target_class=int(c)) for i, c in enumerate(cls)],
                        repeats, sync) / n
            elif work == "ig":
                ig = IntegratedGradients(model)

                def run():
                    for i, c in enumerate(cls):
                        ig.attribute(xs[i : i + 1], target=int(c), n_steps=steps, method="gausslegendre",
                                     internal_batch_size=steps).cpu()
                row["captum"] = median_ms(run, repeats, sync) / n
                if at is not None:
                    explainer = at.IntegratedGradients(model, baseline="black", steps=steps,
                                                       use_cuda=device.type == "cuda")
                    row["AutoTimm"] = median_ms(
                        lambda: [explainer.explain(xs[i : i + 1], target_class=int(c)) for i, c in enumerate(cls)],
                        repeats, sync) / n
            elif work == "smoothgrad":
                nt = NoiseTunnel(Saliency(model))
                target = torch.tensor(cls, device=device)

                def run():
                    nt.attribute(xs, target=target, nt_type="smoothgrad", nt_samples=steps, stdevs=0.15,
                                 nt_samples_batch_size=steps).cpu()
                row["captum"] = median_ms(run, repeats, sync) / n
            elif work == "cams8":
                # pytorch-grad-cam has no shared pass: the eight CAMs are eight passes, each
                # with only its own hooks on the layer (as a user's `with` blocks would be).
                import pytorch_grad_cam as pgc
                kinds = [pgc.GradCAM, pgc.GradCAMPlusPlus, pgc.XGradCAM, pgc.LayerCAM, pgc.HiResCAM,
                         pgc.GradCAMElementWise, pgc.EigenCAM, pgc.EigenGradCAM]

                def run():
                    for kind in kinds:
                        with kind(model=model, target_layers=[layer]) as cam:
                            cam(input_tensor=xs, targets=targets)
                row["pytorch-grad-cam"] = median_ms(run, repeats, sync) / n
            elif work == "scorecam":
                cam = hooks.enter_context(ScoreCAM(model=model, target_layers=[layer]))
                cam.batch_size = 64
                row["pytorch-grad-cam"] = median_ms(lambda: cam(input_tensor=xs, targets=targets), repeats, sync) / n
            results[work] = row
    return results


def lumen_device(args):
    """`--lumen-device`, else libtorch on the peers' device (tch:cuda:0 beside cuda)."""
    if args.lumen_device:
        return args.lumen_device
    return "tch:cuda:0" if args.device == "cuda" else "cpu"


def lumen_side(args, weights, input_path, works):
    binary = Path(args.lumen_binary or Path(args.target_dir) / "release" / "peer_lumen")
    if not binary.exists():
        sys.exit(f"{binary} is missing: cargo build --release -p lumen-cli -p lumen-benches --bins")
    device = lumen_device(args)
    out = subprocess.run(
        [str(binary), "--model", args.model, "--weights", str(weights), "--input", str(input_path),
         "--works", ",".join(works), "--heavy-images", str(args.heavy_images), "--device", device,
         "--repeats", str(args.repeats), "--steps", str(args.steps), "--precision", args.lumen_precision,
         *shlex.split(args.lumen_extra)],
        check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    # The first call (kernel compilation, autotuning) is kept apart from the median;
    # stages per run come with `--lumen-extra=--profile`.
    return ({r["work"]: r["median_ms_per_image"] for r in rows},
            {r["work"]: r.get("first_run_ms") for r in rows},
            {r["work"]: r.get("stages_ms_per_run") for r in rows})


def folder_work(args, model, weights, device, tmp):
    """End to end on a folder of JPEGs: seconds for the whole folder, both sides."""
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    import timm

    folder = tmp / "jpegs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.folder):
        # Smooth random pictures (JPEG-friendly), 320x256 so that both sides resize.
        small = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((320, 256), Image.BICUBIC).save(folder / f"img{i:04d}.jpg", quality=90)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    cam = GradCAM(model=model, target_layers=[model.layer4])
    python_out = tmp / "python-out"
    python_out.mkdir()
    files = sorted(folder.glob("*.jpg"))
    start = time.perf_counter()
    for i in range(0, len(files), args.batch):
        chunk = files[i : i + args.batch]
        images = [Image.open(f).convert("RGB") for f in chunk]
        batch = torch.stack([transform(im) for im in images]).to(device)
        maps = cam(input_tensor=batch, targets=None)
        for f, im, m in zip(chunk, images, maps):
            size = config["input_size"][1:]
            shown = np.asarray(im.resize(size[::-1], Image.BICUBIC), dtype=np.float32) / 255
            Image.fromarray(show_cam_on_image(shown, m, use_rgb=True)).save(python_out / f"{f.stem}_gradcam.png")
    if device.type == "cuda":
        torch.cuda.synchronize()
    python_seconds = time.perf_counter() - start

    lumen = Path(args.lumen_cli or Path(args.target_dir) / "release" / "lumen")
    start = time.perf_counter()
    subprocess.run(
        [str(lumen), "batch", "--model", args.model, "--weights", str(weights), "--num-classes", "1000",
         str(folder), "--out", str(tmp / "lumen-out"), "--batch-size", str(args.batch), "--device",
         lumen_device(args), "--quiet"],
        check=True, capture_output=True)
    lumen_seconds = time.perf_counter() - start
    written = len(list((tmp / "lumen-out").glob("img*_gradcam.png")))
    assert written == args.folder, f"lumen wrote {written} of {args.folder} figures"
    if args.lumen_profile:
        # Once more with --profile (not timed): where the whole-process time goes.
        profiled = subprocess.run(
            [str(lumen), "batch", "--model", args.model, "--weights", str(weights), "--num-classes", "1000",
             str(folder), "--out", str(tmp / "lumen-profile-out"), "--batch-size", str(args.batch), "--device",
             lumen_device(args), "--quiet", "--profile"],
            check=True, capture_output=True, text=True)
        write_atomically(args.lumen_profile, profiled.stdout + profiled.stderr)
    return python_seconds, lumen_seconds


def write_atomically(path, text):
    """Write `text` to a temporary file beside `path`, then rename it over `path`: a
    reader never sees half a file, and a killed run leaves the previous one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def seeded_model_and_batch(name, batch, device):
    """The timm model with seeded random weights and a seeded normalised batch, the
    same in every script that compares with Lumen (tools/device/agreement.py too)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=1000).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    return model, x


def write_for_lumen(model, name, x, folder):
    """(weights .safetensors, input .npy) in `folder`, as Lumen's binaries read them."""
    from safetensors.torch import save_file

    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(weights))
    input_path = folder / "input.npy"
    np.save(input_path, x.cpu().numpy().astype(np.float32))
    return weights, input_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heavy-images", type=int, default=2)
    parser.add_argument("--works", default="forward,gradcam,gradcam++,ig,smoothgrad")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=int, default=32, help="JPEGs for the end-to-end run (0: skip)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lumen-device",
                        help="Lumen's device (default: tch:cuda:0 when --device is cuda, else cpu, i.e. flex); "
                             "e.g. tch:cpu, wgpu")
    parser.add_argument("--lumen-precision", default="f32",
                        help="Lumen's float precision: f32, f16 or bf16 (the peers stay in float32)")
    parser.add_argument("--lumen-binary", help="peer_lumen built with other features (default: TARGET/release/peer_lumen)")
    parser.add_argument("--lumen-cli", help="the lumen binary for the folder work (default: TARGET/release/lumen)")
    parser.add_argument("--lumen-profile", help="also write `lumen batch --profile`'s stages for the folder here")
    parser.add_argument("--lumen-extra", default="",
                        help="more peer_lumen options, e.g. '--internal-batch-size 50' or '--unseeded'")
    parser.add_argument("--lumen-only", action="store_true", help="time Lumen alone (another backend of the same run)")
    parser.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, x = seeded_model_and_batch(args.model, args.batch, device)
    works = [w for w in args.works.split(",") if w]
    classes = {w: [i * 7 % 1000 for i in range(args.heavy_images if w in HEAVY else args.batch)] for w in works}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights, input_path = write_for_lumen(model, args.model, x, tmp)
        # No works (`--works ""`): the end-to-end folder alone, without peer_lumen.
        lumen, lumen_first_run, lumen_stages = (
            lumen_side(args, weights, input_path, works) if works else ({}, {}, {}))
        if args.lumen_only:
            result = {"device": lumen_device(args), "precision": args.lumen_precision,
                      "options": args.lumen_extra, "model": args.model,
                      "batch": args.batch, "ms_per_image": lumen, "first_run_ms": lumen_first_run,
                      "stages_ms_per_run": lumen_stages}
            print(json.dumps(result))
            if args.json:
                write_atomically(args.json, json.dumps(result, indent=1))
            return
        peers = python_peers(model, x, classes, works, args.repeats, device, args.steps) if works else {}
        folder = folder_work(args, model, weights, device, tmp) if args.folder else None

    names = ["pytorch-grad-cam", "captum", "AutoTimm", "torch"]
    where = f"{args.device}, {torch.get_num_threads()} threads, {args.model}, batch {args.batch}"
    if works:
        print(f"\nms per image (median of {args.repeats}), {where}; Lumen on {lumen_device(args)}\n")
        print(f"| work | Lumen | {' | '.join(names)} | Lumen / best peer |")
        print("|---|---|" + "---|" * len(names) + "---|")
    rows = []
    for work in works:
        peer = peers.get(work, {})
        best = min(peer.values()) if peer else None
        ratio = lumen[work] / best if best else None
        cells = [f"{peer[n]:.2f}" if n in peer else "-" for n in names]
        ratio_text = f"{ratio:.2f}x" if ratio else "-"
        print(f"| {work} | {lumen[work]:.2f} | {' | '.join(cells)} | {ratio_text} |")
        rows.append({"work": work, "lumen_ms": lumen[work], "lumen_first_run_ms": lumen_first_run[work],
                     "peers_ms": peer, "ratio": ratio})
    if folder:
        python_seconds, lumen_seconds = folder
        print(f"\nfolder of {args.folder} JPEGs, end to end: Lumen {lumen_seconds:.2f} s "
              f"(whole process), Python pipeline {python_seconds:.2f} s: "
              f"{python_seconds / lumen_seconds:.2f}x")
    if args.json:
        write_atomically(args.json, json.dumps(
            {"setting": where, "rows": rows,
             "folder": {"images": args.folder, "lumen_s": folder[1], "python_s": folder[0]} if folder else None},
            indent=1))


if __name__ == "__main__":
    main()
