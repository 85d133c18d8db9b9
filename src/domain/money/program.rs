//! A partner program (`config/programs/*.toml`): tiers and their rates, promo, credits and
//! status rules. Config, not code: the three shipped programs differ only in these files.
//!
//! Rates and money are TOML strings (`"0.05"`), like the JSON strings of CONTRACT §1: a
//! TOML float is refused, so no binary fraction ever reaches a rate.

use std::collections::BTreeMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The programs shipped with warden, embedded so tests and the embedded mode need no files.
pub const DEFAULT_PROGRAM_TOML: &str = include_str!("../../../config/programs/default.toml");
pub const RESELLER_PROGRAM_TOML: &str = include_str!("../../../config/programs/reseller.toml");
pub const CREDITS_PROGRAM_TOML: &str = include_str!("../../../config/programs/credits.toml");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub name: String,
    /// The tier of a partner before its first tier takes effect (or with no `partner` fact).
    pub default_tier: String,
    /// Whether a partner's base is net of `processing_cost` unless its fact says otherwise.
    #[serde(default)]
    pub net_of_cost: bool,
    /// Whether ancestors on the `parent_id` chain earn overrides (credits programs: never).
    #[serde(default = "yes")]
    pub downline_overrides: bool,
    /// Tier name (lower case) → rates. Partner facts name tiers case-insensitively.
    pub tiers: BTreeMap<String, TierRates>,
    #[serde(default)]
    pub promo: Option<Promo>,
    /// Present = an activation-credits program.
    #[serde(default)]
    pub credits: Option<CreditRules>,
    #[serde(default)]
    pub status: StatusRules,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRates {
    #[serde(with = "dec_str")]
    pub commission_rate: Decimal,
    #[serde(default, with = "dec_str")]
    pub coop_rate: Decimal,
    /// What an ancestor of this tier earns on its descendants' lines, unless its own
    /// `partner` fact sets `override_rate`.
    #[serde(default, with = "dec_str")]
    pub override_rate: Decimal,
    /// Discount on activation-credit purchases (credits programs only).
    #[serde(default, with = "dec_str_opt", skip_serializing_if = "Option::is_none")]
    pub credit_discount: Option<Decimal>,
}

/// A launch promo: the first `first_n_approved` partners (control-topic order) earn `rate`
/// instead of their tier rate, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promo {
    pub first_n_approved: u64,
    #[serde(with = "dec_str")]
    pub rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditRules {
    /// A warning is raised when the credit balance falls below this.
    #[serde(with = "dec_str")]
    pub low_water_credits: Decimal,
}

/// Active / at-risk and the tenant lock (informational: never changes money).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRules {
    /// Active needs at least this many new tenants per year, averaged over the window.
    pub active_min_tenants_per_year: u32,
    pub window_days: u32,
    /// Reaching this many onboarded tenants locks the active status ...
    pub lock_after_tenants: u32,
    /// ... for this many calendar years from the day the last of them started.
    pub lock_years: u32,
}

impl Default for StatusRules {
    fn default() -> Self {
        StatusRules {
            active_min_tenants_per_year: 10,
            window_days: 365,
            lock_after_tenants: 50,
            lock_years: 5,
        }
    }
}

/// A program file that cannot be used: every problem, with its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {}", problems.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid {
        source_name: String,
        problems: Vec<(String, String)>,
    },
}

impl Program {
    /// Parses and validates a program; `source_name` names it in errors (a file path).
    pub fn from_toml(text: &str, source_name: &str) -> Result<Program, ProgramError> {
        let program: Program = toml::from_str(text).map_err(|e| ProgramError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        let problems = program.validate();
        if problems.is_empty() {
            Ok(program)
        } else {
            Err(ProgramError::Invalid {
                source_name: source_name.to_string(),
                problems,
            })
        }
    }

    pub fn load(path: &Path) -> Result<Program, ProgramError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProgramError::Parse {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
        Program::from_toml(&text, &name)
    }

    /// One of the shipped programs by name: `default`, `reseller` or `credits`.
    pub fn builtin(name: &str) -> Option<Result<Program, ProgramError>> {
        let text = match name {
            "default" => DEFAULT_PROGRAM_TOML,
            "reseller" => RESELLER_PROGRAM_TOML,
            "credits" => CREDITS_PROGRAM_TOML,
            _ => return None,
        };
        Some(Program::from_toml(
            text,
            &format!("config/programs/{name}.toml"),
        ))
    }

    pub fn is_credits(&self) -> bool {
        self.credits.is_some()
    }

    /// The rates of `tier`, matched case-insensitively.
    pub fn tier(&self, tier: &str) -> Option<&TierRates> {
        self.tiers
            .get(tier)
            .or_else(|| self.tiers.get(&tier.to_ascii_lowercase()))
    }

    /// Every problem of the program, as (key, message); empty = usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |k: &str, m: &str| p.push((k.to_string(), m.to_string()));
        if self.name.trim().is_empty() {
            push("name", "must not be empty");
        }
        if self.tiers.is_empty() {
            push("tiers", "at least one tier is required");
        }
        if self.tier(&self.default_tier).is_none() {
            push("default_tier", "must name one of `tiers`");
        }
        self.validate_tiers(&mut push);
        if let Some(promo) = &self.promo {
            if promo.first_n_approved == 0 {
                push("promo.first_n_approved", "must be at least 1");
            }
            if !is_fraction(promo.rate) {
                push("promo.rate", "must be a rate between 0 and 1");
            }
        }
        if let Some(c) = &self.credits {
            if c.low_water_credits.is_sign_negative() {
                push("credits.low_water_credits", "must not be negative");
            }
            if self.downline_overrides {
                push(
                    "downline_overrides",
                    "credits programs have no downline overrides",
                );
            }
        }
        let s = &self.status;
        if s.window_days == 0 {
            push("status.window_days", "must be at least 1");
        }
        if s.lock_after_tenants == 0 {
            push("status.lock_after_tenants", "must be at least 1");
        }
        if s.lock_years == 0 || s.lock_years > 100 {
            push("status.lock_years", "must be between 1 and 100");
        }
        p
    }

    fn validate_tiers(&self, push: &mut impl FnMut(&str, &str)) {
        for (name, t) in &self.tiers {
            let key = |field: &str| format!("tiers.{name}.{field}");
            if name.is_empty() || *name != name.to_ascii_lowercase() {
                push(&format!("tiers.{name}"), "tier names are lower case");
            }
            for (field, rate) in [
                ("commission_rate", t.commission_rate),
                ("coop_rate", t.coop_rate),
                ("override_rate", t.override_rate),
            ] {
                if !is_fraction(rate) {
                    push(&key(field), "must be a rate between 0 and 1");
                }
            }
            match (self.is_credits(), t.credit_discount) {
                (true, None) => push(&key("credit_discount"), "required in a credits program"),
                (true, Some(d)) if !is_fraction(d) || d == Decimal::ONE => {
                    push(&key("credit_discount"), "must be at least 0 and below 1")
                }
                (false, Some(_)) => push(&key("credit_discount"), "only for credits programs"),
                _ => {}
            }
        }
    }
}

fn is_fraction(rate: Decimal) -> bool {
    !rate.is_sign_negative() && rate <= Decimal::ONE
}

/// A decimal written as a string; numbers are refused.
mod dec_str {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s = String::deserialize(d)?;
        Decimal::from_str_exact(s.trim())
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a decimal: {e}")))
    }

    pub fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

mod dec_str_opt {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        super::dec_str::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
#[path = "program_tests.rs"]
mod tests;
