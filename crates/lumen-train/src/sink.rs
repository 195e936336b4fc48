//! Where monitors send what they measure: scalars, images and histograms at a point of
//! the training run. A [`Sink`] writes them somewhere (TensorBoard files, an MLflow
//! server, the HTML timeline); [`Sinks`] fans out to several and keeps training going
//! when one fails.

use image::RgbImage;

/// A point of the training run: the epoch (from 1, as burn-train counts) and the
/// global optimizer step (from 0 before the first step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
}

/// Why a sink could not write.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// What a sink returns.
pub type SinkResult = Result<(), SinkError>;

/// The distribution of values as a histogram with TensorBoard's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub count: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_squares: f64,
    /// Right edge of each bucket, increasing; the last is `max`.
    pub bucket_limits: Vec<f64>,
    /// Values per bucket.
    pub bucket_counts: Vec<f64>,
}

/// Buckets of [`Histogram::of`].
pub const HISTOGRAM_BUCKETS: usize = 64;

impl Histogram {
    /// [`HISTOGRAM_BUCKETS`] equal buckets from the smallest to the largest finite
    /// value (one bucket when all are equal); non-finite values are left out.
    pub fn of(values: &[f32]) -> Self {
        let finite = || values.iter().map(|&v| v as f64).filter(|v| v.is_finite());
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut count, mut sum, mut sum_squares) = (0.0, 0.0, 0.0);
        for v in finite() {
            min = min.min(v);
            max = max.max(v);
            count += 1.0;
            sum += v;
            sum_squares += v * v;
        }
        if count == 0.0 {
            return Self {
                min: 0.0,
                max: 0.0,
                count: 0.0,
                sum: 0.0,
                sum_squares: 0.0,
                bucket_limits: vec![],
                bucket_counts: vec![],
            };
        }
        let buckets = if max > min { HISTOGRAM_BUCKETS } else { 1 };
        let width = (max - min) / buckets as f64;
        let mut bucket_counts = vec![0.0; buckets];
        for v in finite() {
            let b = if width > 0.0 {
                (((v - min) / width) as usize).min(buckets - 1)
            } else {
                0
            };
            bucket_counts[b] += 1.0;
        }
        let bucket_limits = (1..=buckets)
            .map(|b| {
                if b == buckets {
                    max
                } else {
                    min + width * b as f64
                }
            })
            .collect();
        Self {
            min,
            max,
            count,
            sum,
            sum_squares,
            bucket_limits,
            bucket_counts,
        }
    }
}

/// A destination for what the monitors measure. Every call may fail; [`Sinks`] turns
/// a failure into a warning so that training goes on.
pub trait Sink: Send {
    /// Shown in warnings (`tensorboard runs/shapes`, `mlflow http://…`).
    fn name(&self) -> String;

    /// The run's parameters (learning rate, batch size, method…), once at the start.
    fn params(&mut self, params: &[(String, String)]) -> SinkResult {
        let _ = params;
        Ok(())
    }

    /// One number.
    fn scalar(&mut self, tag: &str, at: Moment, value: f64) -> SinkResult;

    /// One picture.
    fn image(&mut self, tag: &str, at: Moment, image: &RgbImage) -> SinkResult;

    /// One distribution.
    fn histogram(&mut self, tag: &str, at: Moment, histogram: &Histogram) -> SinkResult;

    /// The end of an epoch: a point to make everything so far durable.
    fn flush(&mut self, at: Moment) -> SinkResult {
        let _ = at;
        Ok(())
    }

    /// The end of the run.
    fn finish(&mut self) -> SinkResult {
        Ok(())
    }
}

/// After this many failures in a row a sink is switched off for the rest of the run:
/// a server that is down would otherwise cost a timeout on every call.
pub const FAILURES_BEFORE_DISABLING: usize = 3;

struct Entry {
    sink: Box<dyn Sink>,
    failures_in_a_row: usize,
    disabled: bool,
}

/// Several sinks behind one: each call goes to every sink still enabled; a failure
/// is logged as a warning (`log::warn!`), kept in [`Sinks::failures`], and training
/// goes on.
#[derive(Default)]
pub struct Sinks {
    entries: Vec<Entry>,
    failures: Vec<String>,
}

impl Sinks {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sink.
    pub fn push(&mut self, sink: Box<dyn Sink>) {
        self.entries.push(Entry {
            sink,
            failures_in_a_row: 0,
            disabled: false,
        });
    }

