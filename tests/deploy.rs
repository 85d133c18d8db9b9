//! The deployment artefacts under deploy/ (issue "Observability and deployment", item 3,
//! acceptance 2 and 4): the Prometheus alerts load and their unit tests pass under
//! `promtool`, the alerts use only metrics the daemon exports, every Kubernetes manifest
//! is well formed and consistent with the daemon (probes, port, config, user), the
//! embedded configurations pass `warden check-config`, and the compose stack mounts
//! files that exist.
//!
//! kubeconform is not installable here, so the manifest checks below are the schema
//! check: parse, required fields, and cross-references between the objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use warden::config::{Config, Role};

const PROMTOOL_MISSING: &str =
    "promtool not found on PATH: install the prometheus package (scripts/test does)";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

// ---- promtool ----------------------------------------------------------------------

fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{PROMTOOL_MISSING}"))
}

/// Runs promtool in `dir` (rule and test files name their neighbours relatively).
fn promtool_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run promtool {args:?}: {e}"))
}

fn alerts() -> Value {
    yaml(&deploy().join("prometheus/alerts.yml"))
}

/// Every alerting rule of alerts.yml, in file order.
fn alert_rules(alerts: &Value) -> Vec<&Value> {
    seq(&alerts["groups"], "groups")
        .iter()
        .flat_map(|g| seq(&g["rules"], "rules"))
        .collect()
}

