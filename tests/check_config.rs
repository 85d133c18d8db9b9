//! `warden check-config` (issue: streaming core, acceptance 6; CONTRACT §8): every bad key
//! of a broken file is printed with the file and the key, and the exit code is 2.

use std::process::Command;

fn check(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run warden check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_broken_file_lists_every_bad_key_with_file_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[kafka]
brokers = "b:9092"
poll_batch = "lots"
flush_interval = "soon"
bogus = 1
[store]
backend = "mongodb"
timeout = "5 parsecs"
[runtime]
mailbox_capacity = 0
[admin]
listen = "not an address"
[[admin.tokens]]
name = "x"
sha256 = "abc"
roles = ["root"]
[nonsense]
a = 1
"#,
    )
    .unwrap();
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 2, "stderr: {stderr}");
    let file = path.display().to_string();
    for key in [
        "kafka.poll_batch",
        "kafka.flush_interval",
        "kafka.bogus",
        "store.backend",
        "store.timeout",
        "runtime.mailbox_capacity",
        "admin.listen",
        "admin.tokens[0].sha256",
        "admin.tokens[0].roles",
        "nonsense",
    ] {
        let line = stderr.lines().find(|l| l.contains(key));
        let line = line.unwrap_or_else(|| panic!("no problem reported for {key}:\n{stderr}"));
        assert!(
            line.starts_with(&file),
            "problem for {key} does not name the file: {line}"
        );
    }
}

#[test]
fn an_env_override_error_names_the_variable() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/warden.toml");
    let (code, _, stderr) = check(
        std::path::Path::new(shipped),
        &[("WARDEN_KAFKA__POLL_BATCH", "many")],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("WARDEN_KAFKA__POLL_BATCH") && stderr.contains("kafka.poll_batch"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_configs_are_valid() {
    for name in ["warden.toml", "production.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let (code, stdout, stderr) = check(&path, &[]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(stdout.contains("ok"));
    }
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let (code, _, stderr) = check(std::path::Path::new("/nonexistent/warden.toml"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/warden.toml"), "{stderr}");
}

/// With no `--config`, warden takes the embedded default compiled into the binary, so it
/// starts from any directory (it read `config/warden.toml` relative to the working
/// directory, and failed anywhere but the repository's root); overrides still apply and
/// problems name the embedded default.
#[test]
fn without_a_config_file_the_embedded_default_is_used_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("check-config")
            .current_dir(elsewhere.path())
            .envs(env.iter().copied())
            .output()
            .expect("run warden check-config")
    };
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("embedded default"), "{stdout}");

    let out = run(&[("WARDEN_KAFKA__POLL_BATCH", "many")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("WARDEN_KAFKA__POLL_BATCH") && stderr.contains("kafka.poll_batch"),
        "{stderr}"
    );
}

/// `warden token new` prints a block that a config file takes as it is: an unknown role is
/// refused before anything is printed, and a name with quotes is escaped.
#[test]
fn a_new_token_block_is_valid_config() {
    let new_token = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["token", "new"])
            .args(args)
            .output()
            .expect("run warden token new")
    };
    let refused = new_token(&["--role", "admin"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty());

    let out = new_token(&[
        "--role", "security", "--role", "viewer", "--name", "al\"ice",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[["))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, format!("[kafka]\nbrokers = \"b:9092\"\n{block}\n")).unwrap();
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{block}\n{stderr}");
    let parsed: toml::Table = block.parse().unwrap();
    let token = &parsed["admin"]["tokens"][0];
    assert_eq!(token["name"].as_str(), Some("al\"ice"));
    assert_eq!(
        token["roles"],
        toml::Value::Array(vec!["security".into(), "viewer".into()])
    );
}
