#!/usr/bin/env python3
"""Write the metric parity fixtures used by `crates/lumen/tests/metric_parity.rs`.

References: Quantus 0.6.0 (pointing game, relevance mass and rank accuracy, sparseness),
SciPy (`spearmanr`, `spsolve` for ROAD's imputation), scikit-image
(`structural_similarity`), pytorch-grad-cam 1.5.7 (the heatmaps), and short NumPy/torch
transcriptions of the papers where no library is the reference (RISE deletion and
insertion, ROAD, TorchRay's pointing-game tolerance, energy pointing game, IoU,
average drop, Yeh et al.'s sensitivity).

    python tools/reference/metric_fixtures.py

Model: timm's test_resnet fixture (timm_fixtures.py), two 160x160 inputs, targets 3 and
7. Writes crates/lumen/tests/fixtures/test_resnet_metrics.safetensors.

And, where a trained model is needed for the quantities to vary (ROAD's kept flags,
average drop, the pointing tolerance), the bundled shapes-cnn rebuilt as a timm ResNet
from its weights, on four test-split shapes drawn by Rust (the script runs the
`shapes_fixture_images` example, so cargo must be on PATH). Writes
crates/lumen/tests/fixtures/shapes_cnn_metrics.safetensors.
"""

import glob
import os
import subprocess
import tempfile

import numpy as np
import quantus
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file
from timm.models.resnet import BasicBlock, ResNet
from PIL import Image
from scipy.sparse import csc_matrix, lil_matrix
from scipy.sparse.linalg import spsolve
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/test_resnet_metrics.safetensors")
CLASSES = [3, 7]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CURVE_STEPS = 16
ROAD_PERCENTAGES = [20.0, 50.0, 80.0]
SENSITIVITY_SAMPLES = 3
SENSITIVITY_RADIUS = 0.1
TOLERANCE = 15.0


def load():
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(load_file(os.path.join(MODELS, "test_resnet.safetensors")))
    model.eval()
    x = load_file(os.path.join(MODELS, "test_resnet_io.safetensors"))["input"]
    return model, x


def gradcam(model, x):
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        return cam(input_tensor=x, targets=targets)


def regions(h, w):
    """Image 0: an ellipse; image 1: a box. Masks [2,h,w] and boxes [x0,y0,x1,y1)."""
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = ((yy - 60) / 30.0) ** 2 + ((xx - 90) / 45.0) ** 2 <= 1.0
    box = np.zeros((h, w), bool)
    box[20:70, 30:120] = True
    masks = np.stack([ellipse, box])
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return masks, np.array(boxes)


# --- localization -------------------------------------------------------------------

def pointing_tolerance(a, s, tol):
    """TorchRay's disk (squared distance < tol^2) around the maximum. TorchRay takes
    the first argmax; like Quantus' tie rule, every pixel holding the maximum counts
    (a bilinearly upsampled CAM can reach its maximum at several pixels: on the trained
    fixture's second image the first argmax misses by more than 15 px, a tied one
    does not)."""
    h, w = a.shape
    yy, xx = np.mgrid[0:h, 0:w]
    accept = np.zeros((h, w), bool)
    for py, px in np.argwhere(a == a.max()):
        accept |= (yy - py) ** 2 + (xx - px) ** 2 < tol ** 2
    return float(np.any(accept & s))


