//! What Tollgate's reports share, so that each is written once: the audit's page, the
//! shadow proxy's live and offline comparisons, the load tester's results.
//!
//! - [`escape`]: text for a self-contained HTML page;
//! - [`population_stability`]: how far a categorical distribution moved (PSI);
//! - [`Latency`]: the percentiles every latency figure is reported with;
//! - [`chart`]: line charts as inline SVG.

pub mod chart;

use std::collections::{BTreeMap, HashMap};

/// Latency percentiles of an HDR histogram of microseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Values recorded.
    #[serde(default)]
    pub count: u64,
    pub p50_us: u64,
    #[serde(default)]
    pub p90_us: u64,
    pub p99_us: u64,
    #[serde(default)]
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// `text` safe inside HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Category → count, as both maps the reports keep.
pub trait Counts {
    fn count(&self, category: &str) -> u64;
    fn categories(&self) -> impl Iterator<Item = &str>;
    fn total(&self) -> u64;
}

/// Both maps implement it the same way.
macro_rules! counts_for {
    ($map:ty) => {
        impl Counts for $map {
            fn count(&self, category: &str) -> u64 {
                self.get(category).copied().unwrap_or(0)
            }
            fn categories(&self) -> impl Iterator<Item = &str> {
                self.keys().map(String::as_str)
            }
            fn total(&self) -> u64 {
                self.values().sum()
            }
        }
    };
}

counts_for!(HashMap<String, u64>);
counts_for!(BTreeMap<String, u64>);

/// How a distribution moved from `baseline` to `current`.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift<'a> {
    /// PSI = Σ (c − b) · ln(c ÷ b) over category shares, each floored at 0.01 % so that a
    /// category on one side only counts instead of dividing by 0. 0 when either side is
    /// empty (nothing to compare). Rules of thumb: < 0.1 stable, > 0.25 a real shift.
    pub psi: f64,
    /// The category that contributes most.
    pub largest: Option<&'a str>,
    /// Categories absent from the baseline, sorted.
    pub new: Vec<&'a str>,
}

/// The population stability index of `current` against `baseline`.
pub fn population_stability<'a, C: Counts>(baseline: &'a C, current: &'a C) -> Drift<'a> {
    let (nb, nc) = (baseline.total(), current.total());
    let mut categories: Vec<&str> = baseline.categories().chain(current.categories()).collect();
    categories.sort_unstable();
    categories.dedup();
    let mut new: Vec<&str> = current
        .categories()
        .filter(|c| baseline.count(c) == 0)
        .collect();
    new.sort_unstable();
    if nb == 0 || nc == 0 {
        return Drift {
            psi: 0.0,
            largest: None,
            new,
        };
    }
    let mut psi = 0.0;
    let mut largest: Option<(f64, &str)> = None;
    for category in categories {
        let b = (baseline.count(category) as f64 / nb as f64).max(1e-4);
        let c = (current.count(category) as f64 / nc as f64).max(1e-4);
        let term = (c - b) * (c / b).ln();
        psi += term;
        if largest.is_none_or(|(l, _)| term > l) {
            largest = Some((term, category));
        }
    }
    Drift {
        psi,
        largest: largest.map(|(_, c)| c),
        new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn psi_is_zero_for_equal_distributions_and_grows_with_shift() {
        let a = counts(&[("ios", 500), ("android", 500)]);
        assert!(population_stability(&a, &a).psi.abs() < 1e-12);
        let b = counts(&[("ios", 900), ("android", 100)]);
        let shifted = population_stability(&a, &b);
        // 0.4·ln(1.8) + (−0.4)·ln(0.2) ≈ 0.879
        assert!((shifted.psi - 0.879).abs() < 0.01, "{shifted:?}");
        assert_eq!(shifted.largest, Some("android"));
        let c = counts(&[("ios", 500), ("android", 400), ("web", 100)]);
        let widened = population_stability(&a, &c);
        assert!(widened.psi > 0.0);
        assert_eq!(widened.new, ["web"]);
        // The same in either map type.
        let hashed: HashMap<String, u64> = a.clone().into_iter().collect();
        let hashed_b: HashMap<String, u64> = b.clone().into_iter().collect();
        assert_eq!(population_stability(&hashed, &hashed_b).psi, shifted.psi);
        assert_eq!(population_stability(&a, &BTreeMap::new()).psi, 0.0);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<a href="x">&</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}

#[cfg(test)]
mod latency_tests {
    use super::Latency;

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert_eq!((l.p50_us, l.p90_us, l.p99_us), (500, 900, 990));
        assert_eq!((l.p999_us, l.max_us), (999, 1000));
    }
}
