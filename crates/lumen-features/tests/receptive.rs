//! The theoretical receptive field agrees with the support of the gradient field on a
//! linear stack (no nonlinearity, so no gradient can vanish inside the field), and the
//! occlusion field only covers pixels inside it.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};
use lumen_core::{ConvOp, ExplainableModel, LayerInfo, LayerKind, Tap};
use lumen_features::{FeatureVisualizer, Occlusion, theoretical_receptive_fields};

#[derive(Module, Debug)]
struct LinearStack {
    a: Conv2d,
    b: Conv2d,
    c: Conv2d,
}

fn conv(kernel: usize, stride: usize, dilation: usize, device: &Device) -> Conv2d {
    let padding = dilation * (kernel - 1) / 2;
    Conv2dConfig::new([3, 3], [kernel, kernel])
        .with_stride([stride, stride])
        .with_dilation([dilation, dilation])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device)
}

const OPS: [(usize, usize, usize); 3] = [(3, 1, 1), (3, 2, 1), (3, 1, 2)];

impl LinearStack {
    fn new(device: &Device) -> Self {
        let [a, b, c] = OPS.map(|(k, s, d)| conv(k, s, d, device));
        Self { a, b, c }
    }

    /// The same stack with fixed pseudo-random weights and biases.
    fn fixed(device: &Device) -> Self {
        let pseudo = |n: usize, salt: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 + salt) * 12.9898).sin() * 0.5)
                .collect()
        };
        let fix = |mut conv: Conv2d, salt: f32| {
            let dims = conv.weight.dims();
            let n = dims.iter().product();
            conv.weight = Param::from_tensor(Tensor::from_data(
                burn::tensor::TensorData::new(pseudo(n, salt), dims),
                device,
            ));
            conv.bias = conv.bias.map(|bias| {
                let [n] = bias.dims();
                Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(pseudo(n, salt + 0.5), [n]),
                    device,
                ))
            });
            conv
        };
        let Self { a, b, c } = Self::new(device);
        Self {
            a: fix(a, 1.0),
            b: fix(b, 2.0),
            c: fix(c, 3.0),
        }
    }
}

impl ExplainableModel for LinearStack {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let x = tap.visit("a", self.a.forward(input));
        let x = tap.visit("b", self.b.forward(x));
        let x = tap.visit("c", self.c.forward(x));
        x.flatten(1, 3)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        ["a", "b", "c"]
            .map(|n| LayerInfo::new(n, LayerKind::FeatureMap))
            .to_vec()
    }

    fn default_layer(&self) -> String {
        "c".into()
    }

    fn input_shape(&self) -> [usize; 3] {
        [3, 48, 48]
    }

    fn window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
        ["a", "b", "c"]
            .iter()
            .zip(OPS)
            .map(|(n, (k, s, d))| (n.to_string(), vec![ConvOp::new(k, s, d * (k - 1) / 2, d)]))
            .collect()
    }
}

