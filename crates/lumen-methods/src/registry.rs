//! The method table: every method's name, family and one-line summary, and
//! [`by_name`], which builds a method from its name and typed [`MethodOptions`]. The
//! CLI help, the facade, the parity tests and `docs/methods.md` read this table.

use lumen_core::input::{IMAGENET_MEAN, IMAGENET_STD};
use lumen_core::{ExplainableModel, LumenError, Result};

use crate::attention::{AttentionFlow, AttentionRollout, GradRollout, HeadFusion, RolloutCompat};
use crate::cam::{AblationCam, Cam, ONE_PASS_CAMS, ScoreCam, one_pass_cam};
use crate::gradient::{
    BaselineKind, InputXGradient, IntegratedGradients, IntegrationRule, Saliency,
};
use crate::method::Method;
use crate::noise::{Noise, NoiseKind, NoiseTunnel};

/// What kind of method a name is: decides which options apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// One forward (and backward) at a layer: reads `layer`.
    OnePassCam,
    /// Many masked forwards at a layer: reads `layer` and `internal_batch_size`.
    PerturbationCam,
    /// Gradients with respect to the input.
    Gradient,
    /// A path integral: reads `steps`, `baseline`, `integration`.
    Path,
    /// A noise tunnel around another method.
    NoiseTunnel,
    /// Attention matrices of a Vision Transformer.
    Attention,
}

impl Family {
    /// Whether methods of this family explain at a named layer.
    pub fn uses_layer(self) -> bool {
        matches!(self, Self::OnePassCam | Self::PerturbationCam)
    }
}

/// One row of the method table.
#[derive(Clone, Copy, Debug)]
pub struct MethodInfo {
    /// Command-line name.
    pub name: &'static str,
    /// Family.
    pub family: Family,
    /// One line for `--help` and the docs.
    pub summary: &'static str,
}

const OTHER_METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "scorecam",
        family: Family::PerturbationCam,
        summary: "channel weights from the score of the input masked by each activation map (Wang et al. 2020)",
    },
    MethodInfo {
        name: "ablationcam",
        family: Family::PerturbationCam,
        summary: "channel weights from the score drop when the channel is zeroed (Desai & Ramaswamy 2020)",
    },
    MethodInfo {
        name: "saliency",
        family: Family::Gradient,
        summary: "input gradient (Simonyan et al. 2014)",
    },
    MethodInfo {
        name: "inputxgrad",
        family: Family::Gradient,
        summary: "input times its gradient (Shrikumar et al. 2016)",
    },
    MethodInfo {
        name: "ig",
        family: Family::Path,
        summary: "Integrated Gradients from a baseline (Sundararajan et al. 2017)",
    },
    MethodInfo {
        name: "smoothgrad",
        family: Family::NoiseTunnel,
        summary: "mean attribution over noisy copies (Smilkov et al. 2017)",
    },
    MethodInfo {
        name: "smoothgrad-sq",
        family: Family::NoiseTunnel,
        summary: "mean squared attribution over noisy copies",
    },
    MethodInfo {
        name: "vargrad",
        family: Family::NoiseTunnel,
        summary: "variance of the attribution over noisy copies (Adebayo et al. 2018)",
    },
    MethodInfo {
        name: "rollout",
        family: Family::Attention,
        summary: "attention rollout over the blocks of a ViT (Abnar & Zuidema 2020)",
    },
    MethodInfo {
        name: "attention-flow",
        family: Family::Attention,
        summary: "attention flow: max-flow through the attention graph (Abnar & Zuidema 2020)",
    },
    MethodInfo {
        name: "grad-rollout",
        family: Family::Attention,
        summary: "gradient-weighted attention rollout (Chefer et al. 2021 style)",
    },
];

/// Every method, in the order of the CLI help and the docs: the one-pass CAMs of
/// [`ONE_PASS_CAMS`], then the others.
pub fn methods() -> Vec<MethodInfo> {
    ONE_PASS_CAMS
        .iter()
        .map(|cam| MethodInfo {
            name: cam.name(),
            family: Family::OnePassCam,
            summary: cam.summary(),
        })
        .chain(OTHER_METHODS.iter().copied())
        .collect()
}

/// Every method name [`by_name`] accepts.
pub fn method_names() -> Vec<&'static str> {
    methods().into_iter().map(|m| m.name).collect()
}

/// The table row of a method name; unknown names list the valid ones.
pub fn method_info(name: &str) -> Result<MethodInfo> {
    methods()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| unknown_method(name))
}

