//! Known weaknesses of methods on a model, as `lumen evaluate` measured them: its
//! `evaluation.json` lists a caution for every number that does not beat a floor and
//! every failed sanity check. Figures and reports write them under the method's maps.
//!
//! The bundled models ship their verdicts (`crates/lumen/verdicts/`, written by the
//! command in each file), so the demo's figures carry them too.
//!
//! A CAM's verdict holds at the layer it was measured at: `evaluation.json` records
//! it (`methods[].layer`; the shipped files give their CAMs' default layers), and a
//! run at another layer leaves that method's cautions out ([`Verdicts::at_layer`]).
//! A file without layers (written before they were recorded) holds at any layer.

use std::collections::BTreeMap;
use std::path::Path;

use lumen_core::{LumenError, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Evaluation {
    model: String,
    recommendations: Vec<Recommendation>,
    /// Per method, with its `layer` (CAMs): a detector's or segmentor's evaluation
    /// names it `method`, a classifier's `name`. Read leniently.
    #[serde(default)]
    methods: Vec<serde_json::Value>,
}

/// Cautions per method.
pub type Cautions = BTreeMap<String, Vec<String>>;

/// The cautions of a verdict file, per method, and the layer each CAM was measured at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdicts {
    /// Cautions per method.
    pub cautions: Cautions,
    /// The layer each method was measured at, where the file records it.
    pub layers: BTreeMap<String, String>,
}

impl Verdicts {
    /// The cautions that hold for a run whose CAMs use `layer` (`None`: the model's
    /// default, which the shipped files and an evaluation without `--layer` measured):
    /// a method measured at another named layer is left out, and returned as
    /// `(method, measured layer)` so that the caller can say so.
    pub fn at_layer(&self, layer: Option<&str>) -> (Cautions, Vec<(String, String)>) {
        let mut kept = BTreeMap::new();
        let mut dropped = vec![];
        for (method, reasons) in &self.cautions {
            match (layer, self.layers.get(method)) {
                (Some(run), Some(measured)) if run != measured => {
                    dropped.push((method.clone(), measured.clone()));
                }
                _ => {
                    kept.insert(method.clone(), reasons.clone());
                }
            }
        }
        (kept, dropped)
    }
}

#[derive(Deserialize)]
struct Recommendation {
    use_case: String,
    method: String,
    reason: String,
}

/// The cautions of an `evaluation.json` written by `lumen evaluate` for `model`, per
/// method (at any layer). Fails, naming the file, when it cannot be read or is for
/// another model.
pub fn read_cautions(path: &Path, model: &str) -> Result<BTreeMap<String, Vec<String>>> {
    Ok(read_verdicts(path, model)?.cautions)
}

/// [`read_cautions`] with the layers the file records.
pub fn read_verdicts(path: &Path, model: &str) -> Result<Verdicts> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LumenError::InvalidArgument(format!("{}: cannot read it ({e})", path.display()))
    })?;
    parse_verdicts(&text, model, &path.display().to_string())
}

/// Verdicts shipped with the bundled models, measured by the command each file names.
const BUNDLED_VERDICTS: &[(&str, &str)] = &[
    ("shapes-cnn", include_str!("../verdicts/shapes-cnn.json")),
    ("shapes-vit", include_str!("../verdicts/shapes-vit.json")),
    ("shapes-det", include_str!("../verdicts/shapes-det.json")),
    ("shapes-seg", include_str!("../verdicts/shapes-seg.json")),
];

/// The shipped cautions of a bundled model (measured at its default layers), if it
/// has any.
pub fn bundled_cautions(model: &str) -> Option<BTreeMap<String, Vec<String>>> {
    Some(bundled_verdicts(model)?.cautions)
}

/// [`bundled_cautions`] with the layers they were measured at.
pub fn bundled_verdicts(model: &str) -> Option<Verdicts> {
    let (_, text) = BUNDLED_VERDICTS.iter().find(|(name, _)| *name == model)?;
    parse_verdicts(text, model, "bundled verdicts").ok()
}

