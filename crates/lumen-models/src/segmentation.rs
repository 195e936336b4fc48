//! Semantic segmentation as AutoTimm's `SemanticSegmentor` builds it: a timm ResNet
//! feature extractor (`features_only`, stages 1-4) under a DeepLabV3+ head (ASPP on
//! stage 4, decoder with the projected stage 1) or an FCN head (one 3x3 block and a
//! classifier on stage 4). The logits come out at the head's stride (4 for DeepLabV3+,
//! 32 for FCN), not upsampled, as AutoTimm returns them. Parameter paths follow
//! AutoTimm's state dict (`backbone.*`, `head.*`) after [`SegmentorConfig::key_remaps`].

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};
use lumen_core::{ConvOp, Device, ExplainableModel, LayerInfo, LayerKind, LumenError, Result, Tap};

use crate::resnet::{ResNet, ResNetConfig};
use crate::weights::{KeyRemap, remap};

/// The dense head on top of the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentationHead {
    /// ASPP (rates 6, 12, 18, 256 channels) and a decoder with 48 low-level channels.
    DeepLabV3Plus,
    /// One 3x3 convolution to 512 channels, BatchNorm, ReLU, 1x1 classifier.
    Fcn,
}

impl SegmentationHead {
    /// AutoTimm's `head_type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::DeepLabV3Plus => "deeplabv3plus",
            Self::Fcn => "fcn",
        }
    }

    /// The stride of the logits relative to the input.
    pub fn output_stride(self) -> usize {
        match self {
            Self::DeepLabV3Plus => 4,
            Self::Fcn => 32,
        }
    }
}

/// A segmentor's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentorConfig {
    /// The backbone (its `num_classes` is ignored: features only).
    pub backbone: ResNetConfig,
    /// The head.
    pub head: SegmentationHead,
    /// Number of segmentation classes (background included).
    pub num_classes: usize,
    /// Width of the head: ASPP and decoder channels for DeepLabV3+ (AutoTimm: 256),
    /// the hidden 3x3 block for FCN (AutoTimm: 512).
    pub head_channels: usize,
    /// The layer CAMs use when none is named: the backbone's last stage, what the
    /// references' segmentation tutorials use.
    pub default_layer: String,
}

const ASPP_RATES: [usize; 3] = [6, 12, 18];
const LOW_LEVEL_CHANNELS: usize = 48;

impl SegmentorConfig {
    /// AutoTimm's head widths.
    pub fn new(backbone: ResNetConfig, head: SegmentationHead, num_classes: usize) -> Self {
        let head_channels = match head {
            SegmentationHead::DeepLabV3Plus => 256,
            SegmentationHead::Fcn => 512,
        };
        Self {
            backbone,
            head,
            num_classes,
            head_channels,
            default_layer: "backbone.layer4".into(),
        }
    }