#[test]
fn promtool_checks_the_alert_rules() {
    let doc = alerts();
    let rules = alert_rules(&doc);
    assert!(rules.iter().all(|r| r["alert"].is_string()), "only alerts");
    let out = promtool_in(repo(), &["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{}",
        text(&out)
    );
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let out = promtool_in(
        &deploy().join("prometheus"),
        &["test", "rules", "alerts_test.yml"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

/// (alert → (has a case where it fires, has a case where it must not)).
fn unit_test_coverage() -> BTreeMap<String, (bool, bool)> {
    let tests = yaml(&deploy().join("prometheus/alerts_test.yml"));
    assert_eq!(seq(&tests["rule_files"], "rule_files"), ["alerts.yml"]);
    let mut coverage: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in seq(&tests["tests"], "tests") {
        assert!(!seq(&test["input_series"], "input_series").is_empty());
        for case in seq(&test["alert_rule_test"], "alert_rule_test") {
            let name = str_of(&case["alertname"], "alertname").to_owned();
            let fires = !seq(&case["exp_alerts"], "exp_alerts").is_empty();
            let entry = coverage.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    coverage
}

#[test]
fn every_alert_has_unit_tests_where_it_fires_and_where_it_stays_quiet() {
    let coverage = unit_test_coverage();
    let doc = alerts();
    for rule in alert_rules(&doc) {
        let name = str_of(&rule["alert"], "alert");
        let (fires, quiet) = coverage.get(name).copied().unwrap_or_default();
        assert!(fires, "no unit test in alerts_test.yml where {name} fires");
        assert!(
            quiet,
            "no unit test in alerts_test.yml where {name} stays quiet"
        );
    }
    for name in coverage.keys() {
        let known = alert_rules(&doc)
            .iter()
            .any(|r| r["alert"].as_str() == Some(name));
        assert!(
            known,
            "alerts_test.yml tests {name}, which alerts.yml lacks"
        );
    }
}

/// Runs the unit tests against a copy of alerts.yml with `from` replaced by `to` and
/// returns promtool's output; the mutation must change the file.
fn unit_tests_with_mutation(from: &str, to: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let src = deploy().join("prometheus");
    let rules = read(&src.join("alerts.yml"));
    assert!(
        rules.contains(from),
        "alerts.yml no longer contains {from:?}"
    );
    std::fs::write(dir.path().join("alerts.yml"), rules.replacen(from, to, 1)).unwrap();
    std::fs::copy(
        src.join("alerts_test.yml"),
        dir.path().join("alerts_test.yml"),
    )
    .unwrap();
    promtool_in(dir.path(), &["test", "rules", "alerts_test.yml"])
}

/// Names of the promtool unit test groups that failed (promtool prints them on stderr).
fn failed_unit_tests(out: &Output) -> BTreeSet<String> {
    text(out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: "))
        .map(|n| n.trim_end_matches(',').to_owned())
        .collect()
}

#[test]
fn the_unit_tests_catch_a_lag_alert_that_fires_on_a_quiet_series_or_never() {
    // Dropping the "still growing" condition must make the catching-up series fire.
    let out = unit_tests_with_mutation(
        "(deriv(warden_consumer_lag[10m])) > 0",
        "(deriv(warden_consumer_lag[10m])) > -1e9",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        failed_unit_tests(&out),
        BTreeSet::from([
            "quiet lag does not fire (small and jittering, or large but catching up)".to_owned()
        ]),
        "{}",
        text(&out)
    );
    // A threshold nothing reaches must make the far-behind case fail.
    let out = unit_tests_with_mutation(
        "sum by (namespace, job, instance) (warden_consumer_lag) > 100000",
        "sum by (namespace, job, instance) (warden_consumer_lag) > 1e12",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        failed_unit_tests(&out),
        BTreeSet::from(["lag far behind fires even when flat".to_owned()]),
        "{}",
        text(&out)
    );
}

#[test]
fn the_unit_tests_catch_a_dead_letter_alert_that_ignores_the_share_of_input() {
    let out = unit_tests_with_mutation(") > 0.01", ") > 0.0001");
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        failed_unit_tests(&out),
        BTreeSet::from([
            "quiet dead letters do not fire (a trickle, or a small share of heavy traffic)"
                .to_owned()
        ]),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("alertname: WardenDeadLettersSpiking, time: 10m"));
}

#[test]
fn promtool_checks_the_example_prometheus_config() {
    let out = promtool_in(
        repo(),
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SUCCESS: 1 rule files found"),
        "{}",
        text(&out)
    );

    let config = yaml(&deploy().join("prometheus/prometheus.yml"));
    assert_eq!(seq(&config["rule_files"], "rule_files"), ["alerts.yml"]);
    let warden = seq(&config["scrape_configs"], "scrape_configs")
        .iter()
        .find(|s| s["job_name"].as_str() == Some("warden"))
        .expect("a scrape job named warden (the alerts select job=\"warden\")");
    assert_eq!(warden["metrics_path"].as_str(), Some("/metrics"));
    let targets: Vec<&str> = seq(&warden["static_configs"], "static_configs")
        .iter()
        .flat_map(|s| seq(&s["targets"], "targets"))
        .map(|t| str_of(t, "target"))
        .collect();
    assert_eq!(targets, ["warden:8080"]);
}

// ---- alert expressions and annotations -----------------------------------------------

/// Metric names exported by src/metrics.rs: its `"warden_…"` string literals.
fn exported_metrics() -> BTreeSet<String> {
    let source = read(&repo().join("src/metrics.rs"));
    let mut names = BTreeSet::new();
    for (i, _) in source.match_indices("\"warden_") {
        let rest = &source[i + 1..];
        let end = rest.find('"').expect("closing quote");
        let name = &rest[..end];
        if name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            names.insert(name.to_owned());
        }
    }
    assert!(names.contains("warden_events_total"), "{names:?}");
    names
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OTHER_KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Index just past the bracket closing the one at `open`, skipping quoted strings.
fn skip_bracketed(chars: &[char], open: usize) -> usize {
    let (start, end) = (
        chars[open],
        match chars[open] {
            '{' => '}',
            '[' => ']',
            _ => ')',
        },
    );
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i) - 1,
            c if c == start => depth += 1,
            c if c == end => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {start} in {}", chars.iter().collect::<String>())
}

/// Index just past the string literal starting at `open`.
fn skip_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 1,
            c if c == quote => return i + 1,
            _ => {}
        }
        i += 1;
    }
    panic!(
        "unterminated string in {}",
        chars.iter().collect::<String>()
    )
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (in `{…}` or `by (…)`), numbers or durations.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' | '[' => i = skip_bracketed(&chars, i),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let after = next_non_space(i);
                let call = chars.get(after) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    if call {
                        i = skip_bracketed(&chars, after);
                    }
                } else if !call
                    && !AGGREGATIONS.contains(&word.as_str())
                    && !OTHER_KEYWORDS.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_promql_scanner_finds_metric_names_only() {
    let names = promql_metric_names(
        r#"sum by (namespace, job) (rate(warden_events_total{outcome="dead_letter",x="}"}[5m] offset 1m)) > 1e3
           and on (job) max without (pod) (up) == 1 or absent(up{job="warden"}) unless foo:bar_ratio"#,
    );
    let expected = ["foo:bar_ratio", "up", "warden_events_total"];
    assert_eq!(names.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn alerts_use_only_exported_metrics() {
    let exported = exported_metrics();
    let known = |name: &str| {
        name == "up"
            || exported.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exported.contains(base))
            })
    };
    let doc = alerts();
    for rule in alert_rules(&doc) {
        let name = str_of(&rule["alert"], "alert");
        let expr = str_of(&rule["expr"], "expr");
        let used = promql_metric_names(expr);
        assert!(!used.is_empty(), "{name}: no metric in {expr}");
        for metric in &used {
            assert!(
                known(metric),
                "{name} uses {metric}, which src/metrics.rs does not export"
            );
        }
    }
}

#[test]
fn the_required_alerts_exist_with_summary_description_and_a_runbook_section() {
    let runbook = read(&deploy().join("RUNBOOK.md"));
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let doc = alerts();
    let rules = alert_rules(&doc);
    let mut required = vec![
        "WardenConsumerLagGrowing",
        "WardenDeadLettersSpiking",
        "WardenStoreErrors",
        "WardenStoreLost",
        "WardenNoEvents",
        "WardenNotReady",
        "WardenFencedWrites",
        "WardenDown",
    ];
    if exported_metrics().contains("warden_kill_switches_active") {
        required.push("WardenKillSwitchActive");
    }
    let names: BTreeSet<&str> = rules.iter().map(|r| str_of(&r["alert"], "alert")).collect();
    for name in &required {
        assert!(names.contains(name), "alerts.yml lacks {name}");
    }
    for rule in &rules {
        let name = str_of(&rule["alert"], "alert");
        let annotations = &rule["annotations"];
        for key in ["summary", "description", "runbook"] {
            let value = annotations[key].as_str().unwrap_or_default();
            assert!(!value.trim().is_empty(), "{name}: no {key} annotation");
        }
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        let link = str_of(&annotations["runbook"], "runbook");
        let anchor = name.to_ascii_lowercase();
        assert_eq!(link, format!("deploy/RUNBOOK.md#{anchor}"), "{name}");
        assert!(
            headings.contains(&anchor),
            "deploy/RUNBOOK.md has no `## {name}` section"
        );
    }
    let lag = rules
        .iter()
        .find(|r| r["alert"].as_str() == Some("WardenConsumerLagGrowing"))
        .unwrap();
    assert!(
        str_of(&lag["expr"], "expr").contains("deriv(warden_consumer_lag["),
        "the lag alert watches the trend"
    );
}

// ---- Kubernetes ------------------------------------------------------------------------

fn k8s_dir() -> PathBuf {
    deploy().join("k8s")
}

/// Every document of every deploy/k8s/*.yaml, keyed by kind (one object per kind here).
fn manifests() -> BTreeMap<String, (PathBuf, Value)> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "{files:?}");
    for path in files {
        let text = read(&path);
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = str_of(&value["kind"], "kind").to_owned();
            str_of(&value["apiVersion"], "apiVersion");
            let name = str_of(&value["metadata"]["name"], "metadata.name");
            assert!(!name.is_empty(), "{}", path.display());
            assert!(
                value["metadata"]["namespace"].is_null(),
                "{}: manifests are namespace-agnostic",
                path.display()
            );
            let previous = out.insert(kind.clone(), (path.clone(), value));
            assert!(previous.is_none(), "two objects of kind {kind}");
        }
    }
    out
}

