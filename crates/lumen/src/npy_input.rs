//! Normalised input batches `[B,3,H,W]` from `.npy` files, read a few rows at a time so
//! that an array of thousands of images costs what a chunk of it costs.
//!
//! The header is parsed here rather than by ndarray-npy: its reader allocates the
//! array a header declares before reading it (a damaged header aborted the process on
//! a 1.2 TB allocation), keeps its header parser private, and reads only whole arrays.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use lumen_core::burn::tensor::TensorData;
use lumen_core::{Device, LumenError, Result, Tensor};

fn io_error(path: &Path, source: std::io::Error) -> LumenError {
    LumenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A `.npy` file of a normalised batch `[B,3,H,W]` (float32, or float64 converted;
/// either byte order, C or Fortran layout), checked and open for reading rows.
pub struct NpyBatch {
    path: PathBuf,
    dims: [usize; 4],
    values: Values,
}

/// Where the values are: always in the file, read when asked for.
struct Values {
    data_offset: u64,
    element: Element,
    /// Fortran layout (the first index fastest): a row's values are spread through the
    /// whole file, one run of consecutive images per (channel, row, column).
    fortran: bool,
}

/// How one value is stored.
#[derive(Clone, Copy)]
struct Element {
    size: usize,
    big_endian: bool,
}

impl Element {
    fn decode(self, bytes: &[u8]) -> f32 {
        match (self.size, self.big_endian) {
            (4, false) => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            (4, true) => f32::from_be_bytes(bytes.try_into().expect("4 bytes")),
            (_, false) => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            (_, true) => f64::from_be_bytes(bytes.try_into().expect("8 bytes")) as f32,
        }
    }
}

/// The values read from the file at a time while streaming (a few MiB).
const STREAM_VALUES: usize = 1 << 20;

impl NpyBatch {
    /// Open `path` and check its header against its length and the shape of a batch;
    /// nothing but the header is read.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |message: String| io_error(path, std::io::Error::other(message));
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let metadata = file.metadata().map_err(|e| io_error(path, e))?;
        if metadata.is_dir() {
            return Err(bad("a folder, not an .npy array".into()));
        }
        let length = metadata.len();
        let header = read_header(&mut file, length).map_err(bad)?;
        let dims: [usize; 4] = match header.shape.as_slice() {
            &[batch, 3, height, width] => [batch, 3, height, width],
            other => {
                return Err(LumenError::shape(
                    format!("input array {}", path.display()),
                    "[B,3,H,W] float32",
                    format!("{other:?}"),
                ));
            }
        };
        let [batch, channels, height, width] = dims;
        if batch == 0 || height == 0 || width == 0 {
            return Err(LumenError::InvalidArgument(format!(
                "the input array is empty (shape [{batch}, {channels}, {height}, {width}])"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            dims,
            values: Values {
                data_offset: header.data_offset,
                element: header.element,
                fortran: header.fortran_order,
            },
        })
    }

    /// `[B,3,H,W]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// The number of images (B).
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// Never: an empty array is refused when opened.
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }

    fn row_values(&self) -> usize {
        self.dims[1] * self.dims[2] * self.dims[3]
    }

    /// The images `rows` as a batch on `device`.
    pub fn read_rows(&self, rows: Range<usize>, device: &Device) -> Result<Tensor<4>> {
        if rows.is_empty() || rows.end > self.len() {
            return Err(LumenError::InvalidArgument(format!(
                "rows {rows:?} are not in an array of {} images",
                self.len()
            )));
        }
        let _stage = lumen_core::profile::stage(lumen_core::profile::stages::DECODE);
        let per_row = self.row_values();
        let values = match self.values.fortran {
            false => self.read_values(rows.start * per_row, rows.len() * per_row)?,
            true => self.read_fortran_rows(rows.clone())?,
        };
        Ok(Tensor::from_data(
            TensorData::new(
                values,
                [rows.len(), self.dims[1], self.dims[2], self.dims[3]],
            ),
            device,
        ))
    }

    /// `count` values from value `first` on, in the file's order.
    fn read_values(&self, first: usize, count: usize) -> Result<Vec<f32>> {
        let mut values = Vec::with_capacity(count);
        self.stream(first, count, |piece| values.extend_from_slice(piece))?;
        Ok(values)
    }

    /// The file opened at value `first` (in the file's order), buffered by `capacity`
    /// bytes.
    fn reader_at(
        &self,
        first: usize,
        capacity: usize,
    ) -> Result<std::io::BufReader<std::fs::File>> {
        let failed = |e| io_error(&self.path, e);
        let mut file = std::fs::File::open(&self.path).map_err(failed)?;
        let start = self.values.data_offset + (first * self.values.element.size) as u64;
        file.seek(SeekFrom::Start(start)).map_err(failed)?;
        Ok(std::io::BufReader::with_capacity(capacity, file))
    }

    /// The images `rows` of a Fortran-layout array, in C layout: one pass through the
    /// file, keeping the run of `rows` in each (channel, row, column)'s run of all the
    /// images (the others are skipped in the read buffer, not decoded). Memory is the
    /// rows', as for a C-layout array; time is one read of the file per chunk.
    fn read_fortran_rows(&self, rows: Range<usize>) -> Result<Vec<f32>> {
        let [batch, channels, height, width] = self.dims;
        let element = self.values.element;
        let failed = |e| io_error(&self.path, e);
        // A large buffer: the skipped images are passed over inside it.
        let mut reader = self.reader_at(0, 1 << 22)?;
        let plane = height * width;
        let mut values = vec![0f32; rows.len() * channels * plane];
        let mut run = vec![0u8; rows.len() * element.size];
        let (before, after) = (rows.start, batch - rows.end);
        // Position p = c + channels * (h + height * w) holds every image's value there.
        for w in 0..width {
            for h in 0..height {
                for c in 0..channels {
                    reader
                        .seek_relative((before * element.size) as i64)
                        .map_err(failed)?;
                    // The length was checked when opened: a short read is a file
                    // changed since.
                    reader.read_exact(&mut run).map_err(failed)?;
                    reader
                        .seek_relative((after * element.size) as i64)
                        .map_err(failed)?;
                    let at = c * plane + h * width + w;
                    for (i, bytes) in run.chunks_exact(element.size).enumerate() {
                        values[i * channels * plane + at] = element.decode(bytes);
                    }
                }
            }
        }
        Ok(values)
    }

    /// Give `count` values from value `first` on (in the file's order) to `take`, a
    /// few MiB at a time.
    fn stream(&self, first: usize, count: usize, mut take: impl FnMut(&[f32])) -> Result<()> {
        let element = self.values.element;
        let failed = |e| io_error(&self.path, e);
        let mut reader = self.reader_at(first, 8 << 10)?;
        let mut bytes = vec![0u8; STREAM_VALUES.min(count) * element.size];
        let mut piece = Vec::with_capacity(STREAM_VALUES.min(count));
        let mut left = count;
        while left > 0 {
            let n = left.min(STREAM_VALUES);
            let bytes = &mut bytes[..n * element.size];
            // The length was checked when opened: a short read is a file changed since.
            reader.read_exact(bytes).map_err(failed)?;
            piece.clear();
            piece.extend(bytes.chunks_exact(element.size).map(|b| element.decode(b)));
            take(&piece);
            left -= n;
        }
        Ok(())
    }

    /// Refuse an array with a NaN or infinite value (they would silently give NaN
    /// maps), naming the first, before any of it is explained; read in pieces.
    pub fn check_finite(&self) -> Result<()> {
        let [batch, channels, height, width] = self.dims;
        let fortran = self.values.fortran;
        // The place of the file's value `k` in C layout: its own in a C-layout file.
        let c_index = |k: usize| match fortran {
            false => k,
            true => {
                let (image, mut p) = (k % batch, k / batch);
                let c = p % channels;
                p /= channels;
                let (h, w) = (p % height, p / height);
                ((image * channels + c) * height + h) * width + w
            }
        };
        let mut bad = 0usize;
        // The first in C order: the image, channel, row and column a reader meets first.
        let mut first: Option<(usize, f32)> = None;
        let mut seen = 0usize;
        let look = |piece: &[f32]| {
            for (i, &v) in piece.iter().enumerate() {
                if !v.is_finite() {
                    bad += 1;
                    let at = c_index(seen + i);
                    if first.is_none_or(|(earliest, _)| at < earliest) {
                        first = Some((at, v));
                    }
                }
            }
            seen += piece.len();
        };
        self.stream(0, self.len() * self.row_values(), look)?;
        match first {
            None => Ok(()),
            Some((at, value)) => Err(crate::inputs::non_finite_error(
                bad, value, at, self.dims, 0,
            )),
        }
    }
}

/// Read a normalised batch `[B,3,H,W]` from a `.npy` file (float32, or float64
/// converted; either byte order, C or Fortran layout) onto `device`, whole.
pub fn read_npy_batch(path: &Path, device: &Device) -> Result<Tensor<4>> {
    let batch = NpyBatch::open(path)?;
    batch.read_rows(0..batch.len(), device)
}

/// What a `.npy` header says.
pub(crate) struct Header {
    element: Element,
    fortran_order: bool,
    shape: Vec<usize>,
    data_offset: u64,
}

/// The header of the `.npy` file `file` of `length` bytes, its declared size checked
/// against the data that follows it (a damaged header is refused before anything is
/// allocated for what it declares).
pub(crate) fn read_header(
    file: &mut impl Read,
    length: u64,
) -> std::result::Result<Header, String> {
    let not_npy = || "not a readable .npy array: the header is damaged".to_string();
    let mut start = [0u8; 10];
    file.read_exact(&mut start).map_err(|_| not_npy())?;
    if &start[..6] != b"\x93NUMPY" {
        return Err(not_npy());
    }
    let (size, header_start) = match start[6] {
        1 => (u16::from_le_bytes([start[8], start[9]]) as u64, 10u64),
        2 | 3 => {
            let mut rest = [0u8; 2];
            file.read_exact(&mut rest).map_err(|_| not_npy())?;
            let size = u32::from_le_bytes([start[8], start[9], rest[0], rest[1]]);
            (size as u64, 12)
        }
        _ => return Err(not_npy()),
    };
    if header_start + size > length {
        return Err(not_npy());
    }
    let mut header = vec![0u8; size as usize];
    file.read_exact(&mut header).map_err(|_| not_npy())?;
    let header: py_literal::Value = std::str::from_utf8(&header)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(not_npy)?;
    let py_literal::Value::Dict(entries) = header else {
        return Err(not_npy());
    };
    let entry = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_string().is_some_and(|k| k == key))
            .map(|(_, v)| v)
    };
    let element = match entry("descr") {
        Some(py_literal::Value::String(d)) => match d.as_str() {
            "<f4" => Element {
                size: 4,
                big_endian: false,
            },
            ">f4" => Element {
                size: 4,
                big_endian: true,
            },
            "<f8" => Element {
                size: 8,
                big_endian: false,
            },
            ">f8" => Element {
                size: 8,
                big_endian: true,
            },
            _ => {
                return Err(format!(
                    "the array's dtype is '{d}': expected float32 or float64 values"
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "the array's dtype is {other}: expected float32 or float64 values"
            ));
        }
        None => return Err(not_npy()),
    };
    let fortran_order = match entry("fortran_order") {
        Some(py_literal::Value::Boolean(fortran)) => *fortran,
        _ => return Err(not_npy()),
    };
    let shape: Vec<usize> = match entry("shape") {
        Some(py_literal::Value::Tuple(dims)) => dims
            .iter()
            .map(|d| d.as_integer().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(not_npy)?,
        _ => return Err(not_npy()),
    };
    let data_offset = header_start + size;
    let data = length - data_offset;
    let declared = shape
        .iter()
        .try_fold(element.size as u64, |bytes, &d| bytes.checked_mul(d as u64));
    if declared != Some(data) {
        return Err(format!(
            "not a readable .npy array: its header declares shape {shape:?} ({} bytes) but \
             {data} bytes of data follow it: the file is damaged or cut short",
            declared.map_or("more than can be addressed".to_string(), |b| b.to_string())
        ));
    }
    Ok(Header {
        element,
        fortran_order,
        shape,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lumen-npy-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn values(dims: [usize; 4]) -> ndarray::Array4<f32> {
        ndarray::Array4::from_shape_fn(dims, |(b, c, h, w)| {
            (b * 1000 + c * 100 + h * 10 + w) as f32 - 0.5
        })
    }

    fn rows_of(tensor: Tensor<4>) -> Vec<f32> {
        lumen_core::to_host(tensor).unwrap()
    }

    #[test]
    fn rows_read_apart_are_the_rows_of_the_whole_array_in_every_layout() {
        let array = values([5, 3, 4, 6]);
        let c = scratch("c.npy");
        ndarray_npy::write_npy(&c, &array).unwrap();
        let fortran = scratch("fortran.npy");
        let reversed = array.t().as_standard_layout().to_owned().reversed_axes();
        assert!(!reversed.is_standard_layout());
        ndarray_npy::write_npy(&fortran, &reversed).unwrap();
        let wide = scratch("wide.npy");
        ndarray_npy::write_npy(&wide, &array.mapv(|v| v as f64)).unwrap();
        let fortran_wide = scratch("fortran-wide.npy");
        ndarray_npy::write_npy(&fortran_wide, &reversed.mapv(|v| v as f64)).unwrap();
        let expected: Vec<f32> = array.iter().copied().collect();
        let per_row = 3 * 4 * 6;
        for path in [c, fortran, wide, fortran_wide] {
            let batch = NpyBatch::open(&path).unwrap();
            assert_eq!(batch.dims(), [5, 3, 4, 6]);
            for rows in [0..2, 2..3, 3..5, 0..5] {
                let read = rows_of(batch.read_rows(rows.clone(), &device()).unwrap());
                assert_eq!(
                    read,
                    expected[rows.start * per_row..rows.end * per_row],
                    "{path:?} {rows:?}"
                );
            }
            assert!(batch.read_rows(4..6, &device()).is_err());
            assert!(batch.check_finite().is_ok());
        }
    }

    #[test]
    fn a_non_finite_value_is_named_by_its_place_in_the_whole_array() {
        let mut array = values([4, 3, 5, 5]);
        array[[3, 2, 1, 4]] = f32::NAN;
        array[[3, 2, 2, 0]] = f32::INFINITY;
        let path = scratch("nan.npy");
        ndarray_npy::write_npy(&path, &array).unwrap();
        let batch = NpyBatch::open(&path).unwrap();
        let message = batch.check_finite().unwrap_err().to_string();
        assert!(
            message.contains("2 NaN or infinite values")
                && message.contains("image 3, channel 2, row 1, column 4"),
            "{message}"
        );
        // The rows before it read.
        assert!(batch.read_rows(0..3, &device()).is_ok());

        // In Fortran layout the file's first bad value is another: the message still
        // names the first in C order (image 0 before image 3).
        let mut array = values([4, 3, 5, 5]);
        array[[3, 0, 0, 0]] = f32::NAN;
        array[[0, 2, 4, 4]] = f32::NEG_INFINITY;
        let path = scratch("nan-fortran.npy");
        let reversed = array.t().as_standard_layout().to_owned().reversed_axes();
        ndarray_npy::write_npy(&path, &reversed).unwrap();
        let message = NpyBatch::open(&path)
            .unwrap()
            .check_finite()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("2 NaN or infinite values")
                && message.contains("image 0, channel 2, row 4, column 4"),
            "{message}"
        );
    }
}
