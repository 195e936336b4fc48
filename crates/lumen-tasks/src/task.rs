//! The task abstraction.

use lumen_core::{Result, Target};
use serde::Serialize;

/// A box a figure outlines: corners `[x1, y1, x2, y2]` in input pixels, the class
/// (its colour) and a caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Outline {
    /// Corners in input pixels.
    pub bbox: [f32; 4],
    /// Class index.
    pub class: usize,
    /// Caption (`triangle 0.73`).
    pub caption: String,
}

/// What a kind of model predicts and what of it can be explained.
///
/// - `predict` describes the model's output per image (figures, JSON, reports);
/// - a `Request` says what to explain in one image (a class, a box, a region); its
///   default comes from the prediction;
/// - `target` turns one request per image into the [`Target`] the methods use.
pub trait Task {
    /// The model output this task reads (logits `[B, classes]` for classification).
    type Output;
    /// One image's prediction.
    type Prediction: Clone + std::fmt::Debug + Serialize;
    /// What to explain in one image.
    type Request: Clone + std::fmt::Debug + Serialize;

    /// The task's name (`classification`, ...).
    fn name(&self) -> &'static str;

    /// The prediction of each image of a batch.
    fn predict(&self, output: &Self::Output) -> Result<Vec<Self::Prediction>>;

    /// What is explained when the user asks for nothing in particular.
    fn default_request(&self, prediction: &Self::Prediction) -> Self::Request;

    /// Check a user's request (e.g. a class index in range) before any work.
    fn check_request(&self, request: &Self::Request) -> Result<()>;

    /// Complete a checked request against its image's prediction (a segmentation
    /// request for the predicted region becomes that region's mask). Unchanged by
    /// default.
    fn resolve(
        &self,
        request: Self::Request,
        prediction: &Self::Prediction,
    ) -> Result<Self::Request> {
        let _ = prediction;
        Ok(request)
    }

    /// The target of one resolved request per image.
    fn target(&self, requests: &[Self::Request]) -> Box<dyn Target<Self::Output>>;

    /// What a figure outlines for a request: a detector's explained boxes. Nothing by
    /// default.
    fn outlines(&self, request: &Self::Request, prediction: &Self::Prediction) -> Vec<Outline> {
        let _ = (request, prediction);
        vec![]
    }

    /// One line about a prediction, for figure titles and text output.
    fn describe_prediction(&self, prediction: &Self::Prediction) -> String;

    /// A short name of a request, for figure titles ("explaining ...").
    fn describe_request(&self, request: &Self::Request) -> String;

    /// What the scores of [`Task::ranked`] are, for table headers.
    fn ranked_measure(&self) -> &'static str {
        "probability"
    }

    /// The ranked alternatives of a prediction with their scores (a report's top-k
    /// list).
    fn ranked(&self, prediction: &Self::Prediction) -> Vec<(String, f32)>;

    /// Whether a prediction's scores are all finite (a model whose output overflowed
    /// or holds NaN predicts nothing): by default, the scores of [`Task::ranked`].
    fn is_finite(&self, prediction: &Self::Prediction) -> bool {
        self.ranked(prediction)
            .iter()
            .all(|(_, score)| score.is_finite())
    }

    /// Drop what a prediction holds per pixel, keeping its summary (what is serialised):
    /// what a long batch keeps of each image once its figures and index line are
    /// written. Nothing by default.
    fn release_maps(&self, prediction: &mut Self::Prediction) {
        let _ = prediction;
    }
}
