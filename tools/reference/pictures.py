"""Generated test pictures shared by the fixture generators that need no model."""

import numpy as np


def picture(h, w, seed):
    """Smooth gradients, hard edges and noise (uint8 HxWx3): resampling filters,
    inverse DCTs and chroma upsampling all show their differences on it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 90 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    g = np.where((x // 6 + y // 6) % 2 == 0, 220.0, 30.0)
    disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2
    b = np.where(disc, 200.0, 60.0) + 255 * x / max(w - 1, 1) * 0.2
    image = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
