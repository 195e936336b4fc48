//! ResNet as timm builds it (`timm.models.resnet`): plain or deep stem, BasicBlock or
//! Bottleneck per stage, strided-conv or average-pool downsampling. Parameter names
//! follow timm's state dict after the remapping in [`ResNetConfig::key_remaps`].

use crate::weights::{KeyRemap, remap};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use lumen_core::{
    Classifier, ConvOp, Device, ExplainableModel, LayerInfo, LayerKind, Prefixed, Tap,
};

/// Where dense models (segmentors, detectors) keep their ResNet: its state-dict keys
/// and layer names start with it.
pub const BACKBONE: &str = "backbone.";

/// The residual block of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (expansion 1).
    Basic,
    /// 1x1, 3x3, 1x1 convolutions (expansion 4).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// The stem before the first stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StemKind {
    /// One 7x7 stride-2 convolution to 64 channels (timm's default stem).
    Plain,
    /// Three 3x3 convolutions `3 -> w -> w -> 2w` (timm `stem_type='deep'`).
    Deep { width: usize },
}

/// The hyper-parameters of a timm ResNet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Block type per stage.
    pub blocks: [BlockKind; 4],
    /// Number of blocks per stage.
    pub layers: [usize; 4],
    /// Base channels per stage (before expansion).
    pub channels: [usize; 4],
    /// Stem type.
    pub stem: StemKind,
    /// Average-pool downsampling in shortcuts (timm `avg_down`, the "d" variants).
    pub avg_down: bool,
    /// Number of output classes; 0 builds the feature extractor alone (no `fc`, the
    /// output is the pooled features, as timm's `num_classes=0`).
    pub num_classes: usize,
}

impl ResNetConfig {
    /// A plain ResNet with one block type and 64-256-... channels.
    pub fn new(block: BlockKind, layers: [usize; 4]) -> Self {
        Self {
            blocks: [block; 4],
            layers,
            channels: [64, 128, 256, 512],
            stem: StemKind::Plain,
            avg_down: false,
            num_classes: 1000,
        }
    }

    /// The "d" variant: deep stem of width 32 and average-pool downsampling.
    pub fn d_variant(mut self) -> Self {
        self.stem = StemKind::Deep { width: 32 };
        self.avg_down = true;
        self
    }

    /// Set the number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Regex rewrites from timm's state-dict keys to this module's parameter paths:
    /// timm's `nn.Sequential` indices (with gaps for activations and pools) become names.
    pub fn key_remaps(&self) -> Vec<KeyRemap> {
        let mut remaps = vec![];
        if matches!(self.stem, StemKind::Deep { .. }) {
            remaps.extend([
                remap(r"^conv1\.0\.", "stem.conv_a."),
                remap(r"^conv1\.1\.", "stem.bn_a."),
                remap(r"^conv1\.3\.", "stem.conv_b."),
                remap(r"^conv1\.4\.", "stem.bn_b."),
                remap(r"^conv1\.6\.", "stem.conv_c."),
            ]);
        }
        if self.avg_down {
            remaps.extend([
                remap(r"\.downsample\.1\.", ".downsample.conv."),
                remap(r"\.downsample\.2\.", ".downsample.bn."),
            ]);
        } else {
            remaps.extend([
                remap(r"\.downsample\.0\.", ".downsample.conv."),
                remap(r"\.downsample\.1\.", ".downsample.bn."),
            ]);
        }
        remaps
    }

    /// [`Self::key_remaps`] for the backbone of a dense model, saved under `backbone.`
    /// (AutoTimm's segmentors and detectors), with `torch.compile`'s `_orig_mod.`
    /// dropped.
    pub fn backbone_key_remaps(&self) -> Vec<KeyRemap> {
        let mut remaps = vec![remap(r"^backbone\._orig_mod\.", BACKBONE)];
        remaps.extend(self.key_remaps().into_iter().map(|(from, to)| {
            // Anchored patterns move under `backbone.`.
            match from.strip_prefix('^') {
                Some(rest) => (format!(r"^backbone\.{rest}"), format!("{BACKBONE}{to}")),
                None => (from, to),
            }
        }));
        remaps
    }

