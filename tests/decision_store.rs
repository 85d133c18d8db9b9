//! One behaviour suite for the data-plane decision store (CONTRACT §4), run against Redis
//! and the in-memory implementation: seq only grows, a re-published outbox id keeps its
//! seq and is refused, killed/terminated are never lowered by the ladder, `ok` deletes
//! the key, a kill switch is registered by the write that kills, and lifting is a
//! compare-and-set on the switch's seq, and a manual level is kept pending by the write
//! that applies it.

use std::time::Duration;

use warden::store::decisions::{
    DecisionStore, DecisionWrite, KillSwitch, LiftWrite, MemoryDecisions, OwnerLevel, Published,
};
use warden::store::redis::RedisStore;

mod common;

use common::redis_url;

fn unique_prefix() -> String {
    format!("warden-dec-{:016x}", rand::random::<u64>())
}

async fn redis_store(prefix: &str) -> Box<dyn DecisionStore> {
    let store = RedisStore::connect(&redis_url(), prefix, Duration::from_secs(2))
        .await
        .expect("redis");
    Box::new(store.decisions())
}

fn write(outbox: &str, level: &str, by_person: bool) -> DecisionWrite {
    DecisionWrite {
        outbox_id: outbox.into(),
        scope: "partner".into(),
        id: "p-1".into(),
        level: level.into(),
        reason: "error_rate".into(),
        rate_limit_rps: (level == "throttle").then_some(50),
        since: "2026-05-14T09:30:00Z".into(),
        partner_id: "p-1".into(),
        previous: "ok".into(),
        by_person,
    }
}

/// A person's own level (reason `manual`) on the target of [`write`].
fn manual(outbox: &str, level: &str) -> DecisionWrite {
    DecisionWrite {
        reason: "manual".into(),
        ..write(outbox, level, true)
    }
}

/// A kill switch's write (setting or lifting it) on the target of [`write`].
fn switch_write(outbox: &str, level: &str) -> DecisionWrite {
    DecisionWrite {
        reason: "kill_switch".into(),
        ..write(outbox, level, true)
    }
}

async fn seq_grows_and_replays_keep_their_seq(s: &dyn DecisionStore) {
    let a = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    let b = s.publish(&write("p-1:2", "throttle", false)).await.unwrap();
    assert!(a.applied && b.applied);
    assert!(b.seq > a.seq);
    // The same outbox id again (a re-publication after a crash): same seq, refused.
    let again = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    assert_eq!(again.seq, a.seq);
    assert!(!again.applied, "a replay must not roll the key back");
    let stored = s.read("partner", "p-1").await.unwrap().unwrap();
    assert_eq!(stored["level"], "throttle");
    assert_eq!(stored["rate_limit_rps"], "50");
    assert_eq!(stored["seq"], b.seq.to_string());
    assert_eq!(stored["decision_id"], format!("partner:p-1:{}", b.seq));
}

/// A batch does what the same writes one by one would: in order, a replay inside it
/// refused with its first seq, the last applied write standing.
async fn a_batch_publishes_as_one_by_one(s: &dyn DecisionStore) {
    let batch = [
        write("p-1:1", "warn", false),
        write("p-1:2", "throttle", false),
        write("p-1:1", "warn", false),
        write("p-1:3", "suspend", false),
    ];
    let out = s.publish_many(&batch).await.unwrap();
    let applied: Vec<bool> = out.iter().map(|p| p.applied).collect();
    assert_eq!(applied, [true, true, false, true]);
    assert!(out[0].seq < out[1].seq && out[1].seq < out[3].seq);
    assert_eq!(out[2].seq, out[0].seq);
    assert!(out[2].applied_before);
    let stored = s.read("partner", "p-1").await.unwrap().unwrap();
    assert_eq!(stored["level"], "suspend");
    assert_eq!(stored["seq"], out[3].seq.to_string());
    assert_eq!(s.publish_many(&[]).await.unwrap(), Vec::new());
    let again = s.publish_many(&batch[..2]).await.unwrap();
    assert!(again.iter().all(|p| !p.applied && p.applied_before));
}

/// A decision whose topic record the broker acknowledged is known as produced, so its
/// re-publication after a crash does not produce it twice; one never acknowledged is not.
async fn produced_decisions_are_remembered(s: &dyn DecisionStore) {
    let first = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    assert!(first.applied && !first.produced);
    s.publish(&write("p-1:2", "throttle", false)).await.unwrap();
    s.mark_produced(&[write("p-1:1", "warn", false)])
        .await
        .unwrap();
    let replay = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    assert!(!replay.applied && replay.produced);
    let unacked = s.publish(&write("p-1:2", "throttle", false)).await.unwrap();
    assert!(
        !unacked.produced,
        "never acknowledged: must be produced again"
    );
    // The same knowledge without publishing (the kill-switch loop asks this way).
    assert!(s.is_produced(&write("p-1:1", "warn", false)).await.unwrap());
    assert!(!s
        .is_produced(&write("p-1:2", "throttle", false))
        .await
        .unwrap());
}

