//! Loading timm state dicts unchanged from `.safetensors`, PyTorch `.pth`/`.pt` files or
//! PyTorch Lightning `.ckpt` checkpoints
//! through burn-store. Every missing, unexpected or mis-shaped tensor is reported by
//! its timm key name.

use std::path::Path;

use burn::module::Module;
use burn::store::{
    ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
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
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let mut remapper = KeyRemapper::new();
    for (from, to) in remaps {
        remapper = remapper
            .add_pattern(from.as_str(), to.as_str())
            .map_err(|e| fail(format!("bad key remap `{from}`: {e}")))?;
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (result, values) = match extension.as_str() {
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper)
                .validate(false)
                .allow_partial(true);
            let result = module
                .load_from(&mut store)
                .map_err(|e| fail(e.to_string()))?;
            (result, read_scalars(&mut store, scalars).map_err(fail)?)
        }
        "pth" | "pt" | "bin" | "ckpt" => {
            let mut store = PytorchStore::from_file(path);
            if extension == "ckpt" {
                // A PyTorch Lightning checkpoint: the weights sit under `state_dict`,
                // beside `hyper_parameters` and the optimizer states.
                store = store.with_top_level_key("state_dict");
            }
            let mut store = store
                .remap(remapper)
                .map_indices_contiguous(false)
                .validate(false)
                .allow_partial(true);
            let result = module
                .load_from(&mut store)
                .map_err(|e| fail(e.to_string()))?;
            (result, read_scalars(&mut store, scalars).map_err(fail)?)
        }
        other => {
            return Err(fail(format!(
                "unsupported extension `.{other}`: expected .safetensors, .pth, .pt or a Lightning .ckpt"
            )));
        }
    };
    check_result(&result, remaps, scalars).map_err(fail)?;
    Ok(values)
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

/// Turn burn-store's report into an error that names keys as they are in the file.
fn check_result(
    result: &ApplyResult,
    remaps: &[KeyRemap],
    read_aside: &[String],
) -> std::result::Result<(), String> {
    let to_file_key = |key: &str| file_key(key, remaps);
    let mut problems = vec![];
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        problems.push(format!("tensors that do not fit: {}", errors.join("; ")));
    }
    if !result.missing.is_empty() {
        let missing: Vec<String> = result.missing.iter().map(|(k, _)| to_file_key(k)).collect();
        problems.push(format!("missing keys: {}", missing.join(", ")));
    }
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|k| !IGNORED_SUFFIXES.iter().any(|s| k.ends_with(s)))
        .filter(|k| !read_aside.contains(k))
        .map(|k| to_file_key(k))
        .collect();
    if !unused.is_empty() {
        problems.push(format!(
            "unexpected keys (wrong architecture or number of classes?): {}",
            unused.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Undo a remap for messages: module path back to the state-dict key.
fn file_key(key: &str, remaps: &[KeyRemap]) -> String {
    for (from, to) in remaps {
        if from.contains(COMPILED_WRAPPER) {
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
