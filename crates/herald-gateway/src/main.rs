use std::process::ExitCode;

use clap::Parser;
use herald_gateway::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            eprintln!("herald: {}", exit.message);
            ExitCode::from(exit.code)
        }
    }
}
