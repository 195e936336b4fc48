//! Complexity (Bhatt et al. 2020): the entropy of the map's fractional contributions.
//! A concise explanation puts its mass on few pixels: lower is better.

/// `-sum p log(p + 1e-12)` with `p = |a| / sum |a|`, as Quantus 0.6.0's `Complexity`
/// computes it (its `normalise_by_max` does not change `p`). A map with no mass has no
/// distribution: Quantus returns NaN there; we return 0 so that one empty map does
/// not poison a mean (documented in `docs/metrics.md`).
pub fn complexity(map: &[f32]) -> f32 {
    let total: f64 = map.iter().map(|&v| (v as f64).abs()).sum();
    if total == 0.0 || !total.is_finite() {
        return 0.0;
    }
    -map.iter()
        .map(|&v| {
            let p = (v as f64).abs() / total;
            p * (p + 1e-12).ln()
        })
        .sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_maps_have_log_n_and_points_have_zero() {
        let uniform = vec![0.5f32; 64];
        assert!((complexity(&uniform) - (64f32).ln()).abs() < 1e-5);
        let mut point = vec![0.0f32; 64];
        point[7] = 3.0;
        assert!(complexity(&point).abs() < 1e-9);
        assert_eq!(complexity(&[0.0; 4]), 0.0);
        // Signs do not matter: |a|.
        assert_eq!(complexity(&[1.0, -1.0]), complexity(&[1.0, 1.0]));
    }
}
