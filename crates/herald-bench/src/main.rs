//! herald-bench: drives Herald gateways over the public API, as clients do, and reports what they
//! see: fan-out latency and loss, connection time and memory, and REST throughput.

mod report;
mod scenarios;
mod system;
mod target;

use clap::{Parser, Subcommand};

use crate::target::{Target, TargetArgs};

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Load generator for Herald gateways"
)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,

    /// Print results as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open sockets of one group, post notifications through REST, and measure each delivery
    /// from the moment its POST was sent to the moment a socket received the frame.
    Fanout(scenarios::FanoutArgs),
    /// Open authenticated idle sockets as fast as the server accepts them and measure the time and
    /// the gateway's resident memory per socket.
    Connect(scenarios::ConnectArgs),
    /// Create and confirm notifications with concurrent REST clients.
    Rest(scenarios::RestArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the Tokio runtime");

    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Raise the limit first: gateways that the bench starts inherit it.
    let wanted = match &cli.scenario {
        Scenario::Fanout(args) => args.sockets,
        Scenario::Connect(args) => args.sockets,
        Scenario::Rest(args) => args.clients * 4,
    };
    system::raise_open_file_limit(2 * wanted as u64 + 1024);

    let target = Target::prepare(&cli.target)?;
    let report = match cli.scenario {
        Scenario::Fanout(args) => scenarios::fanout(&target, &args).await?,
        Scenario::Connect(args) => scenarios::connect(&target, &args).await?,
        Scenario::Rest(args) => scenarios::rest(&target, &args).await?,
    };
    report.print(cli.json);
    Ok(())
}
