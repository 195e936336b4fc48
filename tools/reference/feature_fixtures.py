#!/usr/bin/env python3
"""Write the feature-visualization parity fixtures used by
`crates/lumen/tests/feature_parity.rs`:

    python tools/reference/feature_fixtures.py
    python tools/reference/feature_fixtures.py tasks   # only task_features.safetensors

References:
- statistics, top channels and layer comparison: AutoTimm 0.7.37's own
  `autotimm.interpretation.FeatureVisualizer` (`get_feature_statistics`,
  `get_top_activating_features`, `compare_layers`) on timm's `test_resnet`;
- the gradient receptive field: torch autograd of one activation;
- the occlusion receptive field: a PyTorch transcription of AutoTimm's
  `visualize_receptive_field` with overlapping patches averaged and the edges covered
  (AutoTimm's own output is stored too, and asserted to differ);
- theoretical receptive fields of timm resnet18, resnet50 and test_resnet: Araujo et
  al. 2019's recurrence walked over the timm modules themselves;
- statistics and top channels of AutoTimm's DeepLabV3+ segmentor and FCOS detector
  (the fixtures of segmentation_fixtures.py and detection_fixtures.py) at backbone,
  head and FPN layers, also by AutoTimm's `FeatureVisualizer`
  (`crates/lumen/tests/fixtures/task_features.safetensors`).
"""

import os
import sys

import numpy as np
import timm
import torch
from autotimm.interpretation import FeatureVisualizer
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/test_resnet_features.safetensors")
LAYERS = ["layer2", "layer3", "layer4"]
STAT_KEYS = ["mean", "std", "min", "max", "sparsity", "active_channels", "num_channels"]
RF_LAYER, RF_CHANNEL = "layer2", 5
PATCH, STRIDE = 16, 8
TOP_K = 5
TOLERANCE = 1e-5  # relative, as the Rust test


def load():
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(load_file(os.path.join(MODELS, "test_resnet.safetensors")))
    model.eval()
    return model, load_file(os.path.join(MODELS, "test_resnet_io.safetensors"))["input"]


def layer_output(model, name, x):
    store = {}
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda _, __, out: store.__setitem__("a", out))
    model(x)
    handle.remove()
    return store["a"]


def statistics(viz, x, out):
    for i in range(len(x)):
        compared = viz.compare_layers(x[i:i + 1], LAYERS)
        for layer in LAYERS:
            stats = viz.get_feature_statistics(x[i:i + 1], layer)
            assert stats == compared[layer]
            out[f"stats_{layer}_{i}"] = np.array([stats[k] for k in STAT_KEYS], np.float64)
            top = viz.get_top_activating_features(x[i:i + 1], layer, top_k=TOP_K)
            out[f"top_{layer}_{i}"] = np.array(top, np.float64)  # [k, 2]: channel, mean
    for layer in LAYERS:
        stats = viz.get_feature_statistics(x, layer)
        out[f"stats_{layer}_batch"] = np.array([stats[k] for k in STAT_KEYS], np.float64)
    # The fixture separates right from wrong: layers differ, and torch's unbiased std
    # differs from the biased one by more than the tolerance.
    features = viz.get_features(x[0:1], "layer4").double()
    biased = features.std(unbiased=False).item()
    assert abs(biased - out["stats_layer4_0"][1]) > TOLERANCE * biased
    assert abs(out["stats_layer2_0"][0] - out["stats_layer3_0"][0]) > 1e-3