    /// Build the model with freshly initialised parameters.
    pub fn init(&self, device: &Device) -> ResNet {
        let (conv1, stem, inplanes) = match self.stem {
            StemKind::Plain => (Some(conv(3, 64, 7, 2, device)), None, 64),
            StemKind::Deep { width } => (None, Some(DeepStem::new(width, device)), 2 * width),
        };
        let mut inplanes = inplanes;
        let mut stages: Vec<Vec<ResBlock>> = Vec::with_capacity(4);
        for stage in 0..4 {
            let stride = if stage == 0 { 1 } else { 2 };
            let kind = self.blocks[stage];
            let planes = self.channels[stage];
            let mut blocks = Vec::with_capacity(self.layers[stage]);
            for i in 0..self.layers[stage] {
                let block_stride = if i == 0 { stride } else { 1 };
                blocks.push(ResBlock::new(
                    kind,
                    inplanes,
                    planes,
                    block_stride,
                    self.avg_down,
                    device,
                ));
                inplanes = planes * kind.expansion();
            }
            stages.push(blocks);
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().expect("four stages");
        ResNet {
            conv1,
            stem,
            bn1: bn(inplanes_after_stem(self), device),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            fc: (self.num_classes > 0)
                .then(|| LinearConfig::new(inplanes, self.num_classes).init(device)),
            input_size: 224,
        }
    }
}

fn inplanes_after_stem(config: &ResNetConfig) -> usize {
    match config.stem {
        StemKind::Plain => 64,
        StemKind::Deep { width } => 2 * width,
    }
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            kernel / 2,
            kernel / 2,
            kernel / 2,
            kernel / 2,
        ))
        .with_bias(false)
        .init(device)
}

/// A convolution's geometry.
fn window(conv: &Conv2d) -> ConvOp {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, ..) => top,
        _ => 0,
    };
    ConvOp::new(
        conv.kernel_size[0],
        conv.stride[0],
        padding,
        conv.dilation[0],
    )
}

/// `bn(conv(x))`. Where BatchNorm normalises with its running statistics (its own
/// test: not a training layer on an autodiff input), the normalisation is folded into
/// the convolution for this call, `conv(x; w * s, b * s + t)` with
/// `s = gamma / sqrt(var + eps)` and `t = beta - mean * s`: a product over the weights
/// instead of BatchNorm's four passes over the activation, and none of their backward.
/// Folding per call, not once at load, keeps the parameters as they are, so whatever
/// changes them (the randomisation check, a user's edit) is seen by the next forward.
fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let training = x.device().is_autodiff() && bn.training.val().is_enabled();
    // Parameters that autodiff tracks (a frozen BatchNorm being fine-tuned) keep the
    // layers as written; so do paddings other than the symmetric ones built here.
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => Some(a),
        _ => None,
    };
    let (false, false, Some(padding)) =
        (training, conv.weight.val().device().is_autodiff(), padding)
    else {
        return bn.forward(conv.forward(x));
    };
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    let [out, ..] = conv.weight.dims();
    let weight = conv.weight.val() * scale.clone().reshape([out, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(bias) => bias.val() * scale + shift,
        None => shift,
    };
    let options = ConvOptions::new(conv.stride, [padding, padding], conv.dilation, conv.groups);
    conv2d(x, weight, Some(bias), options)
}

fn bn(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(1e-5)
        .init(device)
}

/// timm's deep stem: `conv1 = Sequential(conv, bn, relu, conv, bn, relu, conv)`.
#[derive(Module, Debug)]
pub struct DeepStem {
    conv_a: Conv2d,
    bn_a: BatchNorm,
    conv_b: Conv2d,
    bn_b: BatchNorm,
    conv_c: Conv2d,
}

impl DeepStem {
    fn new(width: usize, device: &Device) -> Self {
        Self {
            conv_a: conv(3, width, 3, 2, device),
            bn_a: bn(width, device),
            conv_b: conv(width, width, 3, 1, device),
            bn_b: bn(width, device),
            conv_c: conv(width, 2 * width, 3, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = relu(conv_bn(&self.conv_a, &self.bn_a, x));
        let x = relu(conv_bn(&self.conv_b, &self.bn_b, x));
        self.conv_c.forward(x)
    }
}

/// The shortcut projection: 1x1 convolution and BatchNorm, after a 2x2 average pool
/// when `avg_down` (timm `downsample_avg`), else with the stride in the convolution.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
    pool_stride: usize,
}

impl Downsample {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pool_stride > 1 {
            let s = self.pool_stride;
            avg_pool2d(
                x,
                AvgPoolOptions::new([2, 2])
                    .with_stride([s, s])
                    .with_ceil_mode(true)
                    .with_count_include_pad(false),
            )
        } else {
            x
        };
        conv_bn(&self.conv, &self.bn, x)
    }
}

/// A BasicBlock or Bottleneck, with timm's parameter names.
#[derive(Module, Debug)]
pub struct ResBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Option<Conv2d>,
    bn3: Option<BatchNorm>,
    downsample: Option<Downsample>,
}

