//! The RegistryProfile controller: turns each profile into a `kubernetes.io/dockerconfigjson` Secret in every
//! namespace it selects, repairs drift, removes what is no longer wanted, and reports status and Events.
//!
//! It reads the state layer's view ([`crate::state`]) and never watches anything itself. Each reconcile is
//! resolve -> decide -> execute -> status ([`reconcile`]): the decisions are pure ([`crate::resolve`], [`plan`],
//! [`status`], [`patch_service_accounts`]), the writes go through the one Secret writer ([`crate::secrets`]), and
//! the registry preflight runs on workers of its own ([`preflight`]). A namespace that appears is served at once
//! by its own small path ([`new_namespaces`]), whatever the number of namespaces a profile already serves. The kubelet's
//! pull failures are read from a stream the state layer opens ([`pull_failures`]), and Pods admitted without
//! their Secret are healed ([`healing`]). The controller owns its metrics ([`Metrics`]) and knows nothing of the
//! webhook but whether it listens ([`Settings::webhook`]).
//!
//! Cleanup after a deleted profile is left to Kubernetes' garbage collector: every managed Secret carries an
//! ownerReference to its profile. Unlike a finalizer, this cannot leave a profile stuck in deletion when regcred is
//! down or uninstalled, and it still removes every Secret. Deselection, renames and anonymous profiles are
//! handled by the reconcile itself, which deletes only Secrets whose ownerReference names the profile's UID, and
//! only as many at once as the deletion guard ([`crate::secrets::guard`]) releases.

pub mod checks;
pub mod events;
mod healing;
pub mod leader;
mod metrics;
mod new_namespaces;
pub mod patch_service_accounts;
pub mod plan;
pub mod preflight;
mod pull_failures;
mod reconcile;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Config as ControllerRuntimeConfig, Controller};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::RegistryProfile;
use crate::secrets::WriteBudget;
use crate::state::View;
use crate::state::service_accounts::record_of;
use events::{Recorder, Reporter};
pub use metrics::Metrics;
pub use reconcile::STATUS_SETTLE;

/// Errors of the controller layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the RegistryProfile CRD is not installed (apply crds/ or install the chart): {0}")]
    CrdNotInstalled(#[source] kube::Error),
    #[error("a watch cache stopped before it was ready")]
    CacheStopped,
    #[error("profile has no uid")]
    MissingUid,
    #[error("status update failed: {0}")]
    StatusUpdate(#[source] kube::Error),
    #[error("the Secret sync task failed: {0}")]
    SyncTask(String),
    #[error("the leader election ended; this replica can no longer know whether it leads")]
    LeaderElectionEnded,
    #[error("cannot join the leader election (Lease in regcred's namespace): {0}")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::CrdNotInstalled(_) => "crd_not_installed",
            Self::CacheStopped => "cache_stopped",
            Self::MissingUid => "missing_uid",
            Self::StatusUpdate(_) => "status_update",
            Self::SyncTask(_) => "sync_task",
            Self::LeaderElectionEnded | Self::LeaderElection(_) => "leader_election",
        }
    }
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// regcred's own namespace: the only place source Secrets are read from.
    pub operator_namespace: String,
    /// Secret and ServiceAccount writes in flight at once, across all reconciles.
    pub write_concurrency: usize,
    /// Only profiles matching this label selector are handled (empty: all).
    pub profile_selector: Option<String>,
    /// Reporter name on Events.
    pub reporter: String,
    /// Self-healing's most for every profile (`--healing`).
    pub healing: crate::api::HealingMode,
    /// Whether this replica's webhook listens, as it changes; `None` when this deployment serves no webhook (then
    /// nothing gives a re-created Pod its Secret, and self-healing does not evict).
    pub webhook: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub view: View,
    pub metrics: Arc<Metrics>,
    /// The status last written per profile (by uid), and when: a reconcile that starts before that write reaches the
    /// cache sees a stale status and would write the same one again.
    pub written:
        std::sync::Mutex<std::collections::HashMap<String, (crate::api::RegistryProfileStatus, std::time::Instant)>>,
    /// The registry preflight's records and workers.
    pub checks: Arc<preflight::Checks>,
    /// The writes in flight, shared by every reconcile: [`Settings::write_concurrency`] of them.
    pub writes: WriteBudget,
    /// The kubelet's recent pull failures, per profile.
    pub pulls: crate::images::pulls::PullFailures,
    /// Self-healing's loop guards and recent actions.
    pub healer: std::sync::Mutex<crate::images::heal::Healer>,
    /// The client evictions are made with: no retries, so a PodDisruptionBudget's 429 is the answer at once.
    pub evictions: Client,
    /// What each profile's last full plan left, so the next reconcile can plan only what changed.
    pub ledgers: plan::Ledgers,
}