/// A re-publication knows whether its outbox id was applied before (so the publisher can
/// make the audit record a failed first attempt missed); a refused one never was.
async fn a_replay_knows_it_was_applied_before(s: &dyn DecisionStore) {
    let first = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    assert!(first.applied && !first.applied_before);
    let replay = s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    assert!(!replay.applied && replay.applied_before);
    assert_eq!(replay.seq, first.seq);
    s.publish(&write("ks:1:set", "killed", true)).await.unwrap();
    let refused = s.publish(&write("p-1:2", "throttle", false)).await.unwrap();
    assert!(!refused.applied && !refused.applied_before);
    let refused_again = s.publish(&write("p-1:2", "throttle", false)).await.unwrap();
    assert!(!refused_again.applied && !refused_again.applied_before);
}

/// An outbox id is applied once: re-publishing an old decision after a later `ok` removed
/// the key (so no stored seq stands in its way) must not bring it back.
async fn a_replay_after_the_key_was_removed_is_refused(s: &dyn DecisionStore) {
    let throttle = s.publish(&write("p-1:1", "throttle", false)).await.unwrap();
    assert!(throttle.applied);
    assert!(
        s.publish(&write("p-1:2", "ok", false))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(s.read("partner", "p-1").await.unwrap(), None);
    let replay = s.publish(&write("p-1:1", "throttle", false)).await.unwrap();
    assert!(!replay.applied && replay.applied_before);
    assert_eq!(replay.seq, throttle.seq);
    assert_eq!(s.read("partner", "p-1").await.unwrap(), None, "still ok");
}

async fn ok_deletes_the_key(s: &dyn DecisionStore) {
    s.publish(&write("p-1:1", "warn", false)).await.unwrap();
    let ok = s.publish(&write("p-1:2", "ok", false)).await.unwrap();
    assert!(ok.applied);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap(),
        None,
        "no key means ok"
    );
    // The counter survives the deletion: the next seq is still higher.
    let next = s.publish(&write("p-1:3", "warn", false)).await.unwrap();
    assert!(next.seq > ok.seq);
}

async fn killed_is_never_lowered_by_the_ladder(s: &dyn DecisionStore) {
    let kill = s.publish(&write("api:k1", "killed", true)).await.unwrap();
    assert!(kill.applied);
    let ladder = s.publish(&write("p-1:9", "ok", false)).await.unwrap();
    assert!(!ladder.applied && ladder.previous_was_held);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "killed"
    );
    // A person may change it.
    let person = s.publish(&write("api:k2", "warn", true)).await.unwrap();
    assert!(person.applied);
}

fn switch(id: &str, expires_at: Option<&str>) -> KillSwitch {
    KillSwitch {
        id: id.into(),
        scope: "partner".into(),
        target: "p-1".into(),
        reason: "leaking keys".into(),
        actor: "alice".into(),
        created_at: "2026-05-14T09:30:00.000Z".into(),
        expires_at: expires_at.map(str::to_owned),
        seq: 0,
        previous: Some("warn".into()),
        lifted_at: None,
        lift_seq: None,
        lift_level: None,
        lift_reason: None,
        lift_rps: None,
        hold_seq: None,
    }
}

/// The `killed` write and the switch's registration are one write: the registry holds the
/// switch with the seq its decision got, and a re-publication changes neither.
async fn a_switch_is_registered_by_the_write_that_kills(s: &dyn DecisionStore) {
    let with_ttl = switch("ks-1", Some("2026-05-14T10:30:00.000Z"));
    let kill = s
        .publish_switch(&write("ks:ks-1:set", "killed", true), &with_ttl)
        .await
        .unwrap();
    assert!(kill.applied);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "killed"
    );
    let registered = KillSwitch {
        seq: kill.seq,
        ..with_ttl.clone()
    };
    assert_eq!(s.switches().await.unwrap(), vec![registered.clone()]);
    // A re-publication (the same outbox id) leaves the registered switch as it was.
    let changed = KillSwitch {
        reason: "something else".into(),
        ..with_ttl
    };
    let again = s
        .publish_switch(&write("ks:ks-1:set", "killed", true), &changed)
        .await
        .unwrap();
    assert!(!again.applied);
    assert_eq!(again.seq, kill.seq);
    assert_eq!(s.switches().await.unwrap(), vec![registered.clone()]);
    // No TTL: the registry keeps the absent expiry as absent.
    let forever = s
        .publish_switch(&write("ks:ks-2:set", "killed", true), &switch("ks-2", None))
        .await
        .unwrap();
    let listed = s.switches().await.unwrap();
    let second = listed.iter().find(|sw| sw.id == "ks-2").unwrap();
    assert_eq!(second.expires_at, None);
    assert_eq!(second.seq, forever.seq);
    assert!(s.remove_switch("ks-1").await.unwrap());
    assert!(!s.remove_switch("ks-1").await.unwrap());
    assert!(s.switches().await.unwrap().iter().all(|sw| sw.id != "ks-1"));
}

