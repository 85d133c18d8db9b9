//! The health ladder through the whole state: climbing with dwell, calming with calm,
//! no flapping, volume anomaly against the partner's own baseline, chargebacks.

use std::time::Duration as StdDuration;

use super::*;
use crate::domain::enforcement::health::Health;
use crate::domain::enforcement::window::Traffic;
use Level::{Ok as L0, Suspend, Throttle, Warn};

#[test]
fn error_rate_climbs_one_step_per_dwell_and_calms_one_step_per_calm_while_auth_stays_at_warn() {
    let mut sim = Sim::new(health_policy());
    for s in (0..=4_000).step_by(10) {
        if s <= 300 {
            // 50 % errors: the error signal asks for suspend at once.
            sim.usage(s, 1_000, 500, 3);
        } else if s <= 3_000 {
            // Errors stop; auth failures go on at ~100 per window (warn, not throttle).
            sim.usage(s, 0, 0, 3);
        }
        sim.tick(s);
    }
    // The last error bucket leaves the 5-minute window at 630 s: the calm clock starts
    // there. Auth failures fall below 50 per window at 3150 s.
    assert_eq!(
        sim.moves(Scope::Partner),
        [
            (0, L0, Warn, Reason::ErrorRate),
            (30, Warn, Throttle, Reason::ErrorRate),
            (60, Throttle, Suspend, Reason::ErrorRate),
            (930, Suspend, Throttle, Reason::Calm),
            (1_230, Throttle, Warn, Reason::AuthFailureSpike),
            (3_450, Warn, L0, Reason::Calm),
        ]
    );
    assert_eq!(sim.moves(Scope::Integration), sim.moves(Scope::Partner));
    assert_eq!(sim.state.partner_level().level, L0);
}

#[test]
fn no_step_comes_faster_than_dwell_even_with_an_event_every_second() {
    let mut policy = health_policy();
    policy.dwell = StdDuration::from_secs(45);
    let mut sim = Sim::new(policy);
    for s in 0..=200 {
        sim.usage(s, 1_000, 900, 0);
    }
    let at: Vec<(i64, Level)> = sim
        .moves(Scope::Partner)
        .into_iter()
        .map(|m| (m.0, m.2))
        .collect();
    assert_eq!(at, [(0, Warn), (45, Throttle), (90, Suspend)]);
}

#[test]
fn an_error_rate_oscillating_around_the_throttle_threshold_does_not_flap() {
    let mut sim = Sim::new(health_policy());
    let tier = sim.policy.tier("any").clone();
    let mut health = Health::default();
    let (mut dips, mut was_below) = (0, false);
    for s in (0..=7_200).step_by(10) {
        // A square wave of period 4 min: 20 % errors for 2 min, then 10 %.
        let errors = if (s / 120) % 2 == 0 { 200 } else { 100 };
        sim.usage(s, 1_000, errors, 0);
        sim.tick(s);
        let traffic = Traffic {
            requests: 1_000,
            errors,
            auth_failures: 0,
        };
        health.record_usage(t(s), traffic, t(s), &tier);
        let below = health.target(t(s), &tier).level < Throttle;
        if below && !was_below {
            dips += 1;
        }
        was_below = below;
    }
    assert!(
        dips >= 20,
        "the signal must really cross the threshold, dipped {dips} times"
    );
    assert_eq!(
        sim.moves(Scope::Partner),
        [
            (0, L0, Warn, Reason::ErrorRate),
            (30, Warn, Throttle, Reason::ErrorRate),
        ]
    );
    // Once the errors stop it calms down, one step per calm.
    for s in (7_210..=9_000).step_by(10) {
        sim.usage(s, 1_000, 0, 0);
        sim.tick(s);
    }
    let moves = sim.moves(Scope::Partner);
    assert_eq!(moves.len(), 4);
    assert_eq!((moves[2].1, moves[2].2), (Throttle, Warn));
    assert_eq!(
        (moves[3].1, moves[3].2, moves[3].3),
        (Warn, L0, Reason::Calm)
    );
    assert!(moves[3].0 - moves[2].0 >= 300);
}