/// How long a written status is trusted over a cached one that differs from it.
const WRITTEN_STATUS_TRUST: Duration = Duration::from_secs(30);

impl Context {
    /// The profile's status as last known: the one this replica wrote a moment ago when the view has not caught
    /// up with it yet, else the view's. A reconcile computes its status from this one, so a view that lags
    /// behind regcred's own status write neither rewrites it nor repeats its Events.
    fn previous_status(&self, profile: &RegistryProfile) -> Option<crate::api::RegistryProfileStatus> {
        let written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match written.get(&profile.uid().unwrap_or_default()) {
            Some((s, at)) if at.elapsed() < WRITTEN_STATUS_TRUST => Some(s.clone()),
            _ => profile.status.clone(),
        }
    }

    fn remember_written(&self, profile: &str, status: crate::api::RegistryProfileStatus) {
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.insert(profile.to_owned(), (status, std::time::Instant::now()));
    }
}

/// Checks that the RegistryProfile CRD is installed: without it nothing else can work, and the error says so.
pub async fn check_crd(client: &Client) -> Result<(), Error> {
    let profiles = Api::<RegistryProfile>::all(client.clone());
    profiles.list_metadata(&ListParams::default().limit(1)).await.map_err(Error::CrdNotInstalled)?;
    Ok(())
}

/// Runs the controller over `view` until `shutdown` completes.
/// Reconciles while this replica leads (always, without an election). On losing the lease the controller
/// stops after its in-flight reconciles and minting stops, so two replicas never write at once for longer than
/// the lease allows; on winning it again, every profile is reconciled once.
pub async fn run_when_leading(
    client: Client,
    settings: Settings,
    view: View,
    metrics: Arc<Metrics>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
    leading: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(), Error> {
    use futures::FutureExt;
    let Some(mut leading) = leading else {
        metrics.set_leading(true);
        return run(client, settings, view, metrics, shutdown).await;
    };
    loop {
        info!("waiting to lead");
        tokio::select! {
            () = shutdown.clone() => return Ok(()),
            won = leader::until(&mut leading, true) => if !won { return Err(Error::LeaderElectionEnded) },
        }
        info!("leading: reconciling profiles and minting tokens");
        metrics.set_leading(true);
        let lost = {
            let mut leading = leading.clone();
            async move {
                leader::until(&mut leading, false).await;
            }
        };
        let stop = leader::either(shutdown.clone(), lost).shared();
        let result = run(client.clone(), settings.clone(), view.clone(), metrics.clone(), stop).await;
        metrics.set_leading(false);
        view.refresher().retain(|_| false);
        result?;
        if shutdown.clone().now_or_never().is_some() {
            return Ok(());
        }
        warn!("lost the lease: another replica reconciles now");
    }
}

/// Reconciles every profile once, then each the view marks dirty, until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    view: View,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    check_crd(&client).await?;
    let controller = Controller::for_stream(triggers(&client, &view, &metrics), view.profile_store())
        .with_config(ControllerRuntimeConfig::default().concurrency(4));
    let fast = tokio::spawn(new_namespaces::serve(client.clone(), view.clone()));
    let ctx = context(client, settings, view, metrics).await;
    let pulls = tokio::spawn(pull_failures::follow(ctx.clone()));
    info!("controller starting");
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            |profile, ctx| async move {
                let started = std::time::Instant::now();
                let result = reconcile::reconcile(profile, ctx.clone()).await;
                ctx.metrics.reconciled(result.is_ok(), started);
                result
            },
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(profile = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
    fast.abort();
    pulls.abort();
    info!("controller stopped");
    Ok(())
}

/// What the controller reconciles: once the caches are ready, every profile once (this replica may have missed
/// their events while it was not reconciling), then whatever the view marks dirty. A name no longer in the view
/// stops its minting and has its ServiceAccount entries released.
fn triggers(
    client: &Client,
    view: &View,
    metrics: &Arc<Metrics>,
) -> impl futures::Stream<Item = Result<RegistryProfile, kube::runtime::watcher::Error>> + Send + 'static {
    let all_once = {
        let view = view.clone();
        async move {
            view.ready().await;
            // Every profile, and every profile named in a ServiceAccount's record (it may have been deleted
            // while no replica was reconciling).
            let mut names: BTreeSet<String> = view.profiles().iter().map(|p| p.name_any()).collect();
            names.extend(
                view.service_accounts().filter_map(|sa| Some(record_of(&sa))).into_iter().flat_map(BTreeMap::into_keys),
            );
            names.into_iter().collect::<Vec<_>>()
        }
    };
    let (client, view, metrics) = (client.clone(), view.clone(), metrics.clone());
    futures::stream::once(all_once).chain(view.dirty().clone().batches()).flat_map(move |names| {
        let mut objects = Vec::new();
        for name in names {
            if let Some(p) = view.profile(&name) {
                objects.push(Ok(RegistryProfile::clone(&p)));
            } else {
                // Gone from the view: its minting stops, and what it left on ServiceAccounts goes too (its
                // Secrets are the garbage collector's, never held).
                view.refresher().stop(&name);
                drop(view.dirty().changed(&name));
                metrics.set_deletions_held(&name, 0);
                if !recorded_by(&view, &name).is_empty() {
                    tokio::spawn(release_service_accounts(client.clone(), view.clone(), name));
                }
            }
        }
        futures::stream::iter(objects)
    })
}

