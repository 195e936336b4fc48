//! Attribution methods for Lumen: the CAM family, gradient and path methods, noise
//! wrappers and attention methods, all batched.
//!
//! Depends on `lumen-core` and `burn` only, so that a user with their own Burn model
//! can depend on this crate alone: no model zoo, plotting or GPU backend is pulled in.
//!
//! Every method implements [`Method`]: explain a batch `[B,3,H,W]` for per-image
//! [`Target`](lumen_core::Target)s and get [`Heatmaps`](lumen_core::Heatmaps), plus the
//! raw attribution tensor for gradient methods. [`by_name`] builds any method from
//! its command-line name.

pub mod attention;
pub mod cam;
pub mod gradient;
pub mod noise;
mod registry;

use lumen_core::{ExplainableModel, Heatmaps, Result, Target, Tensor};

pub use attention::{AttentionFlow, AttentionRollout, GradRollout, HeadFusion, RolloutCompat};
pub use cam::{AblationCam, Cam, CamKind, LayerPass, ScoreCam, cams_from_one_pass};
pub use gradient::{
    Baseline, InputXGradient, IntegratedGradients, IntegrationRule, Saliency, input_gradients,
};
pub use noise::{Noise, NoiseKind, NoiseTunnel};
pub use registry::{METHOD_NAMES, MethodOptions, by_name};

/// What a method returns for a batch.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// One map per image: `[B,H,W]` at input size for CAM, gradient and noise methods
    /// (gradient methods: absolute value, max over channels); on the patch grid for
    /// attention methods.
    pub heatmaps: Heatmaps,
    /// The raw attribution `[B,3,H,W]` of gradient methods (signed, unnormalised).
    pub attributions: Option<Tensor<4>>,
    /// Integrated Gradients' completeness gap per image:
    /// `sum(attr) - (f(x) - f(baseline))`.
    pub convergence_delta: Option<Vec<f32>>,
}

impl Explanation {
    fn maps(heatmaps: Heatmaps) -> Self {
        Self {
            heatmaps,
            attributions: None,
            convergence_delta: None,
        }
    }
}

/// An attribution method.
pub trait Method<M: ExplainableModel> {
    /// The method's name, as on the command line.
    fn name(&self) -> String;

    /// Explain a batch `[B,3,H,W]` for one target per image.
    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation>;
}
