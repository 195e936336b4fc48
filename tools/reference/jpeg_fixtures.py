#!/usr/bin/env python3
"""Write the JPEG decoding fixtures used by `crates/lumen/tests/preprocess_parity.rs`:

    python tools/reference/jpeg_fixtures.py

Reference: Pillow's decoder (libjpeg-turbo: the `ISLOW` integer IDCT, "fancy"
triangular chroma upsampling, JFIF's BT.601 full-range YCbCr to RGB), which is what
`Image.open(path).convert("RGB")` gives timm's transform and every Python pipeline
fed JPEGs. Lumen decodes with the `image` crate (zune-jpeg), a different decoder.

Each case is a generated picture (gradients, hard edges, noise) encoded by Pillow
(baseline and progressive; chroma 4:4:4, 4:2:2 and 4:2:0; grayscale; CMYK; sizes that
do not fill their last MCU) and stored twice: the JPEG file's bytes (`jpeg_{name}`,
uint8) and Pillow's decoded RGB picture (`decoded_{name}`, uint8 HxWx3). The Rust test
allows `TOLERANCE` levels of 255 per channel and a mean difference below
`MEAN_TOLERANCE`; this script asserts that every colour case is farther than that
from its nearest wrong decodes: the same coefficients converted with BT.709's
matrix, or as limited-range ("studio swing", Y in 16..235) BT.601, and the chroma
planes upsampled by replication (libjpeg's `do_fancy_upsampling = FALSE`) where the
chroma is subsampled.
"""

import io
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from pictures import picture

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/jpeg_decode.safetensors")
# zune-jpeg measured up to 3 levels and a mean of 0.388 (4:2:0 chroma); the wrong
# decodes below are 19 levels and a mean of 6 away or more.
TOLERANCE = 4  # levels of 255 per channel, as the Rust test
MEAN_TOLERANCE = 0.5  # mean absolute difference, levels of 255, as the Rust test

# name: (height, width, mode, Pillow save options)
CASES = {
    "q95_444": (48, 64, "RGB", dict(quality=95, subsampling=0)),
    "q90_422": (48, 64, "RGB", dict(quality=90, subsampling=1)),
    "q75_420": (48, 64, "RGB", dict(quality=75, subsampling=2)),
    "q85_420_progressive": (48, 64, "RGB", dict(quality=85, subsampling=2, progressive=True)),
    "q50_420_odd": (23, 37, "RGB", dict(quality=50, subsampling=2)),
    "q80_422_odd_progressive": (37, 23, "RGB", dict(quality=80, subsampling=1, progressive=True)),
    "q100_444_odd": (17, 33, "RGB", dict(quality=100, subsampling=0)),
    "q90_gray": (40, 30, "L", dict(quality=90)),
    "q90_cmyk": (32, 40, "CMYK", dict(quality=90)),
}


def encode(source, mode, options):
    image = Image.fromarray(source)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8).copy()


def ycbcr_planes(data):
    """Pillow's decoded planes before the colour conversion (upsampled as libjpeg does)."""
    image = Image.open(io.BytesIO(data))
    image.draft("YCbCr", image.size)
    assert image.mode == "YCbCr", image.mode
    return np.asarray(image, dtype=np.float64)


def to_rgb(ycc, matrix, limited=False):
    """YCbCr to RGB with Kr, Kb of `matrix`, full range (JFIF) or limited, rounded
    and clamped."""
    kr, kb = matrix
    kg = 1 - kr - kb
    yy, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    if limited:
        yy, cb, cr = (yy - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
    r = yy + 2 * (1 - kr) * cr
    b = yy + 2 * (1 - kb) * cb
    g = (yy - kr * r - kb * b) / kg
    return np.clip(np.round(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


BT601 = (0.299, 0.114)
BT709 = (0.2126, 0.0722)


def replicated_chroma(ycc, factor):
    """The chroma planes averaged over each (fy, fx) block and replicated: what
    upsampling without libjpeg's triangular filter gives, near enough to refute."""
    fy, fx = factor
    h, w = ycc.shape[:2]
    out = ycc.copy()
    for channel in (1, 2):
        plane = ycc[..., channel]
        for top in range(0, h, fy):
            for left in range(0, w, fx):
                block = plane[top:top + fy, left:left + fx]
                out[top:top + fy, left:left + fx, channel] = block.mean()
    return out


def distance(a, b):
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max(), diff.mean()


def far(a, b):
    worst, mean = distance(a, b)
    return worst > TOLERANCE or mean > MEAN_TOLERANCE


def main():
    out = {}
    refuted = {"bt709": 0, "limited range": 0, "replicated chroma": 0}
    subsampled = 0
    for seed, (name, (h, w, mode, options)) in enumerate(CASES.items()):
        data = encode(picture(h, w, seed), mode, options)
        decoded = decode(data)
        assert decoded.shape == (h, w, 3), (name, decoded.shape)
        out[f"jpeg_{name}"] = np.frombuffer(data, dtype=np.uint8).copy()
        out[f"decoded_{name}"] = decoded
        if mode != "RGB":
            continue
        ycc = ycbcr_planes(data)
        # The planes converted as JFIF says give Pillow's picture (within a level:
        # libjpeg converts in fixed point), so the neighbours below are fair.
        assert distance(to_rgb(ycc, BT601), decoded)[0] <= 1, name
        refuted["bt709"] += far(to_rgb(ycc, BT709), decoded)
        refuted["limited range"] += far(to_rgb(ycc, BT601, limited=True), decoded)
        factor = {0: None, 1: (1, 2), 2: (2, 2)}[options["subsampling"]]
        if factor:
            subsampled += 1
            refuted["replicated chroma"] += far(to_rgb(replicated_chroma(ycc, factor), BT601), decoded)
        print(name, len(data), "bytes")
    print(refuted)
    colour = sum(1 for c in CASES.values() if c[2] == "RGB")
    assert refuted["bt709"] == colour, refuted
    assert refuted["limited range"] == colour, refuted
    assert refuted["replicated chroma"] == subsampled, refuted
    save_file(out, OUT)
    print(f"wrote {len(out)} arrays to {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
