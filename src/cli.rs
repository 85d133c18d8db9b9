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

/// The embedded default configuration, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "config/warden.toml";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file (and WARDEN_… overrides) without starting.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Generate an admin token: prints the token once and the config line holding its hash.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    New {
        #[arg(long, required = true)]
        role: Vec<String>,
        #[arg(long, default_value = "operator-token")]
        name: String,
    },
}
