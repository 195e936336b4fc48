#!/usr/bin/env python3
"""Write the timm parity fixtures used by `crates/lumen-models/tests`.

Reference: torch 2.9.0 + timm (see requirements.txt beside this file).

    python tools/reference/timm_fixtures.py crates/lumen-models/tests/fixtures

Writes, for timm's tiny `test_resnet` and `test_vit` (10 classes) and a small plain
ResNet (7x7 stem, strided-conv shortcuts, Bottleneck blocks):
  NAME.safetensors    the state dict exactly as timm names it (BatchNorm running
                      statistics, LayerNorm and embeddings randomised so that they
                      matter), plus NAME.pth for test_resnet (PyTorch pickle path)
  NAME_io.safetensors `input` [2,3,160,160] float32 and timm's `logits` [2,10]
and `zoo_keys.json`: the state-dict keys and shapes of every zoo architecture, so the
Rust models can be checked key-for-key without shipping large weights.
"""

import json
import os
import sys

import timm
import torch
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

NUM_CLASSES = 10
ZOO = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet18d", "resnet34d",
    "resnet50d", "resnet101d", "test_resnet", "vit_tiny_patch16_224",
    "vit_small_patch16_224", "vit_base_patch16_224", "test_vit",
]


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give normalisation layers and embeddings values far from their init, so that a
    model that ignored them (or used batch statistics) would not match."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
            elif isinstance(module, torch.nn.LayerNorm):
                n = module.normalized_shape[0]
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
        for name in ("cls_token", "pos_embed"):
            param = getattr(model, name, None)
            if param is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        # timm initialises the ViT head with std 0.02: scale it so logits span a few units.
        head = getattr(model, "head", None)
        if isinstance(head, torch.nn.Linear):
            head.weight.mul_(50.0)


def write(out_dir: str, name: str, model: torch.nn.Module, x: torch.Tensor, pth: bool) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(x)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, f"{name}.safetensors"))
    if pth:
        torch.save(state, os.path.join(out_dir, f"{name}.pth"))
    save_file({"input": x.contiguous(), "logits": logits.contiguous()},
              os.path.join(out_dir, f"{name}_io.safetensors"))
    print(f"{name}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max():.3f}")


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "crates/lumen-models/tests/fixtures"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 160, 160, generator=generator)

    for name, pth in (("test_resnet", True), ("test_vit", False)):
        model = timm.create_model(name, num_classes=NUM_CLASSES)
        randomise(model, generator)
        write(out_dir, name, model, x, pth)

    # Plain stem, strided 1x1 shortcuts, Bottleneck: the resnet50 code path, small.
    plain = ResNet(block=Bottleneck, layers=(1, 1, 1, 1), channels=(8, 16, 16, 16),
                   num_classes=NUM_CLASSES)
    randomise(plain, generator)
    write(out_dir, "plain_resnet", plain, x, False)

    keys = {}
    for name in ZOO:
        model = timm.create_model(name, num_classes=NUM_CLASSES)
        keys[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(os.path.join(out_dir, "zoo_keys.json"), "w") as f:
        json.dump(keys, f, indent=0, sort_keys=True)
    print(f"zoo_keys.json: {len(keys)} architectures")


if __name__ == "__main__":
    main()
