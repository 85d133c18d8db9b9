//! The dashboards and alert rules against a real Prometheus (issue: observability,
//! acceptance): the real warden binary runs against the real broker and Redis started by
//! `scripts/test`, a real Prometheus (Debian package `prometheus`) scrapes it every second
//! while the test drives traffic, and then EVERY PromQL expression in `dashboards/*.json`
//! and `deploy/prometheus/alerts.yml` is evaluated through Prometheus's HTTP API: each must
//! parse, and each dashboard panel must return data.
//!
//! Also checked here: the dashboards' shape (uid, tags, template variables and their use),
//! that every metric an expression names is one warden exports (a histogram through its
//! `_bucket`/`_sum`/`_count` series), that the template variable queries find values, that
//! `promtool check rules` accepts the alert file, and that no exported series carries a
//! partner label (CONTRACT §7). Every failure is collected and reported at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chrono::Utc;
use common::stream::Stream;
use common::{Daemon, TestProducer};
use serde_json::{json, Value};
use tempfile::TempDir;

const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
const PROMTOOL_BIN: &str = "/usr/bin/promtool";
const INSTALL_HINT: &str = "install the prometheus package (scripts/test does)";
const DASHBOARDS: [&str; 4] = [
    "warden-fleet.json",
    "warden-pipeline.json",
    "warden-money.json",
    "warden-enforcement.json",
];
const ALERTS: &str = "deploy/prometheus/alerts.yml";

// ----------------------------------------------------------------- prometheus

/// A Prometheus server of the test's own, scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: TempDir,
    agent: ureq::Agent,
}

