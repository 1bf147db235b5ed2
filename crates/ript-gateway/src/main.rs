//! `ript-gateway`: the SIP/RTP ↔ RIPT gateway binary.

mod bench;
mod calls;
mod config;
mod customer_tg;
mod demo;
mod identity;
mod live;
mod media;
mod probe;
mod ript_app;
mod routing;
mod run;
mod runtime;
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
    /// Start the gateway (today: the RIPT server with an echo application and the SIP service).
    /// Settings: built-in defaults < the TOML file (--config or RIPT_CONFIG) < environment
    /// variables < these flags; config/gateway.toml lists every key.
    Run(config::RunArgs),
    /// Apply the database migrations (the same settings as `run`; `run` also migrates on
    /// start) and print the schema's configuration version.
    Migrate(config::RunArgs),
    /// RIPT's curl: list TGs, show one, register a handler, place a test call.
    Probe(probe::ProbeArgs),
    /// Two gateways (customer and provider) in this process on loopback with in-memory
    /// SQLite, configured through their admin APIs; two built-in phones call through them
    /// with tones and digits, detected on the far side. Prints the ladder; exits 0 when both
    /// tones and the digits arrived.
    Demo,
    /// Loopback benchmarks: `bench relay` (media relay CPU per packet against a plain
    /// forwarder, loss, latency), `bench chain` (calls through a customer and a provider
    /// gateway: setup, loss, latency, CPU and RSS per call).
    Bench(bench::BenchArgs),
}

/// `directives` comes from `run`'s validated configuration; the other commands read `RIPT_LOG`.
fn init_tracing(directives: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match directives {
        Some(d) => EnvFilter::try_new(d).ok(),
        None => EnvFilter::try_from_env("RIPT_LOG").ok(),
    }
    .unwrap_or_else(|| EnvFilter::new(config::DEFAULT_LOG));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` is configured, and its configuration checked, before anything starts.
    let settings = match &cli.command {
        Command::Run(a) | Command::Migrate(a) => {
            match config::load(a, &|name| std::env::var(name).ok()) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        _ => None,
    };
    // The demo prints its own ladder; its gateways log only trouble unless RIPT_LOG says more.
    let demo_log = std::env::var("RIPT_LOG").unwrap_or_else(|_| "warn".to_owned());
    let directives = match &cli.command {
        Command::Demo => Some(demo_log.as_str()),
        _ => settings.as_ref().map(|s| s.log.as_str()),
    };
    init_tracing(directives);
    let coalesce = settings
        .as_ref()
        .map_or(std::time::Duration::ZERO, |s| s.media.coalesce);
    let rt = match runtime::coalescing(
        tokio::runtime::Builder::new_multi_thread().enable_all(),
        coalesce,
    )
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
            Command::Run(_) => match settings {
                Some(s) => match run::run(s).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(1)
                    }
                },
                None => ExitCode::from(1),
            },
            Command::Migrate(_) => match settings {
                Some(s) => match run::migrate(s).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(1)
                    }
                },
                None => ExitCode::from(1),
            },
            Command::Probe(a) => probe::probe(a).await,
            Command::Bench(a) => bench::bench(a).await,
            Command::Demo => demo::demo().await,
        }
    })
}
