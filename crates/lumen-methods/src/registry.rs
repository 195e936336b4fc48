//! Build any method from its command-line name and options.

use lumen_core::input::{IMAGENET_MEAN, IMAGENET_STD};
use lumen_core::{ExplainableModel, LumenError, Result};

use crate::Method;
use crate::attention::{AttentionFlow, AttentionRollout, GradRollout, HeadFusion, RolloutCompat};
use crate::cam::{AblationCam, Cam, CamKind, ScoreCam};
use crate::gradient::{Baseline, InputXGradient, IntegratedGradients, IntegrationRule, Saliency};
use crate::noise::{Noise, NoiseKind, NoiseTunnel};

/// Every method name [`by_name`] accepts.
pub const METHOD_NAMES: &[&str] = &[
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "gradcam-elementwise",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
    "saliency",
    "inputxgrad",
    "ig",
    "smoothgrad",
    "smoothgrad-sq",
    "vargrad",
    "rollout",
    "attention-flow",
    "grad-rollout",
];

/// Options shared by the command line and the high-level API. Each method reads the
/// ones that concern it.
#[derive(Clone, Debug)]
pub struct MethodOptions {
    /// Target layer for CAMs (model default when `None`).
    pub layer: Option<String>,
    /// Integrated Gradients path points.
    pub steps: usize,
    /// Integrated Gradients baseline name.
    pub baseline: String,
    /// Integrated Gradients integration rule name.
    pub ig_method: String,
    /// Path points or masked copies per forward/backward (IG, noise, Score/Ablation-CAM).
    pub internal_batch_size: Option<usize>,
    /// Noise samples per image.
    pub samples: usize,
    /// Noise level as a fraction of the input range (SmoothGrad paper).
    pub noise: f32,
    /// Absolute noise standard deviation (captum's `stdevs`); overrides `noise`.
    pub noise_stdev: Option<f32>,
    /// Seed for noise and random baselines.
    pub seed: Option<u64>,
    /// Method wrapped by the noise tunnels.
    pub noise_base: String,
    /// Attention head fusion.
    pub head_fusion: String,
    /// Attention discard ratio.
    pub discard_ratio: f32,
    /// Follow the reference implementations where they deviate from the papers.
    pub compat: bool,
    /// Input normalisation, for the black and white baselines.
    pub mean: [f32; 3],
    /// Input normalisation, for the black and white baselines.
    pub std: [f32; 3],
}

impl Default for MethodOptions {
    fn default() -> Self {
        Self {
            layer: None,
            steps: 50,
            baseline: "zeros".into(),
            ig_method: "gausslegendre".into(),
            internal_batch_size: None,
            samples: 25,
            noise: 0.15,
            noise_stdev: None,
            seed: None,
            noise_base: "saliency".into(),
            head_fusion: "mean".into(),
            discard_ratio: 0.0,
            compat: false,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// Build a method from its command-line name; unknown names list the valid ones.
pub fn by_name<M: ExplainableModel + 'static>(
    name: &str,
    options: &MethodOptions,
) -> Result<Box<dyn Method<M>>> {
    let cam = |kind| -> Box<dyn Method<M>> {
        Box::new(Cam {
            kind,
            layer: options.layer.clone(),
        })
    };
    let compat = if options.compat {
        RolloutCompat::VitExplain
    } else {
        RolloutCompat::Paper
    };
    let batch = options.internal_batch_size;
    if !(0.0..1.0).contains(&options.discard_ratio) {
        return Err(LumenError::InvalidArgument(format!(
            "--discard-ratio must be in [0, 1), got {}",
            options.discard_ratio
        )));
    }
    Ok(match name {
        "gradcam" => cam(CamKind::GradCam),
        "gradcam++" => cam(CamKind::GradCamPlusPlus),
        "xgradcam" => cam(CamKind::XGradCam),
        "layercam" => cam(CamKind::LayerCam),
        "hirescam" => cam(CamKind::HiResCam),
        "gradcam-elementwise" => cam(CamKind::GradCamElementWise),
        "eigencam" => cam(CamKind::EigenCam),
        "eigengradcam" => cam(CamKind::EigenGradCam),
        "scorecam" => Box::new(ScoreCam {
            layer: options.layer.clone(),
            batch_size: batch.unwrap_or(64),
        }),
        "ablationcam" => Box::new(AblationCam {
            layer: options.layer.clone(),
            batch_size: batch.unwrap_or(64),
        }),
        "saliency" => Box::new(Saliency),
        "inputxgrad" => Box::new(InputXGradient),
        "ig" => Box::new(IntegratedGradients {
            baseline: match Baseline::from_name(&options.baseline, options.mean, options.std)? {
                Baseline::Uniform { .. } => Baseline::Uniform { seed: options.seed },
                other => other,
            },
            steps: options.steps,
            rule: IntegrationRule::from_name(&options.ig_method)?,
            internal_batch_size: batch,
            captum_compat: options.compat,
        }),
        "smoothgrad" | "smoothgrad-sq" | "vargrad" => {
            let kind = match name {
                "smoothgrad" => NoiseKind::SmoothGrad,
                "smoothgrad-sq" => NoiseKind::SmoothGradSq,
                _ => NoiseKind::VarGrad,
            };
            if matches!(
                options.noise_base.as_str(),
                "smoothgrad" | "smoothgrad-sq" | "vargrad"
            ) {
                return Err(LumenError::InvalidArgument(
                    "a noise tunnel cannot wrap another noise tunnel".into(),
                ));
            }
            Box::new(NoiseTunnel {
                inner: by_name::<M>(&options.noise_base, options)?,
                kind,
                samples: options.samples,
                noise: match options.noise_stdev {
                    Some(std) => Noise::Absolute(std),
                    None => Noise::Relative(options.noise),
                },
                seed: options.seed,
                batch_size: batch,
            })
        }
        "rollout" => Box::new(AttentionRollout {
            head_fusion: HeadFusion::from_name(&options.head_fusion)?,
            discard_ratio: options.discard_ratio,
            compat,
        }),
        "grad-rollout" => Box::new(GradRollout {
            discard_ratio: options.discard_ratio,
            compat,
        }),
        "attention-flow" => Box::new(AttentionFlow {
            head_fusion: HeadFusion::from_name(&options.head_fusion)?,
        }),
        "guided-backprop" => {
            return Err(LumenError::InvalidArgument(
                "guided-backprop is not available: it needs ReLU's backward to depend on the sign of the \
                 incoming gradient, which Burn 0.22 offers no hook for (see docs/methods.md); try \
                 saliency, inputxgrad or smoothgrad"
                    .into(),
            ));
        }
        other => {
            return Err(LumenError::InvalidArgument(format!(
                "unknown method `{other}`; valid methods: {}",
                METHOD_NAMES.join(", ")
            )));
        }
    })
}
