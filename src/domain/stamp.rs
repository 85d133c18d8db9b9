//! Timestamps as serde writes them in snapshots and decisions: the same RFC 3339 text
//! chrono's own `Serialize` writes (`SecondsFormat::AutoSi`, `Z`), but formatted into a
//! string first and written once. chrono's `Serialize` goes through `collect_str`, which
//! serde_json escapes a character at a time: 135 ns a timestamp against 45 ns, and a
//! partner's snapshot holds about ten. Reading is chrono's own.
//!
//! Use as `#[serde(with = "crate::domain::stamp")]`, or `stamp::opt` for an `Option`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// chrono's own text for `t`.
fn text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text(t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    DateTime::deserialize(d)
}

/// The same for `Option<DateTime<Utc>>`: `None` is written as serde writes a `None`.
pub mod opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::text(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ours {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(with = "super::opt")]
        since: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chronos {
        at: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    }

    #[test]
    fn writes_exactly_what_chrono_writes_and_reads_it_back() {
        // Whole seconds, milli-, micro- and nanoseconds, a leap second, the epoch, far
        // years: AutoSi picks the shortest exact fraction, and so must this.
        let mut stamps = vec![
            DateTime::UNIX_EPOCH,
            DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
            DateTime::from_timestamp(1_780_000_000, 325_000_000).unwrap(),
            DateTime::from_timestamp(1_780_000_000, 325_100_000).unwrap(),
            DateTime::from_timestamp(1_780_000_000, 1).unwrap(),
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
            DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap(),
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 4_102_444_800) as i64;
            let nanos = [
                0,
                (x >> 32) as u32 % 1_000 * 1_000_000,
                (x >> 32) as u32 % 1_000_000_000,
            ][(x % 3) as usize];
            stamps.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        for (i, &at) in stamps.iter().enumerate() {
            let since = (i % 2 == 0).then_some(at);
            let ours = serde_json::to_string(&Ours { at, since }).unwrap();
            let chronos = serde_json::to_string(&Chronos { at, since }).unwrap();
            assert_eq!(ours, chronos);
            assert_eq!(
                serde_json::from_str::<Ours>(&ours).unwrap(),
                Ours { at, since }
            );
        }
    }
}
