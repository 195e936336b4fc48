//! The FCOS detector as AutoTimm's `ObjectDetector(detection_arch="fcos")` builds it:
//! a timm ResNet feature extractor (stages 2-4, strides 8-32), an FPN (1x1 laterals,
//! nearest top-down fusion, 3x3 outputs, P6 and P7 from P5 through ReLU'd stride-2
//! convolutions) and the FCOS head (classification and regression towers of 3x3
//! convolution + GroupNorm(32) + ReLU shared across levels; class logits, per-level
//! scaled ReLU'd ltrb distances and centerness from the regression tower). The forward
//! returns the raw per-level outputs; decoding and NMS come after.
//! Parameter paths follow AutoTimm's state dict (`backbone.*`, `fpn.*`, `head.*`)
//! after [`DetectorConfig::key_remaps`].

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
pub use lumen_core::DetectorOutput;
use lumen_core::{ConvOp, Device, ExplainableModel, LayerInfo, LayerKind, LumenError, Result, Tap};

use crate::resnet::{ResNet, ResNetConfig};
use crate::weights::{KeyRemap, remap};

/// The FPN levels' names and strides.
pub const LEVELS: [(&str, usize); 5] = [("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64), ("p7", 128)];

/// A detector's hyper-parameters (AutoTimm's `fpn_channels`, `head_num_convs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// The backbone (its `num_classes` is ignored).
    pub backbone: ResNetConfig,
    /// Object classes (no background class: sigmoid scores).
    pub num_classes: usize,
    /// FPN and head width (AutoTimm: 256); a multiple of 32 (GroupNorm groups).
    pub fpn_channels: usize,
    /// Convolutions per head tower (AutoTimm: 4).
    pub head_convs: usize,
    /// The layer CAMs use when none is named: the backbone's last stage, which feeds
    /// every FPN level.
    pub default_layer: String,
}

impl DetectorConfig {
    /// AutoTimm's defaults: 256 channels, 4 convolutions per tower.
    pub fn new(backbone: ResNetConfig, num_classes: usize) -> Self {
        Self {
            backbone,
            num_classes,
            fpn_channels: 256,
            head_convs: 4,
            default_layer: "backbone.layer4".into(),
        }
    }

    /// Regex rewrites from AutoTimm's keys: `_orig_mod.` dropped, the backbone's timm
    /// remaps under `backbone.`, the towers' `nn.Sequential` indices (conv, norm, relu)
    /// turned into names.
    pub fn key_remaps(&self) -> Vec<KeyRemap> {
        let mut remaps = vec![
            remap(r"^fpn\._orig_mod\.", "fpn."),
            remap(r"^head\._orig_mod\.", "head."),
        ];
        remaps.extend(self.backbone.backbone_key_remaps());
        for tower in ["cls_convs", "reg_convs"] {
            for i in 0..self.head_convs {
                remaps.push((
                    format!(r"^head\.{tower}\.{}\.", 3 * i),
                    format!("head.{tower}.{i}.conv."),
                ));
                remaps.push((
                    format!(r"^head\.{tower}\.{}\.", 3 * i + 1),
                    format!("head.{tower}.{i}.norm."),
                ));
            }
        }
        remaps
    }

    /// The state-dict keys of the per-level scales (after remapping).
    pub fn scale_keys(&self) -> Vec<String> {
        (0..LEVELS.len())
            .map(|i| format!("head.scales.{i}.scale"))
            .collect()
    }

    /// Build the model with freshly initialised parameters for `input_size` inputs.
    pub fn init(&self, input_size: usize, device: &Device) -> Result<Detector> {
        if self.num_classes == 0 || self.head_convs == 0 || self.fpn_channels == 0 {
            return Err(LumenError::InvalidArgument(
                "a detector needs at least 1 class, 1 head convolution and 32 FPN channels".into(),
            ));
        }
        if !self.fpn_channels.is_multiple_of(32) {
            return Err(LumenError::InvalidArgument(format!(
                "FPN channels must be a multiple of 32 (GroupNorm's 32 groups), got {}",
                self.fpn_channels
            )));
        }
        if input_size == 0 || !input_size.is_multiple_of(128) {
            return Err(LumenError::InvalidArgument(format!(
                "a detector's input size must be a positive multiple of 128 (P7's stride), got {input_size}"
            )));
        }
        let backbone = ResNetConfig {
            num_classes: 0,
            ..self.backbone.clone()
        }
        .init(device)
        .with_input_size(input_size);
        let width = self.fpn_channels;
        let [_, c3, c4, c5] = backbone.stage_channels();
        let fpn = Fpn {
            lateral_convs: [c3, c4, c5]
                .iter()
                .map(|&c| conv(c, width, 1, 1, device))
                .collect(),
            output_convs: (0..3).map(|_| conv(width, width, 3, 1, device)).collect(),
            extra_convs: (0..2).map(|_| conv(width, width, 3, 2, device)).collect(),
        };
        let tower = || {
            (0..self.head_convs)
                .map(|_| ConvNorm {
                    conv: conv(width, width, 3, 1, device),
                    norm: GroupNormConfig::new(32, width)
                        .with_epsilon(1e-5)
                        .init(device),
                })
                .collect()
        };
        let head = FcosHead {
            cls_convs: tower(),
            reg_convs: tower(),
            cls_pred: conv(width, self.num_classes, 3, 1, device),
            reg_pred: conv(width, 4, 3, 1, device),
            centerness_pred: conv(width, 1, 3, 1, device),
            scales: vec![1.0; LEVELS.len()],
        };
        Ok(Detector {
            backbone,
            fpn,
            head,
            num_classes: self.num_classes,
            default_layer: self.default_layer.clone(),
        })
    }
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

/// The feature pyramid.
#[derive(Module, Debug)]
pub struct Fpn {
    lateral_convs: Vec<Conv2d>,
    output_convs: Vec<Conv2d>,
    extra_convs: Vec<Conv2d>,
}

impl Fpn {
    fn forward(&self, features: [Tensor<4>; 3]) -> Vec<Tensor<4>> {
        let mut laterals: Vec<Tensor<4>> = self
            .lateral_convs
            .iter()
            .zip(features)
            .map(|(conv, f)| conv.forward(f))
            .collect();
        for i in (1..laterals.len()).rev() {
            let [_, _, h, w] = laterals[i - 1].dims();
            let up = interpolate(
                laterals[i].clone(),
                InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]),
            );
            laterals[i - 1] = laterals[i - 1].clone() + up;
        }
        let mut outputs: Vec<Tensor<4>> = self
            .output_convs
            .iter()
            .zip(laterals)
            .map(|(conv, l)| conv.forward(l))
            .collect();
        let mut last = outputs.last().expect("three levels").clone();
        for conv in &self.extra_convs {
            last = relu(conv.forward(last));
            outputs.push(last.clone());
        }
        outputs
    }
}

