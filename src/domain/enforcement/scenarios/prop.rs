//! Property: whatever the usage, the health ladder of every target moves one step at a
//! time and never twice within `dwell`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    Usage {
        gap: i64,
        integration: u8,
        requests: u64,
        error_pct: u64,
        auth: u64,
    },
    Tick {
        gap: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0i64..90, 0u8..3, 0u64..20_000, 0u64..=100, 0u64..400).prop_map(
            |(gap, integration, requests, error_pct, auth)| Step::Usage {
                gap,
                integration,
                requests,
                error_pct,
                auth,
            }
        ),
        1 => (0i64..900).prop_map(|gap| Step::Tick { gap }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_ladder_never_skips_a_step_nor_moves_twice_within_dwell(
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let mut sim = Sim::new(health_policy());
        let mut now = 0;
        for s in &steps {
            match *s {
                Step::Usage { gap, integration, requests, error_pct, auth } => {
                    now += gap;
                    let errors = requests * error_pct / 100;
                    sim.event(now, &format!("i-{integration}"), requests, errors, auth);
                }
                Step::Tick { gap } => {
                    now += gap;
                    sim.tick(now);
                }
            }
        }
        let dwell = chrono::Duration::from_std(sim.policy.dwell).unwrap();
        let mut last: BTreeMap<(Scope, String), (Level, DateTime<Utc>)> = BTreeMap::new();
        for d in &sim.log {
            prop_assert!(d.level.is_ladder_level());
            let key = (d.scope, d.id.clone());
            let (level, at) = last.get(&key).copied().unwrap_or((Level::Ok, DateTime::<Utc>::MIN_UTC));
            prop_assert_eq!(d.previous, level, "decision chain broken: {:?}", d);
            let one_step = d.previous.step_up() == Some(d.level) || d.previous.step_down() == Some(d.level);
            prop_assert!(one_step, "skipped a step: {:?}", d);
            prop_assert!(d.at - at >= dwell, "moved within dwell: {:?} after {}", d, at);
            last.insert(key, (d.level, d.at));
        }
    }
}