def gradient_field(model, x, out):
    x = x.clone().requires_grad_(True)
    a = layer_output(model, RF_LAYER, x)
    h, w = a.shape[2:]
    a[:, RF_CHANNEL, h // 2, w // 2].sum().backward()
    field = x.grad.abs().sum(1).numpy()
    assert (field > 0).any() and (field == 0).any(), "the field is neither empty nor everything"
    out["gradient_field"] = field


def occlusion_field(model, x, out):
    """AutoTimm's occlusion with patches averaged where they overlap and a last patch
    flush with each border."""
    with torch.inference_mode():
        base = layer_output(model, RF_LAYER, x)
        h, w = base.shape[2:]
        pos = (h // 2, w // 2)
        baseline = base[:, RF_CHANNEL, pos[0], pos[1]]
        H, W = x.shape[2:]

        def starts(n):
            s = list(range(0, n - PATCH + 1, STRIDE))
            return s if s[-1] == n - PATCH else s + [n - PATCH]

        total = np.zeros((len(x), H, W))
        count = np.zeros((len(x), H, W))
        for y in starts(H):
            for xx in starts(W):
                occluded = x.clone()
                occluded[:, :, y:y + PATCH, xx:xx + PATCH] = 0
                change = (baseline - layer_output(model, RF_LAYER, occluded)[:, RF_CHANNEL, pos[0], pos[1]]).numpy()
                total[:, y:y + PATCH, xx:xx + PATCH] += change[:, None, None]
                count[:, y:y + PATCH, xx:xx + PATCH] += 1
        field = np.abs(total / count)
        field /= field.max(axis=(1, 2), keepdims=True)
    out["occlusion_field"] = field.astype(np.float32)


def autotimm_occlusion(viz, x, out):
    """AutoTimm's own (overwriting, edges skipped): kept to document the difference."""
    theirs = viz.visualize_receptive_field(x[0:1], RF_LAYER, RF_CHANNEL)
    out["occlusion_autotimm"] = theirs.astype(np.float32)
    assert np.abs(theirs - out["occlusion_field"][0]).max() > 0.05, "ours should differ from AutoTimm's"


def theoretical(model):
    """(name, size, jump, start) for every spatial layer, in our layer order, by the
    recurrence of Araujo et al. 2019 over the timm modules."""
    size, jump, start = 1, 1, 0.5
    rows = []

    def apply(conv):
        nonlocal size, jump, start
        k = conv.kernel_size if isinstance(conv.kernel_size, int) else conv.kernel_size[0]
        s = conv.stride if isinstance(conv.stride, int) else conv.stride[0]
        p = conv.padding if isinstance(conv.padding, int) else conv.padding[0]
        d = conv.dilation if isinstance(conv.dilation, int) else conv.dilation[0]
        k = d * (k - 1) + 1
        size += (k - 1) * jump
        start += ((k - 1) / 2 - p) * jump
        jump *= s

    stem = model.conv1
    for m in (stem.modules() if isinstance(stem, torch.nn.Sequential) else [stem]):
        if isinstance(m, torch.nn.Conv2d):
            apply(m)
    rows.append(("conv1", size, jump, start))
    rows.append(("act1", size, jump, start))
    apply(model.maxpool)
    rows.append(("maxpool", size, jump, start))
    for stage in ["layer1", "layer2", "layer3", "layer4"]:
        for i, block in enumerate(getattr(model, stage)):
            # Every point inside the block on its main path, in the order of timm's
            # modules (its identities and the shortcut's `downsample` left out).
            for name, module in block.named_children():
                if name in ("downsample", "drop_path") or isinstance(module, torch.nn.Identity):
                    continue
                if isinstance(module, torch.nn.Conv2d):
                    apply(module)
                rows.append((f"{stage}.{i}.{name}", size, jump, start))
            rows.append((f"{stage}.{i}", size, jump, start))
        rows.append((stage, size, jump, start))
    return rows


# Segmentors and detectors (the same FeatureVisualizer: a layer is a module, whatever
# the head does with it), on the AutoTimm fixtures of tools/reference/
# segmentation_fixtures.py and detection_fixtures.py. Our layer names, and the
# AutoTimm module each one taps (the FPN's levels are its output convolutions).
TASK_OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/task_features.safetensors")
TASK_LAYERS = {
    "seg": [("backbone.layer3", "backbone.layer3"), ("head.aspp", "head.aspp"),
            ("head.decoder", "head.decoder")],
    "det": [("backbone.layer3", "backbone.layer3"), ("fpn.p3", "fpn.output_convs.0"),
            ("fpn.p7", "fpn.extra_convs.1")],  # with the ReLU hook of task_models
}


def task_models():
    """(task, model with the fixture's weights, the same architecture at random init,
    the fixture's input) for the segmentor and the detector."""
    import segmentation_fixtures as seg
    import detection_fixtures as det

    models = []
    segmentor = seg.build("deeplabv3plus", seg.SEED)
    random_segmentor = seg.build("deeplabv3plus", seg.SEED + 1).eval()
    segmentor.load_state_dict(load_file(os.path.join(MODELS, "seg_deeplabv3plus.safetensors")))
    x = load_file(os.path.join(MODELS, "seg_deeplabv3plus_io.safetensors"))["input"]
    models.append(("seg", segmentor.eval(), random_segmentor, x))
    torch.manual_seed(1)
    detector, random_detector = det.build_model(), det.build_model()
    detector.load_state_dict(det.checkpoint_weights())
    # P6 and P7 are `relu(extra_conv(...))`: the module's output is the convolution's,
    # before the ReLU, while the level (what the head reads, and our `fpn.p7`) is
    # after it. A first hook applies the ReLU, so that FeatureVisualizer's own hook
    # (run after it) sees the level; the model's output is unchanged (ReLU twice is
    # ReLU once).
    for extra in detector.fpn.extra_convs:
        extra.register_forward_hook(lambda _, __, out: torch.relu(out))
    x = load_file(os.path.join(MODELS, "det_fcos_io.safetensors"))["input"]
    models.append(("det", detector.eval(), random_detector, x))
    return models


def task_statistics():
    out = {}
    for task, model, random_model, x in task_models():
        viz, random_viz = FeatureVisualizer(model, use_cuda=False), FeatureVisualizer(random_model, use_cuda=False)
        for ours, module in TASK_LAYERS[task]:
            for i in range(len(x)):
                image = x[i:i + 1]
                stats = viz.get_feature_statistics(image, module)
                row = np.array([stats[k] for k in STAT_KEYS], np.float64)
                out[f"{task}_stats_{ours}_{i}"] = row
                top = np.array(viz.get_top_activating_features(image, module, top_k=TOP_K), np.float64)
                out[f"{task}_top_{ours}_{i}"] = top
                # The fixture separates right from wrong: the weights (the same
                # architecture at random init) and the image change the numbers, and
                # the top channels are not the first ones.
                other = random_viz.get_feature_statistics(image, module)
                assert abs(other["mean"] - stats["mean"]) > 1e-3 * abs(stats["std"]), (task, ours)
                assert sorted(top[:, 0].astype(int).tolist()) != list(range(TOP_K)), (task, ours)
                # No two of the top channels (nor the first left out) within rounding:
                # their order is the reference's, not float32's.
                values = [v for _, v in viz.get_top_activating_features(image, module, top_k=TOP_K + 1)]
                gap = min(a - b for a, b in zip(values, values[1:]))
                assert gap > 1e-4 * abs(values[0]), (task, ours, values)
            first, second = out[f"{task}_stats_{ours}_0"], out[f"{task}_stats_{ours}_1"]
            assert abs(first[0] - second[0]) > TOLERANCE * abs(first[0]), (task, ours)
            print(task, ours, "mean, std:", first[:2], "top:", out[f"{task}_top_{ours}_0"][:, 0])
        means = [out[f"{task}_stats_{ours}_0"][0] for ours, _ in TASK_LAYERS[task]]
        assert len({round(m, 4) for m in means}) == len(means), "layers must differ"
    save_file({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}, TASK_OUT)
    print("wrote", TASK_OUT, sorted(out))


def main():
    if sys.argv[1:] == ["tasks"]:
        task_statistics()
        return
    torch.manual_seed(0)
    model, x = load()
    out = {}
    viz = FeatureVisualizer(model, use_cuda=False)
    statistics(viz, x, out)
    gradient_field(model, x, out)
    occlusion_field(model, x, out)
    autotimm_occlusion(viz, x, out)
    for arch in ["resnet18", "resnet50", "test_resnet"]:
        rows = theoretical(timm.create_model(arch, pretrained=False))
        out[f"rf_{arch}"] = np.array([[r[1], r[2], r[3]] for r in rows], np.float64)
        print(arch, [(r[0], r[1]) for r in rows if "." not in r[0]])
    save_file({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}, OUT)
    print("wrote", OUT, sorted(out))
    task_statistics()


if __name__ == "__main__":
    main()
