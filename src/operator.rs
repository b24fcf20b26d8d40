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
use crate::{client, controller, credential_provider, memory, metrics, webhook};

/// Why `regcred run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    Kubeconfig(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] controller::Error),
    #[error(transparent)]
    Webhook(#[from] webhook::ServeError),
    #[error(transparent)]
    CredentialProvider(#[from] credential_provider::ServeError),
    #[error("cannot serve {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("a task of regcred failed: {0}")]
    Task(String),
}

/// Completes when the process is asked to stop; every part of it shares it.
type Shutdown = Shared<BoxFuture<'static, ()>>;

/// What this replica serves over HTTPS (the webhook, the credential endpoint, or both, with one certificate):
/// whether each listens, and the servers' task.
struct Served {
    /// The webhook's listener, when there is one.
    webhook: Option<watch::Receiver<bool>>,
    /// Every listener, named for `/readyz`.
    listening: Vec<(&'static str, watch::Receiver<bool>)>,
    server: JoinHandle<Result<(), Error>>,
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
    let served = serve_https(&client, &view, &args, &mut registry, shutdown.clone())?;
    // Bursts are seen through the reconciles: that is where a sync's writes, plans and status updates happen, and
    // a relist after a lost watch reconciles every profile too.
    let counted = metrics.clone();
    tokio::spawn(memory::trim_after_bursts(move || counted.reconciles_total(), Duration::from_secs(10)));
    let listening = served.as_ref().and_then(|s| s.webhook.clone());
    let listeners = served.as_ref().map(|s| s.listening.clone()).unwrap_or_default();
    let ops = serve_ops(&args, registry, readiness(view.clone(), listeners), shutdown.clone()).await?;
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
    let result = first_to_end(controller, served, ops).await;
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
    Ok(Arc::new(
        Identity::new(Some(client.clone()), &args.namespace, &args.service_account, Ambient::from_env(), endpoints)
            .refusing(&args.credential_provider.audience),
    ))
}

/// Starts the webhook and the credential endpoint when `args` give them an address, with one serving certificate
/// (the endpoint without client certificates), their metrics registered in `registry`.
fn serve_https(
    client: &kube::Client,
    view: &View,
    args: &RunArgs,
    registry: &mut Registry,
    shutdown: Shutdown,
) -> Result<Option<Served>, Error> {
    let (hook_addr, provider_addr) = (args.webhook.addr, args.credential_provider.addr);
    if hook_addr.is_none() && provider_addr.is_none() {
        return Ok(None);
    }
    let hook = &args.webhook;
    let tls = tls_source(args);
    let handler =
        Arc::new(webhook::Webhook::new(client.clone(), view.clone(), &args.namespace, hook).map_err(Error::Config)?);
    let mut listening = Vec::new();
    let webhook_listening = hook_addr.map(|_| {
        handler.stats.register(registry);
        handler.listening()
    });
    if let Some(l) = &webhook_listening {
        listening.push(("the webhook", l.clone()));
    }
    let endpoint = provider_addr.map(|addr| {
        let cp = &args.credential_provider;
        let endpoint = credential_provider::Endpoint::new(client.clone(), view.clone(), &cp.audience, cp.cache_max);
        endpoint.stats.register(registry);
        listening.push(("the credential endpoint", endpoint.listening()));
        (Arc::new(endpoint), addr)
    });
    let client_ca = hook.client_ca_file.clone();
    let server = tokio::spawn(async move {
        let tls = webhook::tls(&handler, &tls, client_ca.as_deref()).await?;
        let plain = tls.without_client_certificates();
        let hook = async {
            match hook_addr {
                Some(addr) => webhook::serve(handler, addr, tls, shutdown.clone()).await.map_err(Error::from),
                None => futures::future::pending().await,
            }
        };
        let provider = async {
            match endpoint {
                Some((endpoint, addr)) => {
                    credential_provider::serve(endpoint, addr, plain, shutdown.clone()).await.map_err(Error::from)
                }
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            res = hook => res,
            res = provider => res,
        }
    });
    Ok(Some(Served { webhook: webhook_listening, listening, server }))
}

/// Where the serving certificate of the webhook and the credential endpoint comes from: files, or regcred's own
/// CA, published where the listeners `args` turn on need it.
fn tls_source(args: &RunArgs) -> webhook::TlsSource {
    let hook = &args.webhook;
    match (&hook.cert_file, &hook.key_file) {
        (Some(cert), Some(key)) => webhook::TlsSource::Files { cert: cert.clone(), key: key.clone() },
        _ => webhook::TlsSource::SelfManaged {
            secret: hook.secret.clone(),
            // Without a webhook there is no configuration to keep the caBundle of.
            configuration: hook.addr.map(|_| hook.configuration.clone()),
            ca_config_map: args.credential_provider.addr.map(|_| args.credential_provider.ca_config_map.clone()),
            dns_names: if hook.dns_names.is_empty() {
                vec![format!("regcred.{}.svc", args.namespace)]
            } else {
                hook.dns_names.clone()
            },
            lifetime: hook.cert_lifetime,
        },
    }
}

/// Ready when the caches hold their initial lists and every HTTPS listener of this replica (the webhook, the
/// credential endpoint) listens.
fn readiness(view: View, listening: Vec<(&'static str, watch::Receiver<bool>)>) -> metrics::Readiness {
    Box::new(move || {
        if !view.is_ready() {
            return Err("caches are not synced yet");
        }
        match listening.iter().find(|(_, l)| !*l.borrow()) {
            Some(("the webhook", _)) => Err("the webhook is not serving yet"),
            Some(_) => Err("the credential endpoint is not serving yet"),
            None => Ok(()),
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
    served: Option<Served>,
    ops: Option<JoinHandle<std::io::Result<()>>>,
) -> Result<(), Error> {
    let webhook = async move {
        match served {
            Some(served) => served.server.await.map_err(|e| Error::Task(e.to_string()))?,
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
        assert_eq!(readiness(view.clone(), Vec::new())(), Ok(()));
        let (listening, endpoint) = (watch::Sender::new(false), watch::Sender::new(false));
        let ready = readiness(
            view,
            vec![("the webhook", listening.subscribe()), ("the credential endpoint", endpoint.subscribe())],
        );
        assert_eq!(ready(), Err("the webhook is not serving yet"));
        listening.send_replace(true);
        assert_eq!(ready(), Err("the credential endpoint is not serving yet"));
        endpoint.send_replace(true);
        assert_eq!(ready(), Ok(()));
    }
}
