//! The statistics of a bridge ratio: its 95 % interval, and when an interval is a
//! discontinuity.

/// Whether a ratio's interval lies entirely outside expected × (1 ± tolerance): the one
/// definition of a discontinuity, live and offline.
pub fn outside_band((lo, hi): (f64, f64), expected: f64, tolerance: f64) -> bool {
    hi < expected * (1.0 - tolerance) || lo > expected * (1.0 + tolerance)
}

/// 95 % interval of new/old from the Wilson interval of p = new / (new + old).
pub fn ratio_interval(new: u64, old: u64) -> Option<(f64, f64)> {
    let n = (new + old) as f64;
    if n == 0.0 || old == 0 {
        return None;
    }
    let z = 1.96_f64;
    let p = new as f64 / n;
    let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    let (lo, hi) = ((center - half).max(0.0), (center + half).min(1.0));
    // JSON has no infinity: an unbounded upper end is reported as f64::MAX.
    let to_ratio = |q: f64| if q >= 1.0 { f64::MAX } else { q / (1.0 - q) };
    Some((to_ratio(lo), to_ratio(hi)))
}