    /// Regex rewrites from AutoTimm's state-dict keys to this module's paths: the
    /// `torch.compile` wrapper (`_orig_mod.`) dropped, the backbone's timm remaps under
    /// `backbone.`, the heads' `nn.Sequential` indices turned into names.
    pub fn key_remaps(&self) -> Vec<KeyRemap> {
        let mut remaps = vec![remap(r"^head\._orig_mod\.", "head.")];
        remaps.extend(self.backbone.backbone_key_remaps());
        let conv_bn = |prefix: &str, path: &str| {
            [
                (format!(r"^{prefix}\.0\."), format!("{path}.conv.")),
                (format!(r"^{prefix}\.1\."), format!("{path}.bn.")),
            ]
        };
        match self.head {
            SegmentationHead::Fcn => remaps.extend([
                remap(r"^head\.conv\.0\.", "head.conv."),
                remap(r"^head\.conv\.1\.", "head.bn."),
                remap(r"^head\.conv\.4\.", "head.classifier."),
            ]),
            SegmentationHead::DeepLabV3Plus => {
                remaps.extend([
                    remap(
                        r"^head\.aspp\.global_pool\.1\.",
                        "head.aspp.global_pool.conv.",
                    ),
                    remap(
                        r"^head\.aspp\.global_pool\.2\.",
                        "head.aspp.global_pool.bn.",
                    ),
                    remap(r"^head\.decoder\.0\.", "head.decoder_a.conv."),
                    remap(r"^head\.decoder\.1\.", "head.decoder_a.bn."),
                    remap(r"^head\.decoder\.3\.", "head.decoder_b.conv."),
                    remap(r"^head\.decoder\.4\.", "head.decoder_b.bn."),
                ]);
                remaps.extend(conv_bn(r"head\.aspp\.conv1x1", "head.aspp.conv1x1"));
                remaps.extend(conv_bn(r"head\.aspp\.project", "head.aspp.project"));
                remaps.extend(conv_bn(
                    r"head\.low_level_projection",
                    "head.low_level_projection",
                ));
                for i in 0..ASPP_RATES.len() {
                    remaps.extend(conv_bn(
                        &format!(r"head\.aspp\.atrous_convs\.{i}"),
                        &format!("head.aspp.atrous_convs.{i}"),
                    ));
                }
            }
        }
        remaps
    }

    /// Build the model with freshly initialised parameters, for `input_size` inputs.
    pub fn init(&self, input_size: usize, device: &Device) -> Result<Segmentor> {
        if self.num_classes == 0 || self.head_channels == 0 {
            return Err(LumenError::InvalidArgument(
                "a segmentor needs at least 1 class and 1 head channel".into(),
            ));
        }
        let width = self.head_channels;
        if input_size == 0 || !input_size.is_multiple_of(32) {
            return Err(LumenError::InvalidArgument(format!(
                "a segmentor's input size must be a positive multiple of 32 (got {input_size})"
            )));
        }
        let backbone = ResNetConfig {
            num_classes: 0,
            ..self.backbone.clone()
        }
        .init(device)
        .with_input_size(input_size);
        let [low, _, _, high] = backbone.stage_channels();
        let classifier = conv(width, self.num_classes, 1, 1, true, device);
        let head = match self.head {
            SegmentationHead::Fcn => Head {
                aspp: None,
                low_level_projection: None,
                decoder_a: None,
                decoder_b: None,
                conv: Some(conv(high, width, 3, 1, false, device)),
                bn: Some(bn(width, device)),
                classifier,
            },
            SegmentationHead::DeepLabV3Plus => Head {
                aspp: Some(Aspp {
                    conv1x1: ConvBn::new(high, width, 1, 1, device),
                    atrous_convs: ASPP_RATES
                        .iter()
                        .map(|&rate| ConvBn::new(high, width, 3, rate, device))
                        .collect(),
                    global_pool: ConvBn::new(high, width, 1, 1, device),
                    project: ConvBn::new(width * (ASPP_RATES.len() + 2), width, 1, 1, device),
                }),
                low_level_projection: Some(ConvBn::new(low, LOW_LEVEL_CHANNELS, 1, 1, device)),
                decoder_a: Some(ConvBn::new(width + LOW_LEVEL_CHANNELS, width, 3, 1, device)),
                decoder_b: Some(ConvBn::new(width, width, 3, 1, device)),
                conv: None,
                bn: None,
                classifier,
            },
        };
        Ok(Segmentor {
            backbone,
            head,
            num_classes: self.num_classes,
            default_layer: self.default_layer.clone(),
        })
    }
}

fn conv(
    input: usize,
    output: usize,
    kernel: usize,
    dilation: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    let pad = dilation * (kernel / 2);
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_dilation([dilation, dilation])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init(device)
}

fn bn(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(1e-5)
        .init(device)
}

