#!/usr/bin/env python3
"""Write the attribution-method parity fixtures used by `crates/lumen/tests/method_parity.rs`.

References: pytorch-grad-cam 1.5.7, captum 0.9.0, torch 2.9.0, timm (requirements.txt),
and short NumPy transcriptions of the papers where no library is the reference.

    python tools/reference/method_fixtures.py
    python tools/reference/method_fixtures.py inner   # only the test_{resnet,vit}_inner_layers

Reads the timm fixtures written by timm_fixtures.py (test_resnet, test_vit, 10 classes,
two 160x160 inputs) and writes crates/lumen/tests/fixtures/NAME_methods.safetensors;
and, from metric_fixtures.py's trained shapes-cnn fixture (run that first),
shapes_cnn_methods.safetensors (Integrated Gradients and SmoothGrad on a CNN)
with one float32 tensor per method (keys below). Targets: class 3 for image 0 and class 7
for image 1.
"""

import os
import sys

import networkx as nx
import numpy as np
import timm
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from pytorch_grad_cam import (AblationCAM, EigenCAM, EigenGradCAM, GradCAM, GradCAMElementWise,
                              GradCAMPlusPlus, HiResCAM, KPCA_CAM, LayerCAM, ScoreCAM, XGradCAM)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures")
CLASSES = [3, 7]
NOISE_SAMPLES = 4


def load(name):
    model = timm.create_model(name, num_classes=10)
    model.load_state_dict(load_file(os.path.join(MODELS, f"{name}.safetensors")))
    model.eval()
    x = load_file(os.path.join(MODELS, f"{name}_io.safetensors"))["input"]
    return model, x


def vit_reshape(tensor, height=10, width=10):
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def capture(model, layer, x, reshape=None):
    """Activations and gradients at `layer` for the summed target logits."""
    store = {}

    def hook(_, __, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    x = x.clone().requires_grad_(True)
    logits = model(x)
    handle.remove()
    logits[torch.arange(len(CLASSES)), CLASSES].sum().backward()
    a, g = store["a"].detach(), store["a"].grad.detach()
    if reshape is not None:
        a, g = reshape(a), reshape(g)
    return a.numpy(), g.numpy()


def cam_set(out, suffix=""):
    return {name: out[name + suffix].numpy() for name in GRADIENT_CAMS}


def signed_projection(maps):
    """get_2d_projection with our deterministic sign: the projection correlates
    positively with the channel-mean activation map."""
    projection = get_2d_projection(maps)
    for i in range(len(projection)):
        mean_map = maps[i].mean(axis=0)
        c = ((projection[i] - projection[i].mean()) * (mean_map - mean_map.mean())).sum()
        if c < 0:
            projection[i] = -projection[i]
    return projection


def finish(raw, size):
    """pytorch-grad-cam's output convention for one layer."""
    return scale_cam_image(scale_cam_image(np.maximum(raw, 0), size))


def cams(model, x, layer, reshape, out, with_ablation):
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    methods = {
        "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
        "layercam": LayerCAM, "hirescam": HiResCAM, "gradcam-elementwise": GradCAMElementWise,
        "scorecam": ScoreCAM,
    }
    if with_ablation:
        methods["ablationcam"] = AblationCAM
    for name, cls in methods.items():
        with cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 32
            out[name] = torch.from_numpy(cam(input_tensor=x, targets=targets))
    # Eigen methods: the library's projection with the sign made deterministic.
    a, g = capture(model, layer, x, reshape)
    size = (x.shape[-1], x.shape[-2])
    out["eigencam"] = torch.from_numpy(finish(signed_projection(a), size))
    out["eigengradcam"] = torch.from_numpy(finish(signed_projection(g * a), size))
    # And the library's own output, to document how often its sign agrees.
    with EigenCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        library = cam(input_tensor=x, targets=targets)
    out["eigencam_library"] = torch.from_numpy(library)
    # The library's SVD sign is arbitrary; where it agrees with our rule the maps must
    # be equal, and the Rust test asserts the library's own output on those images.
    agrees = np.array([np.abs(library[i] - out["eigencam"][i].numpy()).max() <= CAM_TOLERANCE
                       for i in range(len(library))], np.float32)
    print(f"eigencam: the library's sign agrees with ours on images {np.flatnonzero(agrees).tolist()}")
    assert agrees.any(), "the library's EigenCAM sign agrees on no image: nothing to compare"
    out["eigencam_library_agrees"] = torch.from_numpy(agrees)
    kpca_cam(model, x, layer, reshape, out)
    if reshape is None:
        multi_layer_gradcam(model, x, out)


KPCA_TOLERANCE = 1e-3
# The Rust test's CAM tolerance: a fixture separates two methods when their maps differ
# by more than ten times it somewhere.
CAM_TOLERANCE = 1e-3
GRADIENT_CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise"]


def gradient_cams_at(model, x, layer, reshape, out, suffix):
    """The gradient CAMs at one more target layer, keys `NAME@LAYER`."""
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
               "layercam": LayerCAM, "hirescam": HiResCAM, "gradcam-elementwise": GradCAMElementWise}
    for name, cls in classes.items():
        with cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            out[f"{name}@{suffix}"] = torch.from_numpy(cam(input_tensor=x, targets=targets))


