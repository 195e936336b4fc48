//! Loading timm state dicts unchanged from `.safetensors`, PyTorch `.pth`/`.pt` files or
//! PyTorch Lightning `.ckpt` checkpoints
//! through burn-store. Every missing, unexpected or mis-shaped tensor is reported by
//! its timm key name.

use std::path::Path;

use burn::module::Module;
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::store::{
    ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};
use burn::tensor::{DType, Tensor};
use lumen_core::{LumenError, Result};

/// Buffers PyTorch keeps that carry no value for inference.
const IGNORED_SUFFIXES: &[&str] = &["num_batches_tracked"];

/// A regex rewrite from a state-dict key to a module path (literal replacement).
pub type KeyRemap = (String, String);

/// A remap from string slices.
pub fn remap(from: &str, to: &str) -> KeyRemap {
    (from.to_string(), to.to_string())
}

/// The wrapper `torch.compile` adds to module paths (`backbone._orig_mod.conv1`):
/// stripped on load, never put back into messages.
pub const COMPILED_WRAPPER: &str = "_orig_mod";

/// Load `path` into `module`, rewriting state-dict keys with `remaps` first. Fails,
/// naming the keys, when a parameter is missing, a tensor is unexpected, or a shape
/// does not match.
pub fn load_state_dict<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remaps: &[KeyRemap],
) -> Result<()> {
    load_state_dict_with_scalars(module, path, remaps, &[]).map(|_| ())
}

/// Load the tensors of a module and read the 0-dimensional tensors named `scalars`
/// (after remapping) on the side: Burn has no rank-0 parameters, so a model keeps those
/// (FCOS's per-level scales) as plain numbers. A missing scalar is an error.
pub fn load_state_dict_with_scalars<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remaps: &[KeyRemap],
    scalars: &[String],
) -> Result<Vec<f32>> {
    let fail = |message: String| LumenError::Weights {
        path: path.to_path_buf(),
        message,
    };
    check_weights_path(path).map_err(fail)?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Checkpoints saved from a wrapper (`{"state_dict": ...}`, DataParallel's `module.`,
    // a training module's `model.`) carry a prefix on every key: strip it first.
    let wrappers = wrapper_prefixes(&stored_keys(path, &extension).map_err(fail)?);
    let remaps: Vec<KeyRemap> = wrappers
        .iter()
        .map(|prefix| remap(&format!("^{}", prefix.replace('.', "\\.")), ""))
        .chain(remaps.iter().cloned())
        .collect();
    let remaps = remaps.as_slice();
    let remapper = key_remapper(remaps).map_err(fail)?;
    match extension.as_str() {
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper)
                .validate(false)
                .allow_partial(true);
            load_from_store(module, &mut store, remaps, scalars).map_err(fail)
        }
        "pth" | "pt" | "bin" | "ckpt" => {
            let mut store = pytorch_store(path, &extension)
                .remap(remapper)
                .map_indices_contiguous(false)
                .validate(false)
                .allow_partial(true);
            load_from_store(module, &mut store, remaps, scalars).map_err(fail)
        }
        other => Err(fail(format!(
            "unsupported extension `.{other}`: expected .safetensors, .pth, .pt or a Lightning .ckpt"
        ))),
    }
}

/// A weights path names a file: a folder or a missing path is said as such.
fn check_weights_path(path: &Path) -> std::result::Result<(), String> {
    if path.is_dir() {
        return Err(
            "this is a folder: give the weights file inside it (.safetensors, .pth, .pt or .ckpt)"
                .into(),
        );
    }
    if !path.is_file() {
        return Err("no such file".into());
    }
    Ok(())
}

