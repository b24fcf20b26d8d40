use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Once, before anything runs: every TLS client and server of regcred uses it.
    regcred::install_crypto_provider();
    regcred::cli::run(regcred::cli::Cli::parse())
}