def separations(fixture_sets):
    """For every gradient CAM, its smallest distance to another CAM in each fixture set;
    assert that every method is separated from all others (by 10x the tolerance) in at
    least one set the Rust suite checks, so that swapping any two fails a test."""
    for name in GRADIENT_CAMS:
        best = {}
        for label, maps in fixture_sets.items():
            best[label] = min(np.abs(maps[name] - maps[other]).max()
                              for other in GRADIENT_CAMS if other != name)
        print(f"{name}: nearest other CAM per fixture set {({k: round(float(v), 4) for k, v in best.items()})}")
        assert max(best.values()) > 10 * CAM_TOLERANCE, f"{name} is not separated from its nearest neighbour anywhere"


def multi_layer_gradcam(model, x, out):
    """GradCAM with a list of target layers (ResNet only): pytorch-grad-cam computes each
    layer's map (ReLU, min-max, resize), averages them and min-maxes the mean. Key
    `gradcam_layer3_layer4`; it must differ from the layer-4 map."""
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    with GradCAM(model=model, target_layers=[model.layer3[-1], model.layer4[-1]]) as cam:
        maps = cam(input_tensor=x, targets=targets)
    gap = np.abs(maps - out["gradcam"].numpy()).max()
    assert gap > 0.05, f"two-layer GradCAM equals the layer-4 map ({gap})"
    out["gradcam_layer3_layer4"] = torch.from_numpy(maps)


def kpca_cam(model, x, layer, reshape, out):
    """pytorch-grad-cam's KPCA_CAM with its defaults (sigmoid kernel, gamma = 1/C):
    scikit-learn's KernelPCA fixes the sign, so the library's output is the fixture.
    It must differ from EigenCAM (its linear neighbour) by more than the tolerance."""
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    with KPCA_CAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        kpca = cam(input_tensor=x, targets=targets)
    separation = np.abs(kpca - out["eigencam_library"].numpy()).max()
    assert separation > 10 * KPCA_TOLERANCE, f"KPCA-CAM equals EigenCAM here ({separation})"
    assert np.abs(kpca).max() > 0.5, "KPCA-CAM fixture is empty"
    print(f"kpcacam: max |KPCA-CAM - EigenCAM| = {separation:.3f}")
    out["kpcacam"] = torch.from_numpy(kpca)


def gradients(model, x, out):
    target = torch.tensor(CLASSES)
    out["saliency"] = Saliency(model).attribute(x, target=target, abs=False)
    out["inputxgrad"] = InputXGradient(model).attribute(x, target=target)


