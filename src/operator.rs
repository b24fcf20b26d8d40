//! `regcred run`: the composition of the operator. It builds the state layer's view, the controller and the
//! webhook (siblings that know nothing of each other), has each register its own metrics in one registry, serves
//! that registry with `/healthz` and `/readyz` (ready: the caches hold their initial lists, and the webhook
//! listens when this replica serves one), joins the leader election, and runs until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::RunArgs;
use crate::credentials::egress::Endpoints;
use crate::credentials::identity::{Ambient, Identity};
use crate::state::View;
use crate::{client, controller, memory, metrics, webhook};

/// Why `regcred run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    Kubeconfig(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] controller::Error),
    #[error(transparent)]
    Webhook(#[from] webhook::ServeError),
    #[error("cannot serve {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("a task of regcred failed: {0}")]
    Task(String),
}

/// Completes when the process is asked to stop; every part of it shares it.
type Shutdown = Shared<BoxFuture<'static, ()>>;

/// The webhook this replica serves: whether it listens, and its server's task.
struct Served {
    listening: watch::Receiver<bool>,
    server: JoinHandle<Result<(), webhook::ServeError>>,
}

/// `regcred run`: the operator until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let client = client::infer().await.map_err(Error::Kubeconfig)?;
    info!(version = env!("CARGO_PKG_VERSION"), namespace = %args.namespace, "regcred starting");
    let shutdown: Shutdown = shutdown_signal().boxed().shared();
    controller::check_crd(&client).await?;
    let view = View::start(
        &client,
        &args.namespace,
        args.profile_selector.as_deref(),
        args.token_refresh_fraction,
        identity(&client, &args)?,
    );
    let mut registry = Registry::with_prefix("regcred");
    let metrics = Arc::new(controller::Metrics::default());
    metrics.register(&mut registry, &view);
    let webhook = serve_webhook(&client, &view, &args, &mut registry, shutdown.clone())?;
    // Bursts are seen through the reconciles: that is where a sync's writes, plans and status updates happen, and
    // a relist after a lost watch reconciles every profile too.
    let counted = metrics.clone();
    tokio::spawn(memory::trim_after_bursts(move || counted.reconciles_total(), Duration::from_secs(10)));
    let listening = webhook.as_ref().map(|w| w.listening.clone());
    let ops = serve_ops(&args, registry, readiness(view.clone(), listening.clone()), shutdown.clone()).await?;
    let (leading, election) = elect(&client, &args).await?;
    let settings = controller::Settings {
        operator_namespace: args.namespace.clone(),
        write_concurrency: usize::from(args.write_concurrency),
        profile_selector: args.profile_selector.clone(),
        reporter: args.reporter.clone(),
        healing: args.healing,
        webhook: listening,
    };
    let controller = controller::run_when_leading(client, settings, view, metrics, shutdown.clone(), leading);
    let result = first_to_end(controller, webhook, ops).await;
    // The controller has dropped its view of the election: the lease is being released. Give it a moment, so
    // the next leader takes over at once rather than after the lease expires.
    if let Some(task) = election {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    result
}

/// regcred's own identity, for the federations that start from its ServiceAccount, with the hosts credentials
/// may go to.
fn identity(client: &kube::Client, args: &RunArgs) -> Result<Arc<Identity>, Error> {
    let endpoints = Endpoints::from_args(&args.endpoints).map_err(Error::Config)?;
    Ok(Arc::new(Identity::new(
        Some(client.clone()),
        &args.namespace,
        &args.service_account,
        Ambient::from_env(),
        endpoints,
    )))
}

