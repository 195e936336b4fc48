//! Batching is the default path: a method costs the forward and backward passes its
//! math needs, not one per image. A tiny Burn model counts its forward passes and the
//! largest batch it saw.

use std::sync::Mutex;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use lumen_core::{ClassLogit, ExplainableModel, LayerInfo, LayerKind, LumenError, Tap};
use lumen_methods::{
    AblationCam, BaselineKind, Cam, GradCam, HeadFusion, IntegratedGradients, IntegrationRule,
    Method, MethodOptions, Noise, NoiseKind, NoiseTunnel, ONE_PASS_CAMS, Saliency, ScoreCam,
    by_name, cams_from_one_pass,
};

#[derive(Module, Debug)]
struct TinyNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

struct Counted {
    net: TinyNet,
    forwards: Mutex<Vec<usize>>,
}

impl Counted {
    fn new(device: &Device) -> Self {
        Self::with_features(device, 16)
    }

    /// The net with `features` channels in its last layer.
    fn with_features(device: &Device, features: usize) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            net: TinyNet {
                conv1: conv(3, 8),
                conv2: conv(8, features),
                fc: LinearConfig::new(features, 5).init(device),
            }
            .valid(),
            forwards: Mutex::default(),
        }
    }

    /// The same net with these channels of "features" zero everywhere (their weights
    /// zero, their bias negative, then a ReLU), as dead channels of a trained net, and
    /// the others positive everywhere.
    fn with_dead_channels(device: &Device, dead: &[usize]) -> Self {
        let mut counted = Self::new(device);
        let keep: Vec<f32> = (0..16)
            .map(|ch| if dead.contains(&ch) { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::<1>::from_floats(keep.as_slice(), device);
        let conv = &mut counted.net.conv2;
        conv.weight = Param::from_tensor(conv.weight.val() * keep.clone().reshape([16, 1, 1, 1]));
        // Bias -1 on the dead channels; 100 on the others, so that none of those is
        // zero everywhere by chance (the weights and inputs are random).
        conv.bias = Some(Param::from_tensor(keep.clone() * 101.0 - 1.0));
        counted
    }

    fn forward_batches(&self) -> Vec<usize> {
        std::mem::take(&mut *self.forwards.lock().unwrap())
    }
}

impl ExplainableModel for Counted {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let [b, _, _, _] = input.dims();
        self.forwards.lock().unwrap().push(b);
        let x = tap.visit("conv1", relu(self.net.conv1.forward(input)));
        let x = tap.visit("features", relu(self.net.conv2.forward(x)));
        let features = x.dims()[1];
        self.net
            .fc
            .forward(x.mean_dims(&[2, 3]).reshape([b, features]))
    }

    fn layers(&self) -> Vec<LayerInfo> {
        vec![
            LayerInfo::new("conv1", LayerKind::FeatureMap),
            LayerInfo::new("features", LayerKind::FeatureMap),
        ]
    }

    fn default_layer(&self) -> String {
        "features".into()
    }

    fn input_shape(&self) -> [usize; 3] {
        [3, 12, 12]
    }

    fn min_input_side(&self) -> Option<usize> {
        Some(4)
    }
}

fn batch(n: usize, device: &Device) -> Tensor<4> {
    Tensor::random([n, 3, 12, 12], Distribution::Normal(0.0, 1.0), device)
}

fn targets(n: usize) -> ClassLogit {
    ClassLogit((0..n).map(|i| i % 5).collect())
}

#[test]
fn every_one_pass_cam_on_a_batch_of_8_costs_one_forward() {
    let device = Device::flex();
    let model = Counted::new(&device);
    for &kind in ONE_PASS_CAMS {
        let explanation = Cam::new(kind)
            .explain(&model, batch(8, &device), &targets(8))
            .unwrap();
        assert_eq!(explanation.heatmaps.dims(), [8, 12, 12], "{}", kind.name());
        assert_eq!(model.forward_batches(), vec![8], "{}", kind.name());
    }
}