/// The lift's outcome when applied or re-published, with the `lifted_at` registered.
fn lifted(outcome: LiftWrite) -> (Published, Option<String>) {
    match outcome {
        LiftWrite::Lifted {
            published,
            lifted_at,
        } => (published, lifted_at),
        other => panic!("expected a lift, got {other:?}"),
    }
}

/// A lift is a compare-and-set on the switch's seq: refused, it writes nothing to the key
/// (and its outbox id gets no seq, so the right lift still goes through) and marks the
/// switch no longer active (`lifted_at` without `lift_seq`); applied, it deletes the
/// key and notes `lifted_at` and `lift_seq` on the switch; repeated by a lifter with
/// another clock, it is a re-publication with the first seq and the first `lifted_at`.
async fn lifting_is_compare_and_set_on_the_kill_seq(s: &dyn DecisionStore) {
    let kill = s
        .publish_switch(&write("ks:ks-1:set", "killed", true), &switch("ks-1", None))
        .await
        .unwrap();
    let lift = write("ks:ks-1:lift", "ok", true);
    let refused = s
        .publish_lift(&lift, "ks-1", kill.seq + 100, None)
        .await
        .unwrap();
    assert_eq!(refused, LiftWrite::Superseded);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "killed"
    );
    let refused_switch = s.switches().await.unwrap().remove(0);
    assert_eq!(
        refused_switch.lifted_at.as_deref(),
        Some(lift.since.as_str())
    );
    assert_eq!(refused_switch.lift_seq, None);
    let (first, lifted_at) = lifted(s.publish_lift(&lift, "ks-1", kill.seq, None).await.unwrap());
    assert!(first.applied);
    assert!(first.seq > kill.seq);
    assert_eq!(lifted_at.as_deref(), Some(lift.since.as_str()));
    assert_eq!(s.read("partner", "p-1").await.unwrap(), None);
    let registered = s.switches().await.unwrap().remove(0);
    assert_eq!(registered.lifted_at.as_deref(), Some(lift.since.as_str()));
    assert_eq!(registered.lift_seq, Some(first.seq));
    let later_clock = DecisionWrite {
        since: "2026-05-14T09:31:00.000Z".into(),
        ..lift.clone()
    };
    let (again, lifted_at) = lifted(
        s.publish_lift(&later_clock, "ks-1", kill.seq, None)
            .await
            .unwrap(),
    );
    assert_eq!(again.seq, first.seq);
    assert!(!again.applied && again.applied_before);
    assert_eq!(lifted_at.as_deref(), Some(lift.since.as_str()));
    // Once the switch has left the registry, a late lifter learns there is nothing to send.
    assert!(s.remove_switch("ks-1").await.unwrap());
    let (late, lifted_at) = lifted(
        s.publish_lift(&later_clock, "ks-1", kill.seq, None)
            .await
            .unwrap(),
    );
    assert!(!late.applied);
    assert_eq!(lifted_at, None);
}

