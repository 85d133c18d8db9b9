//! Volume anomaly against a partner's own baseline.
//!
//! Request volume is sampled per `anomaly_window` of event time. Each closed window with
//! traffic updates an EWMA of the mean and variance; the open window's volume is compared
//! to that baseline as a z-score. The spread used is at least [`REL_STD_FLOOR`] of the mean
//! (and at least 1 request), so a large partner that is always large, with ordinary noise,
//! is never punished, while a small one that jumps 20× is. Silent windows are not samples:
//! a partner that sends nothing overnight keeps its daytime baseline. Only rises count
//! (a drop in traffic is not abuse). Late events of an already closed window are ignored:
//! the sample is final once closed, which keeps the baseline independent of arrival order
//! after the fact. State: five numbers, whatever the traffic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The spread is never taken below this fraction of the mean.
pub const REL_STD_FLOOR: f64 = 0.1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Index of the open window (`ts / width`), `None` before the first event.
    open: Option<i64>,
    /// Requests seen in the open window.
    volume: u64,
    /// Width in seconds the index is based on.
    width: i64,
    #[serde(with = "f64_text")]
    mean: f64,
    #[serde(with = "f64_text")]
    var: f64,
    /// Closed windows with traffic folded into the mean.
    samples: u32,
}

fn width_of(window: Duration) -> i64 {
    i64::try_from(window.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// How closed windows become samples: their width, the EWMA weight, and the clip.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub window: Duration,
    pub alpha: f64,
    /// Once the baseline is trusted (`min_windows` samples), a sample is folded in at most
    /// this many spreads above the mean: one surge window folded at full weight made a
    /// 20× level read as z ≈ 3 the next minute, so a sustained surge stopped being an
    /// anomaly after one window. Clipped, it takes several, and a lasting new level is
    /// still learnt.
    pub clip_z: f64,
    pub min_windows: u32,
}

impl Sampling {
    pub fn of(tier: &super::policy::TierPolicy) -> Sampling {
        Sampling {
            window: tier.anomaly_window,
            alpha: tier.ewma_alpha,
            clip_z: tier.anomaly_z_throttle,
            min_windows: tier.anomaly_min_windows,
        }
    }
}

impl Baseline {
    /// Counts `requests` at `ts`, closing the open window first if `ts` is past it.
    pub fn record(&mut self, ts: DateTime<Utc>, requests: u64, sampling: &Sampling) {
        let width = width_of(sampling.window);
        if width != self.width {
            // A new sampling width (tier change) makes old samples incomparable.
            *self = Baseline {
                width,
                ..Baseline::default()
            };
        }
        let idx = ts.timestamp().div_euclid(width);
        self.roll_to(idx, sampling);
        if self.open == Some(idx) {
            self.volume = self.volume.saturating_add(requests);
        }
    }

    /// Closes the open window when `now` is past it (time passing without events).
    pub fn roll(&mut self, now: DateTime<Utc>, sampling: &Sampling) {
        if self.width > 0 {
            self.roll_to(now.timestamp().div_euclid(self.width), sampling);
        }
    }

    /// When the open window closes with volume in it, in epoch millis: the current volume
    /// drops to zero and a sample is folded into the baseline (z changes with time only
    /// then). `None` when the open window is empty.
    pub fn closes_at_ms(&self) -> Option<i64> {
        let open = self.open.filter(|_| self.volume > 0 && self.width > 0)?;
        Some(
            open.saturating_add(1)
                .saturating_mul(self.width)
                .saturating_mul(1_000),
        )
    }

    fn roll_to(&mut self, idx: i64, sampling: &Sampling) {
        match self.open {
            Some(open) if idx <= open => {}
            _ => {
                if self.open.is_some() && self.volume > 0 {
                    let mut x = self.volume as f64;
                    if self.samples >= sampling.min_windows {
                        x = x.min(self.mean + sampling.clip_z * self.spread());
                    }
                    self.fold(x, sampling.alpha);
                }
                self.open = Some(idx);
                self.volume = 0;
            }
        }
    }

    fn fold(&mut self, x: f64, alpha: f64) {
        if self.samples == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// z-score of the open window's volume at `now`, once `min_windows` samples exist and
    /// the window holds at least `min_requests`. A window `now` has moved past counts as
    /// empty.
    pub fn z(&self, now: DateTime<Utc>, min_windows: u32, min_requests: u64) -> Option<f64> {
        if self.samples < min_windows || self.width == 0 {
            return None;
        }
        let current = match self.open {
            Some(open) if open == now.timestamp().div_euclid(self.width) => self.volume,
            _ => 0,
        };
        if current < min_requests {
            return None;
        }
        Some((current as f64 - self.mean) / self.spread())
    }

    /// The standard deviation a z-score divides by, never below [`REL_STD_FLOOR`] of the
    /// mean nor below one request.
    fn spread(&self) -> f64 {
        self.var.sqrt().max(REL_STD_FLOOR * self.mean).max(1.0)
    }

    #[cfg(test)]
    fn samples(&self) -> u32 {
        self.samples
    }

    #[cfg(test)]
    fn mean(&self) -> f64 {
        self.mean
    }
}

/// An `f64` as its shortest exact decimal text: Rust's `Display` and `parse` round-trip
/// every finite value bit for bit, whatever JSON parser features are on, so a state
/// restored from a snapshot decides exactly as the one that wrote it.
mod f64_text {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(D::Error::custom(format!("not a finite number: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);
    /// The default tier's sampling: 60 s windows, alpha 0.1, clipped at 8 spreads once 10
    /// samples exist.
    const S: Sampling = Sampling {
        window: W,
        alpha: 0.1,
        clip_z: 8.0,
        min_windows: 10,
    };

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_020 + secs, 0).unwrap()
    }

    fn steady(b: &mut Baseline, windows: i64, volume: u64) {
        for k in 0..windows {
            b.record(t(k * 60), volume, &S);
        }
    }

    #[test]
    fn needs_min_windows_before_it_says_anything() {
        let mut b = Baseline::default();
        steady(&mut b, 5, 100);
        // Five windows recorded, four closed.
        assert_eq!(b.samples(), 4);
        assert_eq!(b.z(t(4 * 60), 5, 0), None);
        b.roll(t(5 * 60), &S);
        assert!(b.z(t(5 * 60), 5, 0).is_some());
    }

    #[test]
    fn a_20x_spike_of_a_small_steady_partner_has_a_huge_z() {
        let mut b = Baseline::default();
        steady(&mut b, 20, 100);
        b.record(t(20 * 60), 2_000, &S);
        let z = b.z(t(20 * 60), 10, 0).unwrap();
        assert!(z > 100.0, "z = {z}");
        // The next window, back to normal, is not anomalous.
        b.record(t(21 * 60), 100, &S);
        assert!(b.z(t(21 * 60), 10, 0).unwrap() < 1.0);
    }

    /// A small steady partner jumps to 20× and stays there: each surge window is folded in
    /// clipped, so the surge stays an anomaly for several windows, not one, and a level
    /// that lasts is learnt within a quarter of an hour.
    #[test]
    fn a_sustained_surge_stays_anomalous_for_several_windows_then_is_learnt() {
        let mut b = Baseline::default();
        steady(&mut b, 20, 100);
        let mut z = Vec::new();
        for k in 20..40 {
            b.record(t(k * 60), 2_000, &S);
            z.push(b.z(t(k * 60), 10, 0).unwrap());
        }
        let warn = 4.0;
        let anomalous = z.iter().take_while(|z| **z >= warn).count();
        assert!(anomalous >= 3, "{z:?}");
        assert!(z[15..].iter().all(|z| *z < warn), "{z:?}");
    }

    #[test]
    fn silence_is_not_a_sample_and_a_passed_window_counts_as_empty() {
        let mut b = Baseline::default();
        steady(&mut b, 12, 100);
        let mean = b.mean();
        b.roll(t(10_000 * 60), &S);
        b.roll(t(20_000 * 60), &S);
        assert_eq!(b.samples(), 12);
        assert_eq!(b.mean(), mean);
        assert!(b.z(t(20_000 * 60), 10, 0).unwrap() < 0.0);
    }

    #[test]
    fn the_baseline_round_trips_through_json_bit_for_bit() {
        let mut b = Baseline::default();
        for (k, v) in [(0, 103), (1, 97), (2, 211), (3, 5), (4, 1_000_003)] {
            b.record(t(k * 60), v, &S);
        }
        let json = serde_json::to_string(&b).unwrap();
        let back: Baseline = serde_json::from_str(&json).unwrap();
        assert_eq!(back.mean.to_bits(), b.mean.to_bits());
        assert_eq!(back.var.to_bits(), b.var.to_bits());
        let nan = json.replace(&format!("\"{}\"", b.mean), "\"NaN\"");
        assert!(serde_json::from_str::<Baseline>(&nan).is_err());
    }

    #[test]
    fn late_events_of_a_closed_window_do_not_change_the_baseline() {
        let mut b = Baseline::default();
        steady(&mut b, 12, 100);
        let before = b.clone();
        b.record(t(0), 1_000_000, &S);
        assert_eq!(b, before);
    }
}