impl Prometheus {
    /// Starts it scraping `target` (`host:port`) as job `warden`; waits until /-/ready.
    fn start(target: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS_BIN).is_file(),
            "{PROMETHEUS_BIN} not found: {INSTALL_HINT}"
        );
        let dir = tempfile::Builder::new()
            .prefix("warden-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: warden
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"#
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let port = common::free_port();
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS_BIN}: {e}; {INSTALL_HINT}"));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            agent,
        };
        let ready_url = format!("{}/-/ready", prometheus.url);
        let mut exited = None;
        let ready = common::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            exited = prometheus.child.try_wait().ok().flatten();
            exited.is_some()
                || matches!(prometheus.agent.get(&ready_url).call(), Ok(r) if r.status() == 200)
        });
        assert!(
            ready && exited.is_none(),
            "prometheus did not become ready (exit status {exited:?})\n{}",
            prometheus.log()
        );
        prometheus
    }

    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- prometheus log (tail) ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// GET `path` with `params`: the `data` of a `"status": "success"` answer, or why not.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut request = self.agent.get(&format!("{}{path}", self.url));
        for (k, v) in params {
            request = request.query(k, v);
        }
        let response = match request.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("GET {path}: {e}")),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {text}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}, status {}: {} {}",
                body["status"], body["errorType"], body["error"]
            ))
        }
    }

    /// An instant query at "now".
    fn query(&self, promql: &str) -> Result<Value, String> {
        self.api("/api/v1/query", &[("query", promql)])
    }

    /// Whether an instant query returns at least one sample (false on errors too).
    fn has_data(&self, promql: &str) -> bool {
        self.query(promql).is_ok_and(|data| result_len(&data) > 0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples (or series) in a query's `data`; a scalar or string counts as one.
fn result_len(data: &Value) -> usize {
    match data["resultType"].as_str() {
        Some("vector" | "matrix") => data["result"].as_array().map_or(0, Vec::len),
        Some("scalar" | "string") => 1,
        _ => 0,
    }
}

// -------------------------------------------------------------------- traffic

/// Produces one round of traffic: valid usage events, valid invoices and control facts,
/// and records that must be dead-lettered (not JSON, money as a number, wrong key).
fn produce_round(producer: &mut TestProducer, stream: &Stream, round: u64) {
    let now = Utc::now();
    for i in 0..20u64 {
        let partner = format!("p-{:03}", (round * 20 + i) % 50);
        let payload = json!({
            "event_id": format!("e-{round}-{i}"),
            "ts": now,
            "partner_id": partner,
            "integration_id": format!("{partner}-int"),
            "requests": 1 + i,
            "errors": i % 2,
        });
        producer.send(
            &stream.usage,
            Some(&partner),
            &serde_json::to_vec(&payload).unwrap(),
        );
    }
    for i in 0..2u64 {
        let partner = format!("p-{:03}", (round + i) % 50);
        let invoice = json!({
            "invoice_id": format!("inv-{round}-{i}"),
            "ts": now,
            "kind": "paid",
            "partner_id": partner,
            "tenant_id": "t-1",
            "currency": "USD",
            "platform_fee": "10.00",
        });
        producer.send(
            &stream.invoices,
            Some(&partner),
            &serde_json::to_vec(&invoice).unwrap(),
        );
    }
    let partner = format!("p-{:03}", round % 50);
    let fact = json!({
        "type": "partner",
        "partner_id": partner,
        "name": format!("Partner {round}"),
        "tier": "gold",
        "tier_effective_from": "2026-01-01T00:00:00Z",
    });
    producer.send(
        &stream.control,
        Some(&partner),
        &serde_json::to_vec(&fact).unwrap(),
    );
    // Dead letters: not_json (usage), money_as_number and wrong_key (invoices).
    producer.send(&stream.usage, Some(&partner), b"{not json");
    let money_as_number = json!({
        "invoice_id": format!("inv-bad-{round}"), "ts": now, "kind": "paid",
        "partner_id": partner, "tenant_id": "t-1", "currency": "USD", "platform_fee": 10.0,
    });
    producer.send(
        &stream.invoices,
        Some(&partner),
        &serde_json::to_vec(&money_as_number).unwrap(),
    );
    let wrong_key = json!({
        "invoice_id": format!("inv-key-{round}"), "ts": now, "kind": "paid",
        "partner_id": partner, "tenant_id": "t-1", "currency": "USD", "platform_fee": "1.00",
    });
    producer.send(
        &stream.invoices,
        Some("not-the-partner"),
        &serde_json::to_vec(&wrong_key).unwrap(),
    );
    producer.flush();
}

/// Keeps producing rounds (paced, so Prometheus's rate windows see steady increases)
/// until stopped; returns the number of rounds produced.
fn keep_producing(stream: Arc<Stream>, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) {
    let mut producer = TestProducer::new(&stream.brokers);
    while !stop.load(Ordering::SeqCst) {
        let round = rounds.load(Ordering::SeqCst);
        produce_round(&mut producer, &stream, round);
        rounds.store(round + 1, Ordering::SeqCst);
        // Pacing, not a timing assertion.
        thread::sleep(Duration::from_millis(300));
    }
}

// ----------------------------------------------------------------- dashboards

/// One PromQL expression and where it came from.
struct Expr {
    origin: String,
    raw: String,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Grafana's variables replaced by what they stand for when everything is selected.
fn substitute(raw: &str) -> String {
    let mut s = raw.to_owned();
    for (var, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "5m"),
        ("instance", ".*"),
        ("topic", ".*"),
    ] {
        s = s.replace(&format!("${{{var}}}"), value);
        s = s.replace(&format!("${var}"), value);
    }
    s
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> Option<&'a Value> {
    dashboard["templating"]["list"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

/// A variable's query text (Grafana stores it as a string or as `{query: …}`).
fn variable_query(v: &Value) -> Option<&str> {
    v["query"].as_str().or_else(|| v["query"]["query"].as_str())
}

/// Loads every dashboard, checks its shape and returns its panel expressions plus the
/// `label_values(metric, label)` pairs of its query variables.
fn load_dashboards(problems: &mut Vec<String>) -> (Vec<Expr>, Vec<(String, String, String)>) {
    let dir = repo_path("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for name in DASHBOARDS {
        if !files.iter().any(|f| f.ends_with(name)) {
            problems.push(format!("dashboards/{name} is missing"));
        }
    }
    let mut exprs = Vec::new();
    let mut variables = Vec::new();
    let mut uids = BTreeSet::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).expect("read dashboard");
        let d: Value = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{name}: not JSON: {e}"));
                continue;
            }
        };
        let problem_of = |what: String| format!("{name}: {what}");
        if d["schemaVersion"] != 39 {
            problems.push(problem_of(format!(
                "schemaVersion is {}, want 39",
                d["schemaVersion"]
            )));
        }
        match d["uid"].as_str() {
            Some(uid) if !uid.is_empty() => {
                if !uids.insert(uid.to_owned()) {
                    problems.push(problem_of(format!("uid {uid} is not unique")));
                }
            }
            _ => problems.push(problem_of("no uid".into())),
        }
        if d["title"].as_str().is_none_or(str::is_empty) {
            problems.push(problem_of("no title".into()));
        }
        if !d["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "warden"))
        {
            problems.push(problem_of("tags do not include \"warden\"".into()));
        }
        match variable(&d, "datasource") {
            Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
            other => problems.push(problem_of(format!(
                "no `datasource` variable of type datasource (prometheus): {other:?}"
            ))),
        }
        let mut used_vars = Vec::new();
        for (var, want) in [
            ("instance", "label_values(warden_build_info, instance)"),
            ("topic", "label_values(warden_events_total, topic)"),
        ] {
            match variable(&d, var).and_then(variable_query) {
                Some(q) if q.replace(' ', "") == want.replace(' ', "") => {
                    used_vars.push(var);
                    let inner = &want["label_values(".len()..want.len() - 1];
                    let (metric, label) = inner.split_once(", ").unwrap();
                    variables.push((
                        format!("{name} ${var}"),
                        metric.to_owned(),
                        label.to_owned(),
                    ));
                }
                other => problems.push(problem_of(format!(
                    "variable `{var}` query is {other:?}, want {want}"
                ))),
            }
        }
        let mut dashboard_exprs = Vec::new();
        for panel in panels(&d) {
            let title = panel["title"].as_str().unwrap_or("<untitled>");
            if matches!(panel["type"].as_str(), Some("row" | "text")) {
                continue;
            }
            let targets: Vec<&Value> = panel["targets"].as_array().into_iter().flatten().collect();
            if targets.is_empty() {
                problems.push(problem_of(format!("panel {title:?} has no targets")));
            }
            for target in targets {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                let origin = format!("{name} / {title:?} / {ref_id}");
                let ds = if target["datasource"].is_object() {
                    &target["datasource"]
                } else {
                    &panel["datasource"]
                };
                if ds["uid"] != "${datasource}" {
                    problems.push(format!("{origin}: datasource {ds} is not ${{datasource}}"));
                }
                let Some(raw) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                    problems.push(format!("{origin}: no expr"));
                    continue;
                };
                if !raw.contains(r#"instance=~"$instance""#) {
                    problems.push(format!(
                        "{origin}: does not filter by instance=~\"$instance\": {raw}"
                    ));
                }
                dashboard_exprs.push(Expr {
                    origin,
                    raw: raw.to_owned(),
                });
            }
        }
        for var in used_vars {
            if !dashboard_exprs
                .iter()
                .any(|e| e.raw.contains(&format!("${var}")))
            {
                problems.push(format!("{name}: no query uses ${var}"));
            }
        }
        exprs.extend(dashboard_exprs);
    }
    (exprs, variables)
}