/// [`read_verdicts`] of a text; `source` names it in errors.
fn parse_verdicts(text: &str, model: &str, source: &str) -> Result<Verdicts> {
    let bad = |message: String| LumenError::InvalidArgument(format!("{source}: {message}"));
    let evaluation: Evaluation = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "not an evaluation.json written by `lumen evaluate` ({e})"
        ))
    })?;
    if evaluation.model != model {
        return Err(bad(format!(
            "these verdicts are for `{}`, not for `{model}`",
            evaluation.model
        )));
    }
    let mut cautions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in evaluation
        .recommendations
        .into_iter()
        .filter(|r| r.use_case == "caution")
    {
        cautions.entry(r.method).or_default().push(r.reason);
    }
    let layers = evaluation
        .methods
        .iter()
        .filter_map(|m| {
            let name = m.get("method").or_else(|| m.get("name"))?.as_str()?;
            let layer = m.get("layer")?.as_str()?;
            Some((name.to_string(), layer.to_string()))
        })
        .collect();
    Ok(Verdicts { cautions, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_verdicts_parse_and_name_known_methods() {
        for (model, text) in BUNDLED_VERDICTS {
            let verdicts = parse_verdicts(text, model, "shipped").unwrap();
            let cautions = verdicts.cautions.clone();
            // Every cautioned CAM of a shipped file says where it was measured.
            for method in cautions.keys() {
                let family = lumen_methods::method_info(method).unwrap().family;
                if matches!(
                    family,
                    lumen_methods::Family::OnePassCam | lumen_methods::Family::PerturbationCam
                ) {
                    assert!(verdicts.layers.contains_key(method), "{model}: {method}");
                }
            }
            // shapes-seg's evaluation at its decoder found nothing to caution about
            // (its file says so); the others' files must not have lost theirs.
            assert_eq!(
                cautions.is_empty(),
                *model == "shapes-seg",
                "{model}: {cautions:?}"
            );
            for method in cautions.keys() {
                lumen_methods::method_info(method).unwrap();
            }
            assert_eq!(bundled_cautions(model), Some(cautions));
        }
        assert_eq!(bundled_cautions("resnet18"), None);
    }

    /// A CAM measured at one layer says nothing about another; a method without a
    /// recorded layer (a classifier's evaluation, a gradient method) holds anywhere.
    #[test]
    fn cautions_measured_at_another_layer_are_left_out() {
        let text = r#"{"model": "m", "recommendations": [
            {"use_case": "caution", "method": "gradcam", "reason": "a"},
            {"use_case": "caution", "method": "eigencam", "reason": "b"},
            {"use_case": "caution", "method": "saliency", "reason": "c"}],
            "methods": [{"method": "gradcam", "layer": "layer4"},
                        {"name": "eigencam", "layer": "layer3"},
                        {"method": "saliency", "layer": null}]}"#;
        let verdicts = parse_verdicts(text, "m", "test").unwrap();
        assert_eq!(verdicts.layers.len(), 2);
        let (all, dropped) = verdicts.at_layer(None);
        assert_eq!(all, verdicts.cautions);
        assert!(dropped.is_empty());
        let (kept, dropped) = verdicts.at_layer(Some("layer4"));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["gradcam", "saliency"]);
        assert_eq!(dropped, [("eigencam".to_string(), "layer3".to_string())]);
        let (kept, dropped) = verdicts.at_layer(Some("layer2"));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["saliency"]);
        assert_eq!(dropped.len(), 2);
    }

    #[test]
    fn cautions_are_grouped_by_method_and_checked_against_the_model() {
        let path = std::env::temp_dir().join(format!("lumen-verdicts-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"model": "shapes-vit", "samples": 8, "recommendations": [
                {"use_case": "faithful", "method": "ig", "reason": "largest gap"},
                {"use_case": "caution", "method": "gradcam", "reason": "a"},
                {"use_case": "caution", "method": "gradcam", "reason": "b"},
                {"use_case": "caution", "method": "rollout", "reason": "c"}]}"#,
        )
        .unwrap();
        let cautions = read_cautions(&path, "shapes-vit").unwrap();
        assert_eq!(cautions["gradcam"], ["a", "b"]);
        assert_eq!(cautions["rollout"], ["c"]);
        assert!(!cautions.contains_key("ig"));
        let err = read_cautions(&path, "shapes-cnn").unwrap_err().to_string();
        assert!(
            err.contains("for `shapes-vit`, not for `shapes-cnn`"),
            "{err}"
        );
        std::fs::write(&path, "{}").unwrap();
        let err = read_cautions(&path, "shapes-vit").unwrap_err().to_string();
        std::fs::remove_file(&path).ok();
        assert!(err.contains("not an evaluation.json"), "{err}");
    }
}
