//! Targets reduce a model output to one differentiable score per image. Methods are
//! written against [`Target`], so tasks (detection, segmentation) add targets, not
//! methods.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LumenError, Result};

/// Reduces a model output to one score per image, `[B]`.
pub trait Target<O> {
    /// The per-image scores; differentiable when the output is.
    fn score(&self, output: &O) -> Result<Tensor<1>>;

    /// The same target for a derived batch whose row `r` comes from image
    /// `images[r]` of the original batch (noise samples, path steps, masked copies).
    fn for_images(&self, images: &[usize]) -> Box<dyn Target<O>>;

    /// The target itself, for a method that reads what it names rather than only its
    /// scores (D-RISE compares a detector's boxes with the target's boxes). `None`
    /// by default: such a method then says which targets it takes.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The logit of one class per image (the pytorch-grad-cam `ClassifierOutputTarget`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassLogit(pub Vec<usize>);

/// The softmax probability of one class per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassProbability(pub Vec<usize>);

fn gather_classes(values: Tensor<2>, classes: &[usize]) -> Result<Tensor<1>> {
    let [batch, num_classes] = values.dims();
    if classes.len() != batch {
        return Err(LumenError::shape(
            "target classes",
            format!("one class per image ({batch})"),
            classes.len(),
        ));
    }
    if let Some(&class) = classes.iter().find(|&&c| c >= num_classes) {
        return Err(LumenError::ClassOutOfRange { class, num_classes });
    }
    let index: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [batch, 1]), &values.device());
    Ok(values.gather(1, index).reshape([batch]))
}

/// The entries of `per_image` for the rows of a derived batch (row `r` from image
/// `images[r]`), or the first image it has no entry for.
fn pick_rows<T: Clone>(per_image: &[T], images: &[usize]) -> std::result::Result<Vec<T>, usize> {
    images
        .iter()
        .map(|&i| per_image.get(i).cloned().ok_or(i))
        .collect()
}

/// What `for_images` hands out when a row comes from an image the target has no entry
/// for (a target with fewer entries than the batch): the error the batch itself would
/// have met, at the first score, instead of an index panic.
#[derive(Clone, Debug)]
struct MissingImages {
    /// What the entries are ("target classes").
    what: &'static str,
    /// Entries the target has.
    entries: usize,
    /// The first image without one.
    image: usize,
}

impl<O> Target<O> for MissingImages {
    fn score(&self, _: &O) -> Result<Tensor<1>> {
        Err(LumenError::shape(
            self.what,
            format!("one per image (at least {})", self.image + 1),
            self.entries,
        ))
    }

    fn for_images(&self, _: &[usize]) -> Box<dyn Target<O>> {
        Box::new(self.clone())
    }
}

/// `build(entries)` for the rows of a derived batch, or, when a row's image has no
/// entry, a target whose every score fails with the batch's own shape error.
pub fn target_for_rows<O, T: Clone>(
    what: &'static str,
    per_image: &[T],
    images: &[usize],
    build: impl FnOnce(Vec<T>) -> Box<dyn Target<O>>,
) -> Box<dyn Target<O>>
where
    O: 'static,
{
    match pick_rows(per_image, images) {
        Ok(rows) => build(rows),
        Err(image) => Box::new(MissingImages {
            what,
            entries: per_image.len(),
            image,
        }),
    }
}

impl Target<Tensor<2>> for ClassLogit {
    fn score(&self, output: &Tensor<2>) -> Result<Tensor<1>> {
        gather_classes(output.clone(), &self.0)
    }

    fn for_images(&self, images: &[usize]) -> Box<dyn Target<Tensor<2>>> {
        target_for_rows("target classes", &self.0, images, |c| Box::new(Self(c)))
    }
}

impl Target<Tensor<2>> for ClassProbability {
    fn score(&self, output: &Tensor<2>) -> Result<Tensor<1>> {
        gather_classes(softmax(output.clone(), 1), &self.0)
    }

    fn for_images(&self, images: &[usize]) -> Box<dyn Target<Tensor<2>>> {
        target_for_rows("target classes", &self.0, images, |c| Box::new(Self(c)))
    }
}

/// The arg-max class of each row of logits `[B, classes]`.
pub fn predicted_classes(logits: &Tensor<2>) -> Result<Vec<usize>> {
    let [batch, _] = logits.dims();
    let classes = logits
        .clone()
        .argmax(1)
        .reshape([batch])
        .try_into_vec_as::<i64>()
        .map_err(LumenError::device)?;
    Ok(classes.into_iter().map(|c| c as usize).collect())
}

/// pytorch-grad-cam's `SemanticSegmentationTarget` per image: the logits of one class
/// weighted by a mask on the output grid and summed. A request not resolved against a
/// prediction (no mask) sums every pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRegionScore {
    /// Class per image.
    pub classes: Vec<usize>,
    /// Weights on the output grid per image, row-major `[h*w]`.
    pub masks: Vec<Option<Vec<f32>>>,
}

impl Target<Tensor<4>> for ClassRegionScore {
    fn score(&self, output: &Tensor<4>) -> Result<Tensor<1>> {
        let [batch, classes, h, w] = output.dims();
        if self.classes.len() != batch || self.masks.len() != batch {
            return Err(LumenError::shape(
                "segmentation targets",
                format!("one per image ({batch})"),
                self.classes.len(),
            ));
        }
        let plane = h * w;
        let mut weights = vec![0f32; batch * classes * plane];
        for (b, (&class, mask)) in self.classes.iter().zip(&self.masks).enumerate() {
            if class >= classes {
                return Err(LumenError::ClassOutOfRange {
                    class,
                    num_classes: classes,
                });
            }
            let row =
                &mut weights[(b * classes + class) * plane..(b * classes + class + 1) * plane];
            match mask {
                Some(mask) if mask.len() != plane => {
                    return Err(LumenError::shape(
                        "segmentation target mask",
                        format!("{h}x{w} (the output grid)"),
                        format!("{} values", mask.len()),
                    ));
                }
                Some(mask) => row.copy_from_slice(mask),
                None => row.fill(1.0),
            }
        }
        let weights = Tensor::<4>::from_data(
            TensorData::new(weights, [batch, classes, h, w]),
            &output.device(),
        );
        Ok((output.clone() * weights)
            .sum_dims(&[1, 2, 3])
            .reshape([batch]))
    }

    fn for_images(&self, images: &[usize]) -> Box<dyn Target<Tensor<4>>> {
        // Picked by index: only the rows' masks are copied, not every image's.
        let entries: Vec<usize> = (0..self.classes.len().min(self.masks.len())).collect();
        target_for_rows("segmentation targets", &entries, images, |rows| {
            Box::new(Self {
                classes: rows.iter().map(|&i| self.classes[i]).collect(),
                masks: rows.iter().map(|&i| self.masks[i].clone()).collect(),
            })
        })
    }
}
