//! Every zoo architecture takes timm's state dict key-for-key and shape-for-shape
//! (keys from tools/reference/timm_fixtures.py: zoo_keys.json). Zero tensors of timm's
//! shapes are written and loaded; any missing, unexpected or mis-shaped key fails.

mod common;

use std::collections::BTreeMap;

use common::*;
use lumen_core::{Classifier, ExplainableModel};
use lumen_models::{ARCHITECTURES, BUNDLED, LoadedModel};
use safetensors::tensor::TensorView;

#[test]
fn every_architecture_loads_timm_keys_exactly() {
    let text = std::fs::read_to_string(fixture("zoo_keys.json")).unwrap();
    let zoo: BTreeMap<String, BTreeMap<String, Vec<usize>>> = serde_json::from_str(&text).unwrap();
    let timm_archs: Vec<&&str> = ARCHITECTURES
        .iter()
        .filter(|a| !BUNDLED.contains(a))
        .collect();
    assert_eq!(
        zoo.len(),
        timm_archs.len(),
        "fixture covers the timm architectures"
    );
    for arch in timm_archs {
        let keys = zoo
            .get(*arch)
            .unwrap_or_else(|| panic!("{arch} missing from zoo_keys.json"));
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = keys
            .iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, shape)| {
                (
                    k.clone(),
                    shape.clone(),
                    vec![0u8; 4 * shape.iter().product::<usize>()],
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = buffers
            .iter()
            .map(|(k, s, d)| {
                (
                    k.clone(),
                    TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
                )
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("lumen-{}-{arch}.safetensors", std::process::id()));
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let loaded = LoadedModel::load(arch, 10, &path, &test_device());
        std::fs::remove_file(&path).ok();
        let loaded = loaded.unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(loaded.model.num_classes(), 10, "{arch}");
        assert_eq!(
            loaded.model.input_shape(),
            loaded.data_config.input_size,
            "{arch}"
        );
    }
}