fn unknown_method(name: &str) -> LumenError {
    if name == "drise" {
        return LumenError::InvalidArgument(
            "drise (D-RISE) explains the boxes of object detectors: use it with a detection \
             model (shapes-det, fcos_*); with a detector of your own, pass `lumen::Drise` to \
             `explain_with`"
                .into(),
        );
    }
    if name == "guided-backprop" {
        return LumenError::InvalidArgument(
            "guided-backprop is not available: it needs ReLU's backward to depend on the sign of the \
             incoming gradient, which Burn 0.22 offers no hook for (see docs/methods.md); try \
             saliency, inputxgrad or smoothgrad"
                .into(),
        );
    }
    LumenError::UnknownMethod {
        name: name.to_string(),
        valid: method_names().into_iter().map(String::from).collect(),
    }
}

/// Typed options of every method; each method reads the ones that concern it.
/// Parsed once at the edge (the CLI's flags, a user's code) and validated by
/// [`MethodOptions::validate`].
#[derive(Clone, Debug)]
pub struct MethodOptions {
    /// Target layer of the CAMs (model default when `None`).
    pub layer: Option<String>,
    /// Integrated Gradients path points.
    pub steps: usize,
    /// Integrated Gradients baseline.
    pub baseline: BaselineKind,
    /// Integrated Gradients integration rule.
    pub integration: IntegrationRule,
    /// Path points, noisy copies or masked copies per forward/backward (IG, noise
    /// tunnels, Score/Ablation-CAM): the memory knob. `None`: the method's default.
    pub internal_batch_size: Option<usize>,
    /// Noise tunnels: noisy copies per image.
    pub noise_samples: usize,
    /// Noise tunnels: the noise (relative to each image's range, or absolute).
    pub noise: Noise,
    /// Seed for noise and random baselines.
    pub seed: Option<u64>,
    /// Noise tunnels: the wrapped method.
    pub noise_base: String,
    /// Attention methods: head fusion.
    pub head_fusion: HeadFusion,
    /// Attention methods: fraction of the lowest attentions discarded, in `[0, 1)`.
    pub discard_ratio: f32,
    /// Follow the reference implementations where they deviate from the papers.
    pub compat: bool,
    /// Black-box mask sampling of a task's own methods (D-RISE on detectors): random
    /// masks per explained box, one model pass each.
    pub masks: usize,
    /// Input normalisation of the model, for the black and white baselines.
    pub mean: [f32; 3],
    /// Input normalisation of the model, for the black and white baselines.
    pub std: [f32; 3],
}

/// [`MethodOptions::masks`] by default: D-RISE's paper uses 5000; 1000 gives a usable
/// map.
pub const DEFAULT_MASKS: usize = 1000;

impl Default for MethodOptions {
    fn default() -> Self {
        Self {
            layer: None,
            steps: 50,
            baseline: BaselineKind::Zeros,
            integration: IntegrationRule::GaussLegendre,
            internal_batch_size: None,
            noise_samples: 25,
            noise: Noise::Relative(0.15),
            seed: None,
            noise_base: "saliency".into(),
            head_fusion: HeadFusion::Mean,
            discard_ratio: 0.0,
            compat: false,
            masks: DEFAULT_MASKS,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

fn invalid(message: String) -> LumenError {
    LumenError::InvalidArgument(message)
}

impl MethodOptions {
    /// Check every numeric option: counts at least 1 (steps at most
    /// [`crate::gradient::MAX_PATH_STEPS`]), noise finite and not negative,
    /// discard ratio in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(invalid("steps must be at least 1".into()));
        }
        if self.steps > crate::gradient::MAX_PATH_STEPS {
            return Err(invalid(format!(
                "steps must be at most {} (Integrated Gradients converges within a few \
                 hundred path points), got {}",
                crate::gradient::MAX_PATH_STEPS,
                self.steps
            )));
        }
        if self.noise_samples == 0 {
            return Err(invalid("noise samples must be at least 1".into()));
        }
        if self.internal_batch_size == Some(0) {
            return Err(invalid("internal batch size must be at least 1".into()));
        }
        if self.masks == 0 {
            return Err(invalid("masks must be at least 1".into()));
        }
        let noise = match &self.noise {
            Noise::Relative(v) | Noise::Absolute(v) => Some(*v),
            Noise::Given(_) => None,
        };
        if let Some(v) = noise
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(invalid(format!(
                "noise level must be a finite number >= 0, got {v}"
            )));
        }
        if !(self.discard_ratio.is_finite() && (0.0..1.0).contains(&self.discard_ratio)) {
            return Err(invalid(format!(
                "discard ratio must be in [0, 1), got {}",
                self.discard_ratio
            )));
        }
        Ok(())
    }
}

