//! When a partner is due a tick ([`EnforcementState::tick_due_ms`]): ticking only then must
//! give exactly the decisions of ticking every second, and an idle partner must not be due
//! until something can change.

use proptest::prelude::*;

use super::*;
use crate::domain::enforcement::{ManualOrder, DUE_NOW};

/// 2026-06-01T00:00:00Z in seconds since `BASE`: a quota month starts here.
const JUNE: i64 = 22 * 86_400;

/// When `sim` is next due a tick (`DateTime::MIN_UTC`: at the next one).
fn due(sim: &Sim) -> Option<DateTime<Utc>> {
    let ms = sim.state.tick_due_ms(&sim.policy)?;
    Some(if ms == DUE_NOW {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::from_timestamp_millis(ms).unwrap()
    })
}

/// Two copies of one partner fed the same events: `every` is ticked every second of event
/// time, `when_due` only in the seconds its `tick_due_ms` says it is due.
struct Pair {
    every: Sim,
    when_due: Sim,
    /// The last second ticked.
    now: i64,
    ticks_when_due: u64,
}

impl Pair {
    fn new(policy: EnforcementPolicy, start: i64) -> Self {
        Pair {
            every: Sim::new(policy.clone()),
            when_due: Sim::new(policy),
            now: start,
            ticks_when_due: 0,
        }
    }

    /// Ticks every second after the last one up to `to`, as the pipeline's rounds would
    /// with the watermark at that second.
    fn run_to(&mut self, to: i64) {
        while self.now < to {
            self.now += 1;
            self.every.tick(self.now);
            if due(&self.when_due).is_some_and(|due| due <= t(self.now)) {
                self.when_due.tick(self.now);
                self.ticks_when_due += 1;
            }
        }
    }

    fn usage(&mut self, integration: &str, requests: u64, errors: u64, auth: u64) {
        let at = self.now;
        self.every.event(at, integration, requests, errors, auth);
        self.when_due.event(at, integration, requests, errors, auth);
    }

    fn chargeback(&mut self) {
        for sim in [&mut self.every, &mut self.when_due] {
            let out = sim
                .state
                .on_chargeback(t(self.now), "bronze-ish", &sim.policy);
            sim.log.extend(out);
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Usage {
        gap: i64,
        integration: u8,
        requests: u64,
        error_pct: u64,
        auth: u64,
    },
    Chargeback {
        gap: i64,
    },
    Quiet {
        gap: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0i64..60, 0u8..3, requests(), error_pct(), prop_oneof![4 => Just(0u64), 1 => 0u64..300])
            .prop_map(|(gap, integration, requests, error_pct, auth)| Step::Usage {
                gap,
                integration,
                requests,
                error_pct,
                auth,
            }),
        1 => (0i64..600).prop_map(|gap| Step::Chargeback { gap }),
        2 => (0i64..1_200).prop_map(|gap| Step::Quiet { gap }),
    ]
}

/// Mostly clean traffic, so ladders also calm down and climb again.
fn error_pct() -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(0u64), 3 => 0u64..5, 2 => 0u64..=100]
}

/// Mostly small events, some large enough to outweigh a window of them.
fn requests() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..300, 1 => 0u64..20_000]
}

fn policy() -> impl Strategy<Value = EnforcementPolicy> {
    let overage = prop_oneof![
        Just(OveragePolicy::Block),
        Just(OveragePolicy::Soft),
        Just(OveragePolicy::Notify)
    ];
    (
        prop_oneof![Just(0u64), Just(20_000), Just(200_000)],
        prop_oneof![Just(0u64), Just(500), Just(2_500)],
        overage,
    )
        .prop_map(|(monthly, burst, overage)| quota_policy(monthly, burst, overage))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ticking_only_when_due_decides_exactly_what_ticking_every_second_does(
        policy in policy(),
        // Mid-month, or half an hour before a new quota month.
        start in prop_oneof![Just(0i64), Just(JUNE - 1_800)],
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut pair = Pair::new(policy, start);
        for s in &steps {
            match *s {
                Step::Usage { gap, integration, requests, error_pct, auth } => {
                    pair.run_to(pair.now + gap);
                    let errors = requests * error_pct / 100;
                    pair.usage(&format!("i-{integration}"), requests, errors, auth);
                }
                Step::Chargeback { gap } => {
                    pair.run_to(pair.now + gap);
                    pair.chargeback();
                }
                Step::Quiet { gap } => pair.run_to(pair.now + gap),
            }
        }
        // Long enough for every ladder to calm down and every window to empty.
        pair.run_to(pair.now + 3_600);
        prop_assert_eq!(&pair.when_due.log, &pair.every.log);
        prop_assert_eq!(pair.when_due.state.levels(), pair.every.state.levels());
        // (Which month a quota view names differs before the first use: a tick sets it.)
        let q = |sim: &Sim| {
            let q = sim.state.quota("bronze-ish", &sim.policy);
            (q.used, q.limit, q.overage)
        };
        prop_assert_eq!(q(&pair.when_due), q(&pair.every));
    }
}

#[test]
fn a_partner_with_nothing_counted_is_never_due() {
    let sim = Sim::new(health_policy());
    assert_eq!(due(&sim), None);
}

