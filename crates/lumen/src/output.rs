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

/// A file written in parts, put in place whole: the parts go to a temporary file
/// beside the path, renamed by [`AtomicFile::finish`]; dropped unfinished (an error
/// mid-run), it leaves nothing. A report or an array of a folder read in chunks.
pub struct AtomicFile {
    path: PathBuf,
    temporary: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    /// Start the file at `path` (its folder created; the temporary file opened now, so
    /// an unwritable place fails before any work).
    pub fn create(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let temporary = temporary_beside(path);
        let file = std::fs::File::create(&temporary).map_err(|e| io_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            temporary,
            out: Some(std::io::BufWriter::new(file)),
        })
    }

    /// The path the file is put at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let _stage = lumen_core::profile::stage(lumen_core::profile::stages::WRITE);
        let out = self.out.as_mut().expect("no part after finish");
        std::io::Write::write_all(out, bytes).map_err(|e| io_error(&self.path, e))
    }

    /// Put the file in place; returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        self.finish_with(|_| Ok(()))
    }

    /// [`Self::finish`], after `last` has changed the written file (rewrite a header).
    pub fn finish_with(
        mut self,
        last: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<PathBuf> {
        let _stage = lumen_core::profile::stage(lumen_core::profile::stages::WRITE);
        let path = self.path.clone();
        let io = |e: std::io::Error| io_error(&path, e);
        let out = self.out.take().expect("a file is finished once");
        let done = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|mut file| last(&mut file))
            .and_then(|()| std::fs::rename(&self.temporary, &self.path));
        if let Err(error) = done {
            std::fs::remove_file(&self.temporary).ok();
            return Err(io(error));
        }
        Ok(path)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            std::fs::remove_file(&self.temporary).ok();
        }
    }
}

/// A float32 `.npy` array written block by block along its first axis, whose length is
/// known only at the end: a folder explained in chunks, where unreadable files are
/// skipped as they come. ndarray-npy and npyz take the whole shape before the data
/// (npyz's growing writer is one-dimensional), so the header is written here: room is
/// kept for the longest first axis, and the header is rewritten at the end, padded
/// with spaces as NumPy's format allows. Written to a temporary file beside the path and
/// renamed by [`NpyRowWriter::finish`]; dropped unfinished, it leaves nothing.
pub struct NpyRowWriter {
    file: AtomicFile,
    /// The shape after the first axis, fixed by the first block.
    row_shape: Option<Vec<usize>>,
    rows: usize,
    /// The header's length in the file: data starts there.
    header_len: usize,
}