#[test]
fn gradient_support_equals_the_theoretical_field() {
    let device = Device::default();
    let model = LinearStack::new(&device);
    let fields = theoretical_receptive_fields(&model);
    // a: 3, b: 3 + 2 = 5 (jump 2), c: dilated 3x3 (effective 5): 5 + 4 * 2 = 13.
    let sizes: Vec<usize> = fields.iter().map(|f| f.size).collect();
    assert_eq!(sizes, vec![3, 5, 13]);
    assert_eq!(fields[2].jump, 2);
    let input = Tensor::<4>::random([2, 3, 48, 48], Distribution::Normal(0.0, 1.0), &device);
    let visualizer = FeatureVisualizer::new(&model);
    for (layer, field) in ["a", "b", "c"].iter().zip(&fields) {
        let maps = visualizer
            .receptive_field_gradient(&input, layer, 1, None)
            .unwrap();
        assert_eq!(maps.len(), 2);
        for map in maps {
            let [x0, y0, x1, y1] = map.support.expect("a non-zero gradient");
            assert_eq!((x1 - x0, y1 - y0), (field.size, field.size), "{layer}");
            // The field is centred at start + position * jump.
            let centre = field.start + map.position[1] as f64 * field.jump as f64;
            assert!(((x0 + x1) as f64 / 2.0 - centre).abs() < 1e-9, "{layer}");
        }
    }
    // Occlusion only sees pixels whose patches overlap the field.
    let occlusion = visualizer
        .receptive_field_occlusion(
            &input,
            "c",
            1,
            None,
            Occlusion {
                patch: 4,
                stride: 4,
                batch_size: Some(16),
            },
        )
        .unwrap();
    let [x0, _, x1, _] = occlusion[0].support.unwrap();
    let gradient = visualizer
        .receptive_field_gradient(&input, "c", 1, None)
        .unwrap();
    let [g0, _, g1, _] = gradient[0].support.unwrap();
    assert!(x0 <= g0 && x1 >= g1 && x1 - x0 <= g1 - g0 + 2 * 4);
    // Both modes report the unit's own value on each unoccluded image.
    let features = visualizer.features(&input, "c").unwrap();
    let [_, _, h, w] = features.dims();
    let values: Vec<f32> = features.into_data().try_to_vec().unwrap();
    let plane = h * w;
    for maps in [&occlusion, &gradient] {
        for (image, map) in maps.iter().enumerate() {
            let [y, x] = map.position;
            let expected = values[(image * 3 + 1) * plane + y * w + x];
            assert!(expected.abs() > 1e-3, "a unit of a random input is not 0");
            assert!(
                (map.activation - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "{} vs {expected}",
                map.activation
            );
        }
    }
}

#[test]
fn bad_channels_and_positions_are_errors() {
    let device = Device::default();
    let model = LinearStack::new(&device);
    let input = Tensor::<4>::zeros([1, 3, 48, 48], &device);
    let visualizer = FeatureVisualizer::new(&model);
    let err = visualizer
        .receptive_field_gradient(&input, "c", 3, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("channel 3 is out of range"), "{err}");
    let err = visualizer
        .receptive_field_gradient(&input, "c", 0, Some([30, 0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside"), "{err}");
    let err = visualizer.features(&input, "d").unwrap_err().to_string();
    assert!(err.contains("unknown layer `d`"), "{err}");
}

#[test]
fn the_most_active_channel_is_the_arg_max_at_the_position() {
    let device = Device::default();
    // Fixed weights and images, so that the choice below is the same on every run
    // (random weights sometimes gave all four images the same one of 3 channels).
    let model = LinearStack::fixed(&device);
    let values: Vec<f32> = (0..4 * 3 * 48 * 48)
        .map(|i| ((i as f32 * 12.9898).sin() * 43758.547).fract())
        .collect();
    let input = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(values, [4, 3, 48, 48]),
        &device,
    );
    let visualizer = FeatureVisualizer::new(&model);
    let features = visualizer.features(&input, "b").unwrap();
    let [b, c, h, w] = features.dims();
    let values = features.into_data().try_to_vec::<f32>().unwrap();
    for at in [None, Some([3, 17])] {
        let [y, x] = at.unwrap_or([h / 2, w / 2]);
        let expected: Vec<usize> = (0..b)
            .map(|i| {
                let at_spot = |k: usize| values[((i * c + k) * h + y) * w + x];
                (0..c).fold(
                    0,
                    |best, k| if at_spot(k) > at_spot(best) { k } else { best },
                )
            })
            .collect();
        // The images pick different channels: the choice is per image, and not the
        // old default of channel 0.
        assert!(expected.iter().any(|&k| k != expected[0]), "{expected:?}");
        let channels = visualizer.most_active_channels(&input, "b", at).unwrap();
        assert_eq!(channels, expected, "at {at:?}");
    }
    let err = visualizer
        .most_active_channels(&input, "b", Some([40, 0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside"), "{err}");
}
