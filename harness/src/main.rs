//! The `fleetbench` binary: parses the command line, sets up logging, runs
//! the command and maps the outcome to the exit code (0 ok, 1 gate failed,
//! 2 error).

use clap::Parser;
use fleetbench::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(cli::EXIT_ERROR);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}

fn init_logging(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "fleetbench=info",
        1 => "fleetbench=debug",
        _ => "fleetbench=trace,info",
    };
    let filter =
        EnvFilter::try_from_env("FLEETBENCH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}