def box_mask(shape, box):
    m = np.zeros(shape, bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def energy_pointing(a, box):
    a = np.maximum(a, 0).astype(np.float64)
    return float(a[box_mask(a.shape, box)].sum() / a.sum())


def iou(a, s, threshold=0.5):
    on = a >= threshold * a.max()
    return float((on & s).sum() / (on | s).sum())


def rank_accuracy_stable(a, s):
    k = int(s.sum())
    order = np.argsort(-a.reshape(-1), kind="stable")[:k]
    return float(s.reshape(-1)[order].sum() / k)


def tie_at_cut(a, k):
    ordered = np.sort(a.reshape(-1))[::-1]
    return bool(k < ordered.size and ordered[k - 1] == ordered[k])


def localization(maps, masks, boxes, prefix, out):
    a4 = maps[:, None].astype(np.float32)
    s4 = masks[:, None].astype(np.float32)
    y = np.array(CLASSES)
    common = dict(disable_warnings=True, normalise=False, abs=False)
    out[prefix + "pointing_game"] = np.array(quantus.PointingGame(**common)(
        model=None, x_batch=np.zeros_like(a4), y_batch=y, a_batch=a4, s_batch=s4), np.float32)
    out[prefix + "pointing_game_15"] = np.array(
        [pointing_tolerance(a, s, TOLERANCE) for a, s in zip(maps, masks)], np.float32)
    out[prefix + "relevance_mass"] = np.array(quantus.RelevanceMassAccuracy(**common)(
        model=None, x_batch=np.zeros_like(a4), y_batch=y, a_batch=a4, s_batch=s4), np.float32)
    quantus_rank = np.array(quantus.RelevanceRankAccuracy(**common)(
        model=None, x_batch=np.zeros_like(a4), y_batch=y, a_batch=a4, s_batch=s4), np.float32)
    stable_rank = np.array([rank_accuracy_stable(a, s) for a, s in zip(maps, masks)], np.float32)
    # Quantus sorts with NumPy's unstable quicksort: only a tie across the K-th value
    # makes its answer depend on the sort. Without one (the noise map) the fixture is
    # Quantus' own output; with one (GradCAM's ReLU zeros) ties go by pixel order.
    straddles = [tie_at_cut(a, int(s.sum())) for a, s in zip(maps, masks)]
    for i, tied in enumerate(straddles):
        if not tied:
            assert quantus_rank[i] == stable_rank[i], (prefix, i, quantus_rank[i], stable_rank[i])
    chosen = np.where(straddles, stable_rank, quantus_rank).astype(np.float32)
    print(prefix, "rank accuracy quantus", quantus_rank, "stable", stable_rank, "tie at the cut", straddles)
    out[prefix + "relevance_rank"] = chosen
    out[prefix + "energy_pointing_game"] = np.array(
        [energy_pointing(a, b) for a, b in zip(maps, boxes)], np.float32)
    out[prefix + "iou"] = np.array([iou(a, s) for a, s in zip(maps, masks)], np.float32)
    out[prefix + "gini"] = np.array(quantus.Sparseness(disable_warnings=True, normalise=False, abs=True)(
        model=None, x_batch=np.zeros_like(a4), y_batch=y, a_batch=a4.copy()), np.float32)
    complexity(maps, prefix, out)


def signed_localization(masks, boxes, out):
    """Relevance mass, the energy pointing game and Gini on a signed map. The first two count positive
    relevance only (Arras et al. 2022; Wang et al. 2020); the GradCAM and noise maps are
    never negative, so only this map tells positive-only sums from the raw sums (Quantus'
    RelevanceMassAccuracy with abs=False) and from magnitudes (abs=True); Gini takes
    magnitudes. Mostly positive inside the mask, mostly negative outside; asserted to
    separate each from its variants."""
    rng = np.random.default_rng(2)
    signed = np.where(masks, rng.uniform(-0.2, 1.0, masks.shape),
                      rng.uniform(-1.0, 0.3, masks.shape)).astype(np.float32)
    out["signed_map"] = signed
    a4, s4 = signed[:, None], masks[:, None].astype(np.float32)
    positive = np.maximum(signed, 0).astype(np.float64)
    mass = np.array([p[m].sum() / p.sum() for p, m in zip(positive, masks)], np.float32)
    common = dict(model=None, x_batch=np.zeros_like(a4), y_batch=np.array(CLASSES), s_batch=s4)
    for abs_ in [False, True]:
        library = np.array(quantus.RelevanceMassAccuracy(disable_warnings=True, normalise=False, abs=abs_)(
            a_batch=a4.copy(), **common), np.float32)
        gap = np.abs(library - mass).min()
        assert gap > 1e-3, f"relevance mass: Quantus with abs={abs_} is within {gap} of positive-only"
        print(f"signed map: relevance mass {mass.tolist()}, Quantus abs={abs_} {library.tolist()}")
    out["signed_relevance_mass"] = mass
    energy = np.array([energy_pointing(a, b) for a, b in zip(signed, boxes)], np.float32)
    for name, variant in [("raw", lambda a: a), ("abs", np.abs)]:
        other = np.array([variant(a.astype(np.float64))[box_mask(a.shape, b)].sum() / variant(a.astype(np.float64)).sum()
                          for a, b in zip(signed, boxes)])
        gap = np.abs(other - energy).min()
        assert gap > 1e-3, f"energy pointing: the {name} share is within {gap} of positive-only"
    out["signed_energy_pointing_game"] = energy
    # Sparseness (Gini) takes magnitudes (Quantus' abs=True, as for the maps above).
    gini = np.array(quantus.Sparseness(disable_warnings=True, normalise=False, abs=True)(
        model=None, x_batch=np.zeros_like(a4), y_batch=np.array(CLASSES), a_batch=a4.copy()), np.float32)
    signed_gini = []
    for a in signed:
        v = np.sort(a.reshape(-1).astype(np.float64)) + 1e-7
        n = v.size
        signed_gini.append(((2 * np.arange(1, n + 1) - n - 1) * v).sum() / (n * v.sum()))
    gap = np.abs(np.array(signed_gini) - gini).min()
    assert gap > 1e-3, f"Gini: the signed values give a value within {gap} of the magnitudes'"
    out["signed_gini"] = gini


def complexity(maps, prefix, out):
    """Quantus' Complexity (Bhatt et al. 2020) with its defaults (abs, normalise_by_max).
    Asserted to differ from its nearest wrong variants: base-2 logarithm, no abs."""
    a4 = maps[:, None].astype(np.float32)
    y = np.array(CLASSES)
    value = np.array(quantus.Complexity(disable_warnings=True)(
        model=None, x_batch=np.zeros_like(a4), y_batch=y, a_batch=a4.copy()), np.float32)
    p = np.abs(maps.reshape(len(maps), -1).astype(np.float64))
    p /= p.sum(1, keepdims=True)
    base2 = -(p * np.log2(p + 1e-12)).sum(1)
    assert np.abs(value - base2).min() > 1e-2, (value, base2)
    assert np.abs(value - np.log(p.shape[1])).min() > 1e-2, "a uniform map's value"
    out[prefix + "complexity"] = value


# --- faithfulness -------------------------------------------------------------------

def gaussian_blur(x, sigma):
    """Lumen's blur baseline: separable Gaussian, radius ceil(3 sigma), zero padding
    renormalised by the blurred ones."""
    radius = int(max(np.ceil(3 * sigma), 1))
    d = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-d * d / (2 * sigma * sigma))
    k = torch.from_numpy(k / k.sum())
    c = x.shape[1]

    def blur(t):
        t = torch.nn.functional.conv2d(t, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
        return torch.nn.functional.conv2d(t, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)

    return blur(x) / blur(torch.ones_like(x))


def probabilities(model, batch, classes):
    with torch.no_grad():
        p = torch.softmax(model(batch), 1)
    return p[torch.arange(len(classes)), torch.tensor(classes)].numpy()


def rise_curve(model, x, maps, baseline, mode):
    """RISE's CausalMetric: ceil(HW/steps) pixels per step, cumulative, most salient
    first (stable order), the softmax probability of the target at every point."""
    b, c, h, w = x.shape
    n = h * w
    step = -(-n // CURVE_STEPS)
    points = -(-n // step) + 1
    curves = np.zeros((b, points), np.float32)
    for i in range(b):
        order = np.argsort(-maps[i].reshape(-1), kind="stable")
        for k in range(points):
            cut = min(k * step, n)
            changed = np.zeros(n, bool)
            changed[order[:cut]] = True
            changed = torch.from_numpy(changed.reshape(1, 1, h, w))
            if mode == "deletion":
                img = torch.where(changed, baseline[i:i + 1], x[i:i + 1])
            else:
                img = torch.where(changed, x[i:i + 1], baseline[i:i + 1])
            curves[i, k] = probabilities(model, img, [CLASSES[i]])[0]
    return curves


def rise_auc(curves, out, key):
    """RISE's `auc` (evaluation.py: `(arr.sum() - arr[0] / 2 - arr[-1] / 2) /
    (arr.shape[0] - 1)`) of each image's curve, stored as `KEY_auc`; asserted to differ
    from the curve's plain mean by more than ten times the Rust tolerance (1e-4)."""
    auc = np.array([(a.sum() - a[0] / 2 - a[-1] / 2) / (a.shape[0] - 1) for a in curves],
                   np.float32)
    gap = np.abs(auc - curves.mean(1)).min()
    assert gap > 1e-3, f"{key}: the area is within {gap} of the plain mean"
    out[f"{key}_auc"] = auc


NEIGHBOURS = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]


def linear_imputation(img, mask):
    """ROAD's NoisyLinearImputer (Rong et al.'s code) with noise 0. mask: 1 = keep."""
    c = img.shape[0]
    shape = mask.shape
    maskflt = mask.reshape(-1)
    imgflat = img.reshape(c, -1)
    indices = np.argwhere(maskflt == 0).flatten()
    coords_to_vidx = np.zeros(len(maskflt), dtype=int)
    coords_to_vidx[indices] = np.arange(len(indices))
    n = len(indices)
    A = lil_matrix((n, n))
    b = np.zeros((n, c))
    sum_neighbors = np.ones(n)
    for offset, weight in NEIGHBOURS:
        cord1 = indices % shape[1] + offset[1]
        cord0 = indices // shape[1] + offset[0]
        valid = ~((cord0 < 0) | (cord1 < 0) | (cord0 >= shape[0]) | (cord1 >= shape[1]))
        new_coords = indices + offset[0] * shape[1] + offset[1]
        valid_coords = new_coords[valid]
        valid_ids = np.argwhere(valid == 1).flatten()
        known = maskflt[valid_coords] > 0.5
        b[valid_ids[known], :] -= weight * imgflat[:, valid_coords[known]].T
        variable_ids = coords_to_vidx[valid_coords[~known]]
        A[valid_ids[~known], variable_ids] = weight
        invalid = np.argwhere(valid == 0).flatten()
        sum_neighbors[invalid] -= weight
    A[np.arange(n), np.arange(n)] = -sum_neighbors
    res = spsolve(csc_matrix(A), b)
    out = imgflat.copy()
    out[:, indices] = res.T
    return out.reshape(img.shape)


def road(model, x, maps, order):
    b, c, h, w = x.shape
    n = h * w
    prob = np.zeros((b, len(ROAD_PERCENTAGES)), np.float32)
    kept = np.zeros((b, len(ROAD_PERCENTAGES)), np.float32)
    for i in range(b):
        ranking = np.argsort(-maps[i].reshape(-1), kind="stable")
        if order == "lerf":
            ranking = ranking[::-1]
        for j, p in enumerate(ROAD_PERCENTAGES):
            mask = np.ones(n)
            mask[ranking[: int(n * p / 100)]] = 0
            img = linear_imputation(x[i].numpy().astype(np.float64), mask.reshape(h, w))
            with torch.no_grad():
                logits = model(torch.from_numpy(img.astype(np.float32))[None])
            prob[i, j] = torch.softmax(logits, 1)[0, CLASSES[i]].item()
            kept[i, j] = float(logits.argmax(1).item() == CLASSES[i])
    return prob, kept


def road_library(model, x, maps, order):
    """pytorch-grad-cam 1.5.7's ROADMostRelevantFirst / ROADLeastRelevantFirst, imputer
    noise 0, softmax probabilities. The library thresholds at np.percentile and keeps
    `cam < threshold`; removing p% is its percentile 100 - p for both orders. On a map
    without ties at the cuts that removes exactly the pixels our stable ranking does
    (asserted below); on GradCAM's maps, whose ReLU zeros tie, the library removes all
    tied pixels at once, so those keep the transcription above."""
    b, _, h, w = x.shape
    n = h * w
    for i in range(b):
        ordered = np.sort(maps[i].reshape(-1))
        for p in ROAD_PERCENTAGES:
            for k in (n - int(n * p / 100), int(n * p / 100)):
                assert ordered[k - 1] != ordered[k], f"a tie at the {p}% cut"
    metric_class = {"morf": ROADMostRelevantFirst, "lerf": ROADLeastRelevantFirst}[order]
    targets = [ClassifierOutputSoftmaxTarget(c) for c in CLASSES]
    prob = np.zeros((b, len(ROAD_PERCENTAGES)), np.float32)
    for j, p in enumerate(ROAD_PERCENTAGES):
        metric = metric_class(percentile=100 - p)
        metric.perturbation.imputer.noise = 0.0
        prob[:, j] = metric(x, maps, targets, model, return_diff=False)
    return prob


def average_drop(model, x, maps, baseline):
    m = torch.from_numpy(maps).float()[:, None]
    m = (m - m.amin((2, 3), keepdim=True)) / (m.amax((2, 3), keepdim=True) - m.amin((2, 3), keepdim=True) + 1e-7)
    y = probabilities(model, x, CLASSES)
    o = probabilities(model, x * m + baseline * (1 - m), CLASSES)
    return (np.maximum(0, y - o) / y * 100).astype(np.float32), (o > y).astype(np.float32)


def sensitivity(model, x, maps, out):
    rng = np.random.default_rng(0)
    # Rounded to float16 before use: stored at half the size, and the references are
    # computed from exactly the values the Rust test reads back.
    noise = rng.uniform(-SENSITIVITY_RADIUS, SENSITIVITY_RADIUS,
                        size=(SENSITIVITY_SAMPLES,) + tuple(x.shape)).astype(np.float16).astype(np.float32)
    out["sensitivity_noise"] = noise
    ref = maps / np.abs(maps).max(axis=(1, 2), keepdims=True)
    changes = np.zeros((x.shape[0], SENSITIVITY_SAMPLES))
    for s in range(SENSITIVITY_SAMPLES):
        perturbed = gradcam(model, x + torch.from_numpy(noise[s]))
        perturbed = perturbed / np.abs(perturbed).max(axis=(1, 2), keepdims=True)
        for i in range(x.shape[0]):
            changes[i, s] = np.linalg.norm(perturbed[i] - ref[i]) / np.linalg.norm(ref[i])
    out["max_sensitivity"] = changes.max(1).astype(np.float32)
    out["avg_sensitivity"] = changes.mean(1).astype(np.float32)
    # Quantus' own MaxSensitivity and AvgSensitivity, given the same perturbations (its
    # perturb_func replaced by one that adds the stored noise, sample by sample) and
    # GradCAM as the explain_func: the fixture is the library's value, and the
    # transcription above must agree with it.
    for key, cls in [("max_sensitivity", quantus.MaxSensitivity), ("avg_sensitivity", quantus.AvgSensitivity)]:
        library = quantus_sensitivity(cls, model, x, maps, noise)
        gap = np.abs(library - out[key]).max()
        print(f"{key}: Quantus {library.tolist()}, transcription {out[key].tolist()}, gap {gap:.1e}")
        assert gap < 1e-4, f"{key}: the transcription differs from Quantus by {gap}"
        assert library.min() > 1e-2, f"{key}: a zero would pass"
        out[key] = library


def quantus_sensitivity(cls, model, x, maps, noise):
    step = {"i": 0}

    def stored_noise(arr, indices, **_):
        perturbed = arr + noise[step["i"]].reshape(arr.shape)
        step["i"] += 1
        return perturbed

    def explain(model, inputs, targets, **_):
        return gradcam(model, torch.from_numpy(np.asarray(inputs, np.float32)))[:, None]

    metric = cls(nr_samples=SENSITIVITY_SAMPLES, perturb_func=stored_noise, normalise=True,
                 normalise_func=quantus.normalise_func.normalise_by_max, abs=False,
                 disable_warnings=True, display_progressbar=False)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=np.array(CLASSES), a_batch=maps[:, None].copy(),
                    explain_func=explain, device="cpu", channel_first=True, softmax=False)
    assert step["i"] == SENSITIVITY_SAMPLES, "Quantus drew a different number of samples"
    return np.array(scores, np.float32)


# --- the trained model ----------------------------------------------------------------

TRAINED_OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/shapes_cnn_metrics.safetensors")
# Test-split samples (TEST_SEED) on which the quantities the random-weight fixture
# leaves constant vary: asserted in trained().
TRAINED_SAMPLES = [1, 4, 6, 9]


def timm_shapes_cnn(weights=None):
    """The bundled shapes-cnn as a timm ResNet: Burn's names mapped back to timm's (the
    deep stem's Sequential indices, avg-down's [pool, conv, bn], gamma/beta), the
    linear weight transposed."""
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4, stem_width=8, stem_type="deep",
                   avg_down=True, channels=(16, 32, 64, 128))
    burn = load_numpy(weights or os.path.join(ROOT, "crates/lumen-models/weights/shapes-cnn.safetensors"))
    rename = {"stem.conv_a": "conv1.0", "stem.bn_a": "conv1.1", "stem.conv_b": "conv1.3",
              "stem.bn_b": "conv1.4", "stem.conv_c": "conv1.6", "downsample.conv": "downsample.1",
              "downsample.bn": "downsample.2"}
    state = {}
    for key, value in burn.items():
        name = key
        for a, b in rename.items():
            name = name.replace(a, b)
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        state[name] = torch.from_numpy((value.T if name == "fc.weight" else value).copy())
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing), (missing, unexpected)
    return model.eval()


