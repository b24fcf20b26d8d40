//! regcred: a Kubernetes operator that gives every workload the container-registry credentials it needs.
//!
//! The modules are layers, each using only those below it. The order is stated once, in `src/layers.rs`, whose
//! tests check every `crate::` path against it and check that the README's Architecture (what each module owns)
//! and Layout (every folder) say the same.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod errors;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod glob;
pub mod images;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod registry;
pub mod resolve;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod webhook;

#[cfg(test)]
mod layers;

use futures::FutureExt;
use tracing::info;

/// Installs ring as rustls' process-wide crypto provider. regcred's TLS clients and servers (the webhook, the
/// registry preflight's reqwest and oci-client, the token exchanges) are built without one, so that regcred
/// carries one TLS stack: `main` calls this once, before anything runs, and tests that build TLS clients call it
/// in their own setup. Harmless when a provider is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// regcred's own identity, for the federations that start from its ServiceAccount, with the hosts credentials
/// may go to.
fn identity(
    client: &kube::Client,
    args: &config::RunArgs,
) -> Result<std::sync::Arc<credentials::identity::Identity>, errors::Error> {
    let endpoints = credentials::egress::Endpoints::from_args(&args.endpoints).map_err(errors::Error::Config)?;
    Ok(std::sync::Arc::new(credentials::identity::Identity::new(
        Some(client.clone()),
        &args.namespace,
        &args.service_account,
        credentials::identity::Ambient::from_env(),
        endpoints,
    )))
}

/// `regcred run`: the operator until SIGTERM or Ctrl-C.
pub async fn run(args: config::RunArgs) -> Result<(), errors::Error> {
    let client = client::infer().await.map_err(errors::Error::Kubeconfig)?;
    info!(version = env!("CARGO_PKG_VERSION"), namespace = %args.namespace, "regcred starting");
    let shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>> = shutdown_signal().boxed().shared();
    let settings = controller::Settings {
        operator_namespace: args.namespace.clone(),
        write_concurrency: usize::from(args.write_concurrency),
        profile_selector: args.profile_selector.clone(),
        reporter: args.reporter.clone(),
        healing: args.healing,
        injects: args.webhook.addr.is_some(),
    };
    controller::check_crd(&client).await?;
    let view = state::View::start(
        &client,
        &settings.operator_namespace,
        settings.profile_selector.as_deref(),
        args.token_refresh_fraction,
        identity(&client, &args)?,
    );
    let webhook = match args.webhook.addr {
        Some(addr) => {
            let tls = match (&args.webhook.cert_file, &args.webhook.key_file) {
                (Some(cert), Some(key)) => webhook::TlsSource::Files { cert: cert.clone(), key: key.clone() },
                _ => webhook::TlsSource::SelfManaged {
                    secret: args.webhook.secret.clone(),
                    configuration: args.webhook.configuration.clone(),
                    dns_names: if args.webhook.dns_names.is_empty() {
                        vec![format!("regcred.{}.svc", args.namespace)]
                    } else {
                        args.webhook.dns_names.clone()
                    },
                    lifetime: args.webhook.cert_lifetime,
                },
            };
            let state = webhook::Webhook::new(client.clone(), view.clone(), &args.namespace, &args.webhook)
                .map_err(errors::Error::Config)?;
            let (state, ca) = (std::sync::Arc::new(state), args.webhook.client_ca_file.clone());
            Some((state.stats.clone(), tokio::spawn(webhook::serve(state, addr, tls, ca, shutdown.clone()))))
        }
        None => None,
    };
    let metrics = std::sync::Arc::new(metrics::Metrics::new(view.clone(), webhook.as_ref().map(|(stats, _)| stats)));
    // Bursts are seen through the reconciles: that is where a sync's writes, plans and status updates happen, and
    // a relist after a lost watch reconciles every profile too.
    let counted = metrics.clone();
    tokio::spawn(memory::trim_after_bursts(move || counted.reconciles_total(), std::time::Duration::from_secs(10)));
    let ops = match args.metrics_addr.0 {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| errors::Error::Bind {
                what: "metrics",
                addr,
                source,
            })?;
            Some(tokio::spawn(metrics::serve(metrics.clone(), listener, shutdown.clone())))
        }
        None => None,
    };
    let (leading, election) = if args.leader_election.enabled {
        let election = controller::leader::Election {
            lease: args.leader_election.lease.clone(),
            namespace: args.namespace.clone(),
            identity: args.leader_election.identity.clone().unwrap_or_else(controller::leader::default_identity),
            duration: args.leader_election.duration,
        };
        info!(lease = %election.lease, identity = %election.identity, "joining the leader election");
        let (leading, task) = controller::leader::join(client.clone(), &election)
            .await
            .map_err(|e| errors::Error::Controller(controller::Error::LeaderElection(e)))?;
        (Some(leading), Some(task))
    } else {
        (None, None)
    };
    let controller = controller::run_when_leading(client, settings, view, metrics, shutdown.clone(), leading);
    // Any part ending ends the process: a webhook or endpoint that cannot serve must be noticed, not hidden.
    let webhook = async move {
        match webhook {
            Some((_, server)) => {
                server.await.map_err(|e| errors::Error::Task(e.to_string()))?.map_err(errors::Error::from)
            }
            None => futures::future::pending().await,
        }
    };
    let ops = async move {
        match ops {
            Some(server) => server
                .await
                .map_err(|e| errors::Error::Task(e.to_string()))?
                .map_err(|e| errors::Error::Task(format!("metrics endpoint: {e}"))),
            None => futures::future::pending().await,
        }
    };
    let result = tokio::select! {
        res = controller => res.map_err(errors::Error::from),
        res = webhook => res,
        res = ops => res,
    };
    // The controller has dropped its view of the election: the lease is being released. Give it a moment, so
    // the next leader takes over at once rather than after the lease expires.
    if let Some(task) = election {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
    }
    result
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
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