/// Convolution (no bias), BatchNorm, ReLU: every block of AutoTimm's heads.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(input: usize, output: usize, kernel: usize, dilation: usize, device: &Device) -> Self {
        Self {
            conv: conv(input, output, kernel, dilation, false, device),
            bn: bn(output, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// Atrous spatial pyramid pooling.
#[derive(Module, Debug)]
pub struct Aspp {
    conv1x1: ConvBn,
    atrous_convs: Vec<ConvBn>,
    global_pool: ConvBn,
    project: ConvBn,
}

impl Aspp {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let mut branches = vec![self.conv1x1.forward(x.clone())];
        branches.extend(self.atrous_convs.iter().map(|c| c.forward(x.clone())));
        // Bilinear upsampling of a 1x1 map is the map repeated: expand it.
        let pooled = self.global_pool.forward(x.mean_dims(&[2, 3]));
        let [_, channels, _, _] = pooled.dims();
        branches.push(pooled.expand([b, channels, h, w]));
        // Dropout(0.5) after the projection is the identity in evaluation.
        self.project.forward(Tensor::cat(branches, 1))
    }
}

/// The head of a [`Segmentor`]: DeepLabV3+ (ASPP on stage 4, upsampled onto the
/// projected stage 1, two 3x3 blocks) or FCN (one 3x3 block on stage 4). One struct
/// with the parts each has, so that parameter paths are AutoTimm's (`head.aspp.*`)
/// rather than carrying an enum variant's name.
#[derive(Module, Debug)]
pub struct Head {
    aspp: Option<Aspp>,
    low_level_projection: Option<ConvBn>,
    decoder_a: Option<ConvBn>,
    decoder_b: Option<ConvBn>,
    conv: Option<Conv2d>,
    bn: Option<BatchNorm>,
    classifier: Conv2d,
}

/// A semantic segmentor: logits `[B, classes, H/s, W/s]`.
#[derive(Module, Debug)]
pub struct Segmentor {
    backbone: ResNet,
    head: Head,
    num_classes: usize,
    default_layer: String,
}

/// Bilinear resize with `align_corners = false`, as `F.interpolate` in AutoTimm, as two
/// matrix products (rows, then columns). Burn's cubecl backends (wgpu, cuda) have no
/// backward for bilinear `interpolate` and panic in it, and the gradient methods go
/// back through this resize: matrix products differentiate on every backend.
fn resize(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [out_h, out_w] = size;
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    let matrix = |from: usize, to: usize| {
        // [from, to]: column j holds the weights of output j.
        Tensor::<2>::from_data(
            TensorData::new(bilinear_weights(from, to), [to, from]),
            &device,
        )
        .transpose()
    };
    let columns = x
        .reshape([b * c * h, w])
        .matmul(matrix(w, out_w))
        .reshape([b * c, h, out_w])
        .swap_dims(1, 2)
        .reshape([b * c * out_w, h]);
    columns
        .matmul(matrix(h, out_h))
        .reshape([b * c, out_w, out_h])
        .swap_dims(1, 2)
        .reshape([b, c, out_h, out_w])
}

/// PyTorch's bilinear weights along one axis (`align_corners = false`, size given):
/// `[to, from]`, row `j` the weights of output `j` (source `(j + 0.5) from / to - 0.5`,
/// clamped at 0; its two neighbours, the upper one clamped to the last index).
fn bilinear_weights(from: usize, to: usize) -> Vec<f32> {
    let scale = from as f32 / to as f32;
    let mut weights = vec![0.0; to * from];
    for j in 0..to {
        let source = ((j as f32 + 0.5) * scale - 0.5).max(0.0);
        let low = (source as usize).min(from - 1);
        let high = (low + 1).min(from - 1);
        let upper = source - low as f32;
        weights[j * from + low] += 1.0 - upper;
        weights[j * from + high] += upper;
    }
    weights
}

impl Segmentor {
    /// Which head it has.
    pub fn head_kind(&self) -> SegmentationHead {
        if self.head.aspp.is_some() {
            SegmentationHead::DeepLabV3Plus
        } else {
            SegmentationHead::Fcn
        }
    }

    /// Number of segmentation classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The stride of the logits.
    pub fn output_stride(&self) -> usize {
        self.head_kind().output_stride()
    }

    fn head_layers(&self) -> &'static [&'static str] {
        match self.head_kind() {
            SegmentationHead::DeepLabV3Plus => &[
                "head.aspp",
                "head.low_level_projection",
                "head.decoder",
                "head.classifier",
            ],
            SegmentationHead::Fcn => &["head.conv", "head.classifier"],
        }
    }
}

