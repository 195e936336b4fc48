//! Named hook points in a model's forward pass.
//!
//! A model calls `tap.visit(name, tensor)` at each named layer and continues with what
//! `visit` returns. The identity tap ([`NoTap`]) changes nothing; the other taps here
//! record activations, inject a zero gradient leaf (so the gradient at a layer can be
//! read after `backward()`, Burn having no hooks or `retain_grad`), replace a tensor,
//! or count visits. One mechanism serves CAMs, feature visualisation, attention
//! rollout, ablation and training monitors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{Gradients, Tensor};

/// A tensor seen at a tap point: a `[B,C,H,W]` feature map or attention matrix
/// `[B,heads,N,N]` (rank 4), tokens `[B,N,D]` (rank 3), or a vector per image such as
/// pooled features or logits `[B,D]` (rank 2).
#[derive(Clone, Debug)]
pub enum TapTensor {
    /// Rank-4 tensor: a feature map or an attention matrix.
    Rank4(Tensor<4>),
    /// Rank-3 tensor: a token sequence.
    Rank3(Tensor<3>),
    /// Rank-2 tensor: one vector per image.
    Rank2(Tensor<2>),
}

/// Apply the same rank-generic operation to whichever tensor a [`TapTensor`] holds.
macro_rules! map_tap_tensor {
    ($value:expr, |$t:ident| $body:expr) => {
        match $value {
            TapTensor::Rank4($t) => TapTensor::Rank4($body),
            TapTensor::Rank3($t) => TapTensor::Rank3($body),
            TapTensor::Rank2($t) => TapTensor::Rank2($body),
        }
    };
}

impl TapTensor {
    /// Shape as a vector, whatever the rank.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Rank4(t) => t.dims().to_vec(),
            Self::Rank3(t) => t.dims().to_vec(),
            Self::Rank2(t) => t.dims().to_vec(),
        }
    }

    /// The rank-4 tensor, if this is one.
    pub fn rank4(self) -> Option<Tensor<4>> {
        match self {
            Self::Rank4(t) => Some(t),
            _ => None,
        }
    }

    /// The rank-3 tensor, if this is one.
    pub fn rank3(self) -> Option<Tensor<3>> {
        match self {
            Self::Rank3(t) => Some(t),
            _ => None,
        }
    }

    /// The rank-2 tensor, if this is one.
    pub fn rank2(self) -> Option<Tensor<2>> {
        match self {
            Self::Rank2(t) => Some(t),
            _ => None,
        }
    }

    /// The same values cut from the autodiff graph and moved to the plain device.
    pub fn detached(self) -> Self {
        map_tap_tensor!(self, |t| t.detach().without_autodiff())
    }
}

/// A tensor type that can pass through a tap point.
pub trait Tappable: Sized {
    /// Wrap into the rank-erased form.
    fn into_tap_tensor(self) -> TapTensor;
    /// Unwrap; a tap must return the rank it was given.
    fn from_tap_tensor(t: TapTensor, layer: &str) -> Self;
}

impl Tappable for Tensor<4> {
    fn into_tap_tensor(self) -> TapTensor {
        TapTensor::Rank4(self)
    }
    fn from_tap_tensor(t: TapTensor, layer: &str) -> Self {
        t.rank4()
            .unwrap_or_else(|| panic!("tap at `{layer}` changed the tensor rank (bug in the tap)"))
    }
}

impl Tappable for Tensor<3> {
    fn into_tap_tensor(self) -> TapTensor {
        TapTensor::Rank3(self)
    }
    fn from_tap_tensor(t: TapTensor, layer: &str) -> Self {
        t.rank3()
            .unwrap_or_else(|| panic!("tap at `{layer}` changed the tensor rank (bug in the tap)"))
    }
}

impl Tappable for Tensor<2> {
    fn into_tap_tensor(self) -> TapTensor {
        TapTensor::Rank2(self)
    }
    fn from_tap_tensor(t: TapTensor, layer: &str) -> Self {
        t.rank2()
            .unwrap_or_else(|| panic!("tap at `{layer}` changed the tensor rank (bug in the tap)"))
    }
}