impl ResBlock {
    fn new(
        kind: BlockKind,
        inplanes: usize,
        planes: usize,
        stride: usize,
        avg_down: bool,
        device: &Device,
    ) -> Self {
        let out = planes * kind.expansion();
        let downsample = (stride != 1 || inplanes != out).then(|| {
            if avg_down {
                Downsample {
                    conv: conv(inplanes, out, 1, 1, device),
                    bn: bn(out, device),
                    pool_stride: stride,
                }
            } else {
                Downsample {
                    conv: conv(inplanes, out, 1, stride, device),
                    bn: bn(out, device),
                    pool_stride: 1,
                }
            }
        });
        match kind {
            BlockKind::Basic => Self {
                conv1: conv(inplanes, planes, 3, stride, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: bn(planes, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => Self {
                conv1: conv(inplanes, planes, 1, 1, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: bn(planes, device),
                conv3: Some(conv(planes, out, 1, 1, device)),
                bn3: Some(bn(out, device)),
                downsample,
            },
        }
    }

    /// The block named `name` (`layer3.1`), its inner points tapped under timm's module
    /// names (`layer3.1.conv1`, `.bn1`, `.act1`, `.conv2`, `.bn2`, then a Bottleneck's
    /// `.act2`, `.conv3`, `.bn3`, then `.downsample`, and the output after the residual
    /// sum and ReLU as `.act2` of a BasicBlock or `.act3` of a Bottleneck), in timm's
    /// order of computation.
    fn forward_tapped(&self, x: Tensor<4>, tap: &dyn Tap, name: &str) -> Tensor<4> {
        let point = |sub: &str| format!("{name}.{sub}");
        let y = conv_bn_tapped(
            &self.conv1,
            &self.bn1,
            x.clone(),
            tap,
            [&point("conv1"), &point("bn1")],
        );
        let y = tap.visit(&point("act1"), relu(y));
        let y = conv_bn_tapped(
            &self.conv2,
            &self.bn2,
            y,
            tap,
            [&point("conv2"), &point("bn2")],
        );
        let (y, last) = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let y = tap.visit(&point("act2"), relu(y));
                let y = conv_bn_tapped(conv3, bn3, y, tap, [&point("conv3"), &point("bn3")]);
                (y, "act3")
            }
            _ => (y, "act2"),
        };
        let shortcut = match &self.downsample {
            Some(d) => tap.visit(&point("downsample"), d.forward(x)),
            None => x,
        };
        tap.visit(&point(last), relu(y + shortcut))
    }

    /// The names [`Self::forward_tapped`] visits under `name`, in its order.
    fn points(&self, name: &str) -> Vec<String> {
        let mut subs = vec!["conv1", "bn1", "act1", "conv2", "bn2"];
        if self.conv3.is_some() {
            subs.extend(["act2", "conv3", "bn3"]);
        }
        if self.downsample.is_some() {
            subs.push("downsample");
        }
        subs.push(if self.conv3.is_some() { "act3" } else { "act2" });
        subs.into_iter()
            .map(|sub| format!("{name}.{sub}"))
            .collect()
    }
}

/// [`conv_bn`], with the convolution's output (before the BatchNorm) and the
/// BatchNorm's passed through `tap` under `names`. The fused form never computes the
/// first: the layers run one after the other only when the tap observes it.
fn conv_bn_tapped(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    tap: &dyn Tap,
    [conv_name, bn_name]: [&str; 2],
) -> Tensor<4> {
    let y = if tap.observes(conv_name) {
        bn.forward(tap.visit(conv_name, conv.forward(x)))
    } else {
        conv_bn(conv, bn, x)
    };
    tap.visit(bn_name, y)
}

/// A timm ResNet.
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Option<Conv2d>,
    stem: Option<DeepStem>,
    bn1: BatchNorm,
    layer1: Vec<ResBlock>,
    layer2: Vec<ResBlock>,
    layer3: Vec<ResBlock>,
    layer4: Vec<ResBlock>,
    fc: Option<Linear>,
    input_size: usize,
}

impl ResNet {
    /// Set the square input size the model expects (any size works; this is what
    /// inputs are checked and preprocessed to).
    pub fn with_input_size(mut self, size: usize) -> Self {
        self.input_size = size;
        self
    }

