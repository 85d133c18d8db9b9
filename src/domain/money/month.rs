//! A calendar month in UTC (`YYYY-MM`): the unit of statements and volume bonuses.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The furthest back the auto-closer ever looks.
pub const AUTO_CLOSE_MAX_LOOKBACK: usize = 60;

/// A UTC calendar month. Orders chronologically; serialises as `"YYYY-MM"` (so it can key
/// a JSON map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// `None` unless 1 ≤ `month` ≤ 12 and the year is one an event time can have (decode
    /// takes years 0001–9999): a line dated year 26 by an upstream typo is still a line.
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((1..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// The month `ts` falls in, in UTC.
    pub fn of(ts: DateTime<Utc>) -> Month {
        Month {
            year: ts.year(),
            month: ts.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The months the auto-closer closes at `now`, oldest first (CONTRACT §2: after its end
    /// plus `grace`): the last month whose grace has passed, and every month still open
    /// between it and the oldest month ever closed, never more than
    /// [`AUTO_CLOSE_MAX_LOOKBACK`] months back (a stray close of a month decades ago must
    /// not close everything since). Not only the previous month: after an outage or a
    /// replay over more than one month end, older months would otherwise stay open until
    /// closed by hand. A deployment that never closed a month closes the last one only, as
    /// before: it cannot tell months before it existed from months it missed.
    pub fn due_for_close(
        now: DateTime<Utc>,
        grace: chrono::Duration,
        closed: &std::collections::BTreeSet<Month>,
    ) -> Vec<Month> {
        let last = Month::of(now - grace).previous();
        let furthest = (1..AUTO_CLOSE_MAX_LOOKBACK).fold(last, |m, _| m.previous());
        let first = closed
            .first()
            .map_or(last, |oldest| (*oldest).max(furthest));
        let mut due = Vec::new();
        let mut month = last;
        while month >= first {
            if !closed.contains(&month) {
                due.push(month);
            }
            month = month.previous();
        }
        due.reverse();
        due
    }

    /// Midnight UTC of the month's first day.
    pub fn start(self) -> Option<DateTime<Utc>> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Why a month string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a month (expected YYYY-MM)")]
pub struct BadMonth(pub String);

impl FromStr for Month {
    type Err = BadMonth;

    fn from_str(s: &str) -> Result<Month, BadMonth> {
        let bad = || BadMonth(s.to_string());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let month = m.parse().map_err(|_| bad())?;
        Month::new(year, month).ok_or_else(bad)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads back any month this type can hold, as [`Display`](fmt::Display) wrote it: a
/// snapshot must never become unreadable over a month its own arithmetic made (the month
/// after 9999-12 is `10000-01`). Input (the API, `month_close` facts) goes through the
/// stricter [`FromStr`].
impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Month, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .or_else(|bad: BadMonth| {
                let (y, m) = s.rsplit_once('-').ok_or(bad.clone())?;
                let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                let year_digits = y.strip_prefix('-').unwrap_or(y);
                if !digits(year_digits) || year_digits.len() < 4 || !digits(m) || m.len() != 2 {
                    return Err(bad);
                }
                match (y.parse(), m.parse()) {
                    (Ok(year), Ok(month)) if year != 0 && (1..=12).contains(&month) => {
                        Ok(Month { year, month })
                    }
                    _ => Err(bad),
                }
            })
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_month_the_type_can_hold_reads_back_from_what_it_wrote() {
        let early = Month::of("0026-05-14T09:30:00Z".parse().unwrap());
        let last = Month::new(9999, 12).unwrap();
        for m in [early, Month::new(1, 1).unwrap(), last, last.next()] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Month>(&json).unwrap(), m, "{json}");
        }
        assert_eq!("0026-05".parse(), Ok(early));
        // Input stays YYYY-MM.
        for bad in [
            "10000-01", "0000-01", "2026-13", "2026-5", "26-05", "-001-05",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        for bad in [
            "2026-13", "+2026-05", "2026-+5", "0000-05", "26-05", "2026-5",
        ] {
            let json = format!("{bad:?}");
            assert!(serde_json::from_str::<Month>(&json).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_open_month_up_to_the_previous_is_due_once_its_grace_has_passed() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let m = |y, n| Month::new(y, n).unwrap();
        let grace = chrono::Duration::hours(6);
        let closed = |months: &[Month]| months.iter().copied().collect::<BTreeSet<Month>>();
        let through_october: BTreeSet<Month> = (1..=12)
            .map(|n| m(2025, n))
            .chain((1..=10).map(|n| m(2026, n)))
            .collect();
        // Within the grace of December 1st, November is still open for late events.
        assert!(
            Month::due_for_close(at("2026-12-01T05:59:59Z"), grace, &through_october).is_empty()
        );
        assert_eq!(
            Month::due_for_close(at("2026-12-01T06:00:00Z"), grace, &through_october),
            [m(2026, 11)]
        );
        // An outage over a month end and a month: both months, oldest first, across a year.
        assert_eq!(
            Month::due_for_close(at("2027-01-15T00:00:00Z"), grace, &through_october),
            [m(2026, 11), m(2026, 12)]
        );
        // A gap left open behind a later close is closed too.
        let gap = closed(&[m(2026, 3), m(2026, 5)]);
        let due = Month::due_for_close(at("2026-06-10T00:00:00Z"), grace, &gap);
        assert_eq!(due, [m(2026, 4)]);
        // Never closed before: the last month only.
        let fresh = Month::due_for_close(at("2026-06-10T00:00:00Z"), grace, &BTreeSet::new());
        assert_eq!(fresh, [m(2026, 5)]);
        // Closed long ago: back to that month, but never more than five years.
        let old = closed(&[m(2024, 1)]);
        let due = Month::due_for_close(at("2026-06-10T00:00:00Z"), grace, &old);
        assert_eq!(due.first(), Some(&m(2024, 2)));
        assert_eq!(due.len(), 28);
        let stray = closed(&[m(1999, 1)]);
        let due = Month::due_for_close(at("2026-06-10T00:00:00Z"), grace, &stray);
        assert_eq!(due.len(), AUTO_CLOSE_MAX_LOOKBACK);
        assert_eq!(due.first(), Some(&m(2021, 6)));
        assert_eq!(
            Month::new(2027, 1).unwrap().previous().to_string(),
            "2026-12"
        );
    }

    #[test]
    fn month_of_a_timestamp_is_utc() {
        let ts: DateTime<Utc> = "2026-05-31T23:59:59Z".parse().unwrap();
        assert_eq!(Month::of(ts).to_string(), "2026-05");
        let ts: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        assert_eq!(Month::of(ts).to_string(), "2026-06");
    }

    #[test]
    fn parse_display_and_next() {
        let m: Month = "2026-12".parse().unwrap();
        assert_eq!(m.next().to_string(), "2027-01");
        assert_eq!(
            "2026-05".parse::<Month>().unwrap().next().to_string(),
            "2026-06"
        );
        for bad in [
            "2026-13",
            "2026-00",
            "26-05",
            "2026-5",
            "2026/05",
            "",
            "2026-05-01",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert!(m < m.next());
        assert_eq!(
            m.start().unwrap(),
            "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn serde_is_a_string() {
        let m: Month = "2026-05".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"2026-05\"");
        let back: Month = serde_json::from_str("\"2026-05\"").unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Month>("\"2026-5\"").is_err());
    }
}
