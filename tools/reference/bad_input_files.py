"""Small image files the bad-input tests need and the Rust `image` crate cannot write:
a CMYK JPEG and a JPEG whose EXIF orientation says "rotate 90 degrees clockwise".

    python tools/reference/bad_input_files.py crates/lumen-cli/tests/data
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1] if len(sys.argv) > 1 else "crates/lumen-cli/tests/data")
out.mkdir(parents=True, exist_ok=True)

# A 48x24 (wide) picture: left half red, right half blue. Stored wide with EXIF
# orientation 6, it is meant to be shown 24 wide and 48 tall, red on top.
pixels = np.zeros((24, 48, 3), np.uint8)
pixels[:, :24] = [255, 0, 0]
pixels[:, 24:] = [0, 0, 255]
exif = Image.Exif()
exif[0x0112] = 6
Image.fromarray(pixels).save(out / "exif_rotate90.jpg", quality=95, exif=exif)

cmyk = Image.fromarray(np.full((32, 32, 3), [40, 160, 90], np.uint8)).convert("CMYK")
cmyk.save(out / "cmyk.jpg", quality=95)

check = Image.open(out / "exif_rotate90.jpg")
assert check.getexif()[0x0112] == 6 and check.size == (48, 24)
assert Image.open(out / "cmyk.jpg").mode == "CMYK"
print("wrote", out / "exif_rotate90.jpg", out / "cmyk.jpg")
