//! `pepeunit-unit`: run the device agent, find devices on the local network, or simulate a fleet.

use std::time::Duration;

use clap::{Parser, Subcommand};
use pepeunit_unit_runtime::{agent, discovery, simulate};

#[derive(Parser)]
#[command(name = "pepeunit-unit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent for the unit whose env.json is in the home directory.
    Run(agent::RunArgs),
    /// List Pepeunit devices advertising themselves on the local network.
    Discover {
        /// How long to listen for answers.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Run many virtual units in one process, for load tests and benchmarks.
    Simulate(Box<simulate::SimulateArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEPEUNIT_UNIT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => agent::run(args).await?,
        Command::Discover { seconds } => {
            for device in discovery::discover(Duration::from_secs(seconds)).await? {
                println!("{device}");
            }
        }
        Command::Simulate(args) => println!("{}", simulate::run(*args).await?),
    }
    Ok(())
}
