//! The explainable-model trait: a forward pass with taps, and the list of named layers.

use burn::tensor::Tensor;

use crate::error::{LumenError, Result};
use crate::tap::{NoTap, Tap, TapTensor};

/// What a named layer produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A feature map `[B,C,H,W]`.
    FeatureMap,
    /// Tokens `[B,N,D]`: `prefix_tokens` (class/distillation tokens) followed by a
    /// `grid[0] x grid[1]` patch grid.
    Tokens {
        grid: [usize; 2],
        prefix_tokens: usize,
    },
    /// Attention probabilities `[B,heads,N,N]` over the same tokens.
    Attention {
        heads: usize,
        grid: [usize; 2],
        prefix_tokens: usize,
    },
    /// One vector per image `[B,D]`: pooled features or logits.
    Vector,
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FeatureMap => write!(f, "feature map [B,C,H,W]"),
            Self::Tokens {
                grid,
                prefix_tokens,
            } => write!(
                f,
                "tokens [B,N,D] ({}x{} grid, {prefix_tokens} prefix)",
                grid[0], grid[1]
            ),
            Self::Attention { heads, .. } => write!(f, "attention [B,{heads},N,N]"),
            Self::Vector => write!(f, "vector [B,D]"),
        }
    }
}

/// A named tap point of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The name the model passes to `Tap::visit` (timm's module names).
    pub name: String,
    /// What the layer produces.
    pub kind: LayerKind,
}

impl LayerInfo {
    /// Shorthand constructor.
    pub fn new(name: impl Into<String>, kind: LayerKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }
}

/// A sliding-window operation (convolution or pooling) along a model's main path:
/// what the theoretical receptive field is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOp {
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on the top and left.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl ConvOp {
    /// A square operation.
    pub fn new(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            dilation,
        }
    }
}

/// A model Lumen can explain: a forward pass that calls a [`Tap`] at each named layer.
///
/// Implement it for your own Burn model by calling `tap.visit("name", x)` at the layers
/// you want to expose, and listing them in [`ExplainableModel::layers`].
pub trait ExplainableModel {
    /// What the forward pass returns (logits `[B,classes]` for a classifier).
    type Output;

    /// The forward pass, calling `tap` at each named layer.
    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Self::Output;

    /// The forward pass without taps.
    fn forward(&self, input: Tensor<4>) -> Self::Output {
        self.forward_tapped(input, &NoTap)
    }

    /// Every named layer, in forward order.
    fn layers(&self) -> Vec<LayerInfo>;

    /// The layers for an input of `[height, width]`: token grids follow the input
    /// size where the model takes other sizes (a ViT's patch grid); the default is
    /// [`layers`](ExplainableModel::layers).
    fn layers_at(&self, size: [usize; 2]) -> Vec<LayerInfo> {
        let _ = size;
        self.layers()
    }

    /// The layer explanations use when the caller names none.
    fn default_layer(&self) -> String;

    /// The input `[channels, height, width]` the model expects (its data config's size).
    fn input_shape(&self) -> [usize; 3];

    /// Whether the model takes other heights and widths than [`input_shape`]'s:
    /// `Some(m)` for a network that takes any size of at least `m` pixels a side (a
    /// CNN with global pooling: its total stride), `None` for a fixed size.
    ///
    /// [`input_shape`]: ExplainableModel::input_shape
    fn min_input_side(&self) -> Option<usize> {
        None
    }

    /// The sliding-window operations on the longest path from the previous listed
    /// layer to each spatial layer, in forward order (CNNs); empty when the model does
    /// not describe its geometry. The theoretical receptive field is computed from it.
    fn window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        vec![]
    }

    /// Look up a layer by name; the error lists the valid names.
    fn layer(&self, name: &str) -> Result<LayerInfo> {
        let [_, h, w] = self.input_shape();
        self.layer_at(name, [h, w])
    }

    /// [`layer`](ExplainableModel::layer) for an input of `[height, width]`.
    fn layer_at(&self, name: &str, size: [usize; 2]) -> Result<LayerInfo> {
        let layers = self.layers_at(size);
        layers
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| LumenError::UnknownLayer {
                name: name.to_string(),
                valid: layers.into_iter().map(|l| l.name).collect(),
            })
    }

    /// Look up every layer of a spec (`name`, or `a,b` for CAMs over several layers);
    /// the error names the first unknown one and lists the valid names.
    fn check_layers(&self, spec: &str) -> Result<Vec<LayerInfo>> {
        layer_list(spec)
            .into_iter()
            .map(|l| self.layer(l))
            .collect()
    }

    /// [`check_input`](Self::check_input) without the values: at least one image, of a
    /// size this model takes. For callers whose inputs are finite where they enter (the
    /// facade's `Inputs`) and whose methods check the values again: it reads nothing
    /// back from the device.
    fn check_input_shape(&self, input: &Tensor<4>) -> Result<()> {
        let [b, c, h, w] = input.dims();
        if b == 0 {
            return Err(LumenError::InvalidArgument(format!(
                "the batch is empty (shape [0, {c}, {h}, {w}]): there is no image to explain"
            )));
        }
        check_shape(self, input)
    }

    /// Check that a batch has the shape this model takes (the error says which sizes
    /// those are), holds at least one image, and only finite values: a NaN or an
    /// infinity gives NaN maps, or, behind a ReLU, plausible-looking zero gradients.
    fn check_input(&self, input: &Tensor<4>) -> Result<()> {
        self.check_input_shape(input)?;
        let finite = input
            .clone()
            .is_finite()
            .all()
            .try_into_scalar::<bool>()
            .map_err(LumenError::device)?;
        if !finite {
            return Err(LumenError::InvalidArgument(format!(
                "the input batch {:?} holds NaN or infinite values: inputs must be finite",
                input.dims()
            )));
        }
        Ok(())
    }
}

