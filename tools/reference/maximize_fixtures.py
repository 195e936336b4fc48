#!/usr/bin/env python3
"""Write the activation-maximization parity fixture used by
`crates/lumen/tests/maximize.rs`:

    python tools/reference/maximize_fixtures.py

Reference: a PyTorch transcription of Lumen's documented parameterization
(docs/features.md, "Activation maximization"), optimised by torch's own
`torch.optim.Adam` with torch autograd, on timm's `test_resnet` in eval mode:

- per colour channel, orthonormal 2-D DCT-II coefficients scaled by
  `1 / max(frequency, 1 / max(H, W))` (lucid's `fft_image` spectrum scaling, with
  the DCT as the real basis), inverted to pixels;
- lucid's colour decorrelation matrix (its columns' largest norm scaled to 1);
- a sigmoid to [0, 1], then the model's normalisation (mean, std);
- the objective (a channel's mean, one neuron, a direction's mean projection, a
  logit's value), maximised by Adam (betas 0.9, 0.999, eps 1e-8) on the negated sum.

The random transformations are off (jitter 0, scale 1, no rotation): their draws come
from Lumen's own seeded generator, which Python cannot replay. The initial
coefficients (0.1 x N(0, 1) rather than Lumen's default 0.01, see INITIAL_SCALE) are
method_fixtures.py's `hashed_normal` of a seed, which the Rust test draws again and
gives to Lumen's `maximize_from`; the fixture stores the seeds.

Activation maximization amplifies rounding (see STEPS), so the objectives are picked:
each candidate (a layer3 channel, neuron and direction) is kept only when the
float32 run, a float64 one, one with every BatchNorm folded into its convolution (as
Lumen computes) and one with the weights moved by 1e-6 agree within
PIXEL_TOLERANCE / SEPARATION. A logit's ascent is never that stable (see main), so for
a logit only its value on the initial image is stored.

The generator asserts that the fixture separates the method from its neighbours: the
same run without the spectrum scaling, without the colour decorrelation, without
Adam's bias correction, and the untouched initial image all differ from it by more
than SEPARATION x PIXEL_TOLERANCE.
"""

import copy
import itertools
import os
import sys

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_fixtures import layer_output  # noqa: E402
from method_fixtures import hashed_normal  # noqa: E402  (drawn again by the Rust test)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "crates/lumen-models/tests/fixtures")
OUT = os.path.join(ROOT, "crates/lumen/tests/fixtures/test_resnet_maximize.safetensors")

# Adam moves every coefficient by about the learning rate whatever its gradient's size,
# so where gradients nearly cancel, a 1e-6 change of the weights moves pixels by 0.1-0.5
# after 12 steps on almost every objective; after 3, on about half of them (measured
# by `pick`, which keeps only those it leaves within PIXEL_TOLERANCE / SEPARATION).
STEPS = 3
# Standard deviation of the initial coefficients. lucid starts at 0.01: a nearly grey
# image, whose max-pooling windows in the stem hold near-ties (6 within 1e-6 on one draw)
# that another backend's rounding flips; a textured start has none that matter.
INITIAL_SCALE = 0.1
LEARNING_RATE = 0.05
MEAN = STD = 0.5  # test_resnet's data config (inception normalisation)
SIZE = 160
# Largest pixel difference the Rust test allows (pixels are in [0, 1]); neighbours must
# differ by at least SEPARATION times this.
PIXEL_TOLERANCE = 5e-4
# Largest difference of objective values the Rust test allows, relative to max(|v|, 1).
VALUE_TOLERANCE = 1e-4
SEPARATION = 10

COLOR_CORRELATION = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)

# The neuron's position on layer3's 10x10 map; its channel, like the other objectives,
# is picked by `pick` (the most active channels there on a grey image first).
NEURON_AT = (3, 4)


def dct_matrix(n):
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (i + 0.5) * k / n)
    m[0] = np.sqrt(1.0 / n)
    return torch.tensor(m)


def spectrum_scale(h, w):
    ky = np.arange(h)[:, None] / (2 * h)
    kx = np.arange(w)[None, :] / (2 * w)
    frequency = np.maximum(np.sqrt(ky ** 2 + kx ** 2), 1.0 / max(h, w))
    return torch.tensor(1.0 / frequency)


