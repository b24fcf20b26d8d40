use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Once, before anything runs: the plugin's TLS client is built without a provider, as all of regcred's are.
    regcred::install_crypto_provider();
    regcred::kubelet_plugin::run(&regcred::kubelet_plugin::Args::parse())
}
