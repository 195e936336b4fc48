#!/usr/bin/env python3
"""Write the semantic-segmentation parity fixtures used by
`crates/lumen-models/tests/segmentation_parity.rs` and `crates/lumen/tests/segmentation_parity.rs`.

References: AutoTimm 0.7.37 (`SemanticSegmentor`, its `DeepLabV3PlusHead` and `FCNHead`),
pytorch-grad-cam 1.5.7 (`GradCAM`, `GradCAMPlusPlus` with `SemanticSegmentationTarget`),
torch 2.9.0, timm; the uncertainty maps are a NumPy transcription of AutoTimm's
definitions without its min-max normalisation.

    python tools/reference/segmentation_fixtures.py
    python tools/reference/segmentation_fixtures.py --full-size DIR   # default widths, not committed
    python tools/reference/segmentation_fixtures.py --captum-only     # only the captum fixture
    python tools/reference/segmentation_fixtures.py --pixel-classes-only  # add `pixel_classes`

Models: AutoTimm segmentors on timm's `test_resnet` backbone (random init, 5 classes).
The heads are AutoTimm's own classes at a reduced width (DeepLabV3+ ASPP/decoder 32
channels, FCN 64) so the fixtures stay small; the key names are those of the default
widths. BatchNorm statistics and affine parameters are randomised so that evaluation-mode
BatchNorm is not the identity.

Writes to crates/lumen-models/tests/fixtures/:
  seg_{deeplabv3plus,fcn}.safetensors     the state dict as AutoTimm saves it (`backbone.*`,
                                          `head.*`)
  seg_deeplabv3plus.ckpt                  a real PyTorch Lightning checkpoint of the same
                                          model after one plain-SGD optimizer step with
                                          `torch.compile`'s key names (`backbone._orig_mod.*`)
  seg_{deeplabv3plus,fcn}_io.safetensors  input [2,3,160,160], logits, the reference maps,
                                          and `pixel_classes` [2,160,160]: the class of
                                          every input pixel as AutoTimm scores its mIoU
                                          (`_match_mask_size`, then arg-max)
  seg_deeplabv3plus_ckpt_io.safetensors   input and logits of the checkpoint's model
  seg_deeplabv3plus_captum.safetensors    captum 0.9.0's `LayerGradCam` on the
                                          predicted-class-aggregate wrapper of its
                                          segmentation tutorial, raw (signed, at the
                                          layer's resolution, no ReLU, no scaling), at
                                          `backbone.layer4` and `head.decoder`, for the
                                          classes of seg_deeplabv3plus_io.safetensors
"""

import os
import sys

import numpy as np
import pytorch_lightning as pl
import torch
from autotimm.core.backbone import FeatureBackboneConfig, get_feature_channels
from autotimm.heads import DeepLabV3PlusHead, FCNHead
from autotimm.tasks.semantic_segmentation import SemanticSegmentor
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
NUM_CLASSES = 5
SIZE = 160
SEED = 7


def build(head_type, seed):
    torch.manual_seed(seed)
    model = SemanticSegmentor(
        backbone=FeatureBackboneConfig(model_name="test_resnet", pretrained=False),
        num_classes=NUM_CLASSES,
        head_type=head_type,
        metrics=None,
        compile_model=False,
        seed=None,
        deterministic=False,
    )
    channels = get_feature_channels(model.backbone)
    if head_type == "deeplabv3plus":
        model.head = DeepLabV3PlusHead(channels, NUM_CLASSES, aspp_out_channels=32, decoder_channels=32)
    else:
        model.head = FCNHead(channels[-1], NUM_CLASSES, intermediate_channels=64)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def ranked_classes(p):
    """Predicted non-background classes (class 0 is background), most frequent first;
    ties go to the lower index."""
    counts = torch.bincount(p.flatten(), minlength=NUM_CLASSES)[1:]
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    return [c + 1 for c in order if counts[c] > 0]


