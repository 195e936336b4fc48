//! A batch of heatmaps `[B,h,w]`, kept on the device until the caller asks for pixels.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Added to the range in min-max normalisation, as pytorch-grad-cam does, so that a
/// constant map becomes zeros instead of NaN.
pub const NORMALIZE_EPS: f32 = 1e-7;

/// How to treat the sign of a signed attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Polarity {
    /// Keep the values as they are.
    #[default]
    Signed,
    /// Only evidence for the target: `max(x, 0)`.
    Positive,
    /// Only evidence against the target: `max(-x, 0)`.
    Negative,
    /// Magnitude: `|x|`.
    Absolute,
}

/// A batch of heatmaps `[B,h,w]`.
#[derive(Clone, Debug)]
pub struct Heatmaps {
    maps: Tensor<3>,
}

impl Heatmaps {
    /// Wrap a `[B,h,w]` tensor.
    pub fn new(maps: Tensor<3>) -> Self {
        Self { maps }
    }

    /// `[B,h,w]`.
    pub fn dims(&self) -> [usize; 3] {
        self.maps.dims()
    }

    /// The underlying tensor.
    pub fn tensor(&self) -> &Tensor<3> {
        &self.maps
    }

    /// Consume into the underlying tensor.
    pub fn into_tensor(self) -> Tensor<3> {
        self.maps
    }

    /// Apply a polarity to signed maps.
    pub fn polarity(self, polarity: Polarity) -> Self {
        let maps = match polarity {
            Polarity::Signed => self.maps,
            Polarity::Positive => self.maps.clamp_min(0.0),
            Polarity::Negative => self.maps.neg().clamp_min(0.0),
            Polarity::Absolute => self.maps.abs(),
        };
        Self { maps }
    }

    /// Per-image min-max normalisation `(x - min) / (max - min + 1e-7)`.
    pub fn normalize(self) -> Self {
        let [b, h, w] = self.dims();
        let flat = self.maps.reshape([b, h * w]);
        let min = flat.clone().min_dim(1);
        let shifted = flat - min;
        let max = shifted.clone().max_dim(1);
        let maps = (shifted / (max + NORMALIZE_EPS)).reshape([b, h, w]);
        Self { maps }
    }

    /// Bilinear resize with `align_corners = false` (the PyTorch and OpenCV convention
    /// the reference libraries use; Burn's default is `true`).
    pub fn resize(self, size: [usize; 2]) -> Self {
        let [b, h, w] = self.dims();
        if [h, w] == size {
            return self;
        }
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size);
        let maps =
            interpolate(self.maps.reshape([b, 1, h, w]), options).reshape([b, size[0], size[1]]);
        Self { maps }
    }

    /// The output convention of the CAM references: normalise each map, then resize
    /// to the input size.
    pub fn normalize_and_resize(self, size: [usize; 2]) -> Self {
        self.normalize().resize(size)
    }

    /// All values, row-major `[B,h,w]`, copied to the host.
    pub fn to_vec(&self) -> crate::Result<Vec<f32>> {
        crate::to_host(self.maps.clone())
    }

    /// One image's map, row-major `[h,w]`, copied to the host.
    pub fn image(&self, index: usize) -> crate::Result<Vec<f32>> {
        let [_, h, w] = self.dims();
        crate::to_host(self.maps.clone().slice([index..index + 1, 0..h, 0..w]))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn maps(values: Vec<f32>, shape: [usize; 3]) -> Heatmaps {
        Heatmaps::new(Tensor::from_data(
            TensorData::new(values, shape),
            &Device::flex(),
        ))
    }

    #[test]
    fn normalize_is_per_image_min_max() {
        let h = maps(vec![1.0, 3.0, 2.0, 5.0, -4.0, -4.0, -4.0, -4.0], [2, 2, 2]).normalize();
        let v = h.to_vec().unwrap();
        let expected = [0.0, 0.5, 0.25, 1.0];
        for (a, e) in v[..4].iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{v:?}");
        }
        // A constant map becomes zeros, not NaN.
        assert!(v[4..].iter().all(|x| *x == 0.0), "{v:?}");
    }

    #[test]
    fn resize_uses_half_pixel_centres() {
        // torch.nn.functional.interpolate([[0, 1]], size=4, mode="bilinear",
        // align_corners=False) gives [0, 0.25, 0.75, 1] along the row.
        let h = maps(vec![0.0, 1.0], [1, 1, 2]).resize([1, 4]);
        let v = h.to_vec().unwrap();
        let expected = [0.0, 0.25, 0.75, 1.0];
        for (a, e) in v.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn polarity_splits_signs() {
        let h = maps(vec![-2.0, 3.0], [1, 1, 2]);
        assert_eq!(
            h.clone().polarity(Polarity::Positive).to_vec().unwrap(),
            vec![0.0, 3.0]
        );
        assert_eq!(
            h.clone().polarity(Polarity::Negative).to_vec().unwrap(),
            vec![2.0, 0.0]
        );
        assert_eq!(
            h.polarity(Polarity::Absolute).to_vec().unwrap(),
            vec![2.0, 3.0]
        );
    }
}
