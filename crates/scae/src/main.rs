//! The `scae` command: parse, run, and report any error on one line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = scae::cli::Cli::parse();
    scae::init_logging();
    match scae::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
