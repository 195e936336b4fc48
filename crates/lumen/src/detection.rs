//! Object detection through the facade: FCOS detectors from the zoo as [`TaskModel`]s,
//! so that every method explains a detection with the box-score target.

use lumen_core::{DataConfig, Device};
use lumen_models::{Detector, LoadedDetector};
use lumen_tasks::ObjectDetection;

use crate::api::TaskModel;

impl TaskModel for LoadedDetector {
    type Model = Detector;
    type Task = ObjectDetection;

    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &Detector {
        &self.model
    }
    fn task(&self) -> ObjectDetection {
        ObjectDetection::new(self.model.num_classes(), self.class_names.clone())
    }
    fn data_config(&self) -> &DataConfig {
        &self.data_config
    }
    fn device(&self) -> &Device {
        &self.device
    }
}