def integrated_gradients(model, x, out, baseline_black):
    """On the ViT: a max-pooling network's gradient flips between near-tied window
    maxima under float rounding at some path points (measured on test_resnet: 4 of 32
    Gauss-Legendre points differ locally by 2% between libtorch and Burn), so exact IG
    parity is checked on a model without argmax routing."""
    target = torch.tensor(CLASSES)
    ig = IntegratedGradients(model)
    for key, kwargs in {
        "ig_gausslegendre": dict(n_steps=32, method="gausslegendre"),
        "ig_trapezoid_black": dict(n_steps=20, method="riemann_trapezoid",
                                   baselines=torch.full_like(x, baseline_black)),
        "ig_left_batched": dict(n_steps=10, method="riemann_left", internal_batch_size=7),
    }.items():
        attr, delta = ig.attribute(x, target=target, return_convergence_delta=True, **kwargs)
        out[key] = attr.detach()
        out[key + "_delta"] = delta.detach().float()
        print(f"{key}: convergence deltas {delta.tolist()}")
        # The Riemann rules leave a delta that a zero would not match (per image, at
        # the Rust test's absolute tolerance); Gauss-Legendre converges to rounding
        # level on this smooth model (|delta| ~ 1e-6 at 8 to 32 points), where a zero
        # is as right as any value.
        if method_is_riemann(kwargs):
            assert delta.abs().min() > 10 * DELTA_TOLERANCE, f"{key}: a zero delta would pass"


DELTA_TOLERANCE = 1e-4  # absolute, per image: the Rust test's


def method_is_riemann(kwargs):
    return kwargs["method"].startswith("riemann")


def hashed_normal(shape, seed, stdev):
    """N(0, stdev) values that the Rust test draws again (`hashed_normal` in
    crates/lumen/tests/method_parity.rs), so the fixture need not store them: element
    i takes two uniforms from SplitMix64 of (seed, 2i) and (seed, 2i + 1), then
    Box-Muller's cosine branch in float64, rounded to float32. Two libms may round
    ln and cos differently in the last float64 bit: the float32 results then differ
    by at most one unit in rare elements, far inside the parity tolerance."""
    def mix(z):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    index = np.arange(int(np.prod(shape)), dtype=np.uint64)
    seed = np.uint64(seed)
    a = mix(seed ^ mix(np.uint64(2) * index))
    b = mix(seed ^ mix(np.uint64(2) * index + np.uint64(1)))
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    u2 = (b >> np.uint64(11)).astype(np.float64) / 2.0 ** 53
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (z * stdev).astype(np.float32).reshape(shape)


def noise_tunnels(model, x, out):
    """On the ViT, for the max-pooling reason given in integrated_gradients."""
    target = torch.tensor(CLASSES)
    # Noise tunnels, NumPy reference given the noise tensor: image-major samples.
    noise = torch.from_numpy(hashed_normal((len(CLASSES) * NOISE_SAMPLES,) + tuple(x.shape[1:]), 0, 0.3))
    assert abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.01, "not N(0, 0.3)"
    noisy = x.repeat_interleave(NOISE_SAMPLES, dim=0) + noise
    grads = Saliency(model).attribute(noisy, target=target.repeat_interleave(NOISE_SAMPLES), abs=False)
    # Aggregated in float64: captum's float32 E[g^2] - E[g]^2 loses digits to cancellation.
    grads = grads.detach().numpy().astype(np.float64).reshape((len(CLASSES), NOISE_SAMPLES) + tuple(x.shape[1:]))
    out["smoothgrad"] = torch.from_numpy(np.float32(grads.mean(axis=1)))
    out["smoothgrad-sq"] = torch.from_numpy(np.float32((grads ** 2).mean(axis=1)))
    out["vargrad"] = torch.from_numpy(np.float32(grads.var(axis=1)))


def attentions_and_gradients(model, x):
    """Attention probabilities [B,heads,N,N] of every block, and their gradients."""
    probs = []

    def keep(_, __, output):
        output.retain_grad()
        probs.append(output)

    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(keep)
    logits = model(x)
    logits[torch.arange(len(CLASSES)), CLASSES].sum().backward()
    return [p.detach().numpy() for p in probs], [p.grad.numpy() for p in probs]


def rollout_paper(attentions, fusion, discard_ratio, vit_explain_rows=False):
    """Abnar & Zuidema's rollout, per image, with vit-explain's discard ratio."""
    b, _, n, _ = attentions[0].shape
    out = []
    for i in range(b):
        result = np.eye(n)
        for att in attentions:
            fused = {"mean": att[i].mean(0), "max": att[i].max(0), "min": att[i].min(0)}[fusion].astype(np.float64)
            flat = fused.reshape(-1)
            k = int(flat.size * discard_ratio)
            if k:
                lowest = np.argsort(flat, kind="stable")[:k]
                lowest = lowest[lowest != 0]
                flat[lowest] = 0
            a = (fused + np.eye(n)) / 2
            a = a / a.sum(-1) if vit_explain_rows else a / a.sum(-1, keepdims=True)
            result = a @ result
        out.append(result[0, 1:].reshape(10, 10))
    return np.float32(out)