def default_class(logits):
    """The most frequent predicted non-background class; 0 when only background is
    predicted."""
    return [(ranked_classes(p) or [0])[0] for p in logits.argmax(1)]


def uncertainty(logits):
    p = torch.softmax(logits.double(), 1).numpy()
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(1)
    top = np.sort(p, axis=1)
    margin = 1.0 - (top[:, -1] - top[:, -2])
    return entropy.astype(np.float32), (entropy / np.log(NUM_CLASSES)).astype(np.float32), margin.astype(np.float32)


def cams(model, x, logits, layer, method=GradCAM):
    pred = logits.argmax(1).numpy()
    # Image 0: the default class; image 1: its second most frequent class.
    classes = [default_class(logits)[0], ranked_classes(logits.argmax(1)[1])[1]]
    masks = [(pred[i] == c).astype(np.float32) for i, c in enumerate(classes)]
    out = {}
    with method(model=model, target_layers=[layer]) as cam:
        targets = [SemanticSegmentationTarget(c, m) for c, m in zip(classes, masks)]
        out["mask"] = cam(input_tensor=x, targets=targets)
        ones = [np.ones_like(m) for m in masks]
        out["whole"] = cam(input_tensor=x, targets=[SemanticSegmentationTarget(c, m) for c, m in zip(classes, ones)])
        other = [(c + 1) % NUM_CLASSES for c in classes]
        out["other_class"] = cam(
            input_tensor=x,
            targets=[SemanticSegmentationTarget(c, (pred[i] == c).astype(np.float32)) for i, c in enumerate(other)],
        )
    return classes, masks, out


def pixel_classes(logits):
    """AutoTimm's per-pixel prediction, as its validation mIoU computes it: the logits
    resized to the mask's size (bilinear, align_corners=False), then arg-max. Asserted
    apart from its neighbours (the output grid enlarged nearest-neighbour, as Lumen's
    figures drew it before; align_corners=True, Burn's default), and every arg-max
    decided by a margin float32 rounding cannot flip."""
    import torch.nn.functional as F

    b = logits.shape[0]
    resized = SemanticSegmentor._match_mask_size(logits, torch.zeros(b, SIZE, SIZE))
    classes = resized.argmax(1)
    top = resized.topk(2, dim=1).values
    margin = float((top[:, 0] - top[:, 1]).min())
    assert margin > 1e-5, f"an arg-max decided by {margin}: rounding could flip it"
    blocks = F.interpolate(logits.argmax(1, keepdim=True).float(), size=(SIZE, SIZE), mode="nearest")[:, 0].long()
    corners = F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=True).argmax(1)
    for name, other in [("the grid enlarged nearest-neighbour", blocks), ("align_corners=True", corners)]:
        share = float((other != classes).float().mean())
        print(f"  pixel classes vs {name}: {share:.4f} of pixels differ")
        assert share > 1e-3, f"pixel classes vs {name}: only {share} of pixels differ"
    return classes


def add_pixel_classes(head_type):
    from safetensors.torch import load_file

    path = os.path.join(OUT, f"seg_{head_type}_io.safetensors")
    tensors = load_file(path)
    print(head_type)
    tensors["pixel_classes"] = pixel_classes(tensors["logits"])
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def separated(a, b, what):
    gap = float(np.abs(a - b).max())
    assert gap > 0.05, f"{what}: fixture cannot tell the variants apart (max gap {gap})"