    fn stages(&self) -> [(&'static str, &Vec<ResBlock>); 4] {
        [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ]
    }
}

impl ResNet {
    /// The outputs of the four stages (`layer1`..`layer4`, strides 4 to 32): timm's
    /// `features_only=True, out_indices=(1, 2, 3, 4)`, what dense heads read.
    pub fn stage_features(&self, input: Tensor<4>, tap: &dyn Tap) -> [Tensor<4>; 4] {
        let mut x = self.stem_forward(input, tap);
        let mut features = Vec::with_capacity(4);
        for (stage, blocks) in self.stages() {
            for (i, block) in blocks.iter().enumerate() {
                let name = format!("{stage}.{i}");
                x = tap.visit(&name, block.forward_tapped(x, tap, &name));
            }
            x = tap.visit(stage, x);
            features.push(x.clone());
        }
        features.try_into().expect("four stages")
    }

    /// Channels of the four stage outputs.
    pub fn stage_channels(&self) -> [usize; 4] {
        self.stages().map(|(_, blocks)| {
            let last = blocks.last().expect("a stage has blocks");
            let conv = last.conv3.as_ref().unwrap_or(&last.conv2);
            conv.weight.dims()[0]
        })
    }

    /// The stem: convolution(s), BatchNorm, ReLU, max pool.
    fn stem_forward(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<4> {
        let x = match (&self.conv1, &self.stem) {
            (Some(conv1), _) => conv1.forward(input),
            (None, Some(stem)) => stem.forward(input),
            (None, None) => unreachable!("a ResNet has a stem"),
        };
        let x = tap.visit("conv1", x);
        let x = tap.visit("act1", relu(self.bn1.forward(x)));
        let x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        tap.visit("maxpool", x)
    }

    /// [`Self::stage_features`] of a dense model's backbone: its layers reach `tap` as
    /// `backbone.*`.
    pub fn backbone_features(&self, input: Tensor<4>, tap: &dyn Tap) -> [Tensor<4>; 4] {
        let prefixed = Prefixed {
            prefix: BACKBONE,
            inner: tap,
        };
        self.stage_features(input, &prefixed)
    }

    /// [`Self::feature_layers`] named `backbone.*`.
    pub fn backbone_layers(&self) -> Vec<LayerInfo> {
        self.feature_layers()
            .into_iter()
            .map(|l| LayerInfo::new(format!("{BACKBONE}{}", l.name), l.kind))
            .collect()
    }

    /// [`Self::feature_window_ops`] named `backbone.*`.
    pub fn backbone_window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        self.feature_window_ops()
            .into_iter()
            .map(|(name, ops)| (format!("{BACKBONE}{name}"), ops))
            .collect()
    }

    /// The stem and stage layers, in forward order.
    pub fn feature_layers(&self) -> Vec<LayerInfo> {
        let mut layers = vec![
            LayerInfo::new("conv1", LayerKind::FeatureMap),
            LayerInfo::new("act1", LayerKind::FeatureMap),
            LayerInfo::new("maxpool", LayerKind::FeatureMap),
        ];
        for (stage, blocks) in self.stages() {
            for (i, block) in blocks.iter().enumerate() {
                let name = format!("{stage}.{i}");
                layers.extend(
                    block
                        .points(&name)
                        .into_iter()
                        .map(|point| LayerInfo::new(point, LayerKind::FeatureMap)),
                );
                layers.push(LayerInfo::new(name, LayerKind::FeatureMap));
            }
            layers.push(LayerInfo::new(stage, LayerKind::FeatureMap));
        }
        layers
    }
}

impl ExplainableModel for ResNet {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let [.., x] = self.stage_features(input, tap);
        let [b, c, _, _] = x.dims();
        let pooled = tap.visit("global_pool", x.mean_dims(&[2, 3]).reshape([b, c]));
        match &self.fc {
            Some(fc) => tap.visit("fc", fc.forward(pooled)),
            None => pooled,
        }
    }

    fn layers(&self) -> Vec<LayerInfo> {
        let mut layers = self.feature_layers();
        layers.push(LayerInfo::new("global_pool", LayerKind::Vector));
        if self.fc.is_some() {
            layers.push(LayerInfo::new("fc", LayerKind::Vector));
        }
        layers
    }

    fn default_layer(&self) -> String {
        "layer4".into()
    }

    fn window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        self.feature_window_ops()
    }

    fn input_shape(&self) -> [usize; 3] {
        [3, self.input_size, self.input_size]
    }

    /// Convolutions and global pooling take any size, as in timm; below the total
    /// stride the last stage would pool padding only.
    fn min_input_side(&self) -> Option<usize> {
        Some(
            self.feature_window_ops()
                .iter()
                .flat_map(|(_, ops)| ops.iter().map(|op| op.stride))
                .product(),
        )
    }
}

