//! `ript-gateway`: the SIP/RTP ↔ RIPT gateway binary.

mod bench;
mod probe;
mod run;
mod sip;
mod tone;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "ript-gateway", version, about = "SIP/RTP ↔ RIPT gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway (today: the RIPT server on loopback with an echo application).
    Run(run::RunArgs),
    /// RIPT's curl: list TGs, show one, register a handler, place a test call.
    Probe(probe::ProbeArgs),
    /// Loopback benchmarks: `bench relay` (media relay CPU per packet against a plain
    /// forwarder, loss, latency).
    Bench(bench::BenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,h3=warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Run(a) => match run::run(a).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            },
            Command::Probe(a) => probe::probe(a).await,
            Command::Bench(a) => bench::bench(a).await,
        }
    })
}