/// Every `expr` of every rule in the alert file (checked by promtool too).
fn load_alerts(problems: &mut Vec<String>) -> Vec<Expr> {
    let path = repo_path(ALERTS);
    let Ok(text) = std::fs::read_to_string(&path) else {
        problems.push(format!(
            "{ALERTS} does not exist: the alert rules must be there (groups → rules → expr)"
        ));
        return Vec::new();
    };
    let doc: serde_yaml::Value = match serde_yaml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(format!("{ALERTS}: not YAML: {e}"));
            return Vec::new();
        }
    };
    let mut exprs = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        let group_name = group["name"].as_str().unwrap_or("?");
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let rule_name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?");
            let origin = format!("{ALERTS} / {group_name} / {rule_name}");
            match rule["expr"].as_str() {
                Some(raw) if !raw.trim().is_empty() => exprs.push(Expr {
                    origin,
                    raw: raw.to_owned(),
                }),
                _ => problems.push(format!("{origin}: no expr")),
            }
        }
    }
    if exprs.is_empty() {
        problems.push(format!(
            "{ALERTS}: no rule with an expr under groups → rules"
        ));
    }
    let check = Command::new(PROMTOOL_BIN)
        .args(["check", "rules"])
        .arg(&path)
        .output();
    match check {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "promtool check rules {ALERTS} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => problems.push(format!("cannot run {PROMTOOL_BIN}: {e}; {INSTALL_HINT}")),
    }
    exprs
}

