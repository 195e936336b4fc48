//! The hook into burn-train: [`Monitors`] and the training strategy it hands to
//! `SupervisedTraining::with_training_strategy`.
//!
//! Why a strategy: burn-train 0.22's `Learner` has no callbacks. Its checkpointer sees
//! only a record of the weights (and only when its strategy decides to save), its
//! metrics see only the step outputs, and its metric loggers see numbers. A
//! `SupervisedLearningStrategy` is the one extension point that holds the model at
//! every step and every epoch's end, so [`MonitoredStrategy`] is burn-train's
//! single-device loop (same events, gradient accumulation, interruption, checkpoints
//! and early stopping) with the monitors called at those points.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use burn::optim::GradientsAccumulator;
use burn_train::metric::store::{Aggregate, Split};
use burn_train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent, LearnerModel,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainingComponents,
    TrainingError, TrainingItem, TrainingStrategy, ValidLoader,
};
use lumen_core::{Device, Result};

use crate::monitor::{Monitor, Point};
use crate::sink::{Moment, Sink, Sinks};

/// What one epoch left: burn-train's metrics for it (`train/Loss`, `valid/Accuracy`...)
/// and the time the monitors took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochRecord {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Optimizer steps at its end.
    pub step: u64,
    /// `split/metric` -> the epoch's mean.
    pub metrics: BTreeMap<String, f64>,
    /// Seconds the monitors ran during this epoch (its steps and its end).
    pub monitor_seconds: f64,
    /// Seconds the epoch took in all.
    pub epoch_seconds: f64,
}

struct Inner<M> {
    monitors: Vec<(Box<dyn Monitor<M>>, bool)>,
    sinks: Sinks,
    params: Vec<(String, String)>,
    metric_names: Vec<String>,
    history: Vec<EpochRecord>,
    failures: Vec<String>,
    monitor_seconds: f64,
}

/// The monitors and sinks of a run: build it, [`check`](Monitors::check) it against the
/// model, pass [`strategy`](Monitors::strategy) to burn-train, and read
/// [`history`](Monitors::history) afterwards. A cheap handle (clones share state).
///
/// ```no_run
/// # use lumen_train::*;
/// # fn demo<M>(model: M, images: Vec<image::RgbImage>, config: lumen_core::DataConfig,
/// #     probe: Vec<lumen_core::Tensor<4>>) -> lumen_core::Result<()>
/// # where M: burn_train::LearnerModel + lumen_core::ExplainableModel<Output = lumen_core::Tensor<2>> {
/// let monitors = Monitors::new()
///     .sink(TensorBoard::create("runs/shapes").map_err(sink_error)?)
///     .sink(Timeline::create("runs/shapes/timeline.html", "shapes").map_err(sink_error)?)
///     .monitor(ExplanationMonitor::new(images, config, "gradcam")?)
///     .monitor(FeatureMonitor::new(["layer2", "layer3"], probe)?.num_batches(2)?);
/// monitors.check(&model)?;
/// // burn-train as usual, with one more line:
/// //     SupervisedTraining::new(dir, train, valid)
/// //         .metrics((AccuracyMetric::new(), LossMetric::new()))
/// //         .with_training_strategy(monitors.strategy(device))
/// //         .launch(Learner::new(model, optimizer, lr));
/// # Ok(()) }
/// ```
pub struct Monitors<M> {
    inner: Arc<Mutex<Inner<M>>>,
}

impl<M> Clone for Monitors<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<M> Default for Monitors<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// A sink's construction error as a Lumen error (for `?` next to other Lumen calls).
pub fn sink_error(e: crate::sink::SinkError) -> lumen_core::LumenError {
    lumen_core::LumenError::InvalidArgument(e.0)
}

impl<M> Monitors<M> {
    /// No monitors, no sinks; burn-train's `Loss` and `Accuracy` forwarded.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                monitors: vec![],
                sinks: Sinks::new(),
                params: vec![],
                metric_names: vec!["Loss".into(), "Accuracy".into()],
                history: vec![],
                failures: vec![],
                monitor_seconds: 0.0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        // A monitor that panicked poisons the lock; what it left is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a sink.
    pub fn sink(self, sink: impl Sink + 'static) -> Self {
        self.lock().sinks.push(Box::new(sink));
        self
    }

    /// Add a monitor.
    pub fn monitor(self, monitor: impl Monitor<M> + 'static) -> Self {
        self.lock().monitors.push((Box::new(monitor), true));
        self
    }

