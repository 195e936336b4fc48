#!/usr/bin/env python3
"""Check a short `train_shapes` run with the monitors on, as CI runs it: the TensorBoard
events (read by TensorBoard's EventAccumulator) hold every expected tag at every
expected step, the MLflow server holds the run with its parameters, metric histories
and image artifacts (read back through MLflow's REST API), and the timeline page has
one slider step per monitored point. Prints the pointing game and validation accuracy
per epoch. Exits non-zero, naming what is missing, otherwise.

    check_run.py --tensorboard runs/shapes-cnn --epochs 2 --steps-per-epoch 10 \
        [--mlflow http://127.0.0.1:5987 --run-name "shapes-cnn seed 3"] [--timeline t.html]
"""
import argparse
import json
import struct
import sys
import urllib.parse
import urllib.request

from read_tensorboard import read

SAMPLES = 8


def fail(message):
    sys.exit(f"check_run: {message}")


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("an image is not a PNG")
    return struct.unpack(">II", data[16:24])


def get(url, **query):
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return r.read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tensorboard", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--steps-per-epoch", type=int, required=True)
    p.add_argument("--mlflow")
    p.add_argument("--run-name")
    p.add_argument("--experiment", default="lumen-shapes")
    p.add_argument("--timeline")
    # A segmentor's run has no labels (so no `correct`) and no pointing game; it logs the
    # validation mIoU after every epoch instead.
    p.add_argument("--task", choices=["classification", "segmentation"], default="classification")
    a = p.parse_args()
    classification = a.task == "classification"

    moments = [a.steps_per_epoch * e for e in range(a.epochs + 1)]  # start + each epoch
    epoch_ends = moments[1:]
    events = read(a.tensorboard)
    scalars, images, histos = events["scalars"], events["images"], events["histograms"]

    def steps(table, tag):
        if tag not in table:
            fail(f"tag {tag} missing from the TensorBoard events (have {sorted(table)})")
        return [e[0] for e in table[tag]]

    for i in range(SAMPLES):
        tag = f"interpretation/sample_{i}"
        if steps(images, tag) != moments:
            fail(f"{tag} at steps {steps(images, tag)}, expected {moments}")
        for e in images[tag]:
            if png_size(bytes(e[3])) != (e[1], e[2]) or (e[1], e[2]) != (128, 128):
                fail(f"{tag}: image size {e[1]}x{e[2]} differs from its PNG or from 128x128")
        for suffix in ("confidence", "correct") if classification else ("confidence",):
            if steps(scalars, f"{tag}/{suffix}") != moments:
                fail(f"{tag}/{suffix} at the wrong steps")
    if classification and steps(scalars, "interpretation/pointing_game") != moments:
        fail("interpretation/pointing_game at the wrong steps")
    if not classification and steps(scalars, "valid/mIoU") != epoch_ends:
        fail("valid/mIoU at the wrong steps")
    layers = sorted({t.split("/")[1] for t in scalars if t.startswith("features/")})
    if len(layers) != 3:
        fail(f"expected 3 monitored layers, found {layers}")
    for layer in layers:
        for stat in ("mean", "std", "sparsity", "max"):
            if steps(scalars, f"features/{layer}/{stat}") != moments:
                fail(f"features/{layer}/{stat} at the wrong steps")
        if steps(histos, f"features/{layer}/activations") != moments:
            fail(f"features/{layer}/activations histogram at the wrong steps")
        for h in histos[f"features/{layer}/activations"]:
            if abs(sum(h[7]) - h[3]) > 1e-6 or h[1] > h[2]:
                fail(f"histogram of {layer} is inconsistent")
    for split in ("train", "valid"):
        for metric in ("Loss", "Accuracy"):
            if steps(scalars, f"{split}/{metric}") != epoch_ends:
                fail(f"{split}/{metric} at the wrong steps")
    accuracy = [round(v, 1) for _, v in scalars["valid/Accuracy"]]
    print(f"tensorboard: {len(scalars)} scalar, {len(images)} image and {len(histos)} "
          f"histogram tags at the expected steps {moments}")
    if classification:
        pointing = [round(v, 3) for _, v in scalars["interpretation/pointing_game"]]
        print(f"pointing game per point {moments}: {pointing}")
        print(f"validation accuracy (%) per epoch: {accuracy}")
    else:
        miou = [round(v, 3) for _, v in scalars["valid/mIoU"]]
        print(f"validation mIoU per epoch: {miou}; pixel accuracy (%): {accuracy}")

    if a.mlflow:
        api = a.mlflow.rstrip("/") + "/api/2.0/mlflow"
        exp = json.loads(get(f"{api}/experiments/get-by-name", experiment_name=a.experiment))
        exp_id = exp["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id],
                           "filter": f"attributes.run_name = '{a.run_name}'"}).encode()
        req = urllib.request.Request(f"{api}/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.loads(urllib.request.urlopen(req, timeout=30).read()).get("runs", [])
        if not runs:
            fail(f"no MLflow run named {a.run_name!r}")
        run = runs[0]
        run_id = run["info"]["run_id"]
        if run["info"]["status"] != "FINISHED":
            fail(f"MLflow run status {run['info']['status']}")
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        for key in ("model", "epochs", "steps_per_epoch", "lr", "seed"):
            if key not in params:
                fail(f"MLflow param {key} missing (have {sorted(params)})")
        for key, expected in (("valid/Accuracy", epoch_ends),
                              ("interpretation/pointing_game" if classification else "valid/mIoU",
                               moments if classification else epoch_ends),
                              (f"features/{layers[-1]}/mean", moments)):
            history = json.loads(get(f"{api}/metrics/get-history", run_id=run_id, metric_key=key))
            got = sorted(int(m["step"]) for m in history.get("metrics", []))
            if got != expected:
                fail(f"MLflow metric {key} at steps {got}, expected {expected}")
        listed = json.loads(get(f"{api}/artifacts/list", run_id=run_id,
                                path="interpretation/sample_0"))
        files = sorted(f["path"] for f in listed.get("files", []))
        if len(files) != len(moments):
            fail(f"MLflow artifacts of sample 0: {files}, expected {len(moments)} images")
        root = run["info"]["artifact_uri"].split("mlflow-artifacts:/", 1)[1].strip("/")
        png = get(f"{a.mlflow.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{root}/{files[-1]}")
        if png_size(png) != (128, 128):
            fail("MLflow image artifact is not a 128x128 PNG")
        print(f"mlflow: run {run_id} FINISHED with {len(params)} params, metric histories at "
              f"the expected steps, {len(files)} images of sample 0")

    if a.timeline:
        html = open(a.timeline, encoding="utf-8").read()
        for e, step in enumerate(moments):
            if f"epoch {e} · step {step}" not in html:
                fail(f"timeline lacks the slider step of epoch {e}")
        print(f"timeline: {len(moments)} slider steps")


if __name__ == "__main__":
    main()
