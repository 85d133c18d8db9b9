//! Time arithmetic that never panics, and durations as humantime strings in config.
//!
//! Policies are validated to at most ten years, but the domain must not panic on one that
//! was not: conversions and additions saturate instead.

use chrono::{DateTime, Utc};

/// `std` duration → `chrono` duration; policies are validated to at most ten years, and
/// anything larger saturates instead of panicking.
pub(crate) fn chrono_dur(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Durations as humantime strings, for the policy and the whole configuration.
pub(crate) mod duration_str {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration string such as "100ms", "30s", "5m" or "30days""#)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format!(
                    r#"invalid duration {v:?}: {e} (use e.g. "30s", "5m", "30days")"#
                ))
            })
        }
    }
}

/// `t + d`, saturating at the end of time.
pub(crate) fn later(t: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let huge = std::time::Duration::from_secs(u64::MAX);
        assert_eq!(chrono_dur(huge), chrono::Duration::MAX);
        let t0 = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        assert_eq!(later(t0, chrono_dur(huge)), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            later(t0, chrono::Duration::seconds(5)).timestamp(),
            1_780_000_005
        );
    }
}
