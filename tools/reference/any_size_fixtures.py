#!/usr/bin/env python3
"""Fixtures for inputs of another size than the model's data config: a ResNet takes any
height and width (timm and pytorch-grad-cam do), so Lumen must give the same logits and
maps there too.

    python tools/reference/any_size_fixtures.py

Reads timm's `test_resnet` fixture (10 classes, random weights and BatchNorm statistics)
and writes crates/lumen/tests/fixtures/test_resnet_any_size.safetensors:
  input [2,3,64,104]  a seeded non-square input, width not a multiple of the stride (32)
  logits [2,10]       timm's logits on it
  gradcam [2,64,104]  pytorch-grad-cam 1.5.7 GradCAM at layer4, classes 3 and 7
  gradcam_layer3      the same at layer3 (a 4x7 grid whose gradients vary in space)
The generator asserts that the logits differ from those of the input resized to the
data config's 160x160 (the model really sees the other size), and that each map differs
from the other layer's and is not empty.

And crates/lumen/tests/fixtures/test_vit_any_size.safetensors, for timm's `test_vit`
(patch 16, a 10x10 grid at 160x160) built with `dynamic_img_size=True`, which resamples
the position embeddings (antialiased bicubic) to the input's grid:
  input [1,3,128,192]  a seeded input: an 8x12 grid, fewer rows and more columns
  logits [1,10]        timm's logits on it
  pos_embed [1,97,64]  timm's resampled position embeddings
  gradcam [1,128,192]  pytorch-grad-cam GradCAM at blocks[-1].norm1 (8x12 reshape),
                       class 3
It asserts that timm's antialiased bicubic resampling differs from plain bilinear (so
the fixture tells them apart) and that the map is not empty.
"""

import os

import numpy as np
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/test_resnet_any_size.safetensors")
CLASSES = [3, 7]
HEIGHT, WIDTH = 64, 104


def main():
    torch.manual_seed(11)
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(load_file(os.path.join(MODELS, "test_resnet.safetensors")))
    model.eval()
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        logits = model(x)
        resized = model(torch.nn.functional.interpolate(x, size=(160, 160), mode="bilinear"))
    gap = (logits - resized).abs().max().item()
    assert gap > 1e-2, f"the logits do not depend on the input size ({gap})"
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    maps = {}
    for key, layer in [("gradcam", model.layer4[-1]), ("gradcam_layer3", model.layer3[-1])]:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            maps[key] = cam(input_tensor=x, targets=targets)
        assert maps[key].shape == (2, HEIGHT, WIDTH), maps[key].shape
        assert maps[key].max() > 0.5, f"{key} is empty"
    separation = np.abs(maps["gradcam"] - maps["gradcam_layer3"]).max()
    assert separation > 0.05, f"layer 3 and layer 4 maps agree ({separation})"
    print(f"logits vs 160x160: {gap:.3f}; layer3 vs layer4: {separation:.3f}")
    save_file({
        "input": x.contiguous(),
        "logits": logits.contiguous(),
        "gradcam": torch.from_numpy(maps["gradcam"]).contiguous(),
        "gradcam_layer3": torch.from_numpy(maps["gradcam_layer3"]).contiguous(),
    }, OUT)
    print("wrote", OUT)


def vit():
    torch.manual_seed(12)
    model = timm.create_model("test_vit", num_classes=10, dynamic_img_size=True)
    model.load_state_dict(load_file(os.path.join(MODELS, "test_vit.safetensors")))
    model.eval()
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        logits = model(x)
        _, gh, gw, d = model.patch_embed(x).shape
    assert (gh, gw) == (8, 12)
    print("vit grid", gh, gw)

    def reshape(tensor, height=8, width=12):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    targets = [ClassifierOutputTarget(CLASSES[0])]
    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1],
                 reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=targets)
    assert maps.shape == (1, 128, 192) and maps.max() > 0.5
    # Resampling against a simple alternative: bilinear without antialiasing.
    patch = model.pos_embed[:, 1:].reshape(1, 10, 10, d).permute(0, 3, 1, 2)
    bilinear = torch.nn.functional.interpolate(patch, size=(8, 12), mode="bilinear")
    from timm.layers import resample_abs_pos_embed
    timm_pos = resample_abs_pos_embed(model.pos_embed, new_size=(8, 12), old_size=(10, 10))
    gap = (timm_pos[:, 1:] - bilinear.permute(0, 2, 3, 1).reshape(1, -1, d)).abs().max().item()
    assert gap > 1e-3, f"the resampling is indistinguishable from bilinear ({gap})"
    print(f"vit: antialiased bicubic vs bilinear embeddings {gap:.4f}")
    save_file({
        "input": x.contiguous(),
        "logits": logits.contiguous(),
        "pos_embed": timm_pos.detach().contiguous(),
        "gradcam": torch.from_numpy(maps).contiguous(),
    }, OUT.replace("test_resnet", "test_vit"))
    print("wrote", OUT.replace("test_resnet", "test_vit"))


if __name__ == "__main__":
    main()
    vit()