/// [`ExplainableModel::check_input`]'s shape rules.
fn check_shape<M: ExplainableModel + ?Sized>(model: &M, input: &Tensor<4>) -> Result<()> {
    let [_, c, h, w] = input.dims();
    let expected = model.input_shape();
    if let Some(side) = model.min_input_side() {
        if c != expected[0] || h < side || w < side {
            return Err(LumenError::shape(
                "model input",
                format!(
                    "[B,{},H,W] with H and W at least {side} (the network's stride; \
                     any size above it works)",
                    expected[0]
                ),
                format!("{:?}", input.dims()),
            ));
        }
        return Ok(());
    }
    if [c, h, w] != expected {
        return Err(LumenError::shape(
            "model input",
            format!("[B,{},{},{}]", expected[0], expected[1], expected[2]),
            format!("{:?}", input.dims()),
        ));
    }
    Ok(())
}

/// The raw outputs of a dense detector (FCOS), one tensor per pyramid level: what
/// detection targets and decoding read.
#[derive(Clone, Debug)]
pub struct DetectorOutput {
    /// Class logits `[B, classes, h, w]` per level (sigmoid scores, no background).
    pub classes: Vec<Tensor<4>>,
    /// Distances from each location's point to the box sides (left, top, right,
    /// bottom) in input pixels, `[B, 4, h, w]` per level.
    pub boxes: Vec<Tensor<4>>,
    /// Centerness logits `[B, 1, h, w]` per level.
    pub centerness: Vec<Tensor<4>>,
    /// Each level's stride in input pixels: location `(i, j)` sits at
    /// `((j + 0.5) s, (i + 0.5) s)`.
    pub strides: Vec<usize>,
    /// The input `[height, width]` boxes are clamped to.
    pub image_size: [usize; 2],
}

/// The names of a layer spec: one layer, or several separated by commas (CAMs then
/// average their per-layer maps, as pytorch-grad-cam does for a list of target layers).
pub fn layer_list(spec: &str) -> Vec<&str> {
    spec.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A classifier: an explainable model whose output is logits `[B, num_classes]`.
pub trait Classifier: ExplainableModel<Output = Tensor<2>> {
    /// Number of output classes.
    fn num_classes(&self) -> usize;
}

/// A layer's tensor as a `[B,C,h,w]` map: feature maps as they are, tokens with the
/// prefix tokens dropped and the patch tokens laid on their grid (the
/// `reshape_transform` pytorch-grad-cam documents for ViTs).
pub fn as_feature_map(t: TapTensor, kind: &LayerKind, layer: &str) -> Result<Tensor<4>> {
    let wrong = |found: &LayerKind| LumenError::WrongLayerKind {
        name: layer.to_string(),
        expected: "a feature map [B,C,H,W] or tokens [B,N,D]",
        found: found.to_string(),
    };
    match (t, kind) {
        (TapTensor::Rank4(t), LayerKind::FeatureMap) => Ok(t),
        (
            TapTensor::Rank3(t),
            LayerKind::Tokens {
                grid,
                prefix_tokens,
            },
        ) => Ok(tokens_to_map(t, *grid, *prefix_tokens)),
        (_, kind) => Err(wrong(kind)),
    }
}

/// `[B,N,D]` tokens to a `[B,D,gh,gw]` map, dropping `prefix` leading tokens.
pub fn tokens_to_map(tokens: Tensor<3>, grid: [usize; 2], prefix: usize) -> Tensor<4> {
    let [b, _, d] = tokens.dims();
    tokens
        .narrow(1, prefix, grid[0] * grid[1])
        .reshape([b, grid[0], grid[1], d])
        .permute([0, 3, 1, 2])
}