/// Build a method from its name; unknown names list the valid ones
/// ([`LumenError::UnknownMethod`]) and invalid options say which.
pub fn by_name<M: ExplainableModel + 'static>(
    name: &str,
    options: &MethodOptions,
) -> Result<Box<dyn Method<M>>> {
    options.validate()?;
    if let Some(kind) = one_pass_cam(name) {
        return Ok(Box::new(Cam {
            kind,
            layer: options.layer.clone(),
        }));
    }
    let compat = if options.compat {
        RolloutCompat::VitExplain
    } else {
        RolloutCompat::Paper
    };
    let batch = options.internal_batch_size;
    Ok(match name {
        "scorecam" => Box::new(ScoreCam {
            layer: options.layer.clone(),
            batch_size: batch,
        }),
        "ablationcam" => Box::new(AblationCam {
            layer: options.layer.clone(),
            batch_size: batch,
        }),
        "saliency" => Box::new(Saliency),
        "inputxgrad" => Box::new(InputXGradient),
        "ig" => Box::new(IntegratedGradients {
            baseline: options
                .baseline
                .with(options.mean, options.std, options.seed),
            steps: options.steps,
            rule: options.integration,
            internal_batch_size: batch,
            captum_compat: options.compat,
        }),
        "smoothgrad" | "smoothgrad-sq" | "vargrad" => {
            let kind = match name {
                "smoothgrad" => NoiseKind::SmoothGrad,
                "smoothgrad-sq" => NoiseKind::SmoothGradSq,
                _ => NoiseKind::VarGrad,
            };
            if method_info(&options.noise_base)?.family == Family::NoiseTunnel {
                return Err(invalid(
                    "a noise tunnel cannot wrap another noise tunnel".into(),
                ));
            }
            Box::new(NoiseTunnel {
                inner: by_name::<M>(&options.noise_base, options)?,
                kind,
                samples: options.noise_samples,
                noise: options.noise.clone(),
                seed: options.seed,
                batch_size: batch,
            })
        }
        "rollout" => Box::new(AttentionRollout {
            head_fusion: options.head_fusion,
            discard_ratio: options.discard_ratio,
            compat,
        }),
        "grad-rollout" => Box::new(GradRollout {
            discard_ratio: options.discard_ratio,
            compat,
        }),
        "attention-flow" => Box::new(AttentionFlow {
            head_fusion: options.head_fusion,
        }),
        other => return Err(unknown_method(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_unique_names_and_every_name_builds() {
        let names = method_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
        for name in names {
            let method =
                by_name::<lumen_core_stub::Model>(name, &MethodOptions::default()).unwrap();
            assert_eq!(method.name(), name);
            let uses_layer = method_info(name).unwrap().family.uses_layer();
            assert_eq!(
                method.layer(&lumen_core_stub::Model).is_some(),
                uses_layer,
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_names_and_bad_numbers_are_errors_that_say_why() {
        let options = MethodOptions::default();
        let error = by_name::<lumen_core_stub::Model>("gradkam", &options)
            .err()
            .unwrap();
        assert!(matches!(error, LumenError::UnknownMethod { .. }));
        assert!(error.to_string().contains("kpcacam"));
        for (options, message) in [
            (
                MethodOptions {
                    noise: Noise::Relative(f32::NAN),
                    ..Default::default()
                },
                "finite",
            ),
            (
                MethodOptions {
                    noise: Noise::Absolute(-1.0),
                    ..Default::default()
                },
                ">= 0",
            ),
            (
                MethodOptions {
                    discard_ratio: 1.0,
                    ..Default::default()
                },
                "[0, 1)",
            ),
            (
                MethodOptions {
                    steps: 0,
                    ..Default::default()
                },
                "steps",
            ),
            (
                MethodOptions {
                    steps: crate::gradient::MAX_PATH_STEPS + 1,
                    ..Default::default()
                },
                "steps must be at most 10000",
            ),
            (
                MethodOptions {
                    internal_batch_size: Some(0),
                    ..Default::default()
                },
                "internal batch size",
            ),
        ] {
            let error = options.validate().unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
        let wrapped = MethodOptions {
            noise_base: "vargrad".into(),
            ..Default::default()
        };
        assert!(
            by_name::<lumen_core_stub::Model>("smoothgrad", &wrapped)
                .err()
                .unwrap()
                .to_string()
                .contains("cannot wrap")
        );
    }

    mod lumen_core_stub {
        pub struct Model;
        impl lumen_core::ExplainableModel for Model {
            type Output = lumen_core::Tensor<2>;
            fn forward_tapped(
                &self,
                input: lumen_core::Tensor<4>,
                _: &dyn lumen_core::Tap,
            ) -> lumen_core::Tensor<2> {
                input.flatten(1, 3)
            }
            fn layers(&self) -> Vec<lumen_core::LayerInfo> {
                vec![]
            }
            fn default_layer(&self) -> String {
                "x".into()
            }
            fn input_shape(&self) -> [usize; 3] {
                [3, 1, 1]
            }
        }
    }
}
