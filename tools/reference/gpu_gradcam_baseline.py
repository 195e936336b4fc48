#!/usr/bin/env python3
"""GPU reference timing for the GradCAM benchmark (`benches/benches/methods.rs`):
PyTorch does what pytorch-grad-cam does for one batch (forward with a hook on
layer4, backward of the target logits, channel weights = mean gradient, ReLU of the
weighted sum, bilinear resize to the input, per-image min-max), all on the GPU
(pytorch-grad-cam itself moves each map to NumPy and resizes with OpenCV, so it is
slower than this). timm architectures with random weights (no download).

    python tools/reference/gpu_gradcam_baseline.py
"""

import time

import timm
import torch


def gradcam(model, layer, x, classes):
    store = {}

    def hook(_, __, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    logits = model(x)
    handle.remove()
    logits[torch.arange(len(classes)), classes].sum().backward()
    a, g = store["a"], store["a"].grad
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    flat = cam.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + 1e-7)).view(cam.shape)


def main():
    device = torch.device("cuda")
    for arch in ["resnet18", "resnet50"]:
        model = timm.create_model(arch, num_classes=1000).to(device).eval()
        x = torch.randn(8, 3, 224, 224, device=device)
        classes = torch.arange(8, device=device)
        for _ in range(5):
            gradcam(model, model.layer4, x.clone().requires_grad_(False), classes)
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            start = time.perf_counter()
            cam = gradcam(model, model.layer4, x, classes)
            cam.cpu()
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"torch gradcam/{arch}/batch8 median {1e3 * times[len(times) // 2]:.2f} ms")


if __name__ == "__main__":
    main()
