//! The command line (CONTRACT §8): `warden` alone runs the embedded default.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Real-time enforcement of a partner program"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--config FILE`, or none: the embedded default compiled into the binary
/// ([`crate::config::EMBEDDED_DEFAULT`]), so `warden` needs no file to start.
#[derive(Debug, Default, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML); without it, the embedded default.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration with the process environment's `WARDEN_…` overrides applied.
    pub fn load(&self) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        match &self.config {
            Some(path) => crate::config::Config::load_from_process_env(path),
            None => crate::config::Config::embedded_default_from_process_env(),
        }
    }

    /// How messages name the configuration: its path, or the embedded default.
    pub fn name(&self) -> String {
        match &self.config {
            Some(path) => path.display().to_string(),
            None => crate::config::EMBEDDED_ORIGIN.to_owned(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate a configuration file (and WARDEN_… overrides) without starting.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Generate an admin token: prints the token once and the config line holding its hash.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Check the audit chain in the store; names the first bad record (exit 1).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Set a kill switch through the admin API (token from WARDEN_TOKEN).
    Kill {
        #[arg(long)]
        scope: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ttl_seconds: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lift a kill switch by id.
    Unkill {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show what warden knows of a partner.
    Status {
        partner_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Where the admin API is and who is asking.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[arg(long, env = "WARDEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    New {
        /// viewer, operator, finance or security; repeat for several.
        #[arg(long, required = true, value_parser = clap::builder::PossibleValuesParser::new(["viewer", "operator", "finance", "security"]))]
        role: Vec<String>,
        #[arg(long, default_value = "operator-token")]
        name: String,
    },
}
