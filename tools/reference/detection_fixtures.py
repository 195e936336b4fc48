#!/usr/bin/env python3
"""Write the FCOS detector parity fixtures used by
`crates/lumen-models/tests/detection_parity.rs`.

Reference: AutoTimm 0.7.37 `ObjectDetector(detection_arch="fcos")` (its FPN and
`DetectionHead`), torch 2.9.0, timm. Random init on timm's `test_resnet` backbone with
AutoTimm's own `fpn_channels=64, head_num_convs=2` (small fixtures; the key names are
those of the defaults), 3 classes, GroupNorm affine parameters, conv biases and the
per-level scales randomised so that none of them is the identity.

    python tools/reference/detection_fixtures.py
    python tools/reference/detection_fixtures.py shifted_box   # only add those keys

Writes to crates/lumen-models/tests/fixtures/:
  det_fcos_drise.safetensors  D-RISE masks as their 8x8 cells [48,8,8] and shifts [48,2]
                           (upsampled bilinearly to 9 cells and cropped), per image a target
                           box and label and the map of a NumPy/torch transcription of the
                           paper
  det_renormalize.safetensors  a 40x48 map, three boxes and its per-box renormalisation
  det_fcos.ckpt            the detector as a PyTorch Lightning checkpoint, as AutoTimm saves
                           it with its default `compile_model=True` (`_orig_mod.` in the
                           keys, the level scales as 0-d tensors, hyper-parameters beside
                           `state_dict`); saved with `weights_only=True` (no optimizer
                           state: 3 MB instead of 9). The fixtures' only copy of the
                           weights (a plain state dict in safetensors is the bundled
                           shapes-det's format, and the segmentors' fixtures)
  det_fcos_io.safetensors  input [2,3,256,256]; the raw head outputs per level
                           (`cls_p3`.. `cls_p7`, `reg_*`, `ctr_*`); `predict`'s detections
                           per image (`boxes_{b}`, `scores_{b}`, `labels_{b}`); and GradCAM,
                           GradCAM++ and EigenCAM at `backbone.layer4` with pytorch-grad-cam's
                           `FasterRCNNBoxScoreTarget` on each image's best detection
                           (`gradcam`, `gradcampp`, `eigencam`) and on its second
                           (`gradcam_second`); GradCAM of the best detection's class logit
                           and centerness logit (`gradcam_class_logit`, `gradcam_centerness`);
                           GradCAM with the box-score target on a box moved by 6% of its
                           size (`shifted_box_{b}`, `shifted_labels`,
                           `gradcam_shifted_box`), where the IoU term has a gradient
"""

import os
import sys

import numpy as np
import torch
import torchvision
from autotimm.core.backbone import FeatureBackboneConfig
from autotimm.tasks._fcos_targets import decode_fcos_detections
from autotimm.tasks.object_detection import ObjectDetector
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_fixtures import finish, signed_projection  # noqa: E402  (the EigenCAM sign rule)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
LEVELS = ["p3", "p4", "p5", "p6", "p7"]


CAM_KEYS = ["gradcam", "gradcampp", "eigencam", "gradcam_second", "gradcam_class_logit", "gradcam_centerness"]


