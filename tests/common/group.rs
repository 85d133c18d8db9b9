//! Consumer-group helpers for tests with several daemons or crashes: metric sums, waiting
//! for the group to settle, restarting a member after a crash.

use std::time::Duration;

use super::stream::PARTITIONS;
use super::Daemon;

/// The sum of every `/metrics` sample whose line starts with `prefix`.
pub fn metric(daemon: &Daemon, prefix: &str) -> f64 {
    let (_, m) = daemon.request("GET", "/metrics", None, None);
    m.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the daemons between them own all partitions, each at least one.
pub fn wait_assigned(daemons: &[&Daemon]) {
    assert!(
        settles(daemons, Duration::from_secs(90)),
        "the consumer group did not settle"
    );
}

pub fn settles(daemons: &[&Daemon], within: Duration) -> bool {
    super::wait_until(within, Duration::from_millis(200), || {
        let owned: Vec<f64> = daemons
            .iter()
            .map(|d| metric(d, "warden_partitions_assigned "))
            .collect();
        owned.iter().all(|n| *n > 0.0) && owned.iter().sum::<f64>() == PARTITIONS as f64
    })
}

/// Starts a daemon after a crash and waits for it to own every partition (the dead
/// member's session must expire first). tansu 0.6 sometimes never completes the join that
/// follows a member's SIGKILL shortly after its assignment (a broker issue; Kafka evicts
/// the member and rebalances): then this member is crashed too and another one started —
/// one more crash, which the exactness check must survive anyway. At most three tries.
pub fn restart_until_assigned(config: &str) -> Daemon {
    for attempt in 1..=3 {
        let mut daemon = Daemon::start(config);
        if settles(&[&daemon], Duration::from_secs(45)) {
            return daemon;
        }
        eprintln!("restart attempt {attempt}: the group did not assign partitions; crashing this member too");
        daemon.kill9();
    }
    panic!("the consumer group never settled after three restarts");
}