impl ResNet {
    /// [`ExplainableModel::window_ops`] of the stem and stages.
    pub fn feature_window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        let stem = match (&self.conv1, &self.stem) {
            (Some(conv1), _) => vec![window(conv1)],
            (_, Some(stem)) => [&stem.conv_a, &stem.conv_b, &stem.conv_c]
                .into_iter()
                .map(window)
                .collect(),
            (None, None) => vec![],
        };
        let mut ops = vec![
            ("conv1".to_string(), stem),
            ("act1".to_string(), vec![]),
            ("maxpool".to_string(), vec![ConvOp::new(3, 2, 1, 1)]),
        ];
        for (stage, blocks) in self.stages() {
            for (i, block) in blocks.iter().enumerate() {
                // The main branch, point by point: the shortcut's field is never
                // larger, and the `downsample` point beside it is left out (its field
                // is not on this path).
                let name = format!("{stage}.{i}");
                for point in block.points(&name) {
                    let conv = match point.rsplit('.').next() {
                        Some("conv1") => Some(&block.conv1),
                        Some("conv2") => Some(&block.conv2),
                        Some("conv3") => block.conv3.as_ref(),
                        Some("downsample") => continue,
                        _ => None,
                    };
                    ops.push((point, conv.map(window).into_iter().collect()));
                }
                ops.push((name, vec![]));
            }
            ops.push((stage.to_string(), vec![]));
        }
        ops
    }
}

impl Classifier for ResNet {
    /// The classes of `fc`; without one, the pooled feature size.
    fn num_classes(&self) -> usize {
        match &self.fc {
            Some(fc) => fc.weight.dims()[1],
            None => self.stage_channels()[3],
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// A 3x3 stride-2 convolution (with and without bias) and a BatchNorm with
    /// running statistics, scale and shift far from the identity.
    fn conv_and_bn(bias: bool, device: &Device) -> (Conv2d, BatchNorm) {
        let conv = Conv2dConfig::new([4, 6], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(bias)
            .init(device);
        let mut bn = bn(6, device).valid();
        let values = |v: [f32; 6]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [6]), device);
        bn.gamma = burn::module::Param::from_tensor(values([1.5, -0.5, 0.2, 2.0, 1.0, 0.7]));
        bn.beta = burn::module::Param::from_tensor(values([0.1, -1.0, 0.5, 0.0, 2.0, -0.3]));
        bn.running_mean = burn::module::RunningState::new(values([0.3, -0.2, 1.0, 0.0, -2.0, 0.5]));
        bn.running_var = burn::module::RunningState::new(values([0.5, 2.0, 0.01, 1.0, 4.0, 0.2]));
        (conv, bn)
    }

    /// The folded convolution gives BatchNorm's output and the same input gradient
    /// (relative 1e-5: only float rounding differs); a training layer on an autodiff
    /// input keeps batch statistics (it is not folded).
    #[test]
    fn folding_batch_norm_changes_neither_the_output_nor_the_input_gradient() {
        let device = Device::flex();
        for bias in [false, true] {
            let (conv, bn) = conv_and_bn(bias, &device);
            let x = Tensor::<4>::random([2, 4, 9, 9], Distribution::Normal(0.0, 1.0), &device);
            let folded = conv_bn(&conv, &bn, x.clone());
            let written = bn.forward(conv.forward(x.clone()));
            let scale = lumen_core::to_host(written.clone().abs().max())
                .unwrap()
                .remove(0);
            let diff = lumen_core::to_host((folded - written).abs().max())
                .unwrap()
                .remove(0);
            assert!(diff <= 1e-5 * scale, "bias {bias}: {diff} of {scale}");

            let gradient = |fold: bool| {
                let leaf = x.clone().autodiff().require_grad();
                let y = match fold {
                    true => conv_bn(&conv, &bn, leaf.clone()),
                    false => bn.forward(conv.forward(leaf.clone())),
                };
                let grads = (y.clone() * y).sum().backward();
                lumen_core::to_host(leaf.grad(&grads).expect("a gradient")).unwrap()
            };
            let (a, b) = (gradient(true), gradient(false));
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "bias {bias}: gradient {diff} of {scale}"
            );
        }
        // A layer in training on an autodiff input normalises with the batch's own
        // statistics: every output channel has mean beta (0 here).
        let (conv, _) = conv_and_bn(false, &device);
        let training = bn(6, &device);
        let x =
            Tensor::<4>::random([2, 4, 9, 9], Distribution::Normal(3.0, 1.0), &device).autodiff();
        let y = conv_bn(&conv, &training, x);
        let means = lumen_core::to_host(y.mean_dims(&[0, 2, 3]).abs().max())
            .unwrap()
            .remove(0);
        assert!(means < 1e-4, "batch statistics: channel means {means}");
    }
}
