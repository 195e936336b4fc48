#!/usr/bin/env python3
"""torch's side of `conv_layers` (benches/src/bin/conv_layers.rs): the same resnet18
convolutions, batch and repeats, timed with torch.nn.functional.conv2d on the CPU, so
the two tables line up row by row. Any environment with torch:

    python3 benches/peers/conv_layers.py [--batch 8] [--repeats 5] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# channels in, channels out, input size, kernel, stride, count in the network
RESNET18 = [
    (3, 64, 224, 7, 2, 1),
    (64, 64, 56, 3, 1, 4),
    (64, 128, 56, 3, 2, 1),
    (128, 128, 28, 3, 1, 3),
    (128, 256, 28, 3, 2, 1),
    (256, 256, 14, 3, 1, 3),
    (256, 512, 14, 3, 2, 1),
    (512, 512, 7, 3, 1, 3),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    total = 0.0
    print(f"resnet18 convolutions, batch {args.batch}, torch {torch.__version__}, "
          f"{args.threads} threads, ms per call (median of {args.repeats}):")
    for cin, cout, size, k, stride, count in RESNET18:
        x = torch.randn(args.batch, cin, size, size)
        w = torch.randn(cout, cin, k, k)
        b = torch.randn(cout)
        times = []
        with torch.no_grad():
            F.conv2d(x, w, b, stride, k // 2)  # warm-up
            for _ in range(args.repeats):
                start = time.perf_counter()
                F.conv2d(x, w, b, stride, k // 2)
                times.append((time.perf_counter() - start) * 1e3)
        ms = statistics.median(times)
        total += ms * count
        print(f"{f'{cin}->{cout} {size}px k{k} s{stride} x{count}':<28} {ms:>9.1f}")
    print(f"{'total':<28} {total:>9.1f}   (network total per batch, counts applied)")


if __name__ == "__main__":
    main()