/// What every reconcile of this term shares.
async fn context(client: Client, settings: Settings, view: View, metrics: Arc<Metrics>) -> Arc<Context> {
    let recorder = Recorder::new(client.clone(), Reporter { controller: settings.reporter.clone(), instance: None });
    let evictions = crate::client::infer_without_retries().await.unwrap_or_else(|e| {
        warn!(error = %e, "no client without retries; a refused eviction is retried by the default client");
        client.clone()
    });
    Arc::new(Context {
        evictions,
        writes: WriteBudget::new(settings.write_concurrency),
        checks: preflight::Checks::new(PREFLIGHT_WORKERS, view.dirty().clone()),
        client,
        settings,
        recorder,
        view,
        metrics,
        written: std::sync::Mutex::default(),
        pulls: crate::images::pulls::PullFailures::default(),
        healer: std::sync::Mutex::default(),
        ledgers: plan::Ledgers::default(),
    })
}

/// Registry preflights that may run at once, across all profiles.
const PREFLIGHT_WORKERS: usize = 4;

/// Removes the ServiceAccount entries of a profile that is no longer in this replica's view, once the API
/// confirms it is gone (with a profile selector, another replica may own it).
pub async fn release_service_accounts(client: Client, view: View, profile: String) {
    match Api::<RegistryProfile>::all(client.clone()).get_metadata_opt(&profile).await {
        Ok(None) => {}
        Ok(Some(_)) => return,
        Err(e) => {
            warn!(profile, error = %e, "could not check whether a profile is gone; its ServiceAccount entries stay");
            return;
        }
    }
    for sa in recorded_by(&view, &profile) {
        let removed = patch_service_accounts::Want::Removed;
        if let Err(e) = patch_service_accounts::converge(&client, &sa, &profile, &removed).await {
            warn!(profile, namespace = sa.namespace().unwrap_or_default(), account = %sa.name_any(), error = %e,
                "could not remove a deleted profile's entry from a ServiceAccount");
        }
    }
}

/// The cached ServiceAccounts on which `profile` recorded an entry.
fn recorded_by(view: &View, profile: &str) -> Vec<ServiceAccount> {
    view.service_accounts().filter_map(|sa| record_of(&sa).contains_key(profile).then_some(sa))
}

/// When to look again without an outside trigger. A healthy profile is re-checked every 10 minutes as a safety
/// net. A failing one is retried soon, then less and less often: half the time it has been failing, between 5 s
/// and 5 min. Failures such as a conflicting foreign Secret produce no watch event when they are fixed, so the
/// retry is what heals them.
pub fn requeue_after(status: &crate::api::RegistryProfileStatus, now: jiff::Timestamp) -> Duration {
    let failing_since = status
        .conditions
        .iter()
        .filter(|c| c.type_ == crate::api::conditions::READY && c.status != crate::api::conditions::TRUE)
        .map(|c| c.last_transition_time.0)
        .next();
    match failing_since {
        None => Duration::from_secs(600),
        Some(since) => {
            let failing_for = now.duration_since(since).as_secs().max(0).unsigned_abs();
            Duration::from_secs((failing_for / 2).clamp(5, 300))
        }
    }
}

fn error_policy(profile: Arc<RegistryProfile>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(profile = %profile.name_any(), error = %error, kind = error.metric_label(), "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests;
