//! Inputs of the high-level calls: image files read leniently (one bad file is
//! reported, not fatal to the others), named uniquely, checked for finite values.

use lumen_core::profile::stages::PREPROCESS;
use std::path::{Path, PathBuf};

use image::RgbImage;
use lumen_core::{DataConfig, Device, LumenError, Result, Tensor, read_image, to_host};
use serde::Serialize;

use crate::api::TaskModel;

/// A batch of inputs with what is needed to draw them.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Normalised `[B,3,H,W]` on the model's device.
    pub tensor: Tensor<4>,
    /// The images as shown (un-normalised, at input size).
    pub originals: Vec<RgbImage>,
    /// A name per image (file stem, made unique), used for output files.
    pub names: Vec<String>,
    /// What was adjusted while reading, per image name (EXIF orientation applied,
    /// transparency composited): worth a warning.
    pub notes: Vec<(String, String)>,
}

/// An input that could not be used, and why.
#[derive(Clone, Debug, Serialize)]
pub struct InputFailure {
    /// The file (or array) given.
    pub path: PathBuf,
    /// Why it could not be used.
    pub error: String,
}

/// Inputs read leniently: the batch of the readable ones (none when no file could be
/// read) and a failure per unreadable file, in the order given.
#[derive(Clone, Debug)]
pub struct ReadInputs {
    /// The readable images, as one batch.
    pub inputs: Option<Inputs>,
    /// The files that could not be read.
    pub failures: Vec<InputFailure>,
}

impl ReadInputs {
    /// The batch, or an error naming every failure when nothing could be read.
    pub fn into_inputs(self) -> Result<Inputs> {
        match self.inputs {
            Some(inputs) => Ok(inputs),
            None => Err(no_readable_input(&self.failures)),
        }
    }
}

