//! The `regcred` command line.

pub mod check;
pub mod manifest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use crate::api::RegistryProfile;
use crate::config::{LogArgs, RunArgs};

/// regcred: container-registry credentials for every workload, kept fresh and proven to work.
#[derive(Parser, Debug)]
#[command(name = "regcred", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: the RegistryProfile controller.
    Run(Box<RunArgs>),
    /// Print the RegistryProfile CustomResourceDefinition as YAML.
    Crd,
    /// Check credentials and images against a registry through the OCI distribution API (the registry
    /// preflight), before a profile exists or against one; or, with --manifest, the workloads of a manifest as
    /// admission checks them. Exit status: 0 passed; 3 authentication failed;
    /// 4 registry unreachable; 5 TLS untrusted; 6 image not found; 7 image too large; 8 unsupported manifest
    /// type; 2 bad input; 1 other errors.
    Check(Box<crate::config::CheckArgs>),
}

/// The CRD YAML, as committed in `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&RegistryProfile::crd())
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => match crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("could not render the CRD: {e}")),
        },
        Command::Check(args) => {
            if let Err(e) = crate::telemetry::init(&cli.log) {
                return fail(&e);
            }
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(check::run(*args)),
                Err(e) => fail(&format!("could not start the async runtime: {e}")),
            }
        }
        Command::Run(args) => {
            if let Err(e) = crate::telemetry::init(&cli.log) {
                return fail(&e);
            }
            crate::memory::one_arena();
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("could not start the async runtime: {e}")),
            };
            match runtime.block_on(crate::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "regcred stopped");
                    fail(&e.to_string())
                }
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("regcred: {message}");
    ExitCode::FAILURE
}
