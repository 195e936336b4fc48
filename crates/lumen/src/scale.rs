//! Runs beyond one machine: a deterministic split of the inputs into shards (for
//! Slurm arrays and Kubernetes Indexed Jobs), each writing its own JSON lines index,
//! and the merge of the shards' indexes into what one run would have written.
//!
//! A batch run writes `index.jsonl` beside its figures: one line per input, in input
//! order, with its position in the whole list, the file, and either the result or
//! the reason it could not be read. Shard `I` of `N` explains a contiguous slice of
//! the sorted inputs, whole batches of the unsharded run ([`Shard::range`]), and writes
//! `index.shard-IIII-of-NNNN.jsonl`; its grid thumbnails go under `.grid/` so that
//! [`merge_shards`] can draw the same `batch_grid.png` as one run.

use std::ops::Range;
use std::path::{Path, PathBuf};

use lumen_core::{LumenError, Result};
use lumen_report::{Layout, Panel, grid, title_bar};
use serde::{Deserialize, Serialize};

use crate::output::{save_png, write_atomically};

/// One shard of a split run: `index` in `0..count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, counted from 0.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Shard `index` of `count`; `index` must be below `count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(LumenError::InvalidArgument(
                "the number of shards must be at least 1".into(),
            ));
        }
        if index >= count {
            return Err(LumenError::InvalidArgument(format!(
                "shard {index} does not exist in a split of {count}: shards count from 0 to {}",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// `I/N` (shard I of N, from 0), `auto` (from a Slurm array's variables) or
    /// `auto/N` (the index from Slurm or a Kubernetes Indexed Job's
    /// `JOB_COMPLETION_INDEX`, N shards). `env` reads a variable (`std::env::var`).
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |why: String| {
            LumenError::InvalidArgument(format!(
                "--shard `{spec}`: {why} (expected I/N such as 0/8, auto, or auto/N)"
            ))
        };
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("{what} `{text}` is not a whole number")))
        };
        let (index, count) = match spec.trim().split_once('/') {
            Some((index, count)) => (index.trim(), Some(number(count, "the shard count")?)),
            None => (spec.trim(), None),
        };
        if index != "auto" {
            let count = count.ok_or_else(|| bad("no shard count".into()))?;
            return Self::new(number(index, "the shard index")?, count);
        }
        let variable = |name: &str| -> Result<Option<usize>> {
            env(name)
                .map(|value| {
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| bad(format!("{name}={value} is not a whole number")))
                })
                .transpose()
        };
        if let Some(id) = variable("SLURM_ARRAY_TASK_ID")? {
            let first = variable("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = variable("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let slurm_count = variable("SLURM_ARRAY_TASK_COUNT")?;
            let count = match (count, slurm_count) {
                (Some(given), Some(slurm)) if given != slurm => {
                    return Err(bad(format!(
                        "the Slurm array has {slurm} tasks (SLURM_ARRAY_TASK_COUNT) but {given} shards were given"
                    )));
                }
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => return Err(bad("SLURM_ARRAY_TASK_COUNT is not set".into())),
            };
            let offset = id.checked_sub(first).ok_or_else(|| {
                bad(format!(
                    "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {first}"
                ))
            })?;
            return Self::new(offset / step, count);
        }
        if let Some(index) = variable("JOB_COMPLETION_INDEX")? {
            let count = count.ok_or_else(|| {
                bad("JOB_COMPLETION_INDEX is set but the number of shards is not: give auto/N with the Job's completions".into())
            })?;
            return Self::new(index, count);
        }
        Err(bad(
            "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set".into(),
        ))
    }

    /// This shard's slice of `len` inputs explained in batches of `batch_size`:
    /// contiguous, and made of whole batches of the unsharded run (shard sizes differ
    /// by at most one batch). Each image then shares its forward with the same images
    /// as in one run. flex gives the same bits for any batch (measured: batches of 1, 2
    /// and 8 agree on predictions and maps), but GPU libraries may pick kernels by
    /// batch size and round differently.
    pub fn range(&self, len: usize, batch_size: usize) -> Range<usize> {
        let batch_size = batch_size.max(1);
        let batches = len.div_ceil(batch_size);
        let first = self.index * batches / self.count;
        let end = (self.index + 1) * batches / self.count;
        (first * batch_size).min(len)..(end * batch_size).min(len)
    }

    /// `shard-0003-of-0008`.
    pub fn label(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.index, self.count)
    }

    /// The index file a shard writes.
    pub fn index_file(&self) -> String {
        format!("index.{}.jsonl", self.label())
    }

    fn grid_file(&self) -> String {
        format!("grid.{}.jsonl", self.label())
    }

    /// The evaluation file a shard of `lumen evaluate` writes.
    pub fn evaluation_file(&self) -> String {
        format!("evaluation.{}.json", self.label())
    }
}