def objective_values(model, layer, image, objectives):
    a = layer_output(model, layer, (image - MEAN) / STD)
    if a.dim() == 2:
        a = a[:, :, None, None]
    values = []
    for i, (kind, arg) in enumerate(objectives):
        if kind == "channel":
            values.append(a[i, arg].mean())
        elif kind == "neuron":
            channel, (y, x) = arg
            values.append(a[i, channel, y, x])
        else:
            direction = torch.tensor(arg, dtype=a.dtype).view(-1, 1, 1)
            values.append((a[i] * direction).sum(0).mean())
    return torch.stack(values)


def optimise(model, layer, objectives, initial, spectrum=True, decorrelate=True,
             bias_correction=True, steps=STEPS):
    """The transcription, in the dtype of `model`'s parameters."""
    dtype = next(model.parameters()).dtype
    h = w = SIZE
    dct = dct_matrix(h).to(dtype)
    scale = spectrum_scale(h, w).to(dtype) if spectrum else torch.ones(h, w, dtype=dtype)
    color = COLOR_CORRELATION.astype(np.float64)
    color = torch.tensor(color / np.linalg.norm(color, axis=0).max(), dtype=dtype)
    if not decorrelate:
        color = torch.eye(3, dtype=dtype)

    def to_image(p):
        spatial = dct.T @ (p * scale) @ dct
        mixed = torch.einsum("dc,bchw->bdhw", color, spatial)
        return torch.sigmoid(mixed)

    params = torch.tensor(initial, dtype=dtype).requires_grad_(True)
    trajectory = []
    if bias_correction:
        optimiser = torch.optim.Adam([params], lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    for step in range(1, steps + 1):
        values = objective_values(model, layer, to_image(params), objectives)
        trajectory.append(values.detach().numpy())
        loss = -values.sum()
        if bias_correction:
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        else:
            params.grad = None
            loss.backward()
            with torch.no_grad():
                g = params.grad
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                params -= LEARNING_RATE * m / (v.sqrt() + 1e-8)
    with torch.no_grad():
        image = to_image(params)
        final = objective_values(model, layer, image, objectives)
    return (np.stack(trajectory, 1).astype(np.float32) if trajectory
            else np.zeros((len(objectives), 0), np.float32),
            final.numpy().astype(np.float32), image.numpy().astype(np.float32))


def fold_batch_norms(model):
    """A copy with every BatchNorm folded into the convolution before it, as Lumen's
    `valid()` ResNets compute: the same function, other float32 rounding."""
    folded = copy.deepcopy(model)
    where = {id(child): (parent, name) for parent in folded.modules()
             for name, child in parent.named_children()}
    # timm's ResNet registers each BatchNorm right after its convolution (the deep
    # stem's last convolution is followed by the model's `bn1`).
    layers = [m for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    for conv, norm in zip(layers, layers[1:]):
        if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
            fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
            conv.weight, conv.bias = fused.weight, fused.bias
            parent, name = where[id(norm)]
            setattr(parent, name, torch.nn.Identity())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    return folded


def perturb_weights(model, relative=1e-6, seed=0):
    """A copy with every weight moved by about `relative` of itself: ten times the
    rounding of another backend's float32 convolutions, in place of running one."""
    generator = torch.Generator().manual_seed(seed)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.mul_(1 + relative * torch.randn(p.shape, generator=generator))
    return perturbed


def rounding_spread(models, layer, objective, initial, steps):
    """Largest pixel difference between the float32 run and the float64, BatchNorm-folded
    and weight-perturbed ones: how much float rounding alone moves this optimisation."""
    images = [optimise(m, layer, [objective], initial, steps=steps)[2] for m in models]
    return max(np.abs(a - images[0]).max() for a in images[1:])


def describe(objective):
    kind, arg = objective
    return f"{kind} {arg[0]} at {arg[1]}" if kind == "neuron" else (
        f"{kind} {arg}" if kind == "channel" else kind)


def initial_coefficients(seed):
    """One image's initial coefficients [1, 3, SIZE, SIZE], which the Rust test draws
    again from the seed (`hashed_normal`), so the fixture stores the seed only."""
    return hashed_normal((1, 3, SIZE, SIZE), seed, INITIAL_SCALE)


def pick(models, layer, steps, candidates, seeds):
    """The first candidate objective (with the initial coefficients of the next seed)
    that rises and whose optimisation float rounding does not decide (see STEPS): an
    image that rounding moves cannot be a fixture for any backend. Returns the
    objective and its seed."""
    for objective in candidates:
        seed = next(seeds)
        initial = initial_coefficients(seed)
        trajectory, final, _ = optimise(models[0], layer, [objective], initial, steps=steps)
        if not final[0] > trajectory[0, 0]:
            print(f"{layer} {describe(objective)}: skipped, it does not rise ({trajectory[0, 0]} -> {final[0]})")
            continue
        spread = rounding_spread(models, layer, objective, initial, steps)
        if spread <= PIXEL_TOLERANCE / SEPARATION:
            print(f"{layer} {describe(objective)}: rounding moves pixels by {spread:.1e}; kept")
            return objective, seed
        print(f"{layer} {describe(objective)}: skipped, rounding moves pixels by {spread:.1e}")
    raise AssertionError(f"{layer}: no candidate is well conditioned")


def main():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(load_file(os.path.join(MODELS, "test_resnet.safetensors")))
    model.eval()
    models = [model, copy.deepcopy(model).double(), fold_batch_norms(model),
              perturb_weights(model)]
    x = torch.rand(2, 3, SIZE, SIZE)
    assert (models[2](x) - model(x)).abs().max() < 1e-4, "folding changed the function"
    grey = layer_output(model, "layer3", torch.full((1, 3, SIZE, SIZE), 0.5))[0]
    channels = grey.shape[0]
    rng = np.random.default_rng(11)
    live = grey[:, NEURON_AT[0], NEURON_AT[1]].argsort(descending=True).tolist()
    layer, steps = "layer3", STEPS
    candidate_lists = [
        [("channel", c) for c in range(channels)],
        [("neuron", (c, NEURON_AT)) for c in live[:8]],
        [("direction", rng.standard_normal(channels).astype(np.float32)) for _ in range(8)],
    ]
    out = {}
    seeds = itertools.count(1)
    chosen = [pick(models, layer, steps, candidates, seeds) for candidates in candidate_lists]
    objectives = [objective for objective, _ in chosen]
    initial = np.concatenate([initial_coefficients(seed) for _, seed in chosen])
    trajectory, final, pixels = optimise(model, layer, objectives, initial, steps=steps)
    variant = lambda **changes: optimise(model, layer, objectives, initial,
                                         **{"steps": steps, **changes})
    neighbours = {
        "no spectrum scaling": variant(spectrum=False),
        "no colour decorrelation": variant(decorrelate=False),
        "no bias correction": variant(bias_correction=False),
        "the initial image": variant(steps=0),
    }
    for name, (_, _, other) in neighbours.items():
        gaps = np.abs(other - pixels).reshape(len(objectives), -1).max(1)
        assert np.all(gaps > SEPARATION * PIXEL_TOLERANCE), f"{layer}: {name} differs by {gaps} only"
        print(f"{layer}: {name} differs by {gaps}")
    for kind, arg in objectives:
        if kind == "channel":
            out[f"{layer}_channel"] = np.array([arg], np.float32)
        elif kind == "neuron":
            out["neuron_channel"] = np.array([arg[0]], np.float32)
        else:
            out["direction"] = arg
    out[f"{layer}_seeds"] = np.array([seed for _, seed in chosen], np.float32)
    out[f"{layer}_trajectory"] = trajectory
    out[f"{layer}_value"] = final
    out[f"{layer}_pixels"] = pixels
    print(f"{layer}: {[describe(o) for o in objectives]}: {trajectory[:, 0]} -> {final}")

    # A logit's ascent turns on rounding from its first step: after one step, 5 of the 10
    # logits moved pixels by 3e-3 to 4e-2 between the float32, float64 and folded runs
    # here, and one that passed all four moved them by 6e-2 on libtorch (Lumen's
    # tch:cpu); after 3 steps all 10, from 5 draws each, by 8e-4 to 9e-2. So only a logit's value on the
    # initial image is a fixture: the objective on a vector layer, not its ascent.
    logit, seed = 0, next(seeds)
    initial = initial_coefficients(seed)
    value = lambda **changes: optimise(model, "fc", [("channel", logit)], initial, steps=1,
                                       **changes)[0][0, 0]
    expected = value()
    for name, other in [("no spectrum scaling", value(spectrum=False)),
                        ("no colour decorrelation", value(decorrelate=False))]:
        gap = abs(other - expected)
        assert gap > SEPARATION * VALUE_TOLERANCE * max(abs(expected), 1), f"fc: {name}: {gap}"
        print(f"fc: {name} differs by {gap:.3f}")
    out["fc_channel"] = np.array([logit], np.float32)
    out["fc_seed"] = np.array([seed], np.float32)
    out["fc_value_at_initial"] = np.array([expected], np.float32)
    print(f"fc: logit {logit} on the initial image: {expected}")
    save_file({k: torch.tensor(np.ascontiguousarray(v)) for k, v in out.items()}, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
