//! Checks for `Config::from_toml_str`, which must never panic and must report every
//! problem (CONTRACT §8).
//!
//! Input: any bytes, read as UTF-8 (invalid sequences become U+FFFD, so every input
//! reaches the TOML parser).
//!
//! Beyond "no panic": a config that loads passes its own rules again (its enforcement
//! policy validates, and written back as TOML it loads to the same config), and a
//! redacted Redis URL stays redacted in `Debug`. A refusal lists at least one problem,
//! each naming this origin and printed on one line; only a syntax error concerns the
//! whole file (an empty key).

use warden::config::{redact_url, Config, ConfigErrors};

/// The origin given to the loader; every problem must name it.
pub const ORIGIN: &str = "fuzz.toml";

pub fn config_toml(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml_str(&text, ORIGIN) {
        Ok(config) => {
            assert_loaded(&config);
            true
        }
        Err(errors) => {
            assert_problems(&errors);
            false
        }
    }
}

fn assert_loaded(config: &Config) {
    let policy = config.enforcement.validate();
    assert!(policy.is_empty(), "loaded with policy problems {policy:?}");
    let written = toml::to_string(config).expect("a loaded config serializes to TOML");
    let reloaded = Config::from_toml_str(&written, "written back");
    assert_eq!(reloaded.as_ref(), Ok(config), "written back as:\n{written}");
    let url = &config.store.redis_url;
    let redacted = redact_url(url);
    if redacted != *url {
        let debug = format!("{:?}", config.store);
        assert!(debug.contains(&format!("{redacted:?}")), "{debug}");
    }
}

fn assert_problems(errors: &ConfigErrors) {
    assert!(!errors.problems.is_empty(), "refused without a problem");
    for p in &errors.problems {
        assert_eq!(p.origin, ORIGIN, "{p}");
        assert!(!p.message.trim().is_empty(), "{p:?}");
        // An empty key means "the whole file": only a syntax error may say so; any other
        // whole-file problem is the loader's "not expected" fallback firing.
        let whole_file = p.key.is_empty();
        assert_eq!(whole_file, p.message.starts_with("invalid TOML"), "{p:?}");
    }
    let shown = errors.to_string();
    assert_eq!(
        shown.lines().count(),
        errors.problems.len(),
        "one line per problem:\n{shown}"
    );
}