/// Load a file written by [`save_burn`] (Burn's own names, as the bundled weights and
/// `train_shapes --out` have them) into `module`.
pub fn load_burn_file<M: Module + ModuleSnapshot>(module: &mut M, path: &Path) -> Result<()> {
    let fail = |message: String| LumenError::Weights {
        path: path.to_path_buf(),
        message,
    };
    check_weights_path(path).map_err(fail)?;
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        return Err(fail(
            "expected a .safetensors file in Burn's names (what train_shapes --out writes)".into(),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it ({e})")))?;
    load_burn_bytes(module, &bytes, path)
}

/// Apply a configured store to `module`: every parameter present and of the right
/// shape, the rank-0 `scalars` read on the side, float32 throughout.
fn load_from_store<M: Module + ModuleSnapshot, S: ModuleStore>(
    module: &mut M,
    store: &mut S,
    remaps: &[KeyRemap],
    scalars: &[String],
) -> std::result::Result<Vec<f32>, String> {
    let result = module.load_from(store).map_err(|e| e.to_string())?;
    let values = read_scalars(store, scalars)?;
    check_result(&result, remaps, scalars)?;
    check_finite(
        module,
        remaps,
        "the checkpoint is damaged or its training diverged",
    )?;
    cast_to_device_float(module, remaps)?;
    Ok(values)
}

/// Cast every float parameter to what its device computes in (float32 unless
/// `lumen_core::set_precision` chose another): a parameter keeps the file's dtype
/// after loading (half-precision checkpoints are common). Weights past float16's
/// range (65504) become infinite in float16: an error, not a model of infinities.
fn cast_to_device_float<M: Module>(
    module: &mut M,
    remaps: &[KeyRemap],
) -> std::result::Result<(), String> {
    let mut cast = ToDeviceFloat::default();
    *module = module.clone().map(&mut cast);
    if cast.to_float16 {
        check_finite(
            module,
            remaps,
            "its values are past float16's range (65504): use --precision bf16 or f32",
        )?;
    }
    Ok(())
}

/// Fails, naming the first parameter, when a weight is NaN or infinite: such a model
/// explains nothing (every score and map NaN) and would otherwise draw blank figures.
/// `why` ends the message.
fn check_finite<M: Module>(
    module: &M,
    remaps: &[KeyRemap],
    why: &str,
) -> std::result::Result<(), String> {
    let mut finder = NonFiniteParams::default();
    module.visit(&mut finder);
    if let Some(error) = finder.unreadable {
        return Err(format!(
            "the device could not read a parameter back: {error}"
        ));
    }
    match finder.bad.first() {
        None => Ok(()),
        Some(first) => {
            let count = finder.bad.len();
            Err(format!(
                "`{}` holds NaN or infinite values ({count} parameter tensor{} in all): {why}",
                file_key(&torch_param_name(first), remaps),
                if count == 1 { "" } else { "s" }
            ))
        }
    }
}

/// The module paths of the float parameters that hold a NaN or an infinity.
///
/// Tested on the host, one parameter at a time (memory: one parameter's copy): the
/// device's own `is_finite` is not reliable on every backend (on wgpu over lavapipe,
/// that of a float16 tensor flagged every value; Burn's NaN tests on wgpu are an open
/// issue, tracel-ai/burn#2089).
#[derive(Default)]
struct NonFiniteParams {
    path: Vec<String>,
    bad: Vec<String>,
    /// The first read-back failure (a visitor cannot return an error).
    unreadable: Option<LumenError>,
}

impl ModuleVisitor for NonFiniteParams {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.unreadable.is_some() {
            return;
        }
        // Widened to float32 on the device (exact for half values) and read back.
        let values = match param.val().cast(DType::F32).try_into_data() {
            Ok(values) => values,
            Err(error) => {
                self.unreadable = Some(LumenError::device(error));
                return;
            }
        };
        let finite = match values.as_slice::<f32>() {
            Ok(values) => values.iter().all(|v| v.is_finite()),
            Err(_) => values.iter::<f32>().all(|v| v.is_finite()),
        };
        if !finite {
            self.bad.push(self.path.join("."));
        }
    }
}

/// Load a PyTorch state dict stored as safetensors in memory (a bundled model trained
/// in PyTorch), as [`load_state_dict_with_scalars`] loads a file. `path` names the
/// source in errors.
pub fn load_state_dict_bytes_with_scalars<M: Module + ModuleSnapshot>(
    module: &mut M,
    bytes: &[u8],
    path: &Path,
    remaps: &[KeyRemap],
    scalars: &[String],
) -> Result<Vec<f32>> {
    let fail = |message: String| LumenError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()))
        .with_from_adapter(PyTorchToBurnAdapter)
        .remap(key_remapper(remaps).map_err(fail)?)
        .validate(false)
        .allow_partial(true);
    load_from_store(module, &mut store, remaps, scalars).map_err(fail)
}

/// The key remapper of `remaps` (regex rewrites, applied in order).
fn key_remapper(remaps: &[KeyRemap]) -> std::result::Result<KeyRemapper, String> {
    let mut remapper = KeyRemapper::new();
    for (from, to) in remaps {
        remapper = remapper
            .add_pattern(from.as_str(), to.as_str())
            .map_err(|e| format!("bad key remap `{from}`: {e}"))?;
    }
    Ok(remapper)
}

