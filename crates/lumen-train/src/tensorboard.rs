//! TensorBoard event files: scalars, PNG images and histograms, readable by
//! TensorBoard itself (and by `wandb sync`, which imports TensorBoard folders).
//!
//! A small writer, not a crate: `tensorboard-rs` has not been released since 2021 and
//! panics on I/O errors, and the crates that generate TensorFlow's protos need
//! `protoc` at build time. The format is small: each record is
//! `len: u64 LE, masked_crc32c(len): u32, data, masked_crc32c(data): u32`, and the
//! data is a protobuf `Event` (the messages below, derived with prost, carry only the
//! fields written, with TensorFlow's field numbers).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use image::RgbImage;
use prost::Message;

use crate::sink::{Histogram, Moment, Sink, SinkError, SinkResult, png_bytes};

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "EventKind", tags = "3, 5")]
    pub what: Option<EventKind>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventKind {
    /// The first event of a file: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Values at a step.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// Tag, e.g. `features/layer2/mean`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The value.
    #[prost(oneof = "ValueKind", tags = "2, 4, 5")]
    pub value: Option<ValueKind>,
}

/// `Summary.Value.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    /// A scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// An encoded image.
    #[prost(message, tag = "4")]
    Image(SummaryImage),
    /// A histogram.
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
}

/// `tensorflow.Summary.Image`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryImage {
    /// Pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 3: RGB.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// PNG bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.HistogramProto`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Count.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of squares.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edges of the buckets.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Counts.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// TensorFlow's masked CRC32C of a record's length and data.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record: length, its checksum, the data, its checksum.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The events of a file, checking every checksum; an error names the damaged record.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = vec![];
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| format!("record {} is cut short", events.len()))?;
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        if masked_crc32c(&header[..8]) != u32::from_le_bytes(header[8..12].try_into().unwrap()) {
            return Err(format!("record {}: length checksum differs", events.len()));
        }
        let len = usize::try_from(len).map_err(|_| "record too long".to_string())?;
        let data = bytes
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| format!("record {} is cut short", events.len()))?;
        let crc = bytes
            .get(at + 12 + len..at + 16 + len)
            .ok_or_else(|| format!("record {} is cut short", events.len()))?;
        if masked_crc32c(data) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(format!("record {}: data checksum differs", events.len()));
        }
        events.push(Event::decode(data).map_err(|e| format!("record {}: {e}", events.len()))?);
        at += 16 + len;
    }
    Ok(events)
}

/// Writes one TensorBoard event file in a run folder (`--logdir` of TensorBoard).
pub struct TensorBoard {
    path: PathBuf,
    out: BufWriter<File>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl TensorBoard {
    /// Create `dir` if needed and start a new event file in it
    /// (`events.out.tfevents.<time>.<host>.<pid>.lumen`: TensorBoard finds files by
    /// the `tfevents` part).
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, SinkError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            SinkError(format!(
                "cannot create the TensorBoard folder {}: {e}",
                dir.display()
            ))
        })?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.lumen",
            now() as u64,
            std::process::id()
        ));
        let file = File::create(&path)
            .map_err(|e| SinkError(format!("cannot create {}: {e}", path.display())))?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        writer.write(Event {
            wall_time: now(),
            step: 0,
            what: Some(EventKind::FileVersion("brain.Event:2".into())),
        })?;
        writer.out.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: Event) -> SinkResult {
        self.out.write_all(&record(&event.encode_to_vec()))?;
        Ok(())
    }

    fn value(&mut self, tag: &str, at: Moment, value: ValueKind) -> SinkResult {
        self.write(Event {
            wall_time: now(),
            step: at.step as i64,
            what: Some(EventKind::Summary(Summary {
                value: vec![SummaryValue {
                    tag: tag.to_string(),
                    value: Some(value),
                }],
            })),
        })
    }
}

impl Sink for TensorBoard {
    fn name(&self) -> String {
        format!("tensorboard {}", self.path.display())
    }

    fn scalar(&mut self, tag: &str, at: Moment, value: f64) -> SinkResult {
        self.value(tag, at, ValueKind::SimpleValue(value as f32))
    }

    fn image(&mut self, tag: &str, at: Moment, image: &RgbImage) -> SinkResult {
        let image = SummaryImage {
            height: image.height() as i32,
            width: image.width() as i32,
            colorspace: 3,
            encoded_image_string: png_bytes(image),
        };
        self.value(tag, at, ValueKind::Image(image))
    }

    fn histogram(&mut self, tag: &str, at: Moment, h: &Histogram) -> SinkResult {
        let histo = HistogramProto {
            min: h.min,
            max: h.max,
            num: h.count,
            sum: h.sum,
            sum_squares: h.sum_squares,
            bucket_limit: h.bucket_limits.clone(),
            bucket: h.bucket_counts.clone(),
        };
        self.value(tag, at, ValueKind::Histo(histo))
    }

    fn flush(&mut self, _at: Moment) -> SinkResult {
        self.out.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> SinkResult {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's own test vectors (tensorflow/core/lib/hash/crc32c_test.cc):
        // crc32c("123456789") = 0xe3069283, and the mask is a rotation plus a constant.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc32c(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
        assert_ne!(masked_crc32c(b"123456789"), crc32c::crc32c(b"123456789"));
    }

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut tb = TensorBoard::create(dir.path().join("run")).unwrap();
        let at = Moment { epoch: 1, step: 7 };
        tb.scalar("train/loss", at, 0.25).unwrap();
        tb.image("interpretation/sample_0", at, &RgbImage::new(3, 2))
            .unwrap();
        tb.histogram(
            "features/l/activations",
            at,
            &Histogram::of(&[1.0, 2.0, 3.0]),
        )
        .unwrap();
        tb.finish().unwrap();
        let mut bytes = std::fs::read(tb.path()).unwrap();
        let events = read_events(&bytes).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0].what,
            Some(EventKind::FileVersion("brain.Event:2".into()))
        );
        let Some(EventKind::Summary(s)) = &events[1].what else {
            panic!("a summary")
        };
        assert_eq!(events[1].step, 7);
        assert_eq!(s.value[0].tag, "train/loss");
        assert_eq!(s.value[0].value, Some(ValueKind::SimpleValue(0.25)));
        let Some(EventKind::Summary(s)) = &events[2].what else {
            panic!("a summary")
        };
        let Some(ValueKind::Image(img)) = &s.value[0].value else {
            panic!("an image")
        };
        assert_eq!((img.width, img.height, img.colorspace), (3, 2, 3));
        assert_eq!(&img.encoded_image_string[1..4], b"PNG");
        // Flip one byte of the last record's data: the reader names the record.
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        assert!(read_events(&bytes).unwrap_err().contains("record 3"));
    }
}
