//! Time per stage of a run (`lumen --profile`): read/decode, preprocess, forward,
//! backward, method math, post-processing, encode, write.
//!
//! Off by default, and then a stage costs one relaxed atomic load. When on, each
//! stage records its *own* time: a stage inside another (a forward inside a method)
//! is subtracted from the outer one, so the stages add up to the time they cover.
//! Stages on a device wait for it at their end ([`Device::sync`]), since GPU backends
//! return before the work is done; that wait costs some overlap, as any profiler's.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Device;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Vec<StageTime>> = Mutex::new(Vec::new());

thread_local! {
    /// Time spent in the inner stages of each open stage, innermost last.
    static OPEN: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Stage names used across the crates, in pipeline order.
pub mod stages {
    /// Reading and decoding image files.
    pub const DECODE: &str = "read/decode";
    /// Resize, crop, normalise, upload.
    pub const PREPROCESS: &str = "preprocess";
    /// Forward passes.
    pub const FORWARD: &str = "forward";
    /// Backward passes.
    pub const BACKWARD: &str = "backward";
    /// A method's own arithmetic (weights, sums, upsampling), outside its passes.
    pub const METHOD: &str = "method math";
    /// Predictions and maps read back to the host, normalisation, statistics.
    pub const POSTPROCESS: &str = "post-process";
    /// A quality metric's own work outside its passes (perturbed and imputed images,
    /// curves, map comparisons): `evaluate`.
    pub const METRICS: &str = "metrics";
    /// Figures drawn and encoded as PNG.
    pub const ENCODE: &str = "draw/encode";
    /// Files written.
    pub const WRITE: &str = "write";

    /// Every stage, in pipeline order.
    pub const ALL: [&str; 9] = [
        DECODE,
        PREPROCESS,
        FORWARD,
        BACKWARD,
        METHOD,
        POSTPROCESS,
        METRICS,
        ENCODE,
        WRITE,
    ];
}

/// One stage's total.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTime {
    /// The stage.
    pub stage: &'static str,
    /// Own time, summed over its calls.
    pub total: Duration,
    /// Times it ran.
    pub calls: usize,
}

/// Turn profiling on (for the rest of the process).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether profiling is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Totals so far: the stages of [`stages::ALL`] in pipeline order, then any others
/// in the order they first ran.
pub fn totals() -> Vec<StageTime> {
    let mut totals = TOTALS.lock().map(|t| t.clone()).unwrap_or_default();
    let rank = |t: &StageTime| {
        stages::ALL
            .iter()
            .position(|s| *s == t.stage)
            .unwrap_or(stages::ALL.len())
    };
    totals.sort_by_key(rank);
    totals
}

/// Forget the totals.
pub fn reset() {
    if let Ok(mut totals) = TOTALS.lock() {
        totals.clear();
    }
}

/// An open stage; its own time is recorded when it is dropped.
#[must_use = "a stage is timed until it is dropped"]
pub struct Stage {
    open: Option<(&'static str, Instant, Option<Device>)>,
}

/// Time a stage on the host until the returned guard drops.
pub fn stage(name: &'static str) -> Stage {
    open(name, None)
}

/// Time a stage that runs on `device`: the guard waits for the device at its end.
pub fn stage_on(name: &'static str, device: &Device) -> Stage {
    open(name, Some(device))
}

/// Run `work` as stage `name`.
pub fn timed<T>(name: &'static str, work: impl FnOnce() -> T) -> T {
    let _stage = stage(name);
    work()
}

fn open(name: &'static str, device: Option<&Device>) -> Stage {
    if !enabled() {
        return Stage { open: None };
    }
    OPEN.with(|open| open.borrow_mut().push(Duration::ZERO));
    Stage {
        open: Some((name, Instant::now(), device.cloned())),
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let Some((name, start, device)) = self.open.take() else {
            return;
        };
        if let Some(device) = device {
            // A failed sync surfaces at the next read of the device; timing goes on.
            device.sync().ok();
        }
        let elapsed = start.elapsed();
        let inner = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let inner = open.pop().unwrap_or_default();
            if let Some(outer) = open.last_mut() {
                *outer += elapsed;
            }
            inner
        });
        let own = elapsed.saturating_sub(inner);
        if let Ok(mut totals) = TOTALS.lock() {
            match totals.iter_mut().find(|t| t.stage == name) {
                Some(total) => {
                    total.total += own;
                    total.calls += 1;
                }
                None => totals.push(StageTime {
                    stage: name,
                    total: own,
                    calls: 1,
                }),
            }
        }
    }
}

/// The totals as a table: stage, milliseconds, calls, share of the profiled time.
pub fn table(totals: &[StageTime], wall: Duration) -> String {
    let profiled: Duration = totals.iter().map(|t| t.total).sum();
    let mut text = format!(
        "{:<14} {:>11} {:>7} {:>7}\n",
        "stage", "ms", "calls", "share"
    );
    for t in totals {
        let share = 100.0 * t.total.as_secs_f64() / profiled.as_secs_f64().max(1e-12);
        text += &format!(
            "{:<14} {:>11.1} {:>7} {:>6.1}%\n",
            t.stage,
            t.total.as_secs_f64() * 1e3,
            t.calls,
            share
        );
    }
    let other = wall.saturating_sub(profiled);
    text += &format!(
        "{:<14} {:>11.1}          (in no stage: model loading, reports, generated images)\n",
        "other",
        other.as_secs_f64() * 1e3,
    );
    if profiled > wall {
        // Stages on other threads (a batch's figures) ran during the model's.
        text += &format!(
            "{:<14} {:>11.1}          (stage time beyond the wall: stages ran at once on other threads)\n",
            "overlapped",
            (profiled - wall).as_secs_f64() * 1e3,
        );
    }
    text += &format!("{:<14} {:>11.1}\n", "wall", wall.as_secs_f64() * 1e3);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_stages_are_subtracted_from_outer_ones() {
        // Off: nothing recorded.
        drop(stage("off"));
        assert!(totals().iter().all(|t| t.stage != "off"));
        enable();
        let start = Instant::now();
        {
            let _outer = stage("outer-test");
            std::thread::sleep(Duration::from_millis(30));
            for _ in 0..2 {
                let _inner = stage("inner-test");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let wall = start.elapsed();
        let totals = totals();
        let find = |name| totals.iter().find(|t| t.stage == name).unwrap().clone();
        let (outer, inner) = (find("outer-test"), find("inner-test"));
        assert_eq!((outer.calls, inner.calls), (1, 2));
        assert!(inner.total >= Duration::from_millis(40), "{inner:?}");
        assert!(outer.total >= Duration::from_millis(30), "{outer:?}");
        // Own times add up to at most the wall time around them; counting the inner
        // stages in the outer one too would exceed it by their 40 ms.
        assert!(
            outer.total + inner.total <= wall,
            "{outer:?} {inner:?} {wall:?}"
        );
        let table = table(&totals, Duration::from_millis(100));
        assert!(
            table.contains("inner-test") && table.contains("wall"),
            "{table}"
        );
    }
}
