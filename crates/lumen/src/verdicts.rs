//! Known weaknesses of methods on a model, as `lumen evaluate` measured them: its
//! `evaluation.json` lists a caution for every number that does not beat a floor and
//! every failed sanity check. Figures and reports write them under the method's maps.

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
    let bad =
        |message: String| LumenError::InvalidArgument(format!("{}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let evaluation: Evaluation = serde_json::from_str(&text).map_err(|e| {
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
        assert!(err.contains("not an evaluation.json"), "{err}");
    }
}