/// Two switches on one target: the key stays `killed` until the last active one is
/// lifted, in either order. Lifting the one that holds the key while the other is active
/// hands the hold over and writes nothing; lifting the one that no longer holds it (the
/// other's `killed` came later) writes nothing either. Each lifted switch is no longer
/// active. (Lifting either used to put the target back while the other was still listed,
/// so a TTL'd switch ended a permanent one.)
async fn stacked_switches_keep_the_target_killed_until_the_last_is_lifted(s: &dyn DecisionStore) {
    let active = |all: Vec<KillSwitch>| -> Vec<String> {
        let mut ids: Vec<String> = all
            .into_iter()
            .filter(|sw| sw.lifted_at.is_none())
            .map(|sw| sw.id)
            .collect();
        ids.sort();
        ids
    };
    let level = || async {
        s.read("partner", "p-1")
            .await
            .unwrap()
            .map(|m| m["level"].clone())
    };
    for newer_first in [true, false] {
        let (a, b) = if newer_first {
            ("ks-a", "ks-b")
        } else {
            ("ks-c", "ks-d")
        };
        let older = s
            .publish_switch(
                &switch_write(&format!("ks:{a}:set"), "killed"),
                &switch(a, None),
            )
            .await
            .unwrap();
        let newer = s
            .publish_switch(
                &switch_write(&format!("ks:{b}:set"), "killed"),
                &switch(b, None),
            )
            .await
            .unwrap();
        assert!(older.applied && newer.applied);
        let (first, first_seq, last, last_seq) = if newer_first {
            (b, newer.seq, a, older.seq)
        } else {
            (a, older.seq, b, newer.seq)
        };
        let lift_first = switch_write(&format!("ks:{first}:lift"), "ok");
        assert_eq!(
            s.publish_lift(&lift_first, first, first_seq, None)
                .await
                .unwrap(),
            LiftWrite::Superseded,
            "{first} lifted with {last} active"
        );
        assert_eq!(level().await.as_deref(), Some("killed"));
        let stored = s.read("partner", "p-1").await.unwrap().unwrap();
        assert_eq!(stored["seq"], newer.seq.to_string(), "nothing written");
        assert_eq!(active(s.switches().await.unwrap()), vec![last.to_owned()]);
        // The first lifter removes the switch; a second lifter of it (a TTL racing a
        // DELETE, on another instance) finds nothing left to lift, and writes nothing.
        assert!(s.remove_switch(first).await.unwrap());
        assert_eq!(
            s.publish_lift(&lift_first, first, first_seq, None)
                .await
                .unwrap(),
            LiftWrite::Superseded,
            "a late lifter of {first}"
        );
        let stored = s.read("partner", "p-1").await.unwrap().unwrap();
        assert_eq!(
            (stored["level"].as_str(), stored["seq"].clone()),
            ("killed", newer.seq.to_string())
        );
        let lift_last = switch_write(&format!("ks:{last}:lift"), "ok");
        let (lifted_last, _) = lifted(
            s.publish_lift(&lift_last, last, last_seq, None)
                .await
                .unwrap(),
        );
        assert!(
            lifted_last.applied,
            "{last}: the last active switch lifts the target"
        );
        assert_eq!(level().await, None);
        assert!(active(s.switches().await.unwrap()).is_empty());
        assert!(s.remove_switch(last).await.unwrap());
    }
}

/// The ladder's calm step (reason `calm`) never raises the key above a person's lower
/// level: after a person's `ok` over the owner's `throttle`, the owner's next step down
/// (`warn`) is refused (it used to put the partner back at `warn`), and a kill switch's
/// lift puts the person's `ok` back, not that `warn`; a new escalation applies; a calm
/// step stricter than a person's manual `warn` neither applies nor replaces the manual
/// level a lift would put back; and a step down that a quota level or a signal still
/// holds names that cause: it is evidence, and applies.
async fn a_calm_step_never_raises_the_key_above_a_persons_level(s: &dyn DecisionStore) {
    let level = || async {
        s.read("partner", "p-1")
            .await
            .unwrap()
            .map(|m| m["level"].clone())
    };
    let owner = |outbox: &str, level: &str, previous: &str| DecisionWrite {
        previous: previous.into(),
        ..write(outbox, level, false)
    };
    let calm = |outbox: &str, level: &str, previous: &str| DecisionWrite {
        reason: "calm".into(),
        ..owner(outbox, level, previous)
    };
    let applied = |w: DecisionWrite| async move { s.publish(&w).await.unwrap() };
    assert!(applied(owner("p-1:1", "throttle", "warn")).await.applied);
    assert!(applied(manual("api:1", "ok")).await.applied);
    assert_eq!(level().await, None);
    let refused = applied(calm("p-1:2", "warn", "throttle")).await;
    assert!(
        !refused.applied && refused.previous_was_held,
        "a calm step raised the key"
    );
    assert_eq!(level().await, None);
    let kill = s
        .publish_switch(&switch_write("ks:c:set", "killed"), &switch("ks-c", None))
        .await
        .unwrap();
    let base = s.lift_base("partner", "p-1").await.unwrap();
    assert_eq!(base.manual.map(|m| m.level).as_deref(), Some("ok"));
    let lift = switch_write("ks:c:lift", "ok");
    let (lifted_ok, _) = lifted(
        s.publish_lift(&lift, "ks-c", kill.seq, Some(base.seq))
            .await
            .unwrap(),
    );
    assert!(lifted_ok.applied);
    assert_eq!(level().await, None, "the lift put back the person's ok");
    let worse = applied(owner("p-1:3", "throttle", "warn")).await;
    assert!(worse.applied, "an escalation applies");
    assert_eq!(level().await.as_deref(), Some("throttle"));

    assert!(applied(manual("api:2", "warn")).await.applied);
    assert!(applied(owner("p-1:4", "suspend", "throttle")).await.applied);
    assert!(applied(manual("api:3", "warn")).await.applied);
    let refused = applied(calm("p-1:5", "throttle", "suspend")).await;
    assert!(
        !refused.applied,
        "a calm step stricter than the manual level"
    );
    assert_eq!(level().await.as_deref(), Some("warn"));
    let base = s.lift_base("partner", "p-1").await.unwrap();
    assert_eq!(base.manual.map(|m| m.level).as_deref(), Some("warn"));
    assert_eq!(base.owner.map(|o| o.level).as_deref(), Some("throttle"));

    // A person's `ok`; the ladder at `suspend` steps down while the quota is exceeded: the
    // owner's `throttle` names the quota, and applies.
    assert!(applied(manual("api:4", "ok")).await.applied);
    let quota = DecisionWrite {
        reason: "quota_exceeded".into(),
        ..owner("p-1:6", "throttle", "suspend")
    };
    assert!(applied(quota).await.applied, "a quota level applies");
    assert_eq!(level().await.as_deref(), Some("throttle"));
    // The same with a signal (`error_rate` still holds `warn` as the ladder steps down).
    assert!(applied(manual("api:5", "ok")).await.applied);
    assert!(
        applied(owner("p-1:7", "warn", "throttle")).await.applied,
        "a signal's level applies"
    );
    assert_eq!(level().await.as_deref(), Some("warn"));
}