def write_model(head_type, x):
    model = build(head_type, SEED)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, f"seg_{head_type}.safetensors"))
    with torch.no_grad():
        logits = model(x)
    expected_stride = {"deeplabv3plus": 4, "fcn": 32}[head_type]
    assert logits.shape == (2, NUM_CLASSES, SIZE // expected_stride, SIZE // expected_stride), logits.shape
    entropy, entropy_norm, margin = uncertainty(logits)
    tensors = {
        "input": x,
        "logits": logits,
        "entropy": torch.from_numpy(entropy),
        "entropy_normalized": torch.from_numpy(entropy_norm),
        "margin": torch.from_numpy(margin),
        "default_class": torch.tensor(default_class(logits), dtype=torch.int64),
        "pixel_classes": pixel_classes(logits),
    }
    layers = {"backbone.layer4": model.backbone.layer4}
    if head_type == "deeplabv3plus":
        layers["head.decoder"] = model.head.decoder
    for name, layer in layers.items():
        classes, masks, maps = cams(model, x, logits, layer)
        if name == "backbone.layer4":
            # Right before the 1x1 classifier the gradient is the classifier's weights
            # times the mask, so GradCAM's channel weights only scale with the mask
            # and the normalised map does not depend on it: no separation there.
            separated(maps["mask"], maps["whole"], f"{head_type} {name}: predicted mask vs whole image")
        separated(maps["mask"], maps["other_class"], f"{head_type} {name}: class vs another class")
        tensors[f"gradcam_{name}"] = torch.from_numpy(maps["mask"])
        tensors[f"gradcam_{name}_whole"] = torch.from_numpy(maps["whole"])
        tensors["classes"] = torch.tensor(classes, dtype=torch.int64)
        tensors["masks"] = torch.from_numpy(np.stack(masks))
    _, _, pp = cams(model, x, logits, model.backbone.layer4, GradCAMPlusPlus)
    separated(pp["mask"], tensors["gradcam_backbone.layer4"].numpy(), f"{head_type}: GradCAM++ vs GradCAM")
    tensors["gradcampp_backbone.layer4"] = torch.from_numpy(pp["mask"])
    # Nearest neighbours of the uncertainty maps must differ too.
    separated(entropy_norm, margin, "normalised entropy vs margin")
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"seg_{head_type}_io.safetensors"))
    print(f"{head_type}: logits {tuple(logits.shape)}, classes {tensors['classes'].tolist()}")