fn object(all: &BTreeMap<String, (PathBuf, Value)>, kind: &str, api: &str) -> Value {
    let (path, v) = all
        .get(kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/k8s"));
    assert_eq!(v["apiVersion"].as_str(), Some(api), "{}", path.display());
    v.clone()
}

fn configmap_toml(all: &BTreeMap<String, (PathBuf, Value)>) -> String {
    let cm = object(all, "ConfigMap", "v1");
    str_of(&cm["data"]["warden.toml"], "ConfigMap data warden.toml").to_owned()
}

/// The Secret's stringData as environment variables.
fn secret_env(all: &BTreeMap<String, (PathBuf, Value)>) -> Vec<(String, String)> {
    let secret = object(all, "Secret", "v1");
    secret["stringData"]
        .as_mapping()
        .expect("Secret stringData")
        .iter()
        .map(|(k, v)| (str_of(k, "key").to_owned(), str_of(v, "value").to_owned()))
        .collect()
}

/// `warden check-config --config FILE` with exactly `env` as WARDEN_ variables.
fn check_config(path: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("check-config").arg("--config").arg(path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WARDEN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("run warden check-config")
}

fn pod_labels(deployment: &Value) -> &serde_yaml::Mapping {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod template labels")
}

/// Whether every `matchLabels` (or plain selector) entry is among `labels`.
fn selects(selector: &Value, labels: &serde_yaml::Mapping) -> bool {
    let wanted = selector
        .as_mapping()
        .expect("a selector mapping")
        .iter()
        .collect::<Vec<_>>();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(*k) == Some(*v))
}

#[test]
fn every_manifest_parses_with_api_version_kind_and_name_and_kustomize_lists_them() {
    let all = manifests();
    let kinds: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Kustomization",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Secret",
        "Service",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/k8s: {kinds:?}");
    }
    let kustomization = object(&all, "Kustomization", "kustomize.config.k8s.io/v1beta1");
    let listed: BTreeSet<String> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect();
    let files: BTreeSet<String> = all
        .values()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources vs deploy/k8s");
}