/// What a split run's shards wrote: `lumen batch` indexes or `lumen evaluate` parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKind {
    /// `index.shard-IIII-of-NNNN.jsonl`.
    BatchIndex,
    /// `evaluation.shard-IIII-of-NNNN.json`.
    Evaluation,
}

impl ShardKind {
    fn affixes(self) -> (&'static str, &'static str) {
        match self {
            Self::BatchIndex => ("index.shard-", ".jsonl"),
            Self::Evaluation => (EVALUATION_SHARD_PREFIX, ".json"),
        }
    }
}

const EVALUATION_SHARD_PREFIX: &str = "evaluation.shard-";

/// The index a whole (unsharded) run writes.
pub const INDEX_FILE: &str = "index.jsonl";
/// The grid of the first images' overlays.
pub const GRID_FILE: &str = "batch_grid.png";
/// Folder of a shard's grid thumbnails.
const THUMBNAILS: &str = ".grid";

/// One line of a batch index: an input's place in the whole run and what came of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexLine {
    /// Position in the whole run's input list.
    pub position: usize,
    /// Inputs in the whole run.
    pub total: usize,
    /// The input file.
    pub file: PathBuf,
    /// The result (the task's result as JSON), when the input was explained.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<serde_json::Value>,
    /// The map as `.npy` (`--save-raw`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw: Option<PathBuf>,
    /// Why the input could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Whether the result came from the cache (not part of the merged index: a
    /// resumed run and a fresh one write the same lines).
    #[serde(skip)]
    pub cached: bool,
}

/// A thumbnail of the batch grid, by position.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct GridLine {
    position: usize,
    title: String,
    thumbnail: PathBuf,
}

/// The grid figure of a batch: `title` over the panels, about square.
pub(crate) fn batch_grid(method: &str, explained: usize, panels: &[Panel]) -> image::RgbImage {
    let columns = (panels.len() as f64).sqrt().ceil() as usize;
    title_bar(
        &format!("{method} on {explained} images"),
        &grid(panels, Layout::Grid(columns)),
    )
}

fn json_lines<T: Serialize>(lines: &[T]) -> Result<Vec<u8>> {
    let mut bytes = vec![];
    for line in lines {
        serde_json::to_writer(&mut bytes, line)
            .map_err(|e| LumenError::InvalidArgument(format!("index line: {e}")))?;
        bytes.push(b'\n');
    }
    Ok(bytes)
}

/// A run's index, written line by line as its images finish so that memory stays flat
/// over a large folder, to a temporary file that [`IndexWriter::finish`] renames into
/// place: an interrupted run leaves no partial index (and its temporary is removed).
pub(crate) struct IndexWriter {
    path: PathBuf,
    temporary: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    shard: Option<Shard>,
}

impl IndexWriter {
    /// Start the index of `dir` (the shard's, with `shard`).
    pub(crate) fn create(dir: &Path, shard: Option<Shard>) -> Result<Self> {
        let file = shard.map_or(INDEX_FILE.to_string(), |s| s.index_file());
        Self::at(dir.join(file), shard)
    }

