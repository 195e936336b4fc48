//! A quiet progress renderer for burn-train: one line per finished split. Without its
//! `tui` feature (which `lumen-train` leaves off) burn-train prints a debug dump of
//! its progress after every batch.

use std::time::Instant;

use burn_train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn_train::metric::MetricDefinition;
use burn_train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Prints `epoch 2/6 train: 320 items in 9.8 s` when a split ends, on stderr.
pub struct LineRenderer {
    label: String,
    epoch: usize,
    epochs: usize,
    split: String,
    items: usize,
    started: Instant,
}

impl Default for LineRenderer {
    fn default() -> Self {
        Self {
            label: "training".into(),
            epoch: 0,
            epochs: 0,
            split: String::new(),
            items: 0,
            started: Instant::now(),
        }
    }
}

impl LineRenderer {
    /// A renderer for `SupervisedTraining::renderer(Box::new(LineRenderer::new()))`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        epochs: usize,
        starting: usize,
        _items: Option<usize>,
        label: Option<&str>,
    ) {
        self.epochs = epochs;
        self.epoch = starting;
        self.label = label.unwrap_or("training").to_string();
        eprintln!("{}: {} epochs", self.label, epochs);
    }
    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }
    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
        self.items = 0;
        self.started = Instant::now();
    }
    fn update_split(&mut self, items_processed: usize) {
        self.items = items_processed;
    }
    fn end_split(&mut self) {
        eprintln!(
            "epoch {}/{} {}: {} items in {:.1} s",
            self.epoch.max(1),
            self.epochs,
            self.split,
            self.items,
            self.started.elapsed().as_secs_f64()
        );
    }
    fn end(&mut self) {}
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, _total_items: usize) {
        self.split = name.to_string();
        self.started = Instant::now();
    }
    fn update_test_progress(&mut self, items_processed: usize) {
        self.items = items_processed;
    }
    fn end_test(&mut self) {
        eprintln!(
            "test {}: {} items in {:.1} s",
            self.split,
            self.items,
            self.started.elapsed().as_secs_f64()
        );
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: MetricDefinition) {}
}
