//! Unit tests of `ladder`.

use super::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
}

const TIMING: Timing = Timing {
    dwell: Duration::seconds(30),
    calm: Duration::seconds(300),
};

fn target(level: Level) -> Target {
    if level == Level::Ok {
        Target::CALM
    } else {
        Target::new(level, Reason::ErrorRate)
    }
}

fn moves(ladder: &mut Ladder, plan: &[(i64, Level)]) -> Vec<(i64, Level)> {
    let mut out = Vec::new();
    for &(s, l) in plan {
        if let Some(m) = ladder.observe(target(l), t(s), TIMING).unwrap() {
            out.push(((m.at - t(0)).num_seconds(), m.to));
        }
    }
    out
}

#[test]
fn the_table_allows_single_steps_manual_and_holds_only() {
    use Level::*;
    assert!(Ladder::legal(Ok, Warn, Move::StepUp));
    assert!(!Ladder::legal(Ok, Throttle, Move::StepUp));
    assert!(!Ladder::legal(Suspend, Terminated, Move::StepUp));
    assert!(Ladder::legal(Suspend, Throttle, Move::StepDown));
    assert!(!Ladder::legal(Killed, Suspend, Move::StepDown));
    assert!(!Ladder::legal(Terminated, Suspend, Move::StepDown));
    assert!(Ladder::legal(Killed, Ok, Move::Manual));
    assert!(!Ladder::legal(Ok, Killed, Move::Manual));
    assert!(Ladder::legal(Ok, Terminated, Move::Hold));
    assert!(!Ladder::legal(Ok, Suspend, Move::Hold));
}

#[test]
fn an_illegal_step_is_an_error_and_changes_nothing() {
    let mut l = Ladder::default();
    let before = l.clone();
    let err = l
        .step(
            Move::StepUp,
            Level::Throttle,
            Reason::ErrorRate,
            t(0),
            TIMING,
        )
        .unwrap_err();
    assert_eq!(
        err,
        EnforcementError::IllegalTransition {
            from: Level::Ok,
            to: Level::Throttle,
            by: Move::StepUp
        }
    );
    let err = l
        .step(Move::StepDown, Level::Ok, Reason::Calm, t(0), TIMING)
        .unwrap_err();
    assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
    let err = l
        .step(Move::Manual, Level::Warn, Reason::Manual, t(0), TIMING)
        .unwrap_err();
    assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
    assert_eq!(l, before);
}

#[test]
fn a_step_within_dwell_is_too_soon() {
    let mut l = Ladder::default();
    l.step(Move::StepUp, Level::Warn, Reason::ErrorRate, t(0), TIMING)
        .unwrap();
    let err = l
        .step(
            Move::StepUp,
            Level::Throttle,
            Reason::ErrorRate,
            t(29),
            TIMING,
        )
        .unwrap_err();
    assert_eq!(
        err,
        EnforcementError::TooSoon {
            from: Level::Warn,
            to: Level::Throttle,
            until: t(30)
        }
    );
    assert!(err.is_retryable());
    l.step(
        Move::StepUp,
        Level::Throttle,
        Reason::ErrorRate,
        t(30),
        TIMING,
    )
    .unwrap();
    assert_eq!(l.level(), Level::Throttle);
}

#[test]
fn climbs_one_step_per_dwell_and_calms_one_step_per_calm() {
    let mut l = Ladder::default();
    let plan: Vec<(i64, Level)> = (0..=70)
        .map(|s| (s, Level::Suspend))
        .chain((71..=1_000).step_by(10).map(|s| (s, Level::Ok)))
        .collect();
    assert_eq!(
        moves(&mut l, &plan),
        [
            (0, Level::Warn),
            (30, Level::Throttle),
            (60, Level::Suspend),
            (371, Level::Throttle),
            (671, Level::Warn),
            (971, Level::Ok),
        ]
    );
}

#[test]
fn a_re_rise_resets_the_calm_clock() {
    let mut l = Ladder::default();
    moves(&mut l, &[(0, Level::Warn)]);
    // Below for 290 s, back at warn for one observation, below again: no step down
    // until a whole calm has passed after the re-rise.
    let out = moves(
        &mut l,
        &[
            (10, Level::Ok),
            (300, Level::Ok),
            (301, Level::Warn),
            (302, Level::Ok),
            (601, Level::Ok),
            (602, Level::Ok),
        ],
    );
    assert_eq!(out, [(602, Level::Ok)]);
    assert_eq!(l.reason(), Reason::Calm);
}

#[test]
fn steps_down_while_a_lower_signal_is_active_and_takes_its_reason() {
    let mut l = Ladder::default();
    moves(&mut l, &[(0, Level::Throttle), (30, Level::Throttle)]);
    assert_eq!(l.level(), Level::Throttle);
    let auth = Target::new(Level::Warn, Reason::AuthFailureSpike);
    assert_eq!(l.observe(auth, t(40), TIMING).unwrap(), None);
    let m = l.observe(auth, t(340), TIMING).unwrap().unwrap();
    assert_eq!(
        (m.from, m.to, m.reason),
        (Level::Throttle, Level::Warn, Reason::AuthFailureSpike)
    );
    // The lower signal still holds warn: no further step.
    assert_eq!(l.observe(auth, t(2_000), TIMING).unwrap(), None);
    assert_eq!(l.level(), Level::Warn);
}

#[test]
fn signals_never_set_or_lower_people_levels() {
    let mut l = Ladder::default();
    let err = l
        .observe(Target::new(Level::Killed, Reason::ErrorRate), t(0), TIMING)
        .unwrap_err();
    assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
    l.manual(Level::Terminated, Reason::Manual, "alice", t(0))
        .unwrap()
        .unwrap();
    for s in (0..100_000).step_by(100) {
        assert_eq!(l.observe(Target::CALM, t(s), TIMING).unwrap(), None);
        assert_eq!(
            l.observe(target(Level::Suspend), t(s), TIMING).unwrap(),
            None
        );
    }
    assert_eq!(l.level(), Level::Terminated);
    assert_eq!(l.hold().unwrap().actor, "alice");
    let err = l
        .step(
            Move::StepDown,
            Level::Suspend,
            Reason::Calm,
            t(200_000),
            TIMING,
        )
        .unwrap_err();
    assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
}

#[test]
fn a_person_lifts_a_hold_and_the_ladder_resumes_from_there() {
    let mut l = Ladder::default();
    l.manual(Level::Killed, Reason::KillSwitch, "sec", t(0))
        .unwrap();
    assert_eq!(
        l.manual(Level::Killed, Reason::KillSwitch, "sec", t(1)),
        Ok(None)
    );
    assert_eq!(
        l.manual(Level::Ok, Reason::ErrorRate, "sec", t(2)),
        Err(EnforcementError::NotManualReason(Reason::ErrorRate))
    );
    let m = l
        .manual(Level::Throttle, Reason::Manual, "ttl", t(10))
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.from, m.to, m.by),
        (Level::Killed, Level::Throttle, Move::Manual)
    );
    assert!(l.hold().is_none());
    // Dwell restarts at the manual move; calm then lowers it one step.
    assert_eq!(l.observe(Target::CALM, t(20), TIMING).unwrap(), None);
    let m = l.observe(Target::CALM, t(320), TIMING).unwrap().unwrap();
    assert_eq!((m.from, m.to), (Level::Throttle, Level::Warn));
}