/// An owner's throttle decided again at a new rate (previous = level) refreshes the key
/// only where that throttle is in force: after a person's `ok` (no key) or manual `warn`
/// it is refused, and the person's level stays what a kill switch's lift puts back; a
/// real escalation still replaces it.
async fn a_new_rate_refreshes_only_a_throttle_in_force(s: &dyn DecisionStore) {
    let key = || async { s.read("partner", "p-1").await.unwrap() };
    let refresh = |outbox: &str, rps: u64| DecisionWrite {
        previous: "throttle".into(),
        rate_limit_rps: Some(rps),
        ..write(outbox, "throttle", false)
    };
    assert!(
        s.publish(&write("p-1:1", "throttle", false))
            .await
            .unwrap()
            .applied
    );
    assert!(s.publish(&refresh("p-1:2", 500)).await.unwrap().applied);
    assert_eq!(key().await.unwrap()["rate_limit_rps"], "500");
    for (person, level) in [("api:1", "ok"), ("api:2", "warn")] {
        assert!(s.publish(&manual(person, level)).await.unwrap().applied);
        let outbox = format!("p-1:r-{person}");
        let refused = s.publish(&refresh(&outbox, 700)).await.unwrap();
        assert!(
            !refused.applied && refused.previous_was_held,
            "a new rate put the throttle back over a person's {level}"
        );
        let shown = key().await.map(|k| k["level"].clone());
        assert_eq!(shown.as_deref().unwrap_or("ok"), level);
        let base = s.lift_base("partner", "p-1").await.unwrap();
        assert_eq!(base.manual.map(|m| m.level).as_deref(), Some(level));
    }
    let worse = DecisionWrite {
        previous: "throttle".into(),
        ..write("p-1:3", "suspend", false)
    };
    assert!(
        s.publish(&worse).await.unwrap().applied,
        "an escalation applies"
    );
    assert!(s
        .lift_base("partner", "p-1")
        .await
        .unwrap()
        .manual
        .is_none());
}

/// A switch replaced by a later person's decision is not lifted: the key keeps it.
async fn a_lift_leaves_a_later_decision_alone(s: &dyn DecisionStore) {
    let kill = s
        .publish_switch(&write("ks:ks-1:set", "killed", true), &switch("ks-1", None))
        .await
        .unwrap();
    let later = s
        .publish(&write("api:t1", "terminated", true))
        .await
        .unwrap();
    assert!(later.applied);
    let lift = write("ks:ks-1:lift", "ok", true);
    assert_eq!(
        s.publish_lift(&lift, "ks-1", kill.seq, None).await.unwrap(),
        LiftWrite::Superseded
    );
    let stored = s.read("partner", "p-1").await.unwrap().unwrap();
    assert_eq!(stored["level"], "terminated");
    assert_eq!(stored["seq"], later.seq.to_string());
}