/// Metric names (`warden_…` identifiers outside string literals) an expression uses.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = promql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("warden_") {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// `# TYPE name type` of the exposition: every metric warden exports, with its type.
fn exported_types(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Metric names declared in `src/metrics.rs` (string literals `"warden_…"`), histograms
/// being those named in `HistogramOpts::new(…)`.
fn declared_types(source: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    for (at, _) in source.match_indices("\"warden_") {
        let name = &source[at + 1..];
        let Some(end) = name.find('"') else { continue };
        let name = &name[..end];
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let before = source[..at].trim_end();
        let kind = if before.ends_with("HistogramOpts::new(") {
            "histogram"
        } else {
            "untyped"
        };
        types.insert(name.to_owned(), kind.to_owned());
    }
    types
}

/// Whether `name` is a series of a defined metric.
fn is_exported(name: &str, types: &BTreeMap<String, String>) -> bool {
    if types.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            let kind = types.get(base).map(String::as_str);
            kind == Some("histogram") || (kind == Some("summary") && *suffix != "_bucket")
        })
    })
}

/// Label names of every sample line of an exposition.
fn label_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(open) = line.find('{') else { continue };
        let chars: Vec<char> = line[open + 1..].chars().collect();
        let mut i = 0;
        while i < chars.len() && chars[i] != '}' {
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            names.insert(chars[start..i].iter().collect::<String>().trim().to_owned());
            i += 2; // `="`
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1; // closing quote
            if i < chars.len() && chars[i] == ',' {
                i += 1;
            }
        }
    }
    names
}

