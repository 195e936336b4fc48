//! The randomisation checks on real models: parameter groups follow the module tree,
//! the caller's model is unchanged afterwards (Burn shares BatchNorm running
//! statistics between clones), and a model-independent map fails the check.

use lumen::core::burn::tensor::{Tensor, TensorData};
use lumen::core::{ClassLogit, Device, ExplainableModel, Heatmaps, Result, Target, to_host};
use lumen::methods::{Cam, Explanation, GradCam, Method};
use lumen::metrics::{
    RandomMap, RandomizationConfig, RandomizationOrder, model_randomization, parameter_groups,
    randomize_groups,
};
use lumen::models::ResNet;
use lumen::{LoadedModel, ZooModel};

fn shapes_cnn() -> ResNet {
    match LoadedModel::bundled("shapes-cnn", &Device::flex())
        .unwrap()
        .model
    {
        ZooModel::ResNet(model) => *model,
        ZooModel::Vit(_) => unreachable!("shapes-cnn is a ResNet"),
    }
}

fn input() -> Tensor<4> {
    let loaded = LoadedModel::bundled("shapes-cnn", &Device::flex()).unwrap();
    let samples = lumen::models::shapes::shape_samples(3, 0, 2);
    let images: Vec<_> = samples.into_iter().map(|s| s.image).collect();
    loaded
        .data_config
        .to_tensor(&images, &Device::flex())
        .unwrap()
}

#[test]
fn groups_follow_the_module_tree() {
    let groups = parameter_groups(&shapes_cnn());
    eprintln!("{groups:?}");
    // Module paths, in declaration order; a Vec's index joins its field's name.
    assert_eq!(
        groups,
        [
            "stem", "bn1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"
        ]
    );
}

#[test]
fn randomisation_leaves_the_callers_model_unchanged() {
    let model = shapes_cnn();
    let x = input();
    let before = to_host(model.forward(x.clone())).unwrap();
    let all = parameter_groups(&model);
    let randomized = randomize_groups(&model, &all, 7).unwrap();
    let changed = to_host(randomized.forward(x.clone())).unwrap();
    assert!(
        changed.iter().all(|v| v.is_finite()),
        "randomised logits are finite"
    );
    assert_ne!(
        changed, before,
        "randomising every group changes the output"
    );
    assert_eq!(
        to_host(model.forward(x)).unwrap(),
        before,
        "the original model is untouched"
    );
}

#[test]
fn gradcam_passes_and_a_model_independent_map_fails() {
    let model = shapes_cnn();
    let x = input();
    let classes = lumen::core::predicted_classes(&model.forward(x.clone())).unwrap();
    let target = ClassLogit(classes);
    let config = RandomizationConfig::default();
    let gradcam = Cam {
        kind: &GradCam,
        layer: None,
    };
    let curve = model_randomization(&model, &gradcam, &x, &target, &config).unwrap();
    eprintln!("gradcam {:?} {:?}", curve.layers, curve.spearman);
    assert_eq!(curve.layers.len(), parameter_groups(&model).len());
    assert_eq!(
        curve.layers.first().map(String::as_str),
        Some("fc"),
        "top first"
    );
    assert!(
        curve.passed,
        "GradCAM on the trained CNN passes: {:?}",
        curve.spearman
    );

    let random = model_randomization(&model, &RandomMap { seed: 1 }, &x, &target, &config).unwrap();
    assert!(random.spearman.iter().all(|&s| (s - 1.0).abs() < 1e-6));
    assert!(!random.passed);

    let independent = RandomizationConfig {
        order: RandomizationOrder::Independent,
        ..config
    };
    let curve = model_randomization(&model, &gradcam, &x, &target, &independent).unwrap();
    eprintln!("independent {:?} {:?}", curve.layers, curve.abs_spearman);
    assert_eq!(curve.spearman.len(), curve.layers.len());
    // Each step randomises one group alone, so it is not the cascade's curve: the
    // cascade's last step randomises everything, the independent one only the stem.
    let mean = curve.abs_spearman.iter().sum::<f32>() / curve.abs_spearman.len() as f32;
    assert!(
        (curve.score - mean).abs() < 1e-6,
        "independent score is the mean"
    );
    let fc = curve.layers.iter().position(|l| l == "fc").unwrap();
    assert!(
        curve.abs_spearman[fc] < 0.9,
        "randomising the head alone changes GradCAM's map: {:?}",
        curve.abs_spearman
    );
    let random =
        model_randomization(&model, &RandomMap { seed: 1 }, &x, &target, &independent).unwrap();
    assert!(!random.passed, "a model-independent map fails either order");
}

/// A map that depends on the model only through its sign: the fixed ramp for the
/// original model, the inverted ramp for any other. Signed Spearman calls it
/// randomised (rho = -1); the absolute rank correlation of Adebayo et al. does not.
struct InvertsWhenRandomised {
    original_logits: Vec<f32>,
}

impl Method<ResNet> for InvertsWhenRandomised {
    fn name(&self) -> String {
        "inverts-when-randomised".into()
    }

    fn explain(
        &self,
        model: &ResNet,
        input: Tensor<4>,
        _target: &dyn Target<Tensor<2>>,
    ) -> Result<Explanation> {
        let [b, _, h, w] = input.dims();
        let same = to_host(model.forward(input.clone()))
            .unwrap()
            .iter()
            .zip(&self.original_logits)
            .all(|(a, b)| (a - b).abs() < 1e-5);
        let sign = if same { 1.0 } else { -1.0 };
        let values: Vec<f32> = (0..b * h * w)
            .map(|i| sign * ((i % w) as f32 + 0.37 * ((i / w) % h) as f32))
            .collect();
        Ok(Explanation::new(Heatmaps::new(Tensor::from_data(
            TensorData::new(values, [b, h, w]),
            &input.device(),
        ))))
    }
}

#[test]
fn an_inverted_map_fails_the_randomisation_check() {
    let model = shapes_cnn();
    let x = input();
    let target = ClassLogit(lumen::core::predicted_classes(&model.forward(x.clone())).unwrap());
    let method = InvertsWhenRandomised {
        original_logits: to_host(model.forward(x.clone())).unwrap(),
    };
    let curve = model_randomization(
        &model,
        &method,
        &x,
        &target,
        &RandomizationConfig::default(),
    )
    .unwrap();
    assert!(
        curve.spearman.iter().all(|&r| r < -0.99),
        "the map inverts at every step: {:?}",
        curve.spearman
    );
    assert!(
        (curve.score - 1.0).abs() < 1e-4,
        "absolute correlation 1: {}",
        curve.score
    );
    assert!(!curve.passed, "an inverted map is not a randomised one");
}
