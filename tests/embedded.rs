//! The README's first command: the embedded default runs with no Kafka or Redis (an
//! in-process cluster, the in-memory store, the simulator) and serves the admin API.

mod common;

use std::time::Duration;

use common::Daemon;

fn shipped_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/warden.toml")).unwrap()
}

fn counter(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn embedded_default_serves_partners_metrics_and_stops_cleanly() {
    // Port 0: the test must not depend on 8080 being free.
    let mut daemon = Daemon::start_with_env(
        &shipped_config(),
        &[("WARDEN_ADMIN__LISTEN", "127.0.0.1:0")],
    );
    daemon.wait_ready(Duration::from_secs(60));
    let token = daemon
        .stdout_lines()
        .iter()
        .find_map(|l| {
            l.strip_prefix("admin token (security): ")
                .map(str::to_owned)
        })
        .expect("the embedded mode prints a generated token");
    assert!(token.len() >= 32, "token too short: {token}");

    // The simulator's traffic reaches the actors.
    let mut applied = 0;
    let flowing = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let (_, m) = daemon.request("GET", "/metrics", None, None);
        applied = counter(
            m.as_str().unwrap_or_default(),
            "warden_events_total{outcome=\"applied\",topic=\"usage\"}",
        );
        applied > 1_000
    });
    assert!(flowing, "simulated usage not applied (applied = {applied})");

    // The busiest simulated partner is known, with live usage totals.
    let view = daemon.get_json_with_token("/v1/partners/p-00000", Some(&token));
    assert_eq!(view["partner_id"], "p-00000");
    assert!(
        view["usage"]["requests"].as_u64().unwrap() > 0,
        "{view}\n{}",
        daemon.output()
    );
    assert!(view["last_seen"].is_string(), "{view}");
    assert_eq!(view["tier"], "platinum");

    // The list is bounded and worst level first.
    let list = daemon.get_json_with_token("/v1/partners?limit=5", Some(&token));
    let items = list["partners"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 5, "{list}");
    let rank = |l: &str| {
        ["ok", "warn", "throttle", "suspend", "terminated", "killed"]
            .iter()
            .position(|x| *x == l)
            .unwrap()
    };
    let levels: Vec<usize> = items
        .iter()
        .map(|p| rank(p["enforcement"]["level"].as_str().unwrap()))
        .collect();
    assert!(
        levels.windows(2).all(|w| w[0] >= w[1]),
        "not worst first: {levels:?}"
    );

    // No token, no partner data.
    let (status, _) = daemon.request("GET", "/v1/partners/p-00000", None, None);
    assert_eq!(status, 401);
    let (status, _) = daemon.request("GET", "/v1/partners/p-00000", Some("wdn_not-a-token"), None);
    assert_eq!(status, 401);
    let (status, _) = daemon.request("GET", "/v1/partners/never-seen", Some(&token), None);
    assert_eq!(status, 404);

    let (status, _) = daemon.request("GET", "/healthz", None, None);
    assert_eq!(status, 200);

    // Admin API requests are counted by route pattern and status, never by raw path;
    // apply latency quantiles come from hdrhistogram; no series names a partner.
    let (_, m) = daemon.request("GET", "/metrics", None, None);
    let m = m.as_str().unwrap().to_owned();
    assert_eq!(
        counter(
            &m,
            "warden_admin_requests_total{route=\"/v1/partners/{id}\",status=\"401\"}"
        ),
        2
    );
    assert_eq!(
        counter(
            &m,
            "warden_admin_requests_total{route=\"/v1/partners/{id}\",status=\"404\"}"
        ),
        1
    );
    assert!(
        counter(
            &m,
            "warden_admin_requests_total{route=\"/v1/partners/{id}\",status=\"200\"}"
        ) >= 1
    );
    assert!(
        m.contains("warden_event_apply_latency_seconds{quantile=\"0.99\"}"),
        "no latency quantiles"
    );
    assert!(
        !m.contains("partner_id="),
        "a partner id label appeared without the opt-in"
    );

    let status = daemon.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status:?}\n{}",
        daemon.output()
    );
}

#[test]
fn each_start_generates_a_new_token() {
    let tokens: Vec<String> = (0..2)
        .map(|_| {
            let mut d = Daemon::start_with_env(
                &shipped_config(),
                &[
                    ("WARDEN_ADMIN__LISTEN", "127.0.0.1:0"),
                    ("WARDEN_SIMULATOR__ENABLED", "false"),
                ],
            );
            // The token line may come just after the `listening on` line `start` waits for.
            let token = || {
                d.stdout_lines().iter().find_map(|l| {
                    l.strip_prefix("admin token (security): ")
                        .map(str::to_owned)
                })
            };
            let printed =
                common::wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
                    token().is_some()
                });
            assert!(printed, "no token line");
            let t = token().unwrap();
            assert!(d.terminate().success());
            t
        })
        .collect();
    assert_ne!(tokens[0], tokens[1]);
}

#[test]
fn the_top_partners_view_is_opt_in_and_bounded() {
    let mut daemon = Daemon::start_with_env(
        &shipped_config(),
        &[
            ("WARDEN_ADMIN__LISTEN", "127.0.0.1:0"),
            ("WARDEN_METRICS__TOP_PARTNERS", "5"),
            ("WARDEN_METRICS__TOP_PARTNERS_INTERVAL", "500ms"),
        ],
    );
    daemon.wait_ready(Duration::from_secs(60));
    let mut series = Vec::new();
    let shown = common::wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
        let (_, m) = daemon.request("GET", "/metrics", None, None);
        series = m
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("warden_partner_top_requests{"))
            .map(str::to_owned)
            .collect();
        series.len() == 5 && series.iter().any(|l| l.contains("partner_id=\"p-00000\""))
    });
    assert!(shown, "top-5 view: {series:#?}\n{}", daemon.output());
    assert!(daemon.terminate().success());
}