#[test]
fn every_dashboard_and_alert_expression_evaluates_against_real_prometheus() {
    // Static checks first: a missing binary or file is reported before any service work.
    assert!(
        Path::new(PROMETHEUS_BIN).is_file(),
        "{PROMETHEUS_BIN} not found: {INSTALL_HINT}"
    );
    let mut problems = Vec::new();
    let (dashboard_exprs, variables) = load_dashboards(&mut problems);
    let alert_exprs = load_alerts(&mut problems);
    assert!(
        !dashboard_exprs.is_empty(),
        "no panel expressions in dashboards/*.json; problems: {problems:#?}"
    );

    let stream = Arc::new(Stream::new("dash"));
    let mut daemon = Daemon::start(&stream.config(&common::redis_url()));
    daemon.wait_ready(Duration::from_secs(60));

    // Traffic flows for the whole scrape period so rate() windows see increases.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let producer = {
        let (stream, stop, rounds) = (Arc::clone(&stream), Arc::clone(&stop), Arc::clone(&rounds));
        thread::spawn(move || keep_producing(stream, stop, rounds))
    };

    let target = daemon
        .base_url()
        .strip_prefix("http://")
        .expect("http base url")
        .to_owned();
    let prometheus = Prometheus::start(&target);

    let scraped = common::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        prometheus.has_data(r#"up{job="warden"} == 1"#)
            && prometheus.has_data("count(warden_events_total) > 0")
    });
    assert!(
        scraped,
        "prometheus never scraped warden at {target}: up = {:?}, targets = {:?}\n{}",
        prometheus.query(r#"up{job="warden"}"#),
        prometheus.api("/api/v1/targets", &[]),
        prometheus.log()
    );
    // Enough scrapes of a moving daemon that every rate window has ≥ 2 differing samples.
    let moving = [
        r#"sum(rate(warden_events_total{outcome="applied"}[1m])) > 0"#,
        r#"sum(rate(warden_events_total{topic="invoices",outcome="applied"}[1m])) > 0"#,
        "sum(rate(warden_dead_letters_total[1m])) > 0",
        "sum(rate(warden_event_apply_seconds_count[1m])) > 0",
        "sum(rate(warden_control_facts_total[1m])) > 0",
        "sum(rate(warden_store_op_seconds_count[1m])) > 0",
    ];
    let mut pending: Vec<&str> = moving.to_vec();
    let flowing = common::wait_until(Duration::from_secs(120), Duration::from_secs(1), || {
        pending.retain(|q| !prometheus.has_data(q));
        pending.is_empty()
    });
    assert!(
        flowing,
        "rates never became non-zero after {} traffic rounds: {pending:#?}\n{}",
        rounds.load(Ordering::SeqCst),
        daemon.output()
    );

    // The metrics warden defines (src/metrics.rs) and exports now that partitions are
    // assigned and traffic flowed; no series takes a partner id as a label (CONTRACT §7).
    let (status, body) = daemon.request("GET", "/metrics", None, None);
    assert_eq!(status, 200, "GET /metrics -> {status}");
    let exposition = body.as_str().expect("/metrics is text").to_owned();
    let mut types = declared_types(
        &std::fs::read_to_string(repo_path("src/metrics.rs")).expect("read src/metrics.rs"),
    );
    let exported = exported_types(&exposition);
    assert!(
        exported.contains_key("warden_events_total"),
        "/metrics lacks warden_events_total:\n{exposition}"
    );
    types.extend(exported);
    let labels = label_names(&exposition);
    assert!(
        labels.contains("topic"),
        "label parsing found no `topic`: {labels:?}"
    );
    for forbidden in ["partner", "partner_id"] {
        assert!(
            !labels.contains(forbidden),
            "/metrics has a `{forbidden}` label (CONTRACT §7 forbids per-partner series): {labels:?}"
        );
    }

    // Template variables find values.
    for (origin, metric, label) in &variables {
        match prometheus.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", metric)],
        ) {
            Ok(values) if values.as_array().is_some_and(|v| !v.is_empty()) => {}
            Ok(values) => problems.push(format!(
                "{origin}: label_values({metric}, {label}) found no values: {values}"
            )),
            Err(e) => problems.push(format!("{origin}: label_values({metric}, {label}): {e}")),
        }
    }

    // Every expression: only exported metrics, parses, and (dashboards) returns data.
    let all = dashboard_exprs
        .iter()
        .map(|e| (e, true))
        .chain(alert_exprs.iter().map(|e| (e, false)));
    let mut evaluated = 0;
    for (expr, needs_data) in all {
        let promql = substitute(&expr.raw);
        if promql.contains('$') {
            problems.push(format!(
                "{}: unknown template variable left in {promql:?}",
                expr.origin
            ));
            continue;
        }
        let unknown: Vec<String> = metric_names(&promql)
            .into_iter()
            .filter(|n| !is_exported(n, &types))
            .collect();
        if !unknown.is_empty() {
            problems.push(format!(
                "{}: metrics neither defined in src/metrics.rs nor exported: {unknown:?} in {promql}",
                expr.origin
            ));
        }
        evaluated += 1;
        match prometheus.query(&promql) {
            Ok(data) if needs_data && result_len(&data) == 0 => {
                problems.push(format!("{}: no data for {promql}", expr.origin))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: {e}\n    query: {promql}", expr.origin)),
        }
    }

    stop.store(true, Ordering::SeqCst);
    producer.join().expect("traffic thread panicked");

    assert!(
        problems.is_empty(),
        "{} problem(s) over {evaluated} expressions ({} dashboard, {} alert):\n{}",
        problems.len(),
        dashboard_exprs.len(),
        alert_exprs.len(),
        problems.join("\n")
    );
}

#[test]
fn metric_name_and_label_parsing() {
    let names = metric_names(
        r#"sum by (le) (rate(warden_a_bucket{job="warden_not_a_metric", x='warden_y'}[1m])) / warden_b"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["warden_a_bucket", "warden_b"]
    );
    let labels = label_names("# HELP x y\nx{a=\"1,\\\"b=2\",c=\"\"} 1\ny 2\n");
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), ["a", "c"]);
    let mut types = exported_types("# TYPE warden_h histogram\n# TYPE warden_c counter\n");
    types.extend(declared_types(
        "HistogramOpts::new(\n \"warden_d_seconds\", \"help\")\ncounter(\"warden_e_total\", \"h\")",
    ));
    assert!(is_exported("warden_d_seconds_bucket", &types));
    assert!(is_exported("warden_e_total", &types));
    assert!(!is_exported("warden_e_total_bucket", &types));
    assert!(is_exported("warden_h_bucket", &types));
    assert!(is_exported("warden_h_count", &types));
    assert!(is_exported("warden_c", &types));
    assert!(!is_exported("warden_c_bucket", &types));
    assert!(!is_exported("warden_missing", &types));
    assert_eq!(
        substitute(r#"rate(x{instance=~"$instance",topic=~"${topic}"}[$__rate_interval])"#),
        r#"rate(x{instance=~".*",topic=~".*"}[1m])"#
    );
}
