//! A content-addressed cache of explanations (`--cache DIR`): a repeated or resumed
//! run takes what was already computed instead of running the model again.
//!
//! The key is a SHA-256 over everything the result depends on: the model's weights
//! (the file's bytes, or the embedded bytes of a bundled model) and class count, the
//! method and all its options, the target, the preprocessing and the input file's
//! bytes. The device is not part of it: backends agree to float rounding. An entry
//! holds the result (prediction, target, layer, convergence delta), the figure title
//! and the maps, so the figures are drawn again from it without the model.
//!
//! Entries are written atomically (temp file + rename), so shards running at once
//! can share one cache folder; an entry that cannot be read is recomputed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lumen_core::{LumenError, Result};
use lumen_report::Map;
use lumen_tasks::{
    ClassPrediction, DetectionPrediction, SegmentRegion, SegmentationPrediction,
    SegmentationRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::output::write_atomically;

/// First bytes of an entry: the format and its version.
const MAGIC: &[u8; 8] = b"LUMENC1\n";
/// First bytes of a JSON entry.
const JSON_MAGIC: &[u8; 8] = b"LUMENJ1\n";
/// First bytes of a record entry: a JSON header and float32 values.
const RECORD_MAGIC: &[u8; 8] = b"LUMENR1\n";

/// The fingerprint of a model for cache keys: its name, class count and weights.
/// `weights` is the weights file; `None` uses the bundled model's embedded bytes
/// (an error for a model with neither).
pub fn model_fingerprint(name: &str, num_classes: usize, weights: Option<&Path>) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("model {name} classes {num_classes}\n").as_bytes());
    match weights {
        Some(path) => {
            let io = |e| LumenError::Io {
                path: path.to_path_buf(),
                source: e,
            };
            let mut file = std::fs::File::open(path).map_err(io)?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let read = file.read(&mut buffer).map_err(io)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
        }
        None => hasher.update(lumen_models::bundled_weights(name).ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "`{name}` has no embedded weights: give its weights file for the cache key"
            ))
        })?),
    }
    Ok(hex::encode(hasher.finalize()))
}

/// An explanation cache in a folder, for one model.
#[derive(Debug)]
pub struct ExplanationCache {
    dir: PathBuf,
    model: String,
    hits: AtomicUsize,
    stored: AtomicUsize,
}

/// One cached image: the result without its figure paths, the figure title and maps.
#[derive(Clone, Debug)]
pub struct CachedExplanation<P, R> {
    /// The prediction.
    pub prediction: P,
    /// What was explained.
    pub target: R,
    /// The layer (CAMs).
    pub layer: Option<String>,
    /// Integrated Gradients' completeness gap.
    pub convergence_delta: Option<f32>,
    /// The title of the image's figure.
    pub title: String,
    /// The normalised heatmap.
    pub heatmap: Map,
    /// The signed attribution summed over channels (with `--polarity`).
    pub signed: Option<Map>,
    /// The signed attribution itself (gradient methods, in `lumen explain`'s entries:
    /// what `--save-raw` writes).
    pub attributions: Option<Attribution>,
}

/// One image's signed attribution `[channels, height, width]`, as kept in an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    /// `[channels, height, width]`.
    pub dims: [usize; 3],
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// How a task's prediction or request is kept in a cache entry. Their JSON form (what
/// `--json` prints) leaves out bulky or internal fields: a segmentation's class grid
/// and resolved mask, the location each detection came from. An entry keeps those too,
/// so that a hit gives back the value the computation gave.
pub trait CacheRecord: Sized {
    /// The entry's form.
    fn to_record(&self) -> Value;
    /// Back from the entry's form; `None` (a miss, recomputed) when it cannot be.
    fn from_record(record: Value) -> Option<Self>;
}

/// The types whose JSON form is complete.
macro_rules! cache_record_by_serde {
    ($($t:ty),*) => {$(
        impl CacheRecord for $t {
            fn to_record(&self) -> Value {
                serde_json::to_value(self).unwrap_or(Value::Null)
            }
            fn from_record(record: Value) -> Option<Self> {
                serde_json::from_value(record).ok()
            }
        }
    )*};
}
cache_record_by_serde!(usize, ClassPrediction, Vec<lumen_tasks::BoxRequest>);