def grad_rollout_paper(attentions, grads, discard_ratio):
    b, _, n, _ = attentions[0].shape
    out = []
    for i in range(b):
        result = np.eye(n)
        for att, grad in zip(attentions, grads):
            fused = np.maximum((att[i] * grad[i]).mean(0), 0).astype(np.float64)
            flat = fused.reshape(-1)
            k = int(flat.size * discard_ratio)
            if k:
                flat[np.argsort(flat, kind="stable")[:k]] = 0
            a = (fused + np.eye(n)) / 2
            a = a / a.sum(-1, keepdims=True)
            result = a @ result
        out.append(result[0, 1:].reshape(10, 10))
    return np.float32(out)


def attention_flow(attentions):
    """Max flow from each input token to the top class token (networkx), normalised over
    the input tokens as in Abnar & Zuidema's compute_flows."""
    b, _, n, _ = attentions[0].shape
    out = []
    for i in range(b):
        graph = nx.DiGraph()
        for level, att in enumerate(attentions):
            a = att[i].mean(0).astype(np.float64)
            a = (a + np.eye(n)) / 2
            a = a / a.sum(-1, keepdims=True)
            for dst in range(n):
                for src in range(n):
                    graph.add_edge((level, src), (level + 1, dst), capacity=a[dst, src])
        top = (len(attentions), 0)
        flows = np.array([nx.maximum_flow_value(graph, (0, j), top) for j in range(n)])
        flows = flows / flows.sum()  # as the paper's compute_flows
        out.append(np.float32(flows[1:]).reshape(10, 10))
    return np.float32(out)


ROLLOUT_TOLERANCE = 1e-4  # of the map's scale, as the Rust test


def assert_differs(out, key, base):
    a, b = out[key].numpy(), out[base].numpy()
    gap = np.abs(a - b).max()
    print(f"{key} vs {base}: max difference {gap:.2e} (scale {np.abs(b).max():.2e})")
    assert gap > 10 * ROLLOUT_TOLERANCE * np.abs(b).max(), f"{key} equals {base}: the variant is not tested"


def compact(out):
    """float32 tensors, except the CAM maps ([B, H, W] at image size, values in [0, 1]):
    float16, whose rounding (at most 2.4e-4 below 1) fits inside the 1e-3 CAM
    tolerance and halves the largest part of the file. Attributions at input size
    ([B, 3, H, W]) keep every other row and column (`every_other_pixel` in the Rust
    test): float16 would not fit their 1e-4 relative tolerance, and a quarter of the
    pixels still refutes a wrong method, whose map differs everywhere."""
    def kept(v):
        if v.dim() == 3 and v.shape[-1] > 10:
            return v.half()
        if v.dim() == 4 and v.shape[-1] > 10:
            return v[:, :, ::2, ::2].float()
        return v.float()
    return {k: kept(v).contiguous() for k, v in out.items()}


TRAINED_OUT = os.path.join(OUT, "shapes_cnn_methods.safetensors")
TRAINED_NOISE_SAMPLES = 2
# The metric fixture's images explained here. With the Learner-trained shapes-cnn, its
# first two images put a near-tied max-pool window on the IG path: libtorch's rounding
# picks the other maximum there (4e-3 relative against captum on tch:cpu, 3e-7 on
# flex), the phenomenon described for test_resnet below; images 2 and 3 have none.
TRAINED_IMAGES = slice(2, 4)


SG_SAMPLES = 1024
SG_STDEV = 0.2