/// A hook called at every named point of a forward pass.
pub trait Tap {
    /// Observe or replace the tensor produced at `layer`. Must return the same rank.
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor;

    /// Whether this tap may read or replace `layer`. A model may skip forming a point
    /// nobody observes (a convolution's output before the BatchNorm that a fused
    /// convolution never forms), so a tap that answers no for a layer may not get it;
    /// the default is yes.
    fn observes(&self, layer: &str) -> bool {
        let _ = layer;
        true
    }
}

impl dyn Tap + '_ {
    /// Pass a tensor through the tap at `layer`; what models call in their forward.
    pub fn visit<T: Tappable>(&self, layer: &str, tensor: T) -> T {
        T::from_tap_tensor(self.visit_tensor(layer, tensor.into_tap_tensor()), layer)
    }
}

/// The identity tap.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTap;

impl Tap for NoTap {
    fn visit_tensor(&self, _layer: &str, tensor: TapTensor) -> TapTensor {
        tensor
    }
    fn observes(&self, _layer: &str) -> bool {
        false
    }
}

/// Passes every point to another tap under `prefix` + its name: how a composite model
/// (a segmentor's `backbone.`) exposes a sub-model's layers under its own path.
pub struct Prefixed<'a> {
    /// Prepended to every layer name (e.g. `backbone.`).
    pub prefix: &'a str,
    /// The tap that sees the prefixed names.
    pub inner: &'a dyn Tap,
}

impl Tap for Prefixed<'_> {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        self.inner
            .visit_tensor(&format!("{}{layer}", self.prefix), tensor)
    }
    fn observes(&self, layer: &str) -> bool {
        self.inner.observes(&format!("{}{layer}", self.prefix))
    }
}

/// Several taps applied in order at each point.
pub struct TapChain<'a>(pub Vec<&'a dyn Tap>);

impl Tap for TapChain<'_> {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        self.0
            .iter()
            .fold(tensor, |t, tap| tap.visit_tensor(layer, t))
    }
    fn observes(&self, layer: &str) -> bool {
        self.0.iter().any(|tap| tap.observes(layer))
    }
}

/// Records the tensors produced at the chosen layers (or at every layer).
#[derive(Default)]
pub struct Recorder {
    layers: Option<Vec<String>>,
    seen: Mutex<Vec<(String, TapTensor)>>,
}

impl Recorder {
    /// Record only these layers.
    pub fn new<S: Into<String>>(layers: impl IntoIterator<Item = S>) -> Self {
        Self {
            layers: Some(layers.into_iter().map(Into::into).collect()),
            seen: Mutex::default(),
        }
    }

    /// Record every tap point, in forward order.
    pub fn all() -> Self {
        Self::default()
    }

    /// The last tensor recorded at `layer`.
    pub fn get(&self, layer: &str) -> Option<TapTensor> {
        let seen = self.seen.lock().expect("recorder lock");
        seen.iter()
            .rev()
            .find(|(n, _)| n == layer)
            .map(|(_, t)| t.clone())
    }

    /// Everything recorded, in forward order.
    pub fn take_all(&self) -> Vec<(String, TapTensor)> {
        std::mem::take(&mut *self.seen.lock().expect("recorder lock"))
    }

    fn wants(&self, layer: &str) -> bool {
        self.layers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == layer))
    }
}

impl Tap for Recorder {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        if self.wants(layer) {
            self.seen
                .lock()
                .expect("recorder lock")
                .push((layer.to_string(), tensor.clone()));
        }
        tensor
    }
    fn observes(&self, layer: &str) -> bool {
        self.wants(layer)
    }
}

/// Records the activation at chosen layers and adds a zero leaf that requires a
/// gradient, so that after `backward()` the gradient of the score with respect to the
/// activation can be read with [`GradientTap::gradient`]. The forward values are
/// unchanged (`a + 0`).
#[derive(Default)]
pub struct GradientTap {
    layers: Vec<String>,
    seen: Mutex<HashMap<String, (TapTensor, TapTensor)>>,
}