impl CacheRecord for DetectionPrediction {
    fn to_record(&self) -> Value {
        json!({
            "prediction": self,
            "locations": self.detections.iter().map(|d| d.location).collect::<Vec<_>>(),
        })
    }

    fn from_record(mut record: Value) -> Option<Self> {
        let locations: Vec<usize> =
            serde_json::from_value(record.get_mut("locations")?.take()).ok()?;
        let mut prediction: Self =
            serde_json::from_value(record.get_mut("prediction")?.take()).ok()?;
        if locations.len() != prediction.detections.len() {
            return None;
        }
        for (detection, location) in prediction.detections.iter_mut().zip(locations) {
            detection.location = location;
        }
        Some(prediction)
    }
}

impl CacheRecord for SegmentationPrediction {
    fn to_record(&self) -> Value {
        json!({
            "prediction": self,
            "classes": self.classes,
            "pixel_classes": self.pixel_classes,
        })
    }

    fn from_record(record: Value) -> Option<Self> {
        let field = |name: &str| record.get("prediction")?.get(name).cloned();
        let grid: [usize; 2] = serde_json::from_value(field("grid")?).ok()?;
        let classes: Vec<usize> = serde_json::from_value(record.get("classes")?.clone()).ok()?;
        // An entry written before the per-pixel classes were kept is a miss.
        let pixel_classes: Vec<usize> =
            serde_json::from_value(record.get("pixel_classes")?.clone()).ok()?;
        if classes.len() != grid[0] * grid[1] || pixel_classes.len() < classes.len() {
            return None;
        }
        let shares = field("shares")?
            .as_array()?
            .iter()
            .map(|share| {
                Some(lumen_tasks::ClassShare {
                    class: serde_json::from_value(share.get("class")?.clone()).ok()?,
                    name: serde_json::from_value(share.get("name")?.clone()).ok()?,
                    fraction: serde_json::from_value(share.get("fraction")?.clone()).ok()?,
                    confidence: serde_json::from_value(share.get("confidence")?.clone()).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            grid,
            classes,
            pixel_classes,
            shares,
            dominant: serde_json::from_value(field("dominant")?).ok()?,
        })
    }
}

impl CacheRecord for SegmentationRequest {
    fn to_record(&self) -> Value {
        json!({"request": self, "mask": self.mask})
    }

    /// A request over a user region is not kept (its region is not in the record): a
    /// miss, recomputed.
    fn from_record(record: Value) -> Option<Self> {
        let request = record.get("request")?;
        let region = match request.get("region")? {
            Value::String(name) if name == "predicted" => SegmentRegion::Predicted,
            Value::String(name) if name == "whole" => SegmentRegion::Whole,
            Value::Object(fields) => {
                let pixel = fields.get("pixel")?;
                SegmentRegion::Pixel {
                    x: serde_json::from_value(pixel.get("x")?.clone()).ok()?,
                    y: serde_json::from_value(pixel.get("y")?.clone()).ok()?,
                }
            }
            _ => return None,
        };
        Some(Self {
            class: serde_json::from_value(request.get("class")?.clone()).ok()?,
            region,
            mask: serde_json::from_value(record.get("mask")?.clone()).ok()?,
            pixels: serde_json::from_value(request.get("pixels")?.clone()).ok()?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    prediction: Value,
    target: Value,
    layer: Option<String>,
    convergence_delta: Option<f32>,
    title: String,
    width: u32,
    height: u32,
    signed: bool,
    /// Entries written before attributions were kept have none.
    #[serde(default)]
    attributions: Option<[usize; 3]>,
}

impl ExplanationCache {
    /// A cache in `dir` (created when missing; it must be writable) for the model of
    /// `model_fingerprint`.
    pub fn open(dir: impl Into<PathBuf>, model_fingerprint: String) -> Result<Self> {
        let dir = dir.into();
        let io = |e| LumenError::Io {
            path: dir.clone(),
            source: e,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        // Checked before the work, not at the first entry.
        let probe = dir.join(format!(".write-check-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(io)?;
        std::fs::remove_file(&probe).ok();
        Ok(Self {
            dir,
            model: model_fingerprint,
            hits: AtomicUsize::new(0),
            stored: AtomicUsize::new(0),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of one input file's bytes under `settings` (method, options, target,
    /// preprocessing: any text that changes when the result would).
    pub fn key(&self, settings: &str, input: &[u8]) -> String {
        let mut hasher = Sha256::new();
        for part in [self.model.as_bytes(), settings.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(input);
        hex::encode(hasher.finalize())
    }

    /// The key of each image of a batch `[B,C,H,W]` under `settings`: the image as
    /// the model sees it (its shape and normalised values), so that files, arrays and
    /// bundled images key alike.
    pub fn image_keys(
        &self,
        settings: &str,
        images: &lumen_core::Tensor<4>,
    ) -> lumen_core::Result<Vec<String>> {
        Ok(crate::cached::input_rows(images)?
            .iter()
            .map(|row| self.key(settings, row))
            .collect())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.lumen"))
    }

    /// The entry of `key`, when there is a readable one (a damaged entry counts as a
    /// miss and is overwritten by the next store).
    pub fn get<P: CacheRecord, R: CacheRecord>(
        &self,
        key: &str,
    ) -> Option<CachedExplanation<P, R>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry = decode(&bytes)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Store an entry atomically.
    pub fn put<P: CacheRecord, R: CacheRecord>(
        &self,
        key: &str,
        entry: &CachedExplanation<P, R>,
    ) -> Result<()> {
        let header = Header {
            prediction: entry.prediction.to_record(),
            target: entry.target.to_record(),
            layer: entry.layer.clone(),
            convergence_delta: entry.convergence_delta,
            title: entry.title.clone(),
            width: entry.heatmap.width,
            height: entry.heatmap.height,
            signed: entry.signed.is_some(),
            attributions: entry.attributions.as_ref().map(|a| a.dims),
        };
        if let Some(a) = &entry.attributions
            && a.values.len() != a.dims.iter().product::<usize>()
        {
            return Err(LumenError::InvalidArgument(format!(
                "cache entry: an attribution of {:?} holds {} values",
                a.dims,
                a.values.len()
            )));
        }
        let header = serde_json::to_vec(&header)
            .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend((header.len() as u64).to_le_bytes());
        bytes.extend(header);
        let attribution = entry.attributions.iter().map(|a| &a.values);
        for values in std::iter::once(&entry.heatmap.values)
            .chain(entry.signed.as_ref().map(|m| &m.values))
            .chain(attribution)
        {
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        write_atomically(&self.path(key), &bytes)?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A JSON entry of `key` (what `lumen evaluate` keeps per batch), when there is a
    /// readable one.
    pub fn get_json(&self, key: &str) -> Option<Value> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let value = serde_json::from_slice(bytes.strip_prefix(JSON_MAGIC.as_slice())?).ok()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// Store a JSON entry atomically.
    pub fn put_json(&self, key: &str, value: &Value) -> Result<()> {
        let mut bytes = JSON_MAGIC.to_vec();
        serde_json::to_writer(&mut bytes, value)
            .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
        write_atomically(&self.path(key), &bytes)?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A record entry of `key` (a JSON header and float32 values, what `lumen maximize`
    /// keeps), when there is a readable one.
    pub fn get_record(&self, key: &str) -> Option<(Value, Vec<f32>)> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let rest = bytes.strip_prefix(RECORD_MAGIC.as_slice())?;
        let length = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
        let header = serde_json::from_slice(rest.get(8..8usize.checked_add(length)?)?).ok()?;
        let values = &rest[8 + length..];
        if values.len() % 4 != 0 {
            return None;
        }
        let floats = values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((header, floats))
    }

    /// Store a record entry atomically.
    pub fn put_record(&self, key: &str, header: &Value, values: &[f32]) -> Result<()> {
        let header = serde_json::to_vec(header)
            .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
        let mut bytes = RECORD_MAGIC.to_vec();
        bytes.extend((header.len() as u64).to_le_bytes());
        bytes.extend(header);
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        write_atomically(&self.path(key), &bytes)?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Entries found so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Entries written so far.
    pub fn stored(&self) -> usize {
        self.stored.load(Ordering::Relaxed)
    }
}

fn decode<P: CacheRecord, R: CacheRecord>(bytes: &[u8]) -> Option<CachedExplanation<P, R>> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let length = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let header: Header = serde_json::from_slice(rest.get(8..8usize.checked_add(length)?)?).ok()?;
    let values = &rest[8 + length..];
    let pixels = (header.width as usize).checked_mul(header.height as usize)?;
    let maps = if header.signed { 2 } else { 1 };
    let attribution_values = match header.attributions {
        Some([c, h, w]) => c.checked_mul(h)?.checked_mul(w)?,
        None => 0,
    };
    let floats_expected = pixels.checked_mul(maps)?.checked_add(attribution_values)?;
    if values.len() != floats_expected.checked_mul(4)? {
        return None;
    }
    let floats: Vec<f32> = values
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let map = |i: usize| {
        Map::new(
            floats[i * pixels..(i + 1) * pixels].to_vec(),
            header.width,
            header.height,
        )
    };
    Some(CachedExplanation {
        heatmap: map(0),
        signed: header.signed.then(|| map(1)),
        attributions: header.attributions.map(|dims| Attribution {
            dims,
            values: floats[maps * pixels..].to_vec(),
        }),
        prediction: P::from_record(header.prediction)?,
        target: R::from_record(header.target)?,
        layer: header.layer,
        convergence_delta: header.convergence_delta,
        title: header.title,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_tasks::ClassPrediction;

    fn entry(signed: bool) -> CachedExplanation<ClassPrediction, usize> {
        CachedExplanation {
            prediction: ClassPrediction {
                class: 2,
                name: Some("circle".into()),
                confidence: 0.75,
                top: vec![(2, 0.75), (0, 0.2)],
            },
            target: 2,
            layer: Some("layer4".into()),
            convergence_delta: Some(-0.125),
            title: "circle 75%".into(),
            heatmap: Map::new(vec![0.0, 0.5, 1.0, 0.25, f32::MIN_POSITIVE, 0.75], 3, 2),
            signed: signed.then(|| Map::new(vec![-1.0, 2.0, 0.0, 3.5, -0.5, 1e-7], 3, 2)),
            attributions: signed.then(|| Attribution {
                dims: [2, 2, 3],
                values: (0..12).map(|v| v as f32 * -0.5 + 1e-3).collect(),
            }),
        }
    }

    #[test]
    fn entries_round_trip_and_damaged_ones_are_misses() {
        let dir = std::env::temp_dir().join(format!("lumen-cache-{}", std::process::id()));
        let cache = ExplanationCache::open(&dir, "model".into()).unwrap();
        let key = cache.key("gradcam", b"image bytes");
        assert_ne!(key, cache.key("gradcam++", b"image bytes"));
        assert_ne!(key, cache.key("gradcam", b"image bytez"));
        let other_model = ExplanationCache::open(&dir, "model 2".into()).unwrap();
        assert_ne!(key, other_model.key("gradcam", b"image bytes"));
        assert!(cache.get::<ClassPrediction, usize>(&key).is_none());
        for signed in [false, true] {
            let stored = entry(signed);
            cache.put(&key, &stored).unwrap();
            let read: CachedExplanation<ClassPrediction, usize> = cache.get(&key).unwrap();
            assert_eq!(read.prediction, stored.prediction);
            assert_eq!(read.target, 2);
            assert_eq!(read.layer, stored.layer);
            assert_eq!(read.convergence_delta, Some(-0.125));
            assert_eq!(read.title, stored.title);
            assert_eq!(read.heatmap.values, stored.heatmap.values);
            assert_eq!(
                read.signed.map(|m| m.values),
                stored.signed.map(|m| m.values)
            );
            assert_eq!(read.attributions, stored.attributions);
        }
        // A truncated entry (a writer killed without the atomic rename would leave none,
        // but a damaged disk can) is a miss, not an error.
        let path = cache.path(&key);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(cache.get::<ClassPrediction, usize>(&key).is_none());
        std::fs::write(&path, b"not an entry").unwrap();
        assert!(cache.get::<ClassPrediction, usize>(&key).is_none());
        assert_eq!(cache.hits(), 2);
        assert_eq!(cache.stored(), 2);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_misses() {
        let dir = std::env::temp_dir().join(format!("lumen-record-{}", std::process::id()));
        let cache = ExplanationCache::open(&dir, "model".into()).unwrap();
        let key = cache.key("maximize", b"");
        let values = vec![0.25, -1.5, f32::MIN_POSITIVE, 3e7];
        cache
            .put_record(&key, &json!({"images": [1, 2]}), &values)
            .unwrap();
        let (header, read) = cache.get_record(&key).unwrap();
        assert_eq!(header, json!({"images": [1, 2]}));
        assert_eq!(read, values);
        // A record is not an explanation, nor the other way round.
        assert!(cache.get::<ClassPrediction, usize>(&key).is_none());
        let bytes = std::fs::read(cache.path(&key)).unwrap();
        std::fs::write(cache.path(&key), &bytes[..bytes.len() - 2]).unwrap();
        assert!(cache.get_record(&key).is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    /// What the JSON form leaves out comes back from an entry: a detection's location,
    /// a segmentation's class grid and resolved mask. A request over a user region is
    /// not kept (a miss).
    #[test]
    fn dense_predictions_and_requests_keep_their_hidden_parts() {
        let detections = DetectionPrediction {
            detections: vec![lumen_tasks::Detection {
                bbox: [1.0, 2.5, 30.0, 40.0],
                label: 3,
                name: Some("cross".into()),
                score: 0.625,
                location: 417,
            }],
        };
        assert_eq!(
            DetectionPrediction::from_record(detections.to_record()),
            Some(detections.clone())
        );
        let boxes = vec![lumen_tasks::BoxRequest {
            bbox: [1.0, 2.5, 30.0, 40.0],
            label: 3,
        }];
        assert_eq!(
            Vec::<lumen_tasks::BoxRequest>::from_record(boxes.to_record()),
            Some(boxes)
        );
        let segmentation = SegmentationPrediction {
            grid: [2, 3],
            classes: vec![0, 1, 1, 2, 0, 1],
            pixel_classes: (0..24).map(|p| (p / 4) % 3).collect(),
            shares: vec![lumen_tasks::ClassShare {
                class: 1,
                name: None,
                fraction: 0.5,
                confidence: 0.875,
            }],
            dominant: 1,
        };
        assert_eq!(
            SegmentationPrediction::from_record(segmentation.to_record()),
            Some(segmentation.clone())
        );
        // A grid that does not match its size is damage: a miss.
        let mut damaged = segmentation.to_record();
        damaged["classes"] = json!([0, 1]);
        assert_eq!(SegmentationPrediction::from_record(damaged), None);
        // An entry from before the per-pixel classes were kept would draw nothing: a miss.
        let mut old = segmentation.to_record();
        old.as_object_mut().unwrap().remove("pixel_classes");
        assert_eq!(SegmentationPrediction::from_record(old), None);
        for region in [
            SegmentRegion::Predicted,
            SegmentRegion::Whole,
            SegmentRegion::Pixel { x: 4, y: 7 },
        ] {
            let mut request = SegmentationRequest::new(2, region);
            request.mask = Some(vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
            request.pixels = Some(3.0);
            assert_eq!(
                SegmentationRequest::from_record(request.to_record()),
                Some(request)
            );
        }
        let user = SegmentationRequest::new(
            2,
            SegmentRegion::Region {
                bbox: [0, 0, 2, 2],
                region: Box::new(lumen_core::Region {
                    height: 2,
                    width: 2,
                    mask: vec![true; 4],
                    bbox: [0, 0, 2, 2],
                }),
            },
        );
        assert_eq!(SegmentationRequest::from_record(user.to_record()), None);
    }

    #[test]
    fn fingerprints_cover_the_weights() {
        let dir = std::env::temp_dir().join(format!("lumen-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.safetensors");
        std::fs::write(&a, b"weights one").unwrap();
        let first = model_fingerprint("resnet18", 10, Some(&a)).unwrap();
        assert_eq!(first, model_fingerprint("resnet18", 10, Some(&a)).unwrap());
        assert_ne!(first, model_fingerprint("resnet18", 11, Some(&a)).unwrap());
        std::fs::write(&a, b"weights two").unwrap();
        assert_ne!(first, model_fingerprint("resnet18", 10, Some(&a)).unwrap());
        assert!(model_fingerprint("resnet18", 10, None).is_err());
        assert!(model_fingerprint("resnet18", 10, Some(&dir.join("missing"))).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