/// The error for a run in which no input gave a result (unreadable, or in a batch
/// explained as NaN or infinite), naming each with why: a run-time failure (exit 1),
/// not a usage error. Not "cannot read" even for one input: a batch's only image may
/// have been read and then explained as NaN.
pub fn no_readable_input(failures: &[InputFailure]) -> LumenError {
    LumenError::NoUsableInput {
        count: failures.len(),
        reasons: failures
            .iter()
            .map(|f| format!("{}: {}", f.path.display(), f.error))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A name per file for output files, unique within `paths`: the file stem; on a clash
/// the parent folder and the extension are added (`a.png`, `a.jpg` become `a_png`,
/// `a_jpg`), then a counter.
pub fn unique_names<P: AsRef<Path>>(paths: &[P]) -> Vec<String> {
    let part = |p: &Path, f: fn(&Path) -> Option<&std::ffi::OsStr>| {
        f(p).map(|s| s.to_string_lossy().into_owned())
    };
    let stem = |p: &Path| part(p, Path::file_stem).unwrap_or_else(|| "image".into());
    let with_extension = |p: &Path| match part(p, Path::extension) {
        Some(ext) => format!("{}_{ext}", stem(p)),
        None => stem(p),
    };
    let with_parent = |p: &Path| match p
        .parent()
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy())
    {
        Some(parent) => format!("{parent}_{}", with_extension(p)),
        None => with_extension(p),
    };
    let count = |names: &[String], name: &str| names.iter().filter(|n| *n == name).count();
    let first: Vec<String> = paths.iter().map(|p| stem(p.as_ref())).collect();
    let second: Vec<String> = paths
        .iter()
        .zip(&first)
        .map(|(p, n)| match count(&first, n) {
            1 => n.clone(),
            _ => with_extension(p.as_ref()),
        })
        .collect();
    let third: Vec<String> = paths
        .iter()
        .zip(&second)
        .map(|(p, n)| match count(&second, n) {
            1 => n.clone(),
            _ => with_parent(p.as_ref()),
        })
        .collect();
    // The same file given twice: number the copies.
    let mut copies = std::collections::HashMap::<&str, usize>::new();
    third
        .iter()
        .map(|name| match count(&third, name) {
            1 => name.clone(),
            _ => {
                let k = copies.entry(name).or_default();
                *k += 1;
                format!("{name}_{k}")
            }
        })
        .collect()
}

/// An image resized and centre-cropped to the model's input as soon as it is decoded:
/// a folder of camera photos then holds one full-size image at a time, not all of them
/// (16 photos of 4000x3000: 576 MB).
fn fitted(config: &DataConfig, image: &RgbImage) -> Result<RgbImage> {
    let _stage = lumen_core::profile::stage(PREPROCESS);
    config.resize_and_crop(image)
}

impl Inputs {
    /// Read, resize, crop and normalise image files. Fails at the first unreadable
    /// file; [`Inputs::read`] goes on past it.
    pub fn from_files<P: AsRef<Path>>(
        paths: &[P],
        config: &DataConfig,
        device: &Device,
    ) -> Result<Self> {
        let names = unique_names(paths);
        let mut originals = Vec::with_capacity(paths.len());
        let mut notes = vec![];
        for (path, name) in paths.iter().zip(&names) {
            let read = read_image(path)?;
            notes.extend(read.notes.into_iter().map(|n| (name.clone(), n)));
            originals.push(fitted(config, &read.image)?);
        }
        let mut inputs = Self::from_originals(originals, names, config, device)?;
        inputs.notes = notes;
        Ok(inputs)
    }

    /// Image files for a model: its data config and device.
    pub fn load<P: AsRef<Path>>(model: &impl TaskModel, paths: &[P]) -> Result<Self> {
        Self::from_files(paths, model.data_config(), model.device())
    }

    /// Read every file that can be read for `model`; each unreadable one becomes a
    /// failure instead of ending the run. Names are unique over all of `paths`.
    pub fn read<P: AsRef<Path>>(model: &impl TaskModel, paths: &[P]) -> Result<ReadInputs> {
        Self::read_named(model, paths, &unique_names(paths))
    }

    /// [`Inputs::read`] with the output names given (unique over a larger list).
    pub fn read_named<P: AsRef<Path>>(
        model: &impl TaskModel,
        paths: &[P],
        names: &[String],
    ) -> Result<ReadInputs> {
        Self::read_with(model.data_config(), model.device(), paths, names)
    }

    /// [`Inputs::read_named`] with another preprocessing than the model's own (another
    /// input size for a network that takes any).
    pub fn read_with<P: AsRef<Path>>(
        config: &DataConfig,
        device: &Device,
        paths: &[P],
        names: &[String],
    ) -> Result<ReadInputs> {
        let mut originals = vec![];
        let mut kept = vec![];
        let mut notes = vec![];
        let mut failures = vec![];
        for (path, name) in paths.iter().zip(names) {
            match read_image(path) {
                Ok(read) => {
                    notes.extend(read.notes.into_iter().map(|n| (name.clone(), n)));
                    originals.push(fitted(config, &read.image)?);
                    kept.push(name.clone());
                }
                // A bad setting (the decoding limit's variable) is not the file's fault.
                Err(error @ LumenError::InvalidArgument(_)) => return Err(error),
                Err(error) => failures.push(InputFailure {
                    path: path.as_ref().to_path_buf(),
                    error: match error {
                        LumenError::Image { message, .. } => message,
                        other => other.to_string(),
                    },
                }),
            }
        }
        let inputs = match originals.is_empty() {
            true => None,
            false => {
                let mut inputs = Self::from_originals(originals, kept, config, device)?;
                inputs.notes = notes;
                Some(inputs)
            }
        };
        Ok(ReadInputs { inputs, failures })
    }

    /// Images already in memory, named, resized and cropped as the model expects.
    pub fn from_images(
        images: Vec<RgbImage>,
        names: Vec<String>,
        config: &DataConfig,
        device: &Device,
    ) -> Result<Self> {
        let originals = images
            .iter()
            .map(|i| fitted(config, i))
            .collect::<Result<_>>()?;
        Self::from_originals(originals, names, config, device)
    }

    /// Images already at the model's input size (as shown), normalised into the batch.
    fn from_originals(
        originals: Vec<RgbImage>,
        names: Vec<String>,
        config: &DataConfig,
        device: &Device,
    ) -> Result<Self> {
        let _stage = lumen_core::profile::stage_on(PREPROCESS, device);
        Ok(Self {
            tensor: config.to_tensor(&originals, device)?,
            originals,
            names,
            notes: vec![],
        })
    }

    /// Wrap an already-normalised tensor; originals are recovered by undoing the
    /// normalisation. Fails on an empty batch or on NaN or infinite values, which would
    /// silently give NaN maps.
    pub fn from_tensor(tensor: Tensor<4>, config: &DataConfig) -> Result<Self> {
        Self::from_rows(tensor, config, 0)
    }

    /// [`Inputs::from_tensor`] for the rows of a larger array from row `first` on: they
    /// are named, and a bad value placed, by their row in the whole array.
    pub fn from_rows(tensor: Tensor<4>, config: &DataConfig, first: usize) -> Result<Self> {
        let dims = tensor.dims();
        let [batch, channels, height, width] = dims;
        if batch == 0 || height == 0 || width == 0 {
            return Err(LumenError::InvalidArgument(format!(
                "the input array is empty (shape [{batch}, {channels}, {height}, {width}])"
            )));
        }
        let values = to_host(tensor.clone())?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            return Err(non_finite_error(bad, values[at], at, dims, first));
        }
        // The values just checked, not another read from the device.
        let originals = config.denormalize_values(&values, dims)?;
        let names = (first..first + originals.len())
            .map(|i| format!("input{i}"))
            .collect();
        Ok(Self {
            tensor,
            originals,
            names,
            notes: vec![],
        })
    }

    /// The images at `positions` (in that order), as a batch of their own.
    pub fn select(&self, positions: &[usize]) -> Result<Self> {
        if let Some(&bad) = positions.iter().find(|&&i| i >= self.len()) {
            return Err(LumenError::InvalidArgument(format!(
                "image {bad} is not in a batch of {}",
                self.len()
            )));
        }
        let device = self.tensor.device();
        let names: Vec<String> = positions.iter().map(|&i| self.names[i].clone()).collect();
        Ok(Self {
            tensor: self
                .tensor
                .clone()
                .select(0, lumen_core::index_tensor(positions, &device)),
            originals: positions
                .iter()
                .map(|&i| self.originals[i].clone())
                .collect(),
            notes: self
                .notes
                .iter()
                .filter(|(name, _)| names.contains(name))
                .cloned()
                .collect(),
            names,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }
}

/// The error for an input array of `dims` with `bad` NaN or infinite values, the first
/// `value` at flat index `at`, its images numbered from `first`.
pub(crate) fn non_finite_error(
    bad: usize,
    value: f32,
    at: usize,
    [_, channels, height, width]: [usize; 4],
    first: usize,
) -> LumenError {
    let plane = height * width;
    let (image, rest) = (at / (channels * plane), at % (channels * plane));
    let (channel, pixel) = (rest / plane, rest % plane);
    LumenError::InvalidArgument(format!(
        "the input array has {bad} NaN or infinite values (the first is {value} at image \
         {}, channel {channel}, row {}, column {}): inputs must be finite",
        first + image,
        pixel / width,
        pixel % width
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashing_names_become_unique_and_readable() {
        let names = unique_names(&["x/a.png", "x/a.jpg", "y/b.png", "z/b.png", "c.png"]);
        assert_eq!(names, ["a_png", "a_jpg", "y_b_png", "z_b_png", "c"]);
        let same = unique_names(&["a.png", "a.png"]);
        assert_eq!(same, ["a_png_1", "a_png_2"]);
    }
}
