//! regcred: a Kubernetes operator that gives every workload the container-registry credentials it needs.
//!
//! Layout: [`api`] (CRD types), [`controller`] (RegistryProfile → Secrets), [`credentials`] (credential sources),
//! [`registry`] (registry hosts), [`config`] and [`cli`] (the command line), [`telemetry`] (logs).

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod errors;
pub mod registry;
pub mod telemetry;

use tracing::info;

/// `regcred run`: the operator until SIGTERM or Ctrl-C.
pub async fn run(args: config::RunArgs) -> Result<(), errors::Error> {
    let client = kube::Client::try_default().await.map_err(errors::Error::Kubeconfig)?;
    info!(version = env!("CARGO_PKG_VERSION"), namespace = %args.namespace, "regcred starting");
    let settings = controller::Settings {
        operator_namespace: args.namespace,
        write_concurrency: usize::from(args.write_concurrency),
        profile_selector: args.profile_selector,
        reporter: args.reporter,
    };
    controller::check_crd(&client).await?;
    let caches = controller::Caches::start(&client, &settings.operator_namespace, settings.profile_selector.as_deref());
    controller::run(client, settings, caches, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
}