class Scenes(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {
            "image": torch.randn(3, SIZE, SIZE, generator=g),
            "mask": torch.randint(0, NUM_CLASSES, (SIZE, SIZE), generator=g),
        }


def write_checkpoint(x):
    """A Lightning checkpoint as a user's training run leaves it: weights under
    `state_dict` (compiled: `_orig_mod.` in the keys), hyper-parameters, optimizer state.
    The optimizer is plain SGD, whose saved state is its parameter groups only, rather
    than AdamW's two moments per weight (6 MB): the reader still walks past the
    optimizer, scheduler, loop and callback records."""
    model = build("deeplabv3plus", SEED + 1)
    model._optimizer = "sgd"
    model._optimizer_kwargs = {"momentum": 0.0}
    # AutoTimm's default `compile_model=True` wraps both modules: real checkpoints carry
    # `_orig_mod.` in their keys. The eager backend keeps the wrapper without codegen.
    model.backbone = torch.compile(model.backbone, backend="eager")
    model.head = torch.compile(model.head, backend="eager")
    model.train()
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    loader = torch.utils.data.DataLoader(Scenes(), batch_size=2)
    trainer.fit(model, loader)
    path = os.path.join(OUT, "seg_deeplabv3plus.ckpt")
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    keys = list(ckpt["state_dict"])
    assert any("_orig_mod." in k for k in keys), keys[:5]
    assert "hyper_parameters" in ckpt and "optimizer_states" in ckpt
    model.eval()
    with torch.no_grad():
        logits = model(x)
    save_file({"input": x, "logits": logits.contiguous()}, os.path.join(OUT, "seg_deeplabv3plus_ckpt_io.safetensors"))
    print(f"checkpoint: {len(keys)} keys, e.g. {keys[0]}")


def write_captum(x):
    """captum's segmentation tutorial: the model's output aggregated per class over the
    pixels where that class is predicted (`agg_segmentation_wrapper`), explained by
    `LayerGradCam` for one class per image. Its attribution is the raw GradCAM map:
    signed, at the layer's resolution, unscaled."""
    from captum.attr import LayerGradCam

    model = build("deeplabv3plus", SEED)

    def agg_segmentation_wrapper(inp):
        out = model(inp)
        selected = torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1)
        return (out * selected).sum(dim=(2, 3))

    def whole_image_wrapper(inp):
        return model(inp).sum(dim=(2, 3))

    with torch.no_grad():
        logits = model(x)
    classes = [default_class(logits)[0], ranked_classes(logits.argmax(1)[1])[1]]
    target = torch.tensor(classes)
    tensors = {"classes": torch.tensor(classes, dtype=torch.int64)}
    for name, layer in [("backbone.layer4", model.backbone.layer4), ("head.decoder", model.head.decoder)]:
        raw = LayerGradCam(agg_segmentation_wrapper, layer).attribute(x, target=target)
        raw = raw.detach()[:, 0]
        # Separations: the map is not zero, the predicted region is not the whole image
        # (AutoTimm's helper), and (at the decoder) it is signed: a ReLU would change it.
        scale = float(raw.abs().max())
        assert scale > 1e-3, f"{name}: a zero map"
        negative = float((-raw).clamp_min(0).max()) / scale
        whole = LayerGradCam(whole_image_wrapper, layer).attribute(x, target=target).detach()[:, 0]
        # Compared raw, as the test compares: at the decoder (before the 1x1 classifier)
        # the mask only scales the map, which a raw comparison sees.
        gap = float((whole - raw).abs().max()) / scale
        print(f"captum LayerGradCam {name}: {tuple(raw.shape)}, max |raw| {scale:.4g}, "
              f"negative share of scale {negative:.3f}, predicted region vs whole image {gap:.3f}")
        assert gap > 0.05, f"{name}: predicted region vs whole image agree ({gap})"
        if name == "head.decoder":
            # At layer4 every channel weight happens to be positive here, so the map is
            # too: the decoder's map carries the sign check.
            assert negative > 0.05, f"{name}: no negative values, a ReLU would pass ({negative})"
        # The map must vary over the layer's grid, or a constant would pass.
        assert float(raw.std()) > 0.05 * scale, f"{name}: nearly constant"
        tensors[f"captum_layergradcam_{name}"] = raw.contiguous()
    save_file(tensors, os.path.join(OUT, "seg_deeplabv3plus_captum.safetensors"))


def write_full_size(out):
    """Default-width AutoTimm segmentors on resnet18 and resnet50d (21 classes, random
    weights, randomised BatchNorm statistics) and their logits on one 512x512 input:
    too large to commit, checked by the ignored `full_size_segmentors_match_autotimm`."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 512, 512)
    np.save(os.path.join(out, "input.npy"), x.numpy())
    for head in ["deeplabv3plus", "fcn"]:
        for backbone in ["resnet18", "resnet50d"]:
            model = SemanticSegmentor(
                backbone=FeatureBackboneConfig(model_name=backbone, pretrained=False),
                num_classes=21, head_type=head, metrics=None, compile_model=False,
            ).eval()
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.2, 0.2)
                        m.running_var.uniform_(0.5, 1.5)
                logits = model(x)
            torch.save(model.state_dict(), os.path.join(out, f"{head}_{backbone}.pth"))
            np.save(os.path.join(out, f"{head}_{backbone}_logits.npy"), logits.numpy())
            print(head, backbone, tuple(logits.shape))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--full-size":
        write_full_size(sys.argv[2])
        return
    if len(sys.argv) == 2 and sys.argv[1] == "--pixel-classes-only":
        for head_type in ["deeplabv3plus", "fcn"]:
            add_pixel_classes(head_type)
        return
    if len(sys.argv) == 2 and sys.argv[1] == "--captum-only":
        write_captum(torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
        return
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=g)
    for head_type in ["deeplabv3plus", "fcn"]:
        write_model(head_type, x)
    write_checkpoint(x)
    write_captum(x)


if __name__ == "__main__":
    main()