#[test]
fn a_calm_partner_is_due_when_a_window_changes_an_integration_may_be_forgotten_or_a_month_starts() {
    let mut sim = Sim::new(health_policy());
    assert!(sim.usage(10, 100, 0, 0).is_empty());
    // Default tier: the volume window is 60 s; the error window 5 min in ten 30 s buckets.
    assert_eq!(due(&sim), Some(t(60)));
    sim.tick(60);
    // The event's bucket [0, 30) counts until 11 widths after its start.
    assert_eq!(due(&sim), Some(t(330)));
    sim.tick(330);
    // Then its integration, idle for a week, is forgotten.
    let week = 7 * 86_400;
    let forget = t(10 + week) + chrono::Duration::milliseconds(1);
    assert_eq!(due(&sim), Some(forget));
    sim.tick(11 + week);
    // Not while it has use this month: the new month resets that, and then it goes.
    assert_eq!(sim.state.capacity().integrations, 1);
    assert_eq!(due(&sim), Some(t(JUNE)));
    sim.tick(JUNE);
    assert_eq!(sim.state.capacity().integrations, 0);
    assert_eq!(due(&sim), Some(t(JUNE + 30 * 86_400)));
    assert!(sim.log.is_empty());
}

#[test]
fn a_partner_off_ok_is_due_at_every_tick_until_it_is_calm_again() {
    let mut sim = Sim::new(health_policy());
    // Every request an error: the signal says suspend, and the ladder climbs one step.
    let up = sim.usage(0, 1_000, 1_000, 0);
    assert_eq!(up.last().map(|d| d.level), Some(Level::Warn));
    assert_eq!(due(&sim), Some(DateTime::<Utc>::MIN_UTC));
    // Kept live (never passivated) and woken by a new owner until calm.
    assert!(sim.state.calms_by_time());
    let mut at = 0;
    while sim.state.levels().iter().any(|v| v.level != Level::Ok) {
        at += 1;
        assert!(at < 3_600, "never calmed down: {:?}", sim.state.levels());
        assert!(sim.state.calms_by_time(), "off ok at {at}");
        sim.tick(at);
    }
    let due = due(&sim);
    assert!(due.is_some_and(|d| d > t(at)), "{due:?} at {at}");
    assert!(!sim.state.calms_by_time(), "calm again: free to passivate");
}

#[test]
fn a_partner_tracking_a_tenant_is_due_at_every_tick() {
    let mut sim = Sim::new(health_policy());
    let order = ManualOrder {
        scope: Scope::Tenant,
        id: "t-1".into(),
        level: Level::Suspend,
        reason: Reason::Manual,
        actor: "ops".into(),
    };
    sim.state
        .manual(&order, t(0), "bronze-ish", &sim.policy)
        .unwrap();
    assert_eq!(due(&sim), Some(DateTime::<Utc>::MIN_UTC));
    // A tenant's level waits for a fact, which wakes its partner: it may be passivated.
    assert!(!sim.state.calms_by_time());
}

/// Feeds `pair` usage of `i-1` at the given seconds and ticks through the hour after.
fn replay(pair: &mut Pair, events: &[(i64, u64, u64)]) {
    for &(at, requests, errors) in events {
        pair.run_to(at);
        pair.usage("i-1", requests, errors, 0);
    }
    pair.run_to(pair.now + 3_600);
    assert_eq!(pair.when_due.log, pair.every.log);
}

#[test]
fn an_error_rate_that_rises_as_clean_traffic_slides_out_is_caught_when_it_slides() {
    let mut pair = Pair::new(health_policy(), 0);
    // 1 % errors over the window until the clean bucket [0, 30) slides out at 330 s.
    replay(&mut pair, &[(0, 10_000, 0), (35, 100, 100)]);
    let moves = pair.when_due.moves(Scope::Partner);
    assert_eq!(
        moves.first(),
        Some(&(330, Level::Ok, Level::Warn, Reason::ErrorRate))
    );
    // Due every second only while off `ok` (330 to 660 s), a few times otherwise.
    assert_eq!(
        moves.get(1),
        Some(&(660, Level::Warn, Level::Ok, Reason::Calm))
    );
    let off_ok = 660 - 330;
    assert!(
        pair.ticks_when_due < off_ok + 10,
        "{} ticks",
        pair.ticks_when_due
    );
}

#[test]
fn a_signal_that_comes_back_within_dwell_of_a_calm_down_steps_up_when_dwell_ends() {
    let mut pair = Pair::new(health_policy(), 0);
    // Warned for 10 % errors, calm once the window slid and `calm` passed, then the same
    // errors again within `dwell` (30 s) of stepping down to `ok`.
    // The errors' bucket [0, 30) slides out at 330 s; `calm` (5 min) later it steps down.
    replay(&mut pair, &[(0, 1_000, 100), (635, 1_000, 100)]);
    let moves = pair.when_due.moves(Scope::Partner);
    assert_eq!(
        moves[..3],
        [
            (0, Level::Ok, Level::Warn, Reason::ErrorRate),
            (630, Level::Warn, Level::Ok, Reason::Calm),
            (660, Level::Ok, Level::Warn, Reason::ErrorRate),
        ]
    );
}
