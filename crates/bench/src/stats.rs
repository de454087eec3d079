//! Summaries of measurements: nearest-rank percentiles of samples, and the median with min–max
//! of repeated runs.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method: the smallest sample
/// with at least `p`% of the samples at or below it. `None` when there are no samples.
#[must_use]
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // Nearest rank: ceil(p/100 · n), at least 1. The cast is exact for any n a benchmark has.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// The median of `samples` (the mean of the two middle ones for an even count). `None` when empty.
#[must_use]
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 { sorted[n / 2] } else { f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]) })
}

/// `seconds` spread over `jobs`, in µs per job; 0 when there are no jobs.
#[must_use]
pub fn us_per_job(seconds: f64, jobs: u64) -> f64 {
    if jobs == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // job counts far below 2^53
    let jobs = jobs as f64;
    seconds * 1e6 / jobs
}

/// One reported figure: the median of its runs with their range, every run kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What the numbers count, e.g. `jobs/s`, `ms`, `MiB`, `ratio`.
    pub unit: String,
    /// The median of `samples`.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Every run, in the order measured.
    pub samples: Vec<f64>,
    /// How the figure was obtained, when the table alone would mislead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// The figure of `samples`; `None` when there are none.
    #[must_use]
    pub fn of(unit: &str, samples: Vec<f64>) -> Option<Self> {
        let median = median(&samples)?;
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self { unit: unit.to_owned(), median, min, max, samples, note: None })
    }

    /// The same figure with a note.
    #[must_use]
    pub fn noted(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// `self / other` for figures whose runs were made in pairs (the `i`-th run of each one
    /// after the other): the figure of the pairs' ratios, so that its median and range are
    /// those of real pairs. `None` unless both have the same number of runs and every run of
    /// `other` is above zero.
    #[must_use]
    pub fn paired_ratio_to(&self, other: &Self) -> Option<Self> {
        if self.samples.len() != other.samples.len() || other.samples.iter().any(|&b| b <= 0.0) {
            return None;
        }
        let ratios = self.samples.iter().zip(&other.samples).map(|(a, b)| a / b).collect();
        Self::of("ratio", ratios)
            .map(|f| f.noted("the median of run-by-run pairs, each W4 drain right after a W2 drain"))
    }

    /// `self / other` for figures from separate runs: the ratio of the medians, and the widest
    /// range the runs allow (`min/max` to `max/min`), since the runs are not paired.
    #[must_use]
    pub fn ratio_to(&self, other: &Self) -> Option<Self> {
        if other.median <= 0.0 || other.min <= 0.0 || other.max <= 0.0 {
            return None;
        }
        Some(Self {
            unit: "ratio".to_owned(),
            median: self.median / other.median,
            min: self.min / other.max,
            max: self.max / other.min,
            samples: Vec::new(),
            note: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_pick_a_real_sample() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 51.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_figure_keeps_its_runs_with_median_and_range() {
        let f = Figure::of("jobs/s", vec![30.0, 10.0, 20.0]).expect("samples");
        assert_eq!((f.median, f.min, f.max), (20.0, 10.0, 30.0));
        assert_eq!(f.samples, vec![30.0, 10.0, 20.0]);
        assert!(Figure::of("jobs/s", Vec::new()).is_none());
    }

    #[test]
    fn time_per_job_is_in_microseconds_and_zero_without_jobs() {
        assert!((us_per_job(0.5, 1_000) - 500.0).abs() < 1e-9);
        assert!(us_per_job(0.5, 0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_ratio_of_paired_runs_is_the_median_of_the_pairs() {
        // Drift that moves both figures of a pair together leaves their ratio alone.
        let w4 = Figure::of("jobs/s", vec![30.0, 60.0, 45.0]).expect("w4");
        let w2 = Figure::of("jobs/s", vec![50.0, 100.0, 60.0]).expect("w2");
        let r = w4.paired_ratio_to(&w2).expect("ratio");
        assert_eq!(r.unit, "ratio");
        assert_eq!(r.samples, vec![0.6, 0.6, 0.75]);
        assert!((r.median - 0.6).abs() < 1e-12);
        assert!((r.min - 0.6).abs() < 1e-12 && (r.max - 0.75).abs() < 1e-12);
        // The unpaired ratio of the same runs spans 0.3 to 1.2.
        let wide = w4.ratio_to(&w2).expect("unpaired");
        assert!((wide.min - 0.3).abs() < 1e-12 && (wide.max - 1.2).abs() < 1e-12);
        let short = Figure::of("jobs/s", vec![50.0, 100.0]).expect("short");
        assert!(w4.paired_ratio_to(&short).is_none());
        let zero = Figure::of("jobs/s", vec![50.0, 0.0, 60.0]).expect("zero");
        assert!(w4.paired_ratio_to(&zero).is_none());
    }

    #[test]
    fn a_ratio_of_unpaired_runs_spans_the_widest_range() {
        let a = Figure::of("jobs/s", vec![8.0, 10.0, 12.0]).expect("a");
        let b = Figure::of("jobs/s", vec![16.0, 20.0, 24.0]).expect("b");
        let r = a.ratio_to(&b).expect("ratio");
        assert!((r.median - 0.5).abs() < 1e-12);
        assert!((r.min - 8.0 / 24.0).abs() < 1e-12);
        assert!((r.max - 12.0 / 16.0).abs() < 1e-12);
        let zero = Figure::of("jobs/s", vec![0.0]).expect("zero");
        assert!(a.ratio_to(&zero).is_none());
    }
}
