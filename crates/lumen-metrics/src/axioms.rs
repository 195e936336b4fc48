//! Axioms: completeness of path attributions and sparseness of maps.

/// Gini index of a map's magnitudes (Chalasani et al., 2020; Quantus' `Sparseness`):
/// 0 when every pixel carries the same weight, towards 1 when one pixel carries all.
/// An empty map has no distribution: 0, as [`complexity`](crate::complexity) gives a
/// map without mass (0/0 would poison a mean).
pub fn gini(map: &[f32]) -> f32 {
    if map.is_empty() {
        return 0.0;
    }
    let mut values: Vec<f64> = map.iter().map(|v| v.abs() as f64 + 1e-7).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let weighted: f64 = values
        .iter()
        .enumerate()
        .map(|(i, v)| (2.0 * (i as f64 + 1.0) - n - 1.0) * v)
        .sum();
    (weighted / (n * values.iter().sum::<f64>())) as f32
}

/// Completeness gap of Integrated Gradients relative to the output change:
/// `|sum(attr) - (f(x) - f(x'))| / |f(x) - f(x')|`, from the method's convergence
/// delta and the two scores. Near 0 means the attributions account for the output.
pub fn relative_completeness_gap(delta: f32, score: f32, baseline_score: f32) -> f32 {
    let change = (score - baseline_score).abs();
    if change > 0.0 {
        delta.abs() / change
    } else {
        delta.abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_extremes() {
        assert!(gini(&[1.0; 100]).abs() < 1e-6);
        let mut one = vec![0.0; 100];
        one[3] = 5.0;
        assert!((gini(&one) - 0.99).abs() < 1e-3, "{}", gini(&one));
        // Was NaN (0/0).
        assert_eq!(gini(&[]), 0.0);
    }
}