    /// A run parameter (learning rate, batch size...), sent to the sinks at the start.
    pub fn param(self, key: &str, value: impl ToString) -> Self {
        self.lock()
            .params
            .push((key.to_string(), value.to_string()));
        self
    }

    /// The burn-train metric names whose epoch means are forwarded to the sinks as
    /// `train/{name}` and `valid/{name}` (default `Loss`, `Accuracy`; names not
    /// registered with burn-train are skipped).
    pub fn forward_metrics<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Self {
        self.lock().metric_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Check every monitor against the model; the first mistake is the error.
    pub fn check(&self, model: &M) -> Result<()> {
        self.lock()
            .monitors
            .iter()
            .try_for_each(|(m, _)| m.check(model))
    }

    /// The record of every finished epoch.
    pub fn history(&self) -> Vec<EpochRecord> {
        self.lock().history.clone()
    }

    /// Every sink and monitor failure of the run, as `who: what` lines (each was also
    /// logged as a warning when it happened).
    pub fn failures(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .failures
            .iter()
            .chain(inner.sinks.failures())
            .cloned()
            .collect()
    }

    /// Run the monitors due at `point` on `model` (a `valid()` copy, made only when
    /// one is due). A monitor that fails is switched off with a warning.
    pub fn run(&self, point: Point, at: Moment, model: impl FnOnce() -> M) {
        let mut inner = self.lock();
        if !inner
            .monitors
            .iter()
            .any(|(m, on)| *on && m.schedule().due(point))
        {
            return;
        }
        let started = Instant::now();
        let model = model();
        let Inner {
            monitors,
            sinks,
            failures,
            ..
        } = &mut *inner;
        for (monitor, on) in monitors.iter_mut() {
            if !*on || !monitor.schedule().due(point) {
                continue;
            }
            if let Err(e) = monitor.observe(&model, at, sinks) {
                let line = format!(
                    "{}: {e}; switched off for the rest of the run",
                    monitor.name()
                );
                log::warn!("{line}");
                failures.push(line);
                *on = false;
            }
        }
        inner.monitor_seconds += started.elapsed().as_secs_f64();
    }

    /// Send the run's parameters to the sinks (the strategy calls this at the start).
    pub fn start(&self) {
        let mut inner = self.lock();
        let params = inner.params.clone();
        if !params.is_empty() {
            inner.sinks.params(&params);
        }
    }

    /// Close an epoch: forward burn-train's metrics (`metric(name, split)` reads the
    /// event store), flush the sinks, keep the record.
    pub fn end_epoch(
        &self,
        at: Moment,
        epoch_seconds: f64,
        metric: impl Fn(&str, &Split) -> Option<f64>,
    ) {
        let mut inner = self.lock();
        let mut record = EpochRecord {
            epoch: at.epoch,
            step: at.step,
            monitor_seconds: std::mem::take(&mut inner.monitor_seconds),
            epoch_seconds,
            ..Default::default()
        };
        for name in inner.metric_names.clone() {
            for split in [Split::Train, Split::Valid] {
                if let Some(value) = metric(&name, &split) {
                    let tag = format!("{split}/{name}");
                    inner.sinks.scalar(&tag, at, value);
                    record.metrics.insert(tag, value);
                }
            }
        }
        inner.sinks.flush(at);
        inner.history.push(record);
    }

    /// Finish every sink (the strategy calls this at the end).
    pub fn finish(&self) {
        self.lock().sinks.finish();
    }
}

impl<M: LearnerModel> Monitors<M> {
    /// burn-train's single-device training on `device`, with these monitors.
    pub fn strategy(&self, device: Device) -> TrainingStrategy<M> {
        TrainingStrategy::Custom(Arc::new(MonitoredStrategy {
            device,
            monitors: self.clone(),
        }))
    }
}

/// The next item of a split; one that fails to load fails the run and ends the split,
/// as in burn-train's own loop.
fn next_item<T, E: Into<TrainingError>>(
    items: &mut (impl Iterator<Item = Result<T, E>> + ?Sized),
    interrupter: &Interrupter,
) -> Option<T> {
    match items.next()? {
        Ok(item) => Some(item),
        Err(err) => {
            interrupter.fail(err);
            None
        }
    }
}

/// burn-train's single-device loop with the monitors called at the start, after each
/// optimizer step and at each epoch's end (after validation, before checkpointing).
pub struct MonitoredStrategy<M> {
    device: Device,
    monitors: Monitors<M>,
}

impl<M: LearnerModel> SupervisedLearningStrategy<M> for MonitoredStrategy<M> {
    fn fit(
        &self,
        components: TrainingComponents<M>,
        mut learner: Learner<M>,
        train: TrainLoader<M>,
        valid: ValidLoader<M>,
        starting_epoch: usize,
    ) -> (M, SupervisedTrainingEventProcessor<M>) {
        let device = if self.device.is_autodiff() {
            self.device.clone()
        } else {
            self.device.clone().autodiff()
        };
        let train = train.to_device(&device);
        let valid = valid.to_device(&device.clone().inner());
        learner.fork(&device);
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let mut early_stopping = components.early_stopping;
        let interrupter = components.interrupter;
        let monitors = &self.monitors;
        let mut step = 0u64;
        monitors.start();
        monitors.run(
            Point::Start,
            Moment {
                epoch: starting_epoch.saturating_sub(1),
                step,
            },
            || learner.model().valid(),
        );

        for epoch in starting_epoch..=components.num_epochs {
            let started = Instant::now();
            interrupter.fail_on_error(processor.process_train(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: train.num_items(),
            }));
            // The training split, as burn-train's single-device epoch.
            let mut iterator = train.iter();
            let mut iteration = 0;
            let mut accumulator = GradientsAccumulator::new();
            let mut accumulated = 0;
            while let Some(item) = next_item(&mut *iterator, &interrupter) {
                iteration += 1;
                let item_progress = iterator.progress();
                let output = learner.train_step(item);
                let stepped = match components.grad_accumulation {
                    Some(accumulation) => {
                        accumulator.accumulate(&learner.model(), output.grads);
                        accumulated += 1;
                        if accumulation <= accumulated || item_progress.is_completed() {
                            learner.lr_step();
                            learner.optimizer_step(accumulator.grads());
                            accumulated = 0;
                            true
                        } else {
                            false
                        }
                    }
                    None => {
                        learner.lr_step();
                        learner.optimizer_step(output.grads);
                        true
                    }
                };
                let item = TrainingItem::new(
                    output.item,
                    item_progress,
                    Some(iteration),
                    Some(learner.lr_current()),
                );
                interrupter
                    .fail_on_error(processor.process_train(LearnerEvent::ProcessedItem(item)));
                if stepped {
                    step += 1;
                    monitors.run(Point::Step(step), Moment { epoch, step }, || {
                        learner.model().valid()
                    });
                }
                if interrupter.should_stop() {
                    break;
                }
            }
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndSplit(epoch)));
            if interrupter.should_stop() {
                if let Some(interruption) = interrupter.interruption() {
                    let reason = interruption.reason.as_deref().unwrap_or("reason unknown");
                    log::info!("Training interrupted: {reason}");
                }
                break;
            }

