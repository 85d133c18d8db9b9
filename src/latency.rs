//! Apply latency measured with hdrhistogram over a sliding window of two intervals, so
//! the exported p50/p99/p999 describe the last minute or two, not the process lifetime.
//!
//! Actors record a whole batch under one lock, so the cost per event is a clock read and
//! a histogram increment; contention is one lock per batch per arbiter.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Window length: quantiles cover between one and two of these.
const INTERVAL: Duration = Duration::from_secs(60);

pub struct LatencyWindow {
    inner: Mutex<Window>,
}

struct Window {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Instant,
}

/// Event apply latency in nanoseconds.
pub static APPLY_LATENCY: LazyLock<LatencyWindow> = LazyLock::new(LatencyWindow::new);

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyWindow {
    pub fn new() -> Self {
        // 1 ns .. 60 s at 3 significant digits; values above are clamped.
        let h = || {
            Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds are valid")
        };
        LatencyWindow {
            inner: Mutex::new(Window {
                current: h(),
                previous: h(),
                rotated_at: Instant::now(),
            }),
        }
    }

    /// Records a batch of durations (nanoseconds).
    pub fn record_all(&self, nanos: &[u64]) {
        let mut w = self.inner.lock();
        for n in nanos {
            w.current.saturating_record((*n).max(1));
        }
    }

    /// (p50, p99, p999) in seconds over the window, or None when empty.
    pub fn quantiles(&self) -> Option<(f64, f64, f64)> {
        let mut w = self.inner.lock();
        if w.rotated_at.elapsed() >= INTERVAL {
            let Window {
                current, previous, ..
            } = &mut *w;
            previous.reset();
            // unwrap-free: both histograms share bounds, so add cannot fail.
            let _ = previous.add(&*current);
            current.reset();
            w.rotated_at = Instant::now();
        }
        let mut merged = w.previous.clone();
        let _ = merged.add(&w.current);
        if merged.is_empty() {
            return None;
        }
        let q = |p: f64| merged.value_at_quantile(p) as f64 / 1e9;
        Some((q(0.5), q(0.99), q(0.999)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_recorded_values() {
        let w = LatencyWindow::new();
        assert_eq!(w.quantiles(), None);
        let mut batch: Vec<u64> = vec![1_000; 990];
        batch.extend(vec![1_000_000; 10]);
        w.record_all(&batch);
        let (p50, p99, p999) = w.quantiles().unwrap();
        assert!((p50 - 1e-6).abs() < 1e-8, "p50 {p50}");
        assert!(p99 <= 1.001e-6, "p99 {p99}");
        assert!((p999 - 1e-3).abs() < 1e-5, "p999 {p999}");
    }
}
