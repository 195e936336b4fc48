//! Floors every method is measured against: a heatmap that knows nothing (`random`)
//! and one that only knows that objects tend to sit in the middle (`center`).

use burn::tensor::{Tensor, TensorData};
use lumen_core::random::unit_values;
use lumen_core::{ExplainableModel, Heatmaps, Result, Target, to_host};
use lumen_methods::{Explanation, Method};

/// A uniformly random heatmap at input size. The values are seeded by `seed` and the
/// image's pixels: reproducible, yet different for a perturbed copy of an image (so
/// sensitivity sees it for the noise it is) and identical for a randomised model (so
/// the sanity checks fail it, as they should).
#[derive(Clone, Debug, Default)]
pub struct RandomMap {
    /// Mixed into every image's seed.
    pub seed: u64,
}

impl<M: ExplainableModel> Method<M> for RandomMap {
    fn name(&self) -> String {
        "random".into()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        _target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        let [b, c, h, w] = input.dims();
        let pixels = to_host(input.clone())?;
        let values: Vec<f32> = pixels
            .chunks(c * h * w)
            .flat_map(|image| {
                let seed = image
                    .iter()
                    .fold(self.seed ^ 0xCBF2_9CE4_8422_2325, |acc, v| {
                        (acc ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01B3)
                    });
                unit_values(h * w, seed)
            })
            .collect();
        Ok(Explanation::new(Heatmaps::new(Tensor::from_data(
            TensorData::new(values, [b, h, w]),
            &input.device(),
        ))))
    }
}

/// A centred isotropic Gaussian, `sigma` a fraction of the shorter image side.
#[derive(Clone, Debug)]
pub struct CenterPrior {
    /// Standard deviation as a fraction of the shorter side.
    pub sigma: f32,
}

impl Default for CenterPrior {
    fn default() -> Self {
        Self { sigma: 0.25 }
    }
}

impl CenterPrior {
    /// The map `[h*w]` (row-major) for an `h`x`w` image.
    pub fn map(&self, [h, w]: [usize; 2]) -> Vec<f32> {
        let sigma = self.sigma * h.min(w) as f32;
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        (0..h * w)
            .map(|p| {
                let (y, x) = ((p / w) as f32 - cy, (p % w) as f32 - cx);
                (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
            })
            .collect()
    }
}

impl<M: ExplainableModel> Method<M> for CenterPrior {
    fn name(&self) -> String {
        "center".into()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        _target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        let [b, _, h, w] = input.dims();
        let map = self.map([h, w]);
        let one = Tensor::<3>::from_data(TensorData::new(map, [1, h, w]), &input.device());
        Ok(Explanation::new(Heatmaps::new(one.expand([b, h, w]))))
    }
}