            // The validation split.
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: valid.num_items(),
            }));
            let model = learner.model().valid();
            let mut iterator = valid.iter();
            let mut iteration = 0;
            while let Some(item) = next_item(&mut *iterator, &interrupter) {
                iteration += 1;
                let item_progress = iterator.progress();
                let output = InferenceStep::step(&model, item);
                let item = TrainingItem::new(output, item_progress, Some(iteration), None);
                interrupter
                    .fail_on_error(processor.process_valid(LearnerEvent::ProcessedItem(item)));
                if interrupter.should_stop() {
                    break;
                }
            }
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::EndSplit(epoch)));
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndEpoch(epoch)));
            // The epoch's metrics must be in the store before they are read.
            interrupter.fail_on_error(processor.flush());

            let at = Moment { epoch, step };
            monitors.run(Point::EpochEnd(epoch), at, || model);
            let store = &components.event_store;
            monitors.end_epoch(at, started.elapsed().as_secs_f64(), |name, split| {
                store.find_metric(name, epoch, Aggregate::Mean, split)
            });

            if interrupter.should_stop() {
                break;
            }
            if let Some(checkpointer) = &mut checkpointer {
                checkpointer.checkpoint(&learner, epoch, store);
            }
            if let Some(early_stopping) = &mut early_stopping
                && early_stopping.should_stop(epoch, store)
            {
                break;
            }
        }
        monitors.finish();
        (learner.model(), processor)
    }
}