/// The owner's last level is noted by its own writes, applied or refused (a switch held
/// the key), never by a person's, and never rolled back by a re-publication; a lift notes
/// what it wrote on the switch, so its record can be rebuilt.
async fn the_owners_last_level_is_noted_and_a_lift_notes_what_it_wrote(s: &dyn DecisionStore) {
    assert_eq!(s.lift_base("partner", "p-1").await.unwrap().owner, None);
    let throttle = s.publish(&write("p-1:1", "throttle", false)).await.unwrap();
    assert!(throttle.applied);
    let noted = |level: &str, rps: Option<u64>| OwnerLevel {
        level: level.into(),
        reason: "error_rate".into(),
        rate_limit_rps: rps,
    };
    assert_eq!(
        s.lift_base("partner", "p-1").await.unwrap().owner,
        Some(noted("throttle", Some(50)))
    );
    let kill = s
        .publish_switch(&write("ks:ks-1:set", "killed", true), &switch("ks-1", None))
        .await
        .unwrap();
    assert_eq!(
        s.lift_base("partner", "p-1").await.unwrap().owner,
        Some(noted("throttle", Some(50))),
        "a person's write is not the owner's"
    );
    let suspend = s.publish(&write("p-1:2", "suspend", false)).await.unwrap();
    assert!(!suspend.applied, "the switch holds the key");
    let replay = s.publish(&write("p-1:1", "throttle", false)).await.unwrap();
    assert_eq!(replay.seq, throttle.seq);
    assert_eq!(
        s.lift_base("partner", "p-1").await.unwrap().owner,
        Some(noted("suspend", None)),
        "refused but noted; the replay of an older decision changes nothing"
    );
    // A lift that read the base before the owner's `suspend` was noted writes nothing: it
    // must read it again (it would put back the older `throttle`).
    let before_suspend = s.lift_base("partner", "p-1").await.unwrap().seq;
    assert_eq!(
        before_suspend, suspend.seq,
        "the base names the decision it noted"
    );
    let stale = write("ks:ks-1:lift", "throttle", true);
    assert_eq!(
        s.publish_lift(&stale, "ks-1", kill.seq, Some(throttle.seq))
            .await
            .unwrap(),
        LiftWrite::BaseMoved
    );
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "killed",
        "nothing written"
    );
    let lift = write("ks:ks-1:lift", "suspend", true);
    let (applied, _) = lifted(
        s.publish_lift(&lift, "ks-1", kill.seq, Some(before_suspend))
            .await
            .unwrap(),
    );
    assert!(applied.applied);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "suspend"
    );
    let registered = s.switches().await.unwrap().remove(0);
    assert_eq!(
        (
            registered.lift_level.as_deref(),
            registered.lift_reason.as_deref(),
            registered.lift_rps.as_deref()
        ),
        (Some("suspend"), Some("error_rate"), Some(""))
    );
    let ok = s.publish(&write("p-1:3", "ok", false)).await.unwrap();
    assert!(ok.applied);
    assert_eq!(
        s.lift_base("partner", "p-1").await.unwrap().owner,
        Some(noted("ok", None))
    );
}

/// A person's `terminated` is noted under the key, not moved by kill switches set and
/// lifted over it, and cleared only by a person's other manual level.
async fn a_persons_termination_is_noted_until_a_person_lifts_it(s: &dyn DecisionStore) {
    assert!(!s.lift_base("partner", "p-1").await.unwrap().terminated);
    assert!(
        s.publish(&manual("api:t", "terminated"))
            .await
            .unwrap()
            .applied
    );
    assert!(s.lift_base("partner", "p-1").await.unwrap().terminated);
    let kill = switch_write("ks:a:set", "killed");
    assert!(s.publish(&kill).await.unwrap().applied);
    assert!(
        s.lift_base("partner", "p-1").await.unwrap().terminated,
        "a switch over it leaves it"
    );
    assert!(s.publish(&manual("api:ok", "ok")).await.unwrap().applied);
    assert!(!s.lift_base("partner", "p-1").await.unwrap().terminated);
}

/// A ladder decision refused while a switch held the key stays refused when published
/// again (a crash before its ack), even after the key, and the seq it held, were deleted
/// by a later `ok`: applied then, it would roll the data plane back to a level its owner
/// has left, under a decision id never seen before.
async fn a_refused_decision_published_again_stays_refused(s: &dyn DecisionStore) {
    let kill = switch_write("ks:a:set", "killed");
    assert!(s.publish(&kill).await.unwrap().applied);
    let throttle = write("p-1:5", "throttle", false);
    let refused = s.publish(&throttle).await.unwrap();
    assert!(!refused.applied);
    let lift = switch_write("ks:a:lift", "ok");
    assert!(s.publish(&lift).await.unwrap().applied);
    assert!(s.read("partner", "p-1").await.unwrap().is_none());
    let again = s.publish(&throttle).await.unwrap();
    assert_eq!((again.seq, again.applied), (refused.seq, false));
    assert!(s.read("partner", "p-1").await.unwrap().is_none());
}