def shapes_samples():
    """Images, masks and labels drawn by Rust's generator (an example writes them)."""
    folder = tempfile.mkdtemp(prefix="lumen-shapes-")
    subprocess.run(["cargo", "run", "--quiet", "-p", "lumen-examples", "--example", "shapes_fixture_images",
                    "--", folder, str(max(TRAINED_SAMPLES) + 1)], cwd=ROOT, check=True)
    files = sorted(glob.glob(os.path.join(folder, "*_image.png")))
    files = [files[i] for i in TRAINED_SAMPLES]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    masks = np.stack([np.asarray(Image.open(f.replace("_image", "_mask"))) > 127 for f in files])
    labels = [int(os.path.basename(f).split("_")[1]) for f in files]
    return images, masks, labels


def randomisation(model, x, maps, out):
    """Quantus' MPRT (cascading, top down, Spearman) given the very weights Lumen's
    randomize_groups draws (seed 0, written by the randomized_shapes_cnn example):
    Quantus' own generator re-initialises torch modules instead, which no other
    implementation can reproduce. Per step and image, the signed rank correlation."""
    from quantus.helpers.model import pytorch_model
    folder = tempfile.mkdtemp(prefix="lumen-randomised-")
    subprocess.run(["cargo", "run", "--quiet", "-p", "lumen-examples", "--example", "randomized_shapes_cnn",
                    "--", folder], cwd=ROOT, check=True)
    steps = sorted(glob.glob(os.path.join(folder, "*.safetensors")), key=lambda p: int(os.path.basename(p).split("_")[0]))
    models = [(os.path.basename(p).split("_", 1)[1].removesuffix(".safetensors"), timm_shapes_cnn(p)) for p in steps]

    def given_steps(self, order="top_down", seed=42):
        yield from models

    pytorch_model.PyTorchModel.get_random_layer_generator = given_steps
    pytorch_model.PyTorchModel.random_layer_generator_length = property(lambda self: len(models))

    def explain(model, inputs, targets, **_):
        return gradcam(model, torch.from_numpy(np.asarray(inputs, np.float32)))[:, None]

    metric = quantus.MPRT(layer_order="top_down", abs=False, normalise=False, disable_warnings=True,
                          display_progressbar=False)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=np.array(CLASSES), a_batch=maps[:, None].copy(),
                    explain_func=explain, device="cpu", channel_first=True, softmax=False)
    rho = np.array([scores[name] for name, _ in models], np.float32)  # [steps, images]
    print("MPRT Spearman per step (rows) and image:", np.round(rho, 3).tolist())
    # SciPy (so Quantus) gives NaN where a randomised map is constant (GradCAM all zero
    # after its ReLU); Lumen counts no rank correlation, 0. Check that every NaN is one.
    for step, (_, randomised) in enumerate(models):
        randomised_maps = explain(randomised, x.numpy(), None)
        for i in np.flatnonzero(np.isnan(rho[step])):
            assert np.ptp(randomised_maps[i]) == 0, f"NaN at step {step}, image {i} from a non-constant map"
    rho = np.nan_to_num(rho, nan=0.0)
    assert (rho < 0).any(), "no negative correlation: signed and absolute rules agree here"
    assert np.abs(rho[-1]).mean() < 0.9, "randomising every layer leaves the maps unchanged"
    out["randomization_spearman"] = rho


