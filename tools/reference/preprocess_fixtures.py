#!/usr/bin/env python3
"""Write the preprocessing parity fixtures used by
`crates/lumen/tests/preprocess_parity.rs`:

    python tools/reference/preprocess_fixtures.py

Reference: timm 1.0.22's own evaluation transform (`timm.data.create_transform` with
`is_training=False`: torchvision's `Resize` on PIL images, `CenterCrop`, `ToTensor`,
`Normalize`), on generated pictures of several sizes and aspect ratios (upscaled and
downscaled, odd margins), for each interpolation, square and non-square input sizes
and several `crop_pct` (one above 1, where the crop pads the picture black).

Stored per case: the source picture (`source_{i}`, uint8 HxWx3), the resized and
cropped picture before `ToTensor` (`crop_{c}_{i}`, uint8 HxWx3) and for one case per
config the normalised tensor (`tensor_{c}_{i}`, float32 3xHxW). The Rust test allows
`TOLERANCE` levels of 255 on the pictures; the generator asserts that every fixture
is farther than that from its nearest wrong neighbour (the other interpolations, and
the geometry a careful reader might guess instead: the long side rounded rather than
truncated, the crop offset floored rather than rounded half to even).
"""

import math
import os

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from timm.data import create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from pictures import picture

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/timm_preprocess.safetensors")
TOLERANCE = 1  # levels of 255, as the Rust test

# (height, width): downscaled, upscaled, square, odd margins, already at a size.
SOURCES = [(61, 90), (90, 61), (97, 97), (64, 64), (150, 113), (23, 31), (41, 40)]
# (interpolation, (height, width), crop_pct); the Rust test lists the same.
CONFIGS = [
    ("bilinear", (64, 64), 0.875),
    ("bicubic", (80, 80), 0.95),
    ("nearest", (48, 48), 1.0),
    ("bilinear", (64, 64), 1.0),
    ("bicubic", (56, 56), 0.9),
    ("bilinear", (48, 64), 0.9),
    # Above 1 the scaled picture is smaller than the input: CenterCrop pads it black.
    ("bicubic", (64, 64), 1.1),
]
PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def reference(config, source):
    interpolation, size, crop_pct = config
    transform = create_transform(
        input_size=(3, *size), interpolation=interpolation, crop_pct=crop_pct,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, is_training=False)
    steps = transform.transforms
    # Everything before ToTensor works on the PIL picture.
    cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    image = Image.fromarray(source)
    for step in steps[:cut]:
        image = step(image)
    cropped = np.asarray(image, dtype=np.uint8).copy()
    tensor = transform(Image.fromarray(source)).numpy().astype(np.float32)
    return cropped, tensor


def guessed(config, source, long_side, offset):
    """The same pipeline with another reading of the geometry (PIL throughout)."""
    interpolation, (out_h, out_w), crop_pct = config
    h, w = source.shape[:2]
    scale_h, scale_w = math.floor(out_h / crop_pct), math.floor(out_w / crop_pct)
    if w <= h:
        new_w, new_h = scale_w, long_side(h * scale_w / w)
    else:
        new_w, new_h = long_side(w * scale_h / h), scale_h
    image = Image.fromarray(source)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), PIL_FILTERS[interpolation])
    # Where the picture is smaller, the window reaches past it (black), as
    # torchvision pads by (crop - size) // 2 on the left and top.
    top = offset((new_h - out_h) / 2) if new_h >= out_h else -((out_h - new_h) // 2)
    left = offset((new_w - out_w) / 2) if new_w >= out_w else -((out_w - new_w) // 2)
    return np.asarray(image.crop((left, top, left + out_w, top + out_h)), dtype=np.uint8)


def far(a, b):
    return a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).max() > TOLERANCE


def main():
    torch.manual_seed(0)
    out = {}
    sources = [picture(h, w, i) for i, (h, w) in enumerate(SOURCES)]
    for i, source in enumerate(sources):
        out[f"source_{i}"] = source
    refuted = {"interpolation": 0, "rounded long side": 0, "floored offset": 0}
    for c, config in enumerate(CONFIGS):
        for i, source in enumerate(sources):
            cropped, tensor = reference(config, source)
            assert cropped.shape == (*config[1], 3), (config, cropped.shape)
            out[f"crop_{c}_{i}"] = cropped
            if i == 0:
                out[f"tensor_{c}_{i}"] = tensor
            # Nearest wrong neighbours: another filter at the same geometry, and the
            # guessed geometries with the right filter.
            for other in PIL_FILTERS:
                if other != config[0]:
                    alt = reference((other, config[1], config[2]), source)[0]
                    refuted["interpolation"] += far(alt, cropped)
            if config[1][0] == config[1][1]:
                # The geometry as the Rust side computes it gives timm's picture.
                ours = guessed(config, source, int, lambda v: int(round(v)))
                assert (ours == cropped).all(), (config, SOURCES[i])
                rounded = guessed(config, source, round, lambda v: int(round(v)))
                floored = guessed(config, source, int, math.floor)
                refuted["rounded long side"] += far(rounded, cropped)
                refuted["floored offset"] += far(floored, cropped)
    # Every wrong neighbour must be refuted by some case (most cases refute the
    # interpolation; the geometry differs only for some sizes).
    print(refuted)
    assert refuted["interpolation"] >= len(CONFIGS) * len(SOURCES), refuted
    assert refuted["rounded long side"] >= 3, refuted
    assert refuted["floored offset"] >= 3, refuted
    save_file(out, OUT)
    print(f"wrote {len(out)} arrays to {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