/// A person's manual level holds against the ladder: the owner's decisions at or below it
/// are refused (a routine quota `warn` must not end an operator's `suspend`), a stricter one
/// replaces it for good. What a kill switch's lift puts back follows the same rule.
async fn a_persons_manual_level_gives_way_only_to_a_stricter_owner_level(s: &dyn DecisionStore) {
    let level = || async {
        s.read("partner", "p-1")
            .await
            .unwrap()
            .map(|m| m["level"].clone())
    };
    let noted_manual = || async {
        let base = s.lift_base("partner", "p-1").await.unwrap();
        base.manual.map(|m| (m.level, m.reason, m.rate_limit_rps))
    };
    assert!(
        s.publish(&manual("api:1", "throttle"))
            .await
            .unwrap()
            .applied
    );
    for (outbox, milder) in [("p-1:1", "warn"), ("p-1:2", "throttle"), ("p-1:3", "ok")] {
        let refused = s.publish(&write(outbox, milder, false)).await.unwrap();
        assert!(!refused.applied && refused.previous_was_held, "{milder}");
    }
    assert_eq!(level().await.as_deref(), Some("throttle"));
    assert_eq!(
        noted_manual().await,
        Some(("throttle".into(), "manual".into(), Some(50)))
    );
    // Under a kill switch, milder owner levels leave the manual level as what a lift puts
    // back; a stricter one replaces it there too.
    let kill = switch_write("ks:a:set", "killed");
    assert!(s.publish(&kill).await.unwrap().applied);
    assert!(
        !s.publish(&write("p-1:4", "warn", false))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(noted_manual().await.map(|m| m.0), Some("throttle".into()));
    assert!(
        !s.publish(&write("p-1:5", "suspend", false))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(noted_manual().await, None);
    let base = s.lift_base("partner", "p-1").await.unwrap();
    assert_eq!(base.owner.map(|o| o.level).as_deref(), Some("suspend"));

    // Without a switch: a person's level again, then a stricter owner level applies, and
    // after it the owner's milder levels apply as usual (the manual level is gone).
    assert!(s.publish(&manual("api:2", "warn")).await.unwrap().applied);
    assert_eq!(level().await.as_deref(), Some("warn"));
    assert!(
        s.publish(&write("p-1:6", "throttle", false))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(noted_manual().await, None);
    assert!(
        s.publish(&write("p-1:7", "warn", false))
            .await
            .unwrap()
            .applied
    );
    assert_eq!(level().await.as_deref(), Some("warn"));
    // A person's `ok` holds nothing against the owner's escalations (it is noted, for a
    // lift to put back, and against the ladder's calm steps).
    assert!(s.publish(&manual("api:3", "ok")).await.unwrap().applied);
    assert_eq!(noted_manual().await.map(|m| m.0), Some("ok".into()));
    assert!(
        s.publish(&write("p-1:8", "warn", false))
            .await
            .unwrap()
            .applied
    );
}

/// A manual level is kept among the pending records, with the seq it got, by the write
/// that applies it: whatever happens to the request after, its record can be rebuilt with
/// the same content. A re-publication neither adds nor changes one; removing forgets it.
async fn a_manual_level_is_kept_pending_by_the_write_that_applies_it(s: &dyn DecisionStore) {
    assert!(s.pending_records().await.unwrap().is_empty());
    let mut throttle = write("manual:m-1", "throttle", true);
    throttle.reason = "manual".into();
    // The key must still hold what its person saw: seq 0, no key.
    let refused = s.publish_pending(&throttle, 9).await.unwrap();
    assert_eq!((refused.seq, refused.applied), (0, false));
    assert!(s.read("partner", "p-1").await.unwrap().is_none());
    assert!(s.pending_records().await.unwrap().is_empty());
    let first = s.publish_pending(&throttle, 0).await.unwrap();
    assert!(first.applied);
    assert_eq!(
        s.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "throttle"
    );
    let pending = s.pending_records().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].write, throttle);
    assert_eq!(pending[0].seq, first.seq);
    // The same outbox id again (a retried request): same seq, nothing changes.
    let mut changed = throttle.clone();
    changed.since = "2030-01-01T00:00:00Z".into();
    let again = s.publish_pending(&changed, 0).await.unwrap();
    assert_eq!((again.seq, again.applied), (first.seq, false));
    assert_eq!(s.pending_records().await.unwrap(), pending);
    // A second person's decision on the target is kept beside the first.
    let ok = write("manual:m-2", "ok", true);
    let second = s.publish_pending(&ok, first.seq).await.unwrap();
    assert!(second.applied && second.seq > first.seq);
    assert!(s.read("partner", "p-1").await.unwrap().is_none());
    let mut seqs: Vec<u64> = s
        .pending_records()
        .await
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect();
    seqs.sort();
    assert_eq!(seqs, [first.seq, second.seq]);
    s.remove_pending("manual:m-1").await.unwrap();
    s.remove_pending("manual:m-1").await.unwrap();
    let left = s.pending_records().await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0].write.outbox_id.as_str(), left[0].seq),
        ("manual:m-2", second.seq)
    );
}