def trained():
    """Metric fixtures on the trained shapes-cnn, where ROAD's kept flags, average drop
    and the pointing tolerance vary (on the random-weight test_resnet they do not)."""
    global CLASSES
    fixture_classes = CLASSES
    try:
        trained_fixtures()
    finally:
        CLASSES = fixture_classes


def trained_fixtures():
    global CLASSES
    model = timm_shapes_cnn()
    images, masks, labels = shapes_samples()
    x = torch.from_numpy(((images.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = model(x)
    assert (logits.argmax(1).numpy() == np.array(labels)).all(), "timm's shapes-cnn misclassifies"
    CLASSES = labels  # the reference functions above read the targets from here
    out = {"images": images.astype(np.float32), "masks": masks.astype(np.float32),
           "labels": np.array(labels, np.float32), "logits": logits.numpy()}
    # float32 maps: float16 rounding would tie pixels at the maximum, where Quantus
    # (any tied pixel) and TorchRay (the first argmax) part ways.
    maps = gradcam(model, x).astype(np.float32)
    noise_map = np.random.default_rng(1).uniform(0, 1, size=maps.shape).astype(np.float32)
    out["gradcam"], out["noise_map"] = maps, noise_map
    for prefix, m in [("gradcam_", maps), ("noise_", noise_map)]:
        out[prefix + "pointing_game"] = np.array(quantus.PointingGame(
            disable_warnings=True, normalise=False, abs=False)(
            model=None, x_batch=np.zeros_like(m[:, None]), y_batch=np.array(labels),
            a_batch=m[:, None].copy(), s_batch=masks[:, None].astype(np.float32)), np.float32)
        out[prefix + "pointing_game_15"] = np.array(
            [pointing_tolerance(a, s, TOLERANCE) for a, s in zip(m, masks)], np.float32)
    black = torch.full_like(x, -1.0)  # (0 - 0.5) / 0.5
    out["average_drop"], out["increase"] = average_drop(model, x, maps, black)
    for order in ["morf", "lerf"]:
        out[f"road_{order}_probability"], out[f"road_{order}_kept"] = road(model, x, maps, order)
    mean = x.mean((2, 3), keepdim=True).expand_as(x)
    out["deletion_mean"] = rise_curve(model, x, maps, mean, "deletion")
    out["insertion_mean"] = rise_curve(model, x, maps, mean, "insertion")
    for key in ["deletion_mean", "insertion_mean"]:
        rise_auc(out[key], out, key)  # the random-weight model's curves are too flat
    # What the random-weight fixture could not show, asserted here.
    kept = out["road_morf_kept"]
    assert 0 < kept.mean() < 1, f"ROAD MoRF kept flags are constant: {kept}"
    # In percent; the Rust tolerance is 1e-2 points, so a drop clipped to 0 must fail.
    assert (out["average_drop"] > 5e-2).all(), f"average drop near 0: {out['average_drop']}"
    changed = out["gradcam_pointing_game_15"] != out["gradcam_pointing_game"]
    assert changed.any(), "the pointing tolerance changes no GradCAM hit"
    randomisation(model, x, maps, out)
    curves = out["deletion_mean"]
    assert curves[:, 0].min() > 0.5 and curves[:, -1].max() < curves[:, 0].min(), "deletion does not delete"
    for k, v in sorted(out.items()):
        if v.size <= 12:
            print("trained", k, np.round(v, 4).tolist())
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
    for key in ["images", "masks"]:
        tensors[key] = tensors[key].to(torch.uint8)
    save_file(tensors, TRAINED_OUT)
    print(f"wrote {TRAINED_OUT}")


def main():
    trained()
    model, x = load()
    b, _, h, w = x.shape
    out = {}
    maps = gradcam(model, x)  # [2,h,w], min-max normalised, zeros where ReLU cut
    rng = np.random.default_rng(1)
    noise_map = rng.uniform(0, 1, size=(b, h, w)).astype(np.float32)
    out["gradcam"] = maps.astype(np.float32)
    out["noise_map"] = noise_map
    masks, boxes = regions(h, w)
    out["masks"] = masks.astype(np.float32)
    out["boxes"] = boxes.astype(np.float32)
    localization(maps, masks, boxes, "gradcam_", out)
    localization(noise_map, masks, boxes, "noise_", out)
    signed_localization(masks, boxes, out)

    black = torch.from_numpy(((0 - MEAN) / STD).astype(np.float32)).view(1, 3, 1, 1).expand_as(x)
    blur = gaussian_blur(x, 5.0)
    mean = x.mean((2, 3), keepdim=True).expand_as(x)
    out["deletion_black"] = rise_curve(model, x, maps, black, "deletion")
    out["insertion_blur"] = rise_curve(model, x, maps, blur, "insertion")
    out["deletion_mean"] = rise_curve(model, x, maps, mean, "deletion")
    for order in ["morf", "lerf"]:
        prob, kept = road(model, x, maps, order)
        out[f"road_{order}_probability"] = prob
        out[f"road_{order}_kept"] = kept
        library = road_library(model, x, noise_map, order)
        ours, _ = road(model, x, noise_map, order)
        gap = np.abs(library - ours).max()
        assert gap < 1e-5, f"ROAD {order}: the transcription differs from pytorch-grad-cam by {gap}"
        original = probabilities(model, x, CLASSES)
        moved = np.abs(library - original[:, None]).max()
        assert moved > 1e-2, f"ROAD {order}: imputation leaves the probabilities unchanged ({moved})"
        print(f"ROAD {order} on the noise map: pytorch-grad-cam {library.tolist()}, |library - ours| {gap:.1e}, "
              f"largest change from the original {moved:.3f}")
        out[f"road_{order}_library_noise_map"] = library
    drop, increase = average_drop(model, x, maps, black)
    out["average_drop"] = drop
    out["increase"] = increase
    sensitivity(model, x, maps, out)

    # Similarity: GradCAM vs the noise map and vs a shifted copy of itself.
    shifted = np.roll(maps, 7, axis=2)
    for name, other in [("noise", noise_map), ("shifted", shifted)]:
        out[f"spearman_{name}"] = np.array(
            [spearmanr(a.reshape(-1), o.reshape(-1)).statistic for a, o in zip(maps, other)], np.float32)
        out[f"ssim_{name}"] = np.array(
            [structural_similarity(a.astype(np.float64), o.astype(np.float64), data_range=1.0)
             for a, o in zip(maps, other)], np.float32)
    out["shifted"] = shifted.astype(np.float32)

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) if isinstance(v, np.ndarray)
               else v.float().contiguous() for k, v in out.items()}
    tensors["sensitivity_noise"] = tensors["sensitivity_noise"].half()  # exact, see sensitivity()
    tensors["masks"] = tensors["masks"].to(torch.uint8)
    save_file(tensors, OUT)
    for k, v in sorted(tensors.items()):
        if v.numel() < 16:
            print(k, v.numpy().round(5).tolist())
    print("wrote", OUT)


if __name__ == "__main__":
    main()