#[test]
fn the_deployment_probes_runs_as_non_root_and_mounts_config_and_secret() {
    let all = manifests();
    let deployment = object(&all, "Deployment", "apps/v1");
    let config = Config::from_toml_str(&configmap_toml(&all), "ConfigMap warden.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let listen_port: u16 = config
        .admin
        .listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("admin.listen port");
    assert!(
        config.admin.listen.starts_with("0.0.0.0:"),
        "reachable by probes"
    );

    let spec = &deployment["spec"]["template"]["spec"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels(&deployment)
    ));
    let containers = seq(&spec["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The admin port, by name and number.
    let ports = seq(&c["ports"], "ports");
    let port_of = |v: &Value| -> u64 {
        match v {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => ports
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => panic!("probe port {other:?}"),
        }
    };
    let http = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("a container port named http");
    assert_eq!(http["containerPort"].as_u64(), Some(u64::from(listen_port)));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_of(&get["port"]), u64::from(listen_port), "{probe}");
    }
    if !c["startupProbe"].is_null() {
        assert_eq!(
            c["startupProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
    }

    // The command the image and the docs name.
    let argv: Vec<&str> = seq(&c["command"], "command")
        .iter()
        .chain(seq(&c["args"], "args"))
        .map(|v| str_of(v, "argv"))
        .collect();
    assert_eq!(
        argv,
        ["warden", "run", "--config", "/etc/warden/warden.toml"]
    );

    // Non-root, read-only root filesystem, no privilege escalation.
    let pod_sc = &spec["securityContext"];
    let sc = &c["securityContext"];
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or(pod_sc["runAsNonRoot"].as_bool());
    assert_eq!(non_root, Some(true));
    let uid = sc["runAsUser"]
        .as_u64()
        .or(pod_sc["runAsUser"].as_u64())
        .expect("runAsUser");
    assert_eq!(uid, 10001, "the image's user (deploy/Dockerfile)");
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(seq(&sc["capabilities"]["drop"], "drop"), ["ALL"]);

    // Resources: requests and limits for CPU and memory.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !c["resources"][kind][resource].is_null(),
                "resources.{kind}.{resource}"
            );
        }
    }

    // Longer than the daemon's own drain.
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > config.runtime.shutdown_grace,
        "terminationGracePeriodSeconds {grace} <= shutdown_grace {:?}",
        config.runtime.shutdown_grace
    );

    // /etc/warden/warden.toml comes from the ConfigMap's warden.toml key.
    let cm_name = object(&all, "ConfigMap", "v1")["metadata"]["name"].clone();
    let mount = seq(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/etc/warden"))
        .expect("a volume mounted at /etc/warden");
    let volume = seq(&spec["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the /etc/warden volume");
    assert_eq!(volume["configMap"]["name"], cm_name);
    let items = seq(&volume["configMap"]["items"], "items");
    assert!(items
        .iter()
        .any(|i| i["key"].as_str() == Some("warden.toml")
            && i["path"].as_str() == Some("warden.toml")));

    // The tokens Secret reaches the container's environment.
    let secret_name = object(&all, "Secret", "v1")["metadata"]["name"].clone();
    let from_secret = seq(&c["envFrom"], "envFrom")
        .iter()
        .any(|e| e["secretRef"]["name"] == secret_name);
    assert!(from_secret, "envFrom the Secret {secret_name:?}");
}

#[test]
fn the_configmap_config_passes_check_config_alone_and_with_the_secret() {
    let all = manifests();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, configmap_toml(&all)).unwrap();

    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let env = secret_env(&all);
    assert!(
        env.iter().any(|(k, _)| k == "WARDEN_ADMIN__TOKENS"),
        "{env:?}"
    );
    let out = check_config(&path, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The Secret really configures the tokens: read through the same loader...
    let config = Config::load(&path, env.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.admin.tokens.len(), 1);
    assert_eq!(config.admin.tokens[0].roles, [Role::Security]);
    assert_eq!(config.admin.tokens[0].sha256.len(), 64);
    assert!(!config.admin.generate_token && !config.simulator.enabled);
    assert!(!config.kafka.embedded);
    // ...and a bad hash in it is reported against the variable, exit 2.
    let bad: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "WARDEN_ADMIN__TOKENS" => v.replace(&config.admin.tokens[0].sha256, "nothex"),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    let out = check_config(&path, &bad);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("env WARDEN_ADMIN__TOKENS: admin.tokens[0].sha256"),
        "{}",
        text(&out)
    );
}

