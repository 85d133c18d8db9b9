//! The `warden` binary: parse the command line, load the configuration, run. Exit codes
//! (CONTRACT §8): 0 clean stop, 1 fatal runtime error, 2 bad configuration.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use warden::cli::{AuditAction, Cli, Command, ConfigArg, TokenAction};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: ConfigArg::default(),
    });
    match command {
        Command::CheckConfig { config } => match config.load() {
            Ok(_) => {
                println!("{}: ok", config.name());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Token {
            action: TokenAction::New { role, name },
        } => {
            let token = warden::http::auth::new_token();
            println!("token: {token}");
            // TOML values, quoted and escaped: the block is pasted into a config file.
            let roles = toml::Value::Array(role.into_iter().map(toml::Value::String).collect());
            println!("[[admin.tokens]]");
            println!("name = {}", toml::Value::String(name));
            println!("sha256 = \"{}\"", warden::http::auth::token_hash(&token));
            println!("roles = {roles}");
            ExitCode::SUCCESS
        }
        Command::Audit {
            action: AuditAction::Verify { config },
        } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            match warden::people::audit_verify(&config) {
                Ok(n) => {
                    println!("audit chain ok: {n} records");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Kill {
            scope,
            target,
            reason,
            ttl_seconds,
            api,
        } => report(warden::people::kill(
            &api,
            &scope,
            &target,
            &reason,
            ttl_seconds,
        )),
        Command::Unkill { id, api } => report(warden::people::unkill(&api, &id)),
        Command::Status { partner_id, api } => report(warden::people::status(&api, &partner_id)),
        Command::Run { config } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            warden::telemetry::init(&config.log);
            let system = actix_rt::System::new();
            // Signal handlers are installed first thing inside the runtime, before anything is
            // printed, so a SIGTERM during start-up drains instead of killing the process.
            let run = async move {
                let shutdown = warden::shutdown::signal();
                warden::app::run(config, shutdown).await
            };
            match system.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("warden: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            }
        }
    }
}

/// Prints an admin API answer; exit 0 for 2xx, 1 otherwise.
fn report(result: Result<(u16, serde_json::Value), String>) -> ExitCode {
    match result {
        Ok((status, body)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("HTTP {status}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