/// Casts every float parameter to its device's float type, noting whether any was
/// cast to float16 (whose range is far narrower than float32's).
#[derive(Default)]
struct ToDeviceFloat {
    to_float16: bool,
}

impl ModuleMapper for ToDeviceFloat {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = param.val();
        let wanted: DType = value.device().settings().float_dtype.into();
        if value.dtype() == wanted {
            param
        } else {
            self.to_float16 |= wanted == DType::F16;
            param.map(|t| t.cast(wanted))
        }
    }
}

fn pytorch_store(path: &Path, extension: &str) -> PytorchStore {
    let store = PytorchStore::from_file(path);
    if extension == "ckpt" {
        // A PyTorch Lightning checkpoint: the weights sit under `state_dict`, beside
        // `hyper_parameters` and the optimizer states.
        store.with_top_level_key("state_dict")
    } else {
        store
    }
}

/// The tensor names in a weights file, as stored (empty for unknown formats, which
/// fail later with their own message).
fn stored_keys(path: &Path, extension: &str) -> std::result::Result<Vec<String>, String> {
    match extension {
        "safetensors" => SafetensorsStore::from_file(path)
            .keys()
            .map_err(|e| e.to_string()),
        "pth" | "pt" | "bin" | "ckpt" => pytorch_store(path, extension)
            .keys()
            .map_err(|e| e.to_string()),
        _ => Ok(vec![]),
    }
}

/// Prefixes that wrap a whole state dict: a nested `state_dict`/`model_state_dict`,
/// DataParallel's `module.`, a training module's `model.`. Stripped (outermost first)
/// while every key carries the same one.
const WRAPPER_PREFIXES: &[&str] = &["state_dict.", "model_state_dict.", "module.", "model."];

/// The wrapper prefixes every key of `keys` shares, outermost first.
fn wrapper_prefixes(keys: &[String]) -> Vec<String> {
    let mut found = vec![];
    let mut stripped = String::new();
    'outer: loop {
        for wrapper in WRAPPER_PREFIXES {
            let prefix = format!("{stripped}{wrapper}");
            if !keys.is_empty() && keys.iter().all(|k| k.starts_with(&prefix)) {
                found.push(wrapper.to_string());
                stripped = prefix;
                continue 'outer;
            }
        }
        return found;
    }
}

/// The values of rank-0 tensors of a store, by (remapped) name.
fn read_scalars<S: ModuleStore>(
    store: &mut S,
    names: &[String],
) -> std::result::Result<Vec<f32>, String> {
    names
        .iter()
        .map(|name| {
            let tensor = store
                .get_tensor(name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("missing keys: {name}"))?;
            let data = burn::store::bridge::to_data(tensor).map_err(|e| format!("{name}: {e}"))?;
            let values = data
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| format!("{name}: {e:?}"))?;
            match values.as_slice() {
                [value] => Ok(*value),
                _ => Err(format!(
                    "{name}: expected one number, found {} values",
                    values.len()
                )),
            }
        })
        .collect()
}

/// Load weights saved by Burn itself (module paths as keys, no PyTorch adapter) from
/// memory: the bundled models. `path` names the source in errors.
pub fn load_burn_bytes<M: Module + ModuleSnapshot>(
    module: &mut M,
    bytes: &[u8],
    path: &Path,
) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()))
        .validate(false)
        .allow_partial(true);
    let result = module
        .load_from(&mut store)
        .map_err(|e| LumenError::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    check_result(&result, &[], &[]).map_err(|message| LumenError::Weights {
        path: path.to_path_buf(),
        message,
    })?;
    cast_to_device_float(module, &[]).map_err(|message| LumenError::Weights {
        path: path.to_path_buf(),
        message,
    })
}