def relative_distance(a, b):
    """Per image: ||a - b|| / ||b||."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    return ((a - b).norm(dim=1) / b.norm(dim=1)).float()


def smoothgrad_statistics(model, x, target, plain, out):
    """captum's own NoiseTunnel(Saliency) SmoothGrad, SG_SAMPLES (1024) samples of N(0, 0.2): a second
    implementation draws other noise, so it is compared statistically. Two captum runs
    with different seeds are `self_distance` apart (per image, relative L2); an
    estimate of the same expectation lands about that far, a wrong one (the plain
    gradient, or twice the noise) more than 3x farther, asserted here."""
    from captum.attr import NoiseTunnel
    tunnel = NoiseTunnel(Saliency(model))

    def captum_smoothgrad(seed, stdev=SG_STDEV):
        torch.manual_seed(seed)
        return tunnel.attribute(x, nt_type="smoothgrad", nt_samples=SG_SAMPLES, stdevs=stdev,
                                target=target, abs=False).detach()

    reference = captum_smoothgrad(0)
    self_distance = relative_distance(captum_smoothgrad(1), reference)
    neighbours = {"the plain gradient": plain, "twice the noise": captum_smoothgrad(2, 2 * SG_STDEV)}
    for name, other in neighbours.items():
        gap = relative_distance(other, reference)
        print(f"SmoothGrad vs {name}: {gap.tolist()} (captum vs itself {self_distance.tolist()})")
        assert (gap > 3 * self_distance).all(), f"{name} is within the statistical tolerance"
    out["smoothgrad_captum"] = reference
    out["smoothgrad_captum_self_distance"] = self_distance


def trained_cnn():
    """Integrated Gradients and SmoothGrad on a CNN: the trained shapes-cnn (rebuilt as a
    timm ResNet by metric_fixtures.py) on two images of its metric fixture (TRAINED_IMAGES).
    On test_resnet's random weights near-tied max-pool windows flip under rounding; on
    the trained model's shapes they do not (the measured differences are in the test)."""
    import metric_fixtures
    from safetensors.numpy import load_file as load_numpy
    model = metric_fixtures.timm_shapes_cnn()
    fixture = load_numpy(metric_fixtures.TRAINED_OUT)
    images = fixture["images"][TRAINED_IMAGES].astype(np.float32)
    labels = [int(v) for v in fixture["labels"][TRAINED_IMAGES]]
    x = torch.from_numpy(((images / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    target = torch.tensor(labels)
    out = {}
    attr, delta = IntegratedGradients(model).attribute(
        x, target=target, n_steps=16, method="riemann_trapezoid", return_convergence_delta=True)
    out["ig_trapezoid"], out["ig_trapezoid_delta"] = attr.detach(), delta.detach().float()
    print(f"shapes-cnn IG deltas {delta.tolist()}")
    assert delta.abs().min() > 10 * DELTA_TOLERANCE, "a zero delta would pass"
    rng = np.random.default_rng(2)
    noise = torch.from_numpy(rng.normal(0.0, 0.2, size=(2 * TRAINED_NOISE_SAMPLES,) + tuple(x.shape[1:]))
                             .astype(np.float16).astype(np.float32))
    noisy = x.repeat_interleave(TRAINED_NOISE_SAMPLES, dim=0) + noise
    grads = Saliency(model).attribute(noisy, target=target.repeat_interleave(TRAINED_NOISE_SAMPLES), abs=False)
    grads = grads.detach().numpy().astype(np.float64).reshape((2, TRAINED_NOISE_SAMPLES) + tuple(x.shape[1:]))
    out["smoothgrad"] = torch.from_numpy(np.float32(grads.mean(axis=1)))
    plain = Saliency(model).attribute(x, target=target, abs=False).detach()
    gap = (out["smoothgrad"] - plain).abs().max() / plain.abs().max()
    assert gap > 1e-2, f"SmoothGrad equals the plain gradient here ({gap})"
    smoothgrad_statistics(model, x, target, plain, out)
    tensors = {k: v.contiguous().float() for k, v in out.items()}
    tensors["noise"] = noise.half()
    tensors["smoothgrad_captum"] = out["smoothgrad_captum"].half()  # a statistical check
    save_file(tensors, TRAINED_OUT)
    print(f"wrote {TRAINED_OUT}")


INNER_OUT = os.path.join(OUT, "test_resnet_inner_layers.safetensors")
# Points inside test_resnet's blocks, by timm's module path (ours: the same names):
# a convolution's output before its BatchNorm (which our fused convolution never
# forms unless a tap asks for it), the BatchNorm's, an activation inside a block, and
# a shortcut's projection.
INNER_LAYERS = ["layer3.0.conv2", "layer3.0.bn2", "layer3.0.act2", "layer2.0.act1", "layer3.0.downsample"]
INNER_CAMS = ["gradcam", "gradcam++", "hirescam"]


def inner_layers():
    """pytorch-grad-cam's GradCAM, GradCAM++ and HiResCAM at points inside the blocks,
    keys `NAME@LAYER` (float16, as `compact` stores every CAM map). Each layer's maps
    must differ from the next point's (the convolution's from its BatchNorm's: the
    shift term) and from the block's own output by at least one of the CAMs, so that a
    tap at the wrong point fails."""
    model, x = load("test_resnet")
    # timm's ReLUs are in place: a hook on `bn2` would keep a tensor that `act2` then
    # overwrites, so pytorch-grad-cam would see the ReLU's output as the BatchNorm's
    # (HiResCAM at bn2 equal to act2's, to the bit). Out of place, the hooks see what
    # each module computed; the model's output is the same.
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    modules = dict(model.named_modules())
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM}
    out = {}
    for layer in INNER_LAYERS + ["layer3.0", "layer2.0"]:
        for name in INNER_CAMS:
            with classes[name](model=model, target_layers=[modules[layer]]) as cam:
                out[f"{name}@{layer}"] = torch.from_numpy(cam(input_tensor=x, targets=targets))
    for a, b in [("layer3.0.conv2", "layer3.0.bn2"), ("layer3.0.bn2", "layer3.0.act2"),
                 ("layer2.0.act1", "layer2.0"), ("layer3.0.downsample", "layer3.0")]:
        # HiResCAM cannot tell a BatchNorm from the ReLU after it (the product of
        # gradient and activation is the same there), GradCAM can: one CAM that
        # separates two points is enough, since the test checks all three.
        gaps = {name: np.abs(out[f"{name}@{a}"].numpy() - out[f"{name}@{b}"].numpy()).max()
                for name in INNER_CAMS}
        print(f"{a} vs {b}: max difference {({k: round(float(v), 3) for k, v in gaps.items()})}")
        assert max(gaps.values()) > 10 * CAM_TOLERANCE, f"{a} equals {b}: the point is not tested"
    for block in ["layer3.0", "layer2.0"]:
        for name in INNER_CAMS:
            del out[f"{name}@{block}"]  # the block outputs are tested elsewhere
    save_file(compact(out), INNER_OUT)
    print("wrote", INNER_OUT, sorted(out))


VIT_INNER_OUT = os.path.join(OUT, "test_vit_inner_layers.safetensors")
# Points inside test_vit's blocks by timm's module path, and ours for the same tensor:
# timm's `attn` module returns its projection (our `attn.proj`; our `attn` is the
# attention probabilities, which timm forms without a module). Block 4 of 6: after the
# last block's attention the patch tokens reach the head only through the class token,
# so their gradient there is exactly 0 and so are the maps (`blocks.5.mlp.fc1`, kept
# to pin that down).
VIT_INNER_LAYERS = {"blocks.4.attn": "blocks.4.attn.proj", "blocks.4.norm2": "blocks.4.norm2",
                    "blocks.4.mlp.fc1": "blocks.4.mlp.fc1", "blocks.4.mlp.act": "blocks.4.mlp.act",
                    "blocks.4.mlp.fc2": "blocks.4.mlp.fc2", "blocks.5.mlp.fc1": "blocks.5.mlp.fc1"}


def vit_inner_layers():
    """pytorch-grad-cam's GradCAM, GradCAM++ and HiResCAM (vit_reshape) at points inside
    test_vit's blocks, keys `NAME@LAYER` with our layer names (float16). Each point's
    maps must differ from the next point's and from the block output's by at least one
    of the CAMs, so that a tap at the wrong point fails."""
    model, x = load("test_vit")
    assert len(model.blocks) == 6
    modules = dict(model.named_modules())
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM}
    out = {}
    for timm_name, ours in list(VIT_INNER_LAYERS.items()) + [("blocks.4", "blocks.4")]:
        for name in INNER_CAMS:
            with classes[name](model=model, target_layers=[modules[timm_name]],
                               reshape_transform=vit_reshape) as cam:
                out[f"{name}@{ours}"] = torch.from_numpy(cam(input_tensor=x, targets=targets))
    order = list(VIT_INNER_LAYERS.values())[:5] + ["blocks.4"]
    for a, b in zip(order, order[1:]):
        gaps = {name: np.abs(out[f"{name}@{a}"].numpy() - out[f"{name}@{b}"].numpy()).max()
                for name in INNER_CAMS}
        print(f"{a} vs {b}: max difference {({k: round(float(v), 3) for k, v in gaps.items()})}")
        assert max(gaps.values()) > 10 * CAM_TOLERANCE, f"{a} equals {b}: the point is not tested"
    for name in INNER_CAMS:
        assert not out[f"{name}@blocks.5.mlp.fc1"].any(), "the last block's MLP map is not zero"
        assert out[f"{name}@blocks.4.mlp.fc1"].abs().max() > 0.5
        del out[f"{name}@blocks.4"]  # the block outputs are tested elsewhere
    save_file(compact(out), VIT_INNER_OUT)
    print("wrote", VIT_INNER_OUT, sorted(out))


def main():
    if sys.argv[1:] == ["inner"]:
        inner_layers()
        vit_inner_layers()
        return
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    trained_cnn()

    model, x = load("test_resnet")
    out = {}
    cams(model, x, model.layer4[-1], None, out, with_ablation=True)
    # At layer 4 the gradient is spatially constant (global pooling then one linear
    # layer), so GradCAM, HiResCAM and XGradCAM coincide: layers 2 and 3 separate them.
    gradient_cams_at(model, x, model.layer3[-1], None, out, "layer3")
    gradient_cams_at(model, x, model.layer2[-1], None, out, "layer2")
    gradients(model, x, out)
    resnet = out
    save_file(compact(out), os.path.join(OUT, "test_resnet_methods.safetensors"))
    print("test_resnet:", sorted(out))

    model, x = load("test_vit")
    out = {}
    cams(model, x, model.blocks[-1].norm1, vit_reshape, out, with_ablation=False)
    gradients(model, x, out)
    integrated_gradients(model, x, out, baseline_black=-1.0)  # (0 - 0.5) / 0.5
    noise_tunnels(model, x, out)
    attentions, grads = attentions_and_gradients(model, x)
    for fusion in ("mean", "max", "min"):
        out[f"rollout_{fusion}"] = torch.from_numpy(rollout_paper(attentions, fusion, 0.0))
    out["rollout_mean_discard"] = torch.from_numpy(rollout_paper(attentions, "mean", 0.5))
    # With mean fusion and no discard every row already sums to 1, and vit-explain's
    # column-broadcast normalisation changes nothing: max fusion and a 0.9 discard make
    # rows that do not, so the compat switch is tested.
    out["rollout_max_discard"] = torch.from_numpy(rollout_paper(attentions, "max", 0.9))
    out["rollout_max_discard_vit_explain"] = torch.from_numpy(
        rollout_paper(attentions, "max", 0.9, vit_explain_rows=True))
    out["grad_rollout"] = torch.from_numpy(grad_rollout_paper(attentions, grads, 0.0))
    # On this random-weight ViT the gradient-weighted attentions are ~1e-6 next to the
    # identity, and the ReLU zeroes 40-99.6% of them: a discard of 0.3, even 0.99,
    # changes the map by less than the tolerance. 0.995 keeps the ~50 largest entries
    # per layer and moves the map by 3% of its scale.
    out["grad_rollout_discard"] = torch.from_numpy(grad_rollout_paper(attentions, grads, 0.995))
    out["attention_flow"] = torch.from_numpy(attention_flow(attentions))
    assert_differs(out, "rollout_mean_discard", "rollout_mean")
    assert_differs(out, "rollout_max_discard", "rollout_max")
    assert_differs(out, "rollout_max_discard_vit_explain", "rollout_max_discard")
    assert_differs(out, "grad_rollout_discard", "grad_rollout")
    assert_differs(out, "attention_flow", "rollout_mean")
    separations({"resnet layer4": cam_set(resnet), "resnet layer3": cam_set(resnet, "@layer3"),
                 "resnet layer2": cam_set(resnet, "@layer2"), "vit": cam_set(out)})
    save_file(compact(out), os.path.join(OUT, "test_vit_methods.safetensors"))
    print("test_vit:", sorted(out))
    inner_layers()
    vit_inner_layers()


if __name__ == "__main__":
    sys.exit(main())
