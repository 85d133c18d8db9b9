//! Partner status (informational, never changes money): active vs at risk, and the lock.
//!
//! Active = at least `active_min_tenants_per_year` new tenants a year, averaged over the
//! rolling window ending at `now`: count(started_at in (now − window, now]) × 365 ÷
//! window_days. Onboarded tenants are the ones this partner activated (migrations in are
//! not onboardings). Reaching `lock_after_tenants` locks the status active until the day
//! the last of them started plus `lock_years` calendar years.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Months, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::program::StatusRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    Active,
    AtRisk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub status: PartnerStatus,
    /// Set once the lock is reached; the status is active while `now` is before it.
    pub locked_until: Option<DateTime<Utc>>,
    pub tenants_onboarded: u64,
    pub new_tenants_in_window: u64,
    /// Average new tenants per year over the window, to 2 places (display only).
    pub new_tenants_per_year: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusTracker {
    tenants: BTreeSet<String>,
    /// Start times of onboarded tenants, sorted.
    started: Vec<DateTime<Utc>>,
}

impl StatusTracker {
    /// Records an onboarding; `false` if this tenant was recorded before.
    pub fn record(&mut self, tenant_id: &str, started_at: DateTime<Utc>) -> bool {
        if !self.tenants.insert(tenant_id.to_string()) {
            return false;
        }
        let i = self.started.partition_point(|t| *t <= started_at);
        self.started.insert(i, started_at);
        true
    }

    pub fn knows(&self, tenant_id: &str) -> bool {
        self.tenants.contains(tenant_id)
    }

    pub fn view(&self, now: DateTime<Utc>, rules: &StatusRules) -> StatusView {
        let window_start = now
            .checked_sub_signed(Duration::days(i64::from(rules.window_days)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let lo = self.started.partition_point(|t| *t <= window_start);
        let hi = self.started.partition_point(|t| *t <= now);
        let in_window = (hi.saturating_sub(lo)) as u64;
        let per_year =
            Decimal::from(in_window) * Decimal::from(365) / Decimal::from(rules.window_days.max(1));
        // The same comparison in integers: count × 365 ≥ min × window_days.
        let active = u128::from(in_window) * 365
            >= u128::from(rules.active_min_tenants_per_year) * u128::from(rules.window_days);
        let n = rules.lock_after_tenants as usize;
        let locked_until = n
            .checked_sub(1)
            .and_then(|i| self.started.get(i))
            .and_then(|t| t.checked_add_months(Months::new(rules.lock_years.saturating_mul(12))));
        let locked = locked_until.is_some_and(|until| now < until);
        StatusView {
            status: if active || locked {
                PartnerStatus::Active
            } else {
                PartnerStatus::AtRisk
            },
            locked_until,
            tenants_onboarded: self.started.len() as u64,
            new_tenants_in_window: in_window,
            new_tenants_per_year: super::round_cents(per_year),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::testkit::{d, t};

    fn rules() -> StatusRules {
        StatusRules::default() // 10 a year over 365 days; 50 tenants lock for 5 years
    }

    #[test]
    fn ten_a_year_in_the_window_is_active_nine_is_at_risk() {
        let mut s = StatusTracker::default();
        let now = t("2026-12-31T00:00:00Z");
        for i in 0..9 {
            s.record(
                &format!("t{i}"),
                t("2026-06-01T00:00:00Z") + Duration::days(i),
            );
        }
        let v = s.view(now, &rules());
        assert_eq!(
            (v.status, v.new_tenants_in_window),
            (PartnerStatus::AtRisk, 9)
        );
        s.record("t9", t("2026-07-01T00:00:00Z"));
        assert!(!s.record("t9", t("2026-07-01T00:00:00Z")));
        let v = s.view(now, &rules());
        assert_eq!(
            (v.status, v.new_tenants_per_year),
            (PartnerStatus::Active, d("10"))
        );
        // A year later the window is empty again.
        let v = s.view(t("2027-12-31T00:00:00Z"), &rules());
        assert_eq!(
            (v.status, v.new_tenants_in_window),
            (PartnerStatus::AtRisk, 0)
        );
    }

    #[test]
    fn a_short_window_is_averaged_per_year() {
        // 3 tenants in a 73-day window: 3 × 365 / 73 = 15 a year → active at 10.
        let mut s = StatusTracker::default();
        for i in 0..3 {
            s.record(&format!("t{i}"), t("2026-05-01T00:00:00Z"));
        }
        let r = StatusRules {
            window_days: 73,
            ..rules()
        };
        let v = s.view(t("2026-06-01T00:00:00Z"), &r);
        assert_eq!(
            (v.status, v.new_tenants_per_year),
            (PartnerStatus::Active, d("15"))
        );
    }

    #[test]
    fn fifty_tenants_lock_active_for_five_years() {
        let mut s = StatusTracker::default();
        for i in 0..50 {
            s.record(
                &format!("t{i}"),
                t("2020-01-01T00:00:00Z") + Duration::days(i),
            );
        }
        // The 50th started 2020-02-19: locked until 2025-02-19.
        let v = s.view(t("2024-01-01T00:00:00Z"), &rules());
        assert_eq!(v.locked_until, Some(t("2025-02-19T00:00:00Z")));
        assert_eq!(v.status, PartnerStatus::Active);
        assert_eq!(v.new_tenants_in_window, 0);
        let v = s.view(t("2025-02-19T00:00:00Z"), &rules());
        assert_eq!(v.status, PartnerStatus::AtRisk);
        assert_eq!(v.tenants_onboarded, 50);
    }
}