def build_model():
    return ObjectDetector(
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


class Decoded(torch.nn.Module):
    """The detector with `predict`'s decoding, gradients kept: what the box-score
    target reads (pytorch-grad-cam's Faster R-CNN tutorial wraps the same way)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        cls, reg, ctr = self.detector(images)
        d = self.detector
        return decode_fcos_detections(
            cls, reg, ctr, d.strides, d.num_classes, tuple(images.shape[-2:]),
            d.score_thresh, d.nms_thresh, d.max_detections_per_image,
        )


class ScoreOnly(FasterRCNNBoxScoreTarget):
    """FasterRCNNBoxScoreTarget without its IoU term: the matched detection's score."""

    def __call__(self, model_outputs):
        output = torch.zeros(1)
        for box, label in zip(self.bounding_boxes, self.labels):
            ious = torchvision.ops.box_iou(torch.tensor(box[None, :]), model_outputs["boxes"])
            index = ious.argmax()
            if ious[0, index] > self.iou_threshold and model_outputs["labels"][index] == label:
                output = output + model_outputs["scores"][index]
        return output


def shifted_box_gradcam(model, x, detections, tensors):
    """GradCAM with the box-score target on a box that is not a detection's own: per
    image, the largest of the 20 best detections' boxes, moved right and down by 6% of
    its size (IoU still above the 0.5 match threshold). On a detection's own box every
    side ties and the IoU has no gradient (torchvision's `box_iou` under torch.max/min's
    tie rule), so the other keys cannot tell the target from its score alone; this one
    must. The random detector's boxes are all under a pixel, and the IoU's gradient
    grows as a side shrinks: the best box of image 1 is 0.009 px wide, where float
    rounding alone moved the map by 8e-4; the largest (0.25 and 0.38 px^2) do not."""
    shifted, labels = [], []
    for d in detections:
        boxes = d["boxes"].detach()[:20]
        k = int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax())
        x1, y1, x2, y2 = boxes[k].tolist()
        dx, dy = 0.06 * (x2 - x1), 0.06 * (y2 - y1)
        shifted.append(np.array([x1 + dx, y1 + dy, x2 + dx, y2 + dy], np.float32))
        labels.append(int(d["labels"][k]))
    layer = [model.backbone.layer4]
    maps = {}
    for key, target in [("gradcam_shifted_box", FasterRCNNBoxScoreTarget), ("score_only", ScoreOnly)]:
        targets = [target(labels=[label], bounding_boxes=[box])
                   for label, box in zip(labels, shifted)]
        with GradCAM(model=Decoded(model), target_layers=layer) as cam:
            maps[key] = cam(input_tensor=x, targets=targets)
    gap = float(np.abs(maps["gradcam_shifted_box"] - maps["score_only"]).max())
    assert gap > 0.05, f"the shifted box's IoU term changes the map by {gap} only"
    print(f"shifted box: the IoU term changes GradCAM by {gap:.3f}")
    for b, box in enumerate(shifted):
        tensors[f"shifted_box_{b}"] = torch.from_numpy(box)
    tensors["shifted_labels"] = torch.tensor(labels, dtype=torch.int64)
    tensors["gradcam_shifted_box"] = torch.from_numpy(maps["gradcam_shifted_box"]).contiguous().half()


def add_shifted_box():
    """Add the shifted-box keys to det_fcos_io.safetensors, the other keys as they are,
    from the committed checkpoint's weights."""
    from safetensors.torch import load_file

    path = os.path.join(OUT, "det_fcos_io.safetensors")
    tensors = load_file(path)
    model = build_model()
    model.load_state_dict(checkpoint_weights())
    x = tensors["input"]
    detections = model.predict(x)
    for b, d in enumerate(detections):
        assert torch.equal(d["boxes"].detach(), tensors[f"boxes_{b}"]), "the detections moved"
    shifted_box_gradcam(model, x, detections, tensors)
    save_file(tensors, path)
    print("det_fcos_io now holds", sorted(tensors))


