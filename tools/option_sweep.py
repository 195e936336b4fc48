#!/usr/bin/env python3
"""Option sweep: run every value option of every `lumen` command with bad values (NaN,
infinities, negative, zero, huge, empty, malformed lists and ranges) and report any run
that panics, dies of a signal (out of memory) or outlives the time limit.

    cargo build --release -p lumen-cli
    python3 tools/option_sweep.py [--binary PATH] [--jobs 4] [--timeout 90] [BASE ...]

A base is one working command line on the bundled models (`explain-cnn`, `drise`,
`evaluate`, ...; all of them when none is named); the option under test is appended to
it, with `--out` in a scratch folder. Each command's value options are read from its
`--help`, so new options are swept without editing this file.

Also listed, for a person to judge: runs that *succeeded* with NaN, an infinity, a
negative number, 1e30 or a malformed list, and warned about nothing. Most are fine (an
active-channel threshold of -1 is a valid threshold); one that is not is a missing check.
A timeout is not always a defect either: `evaluate --curve-steps 100000` on a
segmentor is 16,385 forwards per image and method, work that was asked for (its memory
stays bounded, and it shows progress).

Standard library only; the input pictures are written here. Exit status: 1 when any
run panicked, died or timed out, else 0. About 9 minutes for 15,000 runs on 2 cores.
"""

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Options that name files or choose what runs (swept by the tests instead).
SKIP = {
    "--model", "--out", "--image", "--help", "--weights", "--cache", "--input-npy",
    "--verdicts", "--save-raw", "--save-uncertainty", "--device",
}
VALUES = [
    "nan", "inf", "-inf", "-1", "0", "1e30", "", "abc", "99999999999999999999", "-0",
    "1,2", "0.5", "1,,2", "3-1", "-5--1", "1e-40", "4294967297", "100000", "1,1",
    "0,0", "100000,1", "5,5,5,5", "0,0,0,0", "1,2,3,4", "-1,-1", "0.5,0.5,0.4,0.4",
    "1e9,0", "2/1", "0/0", "1/2",
]
# Values a run should not take silently (in options that take numbers or lists).
SUSPECT = {"nan", "inf", "-inf", "abc", "1,,2", "-1", "1e30"}
FREE_TEXT = {"--name"}