#[test]
fn all_cams_of_a_comparison_share_one_forward() {
    let device = Device::flex();
    let model = Counted::new(&device);
    let maps = cams_from_one_pass(
        &model,
        batch(8, &device),
        &targets(8),
        "features",
        ONE_PASS_CAMS,
    )
    .unwrap();
    assert_eq!(maps.len(), ONE_PASS_CAMS.len());
    assert_eq!(model.forward_batches(), vec![8]);
}

#[test]
fn integrated_gradients_respects_the_internal_batch_size() {
    let device = Device::flex();
    let model = Counted::new(&device);
    let ig = IntegratedGradients {
        steps: 10,
        internal_batch_size: Some(6),
        ..Default::default()
    };
    ig.explain(&model, batch(4, &device), &targets(4)).unwrap();
    let batches = model.forward_batches();
    // 40 path points in chunks of at most 6, then one forward for both path ends.
    let (path, ends) = batches.split_at(batches.len() - 1);
    assert!(path.iter().all(|&b| b <= 6), "{batches:?}");
    assert_eq!(path.iter().sum::<usize>(), 40, "{batches:?}");
    assert_eq!(path.len(), 7, "{batches:?}");
    assert_eq!(ends, [8]);
}

#[test]
fn without_an_internal_batch_size_memory_is_still_bounded() {
    let device = Device::flex();
    let model = Counted::new(&device);
    // 3x96x96 inputs: the default budget is 32 rows of 3x224x224, i.e. 174 rows here;
    // the 16 channels at 96x96 allow as many (25.7M values / 147456 a row).
    let rows = lumen_core::default_chunk_rows([3, 96, 96]);
    assert_eq!(rows, 174);
    let large = |n| Tensor::random([n, 3, 96, 96], Distribution::Normal(0.0, 1.0), &device);
    let ig = IntegratedGradients {
        steps: 100,
        ..Default::default()
    };
    ig.explain(&model, large(2), &targets(2)).unwrap();
    // One row measures the layers, then the chunks, then both path ends.
    assert_eq!(model.forward_batches(), vec![1, rows, 200 - rows, 4]);
    let tunnel = NoiseTunnel::<Counted> {
        inner: Box::new(Saliency),
        kind: NoiseKind::SmoothGrad,
        samples: 100,
        noise: Noise::Relative(0.1),
        seed: Some(1),
        batch_size: None,
    };
    tunnel.explain(&model, large(2), &targets(2)).unwrap();
    assert_eq!(model.forward_batches(), vec![1, rows, 200 - rows]);
    // Forward-only masked CAMs take up to twice the rows.
    ScoreCam::default()
        .explain(&model, large(2), &targets(2))
        .unwrap();
    let batches = model.forward_batches();
    assert!(batches[1..].iter().all(|&b| b <= 2 * rows), "{batches:?}");

    // 64 channels at 96x96 (21x the input, as a full-resolution stem): the layer's
    // budget binds, 43 rows (25.7M / 589824), for gradients and masked forwards alike.
    let wide = Counted::with_features(&device, 64);
    let layer_rows = lumen_core::DEFAULT_ACTIVATION_VALUES / (64 * 96 * 96);
    assert_eq!(layer_rows, 43);
    ig.explain(&wide, large(2), &targets(2)).unwrap();
    let batches = wide.forward_batches();
    assert_eq!(batches[0], 1, "{batches:?}");
    assert_eq!(&batches[1..5], [layer_rows; 4], "{batches:?}");
    assert_eq!(batches[1..batches.len() - 1].iter().sum::<usize>(), 200);
    tunnel.explain(&wide, large(2), &targets(2)).unwrap();
    let batches = wide.forward_batches();
    assert!(batches[1..].iter().all(|&b| b <= layer_rows), "{batches:?}");
    ScoreCam::default()
        .explain(&wide, large(2), &targets(2))
        .unwrap();
    let batches = wide.forward_batches();
    assert!(batches[1..].iter().all(|&b| b <= layer_rows), "{batches:?}");
    assert!(batches.contains(&layer_rows), "{batches:?}");
}

