#!/usr/bin/env python3
"""Read a TensorBoard run folder with TensorBoard's own EventAccumulator (keeping every
event: size guidance 0) and print everything in it as JSON:

    {"scalars":    {tag: [[step, value], ...]},
     "images":     {tag: [[step, width, height, [png bytes...]], ...]},
     "histograms": {tag: [[step, min, max, num, sum, sum_squares, [limits], [counts]], ...]}}

Used by lumen-train's tests (`LUMEN_MONITOR_PYTHON=... cargo test -p lumen-train --
--ignored`) and by check_run.py. Needs `pip install tensorboard`.
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea


def read(logdir):
    acc = ea.EventAccumulator(
        logdir,
        size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0},
    )
    acc.Reload()
    tags = acc.Tags()
    return {
        "scalars": {
            t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]
        },
        "images": {
            t: [[e.step, e.width, e.height, list(e.encoded_image_string)] for e in acc.Images(t)]
            for t in tags["images"]
        },
        "histograms": {
            t: [
                [
                    e.step,
                    e.histogram_value.min,
                    e.histogram_value.max,
                    e.histogram_value.num,
                    e.histogram_value.sum,
                    e.histogram_value.sum_squares,
                    list(e.histogram_value.bucket_limit),
                    list(e.histogram_value.bucket),
                ]
                for e in acc.Histograms(t)
            ]
            for t in tags["histograms"]
        },
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_tensorboard.py RUN_FOLDER")
    json.dump(read(sys.argv[1]), sys.stdout)
