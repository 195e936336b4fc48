#!/usr/bin/env python3
"""Add keys to the existing method fixtures without regenerating the others:

    python tools/reference/add_fixture_keys.py kpcacam complexity curve_auc signed_localization gradcam_layer3_layer4

Runs the same generator functions as method_fixtures.py (so a full regeneration gives
the same values) and rewrites crates/lumen/tests/fixtures/NAME_methods.safetensors with
the old keys kept as they were.
"""

import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
import method_fixtures as mf  # noqa: E402

LAYERS = {
    "test_resnet": (lambda m: m.layer4[-1], None),
    "test_vit": (lambda m: m.blocks[-1].norm1, mf.vit_reshape),
}


METRIC_KEYS = ["complexity", "curve_auc", "signed_localization"]


def add_metric_keys(keys):
    import metric_fixtures as metrics
    for key in keys:
        # complexity goes to the random-weight fixture, the curves' areas to the
        # trained shapes-cnn's (whose curves are not flat).
        path = metrics.TRAINED_OUT if key == "curve_auc" else metrics.OUT
        out = load_file(path)
        added = {}
        if key == "complexity":
            metrics.complexity(out["gradcam"].numpy(), "gradcam_", added)
            metrics.complexity(out["noise_map"].numpy(), "noise_", added)
        elif key == "curve_auc":
            for curve in ["deletion_mean", "insertion_mean"]:
                metrics.rise_auc(out[curve].numpy(), added, curve)
        elif key == "signed_localization":
            masks = out["masks"].numpy().astype(bool)
            boxes = out["boxes"].numpy().astype(np.int64)
            metrics.signed_localization(masks, boxes, added)
        else:
            raise SystemExit(f"no metric generator for `{key}`")
        # The new keys as float32; the old ones keep their dtypes (uint8 images and
        # masks, float16 noise).
        out.update({k: torch.as_tensor(np.asarray(v)).contiguous().float()
                    for k, v in added.items()})
        save_file(out, path)
        print(os.path.basename(path), "now holds", sorted(out))


def main(keys):
    metric_keys = [k for k in keys if k in METRIC_KEYS]
    keys = [k for k in keys if k not in METRIC_KEYS]
    if metric_keys:
        add_metric_keys(metric_keys)
    for name, (layer, reshape) in LAYERS.items():
        if not keys:
            break
        path = os.path.join(mf.OUT, f"{name}_methods.safetensors")
        out = load_file(path)
        model, x = mf.load(name)
        for key in keys:
            if key == "kpcacam":
                mf.kpca_cam(model, x, layer(model), reshape, out)
            elif key == "gradcam_layer3_layer4":
                if name == "test_resnet":
                    mf.multi_layer_gradcam(model, x, out)
            else:
                raise SystemExit(f"no generator for `{key}`")
        save_file({k: v.contiguous().float() for k, v in out.items()}, path)
        print(name, "now holds", sorted(out))


if __name__ == "__main__":
    main(sys.argv[1:] or ["kpcacam"])
