//! The `warden` binary: parse the command line, load the configuration, run. Exit codes
//! (CONTRACT §8): 0 clean stop, 1 fatal runtime error, 2 bad configuration.

use std::process::ExitCode;

use clap::Parser;
use warden::cli::{Cli, Command, TokenAction, DEFAULT_CONFIG};
use warden::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: DEFAULT_CONFIG.into(),
    });
    match command {
        Command::CheckConfig { config } => match Config::load_from_process_env(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
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
            println!("[[admin.tokens]]");
            println!("name = \"{name}\"");
            println!("sha256 = \"{}\"", warden::http::auth::token_hash(&token));
            println!("roles = {role:?}");
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            let config = match Config::load_from_process_env(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            warden::telemetry::init(&config.log);
            let system = actix_rt::System::new();
            match system.block_on(warden::app::run(config, warden::shutdown::signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("warden: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            }
        }
    }
}