/// A deterministic noise in [-1, 1).
fn noise(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

#[test]
fn a_large_steady_partner_never_trips_volume_anomaly() {
    let mut sim = Sim::new(health_policy());
    let mut seed = 7;
    for w in 0..300 {
        for k in 0..6 {
            // ~100k requests per one-minute window, ±5 % noise per event.
            let requests = (16_667.0 * (1.0 + 0.05 * noise(&mut seed))) as u64;
            sim.usage(w * 60 + k * 10, requests, 0, 0);
            sim.tick(w * 60 + k * 10);
        }
    }
    assert_eq!(sim.log, []);
}

#[test]
fn a_small_steady_partner_that_spikes_20x_trips_volume_anomaly() {
    let mut sim = Sim::new(health_policy());
    for w in 0..20 {
        sim.usage(w * 60, 100, 0, 0);
        for s in (w * 60..w * 60 + 60).step_by(10) {
            sim.tick(s);
        }
    }
    assert_eq!(sim.log, [], "a steady partner is left alone");
    sim.usage(1_200, 2_000, 0, 0);
    for s in (1_200..=5_000).step_by(10) {
        if s % 60 == 0 && s > 1_200 {
            sim.usage(s, 100, 0, 0);
        }
        sim.tick(s);
    }
    let moves = sim.moves(Scope::Partner);
    assert_eq!(
        moves[..2],
        [
            (1_200, L0, Warn, Reason::VolumeAnomaly),
            (1_230, Warn, Throttle, Reason::VolumeAnomaly),
        ]
    );
    assert_eq!(moves.last().unwrap().2, L0, "{moves:?}");
}

/// A partner of one request a minute that sends nine in one minute is 8 spreads above
/// its baseline, but nine requests abuse nothing: below `anomaly_min_requests` in the
/// window the signal says nothing. The same jump at a hundred times the volume trips it.
#[test]
fn a_tiny_partners_jump_is_below_the_anomaly_floor() {
    for (scale, expected) in [(1, None), (100, Some(Warn))] {
        let mut sim = Sim::new(health_policy());
        for w in 0..20 {
            sim.usage(w * 60, scale, 0, 0);
            sim.tick(w * 60 + 30);
        }
        sim.usage(1_200, 9 * scale, 0, 0);
        sim.tick(1_205);
        let first = sim.moves(Scope::Partner).first().map(|m| m.2);
        assert_eq!(first, expected, "{scale} a minute, then {}", 9 * scale);
    }
}

#[test]
fn chargebacks_warn_at_three_climb_to_suspend_at_ten_and_calm_after_their_window() {
    let mut sim = Sim::new(health_policy());
    let mut out = Vec::new();
    for n in 0..3 {
        out.extend(sim.state.on_chargeback(t(n), "x", &sim.policy));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].level, out[0].reason, secs(out[0].at)),
        (Warn, Reason::ChargebackSpike, 2)
    );
    for n in 3..10 {
        out.extend(sim.state.on_chargeback(t(n), "x", &sim.policy));
    }
    sim.log.extend(out);
    for s in (10..=8 * 86_400).step_by(600) {
        sim.tick(s);
    }
    let levels: Vec<Level> = sim.moves(Scope::Partner).iter().map(|m| m.2).collect();
    assert_eq!(levels, [Warn, Throttle, Suspend, Throttle, Warn, L0]);
    let moves = sim.moves(Scope::Partner);
    assert!(moves[1].0 >= 32 && moves[2].0 - moves[1].0 >= 30);
    // The 7-day window (plus one bucket) must pass before the first step down.
    assert!(moves[3].0 >= 7 * 86_400, "{moves:?}");
}

#[test]
fn errors_of_one_integration_hold_that_integration_not_its_sibling() {
    let mut sim = Sim::new(health_policy());
    for s in (0..=120).step_by(10) {
        sim.event(s, "good", 10_000, 0, 0);
        sim.event(s, "bad", 1_000, 1_000, 0);
        sim.tick(s);
    }
    let ids: Vec<&str> = sim
        .log
        .iter()
        .filter(|d| d.scope == Scope::Integration)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, ["bad", "bad", "bad"]);
    // 1000 errors in 11000 requests: 9 %, the partner only warns.
    assert_eq!(sim.state.partner_level().level, Warn);
    let levels = sim.state.levels();
    assert_eq!(levels.len(), 2);
    assert_eq!(
        (levels[1].scope, levels[1].id.as_str(), levels[1].level),
        (Scope::Integration, "bad", Suspend)
    );
}
