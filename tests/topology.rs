//! CONTRACT §1: the keyed topics must be co-partitioned and control must have exactly one
//! partition; otherwise the daemon refuses to start with exit code 2 (a configuration
//! error), naming the problem.

mod common;

use std::time::Duration;

use common::Daemon;

fn config(brokers: &str, usage: &str, invoices: &str, control: &str, redis: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.topics]
usage = "{usage}"
invoices = "{invoices}"
control = "{control}"
attribution = "{attribution}"
enforcement = "{enforcement}"
audit = "{audit}"
deadletter = "{deadletter}"
[store]
backend = "redis"
redis_url = "{redis}"
key_prefix = "{prefix}"
[admin]
listen = "127.0.0.1:0"
"#,
        group = common::unique("topo-group"),
        attribution = common::unique("topo.attribution"),
        enforcement = common::unique("topo.enforcement"),
        audit = common::unique("topo.audit"),
        deadletter = common::unique("topo.deadletter"),
        prefix = common::unique("topo"),
    )
}

fn exit_of(config: &str) -> (Option<i32>, String) {
    let mut d = Daemon::spawn(config);
    let status = d.wait_exit(Duration::from_secs(60));
    (status.and_then(|s| s.code()), d.output())
}

/// Creates usage, invoices and control with the given partition counts (`None` = leave
/// the topic missing), starts the daemon on them and returns its exit code and output.
fn start_on(partitions: Option<(i32, i32, i32)>) -> (Option<i32>, String) {
    let brokers = common::brokers();
    let (usage, invoices, control) = (
        common::unique("topo.usage"),
        common::unique("topo.invoices"),
        common::unique("topo.control"),
    );
    if let Some((u, i, c)) = partitions {
        common::create_topics(&brokers, &[(&usage, u), (&invoices, i), (&control, c)]);
    }
    exit_of(&config(
        &brokers,
        &usage,
        &invoices,
        &control,
        &common::redis_url(),
    ))
}

#[test]
fn keyed_topics_that_are_not_co_partitioned_refuse_to_start() {
    let (code, output) = start_on(Some((4, 3, 1)));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("co-partitioned"), "{output}");
}

#[test]
fn a_control_topic_with_several_partitions_refuses_to_start() {
    let (code, output) = start_on(Some((2, 2, 2)));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("exactly 1 partition"), "{output}");
}

#[test]
fn missing_input_topics_refuse_to_start_unless_creation_is_on() {
    let (code, output) = start_on(None);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("create_input_topics"), "{output}");
}