/// Starts the webhook when `args` give it an address, its metrics registered in `registry`.
fn serve_webhook(
    client: &kube::Client,
    view: &View,
    args: &RunArgs,
    registry: &mut Registry,
    shutdown: Shutdown,
) -> Result<Option<Served>, Error> {
    let Some(addr) = args.webhook.addr else { return Ok(None) };
    let hook = &args.webhook;
    let tls = match (&hook.cert_file, &hook.key_file) {
        (Some(cert), Some(key)) => webhook::TlsSource::Files { cert: cert.clone(), key: key.clone() },
        _ => webhook::TlsSource::SelfManaged {
            secret: hook.secret.clone(),
            configuration: hook.configuration.clone(),
            dns_names: if hook.dns_names.is_empty() {
                vec![format!("regcred.{}.svc", args.namespace)]
            } else {
                hook.dns_names.clone()
            },
            lifetime: hook.cert_lifetime,
        },
    };
    let handler = webhook::Webhook::new(client.clone(), view.clone(), &args.namespace, hook).map_err(Error::Config)?;
    handler.stats.register(registry);
    let listening = handler.listening();
    let server = tokio::spawn(webhook::serve(Arc::new(handler), addr, tls, hook.client_ca_file.clone(), shutdown));
    Ok(Some(Served { listening, server }))
}

/// Ready when the caches hold their initial lists and, when this replica serves the webhook, it listens.
fn readiness(view: View, webhook: Option<watch::Receiver<bool>>) -> metrics::Readiness {
    Box::new(move || {
        if !view.is_ready() {
            Err("caches are not synced yet")
        } else if webhook.as_ref().is_some_and(|listening| !*listening.borrow()) {
            Err("the webhook is not serving yet")
        } else {
            Ok(())
        }
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`, unless it is off.
async fn serve_ops(
    args: &RunArgs,
    registry: Registry,
    ready: metrics::Readiness,
    shutdown: Shutdown,
) -> Result<Option<JoinHandle<std::io::Result<()>>>, Error> {
    let Some(addr) = args.metrics_addr.0 else { return Ok(None) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { what: "metrics", addr, source })?;
    let endpoint = Arc::new(metrics::Endpoint::new(registry, ready));
    Ok(Some(tokio::spawn(metrics::serve(endpoint, listener, shutdown))))
}

/// Joins the leader election when `args` ask for one: whether this replica leads, as it changes, and the
/// election's task (which ends once the lease is released).
async fn elect(
    client: &kube::Client,
    args: &RunArgs,
) -> Result<(Option<watch::Receiver<bool>>, Option<JoinHandle<()>>), Error> {
    if !args.leader_election.enabled {
        return Ok((None, None));
    }
    let election = controller::leader::Election {
        lease: args.leader_election.lease.clone(),
        namespace: args.namespace.clone(),
        identity: args.leader_election.identity.clone().unwrap_or_else(controller::leader::default_identity),
        duration: args.leader_election.duration,
    };
    info!(lease = %election.lease, identity = %election.identity, "joining the leader election");
    let (leading, task) = controller::leader::join(client.clone(), &election)
        .await
        .map_err(|e| Error::Controller(controller::Error::LeaderElection(e)))?;
    Ok((Some(leading), Some(task)))
}

/// Runs until any part ends, and says why: a webhook or endpoint that cannot serve must be noticed, not hidden.
async fn first_to_end(
    controller: impl Future<Output = Result<(), controller::Error>>,
    webhook: Option<Served>,
    ops: Option<JoinHandle<std::io::Result<()>>>,
) -> Result<(), Error> {
    let webhook = async move {
        match webhook {
            Some(served) => served.server.await.map_err(|e| Error::Task(e.to_string()))?.map_err(Error::from),
            None => futures::future::pending().await,
        }
    };
    let ops = async move {
        match ops {
            Some(server) => server
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|e| Error::Task(format!("metrics endpoint: {e}"))),
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        res = controller => res.map_err(Error::from),
        res = webhook => res,
        res = ops => res,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_once_the_caches_are_and_the_webhook_listens_when_there_is_one() {
        let (view, _feeds) = View::detached("regcred-system", 2.0 / 3.0);
        assert_eq!(readiness(view.clone(), None)(), Ok(()));
        let listening = watch::Sender::new(false);
        let ready = readiness(view, Some(listening.subscribe()));
        assert_eq!(ready(), Err("the webhook is not serving yet"));
        listening.send_replace(true);
        assert_eq!(ready(), Ok(()));
    }
}
