//! The fuzz targets in short form, on stable and without a fuzzer: every file of
//! fuzz/corpus/<target>/ (the seeds) and of fuzz/artifacts/<target>/ (crash inputs kept as
//! regressions) goes through the check its target runs, which panics on a broken
//! invariant. The checks are fuzz/src/*.rs themselves, included here with `#[path]`, so
//! this test asserts exactly what the fuzzers assert. `scripts/fuzz` runs the real thing.
//!
//! Seed names carry their expected outcome: `ok-*` must be accepted, `err-*` refused;
//! other files (such as inputs a fuzzer added) must only pass the checks.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/admin.rs"]
mod admin;
#[path = "../fuzz/src/config.rs"]
mod config;
#[path = "../fuzz/src/decode.rs"]
mod decode;

/// A check: panics on a broken invariant, else says whether the input was accepted.
type Check = fn(&[u8]) -> bool;

/// Every target of fuzz/Cargo.toml, with its check.
const TARGETS: [(&str, Check); 6] = [
    ("decode_usage", decode::usage),
    ("decode_invoice", decode::invoice),
    ("decode_attribution", decode::attribution),
    ("decode_control", decode::control),
    ("config_toml", config::config_toml),
    ("admin_bodies", admin::admin_bodies),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The regular files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every corpus and artifact file of `target`; asserts there are seeds
/// and that no file breaks an invariant or contradicts its name. Reports every failing
/// file at once.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no check for {target}"));
    let seeds = files(&fuzz_dir().join("corpus").join(target));
    assert!(seeds.len() >= 4, "{target}: only {} seeds", seeds.len());
    let kept = files(&fuzz_dir().join("artifacts").join(target));
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for path in seeds.iter().chain(&kept) {
        let data = std::fs::read(path).expect("a readable corpus file");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match std::panic::catch_unwind(|| check(&data)) {
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{}: panicked: {message}", path.display()));
            }
            Ok(true) if name.starts_with("err-") => {
                failures.push(format!("{}: accepted", path.display()));
            }
            Ok(false) if name.starts_with("ok-") => {
                failures.push(format!("{}: refused", path.display()));
            }
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        seeds.len() + kept.len(),
        failures.join("\n")
    );
    // Seeds on both sides of the line, so the replay reaches the checks of each.
    assert!(
        accepted > 0 && refused > 0,
        "{target}: {accepted} accepted, {refused} refused"
    );
}

#[test]
fn every_fuzz_target_is_replayed_here() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("fuzz/Cargo.toml is TOML");
    let bins = manifest["bin"].as_array().expect("[[bin]] targets");
    let mut declared: Vec<&str> = bins
        .iter()
        .map(|b| b["name"].as_str().expect("a target name"))
        .collect();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    declared.sort_unstable();
    replayed.sort_unstable();
    assert_eq!(declared, replayed);
}

#[test]
fn decode_usage() {
    replay("decode_usage");
}

#[test]
fn decode_invoice() {
    replay("decode_invoice");
}

#[test]
fn decode_attribution() {
    replay("decode_attribution");
}

#[test]
fn decode_control() {
    replay("decode_control");
}

#[test]
fn config_toml() {
    replay("config_toml");
}

#[test]
fn admin_bodies() {
    replay("admin_bodies");
}
