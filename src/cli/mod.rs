//! The `regcred` command line: the commands, their dispatch (here), and what `check` and `check --manifest` share.

pub mod check;
pub mod install;
pub mod manifest;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::CustomResourceExt;
use kube::api::Api;

use crate::api::RegistryProfile;
use crate::config::{CheckArgs, LogArgs, RunArgs};

/// Exit status for input regcred cannot use (also clap's for usage errors).
const BAD_INPUT: u8 = 2;

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
    /// Place regcred-credential-provider, its CA bundle and a CredentialProviderConfig on this node (what the
    /// chart's node DaemonSet runs), keep the CA bundle current, and remove what it placed on uninstall.
    InstallCredentialProvider(Box<install::InstallArgs>),
}

/// The CRD YAML, as committed in `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&RegistryProfile::crd()).map(|yaml| quote_yaml11_words(&yaml))
}

/// `yaml` (as serde_yaml writes it: YAML 1.2) with every plain scalar that only a YAML 1.1 reader takes for a
/// boolean (`Off`, `yes`, `N`, ...) single-quoted. kubectl and Helm read YAML 1.1: they would read the
/// enum value `- Off` as `false` and the apiserver would refuse the CRD's own example. Text inside block scalars
/// (descriptions) is left as it is.
pub fn quote_yaml11_words(yaml: &str) -> String {
    // Booleans in YAML 1.1 only: serde_yaml already quotes the strings YAML 1.2 reads otherwise (`true`, `null`),
    // and its real booleans must stay booleans.
    const WORDS: [&str; 6] = ["y", "yes", "n", "no", "on", "off"];
    let mut out = String::with_capacity(yaml.len() + 64);
    // The indentation of the key that opened a block scalar: deeper lines are its text.
    let mut block: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(open) = block {
            if line.trim().is_empty() || indent > open {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block = None;
        }
        // `- value`, `key: value` or `- key: value`: where the value starts.
        let mut start = indent;
        if line[start..].starts_with("- ") {
            start += 2;
        }
        if let Some((key, _)) = line[start..].split_once(": ") {
            start += key.len() + 2;
        }
        let (prefix, value) = if start == indent { (line, "") } else { line.split_at(start) };
        if value.starts_with('|') || value.starts_with('>') {
            block = Some(indent);
        }
        if !value.is_empty() && WORDS.contains(&value.to_ascii_lowercase().as_str()) {
            out.push_str(prefix);
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
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
                Ok(rt) => rt.block_on(run_check(*args)),
                Err(e) => fail(&format!("could not start the async runtime: {e}")),
            }
        }
        Command::InstallCredentialProvider(args) => {
            if let Err(e) = crate::telemetry::init(&cli.log) {
                return fail(&e);
            }
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(install::run(*args)),
                Err(e) => fail(&format!("could not start the async runtime: {e}")),
            }
        }
        Command::Run(args) => {
            if let Err(e) = crate::telemetry::init(&cli.log) {
                return fail(&e);
            }
            crate::memory::one_arena();
            let threads = usize::from(args.worker_threads);
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("could not start the async runtime: {e}")),
            };
            // On a worker like every other task, not on this thread: with one worker, no task hands work to another
            // thread.
            match runtime.block_on(async move { tokio::spawn(crate::operator::run(*args)).await }) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "regcred stopped");
                    fail(&e.to_string())
                }
                Err(e) => fail(&format!("regcred stopped: {e}")),
            }
        }
    }
}

/// `regcred check`: a manifest's workloads with `--manifest`, else a registry.
async fn run_check(args: CheckArgs) -> ExitCode {
    match &args.manifest {
        Some(path) => manifest::run(&args, path).await,
        None => check::run(args).await,
    }
}

/// The Secrets of regcred's namespace a profile's credentials may come from: its source Secrets and its token
/// copy.
async fn sources_of(
    client: &kube::Client,
    namespace: &str,
    profile: &RegistryProfile,
) -> Result<(String, BTreeMap<String, Arc<Secret>>), String> {
    let mut names: Vec<String> = crate::resolve::source_secrets(profile).into_iter().map(str::to_owned).collect();
    names.extend(profile.metadata.uid.as_deref().map(crate::names::token_copy_name));
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut found = BTreeMap::new();
    for name in names {
        let secret = api.get_opt(&name).await.map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))?;
        if let Some(secret) = secret {
            found.insert(name, Arc::new(secret));
        }
    }
    Ok((namespace.to_owned(), found))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("regcred: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_a_yaml_1_1_reader_takes_for_booleans_are_quoted_outside_block_text() {
        let yaml = "enum:\n- Warn\n- Off\nmode: 'On'\nplain: yes\nitems:\n- key: N\nnullable: true\ndescription: |-\n  - Off\n  no\nafter: off\n";
        let want = "enum:\n- Warn\n- 'Off'\nmode: 'On'\nplain: 'yes'\nitems:\n- key: 'N'\nnullable: true\ndescription: |-\n  - Off\n  no\nafter: 'off'\n";
        assert_eq!(quote_yaml11_words(yaml), want);
    }

    #[test]
    fn the_crd_reads_the_same_whatever_the_yaml_version() {
        let yaml = crd_yaml().unwrap();
        assert!(yaml.contains("- 'Off'"), "the imageChecks mode Off is quoted");
        let quoted: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let plain: serde_json::Value =
            serde_yaml::from_str(&serde_yaml::to_string(&RegistryProfile::crd()).unwrap()).unwrap();
        assert_eq!(quoted, plain, "quoting changes nothing a YAML 1.2 reader sees");
    }
}
