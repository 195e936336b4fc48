//! Model zoo for Lumen: Burn implementations of timm's ResNet and Vision Transformer
//! that load timm state dicts unchanged and expose every named layer through
//! [`lumen_core::Tap`].
//!
//! Depends on `lumen-core` and `burn` (with burn-store for weight files) only.

pub mod detection;
pub mod resnet;
pub mod segmentation;
pub mod shapes;
pub mod vit;
pub mod weights;

use std::path::Path;

use burn::tensor::Tensor;
use lumen_core::input::{DataConfig, IMAGENET_MEAN, IMAGENET_STD, Interpolation};
use lumen_core::{Classifier, Device, ExplainableModel, LayerInfo, LumenError, Result, Tap};

pub use detection::{Detector, DetectorConfig, DetectorOutput};
pub use resnet::{BlockKind, ResNet, ResNetConfig, StemKind};
pub use segmentation::{SegmentationHead, Segmentor, SegmentorConfig};
pub use vit::{VisionTransformer, VitConfig};
pub use weights::load_state_dict;

/// Architecture names the zoo builds, with timm's names.
pub const ARCHITECTURES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet18d",
    "resnet34d",
    "resnet50d",
    "resnet101d",
    "test_resnet",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "test_vit",
    "shapes-cnn",
    "shapes-vit",
];

/// Architectures whose trained weights ship inside the library.
pub const BUNDLED: &[&str] = &["shapes-cnn", "shapes-vit", "shapes-seg", "shapes-det"];

#[cfg(lumen_bundled_cnn)]
const SHAPES_CNN_WEIGHTS: Option<&[u8]> = Some(include_bytes!("../weights/shapes-cnn.safetensors"));
#[cfg(not(lumen_bundled_cnn))]
const SHAPES_CNN_WEIGHTS: Option<&[u8]> = None;
#[cfg(lumen_bundled_vit)]
const SHAPES_VIT_WEIGHTS: Option<&[u8]> = Some(include_bytes!("../weights/shapes-vit.safetensors"));
#[cfg(not(lumen_bundled_vit))]
const SHAPES_VIT_WEIGHTS: Option<&[u8]> = None;
#[cfg(lumen_bundled_seg)]
const SHAPES_SEG_WEIGHTS: Option<&[u8]> = Some(include_bytes!("../weights/shapes-seg.safetensors"));
#[cfg(not(lumen_bundled_seg))]
const SHAPES_SEG_WEIGHTS: Option<&[u8]> = None;
/// An AutoTimm state dict (PyTorch names), trained by `tools/train/shapes_det.py`.
#[cfg(lumen_bundled_det)]
const SHAPES_DET_WEIGHTS: Option<&[u8]> = Some(include_bytes!("../weights/shapes-det.safetensors"));
#[cfg(not(lumen_bundled_det))]
const SHAPES_DET_WEIGHTS: Option<&[u8]> = None;

/// Owned class names of a bundled model.
fn class_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The classes of a bundled model (`shapes-*`), which its weights were trained for:
/// the embedded ones, or a retrained file (`train_shapes --out FILE`, then `--weights`).
pub fn bundled_classes(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "shapes-cnn" | "shapes-vit" | "shapes-det" => Some(&shapes::SHAPE_CLASSES),
        "shapes-seg" => Some(&shapes::SCENE_CLASSES),
        _ => None,
    }
}

