#!/usr/bin/env python3
"""How much does float32 rounding move captum's IG-50 and Saliency on one device?

The same seeded timm model and batch as `agreement.py` (random weights, each image's
predicted class), in float32 against float64, and IG with two internal batch sizes.
If IG itself were ill-conditioned (large gradients cancelling along the path), its
float32 error would be far above Saliency's; this measures that, on a CPU or a GPU:

    python tools/device/ig_rounding.py --model resnet50 --images 2 --device cpu
"""

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches" / "peers"))
from peers import seeded_model_and_batch  # noqa: E402


def relative(a, b):
    """max |a - b| / max |b|."""
    a, b = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    from captum.attr import IntegratedGradients, Saliency

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.images < 1 or args.steps < 2:
        parser.error("--images must be at least 1 and --steps at least 2")

    model, x = seeded_model_and_batch(args.model, args.images, torch.device(args.device))
    with torch.no_grad():
        target = model(x).argmax(1)

    def ig(m, inputs, batch):
        return IntegratedGradients(m).attribute(inputs, target=target, n_steps=args.steps,
                                                method="gausslegendre", internal_batch_size=batch)

    model64, x64 = copy.deepcopy(model).double(), x.double()
    saliency32 = Saliency(model).attribute(x, target=target, abs=False)
    saliency64 = Saliency(model64).attribute(x64, target=target, abs=False)
    ig32, ig64 = ig(model, x, args.steps), ig(model64, x64, args.steps)
    ig32_other = ig(model, x, args.steps // 2 + 1)
    print(f"{args.model}, {args.images} images, {args.steps} steps, {args.device}")
    print(f"saliency, float32 against float64: {relative(saliency32, saliency64):.2e}")
    print(f"IG, float32 against float64: {relative(ig32, ig64):.2e}")
    print(f"IG, float32, internal batch {args.steps // 2 + 1} against {args.steps}: {relative(ig32_other, ig32):.2e}")


if __name__ == "__main__":
    main()