impl NpyRowWriter {
    /// Start the array at `path` (its folder created; the temporary file opened now, so
    /// an unwritable place fails before any work).
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self {
            file: AtomicFile::create(path)?,
            row_shape: None,
            rows: 0,
            header_len: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Append a block of `shape` (`[rows, ...]`, row-major values); every block has the
    /// first one's shape after its first axis.
    pub fn append(&mut self, values: &[f32], shape: &[usize]) -> Result<()> {
        let Some((&rows, row_shape)) = shape.split_first() else {
            return Err(LumenError::InvalidArgument(
                "an array block needs a first axis".into(),
            ));
        };
        if values.len() != shape.iter().product::<usize>() {
            return Err(LumenError::InvalidArgument(format!(
                "{} values do not fill a block of shape {shape:?}",
                values.len()
            )));
        }
        match &self.row_shape {
            Some(expected) if expected != row_shape => {
                return Err(LumenError::InvalidArgument(format!(
                    "{}: a block of rows {row_shape:?} after rows {expected:?}: the array's \
                     rows must keep one shape",
                    self.file.path().display()
                )));
            }
            Some(_) => {}
            None => {
                // Room for the longest first axis; the real one is written at the end.
                let reserved = npy_header(&[&[usize::MAX][..], row_shape].concat(), None);
                self.header_len = reserved.len();
                self.write(&reserved)?;
                self.row_shape = Some(row_shape.to_vec());
            }
        }
        // In blocks: a chunk of attributions is hundreds of megabytes.
        let mut bytes = Vec::with_capacity(4 * values.len().min(1 << 16));
        for block in values.chunks(1 << 16) {
            bytes.clear();
            for v in block {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            self.write(&bytes)?;
        }
        self.rows += rows;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write(bytes)
    }

    /// Write the header with the rows written and put the array in place. With no
    /// block written, the array is empty with rows of `empty_row_shape`.
    pub fn finish(mut self, empty_row_shape: &[usize]) -> Result<PathBuf> {
        use std::io::{Seek, Write};
        if self.row_shape.is_none() {
            let header = npy_header(&[&[0][..], empty_row_shape].concat(), None);
            self.header_len = header.len();
            self.write(&header)?;
            self.row_shape = Some(empty_row_shape.to_vec());
        }
        let row_shape = self.row_shape.clone().unwrap_or_default();
        let header = npy_header(
            &[&[self.rows][..], &row_shape].concat(),
            Some(self.header_len),
        );
        self.file.finish_with(|file| {
            file.seek(std::io::SeekFrom::Start(0))?;
            file.write_all(&header)
        })
    }
}

/// A version 1.0 `.npy` header for little-endian float32 of `shape`, C order, padded
/// with spaces to a multiple of 64 bytes (or to `length`, which must hold it).
fn npy_header(shape: &[usize], length: Option<usize>) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = match dims.as_slice() {
        [one] => format!("{one},"),
        _ => dims.join(", "),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6), version (2), header length (2), the dict, padding, a newline.
    let unpadded = 10 + dict.len() + 1;
    let total = length.unwrap_or(unpadded.div_ceil(64) * 64);
    assert!(total >= unpadded, "the npy header outgrew its room");
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(total - 1, b' ');
    header.push(b'\n');
    header
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

    #[test]
    fn a_file_written_in_parts_appears_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("lumen-atomic-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let path = dir.join("sub").join("page.html");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write(b"<html>").unwrap();
        // Not in place until finished.
        assert!(!path.exists());
        file.write(b"</html>").unwrap();
        assert_eq!(file.finish().unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"<html></html>");
        // Dropped unfinished (an error mid-run): the old file stays, no temporary.
        let mut file = AtomicFile::create(&path).unwrap();
        file.write(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"<html></html>");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("page.html")]);
        // A place that cannot be written fails at creation, before any work.
        std::fs::write(dir.join("a-file"), b"").unwrap();
        let error = AtomicFile::create(&dir.join("a-file").join("page.html"))
            .err()
            .unwrap();
        assert!(error.to_string().contains("a-file"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn row_blocks_make_one_array_numpy_reads() {
        let dir = std::env::temp_dir().join(format!("lumen-npy-rows-{}", std::process::id()));
        let path = dir.join("rows.npy");
        let mut writer = NpyRowWriter::create(&path).unwrap();
        let first: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let second: Vec<f32> = (12..18).map(|v| v as f32 * -0.5).collect();
        writer.append(&first, &[2, 2, 3]).unwrap();
        writer.append(&second, &[1, 2, 3]).unwrap();
        // A block whose rows differ is refused, and the file is still whole after it.
        assert!(writer.append(&[0.0; 4], &[1, 4, 1]).is_err());
        assert!(writer.append(&[0.0; 5], &[1, 2, 3]).is_err());
        assert_eq!(writer.rows(), 3);
        writer.finish(&[2, 3]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let array: ndarray::ArrayD<f32> =
            ndarray_npy::ReadNpyExt::read_npy(bytes.as_slice()).unwrap();
        assert_eq!(array.shape(), &[3, 2, 3]);
        let expected: Vec<f32> = first.iter().chain(&second).copied().collect();
        assert_eq!(array.iter().copied().collect::<Vec<_>>(), expected);
        // The header declares what follows it (Lumen's own reader checks that).
        assert!(crate::npy_input::read_header(&mut bytes.as_slice(), bytes.len() as u64).is_ok());

        // No block: an empty array with the given rows, readable like the others.
        let empty = dir.join("empty.npy");
        NpyRowWriter::create(&empty)
            .unwrap()
            .finish(&[4, 5])
            .unwrap();
        let array: ndarray::ArrayD<f32> =
            ndarray_npy::ReadNpyExt::read_npy(std::fs::read(&empty).unwrap().as_slice()).unwrap();
        assert_eq!(array.shape(), &[0, 4, 5]);

        // Dropped unfinished (an error mid-run): nothing is left, not even the temporary.
        let dropped = dir.join("dropped.npy");
        let mut writer = NpyRowWriter::create(&dropped).unwrap();
        writer.append(&first, &[2, 6]).unwrap();
        drop(writer);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("dropped")),
            "left behind: {names:?}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn npy_headers_are_aligned_and_keep_their_room() {
        let short = npy_header(&[3, 224, 224], None);
        assert_eq!(short.len() % 64, 0);
        let room = npy_header(&[usize::MAX, 224, 224], None);
        let rewritten = npy_header(&[3, 224, 224], Some(room.len()));
        assert_eq!(rewritten.len(), room.len());
        assert_eq!(rewritten.last(), Some(&b'\n'));
        let one = String::from_utf8(npy_header(&[7], None)[10..].to_vec()).unwrap();
        assert!(one.contains("'shape': (7,)"), "{one}");
    }
}