def png(path, side, disc=(200, 50, 50), ground=(30, 30, 30)):
    """A `side` px RGB picture of a disc on a plain ground, as PNG."""
    rows = []
    centre, radius = (side - 1) / 2, side / 2 - 10
    for y in range(side):
        row = bytearray([0])
        for x in range(side):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius**2
            row += bytes(disc if inside else ground)
        rows.append(bytes(row))

    def chunk(kind, body):
        data = kind + body
        return struct.pack(">I", len(body)) + data + struct.pack(">I", zlib.crc32(data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def bases(img0, img1):
    cnn = ["--model", "shapes-cnn"]
    return {
        "explain-cnn": ["explain", *cnn, img0, img1],
        "explain-det": ["explain", "--model", "shapes-det", img0, "--score-threshold", "0.1"],
        "explain-seg": ["explain", "--model", "shapes-seg", img0],
        "explain-vit": ["explain", "--model", "shapes-vit", img0, "--method", "rollout"],
        "smoothgrad": ["explain", *cnn, img0, "--method", "smoothgrad", "--noise-samples", "3"],
        "ig": ["explain", *cnn, img0, "--method", "ig", "--steps", "4"],
        "perturbation-cams": ["explain", *cnn, img0, "--method", "scorecam,ablationcam"],
        "drise": ["explain", "--model", "shapes-det", img0, "--method", "drise",
                  "--masks", "8", "--score-threshold", "0.1"],
        "uncertainty": ["explain", "--model", "shapes-seg", img0, "--uncertainty", "entropy"],
        "attention": ["explain", "--model", "shapes-vit", img0, "--method",
                      "attention-flow,grad-rollout"],
        "compare": ["compare", *cnn, img0, "--methods", "gradcam,saliency"],
        "report": ["report", *cnn, img0, "--methods", "gradcam"],
        "batch": ["batch", *cnn, img0, img1],
        "evaluate": ["evaluate", *cnn, "--images", "2", "--methods", "gradcam",
                     "--metrics", "deletion_auc,pointing_game,max_sensitivity"],
        "evaluate-det": ["evaluate", "--model", "shapes-det", "--images", "2", "--methods", "gradcam"],
        "evaluate-seg": ["evaluate", "--model", "shapes-seg", "--images", "2", "--methods", "gradcam"],
        "features": ["features", *cnn, img0, img1],
        "top-images": ["features", *cnn, img0, img1, "--top-images", "2"],
        "receptive-field": ["receptive-field", *cnn, img0],
        "occlusion": ["receptive-field", *cnn, img0, "--mode", "occlusion"],
        "maximize": ["maximize", *cnn, "--layer", "fc", "--channels", "0-1", "--steps", "4"],
        "features-det": ["features", "--model", "shapes-det", img0, "--layer", "fpn.p3",
                         "--layers", "backbone.layer2"],
        "top-images-seg": ["features", "--model", "shapes-seg", img0, img1, "--top-images", "2"],
        "receptive-field-det": ["receptive-field", "--model", "shapes-det", img0, "--layer", "fpn.p4"],
        "occlusion-seg": ["receptive-field", "--model", "shapes-seg", img0, "--mode", "occlusion"],
        "maximize-seg": ["maximize", "--model", "shapes-seg", "--layer", "head.classifier",
                         "--channels", "0-1", "--steps", "4"],
        "maximize-det": ["maximize", "--model", "shapes-det", "--layer", "fpn.p3",
                         "--channels", "0-1", "--steps", "4"],
        "demo": ["demo", "--images", "1"],
        "layers": ["layers", *cnn],
    }


def value_options(binary, command):
    text = subprocess.run([binary, command, "--help"], capture_output=True, text=True).stdout
    found = re.findall(r"^\s+(?:-\w, )?(--[\w-]+) <", text, re.M)
    return sorted(set(found) - SKIP)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lumen"))
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("base", nargs="*", help="bases to sweep (default: all)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="lumen-sweep-")
    img0, img1 = os.path.join(scratch, "img0.png"), os.path.join(scratch, "img1.png")
    png(img0, 64)
    png(img1, 96)
    all_bases = bases(img0, img1)
    unknown = set(args.base) - set(all_bases)
    if unknown:
        sys.exit(f"unknown base(s) {sorted(unknown)}; valid: {sorted(all_bases)}")
    chosen = {k: v for k, v in all_bases.items() if not args.base or k in args.base}
    runs = [(name, line, option, value)
            for name, line in chosen.items()
            for option in value_options(args.binary, line[0])
            for value in VALUES]
    print(f"{len(runs)} runs of {args.binary}", file=sys.stderr)

    def run(job):
        index, (name, line, option, value) = job
        out = os.path.join(scratch, f"out{index}")
        command = [args.binary, *line, option, value, "-q"]
        if line[0] != "layers":
            command += ["--out", out]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            status, err = done.returncode, done.stderr
        except subprocess.TimeoutExpired:
            status, err = "timeout", ""
        shutil.rmtree(out, ignore_errors=True)
        return name, option, value, status, err

    failures = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, option, value, status, err in pool.map(run, enumerate(runs)):
            died = status == "timeout" or status == 101 or (isinstance(status, int) and status < 0)
            if died or "panicked" in err:
                failures += 1
                print(f"FAILED {name} {option} {value!r}: exit {status}: {err.strip()[-300:]}")
            elif status == 0 and value in SUSPECT and option not in FREE_TEXT and "warning" not in err:
                print(f"accepted {name} {option} {value!r}")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{failures} of {len(runs)} runs panicked, died or timed out", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