macro_rules! suite {
    ($($case:ident),*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&MemoryDecisions::default()).await;
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(redis_store(&unique_prefix()).await.as_ref()).await;
                }
            )*
        }
    };
}

suite!(
    seq_grows_and_replays_keep_their_seq,
    produced_decisions_are_remembered,
    a_replay_knows_it_was_applied_before,
    a_batch_publishes_as_one_by_one,
    a_replay_after_the_key_was_removed_is_refused,
    ok_deletes_the_key,
    killed_is_never_lowered_by_the_ladder,
    a_switch_is_registered_by_the_write_that_kills,
    lifting_is_compare_and_set_on_the_kill_seq,
    stacked_switches_keep_the_target_killed_until_the_last_is_lifted,
    a_lift_leaves_a_later_decision_alone,
    a_manual_level_is_kept_pending_by_the_write_that_applies_it,
    the_owners_last_level_is_noted_and_a_lift_notes_what_it_wrote,
    a_persons_termination_is_noted_until_a_person_lifts_it,
    a_persons_manual_level_gives_way_only_to_a_stricter_owner_level,
    a_calm_step_never_raises_the_key_above_a_persons_level,
    a_new_rate_refreshes_only_a_throttle_in_force,
    a_refused_decision_published_again_stays_refused
);

/// Gateways that cache subscribe to the channel: an applied decision is published once,
/// a refused replay is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_decisions_are_published_on_the_channel() {
    let prefix = unique_prefix();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(format!("{prefix}:enf")).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let store = redis_store(&prefix).await;
    let first = store.publish(&write("p-1:1", "warn", false)).await.unwrap();
    store.publish(&write("p-1:1", "warn", false)).await.unwrap();
    let msg = pubsub.get_message().unwrap();
    let v: serde_json::Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(v["decision_id"], format!("partner:p-1:{}", first.seq));
    assert_eq!(v["level"], "warn");
    assert_eq!(v["previous"], "ok");
    pubsub
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        pubsub.get_message().is_err(),
        "a refused replay must not be published again"
    );
}

/// A registry entry that is not JSON fails a lift before anything is written (no seq is
/// taken, the key keeps its `killed`), and is left out of the list rather than failing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lift_of_an_unreadable_switch_fails_having_written_nothing() {
    let prefix = unique_prefix();
    let store = redis_store(&prefix).await;
    let kill = store
        .publish_switch(&write("ks:ks-1:set", "killed", true), &switch("ks-1", None))
        .await
        .unwrap();
    let mut conn = common::raw_redis().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:killswitches"))
        .arg("ks-1")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let counter_before: Option<u64> = redis::cmd("GET")
        .arg(format!("{prefix}:enfseq:partner:p-1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let lift = write("ks:ks-1:lift", "ok", true);
    let err = store
        .publish_lift(&lift, "ks-1", kill.seq, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    let counter_after: Option<u64> = redis::cmd("GET")
        .arg(format!("{prefix}:enfseq:partner:p-1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counter_after, counter_before);
    assert_eq!(
        store.read("partner", "p-1").await.unwrap().unwrap()["level"],
        "killed"
    );
    // The unreadable entry is left out of the list; it does not hide the others.
    let other = store
        .publish_switch(&write("ks:ks-2:set", "killed", true), &switch("ks-2", None))
        .await
        .unwrap();
    let listed = store.switches().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].id.as_str(), listed[0].seq), ("ks-2", other.seq));
}

/// A pending entry that is not JSON (not written by warden) is left out of the list, and
/// does not hide the others from the loop that sends their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pending_record_is_left_out() {
    let prefix = unique_prefix();
    let store = redis_store(&prefix).await;
    let mut conn = common::raw_redis().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:enfpending"))
        .arg("manual:bad")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let kept = store
        .publish_pending(&write("manual:m-1", "warn", true), 0)
        .await
        .unwrap();
    let listed = store.pending_records().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].write.outbox_id.as_str(), listed[0].seq),
        ("manual:m-1", kept.seq)
    );
}