    /// Whether there is no sink.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every failure so far, as `sink: error` lines.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Call every enabled sink. `reaches_destination`: whether a success shows that the
    /// destination works. Scalars and histograms are buffered (MLflow sends scalars at
    /// the flush and has no histograms), so their success must not reset the count of
    /// failures in a row.
    fn each(
        &mut self,
        what: &str,
        reaches_destination: bool,
        mut call: impl FnMut(&mut dyn Sink) -> SinkResult,
    ) {
        for entry in self.entries.iter_mut().filter(|e| !e.disabled) {
            match call(entry.sink.as_mut()) {
                Ok(()) if reaches_destination => entry.failures_in_a_row = 0,
                Ok(()) => {}
                Err(e) => {
                    entry.failures_in_a_row += 1;
                    let mut line = format!("{}: {what} failed: {e}", entry.sink.name());
                    if entry.failures_in_a_row >= FAILURES_BEFORE_DISABLING {
                        entry.disabled = true;
                        line.push_str(&format!(
                            "; {FAILURES_BEFORE_DISABLING} failures in a row, this sink is off for the rest of the run"
                        ));
                    }
                    log::warn!("{line}; training goes on");
                    self.failures.push(line);
                }
            }
        }
    }

    /// [`Sink::params`] on every sink.
    pub fn params(&mut self, params: &[(String, String)]) {
        self.each("logging parameters", true, |s| s.params(params));
    }

    /// [`Sink::scalar`] on every sink.
    pub fn scalar(&mut self, tag: &str, at: Moment, value: f64) {
        self.each(&format!("scalar {tag}"), false, |s| {
            s.scalar(tag, at, value)
        });
    }

    /// [`Sink::image`] on every sink.
    pub fn image(&mut self, tag: &str, at: Moment, image: &RgbImage) {
        self.each(&format!("image {tag}"), true, |s| s.image(tag, at, image));
    }

    /// [`Sink::histogram`] on every sink.
    pub fn histogram(&mut self, tag: &str, at: Moment, histogram: &Histogram) {
        self.each(&format!("histogram {tag}"), false, |s| {
            s.histogram(tag, at, histogram)
        });
    }

    /// [`Sink::flush`] on every sink.
    pub fn flush(&mut self, at: Moment) {
        self.each("flush", true, |s| s.flush(at));
    }

    /// [`Sink::finish`] on every sink.
    pub fn finish(&mut self) {
        self.each("finish", true, |s| s.finish());
    }
}

/// PNG bytes of an image (in memory: cannot fail for an RGB image).
pub(crate) fn png_bytes(image: &RgbImage) -> Vec<u8> {
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("encoding a PNG in memory cannot fail");
    png.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_finite_value_once_and_spans_the_range() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut with_nan = values.clone();
        with_nan.push(f32::NAN);
        let h = Histogram::of(&with_nan);
        assert_eq!(h.count, 1000.0);
        assert_eq!(h.bucket_counts.iter().sum::<f64>(), 1000.0);
        assert_eq!(h.bucket_limits.len(), HISTOGRAM_BUCKETS);
        assert_eq!(*h.bucket_limits.last().unwrap(), h.max);
        assert!(h.bucket_limits.windows(2).all(|w| w[0] < w[1]));
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        assert!((h.sum - sum).abs() < 1e-9);
        // A constant input is one bucket, not a division by zero.
        let flat = Histogram::of(&[2.0; 5]);
        assert_eq!(flat.bucket_counts, vec![5.0]);
        assert_eq!(flat.bucket_limits, vec![2.0]);
    }

    /// Fails scalars when `scalars_fail`, images always (a server that is down while
    /// the scalars are only buffered).
    struct Failing {
        scalars_fail: bool,
    }
    impl Sink for Failing {
        fn name(&self) -> String {
            "failing".into()
        }
        fn scalar(&mut self, _: &str, _: Moment, _: f64) -> SinkResult {
            if self.scalars_fail {
                return Err(SinkError("disk full".into()));
            }
            Ok(())
        }
        fn image(&mut self, _: &str, _: Moment, _: &RgbImage) -> SinkResult {
            Err(SinkError("connection refused".into()))
        }
        fn histogram(&mut self, _: &str, _: Moment, _: &Histogram) -> SinkResult {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_reported_then_switched_off() {
        let mut sinks = Sinks::new();
        sinks.push(Box::new(Failing { scalars_fail: true }));
        let at = Moment { epoch: 1, step: 0 };
        for _ in 0..10 {
            sinks.scalar("loss", at, 1.0);
        }
        assert_eq!(sinks.failures().len(), FAILURES_BEFORE_DISABLING);
        assert!(sinks.failures()[0].contains("disk full"));
        assert!(
            sinks
                .failures()
                .last()
                .unwrap()
                .contains("off for the rest")
        );
    }

    #[test]
    fn buffered_scalars_do_not_hide_a_dead_destination() {
        let mut sinks = Sinks::new();
        sinks.push(Box::new(Failing {
            scalars_fail: false,
        }));
        let at = Moment { epoch: 1, step: 0 };
        for _ in 0..10 {
            sinks.image("sample", at, &RgbImage::new(2, 2));
            sinks.scalar("confidence", at, 0.5);
        }
        assert_eq!(sinks.failures().len(), FAILURES_BEFORE_DISABLING);
        assert!(
            sinks
                .failures()
                .last()
                .unwrap()
                .contains("off for the rest")
        );
    }
}