#[test]
fn service_monitor_pdb_hpa_and_rules_agree_with_the_deployment() {
    let all = manifests();
    let deployment = object(&all, "Deployment", "apps/v1");
    let labels = pod_labels(&deployment);
    let deployment_name = str_of(&deployment["metadata"]["name"], "name");
    let config = Config::from_toml_str(&configmap_toml(&all), "ConfigMap").unwrap();

    let service = object(&all, "Service", "v1");
    assert!(selects(&service["spec"]["selector"], labels));
    let port = seq(&service["spec"]["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("a Service port named http");
    assert_eq!(port["port"].as_u64(), Some(8080));
    assert!(
        matches!(
            &port["targetPort"],
            Value::String(s) if s == "http"
        ) || port["targetPort"].as_u64() == Some(8080)
    );
    // The ServiceMonitor's job label is the Service name; the alerts select job="warden".
    assert_eq!(service["metadata"]["name"].as_str(), Some("warden"));

    let monitor = object(&all, "ServiceMonitor", "monitoring.coreos.com/v1");
    let service_labels = service["metadata"]["labels"].as_mapping().unwrap();
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        service_labels
    ));
    let endpoints = seq(&monitor["spec"]["endpoints"], "endpoints");
    assert_eq!(endpoints[0]["port"].as_str(), Some("http"));
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));

    let pdb = object(&all, "PodDisruptionBudget", "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));

    let hpa = object(&all, "HorizontalPodAutoscaler", "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["name"].as_str(), Some(deployment_name));
    let (min, max) = (
        hpa["spec"]["minReplicas"].as_u64().unwrap(),
        hpa["spec"]["maxReplicas"].as_u64().unwrap(),
    );
    assert!(1 <= min && min <= max, "{min}..{max}");
    assert!(
        max <= config.kafka.partitions as u64,
        "replicas beyond kafka.partitions ({}) own nothing",
        config.kafka.partitions
    );
    let exported = exported_metrics();
    let lag_metric = seq(&hpa["spec"]["metrics"], "metrics")
        .iter()
        .find_map(|m| {
            let kind = m["type"].as_str()?;
            let source = match kind {
                "Pods" => &m["pods"],
                "External" => &m["external"],
                _ => return None,
            };
            source["metric"]["name"].as_str()
        })
        .expect("a Pods or External metric");
    assert_eq!(lag_metric, "warden_consumer_lag");
    assert!(exported.contains(lag_metric));

    // The operator's copy of the alerts is the same as the file promtool tests.
    let rule = object(&all, "PrometheusRule", "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"]["groups"],
        alerts()["groups"],
        "deploy/k8s/prometheusrule.yaml spec.groups differ from deploy/prometheus/alerts.yml"
    );
}