/// Save a module with Burn's own names (what [`load_burn_bytes`] reads).
pub fn save_burn<M: Module + ModuleSnapshot>(module: &M, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|e| LumenError::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Names listed per kind of problem at most; the rest are counted.
const LISTED_KEYS: usize = 8;

/// `items` joined, the first [`LISTED_KEYS`] of them and a count of the rest.
fn listed(items: &[String]) -> String {
    let shown = items.iter().take(LISTED_KEYS).cloned().collect::<Vec<_>>();
    match items.len().saturating_sub(LISTED_KEYS) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// A Burn parameter path as PyTorch names it (norm layers' `gamma`/`beta` are
/// `weight`/`bias` there).
fn torch_param_name(key: &str) -> String {
    if let Some(stem) = key.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = key.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        key.to_string()
    }
}

/// A Burn parameter shape in PyTorch's layout: Linear weights are stored transposed.
fn torch_shape(key: &str, dims: &[usize]) -> Vec<usize> {
    if key.ends_with(".weight") && dims.len() == 2 {
        vec![dims[1], dims[0]]
    } else {
        dims.to_vec()
    }
}

/// Turn burn-store's report into an error that names keys and shapes as they are in
/// the file (PyTorch's names and layout).
fn check_result(
    result: &ApplyResult,
    remaps: &[KeyRemap],
    read_aside: &[String],
) -> std::result::Result<(), String> {
    let to_file_key = |key: &str| file_key(&torch_param_name(key), remaps);
    let mut problems = vec![];
    // (key, model's shape, file's shape), in PyTorch's layout.
    let mut mismatches = vec![];
    let mut other_errors = vec![];
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => mismatches.push((
                to_file_key(path),
                torch_shape(path, expected.as_slice()),
                torch_shape(path, found.as_slice()),
            )),
            other => other_errors.push(other.to_string()),
        }
    }
    if !mismatches.is_empty() {
        let described: Vec<String> = mismatches
            .iter()
            .map(|(key, model, file)| {
                format!("{key} is {file:?} in the file, the model has {model:?}")
            })
            .collect();
        let mut message = format!("shapes that do not fit: {}", listed(&described));
        if let Some(classes) = head_classes(&mismatches) {
            message.push_str(&format!(
                " (the file's classifier has {classes} outputs: load it with {classes} classes, \
                 `--num-classes {classes}`)"
            ));
        }
        problems.push(message);
    }
    if !other_errors.is_empty() {
        problems.push(format!(
            "tensors that do not fit: {}",
            listed(&other_errors)
        ));
    }
    if !result.missing.is_empty() {
        let missing: Vec<String> = result.missing.iter().map(|(k, _)| to_file_key(k)).collect();
        problems.push(format!("missing keys: {}", listed(&missing)));
    }
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|k| !IGNORED_SUFFIXES.iter().any(|s| k.ends_with(s)))
        .filter(|k| !read_aside.contains(k))
        .map(|k| file_key(k, remaps))
        .collect();
    if !unused.is_empty() {
        problems.push(format!(
            "unexpected keys (wrong architecture or number of classes?): {}",
            listed(&unused)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// When every mismatch differs only in its first (output) dimension, all to the same
/// size, the head was trained for another number of classes: that number.
fn head_classes(mismatches: &[(String, Vec<usize>, Vec<usize>)]) -> Option<usize> {
    let mut classes = None;
    for (_, model, file) in mismatches {
        let only_outputs_differ =
            model.len() == file.len() && !model.is_empty() && model[1..] == file[1..];
        if !only_outputs_differ || classes.is_some_and(|c| c != file[0]) {
            return None;
        }
        classes = Some(file[0]);
    }
    classes
}

/// Undo a remap for messages: module path back to the state-dict key.
fn file_key(key: &str, remaps: &[KeyRemap]) -> String {
    // Wrapper prefixes (stripped to nothing) go back on last, innermost first.
    let wrappers: String = remaps
        .iter()
        .filter(|(_, to)| to.is_empty())
        .map(|(from, _)| from.trim_start_matches('^').replace('\\', ""))
        .collect();
    format!("{wrappers}{}", model_key(key, remaps))
}

/// Undo the model's own remap (the first that applies) for messages.
fn model_key(key: &str, remaps: &[KeyRemap]) -> String {
    for (from, to) in remaps {
        if from.contains(COMPILED_WRAPPER) || to.is_empty() {
            continue;
        }
        let anchored = from.starts_with('^');
        let original = from.trim_start_matches('^').replace('\\', "");
        let found = if anchored {
            key.starts_with(to.as_str()).then_some(0)
        } else {
            key.find(to.as_str())
        };
        if let Some(at) = found {
            return format!("{}{}{}", &key[..at], original, &key[at + to.len()..]);
        }
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_key_inverts_remaps() {
        let remaps = [
            remap(r"^backbone\._orig_mod\.", "backbone."),
            remap(r"^conv1\.0\.", "stem.conv_a."),
            remap(r"\.downsample\.1\.", ".downsample.conv."),
        ];
        assert_eq!(file_key("stem.conv_a.weight", &remaps), "conv1.0.weight");
        assert_eq!(
            file_key("layer2.0.downsample.conv.weight", &remaps),
            "layer2.0.downsample.1.weight"
        );
        assert_eq!(file_key("fc.bias", &remaps), "fc.bias");
    }
}
