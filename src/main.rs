use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    regcred::cli::run(regcred::cli::Cli::parse())
}
