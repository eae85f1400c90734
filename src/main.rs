//! The `portcullis` command: flags, runtime, exit codes. No logic.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a configuration error (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// A zero-trust gateway for AI workloads: verifies Entra bearer tokens and
/// forwards what it allows.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file until SIGTERM/SIGINT.
    Run {
        /// Path of the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file: print every error with its path, exit 64 if any.
    Check {
        /// Path of the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a self-contained demo: embedded issuer, echo upstream, gateway.
    Dev {
        /// Address of the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin port (/healthz, /readyz, /metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let config = match portcullis::config::load(&config) {
                Ok(c) => c,
                Err(errors) => return config_errors(&config, &errors),
            };
            portcullis::telemetry::init(&config.logging);
            block_on(portcullis::app::run(config))
        }
        Command::Dev {
            listen,
            admin_listen,
        } => block_on(portcullis::dev::run(listen, admin_listen)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match portcullis::config::load(path) {
        Ok(c) => c,
        Err(errors) => return config_errors(path, &errors),
    };
    // Compiling the snapshot finds route conflicts; it fetches nothing.
    let env = portcullis::snapshot::KeyEnv {
        generation: Default::default(),
        observer: match portcullis::metrics::Metrics::new() {
            Ok(m) => std::sync::Arc::new(m),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let compiled = {
        // Key sources build HTTP clients, which want a runtime context.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            eprintln!("error: cannot start a runtime");
            return ExitCode::FAILURE;
        };
        let _guard = rt.enter();
        portcullis::snapshot::Snapshot::compile(&config, &env).map(|_| ())
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    match compiled {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => config_errors(path, &errors),
    }
}

fn config_errors(path: &std::path::Path, errors: &portcullis::config::ConfigErrors) -> ExitCode {
    eprintln!("{}: invalid configuration", path.display());
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
