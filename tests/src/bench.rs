//! Figures the benchmarks print.

/// The `p` quantile (0.0 to 1.0) of `v` by the nearest rank; `v` must not
/// be empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}
