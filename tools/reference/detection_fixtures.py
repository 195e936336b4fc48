#!/usr/bin/env python3
"""Write the FCOS detector parity fixtures used by
`crates/lumen-models/tests/detection_parity.rs`.

Reference: AutoTimm 0.7.37 `ObjectDetector(detection_arch="fcos")` (its FPN and
`DetectionHead`), torch 2.9.0, timm. Random init on timm's `test_resnet` backbone with
AutoTimm's own `fpn_channels=64, head_num_convs=2` (small fixtures; the key names are
those of the defaults), 3 classes, GroupNorm affine parameters, conv biases and the
per-level scales randomised so that none of them is the identity.

    python tools/reference/detection_fixtures.py

Writes to crates/lumen-models/tests/fixtures/:
  det_fcos.safetensors     the state dict as AutoTimm saves it (`backbone.*`, `fpn.*`, `head.*`)
  det_fcos_io.safetensors  input [2,3,256,256] and the raw head outputs per level
                           (`cls_p3`.. `cls_p7`, `reg_*`, `ctr_*`)
"""

import os

import torch
from autotimm.core.backbone import FeatureBackboneConfig
from autotimm.tasks.object_detection import ObjectDetector
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
LEVELS = ["p3", "p4", "p5", "p6", "p7"]


def main():
    torch.manual_seed(11)
    model = ObjectDetector(
        backbone=FeatureBackboneConfig(model_name="test_resnet", pretrained=False),
        num_classes=3,
        detection_arch="fcos",
        fpn_channels=64,
        head_num_convs=2,
        metrics=[],
        compile_model=False,
        seed=None,
        deterministic=False,
    ).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.3, 0.3)
        # The head's 0.01-std init makes every output nearly its bias: widen it so the
        # fixture exercises the towers.
        for m in model.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.05)
        for i, s in enumerate(model.head.scales):
            s.scale.fill_(0.5 + 0.25 * i)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "det_fcos.safetensors"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 256, 256, generator=g)
    with torch.no_grad():
        cls, reg, ctr = model(x)
    tensors = {"input": x}
    for name, c, r, t in zip(LEVELS, cls, reg, ctr):
        tensors[f"cls_{name}"] = c.contiguous()
        tensors[f"reg_{name}"] = r.contiguous()
        tensors[f"ctr_{name}"] = t.contiguous()
        # Each output must vary over the image, or a constant would pass.
        for key in ["cls", "reg", "ctr"]:
            v = tensors[f"{key}_{name}"]
            assert float(v.std()) > 1e-3, f"{key}_{name} is nearly constant"
    assert (reg[0] > 0).float().mean() > 0.2, "regression mostly clipped by the ReLU"
    save_file(tensors, os.path.join(OUT, "det_fcos_io.safetensors"))
    print({k: tuple(v.shape) for k, v in tensors.items()})
    print("scale keys:", [k for k in state if "scales" in k][:2], state["head.scales.0.scale"].shape)


if __name__ == "__main__":
    main()