#[test]
fn noise_tunnel_and_masked_cams_run_in_batches() {
    let device = Device::flex();
    let model = Counted::new(&device);
    let tunnel = NoiseTunnel::<Counted> {
        inner: Box::new(Saliency),
        kind: NoiseKind::SmoothGrad,
        samples: 5,
        noise: Noise::Relative(0.1),
        seed: Some(1),
        batch_size: Some(8),
    };
    tunnel
        .explain(&model, batch(3, &device), &targets(3))
        .unwrap();
    assert_eq!(model.forward_batches(), vec![8, 7]);

    // No channel zero everywhere: such planes are skipped (tested below), which would
    // change the counts.
    let model = Counted::with_dead_channels(&device, &[]);
    let score = ScoreCam {
        layer: None,
        batch_size: Some(20),
    };
    score
        .explain(&model, batch(2, &device), &targets(2))
        .unwrap();
    // One pass for activations, then 2 images x 16 channels in chunks of 20.
    assert_eq!(model.forward_batches(), vec![2, 20, 12]);

    let ablation = AblationCam {
        layer: None,
        batch_size: Some(32),
    };
    ablation
        .explain(&model, batch(2, &device), &targets(2))
        .unwrap();
    assert_eq!(model.forward_batches(), vec![2, 32]);
}

#[test]
fn noise_tunnels_give_the_same_maps_however_their_rows_are_chunked() {
    // The tunnel combines each image's samples as soon as they are all in: chunks that
    // end inside an image (3 samples per image, chunks of 1, 2, 4, 7 rows) must give
    // what one chunk of all rows gives, for attributions and for CAM maps.
    let device = Device::flex();
    let model = Counted::new(&device);
    let input = batch(3, &device);
    type MakeInner = fn() -> Box<dyn Method<Counted>>;
    let inners: [(&str, MakeInner); 2] = [
        ("saliency", || Box::new(Saliency)),
        ("gradcam", || Box::new(Cam::new(&GradCam))),
    ];
    for kind in [
        NoiseKind::SmoothGrad,
        NoiseKind::SmoothGradSq,
        NoiseKind::VarGrad,
    ] {
        for (inner_name, inner) in inners {
            let tunnel = |batch_size| NoiseTunnel::<Counted> {
                inner: inner(),
                kind,
                samples: 3,
                noise: Noise::Relative(0.2),
                seed: Some(11),
                batch_size,
            };
            let whole = tunnel(Some(9))
                .explain(&model, input.clone(), &targets(3))
                .unwrap();
            let whole_values = match &whole.attributions {
                Some(a) => lumen_core::to_host(a.clone()).unwrap(),
                None => whole.heatmaps.to_vec().unwrap(),
            };
            let largest = whole_values.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(largest > 0.0, "{kind:?} of {inner_name} is all zero");
            for chunk in [1, 2, 4, 7] {
                let chunked = tunnel(Some(chunk))
                    .explain(&model, input.clone(), &targets(3))
                    .unwrap();
                assert_eq!(chunked.attributions.is_some(), whole.attributions.is_some());
                let values = match &chunked.attributions {
                    Some(a) => lumen_core::to_host(a.clone()).unwrap(),
                    None => chunked.heatmaps.to_vec().unwrap(),
                };
                assert_eq!(values.len(), whole_values.len());
                let worst = values
                    .iter()
                    .zip(&whole_values)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // Relative to the largest value: saliency of this tiny net is ~1e-4.
                assert!(
                    worst <= 1e-5 * largest,
                    "{kind:?} of {inner_name} in chunks of {chunk}: {worst} of {largest}"
                );
                assert_eq!(chunked.heatmaps.dims(), whole.heatmaps.dims());
            }
        }
    }
}

