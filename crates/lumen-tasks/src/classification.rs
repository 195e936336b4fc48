//! Image classification: logits `[B, classes]`, softmax predictions, class targets.

use lumen_core::burn::tensor::activation::softmax;
use lumen_core::{ClassLogit, LumenError, Result, Target, Tensor, predicted_classes, to_host};
use serde::{Deserialize, Serialize};

use crate::task::Task;

/// Classification with `num_classes` outputs and, when known, their names.
#[derive(Clone, Debug)]
pub struct Classification {
    /// Number of classes of the model's output.
    pub num_classes: usize,
    /// Class names, index-aligned with the logits.
    pub class_names: Option<Vec<String>>,
    /// How many classes a prediction ranks (the report's top-k).
    pub top_k: usize,
}

impl Classification {
    /// A classification task; predictions rank the top 5 classes.
    pub fn new(num_classes: usize, class_names: Option<Vec<String>>) -> Self {
        Self {
            num_classes,
            class_names,
            top_k: 5,
        }
    }

    /// `name (index)` when the class has a name, else `class index`.
    pub fn label(&self, class: usize) -> String {
        match self.class_names.as_ref().and_then(|n| n.get(class)) {
            Some(name) => format!("{name} ({class})"),
            None => format!("class {class}"),
        }
    }
}

/// One image's classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassPrediction {
    /// Arg-max class.
    pub class: usize,
    /// Its name, when the model has class names.
    pub name: Option<String>,
    /// Softmax probability of the arg-max class.
    pub confidence: f32,
    /// The most probable classes with their probabilities, best first.
    pub top: Vec<(usize, f32)>,
}

impl Task for Classification {
    type Output = Tensor<2>;
    type Prediction = ClassPrediction;
    type Request = usize;

    fn name(&self) -> &'static str {
        "classification"
    }

    fn predict(&self, logits: &Tensor<2>) -> Result<Vec<ClassPrediction>> {
        let [batch, classes] = logits.dims();
        if classes != self.num_classes {
            return Err(LumenError::shape(
                "classifier output",
                format!("[B,{}]", self.num_classes),
                format!("[{batch},{classes}]"),
            ));
        }
        let arg_max = predicted_classes(logits)?;
        let probabilities = to_host(softmax(logits.clone(), 1))?;
        Ok(arg_max
            .into_iter()
            .enumerate()
            .map(|(i, class)| {
                let row = &probabilities[i * classes..(i + 1) * classes];
                let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(self.top_k);
                ClassPrediction {
                    class,
                    name: self
                        .class_names
                        .as_ref()
                        .and_then(|n| n.get(class).cloned()),
                    confidence: row[class],
                    top: ranked,
                }
            })
            .collect())
    }

    fn default_request(&self, prediction: &ClassPrediction) -> usize {
        prediction.class
    }

    fn check_request(&self, class: &usize) -> Result<()> {
        if *class >= self.num_classes {
            return Err(LumenError::ClassOutOfRange {
                class: *class,
                num_classes: self.num_classes,
            });
        }
        Ok(())
    }

    fn target(&self, classes: &[usize]) -> Box<dyn Target<Tensor<2>>> {
        Box::new(ClassLogit(classes.to_vec()))
    }

    fn describe_prediction(&self, prediction: &ClassPrediction) -> String {
        format!(
            "predicted {} {:.1}%",
            self.label(prediction.class),
            100.0 * prediction.confidence
        )
    }

    fn describe_request(&self, class: &usize) -> String {
        self.label(*class)
    }

    fn ranked(&self, prediction: &ClassPrediction) -> Vec<(String, f32)> {
        prediction
            .top
            .iter()
            .map(|&(class, p)| (self.label(class), p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_core::Device;

    #[test]
    fn predictions_rank_softmax_probabilities() {
        let device = Device::default();
        let logits = Tensor::<2>::from_floats([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], &device);
        let task = Classification {
            top_k: 2,
            ..Classification::new(3, None)
        };
        let p = task.predict(&logits).unwrap();
        assert_eq!(p[0].class, 2);
        assert_eq!(p[1].class, 0);
        // softmax([0,1,2])[2] = e^2 / (1 + e + e^2)
        let e = std::f32::consts::E;
        assert!((p[0].confidence - e * e / (1.0 + e + e * e)).abs() < 1e-6);
        assert_eq!(p[0].top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(task.describe_request(&1), "class 1");
    }

    #[test]
    fn requests_out_of_range_and_wrong_outputs_are_errors() {
        let task = Classification::new(3, None);
        assert!(matches!(
            task.check_request(&3),
            Err(LumenError::ClassOutOfRange { class: 3, .. })
        ));
        task.check_request(&2).unwrap();
        let logits = Tensor::<2>::zeros([1, 4], &Device::default());
        assert!(task.predict(&logits).is_err());
    }
}
