//! Writing outputs: folders created on demand, files written atomically (a temporary
//! file in the same folder, then a rename) so that a reader or a concurrent run never
//! sees half a file.

use std::path::{Path, PathBuf};

use image::RgbImage;
use lumen_core::{LumenError, Result};

fn io_error(path: &Path, source: std::io::Error) -> LumenError {
    LumenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A temporary name beside `path`, unique to this process and call.
pub(crate) fn temporary_beside(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    path.with_file_name(unique)
}

pub(crate) fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e)),
        None => Ok(()),
    }
}

/// Write `bytes` to `path` atomically, creating its folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let _stage = lumen_core::profile::stage(lumen_core::profile::stages::WRITE);
    create_parent(path)?;
    let temporary = temporary_beside(path);
    std::fs::write(&temporary, bytes).map_err(|e| io_error(path, e))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        std::fs::remove_file(&temporary).ok();
        io_error(path, e)
    })
}

/// Encode `figure` as PNG to `dir/file` atomically; returns the path.
pub fn save_png(figure: &RgbImage, dir: &Path, file: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    let mut bytes = std::io::Cursor::new(Vec::new());
    lumen_core::profile::timed(lumen_core::profile::stages::ENCODE, || {
        figure.write_to(&mut bytes, image::ImageFormat::Png)
    })
    .map_err(|e| io_error(&path, std::io::Error::other(e.to_string())))?;
    write_atomically(&path, bytes.get_ref())?;
    Ok(path)
}

/// Read a normalised batch `[B,3,H,W]` from a `.npy` file (float32, or float64
/// converted; either byte order, C or Fortran layout) onto `device`.
pub fn read_npy_batch(path: &Path, device: &lumen_core::Device) -> Result<lumen_core::Tensor<4>> {
    use lumen_core::burn::tensor::TensorData;
    let bad = |message: String| io_error(path, std::io::Error::other(message));
    let file = std::fs::read(path).map_err(|e| io_error(path, e))?;
    check_npy_length(&file).map_err(bad)?;
    let array: ndarray::ArrayD<f32> = match ndarray_npy::ReadNpyExt::read_npy(file.as_slice()) {
        Ok(array) => array,
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(descriptor)) => {
            let wide: ndarray::ArrayD<f64> = ndarray_npy::ReadNpyExt::read_npy(file.as_slice())
                .map_err(|_| {
                    bad(format!(
                        "the array's dtype is {descriptor}: expected float32 or float64 values"
                    ))
                })?;
            wide.mapv(|v| v as f32)
        }
        Err(e) => return Err(bad(format!("not a readable .npy array: {e}"))),
    };
    let shape = array.shape().to_vec();
    if shape.len() != 4 || shape[1] != 3 {
        return Err(LumenError::shape(
            format!("input array {}", path.display()),
            "[B,3,H,W] float32",
            format!("{shape:?}"),
        ));
    }
    let values: Vec<f32> = array.iter().copied().collect();
    Ok(lumen_core::Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        device,
    ))
}

/// Refuses an `.npy` file of floats whose header declares more (or fewer) values than
/// its data holds. ndarray-npy allocates the declared array before reading it, so a
/// damaged header (`shape: (100000, 3, 1000, 1000)` over a few bytes) aborted the
/// process on a failed 1.2 TB allocation; it does so for any element type, before
/// refusing those that are not floats, so those are refused here too.
fn check_npy_length(file: &[u8]) -> std::result::Result<(), String> {
    let not_npy = || "not a readable .npy array: the header is damaged".to_string();
    let rest = file.strip_prefix(b"\x93NUMPY").ok_or_else(not_npy)?;
    let (&major, rest) = rest.split_first().ok_or_else(not_npy)?;
    let rest = rest.get(1..).ok_or_else(not_npy)?;
    let (size, rest) = match major {
        1 => rest
            .split_first_chunk::<2>()
            .map(|(n, r)| (u16::from_le_bytes(*n) as usize, r)),
        2 | 3 => rest
            .split_first_chunk::<4>()
            .map(|(n, r)| (u32::from_le_bytes(*n) as usize, r)),
        _ => None,
    }
    .ok_or_else(not_npy)?;
    let header = rest.get(..size).ok_or_else(not_npy)?;
    let data = rest.len() - size;
    let header: py_literal::Value = std::str::from_utf8(header)
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
    // ndarray-npy allocates before it compares the element type, so every type is
    // checked here: the two it reads as floats, by their size.
    let item_size: usize = match entry("descr") {
        Some(py_literal::Value::String(d)) if d == "<f4" || d == ">f4" => 4,
        Some(py_literal::Value::String(d)) if d == "<f8" || d == ">f8" => 8,
        Some(other) => {
            return Err(format!(
                "the array's dtype is {other}: expected float32 or float64 values"
            ));
        }
        None => return Err(not_npy()),
    };
    let shape: Vec<usize> = match entry("shape") {
        Some(py_literal::Value::Tuple(dims)) => dims
            .iter()
            .map(|d| d.as_integer().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(not_npy)?,
        _ => return Err(not_npy()),
    };
    let declared = shape
        .iter()
        .try_fold(item_size, |bytes, &d| bytes.checked_mul(d));
    if declared == Some(data) {
        Ok(())
    } else {
        Err(format!(
            "not a readable .npy array: its header declares shape {shape:?} ({} bytes) but \
             {data} bytes of data follow it: the file is damaged or cut short",
            declared.map_or("more than can be addressed".to_string(), |b| b.to_string())
        ))
    }
}

/// Write float32 values of `shape` as `.npy`, atomically.
pub fn write_npy(path: &Path, values: Vec<f32>, shape: &[usize]) -> Result<()> {
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), values).map_err(|e| {
        LumenError::InvalidArgument(format!("values do not fill the shape {shape:?}: {e}"))
    })?;
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&array, &mut bytes)
        .map_err(|e| io_error(path, std::io::Error::other(e.to_string())))?;
    write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("lumen-output-{}", std::process::id()));
        let path = dir.join("sub/a.txt");
        write_atomically(&path, b"first version").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let png = save_png(&RgbImage::new(2, 3), &dir, "x.png").unwrap();
        assert_eq!(image::open(png).unwrap().height(), 3);
        std::fs::remove_dir_all(dir).ok();
    }
}
