#!/usr/bin/env python3
"""Write the colormap fixture used by `crates/lumen-report/src/colormap.rs`'s tests:

    python tools/reference/colormap_fixtures.py

Reference: matplotlib 3.11's own 256-entry lookup tables (`cmap(np.arange(256))`,
the entries `floor(t * 256)` picks), as bytes rounded from its floats, for every
colormap Lumen names after matplotlib's (viridis, plasma, inferno, magma, turbo, jet,
hot, gray). Lumen's `RedBlue` follows colorous (d3's spline of ColorBrewer's RdBu), not
matplotlib, and is left out. The Rust test allows `TOLERANCE` levels per channel (gray:
none, its entries are whole levels); the generator asserts that each table is farther than that from its nearest neighbour
among the others and from itself shifted by one entry (an off-by-one lookup).
"""

import json
import os

import matplotlib
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen-report/tests/fixtures/matplotlib_colormaps.json")
NAMES = ["viridis", "plasma", "inferno", "magma", "turbo", "jet", "hot", "gray"]
TOLERANCE = {"gray": 0}  # levels of 255, 1 for the others, as the Rust test


def table(name):
    cmap = matplotlib.colormaps[name].resampled(256)
    return np.round(cmap(np.arange(256))[:, :3] * 255).astype(int)


def main():
    tables = {name: table(name) for name in NAMES}
    tolerance = {name: TOLERANCE.get(name, 1) for name in NAMES}
    for name, values in tables.items():
        shifted = np.roll(values, 1, axis=0)[1:]
        assert np.abs(shifted - values[1:]).max() > tolerance[name], name
        for other, theirs in tables.items():
            if other != name:
                assert np.abs(theirs - values).max() > tolerance[name], (name, other)
    out = {"matplotlib": matplotlib.__version__, "tolerance": tolerance,
           "tables": {name: values.tolist() for name, values in tables.items()}}
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {len(tables)} tables to {OUT}")


if __name__ == "__main__":
    main()