impl GradientTap {
    /// Capture activations and gradients at these layers.
    pub fn new<S: Into<String>>(layers: impl IntoIterator<Item = S>) -> Self {
        Self {
            layers: layers.into_iter().map(Into::into).collect(),
            seen: Mutex::default(),
        }
    }

    /// The activation at `layer` from the last forward, detached from the graph.
    pub fn activation(&self, layer: &str) -> Option<TapTensor> {
        let seen = self.seen.lock().expect("gradient tap lock");
        seen.get(layer).map(|(a, _)| a.clone().detached())
    }

    /// The gradient at `layer` after `backward()`; `None` if the layer was not reached
    /// or the score does not depend on it.
    pub fn gradient(&self, layer: &str, grads: &Gradients) -> Option<TapTensor> {
        let seen = self.seen.lock().expect("gradient tap lock");
        let (_, leaf) = seen.get(layer)?;
        match leaf {
            TapTensor::Rank4(z) => z.grad(grads).map(TapTensor::Rank4),
            TapTensor::Rank3(z) => z.grad(grads).map(TapTensor::Rank3),
            TapTensor::Rank2(z) => z.grad(grads).map(TapTensor::Rank2),
        }
    }
}

impl Tap for GradientTap {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        if !self.layers.iter().any(|n| n == layer) {
            return tensor;
        }
        // The leaf must be a fresh autodiff tensor: `require_grad` on a non-leaf panics.
        let leaf = map_tap_tensor!(tensor.clone(), |t| t
            .zeros_like()
            .detach()
            .autodiff()
            .require_grad());
        let out = match (&tensor, &leaf) {
            (TapTensor::Rank4(a), TapTensor::Rank4(z)) => TapTensor::Rank4(a.clone() + z.clone()),
            (TapTensor::Rank3(a), TapTensor::Rank3(z)) => TapTensor::Rank3(a.clone() + z.clone()),
            (TapTensor::Rank2(a), TapTensor::Rank2(z)) => TapTensor::Rank2(a.clone() + z.clone()),
            _ => unreachable!("leaf has the activation's rank"),
        };
        self.seen
            .lock()
            .expect("gradient tap lock")
            .insert(layer.to_string(), (tensor, leaf));
        out
    }
    fn observes(&self, layer: &str) -> bool {
        self.layers.iter().any(|n| n == layer)
    }
}

/// Replaces the tensor at one layer with the result of a function (ablation, masking).
pub struct ReplaceTap<F> {
    layer: String,
    replace: F,
}

impl<F: Fn(TapTensor) -> TapTensor> ReplaceTap<F> {
    /// Replace the tensor at `layer` with `replace(tensor)`.
    pub fn new(layer: impl Into<String>, replace: F) -> Self {
        Self {
            layer: layer.into(),
            replace,
        }
    }
}

impl<F: Fn(TapTensor) -> TapTensor> Tap for ReplaceTap<F> {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        if layer == self.layer {
            (self.replace)(tensor)
        } else {
            tensor
        }
    }
    fn observes(&self, layer: &str) -> bool {
        layer == self.layer
    }
}

/// Counts how often each tap point is visited: the number of forward passes a method
/// really made is the count at any layer, whatever the batch size.
#[derive(Default)]
pub struct CountingTap {
    counts: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl CountingTap {
    /// Visits of `layer` so far.
    pub fn count(&self, layer: &str) -> usize {
        *self
            .counts
            .lock()
            .expect("counting tap lock")
            .get(layer)
            .unwrap_or(&0)
    }

    /// Visits of all layers so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Tap for CountingTap {
    fn visit_tensor(&self, layer: &str, tensor: TapTensor) -> TapTensor {
        *self
            .counts
            .lock()
            .expect("counting tap lock")
            .entry(layer.to_string())
            .or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        tensor
    }
}

/// Backpropagate from `score`, or `None` when it depends on no tracked tensor: a
/// target that found nothing to score in this input (a detection absent from an
/// integration step's darkened image) is constant, so every gradient is zero.
pub fn backward_if_tracked<const D: usize>(score: &Tensor<D>) -> Option<Gradients> {
    score.is_tracked().then(|| score.backward())
}