    /// Start an index at `path`.
    fn at(path: PathBuf, shard: Option<Shard>) -> Result<Self> {
        crate::output::create_parent(&path)?;
        let temporary = crate::output::temporary_beside(&path);
        let out = std::fs::File::create(&temporary).map_err(|e| LumenError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(Self {
            path,
            temporary,
            out: Some(std::io::BufWriter::new(out)),
            shard,
        })
    }

    /// Append one line.
    pub(crate) fn push(&mut self, line: &IndexLine) -> Result<()> {
        self.push_bytes(&json_lines(std::slice::from_ref(line))?)
    }

    /// Append a line as it was written (no newline in `text`).
    fn push_text(&mut self, text: &str) -> Result<()> {
        self.push_bytes(format!("{text}\n").as_bytes())
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let _stage = lumen_core::profile::stage(lumen_core::profile::stages::WRITE);
        let out = self
            .out
            .as_mut()
            .expect("an index is not written after it is finished");
        std::io::Write::write_all(out, bytes).map_err(|e| LumenError::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Put the index in place (and, for a shard, its grid thumbnails; a whole run draws
    /// its grid itself). `thumbnails` are the first explained images' (position, panel).
    pub(crate) fn finish(mut self, thumbnails: Vec<(usize, Panel)>) -> Result<PathBuf> {
        let io = |path: &Path, e: std::io::Error| LumenError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let out = self.out.take().expect("an index is finished once");
        out.into_inner()
            .map_err(|e| io(&self.path, e.into_error()))?
            .sync_all()
            .map_err(|e| io(&self.path, e))?;
        std::fs::rename(&self.temporary, &self.path).map_err(|e| io(&self.path, e))?;
        write_grid_lines(&self.path, self.shard, thumbnails)?;
        Ok(self.path.clone())
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        // Not finished (an error or a panic on the way): no stray temporary.
        if self.out.take().is_some() {
            std::fs::remove_file(&self.temporary).ok();
        }
    }
}

/// Write a run's index at once (and, for a shard, its grid thumbnails).
#[cfg(test)]
pub(crate) fn write_index(
    dir: &Path,
    shard: Option<Shard>,
    lines: &[IndexLine],
    thumbnails: Vec<(usize, Panel)>,
) -> Result<PathBuf> {
    let mut index = IndexWriter::create(dir, shard)?;
    for line in lines {
        index.push(line)?;
    }
    index.finish(thumbnails)
}

/// A shard's grid thumbnails and their lines, beside its index at `index`.
fn write_grid_lines(
    index: &Path,
    shard: Option<Shard>,
    thumbnails: Vec<(usize, Panel)>,
) -> Result<()> {
    let dir = index.parent().unwrap_or(Path::new("."));
    if let Some(shard) = shard {
        let mut grid_lines = vec![];
        for (position, panel) in thumbnails {
            let name = format!("{position:09}.png");
            save_png(&panel.image, &dir.join(THUMBNAILS), &name)?;
            grid_lines.push(GridLine {
                position,
                title: panel.title,
                thumbnail: Path::new(THUMBNAILS).join(name),
            });
        }
        write_atomically(&dir.join(shard.grid_file()), &json_lines(&grid_lines)?)?;
    }
    Ok(())
}

/// What [`merge_shards`] joined.
#[derive(Clone, Debug, Serialize)]
pub struct MergeSummary {
    /// Shards found.
    pub shards: usize,
    /// Inputs in the run.
    pub inputs: usize,
    /// Inputs explained.
    pub explained: usize,
    /// Inputs that could not be read.
    pub failed: usize,
    /// The merged index.
    pub index: PathBuf,
    /// The grid drawn, when any input was explained.
    pub grid: Option<PathBuf>,
}

/// Each line of a JSON lines file, parsed, with its text, one at a time, until `visit`
/// returns false.
fn for_each_line<T: for<'de> Deserialize<'de>>(
    path: &Path,
    mut visit: impl FnMut(T, &str) -> Result<bool>,
) -> Result<()> {
    use std::io::BufRead;
    let io = |e| LumenError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    for (number, line) in file.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line).map_err(|e| {
            LumenError::InvalidArgument(format!(
                "{} line {}: not an index line ({e})",
                path.display(),
                number + 1
            ))
        })?;
        if !visit(parsed, &line)? {
            break;
        }
    }
    Ok(())
}

/// The lines of a JSON lines file, parsed, each with its text.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<(T, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| LumenError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let parsed = serde_json::from_str(line).map_err(|e| {
                LumenError::InvalidArgument(format!(
                    "{} line {}: not an index line ({e})",
                    path.display(),
                    number + 1
                ))
            })?;
            Ok((parsed, line.to_string()))
        })
        .collect()
}