// ---- Dockerfile ------------------------------------------------------------------------

/// Instructions of a Dockerfile: (keyword, arguments), continuations joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_locked_and_runs_warden_as_the_manifests_user() {
    let steps = dockerfile();
    let get = |k: &str| -> Vec<&str> {
        steps
            .iter()
            .filter(|(kw, _)| kw == k)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let froms = get("FROM");
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains("-bookworm") && froms[0].ends_with("AS builder"));
    assert!(froms[1].starts_with("debian:bookworm-slim"));
    let runs = get("RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    for package in [
        "cmake",
        "pkg-config",
        "zlib1g-dev",
        "libssl-dev",
        "ca-certificates",
        "libssl3",
    ] {
        assert!(runs.contains(package), "{package} not installed");
    }
    assert!(runs.contains("--uid 10001"));
    assert_eq!(get("USER"), ["10001:10001"]);
    assert_eq!(get("EXPOSE"), ["8080"]);
    let json = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap();
    assert_eq!(json(get("ENTRYPOINT")[0]), ["warden"]);
    assert_eq!(
        json(get("CMD")[0]),
        ["run", "--config", "/etc/warden/warden.toml"]
    );
    // The builder has what the crate compiles in (`include_str!` of the embedded default).
    let copies = get("COPY");
    assert!(
        copies.iter().any(|c| c.starts_with("config ")),
        "the builder does not copy config/: {copies:?}"
    );
    // Every COPY from the build context (the repository root) exists.
    for args in &copies {
        if args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repo"
            );
        }
    }
    // Cargo reads every target the manifest declares before it builds any one of them, so
    // the builder needs the file of each (a bench's defaults to benches/<name>.rs): one
    // missing made `cargo build --bin warden` refuse the manifest.
    let copied: Vec<&str> = copies
        .iter()
        .filter(|c| !c.starts_with("--from"))
        .flat_map(|c| {
            let parts: Vec<&str> = c.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    let manifest: toml::Value = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    let mut target_files: Vec<String> = Vec::new();
    for (kind, default_dir) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("test", "tests"),
        ("example", "examples"),
    ] {
        for target in manifest
            .get(kind)
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            let path = target.get("path").and_then(|p| p.as_str()).map_or_else(
                || format!("{default_dir}/{}.rs", target["name"].as_str().unwrap()),
                str::to_owned,
            );
            target_files.push(path);
        }
    }
    target_files.extend(
        manifest
            .get("lib")
            .and_then(|l| l.get("path"))
            .and_then(|p| p.as_str())
            .map(str::to_owned),
    );
    assert!(
        target_files.iter().any(|f| f.starts_with("benches/")),
        "{target_files:?}"
    );
    for file in &target_files {
        let top = file.split('/').next().unwrap();
        assert!(
            copied.contains(&top) || copied.contains(&file.as_str()),
            "the builder does not copy {file}, a target of Cargo.toml (copies: {copied:?})"
        );
    }
    // The image's default config is a valid one.
    let out = check_config(&repo().join("config/warden.toml"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

// ---- docker compose --------------------------------------------------------------------

/// (source, target) of a compose volume entry, short or long syntax.
fn volume_entry(v: &Value) -> (String, String) {
    match v {
        Value::String(s) => {
            let mut parts = s.splitn(3, ':');
            let source = parts.next().unwrap().to_owned();
            let target = parts
                .next()
                .unwrap_or_else(|| panic!("volume {s}"))
                .to_owned();
            (source, target)
        }
        other => (
            str_of(&other["source"], "volume source").to_owned(),
            str_of(&other["target"], "volume target").to_owned(),
        ),
    }
}

#[test]
fn docker_compose_has_the_stack_and_mounts_files_that_exist() {
    let compose = yaml(&deploy().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(|k| str_of(k, "service")).collect();
    for name in ["broker", "redis", "prometheus", "grafana", "warden"] {
        assert!(names.contains(name), "no service {name}: {names:?}");
    }
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(|k| str_of(k, "volume")).collect())
        .unwrap_or_default();

    let mut mounts: BTreeMap<(String, String), String> = BTreeMap::new();
    for (service, def) in services {
        let service = str_of(service, "service");
        for v in def["volumes"].as_sequence().into_iter().flatten() {
            let (source, target) = volume_entry(v);
            if source.starts_with('.') || source.starts_with('/') {
                let path = deploy().join(&source);
                if source == "../dashboards" {
                    // Written by another change; when present it must be a directory.
                    assert!(!path.exists() || path.is_dir(), "{}", path.display());
                } else {
                    assert!(path.exists(), "{service}: {source} does not exist");
                }
            } else {
                assert!(
                    declared.contains(source.as_str()),
                    "{service}: named volume {source} not declared"
                );
            }
            mounts.insert((service.to_owned(), target), source);
        }
    }

    // warden: built from deploy/Dockerfile with its config and the two overrides.
    let warden = &compose["services"]["warden"];
    let context = deploy().join(str_of(&warden["build"]["context"], "build.context"));
    assert!(
        context.join("Cargo.toml").is_file(),
        "context is the repo root"
    );
    let dockerfile = str_of(&warden["build"]["dockerfile"], "build.dockerfile");
    assert_eq!(
        context.join(dockerfile).canonicalize().unwrap(),
        deploy().join("Dockerfile").canonicalize().unwrap()
    );
    let env: Vec<(String, String)> = warden["environment"]
        .as_mapping()
        .expect("warden environment as a mapping")
        .iter()
        .map(|(k, v)| {
            (
                str_of(k, "env").to_owned(),
                str_of(v, "env value").to_owned(),
            )
        })
        .collect();
    let env_of = |k: &str| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("warden has no {k}"))
    };
    let brokers = env_of("WARDEN_KAFKA__BROKERS");
    assert_eq!(brokers.split(':').next(), Some("broker"));
    let redis_url = env_of("WARDEN_STORE__REDIS_URL");
    assert!(redis_url.starts_with("redis://redis:"), "{redis_url}");
    let config_source = mounts
        .get(&("warden".into(), "/etc/warden/warden.toml".into()))
        .expect("warden mounts /etc/warden/warden.toml");
    let config_path = deploy().join(config_source);
    let out = check_config(&config_path, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let config = Config::load(&config_path, env.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.kafka.create_input_topics && !config.kafka.embedded);
    assert_eq!(
        (
            config.kafka.brokers.as_str(),
            config.store.redis_url.as_str()
        ),
        (brokers.as_str(), redis_url.as_str())
    );
    assert_eq!(config.admin.listen, "0.0.0.0:8080");

    // Redis with an append-only file (CONTRACT §9).
    let redis_cmd: Vec<&str> = seq(&compose["services"]["redis"]["command"], "command")
        .iter()
        .map(|v| str_of(v, "arg"))
        .collect();
    assert!(
        redis_cmd.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{redis_cmd:?}"
    );

    // Prometheus reads this repo's config and alerts.
    assert_eq!(
        mounts.get(&("prometheus".into(), "/etc/prometheus".into())),
        Some(&"./prometheus".to_owned())
    );
    let prom_cmd = seq(&compose["services"]["prometheus"]["command"], "command");
    assert!(prom_cmd
        .iter()
        .any(|a| a.as_str() == Some("--config.file=/etc/prometheus/prometheus.yml")));

    // Grafana: provisioning from deploy/grafana, dashboards where the provider looks.
    let provisioning = mounts
        .get(&("grafana".into(), "/etc/grafana/provisioning".into()))
        .expect("grafana provisioning mount");
    let provider = yaml(&deploy().join(provisioning).join("dashboards/warden.yml"));
    let dashboards_path = str_of(
        &seq(&provider["providers"], "providers")[0]["options"]["path"],
        "provider path",
    );
    assert_eq!(
        mounts.get(&("grafana".into(), dashboards_path.into())),
        Some(&"../dashboards".to_owned())
    );
    let datasources = yaml(
        &deploy()
            .join(provisioning)
            .join("datasources/prometheus.yml"),
    );
    let ds = &seq(&datasources["datasources"], "datasources")[0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
}