/// Convolution, GroupNorm, ReLU: one step of a head tower.
#[derive(Module, Debug)]
pub struct ConvNorm {
    conv: Conv2d,
    norm: GroupNorm,
}

/// The FCOS head, shared across levels.
#[derive(Module, Debug)]
pub struct FcosHead {
    cls_convs: Vec<ConvNorm>,
    reg_convs: Vec<ConvNorm>,
    cls_pred: Conv2d,
    reg_pred: Conv2d,
    centerness_pred: Conv2d,
    /// The per-level regression scales. Plain numbers: PyTorch stores them as rank-0
    /// tensors, which Burn parameters cannot be, so they are read on the side
    /// ([`Detector::set_scales`]) and are not trained by Burn.
    scales: Vec<f32>,
}

fn tower(steps: &[ConvNorm], x: Tensor<4>) -> Tensor<4> {
    steps
        .iter()
        .fold(x, |x, s| relu(s.norm.forward(s.conv.forward(x))))
}

/// An FCOS detector.
#[derive(Module, Debug)]
pub struct Detector {
    backbone: ResNet,
    fpn: Fpn,
    head: FcosHead,
    num_classes: usize,
    default_layer: String,
}

impl Detector {
    /// Set the per-level regression scales (P3..P7).
    pub fn set_scales(&mut self, scales: &[f32]) -> Result<()> {
        if scales.len() != LEVELS.len() || scales.iter().any(|s| !s.is_finite()) {
            return Err(LumenError::InvalidArgument(format!(
                "a detector has {} finite level scales, got {scales:?}",
                LEVELS.len()
            )));
        }
        self.head.scales = scales.to_vec();
        Ok(())
    }

    /// Number of object classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
}

impl ExplainableModel for Detector {
    type Output = DetectorOutput;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> DetectorOutput {
        let [_, _, height, width] = input.dims();
        let [_, c3, c4, c5] = self.backbone.backbone_features(input, tap);
        let levels = self.fpn.forward([c3, c4, c5]);
        let mut out = DetectorOutput {
            classes: vec![],
            boxes: vec![],
            centerness: vec![],
            strides: LEVELS.iter().map(|(_, s)| *s).collect(),
            image_size: [height, width],
        };
        for (i, (level, (name, _))) in levels.into_iter().zip(LEVELS).enumerate() {
            let level = tap.visit(&format!("fpn.{name}"), level);
            let cls = tower(&self.head.cls_convs, level.clone());
            let reg = tower(&self.head.reg_convs, level);
            out.classes.push(self.head.cls_pred.forward(cls));
            let scale = self.head.scales[i];
            out.boxes
                .push(relu(self.head.reg_pred.forward(reg.clone()) * scale));
            out.centerness.push(self.head.centerness_pred.forward(reg));
        }
        out
    }

    fn layers(&self) -> Vec<LayerInfo> {
        let mut layers = self.backbone.backbone_layers();
        layers.extend(
            LEVELS
                .iter()
                .map(|(name, _)| LayerInfo::new(format!("fpn.{name}"), LayerKind::FeatureMap)),
        );
        layers
    }

    /// Stage 4 of the backbone, as pytorch-grad-cam's detection tutorial explains
    /// (`model.backbone`).
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