#[test]
fn masked_cams_skip_planes_that_are_zero_everywhere() {
    // A plane that is zero everywhere masks the whole input (Score-CAM: one zero-input
    // forward per image serves all such planes) or ablates nothing (Ablation-CAM:
    // weight 0); 4 of 16 channels are dead here.
    let device = Device::flex();
    let model = Counted::with_dead_channels(&device, &[1, 4, 5, 9]);
    let input = batch(2, &device);
    let score = ScoreCam {
        layer: None,
        batch_size: Some(64),
    };
    let map = score.explain(&model, input.clone(), &targets(2)).unwrap();
    // The layer pass, 2 x 12 live planes, one zero input per image.
    assert_eq!(model.forward_batches(), vec![2, 24, 2]);
    assert!(map.heatmaps.to_vec().unwrap().iter().any(|&v| v > 0.0));
    let ablation = AblationCam {
        layer: None,
        batch_size: Some(64),
    };
    let map = ablation
        .explain(&model, input.clone(), &targets(2))
        .unwrap();
    assert_eq!(model.forward_batches(), vec![2, 24]);
    assert!(map.heatmaps.to_vec().unwrap().iter().all(|v| v.is_finite()));
    // Every channel dead: no masked forward at all, and a zero map, not NaN.
    let model = Counted::with_dead_channels(&device, &(0..16).collect::<Vec<_>>());
    let map = score.explain(&model, input.clone(), &targets(2)).unwrap();
    assert_eq!(model.forward_batches(), vec![2, 2]);
    assert!(map.heatmaps.to_vec().unwrap().iter().all(|&v| v == 0.0));
    let map = ablation.explain(&model, input, &targets(2)).unwrap();
    assert_eq!(model.forward_batches(), vec![2]);
    assert!(map.heatmaps.to_vec().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn noise_is_reproducible_with_a_seed() {
    let device = Device::flex();
    let model = Counted::new(&device);
    let input = batch(2, &device);
    let options = MethodOptions {
        noise_samples: 3,
        seed: Some(7),
        ..Default::default()
    };
    let method = by_name::<Counted>("smoothgrad", &options).unwrap();
    let a = method
        .explain(&model, input.clone(), &targets(2))
        .unwrap()
        .heatmaps
        .to_vec()
        .unwrap();
    let b = method
        .explain(&model, input, &targets(2))
        .unwrap()
        .heatmaps
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_requests_are_errors_naming_the_problem() {
    let device = Device::flex();
    let model = Counted::new(&device);
    let options = MethodOptions::default();
    let err = by_name::<Counted>("gradcam+++", &options)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown method `gradcam+++`") && err.contains("gradcam++"),
        "{err}"
    );

    let err = by_name::<Counted>("guided-backprop", &options)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not available") && err.contains("saliency"),
        "{err}"
    );

    let cam = Cam::new(&GradCam).with_layer("conv9");
    match cam.explain(&model, batch(1, &device), &targets(1)) {
        Err(LumenError::UnknownLayer { valid, .. }) => assert_eq!(valid, vec!["conv1", "features"]),
        other => panic!("expected UnknownLayer, got {other:?}"),
    }

    let err = Cam::new(&GradCam)
        .explain(&model, batch(1, &device), &ClassLogit(vec![5]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LumenError::ClassOutOfRange {
                class: 5,
                num_classes: 5
            }
        ),
        "{err}"
    );

    let too_small = Tensor::zeros([1, 3, 2, 12], &device);
    let err = Saliency
        .explain(&model, too_small, &targets(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 4"), "{err}");

    let err = by_name::<Counted>("rollout", &options)
        .unwrap()
        .explain(&model, batch(1, &device), &targets(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention layers"), "{err}");

    // Named options are parsed at the edge; a bad name is an error listing the valid ones.
    for (error, value) in [
        ("grey".parse::<BaselineKind>().unwrap_err(), "grey"),
        ("simpson".parse::<IntegrationRule>().unwrap_err(), "simpson"),
        ("median".parse::<HeadFusion>().unwrap_err(), "median"),
    ] {
        let err = error.to_string();
        assert!(err.contains(value) && err.contains("valid"), "{err}");
    }
}
