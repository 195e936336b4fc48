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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::output::write_atomically;

/// First bytes of an entry: the format and its version.
const MAGIC: &[u8; 8] = b"LUMENC1\n";

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
}

#[derive(Serialize, Deserialize)]
struct Header<P, R> {
    prediction: P,
    target: R,
    layer: Option<String>,
    convergence_delta: Option<f32>,
    title: String,
    width: u32,
    height: u32,
    signed: bool,
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

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.lumen"))
    }

    /// The entry of `key`, when there is a readable one (a damaged entry counts as a
    /// miss and is overwritten by the next store).
    pub fn get<P: DeserializeOwned, R: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Option<CachedExplanation<P, R>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry = decode(&bytes)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Store an entry atomically.
    pub fn put<P: Serialize, R: Serialize>(
        &self,
        key: &str,
        entry: &CachedExplanation<P, R>,
    ) -> Result<()> {
        let header = Header {
            prediction: &entry.prediction,
            target: &entry.target,
            layer: entry.layer.clone(),
            convergence_delta: entry.convergence_delta,
            title: entry.title.clone(),
            width: entry.heatmap.width,
            height: entry.heatmap.height,
            signed: entry.signed.is_some(),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend((header.len() as u64).to_le_bytes());
        bytes.extend(header);
        for map in std::iter::once(&entry.heatmap).chain(&entry.signed) {
            bytes.extend(map.values.iter().flat_map(|v| v.to_le_bytes()));
        }
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

fn decode<P: DeserializeOwned, R: DeserializeOwned>(
    bytes: &[u8],
) -> Option<CachedExplanation<P, R>> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let length = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let header: Header<P, R> =
        serde_json::from_slice(rest.get(8..8usize.checked_add(length)?)?).ok()?;
    let values = &rest[8 + length..];
    let pixels = (header.width as usize).checked_mul(header.height as usize)?;
    let maps = if header.signed { 2 } else { 1 };
    if values.len() != pixels.checked_mul(4 * maps)? {
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
        prediction: header.prediction,
        target: header.target,
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
