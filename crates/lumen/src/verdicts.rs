//! Known weaknesses of methods on a model, as `lumen evaluate` measured them: its
//! `evaluation.json` lists a caution for every number that does not beat a floor and
//! every failed sanity check. Figures and reports write them under the method's maps.
//!
//! The bundled models ship their verdicts (`crates/lumen/verdicts/`, written by the
//! command in each file), so the demo's figures carry them too.

use std::collections::BTreeMap;
use std::path::Path;

use lumen_core::{LumenError, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Evaluation {
    model: String,
    recommendations: Vec<Recommendation>,
}

#[derive(Deserialize)]
struct Recommendation {
    use_case: String,
    method: String,
    reason: String,
}

/// The cautions of an `evaluation.json` written by `lumen evaluate` for `model`, per
/// method. Fails, naming the file, when it cannot be read or is for another model.
pub fn read_cautions(path: &Path, model: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LumenError::InvalidArgument(format!("{}: cannot read it ({e})", path.display()))
    })?;
    parse_cautions(&text, model, &path.display().to_string())
}

/// Verdicts shipped with the bundled models, measured by the command each file names.
const BUNDLED_VERDICTS: &[(&str, &str)] = &[
    ("shapes-cnn", include_str!("../verdicts/shapes-cnn.json")),
    ("shapes-vit", include_str!("../verdicts/shapes-vit.json")),
    ("shapes-det", include_str!("../verdicts/shapes-det.json")),
    ("shapes-seg", include_str!("../verdicts/shapes-seg.json")),
];

/// The shipped cautions of a bundled model, if it has any.
pub fn bundled_cautions(model: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let (_, text) = BUNDLED_VERDICTS.iter().find(|(name, _)| *name == model)?;
    parse_cautions(text, model, "bundled verdicts").ok()
}

/// [`read_cautions`] of a text; `source` names it in errors.
fn parse_cautions(text: &str, model: &str, source: &str) -> Result<BTreeMap<String, Vec<String>>> {
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
    Ok(cautions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_verdicts_parse_and_name_known_methods() {
        for (model, text) in BUNDLED_VERDICTS {
            let cautions = parse_cautions(text, model, "shipped").unwrap();
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