impl ExplainableModel for Segmentor {
    type Output = Tensor<4>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<4> {
        let [low, _, _, high] = self.backbone.backbone_features(input, tap);
        let head = &self.head;
        let x = match (
            &head.aspp,
            &head.low_level_projection,
            &head.decoder_a,
            &head.decoder_b,
        ) {
            (Some(aspp), Some(projection), Some(decoder_a), Some(decoder_b)) => {
                let x = tap.visit("head.aspp", aspp.forward(high));
                let [_, _, h, w] = low.dims();
                let x = resize(x, [h, w]);
                let low = tap.visit("head.low_level_projection", projection.forward(low));
                let x = decoder_b.forward(decoder_a.forward(Tensor::cat(vec![x, low], 1)));
                tap.visit("head.decoder", x)
            }
            _ => {
                let (conv, bn) = head
                    .conv
                    .as_ref()
                    .zip(head.bn.as_ref())
                    .expect("an FCN head has its 3x3 block");
                // Dropout(0.1) is the identity in evaluation.
                tap.visit("head.conv", relu(bn.forward(conv.forward(high))))
            }
        };
        tap.visit("head.classifier", head.classifier.forward(x))
    }

    fn layers(&self) -> Vec<LayerInfo> {
        let mut layers = self.backbone.backbone_layers();
        layers.extend(
            self.head_layers()
                .iter()
                .map(|name| LayerInfo::new(*name, LayerKind::FeatureMap)),
        );
        layers
    }

    /// Stage 4 of the backbone: the semantic layer the references' segmentation
    /// tutorials explain.
    fn default_layer(&self) -> String {
        self.default_layer.clone()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.backbone.input_shape()
    }

    fn window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        self.backbone.backbone_window_ops()
    }
}

#[cfg(test)]
mod resize_tests {
    use super::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    /// The matrix form gives what Burn's bilinear `interpolate` gives (whose parity with
    /// PyTorch the segmentation fixtures check), up and down, at integer and other
    /// ratios; and a gradient flows back through it.
    #[test]
    fn matrix_resize_is_bilinear_interpolation_and_differentiates() {
        let device = Device::flex();
        let values: Vec<f32> = (0..2 * 3 * 5 * 7)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 5, 7]), &device);
        for size in [[20, 28], [13, 9], [3, 4], [5, 7], [1, 1]] {
            let ours = lumen_core::to_host(resize(x.clone(), size)).unwrap();
            let burn = lumen_core::to_host(interpolate(
                x.clone(),
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size(size),
            ))
            .unwrap();
            let diff = ours
                .iter()
                .zip(&burn)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-5, "{size:?}: {diff}");
        }
        // Each output is a convex combination: the weights of every output sum to 1.
        for (from, to) in [(5, 20), (7, 3), (1, 4)] {
            for row in bilinear_weights(from, to).chunks(from) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
        let device = device.autodiff();
        let leaf = Tensor::<4>::from_data(x.to_data(), &device).require_grad();
        let grads = resize(leaf.clone(), [20, 28]).sum().backward();
        // Every input pixel feeds the outputs with total weight (20 x 28) / (5 x 7) = 16,
        // spread unevenly at the borders; the sum over all of them is exact.
        let gradient = lumen_core::to_host(leaf.grad(&grads).unwrap()).unwrap();
        let total: f32 = gradient.iter().sum();
        assert!((total - 2.0 * 3.0 * 20.0 * 28.0).abs() < 1e-2, "{total}");
    }
}
