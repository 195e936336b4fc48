//! The [`Method`] trait every attribution method implements, and what it returns.

use lumen_core::{ExplainableModel, Heatmaps, LumenError, Result, Target, Tensor};

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
    /// An explanation that is only maps (CAMs, attention methods, a user's method).
    pub fn new(heatmaps: Heatmaps) -> Self {
        Self {
            heatmaps,
            attributions: None,
            convergence_delta: None,
        }
    }

    /// Attach the signed attribution tensor `[B,3,H,W]`.
    pub fn with_attributions(mut self, attributions: Tensor<4>) -> Self {
        self.attributions = Some(attributions);
        self
    }

    /// Attach a completeness gap per image.
    pub fn with_convergence_delta(mut self, delta: Vec<f32>) -> Self {
        self.convergence_delta = Some(delta);
        self
    }

    /// The explanations of consecutive chunks of a batch as one, in order: what a
    /// caller that explains a large batch a chunk at a time returns. The parts must come
    /// from the same method (all with attributions and deltas, or none).
    pub fn concat(parts: Vec<Explanation>) -> Result<Explanation> {
        if parts.is_empty() {
            return Err(LumenError::InvalidArgument("no explanation to join".into()));
        }
        if parts.len() == 1 {
            // One pass: nothing to join, nothing to copy.
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let mixed = |has: fn(&Explanation) -> bool| {
            let with = parts.iter().filter(|p| has(p)).count();
            with != 0 && with != parts.len()
        };
        if mixed(|p| p.attributions.is_some()) || mixed(|p| p.convergence_delta.is_some()) {
            return Err(LumenError::InvalidArgument(
                "the explanations to join differ in what they hold (attributions or \
                 convergence deltas): they come from different methods"
                    .into(),
            ));
        }
        // Chunks of one batch share their sizes; other parts would not stack.
        let sizes = |p: &Explanation| {
            let [_, h, w] = p.heatmaps.dims();
            (
                [h, w],
                p.attributions.as_ref().map(|a| a.dims()[1..].to_vec()),
            )
        };
        if let Some(odd) = parts.iter().find(|p| sizes(p) != sizes(&parts[0])) {
            return Err(LumenError::InvalidArgument(format!(
                "the explanations to join differ in size ({:?} and {:?}): they are not \
                 chunks of one batch",
                sizes(&parts[0]),
                sizes(odd)
            )));
        }
        let mut maps = Vec::with_capacity(parts.len());
        let mut attributions = vec![];
        let mut deltas: Option<Vec<f32>> = None;
        for part in parts {
            maps.push(part.heatmaps.into_tensor());
            attributions.extend(part.attributions);
            if let Some(delta) = part.convergence_delta {
                deltas.get_or_insert_with(Vec::new).extend(delta);
            }
        }
        Ok(Explanation {
            heatmaps: Heatmaps::new(Tensor::cat(maps, 0)),
            attributions: (!attributions.is_empty()).then(|| Tensor::cat(attributions, 0)),
            convergence_delta: deltas,
        })
    }
}

/// An attribution method.
pub trait Method<M: ExplainableModel> {
    /// The method's name, as on the command line.
    fn name(&self) -> String;

    /// The layer this method explains at for `model` (CAMs: the chosen layer or the
    /// model's default), or `None` for methods that work on the input.
    fn layer(&self, model: &M) -> Option<String> {
        let _ = model;
        None
    }

    /// Check, without a pass, that this method can explain `model`: its layer exists,
    /// the model has what the method reads. `explain` fails the same way; this is for
    /// callers that may end up with nothing to explain (a detector that finds no box)
    /// and must still refuse a method that could not have explained it.
    fn check(&self, model: &M) -> Result<()> {
        match self.layer(model) {
            Some(layer) => model.check_layers(&layer).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether every call of the target scores the output of the input batch itself
    /// (one or more clean passes, never perturbed, masked or interpolated copies, and
    /// no `for_images` before the first score). A caller may then give a target that
    /// picks its classes from that very output (the predicted class), and read the
    /// prediction from it instead of running a forward of its own.
    fn scores_the_input_itself(&self) -> bool {
        false
    }

    /// Explain a batch `[B,3,H,W]` for one target per image.
    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_core::Device;

    fn part(images: usize, side: usize, value: f32, with_delta: bool) -> Explanation {
        let device = Device::default();
        let maps = Tensor::<3>::full([images, side, side], value, &device);
        let explanation = Explanation::new(Heatmaps::new(maps));
        match with_delta {
            true => explanation.with_convergence_delta(vec![value; images]),
            false => explanation,
        }
    }

    #[test]
    fn chunks_join_in_order_and_mismatched_parts_are_refused() {
        let joined =
            Explanation::concat(vec![part(2, 4, 1.0, true), part(1, 4, 2.0, true)]).unwrap();
        assert_eq!(joined.heatmaps.dims(), [3, 4, 4]);
        assert_eq!(joined.convergence_delta, Some(vec![1.0, 1.0, 2.0]));
        let values = joined.heatmaps.to_vec().unwrap();
        assert_eq!((values[0], values[2 * 16]), (1.0, 2.0));
        for (parts, needle) in [
            (vec![], "no explanation"),
            (
                vec![part(1, 4, 1.0, true), part(1, 4, 1.0, false)],
                "differ in what",
            ),
            (
                vec![part(1, 4, 1.0, false), part(1, 5, 1.0, false)],
                "differ in size",
            ),
        ] {
            let error = Explanation::concat(parts).unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
    }
}