/// A class count given for a bundled model must be the one it is built for.
pub fn check_bundled_classes(name: &str, num_classes: usize) -> Result<()> {
    match bundled_classes(name) {
        Some(classes) if classes.len() != num_classes => Err(LumenError::InvalidArgument(format!(
            "`{name}` has {} classes ({}), not {num_classes}: its weights, bundled or \
                 retrained on the shapes data, are built for these",
            classes.len(),
            classes.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// How to make missing bundled weights.
fn no_bundled_weights(name: &str) -> LumenError {
    LumenError::InvalidArgument(format!(
        "this build has no weights for `{name}`: run `cargo run --release -p lumen-examples --example train_shapes` and rebuild"
    ))
}

/// The configuration of a zoo architecture.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    /// A timm ResNet.
    ResNet(ResNetConfig),
    /// A timm Vision Transformer.
    Vit(VitConfig),
}

/// timm's evaluation data config for each architecture (`pretrained_cfg`).
fn data_config(
    size: usize,
    interpolation: Interpolation,
    crop_pct: f32,
    inception: bool,
) -> DataConfig {
    let (mean, std) = if inception {
        ([0.5; 3], [0.5; 3])
    } else {
        (IMAGENET_MEAN, IMAGENET_STD)
    };
    DataConfig {
        input_size: [3, size, size],
        interpolation,
        crop_pct,
        mean,
        std,
    }
}

/// The shapes images are used at their size: no resize or crop, mean/std 0.5.
fn shapes_data_config() -> DataConfig {
    let size = shapes::SHAPE_IMAGE_SIZE as usize;
    DataConfig {
        input_size: [3, size, size],
        interpolation: Interpolation::Bilinear,
        crop_pct: 1.0,
        mean: [0.5; 3],
        std: [0.5; 3],
    }
}

impl Architecture {
    /// Look up an architecture by timm name with a number of classes.
    pub fn from_name(name: &str, num_classes: usize) -> Result<(Self, DataConfig)> {
        use BlockKind::{Basic, Bottleneck};
        let bicubic = Interpolation::Bicubic;
        let resnet = |block, layers, d: bool, crop| {
            let config = ResNetConfig::new(block, layers).with_num_classes(num_classes);
            let config = if d { config.d_variant() } else { config };
            (Self::ResNet(config), data_config(224, bicubic, crop, false))
        };
        let vit = |dim, heads| {
            let config = VitConfig::new(dim, 12, heads).with_num_classes(num_classes);
            (Self::Vit(config), data_config(224, bicubic, 0.9, true))
        };
        if num_classes == 0 {
            return Err(LumenError::InvalidArgument(
                "the number of classes must be at least 1".into(),
            ));
        }
        Ok(match name {
            "resnet18" => resnet(Basic, [2, 2, 2, 2], false, 0.95),
            "resnet34" => resnet(Basic, [3, 4, 6, 3], false, 0.95),
            "resnet50" => resnet(Bottleneck, [3, 4, 6, 3], false, 0.95),
            "resnet101" => resnet(Bottleneck, [3, 4, 23, 3], false, 0.95),
            "resnet18d" => resnet(Basic, [2, 2, 2, 2], true, 0.875),
            "resnet34d" => resnet(Basic, [3, 4, 6, 3], true, 0.875),
            "resnet50d" => resnet(Bottleneck, [3, 4, 6, 3], true, 0.875),
            "resnet101d" => resnet(Bottleneck, [3, 4, 23, 3], true, 0.875),
            "test_resnet" => (
                Self::ResNet(ResNetConfig {
                    blocks: [Basic, Basic, Bottleneck, Basic],
                    layers: [1, 1, 1, 1],
                    channels: [32, 48, 48, 96],
                    stem: StemKind::Deep { width: 16 },
                    avg_down: true,
                    num_classes,
                }),
                data_config(160, Interpolation::Bilinear, 0.95, true),
            ),
            "vit_tiny_patch16_224" => vit(192, 3),
            "vit_small_patch16_224" => vit(384, 6),
            "vit_base_patch16_224" => vit(768, 12),
            "test_vit" => (
                Self::Vit(VitConfig {
                    img_size: 160,
                    patch_size: 16,
                    embed_dim: 64,
                    depth: 6,
                    num_heads: 2,
                    mlp_ratio: 3.0,
                    num_classes,
                }),
                data_config(160, bicubic, 0.95, true),
            ),
            "shapes-cnn" => (
                Self::ResNet(ResNetConfig {
                    blocks: [Basic; 4],
                    layers: [1, 1, 1, 1],
                    channels: [16, 32, 64, 128],
                    stem: StemKind::Deep { width: 8 },
                    avg_down: true,
                    num_classes,
                }),
                shapes_data_config(),
            ),
            "shapes-vit" => (
                Self::Vit(VitConfig {
                    img_size: shapes::SHAPE_IMAGE_SIZE as usize,
                    patch_size: 8,
                    embed_dim: 64,
                    depth: 4,
                    num_heads: 4,
                    mlp_ratio: 2.0,
                    num_classes,
                }),
                shapes_data_config(),
            ),
            _ => {
                return Err(LumenError::UnknownModel {
                    name: name.to_string(),
                    valid: ARCHITECTURES.iter().map(|s| s.to_string()).collect(),
                });
            }
        })
    }
}

/// Whether this build embeds trained weights for a bundled model.
pub fn bundled_weights_present(name: &str) -> bool {
    bundled_weights(name).is_some()
}

/// The embedded weights of a bundled model (Burn safetensors), when this build has
/// them: what a cache key of its explanations covers.
pub fn bundled_weights(name: &str) -> Option<&'static [u8]> {
    match name {
        "shapes-cnn" => SHAPES_CNN_WEIGHTS,
        "shapes-vit" => SHAPES_VIT_WEIGHTS,
        "shapes-seg" => SHAPES_SEG_WEIGHTS,
        "shapes-det" => SHAPES_DET_WEIGHTS,
        _ => None,
    }
}

/// A model from the zoo.
#[derive(Debug)]
pub enum ZooModel {
    /// A ResNet.
    ResNet(Box<ResNet>),
    /// A Vision Transformer.
    Vit(Box<VisionTransformer>),
}

/// A zoo model with its name and data config.
#[derive(Debug)]
pub struct LoadedModel {
    /// timm architecture name.
    pub name: String,
    /// The model, in evaluation mode (`valid()`): BatchNorm uses running statistics
    /// and parameters are not tracked by autodiff.
    pub model: ZooModel,
    /// Preprocessing the model expects.
    pub data_config: DataConfig,
    /// Class names, when known.
    pub class_names: Option<Vec<String>>,
    /// The device the weights live on (inputs go there too).
    pub device: Device,
}

impl LoadedModel {
    /// Build an architecture with random weights (for tests and training).
    pub fn init(name: &str, num_classes: usize, device: &Device) -> Result<Self> {
        let (arch, data_config) = Architecture::from_name(name, num_classes)?;
        let size = data_config.input_size[1];
        let model = match arch {
            Architecture::ResNet(config) => {
                ZooModel::ResNet(Box::new(config.init(device).with_input_size(size)))
            }
            Architecture::Vit(config) => ZooModel::Vit(Box::new(config.init(device))),
        };
        Ok(Self {
            name: name.to_string(),
            model,
            data_config,
            class_names: None,
            device: device.clone(),
        })
    }

    /// A bundled model (`shapes-cnn`, `shapes-vit`) with its trained weights, in
    /// evaluation mode.
    pub fn bundled(name: &str, device: &Device) -> Result<Self> {
        let bytes = match name {
            "shapes-cnn" => SHAPES_CNN_WEIGHTS,
            "shapes-vit" => SHAPES_VIT_WEIGHTS,
            other => {
                return Err(LumenError::InvalidArgument(format!(
                    "`{other}` has no bundled weights (bundled: {}); load it with its weights file",
                    BUNDLED.join(", ")
                )));
            }
        }
        .ok_or_else(|| no_bundled_weights(name))?;
        let path = std::path::PathBuf::from(format!("<bundled {name}>"));
        Self::shapes_model(name, device, |model| match model {
            ZooModel::ResNet(model) => weights::load_burn_bytes(model.as_mut(), bytes, &path),
            ZooModel::Vit(model) => weights::load_burn_bytes(model.as_mut(), bytes, &path),
        })
    }

    /// A shapes classifier with its classes, its weights put in by `load`.
    fn shapes_model(
        name: &str,
        device: &Device,
        load: impl FnOnce(&mut ZooModel) -> Result<()>,
    ) -> Result<Self> {
        let mut loaded = Self::init(name, shapes::SHAPE_CLASSES.len(), device)?;
        load(&mut loaded.model)?;
        loaded.model = loaded.model.valid();
        loaded.class_names = Some(class_names(&shapes::SHAPE_CLASSES));
        Ok(loaded)
    }

    /// Build an architecture and load a timm state dict (`.safetensors`, `.pth`, `.pt`),
    /// then switch to evaluation mode. A bundled architecture (`shapes-cnn`,
    /// `shapes-vit`) reads the format of its bundled weights instead (Burn's names,
    /// what `train_shapes --out FILE` writes), with its own class count.
    pub fn load(
        name: &str,
        num_classes: usize,
        weights: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let path = weights.as_ref();
        if matches!(name, "shapes-cnn" | "shapes-vit") {
            check_bundled_classes(name, num_classes)?;
            return Self::shapes_model(name, device, |model| match model {
                ZooModel::ResNet(model) => weights::load_burn_file(model.as_mut(), path),
                ZooModel::Vit(model) => weights::load_burn_file(model.as_mut(), path),
            });
        }
        let (arch, _) = Architecture::from_name(name, num_classes)?;
        let mut loaded = Self::init(name, num_classes, device)?;
        match (&mut loaded.model, arch) {
            (ZooModel::ResNet(model), Architecture::ResNet(config)) => {
                load_state_dict(model.as_mut(), path, &config.key_remaps())?
            }
            (ZooModel::Vit(model), Architecture::Vit(_)) => {
                load_state_dict(model.as_mut(), path, &[])?
            }
            _ => unreachable!("init built the architecture's own kind"),
        }
        loaded.model = loaded.model.valid();
        Ok(loaded)
    }
}

impl ZooModel {
    /// Evaluation mode: BatchNorm uses running statistics, parameters leave autodiff.
    pub fn valid(&self) -> Self {
        use burn::module::Module;
        match self {
            Self::ResNet(m) => Self::ResNet(Box::new(m.valid())),
            Self::Vit(m) => Self::Vit(Box::new(m.valid())),
        }
    }
}

impl ExplainableModel for ZooModel {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        match self {
            Self::ResNet(m) => m.forward_tapped(input, tap),
            Self::Vit(m) => m.forward_tapped(input, tap),
        }
    }

    fn layers(&self) -> Vec<LayerInfo> {
        match self {
            Self::ResNet(m) => m.layers(),
            Self::Vit(m) => m.layers(),
        }
    }

    fn default_layer(&self) -> String {
        match self {
            Self::ResNet(m) => m.default_layer(),
            Self::Vit(m) => m.default_layer(),
        }
    }

    fn input_shape(&self) -> [usize; 3] {
        match self {
            Self::ResNet(m) => m.input_shape(),
            Self::Vit(m) => m.input_shape(),
        }
    }

    fn min_input_side(&self) -> Option<usize> {
        match self {
            Self::ResNet(m) => m.min_input_side(),
            Self::Vit(m) => m.min_input_side(),
        }
    }

    fn layers_at(&self, size: [usize; 2]) -> Vec<LayerInfo> {
        match self {
            Self::ResNet(m) => m.layers_at(size),
            Self::Vit(m) => m.layers_at(size),
        }
    }

    fn window_ops(&self) -> Vec<(String, Vec<lumen_core::ConvOp>)> {
        match self {
            Self::ResNet(m) => m.window_ops(),
            Self::Vit(m) => m.window_ops(),
        }
    }
}

impl LoadedModel {
    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.model.num_classes()
    }
}

impl Classifier for ZooModel {
    fn num_classes(&self) -> usize {
        match self {
            Self::ResNet(m) => m.num_classes(),
            Self::Vit(m) => m.num_classes(),
        }
    }
}

/// Segmentation architectures: `<head>_<backbone>` for every ResNet backbone of the zoo
/// (`deeplabv3plus_resnet18`, `fcn_resnet50`, ...); `*_test_resnet` are narrow test
/// models (head width 32 for DeepLabV3+, 64 for FCN) matching the parity fixtures.
pub fn segmentation_architectures() -> Vec<String> {
    let mut names = vec!["shapes-seg".to_string()];
    let backbones = dense_backbones();
    names.extend(backbones.flat_map(|b| [format!("deeplabv3plus_{b}"), format!("fcn_{b}")]));
    names
}

/// Whether `name` names a segmentation architecture.
pub fn is_segmentation_architecture(name: &str) -> bool {
    name == "shapes-seg" || name.starts_with("deeplabv3plus_") || name.starts_with("fcn_")
}

/// A segmentation architecture by name, with its data config: ImageNet statistics,
/// 512x512 inputs resized without cropping (160 for the test models). `shapes-seg` is
/// DeepLabV3+ (width 32) on the `shapes-cnn` backbone for the shapes scenes.
pub fn segmentor_config(name: &str, num_classes: usize) -> Result<(SegmentorConfig, DataConfig)> {
    let unknown = || LumenError::UnknownModel {
        name: name.to_string(),
        valid: segmentation_architectures(),
    };
    if name == "shapes-seg" {
        let (Architecture::ResNet(backbone), _) =
            Architecture::from_name("shapes-cnn", num_classes)?
        else {
            unreachable!("shapes-cnn is a ResNet");
        };
        // The backbone's last stage is a 4x4 grid on these 128-pixel scenes; the
        // decoder (stride 4) puts 0.870 of GradCAM's mass in the explained class
        // against layer4's 0.165 (measured: docs/tasks.md), as `fpn.p3` for shapes-det.
        let config = SegmentorConfig {
            head_channels: 32,
            default_layer: "head.decoder".into(),
            ..SegmentorConfig::new(backbone, SegmentationHead::DeepLabV3Plus, num_classes)
        };
        return Ok((config, shapes_data_config()));
    }
    let (head, backbone) = if let Some(b) = name.strip_prefix("deeplabv3plus_") {
        (SegmentationHead::DeepLabV3Plus, b)
    } else if let Some(b) = name.strip_prefix("fcn_") {
        (SegmentationHead::Fcn, b)
    } else {
        return Err(unknown());
    };
    let test = backbone == "test_resnet";
    let (backbone_config, data) =
        dense_backbone(backbone, num_classes, if test { 160 } else { 512 }, unknown)?;
    let mut config = SegmentorConfig::new(backbone_config, head, num_classes);
    if test {
        config.head_channels = match head {
            SegmentationHead::DeepLabV3Plus => 32,
            SegmentationHead::Fcn => 64,
        };
    }
    Ok((config, data))
}

/// The ResNet backbone of a dense model (`<head>_<backbone>`) and its data config:
/// the classifier's statistics, `size`-pixel inputs resized without cropping (a crop
/// would cut away pixels to segment or objects to detect).
fn dense_backbone(
    backbone: &str,
    num_classes: usize,
    size: usize,
    unknown: impl Fn() -> LumenError,
) -> Result<(ResNetConfig, DataConfig)> {
    if !dense_backbones().any(|b| *b == backbone) {
        return Err(unknown());
    }
    let (arch, classifier_data) =
        Architecture::from_name(backbone, num_classes).map_err(|e| match e {
            LumenError::UnknownModel { .. } => unknown(),
            other => other,
        })?;
    let Architecture::ResNet(config) = arch else {
        return Err(unknown());
    };
    let data = DataConfig {
        input_size: [3, size, size],
        interpolation: Interpolation::Bilinear,
        crop_pct: 1.0,
        ..classifier_data
    };
    Ok((config, data))
}

/// A segmentation model from the zoo with its name and data config.
#[derive(Debug)]
pub struct LoadedSegmentor {
    /// Architecture name (`deeplabv3plus_resnet18`, ...).
    pub name: String,
    /// The model, in evaluation mode.
    pub model: Segmentor,
    /// Preprocessing the model expects.
    pub data_config: DataConfig,
    /// Class names (index 0 is background by convention), when known.
    pub class_names: Option<Vec<String>>,
    /// The device the weights live on.
    pub device: Device,
}

impl LoadedSegmentor {
    /// Build an architecture with random weights.
    pub fn init(name: &str, num_classes: usize, device: &Device) -> Result<Self> {
        let (config, data_config) = segmentor_config(name, num_classes)?;
        let model = config.init(data_config.input_size[1], device)?;
        Ok(Self {
            name: name.to_string(),
            model,
            data_config,
            class_names: None,
            device: device.clone(),
        })
    }

    /// Build an architecture and load an AutoTimm `SemanticSegmentor` state dict
    /// (`.safetensors`, `.pth`, `.pt`, or a Lightning `.ckpt`; compiled or not), then
    /// switch to evaluation mode.
    ///
    /// `shapes-seg` reads the format of its bundled weights instead (Burn's names, what
    /// `train_shapes seg --out FILE` writes), with its own class count.
    pub fn load(
        name: &str,
        num_classes: usize,
        weights: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        use burn::module::Module;
        if name == "shapes-seg" {
            check_bundled_classes(name, num_classes)?;
            let path = weights.as_ref();
            return Self::shapes_segmentor(name, device, |model| {
                weights::load_burn_file(model, path)
            });
        }
        let (config, _) = segmentor_config(name, num_classes)?;
        let mut loaded = Self::init(name, num_classes, device)?;
        load_state_dict(&mut loaded.model, weights.as_ref(), &config.key_remaps())?;
        loaded.model = loaded.model.valid();
        Ok(loaded)
    }

    /// Number of segmentation classes.
    pub fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    /// The bundled `shapes-seg` with its trained weights (background and the four
    /// shapes), in evaluation mode.
    pub fn bundled(name: &str, device: &Device) -> Result<Self> {
        if name != "shapes-seg" {
            return Err(LumenError::InvalidArgument(format!(
                "`{name}` has no bundled weights (bundled segmentor: shapes-seg); load it with its weights file"
            )));
        }
        let bytes = SHAPES_SEG_WEIGHTS.ok_or_else(|| no_bundled_weights(name))?;
        let path = std::path::PathBuf::from(format!("<bundled {name}>"));
        Self::shapes_segmentor(name, device, |model| {
            weights::load_burn_bytes(model, bytes, &path)
        })
    }

    /// `shapes-seg` with its classes, its weights put in by `load`.
    fn shapes_segmentor(
        name: &str,
        device: &Device,
        load: impl FnOnce(&mut Segmentor) -> Result<()>,
    ) -> Result<Self> {
        use burn::module::Module;
        let mut loaded = Self::init(name, shapes::SCENE_CLASSES.len(), device)?;
        load(&mut loaded.model)?;
        loaded.model = loaded.model.valid();
        loaded.class_names = Some(class_names(&shapes::SCENE_CLASSES));
        Ok(loaded)
    }
}

/// Detection architectures: `fcos_<backbone>` for every ResNet backbone of the zoo;
/// `fcos_test_resnet` is a narrow test model (FPN 64 channels, 2 convolutions per
/// tower, 256-pixel inputs) matching the parity fixtures.
pub fn detection_architectures() -> Vec<String> {
    let mut names = vec!["shapes-det".to_string()];
    names.extend(dense_backbones().map(|b| format!("fcos_{b}")));
    names
}

/// Whether `name` names a detection architecture.
pub fn is_detection_architecture(name: &str) -> bool {
    name == "shapes-det" || name.starts_with("fcos_")
}

/// Check that `name` is a model of the zoo, of any task; the error lists every known
/// name (classifiers, segmentors, detectors).
pub fn check_model_name(name: &str) -> Result<()> {
    let known = Architecture::from_name(name, 1).is_ok()
        || segmentor_config(name, 1).is_ok()
        || detector_config(name, 1).is_ok();
    if known {
        return Ok(());
    }
    let mut valid: Vec<String> = ARCHITECTURES.iter().map(|s| s.to_string()).collect();
    valid.extend(segmentation_architectures());
    valid.extend(detection_architectures());
    Err(LumenError::UnknownModel {
        name: name.to_string(),
        valid,
    })
}

/// The zoo's backbones for dense models: its ResNets.
fn dense_backbones() -> impl Iterator<Item = &'static &'static str> {
    ARCHITECTURES
        .iter()
        .filter(|a| a.starts_with("resnet") || **a == "test_resnet")
}

/// A detection architecture by name, with its data config: ImageNet statistics, 512x512
/// inputs resized without cropping (256 for the test model). `shapes-det` is
/// `fcos_test_resnet` for the 128-pixel shapes scenes (their statistics, no resize).
pub fn detector_config(name: &str, num_classes: usize) -> Result<(DetectorConfig, DataConfig)> {
    let unknown = || LumenError::UnknownModel {
        name: name.to_string(),
        valid: detection_architectures(),
    };
    if name == "shapes-det" {
        let (config, _) = detector_config("fcos_test_resnet", num_classes)?;
        // Every shape (20-44 px) is detected on P3 (FCOS's range up to 64 px), whose
        // 16x16 grid also resolves neighbouring objects; the backbone's last stage is
        // a 4x4 grid on these 128-pixel scenes (measured: docs/tasks.md).
        let config = DetectorConfig {
            default_layer: "fpn.p3".into(),
            ..config
        };
        return Ok((config, shapes_data_config()));
    }
    let backbone = name.strip_prefix("fcos_").ok_or_else(unknown)?;
    let test = backbone == "test_resnet";
    let (backbone_config, data) =
        dense_backbone(backbone, num_classes, if test { 256 } else { 512 }, unknown)?;
    let mut config = DetectorConfig::new(backbone_config, num_classes);
    if test {
        config.fpn_channels = 64;
        config.head_convs = 2;
    }
    Ok((config, data))
}

/// A detection model from the zoo with its name and data config.
#[derive(Debug)]
pub struct LoadedDetector {
    /// Architecture name (`fcos_resnet50`, ...).
    pub name: String,
    /// The model, in evaluation mode.
    pub model: Detector,
    /// Preprocessing the model expects.
    pub data_config: DataConfig,
    /// Class names, when known.
    pub class_names: Option<Vec<String>>,
    /// The device the weights live on.
    pub device: Device,
}

impl LoadedDetector {
    /// Build an architecture with random weights.
    pub fn init(name: &str, num_classes: usize, device: &Device) -> Result<Self> {
        let (config, data_config) = detector_config(name, num_classes)?;
        let model = config.init(data_config.input_size[1], device)?;
        Ok(Self {
            name: name.to_string(),
            model,
            data_config,
            class_names: None,
            device: device.clone(),
        })
    }

    /// Build an architecture and load an AutoTimm `ObjectDetector` (FCOS) state dict
    /// (`.safetensors`, `.pth`, `.pt`, or a Lightning `.ckpt`; compiled or not), then
    /// switch to evaluation mode.
    pub fn load(
        name: &str,
        num_classes: usize,
        weights: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        use burn::module::Module;
        // shapes-det's bundled weights are a state dict like any detector's.
        check_bundled_classes(name, num_classes)?;
        let (config, _) = detector_config(name, num_classes)?;
        let mut loaded = Self::init(name, num_classes, device)?;
        loaded.class_names = bundled_classes(name).map(class_names);
        let path = weights.as_ref();
        let scales = weights::load_state_dict_with_scalars(
            &mut loaded.model,
            path,
            &config.key_remaps(),
            &config.scale_keys(),
        )?;
        loaded.model.set_scales(&scales)?;
        loaded.model = loaded.model.valid();
        Ok(loaded)
    }

    /// The bundled `shapes-det` with its trained weights (the four shapes), in
    /// evaluation mode.
    pub fn bundled(name: &str, device: &Device) -> Result<Self> {
        use burn::module::Module;
        if name != "shapes-det" {
            return Err(LumenError::InvalidArgument(format!(
                "`{name}` has no bundled weights (bundled detector: shapes-det); load it with its weights file"
            )));
        }
        let bytes = SHAPES_DET_WEIGHTS.ok_or_else(|| {
            LumenError::InvalidArgument(
                "this build has no weights for `shapes-det`: run `python tools/train/shapes_det.py` and rebuild"
                    .into(),
            )
        })?;
        let classes = shapes::SHAPE_CLASSES.len();
        let (config, _) = detector_config(name, classes)?;
        let mut loaded = Self::init(name, classes, device)?;
        let path = std::path::PathBuf::from(format!("<bundled {name}>"));
        let scales = weights::load_state_dict_bytes_with_scalars(
            &mut loaded.model,
            bytes,
            &path,
            &config.key_remaps(),
            &config.scale_keys(),
        )?;
        loaded.model.set_scales(&scales)?;
        loaded.model = loaded.model.valid();
        loaded.class_names = Some(class_names(&shapes::SHAPE_CLASSES));
        Ok(loaded)
    }
}
