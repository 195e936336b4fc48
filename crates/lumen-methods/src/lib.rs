//! Attribution methods for Lumen: the CAM family, gradient and path methods, noise
//! wrappers and attention methods, all batched.
//!
//! Depends on `lumen-core` and `burn` only, so that a user with their own Burn model
//! can depend on this crate alone: no model zoo, plotting or GPU backend is pulled in.
//! Tasks (detection, segmentation) reach the methods through
//! [`Target`](lumen_core::Target) alone: nothing here knows about them.
//!
//! Every method implements [`Method`]: explain a batch `[B,3,H,W]` for per-image
//! [`Target`](lumen_core::Target)s and get [`Heatmaps`](lumen_core::Heatmaps), plus the
//! raw attribution tensor for gradient methods. [`by_name`] builds any method of the
//! table ([`methods`]) from its name and typed [`MethodOptions`].
//!
//! ```
//! use lumen_methods::{MethodOptions, by_name, method_names};
//! # struct MyModel;
//! # impl lumen_core::ExplainableModel for MyModel {
//! #     type Output = lumen_core::Tensor<2>;
//! #     fn forward_tapped(&self, x: lumen_core::Tensor<4>, _: &dyn lumen_core::Tap) -> lumen_core::Tensor<2> { x.flatten(1, 3) }
//! #     fn layers(&self) -> Vec<lumen_core::LayerInfo> { vec![] }
//! #     fn default_layer(&self) -> String { "features".into() }
//! #     fn input_shape(&self) -> [usize; 3] { [3, 8, 8] }
//! # }
//! let options = MethodOptions { steps: 32, ..MethodOptions::default() };
//! let ig = by_name::<MyModel>("ig", &options)?;
//! assert_eq!(ig.name(), "ig");
//! assert!(method_names().contains(&"gradcam++"));
//! # Ok::<(), lumen_core::LumenError>(())
//! ```

pub mod attention;
pub mod cam;
pub mod gradient;
pub mod method;
pub mod noise;
mod registry;

pub use attention::{AttentionFlow, AttentionRollout, GradRollout, HeadFusion, RolloutCompat};
pub use cam::{
    AblationCam, Cam, CamMap, EigenCam, EigenGradCam, GradCam, GradCamElementWise, GradCamPlusPlus,
    HiResCam, KpcaCam, LayerCam, LayerPass, ONE_PASS_CAMS, ScoreCam, XGradCam, cams_from_one_pass,
    one_pass_cam,
};
pub use gradient::{
    Baseline, BaselineKind, InputXGradient, IntegratedGradients, IntegrationRule, Saliency,
    input_gradients,
};
pub use method::{Explanation, Method};
pub use noise::{Noise, NoiseKind, NoiseTunnel};
pub use registry::{
    DEFAULT_MASKS, Family, MethodInfo, MethodOptions, by_name, method_info, method_names, methods,
};