/// The shards' files of one kind under `dir` (and its sub-folders), with the shard
/// each names, in path order.
pub fn shard_files(dir: &Path, kind: ShardKind) -> Result<Vec<(Shard, PathBuf)>> {
    let mut found = vec![];
    find_shards(dir, kind, &mut found)?;
    Ok(found)
}

fn find_shards(dir: &Path, kind: ShardKind, found: &mut Vec<(Shard, PathBuf)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| LumenError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            find_shards(&path, kind, found)?;
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let (prefix, suffix) = kind.affixes();
        let Some(label) = name
            .as_deref()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(suffix))
        else {
            continue;
        };
        let shard = label
            .split_once("-of-")
            .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
            .and_then(|(i, n)| Shard::new(i, n).ok());
        match shard {
            Some(shard) => found.push((shard, path)),
            None => eprintln!("note: {} is not a shard's file; skipped", path.display()),
        }
    }
    Ok(())
}

/// The shards' files of one kind under `dir` and the number of shards, after checking
/// that they are every shard of one split, each once.
fn complete_split(dir: &Path, kind: ShardKind) -> Result<(Vec<(Shard, PathBuf)>, usize)> {
    let found = shard_files(dir, kind)?;
    let Some(count) = found.first().map(|(s, _)| s.count) else {
        let (what, command) = match kind {
            ShardKind::BatchIndex => ("shard index (index.shard-IIII-of-NNNN.jsonl)", "batch"),
            ShardKind::Evaluation => (
                "evaluation shard (evaluation.shard-IIII-of-NNNN.json)",
                "evaluate",
            ),
        };
        return Err(LumenError::InvalidArgument(format!(
            "no {what} under {}: run `lumen {command} --shard I/N --out {}` first",
            dir.display(),
            dir.display()
        )));
    };
    if let Some((other, path)) = found.iter().find(|(s, _)| s.count != count) {
        return Err(LumenError::InvalidArgument(format!(
            "{} belongs to a split of {} shards, the others to one of {count}: merge one split at a time",
            path.display(),
            other.count
        )));
    }
    let mut seen = vec![vec![]; count];
    for (shard, path) in &found {
        seen[shard.index].push(path.clone());
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| seen[i].is_empty())
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(LumenError::InvalidArgument(format!(
            "shard(s) {} of {count} missing under {}: run them (with --cache, a rerun reuses what was done)",
            missing.join(", "),
            dir.display()
        )));
    }
    if let Some(twice) = seen.iter().find(|paths| paths.len() > 1) {
        return Err(LumenError::InvalidArgument(format!(
            "one shard has several files: {}",
            twice
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((found, count))
}

/// Join the shard indexes found under `dir` into one index at `out` (and the grid
/// `batch_grid.png` beside it), as one unsharded run would have written them. Every
/// shard of the split must be there exactly once, and together they must cover every
/// input once; otherwise the error names what is missing.
pub fn merge_shards(dir: &Path, out: &Path) -> Result<MergeSummary> {
    let (found, count) = complete_split(dir, ShardKind::BatchIndex)?;
    // A shard is a contiguous run of inputs written in order: the shards, taken by
    // their first position, are the merged index line after line, streamed so that a
    // run of a million inputs merges in flat memory. Lines are copied as written:
    // parsing and printing floats again could change their last digit.
    let mut order: Vec<(usize, &PathBuf)> = vec![];
    let mut thumbnails: Vec<(GridLine, PathBuf)> = vec![];
    for (shard, path) in &found {
        // Only the first line: the merge below reads each shard once more, in order.
        let mut first = None;
        for_each_line::<IndexLine>(path, |line, _| {
            first = Some(line.position);
            Ok(false)
        })?;
        // A shard of no input (more shards than inputs) adds nothing.
        if let Some(first) = first {
            order.push((first, path));
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let grid_path = folder.join(shard.grid_file());
        if grid_path.exists() {
            for (line, _) in read_lines::<GridLine>(&grid_path)? {
                let file = folder.join(&line.thumbnail);
                thumbnails.push((line, file));
            }
        }
    }
    // Every run has at least one input (one line each, read or not), so shards
    // without a line between them are emptied files, not an empty run.
    if order.is_empty() {
        return Err(LumenError::InvalidArgument(format!(
            "the {count} shard indexes under {} hold no line between them: a run writes one per input, so these files were emptied; run the shards again",
            dir.display()
        )));
    }
    order.sort();
    let mut index = IndexWriter::at(out.to_path_buf(), None)?;
    let (mut lines, mut explained, mut in_order) = (0usize, 0usize, true);
    let mut total = None;
    let mut method: Option<String> = None;
    for (_, path) in &order {
        for_each_line::<IndexLine>(path, |line, text| {
            let total = *total.get_or_insert(line.total);
            // Past the first gap or overlap nothing more is written (the temporary is
            // removed); the lines are still counted for the message.
            in_order &= line.position == lines && line.total == total;
            lines += 1;
            if let Some(result) = &line.result {
                explained += 1;
                if method.is_none() {
                    method = result
                        .get("method")
                        .and_then(|m| m.as_str())
                        .map(String::from);
                }
            }
            if in_order {
                index.push_text(text)?;
            }
            Ok(true)
        })?;
    }
    let total = total.unwrap_or(0);
    if !in_order || lines != total {
        return Err(LumenError::InvalidArgument(format!(
            "the shards under {} do not cover their {total} inputs exactly once ({lines} lines): were they run on the same inputs?",
            dir.display(),
        )));
    }
    index.finish(vec![])?;
    thumbnails.sort_by_key(|(line, _)| line.position);
    thumbnails.truncate(crate::api::BATCH_GRID_LIMIT);
    let mut grid = None;
    if !thumbnails.is_empty() {
        let method = method.as_deref().unwrap_or("method");
        let panels = thumbnails
            .into_iter()
            .map(|(line, file)| {
                let image = image::open(&file)
                    .map_err(|e| LumenError::Image {
                        path: file.clone(),
                        message: format!("a grid thumbnail of a shard cannot be read: {e}"),
                    })?
                    .to_rgb8();
                Ok(Panel::new(line.title, image))
            })
            .collect::<Result<Vec<_>>>()?;
        let folder = out.parent().unwrap_or(Path::new("."));
        grid = Some(save_png(
            &batch_grid(method, explained, &panels),
            folder,
            GRID_FILE,
        )?);
    }
    Ok(MergeSummary {
        shards: count,
        inputs: total,
        explained,
        failed: total - explained,
        index: out.to_path_buf(),
        grid,
    })
}

/// One shard's part of a split `lumen evaluate` run, as it writes it
/// ([`Shard::evaluation_file`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationShard {
    /// This shard, from 0.
    pub shard: usize,
    /// Shards in the split.
    pub shards: usize,
    /// The first image of the split this shard measured.
    pub first_image: usize,
    /// Images in the whole split.
    pub total_images: usize,
    /// The run's settings: every shard of a split must have the same.
    pub settings: serde_json::Value,
    /// The part's evaluation.
    pub evaluation: EvaluationPart,
}

/// A part's evaluation: a classifier's or a dense model's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "result", rename_all = "snake_case")]
pub enum EvaluationPart {
    /// [`crate::evaluate::evaluate_part`]'s.
    Classification(crate::evaluate::Evaluation),
    /// [`crate::task_evaluation::evaluate_detector`]'s or `evaluate_segmentor`'s.
    Dense(crate::task_evaluation::TaskEvaluation),
}

impl EvaluationPart {
    fn images(&self) -> usize {
        match self {
            Self::Classification(e) => e.samples,
            Self::Dense(e) => e.images,
        }
    }
}

/// What [`merge_evaluation_shards`] joined.
#[derive(Clone, Debug)]
pub struct EvaluationMerge {
    /// Shards found.
    pub shards: usize,
    /// Images of the whole split.
    pub images: usize,
    /// The merged evaluation, as one run gives it.
    pub evaluation: EvaluationPart,
}

/// Join the `lumen evaluate --shard` parts found under `dir` into the evaluation of
/// the whole split. Every shard must be there once, with the same settings, and
/// together they must cover the split's images once.
pub fn merge_evaluation_shards(dir: &Path) -> Result<EvaluationMerge> {
    let (found, count) = complete_split(dir, ShardKind::Evaluation)?;
    let mut parts: Vec<EvaluationShard> = found
        .iter()
        .map(|(_, path)| {
            let text = std::fs::read_to_string(path).map_err(|e| LumenError::Io {
                path: path.clone(),
                source: e,
            })?;
            serde_json::from_str(&text).map_err(|e| {
                LumenError::InvalidArgument(format!(
                    "{}: not a `lumen evaluate --shard` file ({e})",
                    path.display()
                ))
            })
        })
        .collect::<Result<_>>()?;
    parts.sort_by_key(|p| p.shard);
    let first = &parts[0];
    if let Some(other) = parts.iter().find(|p| p.settings != first.settings) {
        return Err(LumenError::InvalidArgument(format!(
            "shards {} and {} were run with different settings ({} against {}): run every shard of a split with the same options",
            first.shard, other.shard, first.settings, other.settings
        )));
    }
    let mut next = 0;
    for part in &parts {
        if part.first_image != next || part.total_images != first.total_images {
            return Err(LumenError::InvalidArgument(format!(
                "the shards under {} do not cover the split's {} images once (shard {} starts at image {}, expected {next})",
                dir.display(),
                first.total_images,
                part.shard,
                part.first_image
            )));
        }
        next += part.evaluation.images();
    }
    if next != first.total_images {
        return Err(LumenError::InvalidArgument(format!(
            "the shards under {} measured {next} of the split's {} images",
            dir.display(),
            first.total_images
        )));
    }
    let evaluation = match &first.evaluation {
        EvaluationPart::Classification(_) => {
            let evaluations = parts
                .iter()
                .map(|p| match &p.evaluation {
                    EvaluationPart::Classification(e) => Ok(e.clone()),
                    EvaluationPart::Dense(_) => Err(mixed_kinds()),
                })
                .collect::<Result<Vec<_>>>()?;
            EvaluationPart::Classification(crate::evaluate::merge_evaluations(&evaluations)?)
        }
        EvaluationPart::Dense(_) => {
            let evaluations = parts
                .iter()
                .map(|p| match &p.evaluation {
                    EvaluationPart::Dense(e) => Ok(e.clone()),
                    EvaluationPart::Classification(_) => Err(mixed_kinds()),
                })
                .collect::<Result<Vec<_>>>()?;
            EvaluationPart::Dense(crate::task_evaluation::merge_task_evaluations(
                &evaluations,
            )?)
        }
    };
    Ok(EvaluationMerge {
        shards: count,
        images: next,
        evaluation,
    })
}

fn mixed_kinds() -> LumenError {
    LumenError::InvalidArgument(
        "the shards mix a classifier's evaluation with a dense model's: merge one split at a time"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shards_split_every_input_once_in_order_by_whole_batches() {
        for len in [0, 1, 5, 17, 100] {
            for batch in [1, 2, 8] {
                for count in 1..=7 {
                    let mut covered = vec![];
                    for index in 0..count {
                        let range = Shard::new(index, count).unwrap().range(len, batch);
                        assert!(range.len() <= (len.div_ceil(batch) / count + 1) * batch);
                        assert!(range.start.is_multiple_of(batch), "{range:?}");
                        covered.extend(range);
                    }
                    assert_eq!(covered, (0..len).collect::<Vec<_>>(), "{len} in {count}");
                }
            }
        }
        // 8 images in batches of 2 over 3 shards: batches 0 | 1 | 2,3.
        let ranges: Vec<_> = (0..3)
            .map(|i| Shard::new(i, 3).unwrap().range(8, 2))
            .collect();
        assert_eq!(ranges, vec![0..2, 2..4, 4..8]);
    }

    #[test]
    fn shard_specs_come_from_the_flag_slurm_or_kubernetes() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("2/8", &none).unwrap(),
            Shard { index: 2, count: 8 }
        );
        for bad in ["8/8", "1/0", "x/4", "3", "auto", "-1/4", "1/", "auto/x"] {
            let error = Shard::parse(bad, &none).unwrap_err().to_string();
            assert!(
                error.contains("--shard") || error.contains("shard"),
                "{bad}: {error}"
            );
        }
        // Slurm arrays 1-8 (MIN 1) and 0-14:2 (STEP 2) map onto 0..N.
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            Shard::parse("auto", &slurm).unwrap(),
            Shard { index: 2, count: 8 }
        );
        assert!(Shard::parse("auto/4", &slurm).is_err());
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            Shard::parse("auto", &stepped).unwrap(),
            Shard { index: 3, count: 8 }
        );
        let kubernetes = env(&[("JOB_COMPLETION_INDEX", "5")]);
        assert_eq!(
            Shard::parse("auto/6", &kubernetes).unwrap(),
            Shard { index: 5, count: 6 }
        );
        let error = Shard::parse("auto", &kubernetes).unwrap_err().to_string();
        assert!(error.contains("auto/N"), "{error}");
        assert!(Shard::parse("auto/5", &kubernetes).is_err());
    }

    #[test]
    fn a_merge_names_missing_and_mixed_shards() {
        let dir = std::env::temp_dir().join(format!("lumen-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |position: usize| IndexLine {
            position,
            total: 3,
            file: format!("{position}.png").into(),
            result: None,
            raw: None,
            error: Some("unreadable".into()),
            cached: false,
        };
        let out = dir.join("merged.jsonl");
        let error = merge_shards(&dir, &out).unwrap_err().to_string();
        assert!(error.contains("no shard index"), "{error}");
        let first = Shard::new(0, 2).unwrap();
        write_index(&dir, Some(first), &[line(0)], vec![]).unwrap();
        let error = merge_shards(&dir, &out).unwrap_err().to_string();
        assert!(error.contains("shard(s) 1 of 2 missing"), "{error}");
        let second = Shard::new(1, 2).unwrap();
        write_index(&dir, Some(second), &[line(1)], vec![]).unwrap();
        let error = merge_shards(&dir, &out).unwrap_err().to_string();
        assert!(error.contains("exactly once"), "{error}");
        // Overlapping shards, and a gap at the start of one, stop the streamed merge
        // with no index and no temporary left.
        let temporaries = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .count()
        };
        for lines in [[line(0), line(1), line(2)], [line(2), line(1), line(0)]] {
            write_index(&dir, Some(second), &lines, vec![]).unwrap();
            let error = merge_shards(&dir, &out).unwrap_err().to_string();
            assert!(error.contains("3 inputs exactly once (4 lines)"), "{error}");
            assert!(!out.exists());
            assert_eq!(temporaries(), 0);
        }
        write_index(&dir, Some(second), &[line(1), line(2)], vec![]).unwrap();
        let summary = merge_shards(&dir, &out).unwrap();
        assert_eq!((summary.shards, summary.inputs, summary.failed), (2, 3, 3));
        let merged: Vec<IndexLine> = read_lines(&out)
            .unwrap()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(merged, vec![line(0), line(1), line(2)]);
        // Was a merge of "0 inputs": both files emptied (a shard of no batch writes an
        // empty index, but some shard always has the run's inputs).
        write_index(&dir, Some(first), &[], vec![]).unwrap();
        write_index(&dir, Some(second), &[], vec![]).unwrap();
        let error = merge_shards(&dir, &out).unwrap_err().to_string();
        assert!(error.contains("hold no line between them"), "{error}");
        write_index(&dir, Some(Shard::new(0, 3).unwrap()), &[line(0)], vec![]).unwrap();
        let error = merge_shards(&dir, &out).unwrap_err().to_string();
        assert!(error.contains("one split at a time"), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