def main():
    torch.manual_seed(11)
    model = build_model()
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
    detections = model.predict(x)
    for b, d in enumerate(detections):
        assert len(d["boxes"]) >= 2, f"image {b}: {len(d['boxes'])} detections, need 2"
        tensors[f"boxes_{b}"] = d["boxes"].detach().contiguous()
        tensors[f"scores_{b}"] = d["scores"].detach().contiguous()
        tensors[f"labels_{b}"] = d["labels"].to(torch.int64).contiguous()
    print("detections per image:", [len(d["boxes"]) for d in detections])

    wrapped = Decoded(model)

    def targets(rank):
        return [
            FasterRCNNBoxScoreTarget(
                labels=[int(d["labels"][rank])],
                bounding_boxes=[d["boxes"][rank].detach().numpy()],
            )
            for d in detections
        ]

    layer = [model.backbone.layer4]
    maps = {}
    for key, method, rank in [
        ("gradcam", GradCAM, 0),
        ("gradcampp", GradCAMPlusPlus, 0),
        ("gradcam_second", GradCAM, 1),
    ]:
        with method(model=wrapped, target_layers=layer) as cam:
            maps[key] = cam(input_tensor=x, targets=targets(rank))
        tensors[key] = torch.from_numpy(maps[key]).contiguous()
    # EigenCAM: the library's projection with the deterministic sign the classification
    # fixtures use (method_fixtures.py); the library's own sign is arbitrary.
    store = {}
    handle = model.backbone.layer4.register_forward_hook(lambda _, __, o: store.update(a=o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    maps["eigencam"] = finish(signed_projection(store["a"].numpy()), (x.shape[-1], x.shape[-2]))
    tensors["eigencam"] = torch.from_numpy(maps["eigencam"]).contiguous()
    with EigenCAM(model=wrapped, target_layers=layer) as cam:
        library = cam(input_tensor=x, targets=targets(0))
    print("EigenCAM: max |ours - library| =", float(np.abs(library - maps["eigencam"]).max()))
    # The class and centerness logits at the best detection's location: the location
    # with the highest score (what `predict` puts first), its best class.
    class Dense(torch.nn.Module):
        """Per image, every location's class logits [N, C] and centerness logit [N],
        levels concatenated in order, row-major within a level."""

        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, images):
            cls, _, ctr = self.detector(images)
            out = []
            for b in range(images.shape[0]):
                out.append({
                    "cls": torch.cat([c[b].permute(1, 2, 0).reshape(-1, c.shape[1]) for c in cls]),
                    "ctr": torch.cat([t[b, 0].reshape(-1) for t in ctr]),
                })
            return out

    dense = Dense(model)
    with torch.no_grad():
        first = []
        for d in dense(x):
            scores = d["cls"].sigmoid() * d["ctr"].sigmoid()[:, None]
            best, labels = scores.max(-1)
            loc = int(best.argmax())
            first.append((loc, int(labels[loc])))
    for b, (loc, label) in enumerate(first):
        assert int(detections[b]["labels"][0]) == label, "the best location is the first detection"
    for key, pick in [
        ("gradcam_class_logit", lambda d, loc, label: d["cls"][loc, label]),
        ("gradcam_centerness", lambda d, loc, label: d["ctr"][loc]),
    ]:
        targets_dense = [(lambda d, loc=loc, label=label, pick=pick: pick(d, loc, label)) for loc, label in first]
        with GradCAM(model=dense, target_layers=layer) as cam:
            maps[key] = cam(input_tensor=x, targets=targets_dense)
        tensors[key] = torch.from_numpy(maps[key]).contiguous()
    for a, b in [("gradcam", "gradcampp"), ("gradcam", "eigencam"), ("gradcam", "gradcam_second"),
                 ("gradcam", "gradcam_class_logit"), ("gradcam_class_logit", "gradcam_centerness")]:
        gap = float(np.abs(maps[a] - maps[b]).max())
        assert gap > 0.05, f"{a} vs {b}: the fixture cannot tell them apart ({gap})"
    # The CAM maps (values in [0, 1], compared at 1e-3) as float16: rounding at most
    # 2.4e-4, half the size.
    for key in CAM_KEYS:
        tensors[key] = tensors[key].half()
    shifted_box_gradcam(model, x, detections, tensors)
    save_file(tensors, os.path.join(OUT, "det_fcos_io.safetensors"))
    print({k: tuple(v.shape) for k, v in tensors.items()})
    print("scale keys:", [k for k in state if "scales" in k][:2], state["head.scales.0.scale"].shape)
    return model




def drise_reference(model, x, masks, target_box, target_label, score_thresh=0.05, nms_thresh=0.5, max_det=100):
    """A NumPy/torch transcription of D-RISE (Petsiuk et al. 2021) for a dense detector
    with the given masks: the weight of mask i is the best, over the masked image's
    detections, of IoU(target, box) x objectness x cosine(one-hot target, class scores);
    the map is sum_i w_i M_i / N. Objectness is sigmoid(centerness), the class scores
    sigmoid(class) x sigmoid(centerness) of the detection's location."""
    import torchvision

    weights = []
    with torch.no_grad():
        for m in masks:
            cls, reg, ctr = model(x * m[None, None])
            boxes, scores, objectness = [], [], []
            for level, (c, r, t) in enumerate(zip(cls, reg, ctr)):
                s = model.strides[level]
                h, w = c.shape[-2:]
                gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
                px, py = ((gx + 0.5) * s).reshape(-1), ((gy + 0.5) * s).reshape(-1)
                ltrb = r[0].permute(1, 2, 0).reshape(-1, 4)
                H, W = x.shape[-2:]
                boxes.append(torch.stack([
                    (px - ltrb[:, 0]).clamp(0, W), (py - ltrb[:, 1]).clamp(0, H),
                    (px + ltrb[:, 2]).clamp(0, W), (py + ltrb[:, 3]).clamp(0, H)], -1))
                o = t[0, 0].reshape(-1).sigmoid()
                scores.append(c[0].permute(1, 2, 0).reshape(-1, c.shape[1]).sigmoid() * o[:, None])
                objectness.append(o)
            boxes, scores, objectness = torch.cat(boxes), torch.cat(scores), torch.cat(objectness)
            best, labels = scores.max(-1)
            keep = torch.nonzero(best > score_thresh).reshape(-1)
            kept = torchvision.ops.batched_nms(boxes[keep], best[keep], labels[keep], nms_thresh)[:max_det]
            idx = keep[kept]
            if len(idx) == 0:
                weights.append(0.0)
                continue
            iou = torchvision.ops.box_iou(torch.tensor([target_box]), boxes[idx])[0]
            cosine = scores[idx, target_label] / scores[idx].norm(dim=-1).clamp_min(1e-12)
            weights.append(float((iou * objectness[idx] * cosine).max()))
    w = torch.tensor(weights)[:, None, None]
    return (masks * w).sum(0) / len(masks), weights


def write_drise():
    """D-RISE fixture: 48 masks (RISE-style, 8x8 grid, p = 0.5, from NumPy), for each
    fixture image the largest of its 20 best detections as the target."""
    from safetensors.torch import load_file

    torch.manual_seed(11)
    model = ObjectDetector(
        backbone=FeatureBackboneConfig(model_name="test_resnet", pretrained=False),
        num_classes=3, detection_arch="fcos", fpn_channels=64, head_num_convs=2,
        metrics=[], compile_model=False, seed=None, deterministic=False,
    ).eval()
    model.load_state_dict(checkpoint_weights())
    io = load_file(os.path.join(OUT, "det_fcos_io.safetensors"))
    x = io["input"]
    rng = np.random.default_rng(5)
    n, g, size = 48, 8, x.shape[-1]
    cell = size // g
    grid = torch.from_numpy((rng.random((n, 1, g, g)) < 0.5).astype(np.float32))
    up = torch.nn.functional.interpolate(grid, size=((g + 1) * cell, (g + 1) * cell), mode="bilinear", align_corners=False)
    shifts = rng.integers(0, cell, size=(n, 2))
    masks = torch.stack([up[i, 0, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(shifts)])
    # The masks are rebuilt from their cells and shifts (small) by the test.
    out = {"drise_cells": grid.reshape(n, g, g).contiguous(), "drise_shifts": torch.from_numpy(shifts.astype(np.int64))}
    maps = []
    for b in range(x.shape[0]):
        boxes = io[f"boxes_{b}"][:20]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        k = int(area.argmax())
        box, label = boxes[k].tolist(), int(io[f"labels_{b}"][k])
        saliency, weights = drise_reference(model, x[b:b + 1], masks, box, label)
        assert sum(w > 0 for w in weights) >= 5, f"image {b}: only {sum(w > 0 for w in weights)} masks match the target"
        out[f"drise_box_{b}"] = torch.tensor(box)
        out[f"drise_label_{b}"] = torch.tensor([label], dtype=torch.int64)
        out[f"drise_{b}"] = saliency.contiguous()
        maps.append(saliency)
        print(f"D-RISE image {b}: target {box} label {label}, {sum(w > 0 for w in weights)}/{n} masks weighted")
    # The two images' maps (different targets, same masks) must differ.
    gap = float((maps[0] / maps[0].max() - maps[1] / maps[1].max()).abs().max())
    assert gap > 0.05, f"D-RISE maps of different targets agree ({gap})"
    save_file(out, os.path.join(OUT, "det_fcos_drise.safetensors"))



def write_renormalize():
    """`renormalize_cam_in_bounding_boxes` of pytorch-grad-cam's detection tutorials,
    transcribed as the tutorial describes it (min-max inside each box, zero outside,
    min-max overall), on a random 40x48 map and three boxes (one partly outside, one
    overlapping another). The tutorial's own call scales each row of a box separately
    (`scale_cam_image` iterates over the first axis of the 2-D crop): the fixture must
    tell the two apart."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    rng = np.random.default_rng(9)
    cam = rng.random((40, 48)).astype(np.float32)
    boxes = np.array([[3.7, 2.2, 20.9, 15.5], [15.0, 10.0, 30.0, 33.0], [40.5, 30.0, 60.0, 50.0]], dtype=np.float32)

    def renormalize(rowwise):
        out = np.zeros_like(cam)
        for x1, y1, x2, y2 in boxes.astype(np.int32):
            x2, y2 = min(x2, cam.shape[1]), min(y2, cam.shape[0])
            crop = cam[y1:y2, x1:x2].copy()
            out[y1:y2, x1:x2] = scale_cam_image(crop) if rowwise else scale_cam_image(crop[None])[0]
        return scale_cam_image(out[None])[0]

    ours, tutorial = renormalize(False), renormalize(True)
    gap = float(np.abs(ours - tutorial).max())
    assert gap > 0.05, f"box-wise and row-wise renormalisation agree ({gap})"
    save_file(
        {"map": torch.from_numpy(cam), "boxes": torch.from_numpy(boxes), "renormalized": torch.from_numpy(ours)},
        os.path.join(OUT, "det_renormalize.safetensors"),
    )


def checkpoint_weights():
    """The plain state dict of det_fcos.ckpt (`_orig_mod.` dropped)."""
    state = torch.load(os.path.join(OUT, "det_fcos.ckpt"), weights_only=False)["state_dict"]
    return {k.replace("._orig_mod.", "."): v for k, v in state.items()}


def write_checkpoint(model):
    """The fixture detector as a Lightning checkpoint of a compiled model."""
    import copy

    import pytorch_lightning as pl
    from safetensors.torch import load_file

    model = copy.deepcopy(model).eval()
    # What AutoTimm's `compile_model=True` does to the three modules; the eager backend
    # keeps the wrapper (and its key prefix) without code generation.
    for name in ["backbone", "fpn", "head"]:
        setattr(model, name, torch.compile(getattr(model, name), backend="eager"))
    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )
    trainer.strategy.connect(model)
    path = os.path.join(OUT, "det_fcos.ckpt")
    trainer.save_checkpoint(path, weights_only=True)
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["state_dict"]
    assert "hyper_parameters" in ckpt, list(ckpt)
    for prefix in ["backbone._orig_mod.", "fpn._orig_mod.", "head._orig_mod."]:
        assert any(k.startswith(prefix) for k in state), prefix
    scale = state["head._orig_mod.scales.0.scale"]
    assert scale.dim() == 0, scale.shape
    # The checkpoint's model gives the committed outputs.
    io = load_file(os.path.join(OUT, "det_fcos_io.safetensors"))
    with torch.no_grad():
        cls, reg, ctr = model(io["input"])
    for name, c, r, t in zip(LEVELS, cls, reg, ctr):
        for key, v in [("cls", c), ("reg", r), ("ctr", t)]:
            assert torch.equal(v, io[f"{key}_{name}"]), f"{key}_{name}"
    print(f"checkpoint: {len(state)} keys, e.g. {next(iter(state))}; {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    if sys.argv[1:] == ["shifted_box"]:
        add_shifted_box()
        sys.exit()
    write_checkpoint(main())
    write_drise()
    write_renormalize()
