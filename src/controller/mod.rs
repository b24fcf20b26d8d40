//! The RegistryProfile controller: turns each profile into a `kubernetes.io/dockerconfigjson` Secret in every
//! namespace it selects, repairs drift, removes what is no longer wanted, and reports status and Events.
//!
//! Decisions live in pure modules ([`selection`], [`plan`], [`status`]); this module holds the watches, the
//! writes and the status updates around them.
//!
//! Cleanup after a deleted profile is left to Kubernetes' garbage collector: every managed Secret carries an
//! ownerReference to its profile. Unlike a finalizer, this cannot leave a profile stuck in deletion when regcred is
//! down or uninstalled, and it still removes every Secret. Deselection, renames and anonymous profiles are
//! handled by the reconcile itself, which deletes only Secrets whose ownerReference names the profile's UID.

pub mod cache;
pub mod checks;
pub mod compact;
pub mod leader;
pub mod managed;
pub mod namespaces;
pub mod plan;
pub mod selection;
pub mod service_accounts;
pub mod status;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::{NamespaceFailure, RegistryProfile};
use crate::credentials::tokens::TokenSource;
use crate::credentials::{DockerConfig, SecretBytes, dockerconfig_from_source};
use crate::registry::{config_key, resolve_server};
pub use cache::Caches;
use plan::{ObservedSecret, Target};
use selection::CompiledSelection;
use status::{CredentialsOutcome, SyncOutcome};

/// Field manager of every write regcred makes.
pub const FIELD_MANAGER: &str = "regcred";
/// Label on every managed Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "regcred";
/// Label naming the profile a managed Secret belongs to.
pub const PROFILE_LABEL: &str = "regcred.dev/profile";
/// The only Secret type regcred writes.
pub const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// Annotation on managed Secrets holding short-lived tokens: when they expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "regcred.dev/expires-at";

/// The Secret in regcred's own namespace holding the current short-lived token of the profile with `uid`.
pub fn token_copy_name(uid: &str) -> String {
    format!("regcred-token-{uid}")
}

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
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub caches: Caches,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The status last written per profile, and when: a reconcile that starts before that write reaches the
    /// cache sees a stale status and would write the same one again.
    pub written:
        std::sync::Mutex<std::collections::HashMap<String, (crate::api::RegistryProfileStatus, std::time::Instant)>>,
    /// The last registry preflight per profile.
    pub checks: std::sync::Mutex<std::collections::HashMap<String, checks::Record>>,
    /// The writes in flight, shared by every reconcile: [`Settings::write_concurrency`] of them.
    pub writes: sync::WriteBudget,
}

/// How long a written status is trusted over a cached one that differs from it.
const WRITTEN_STATUS_TRUST: Duration = Duration::from_secs(30);

impl Context {
    fn recently_written(&self, profile: &str, status: &crate::api::RegistryProfileStatus) -> bool {
        let written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.get(profile).is_some_and(|(s, at)| s == status && at.elapsed() < WRITTEN_STATUS_TRUST)
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

/// Runs the controller over `caches` until `shutdown` completes.
/// Reconciles while this replica leads (always, without an election). On losing the lease the controller
/// stops after its in-flight reconciles and minting stops, so two replicas never write at once for longer than
/// the lease allows; on winning it again, every profile is reconciled once.
pub async fn run_when_leading(
    client: Client,
    settings: Settings,
    caches: Caches,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
    leading: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(), Error> {
    use futures::FutureExt;
    let Some(mut leading) = leading else {
        metrics.leader.set(1);
        return run(client, settings, caches, metrics, shutdown).await;
    };
    loop {
        info!("waiting to lead");
        tokio::select! {
            _ = shutdown.clone() => return Ok(()),
            won = leader::until(&mut leading, true) => if !won { return Err(Error::LeaderElectionEnded) },
        }
        info!("leading: reconciling profiles and minting tokens");
        metrics.leader.set(1);
        let lost = {
            let mut leading = leading.clone();
            async move {
                leader::until(&mut leading, false).await;
            }
        };
        let stop = leader::either(shutdown.clone(), lost).shared();
        let result = run(client.clone(), settings.clone(), caches.clone(), metrics.clone(), stop).await;
        metrics.leader.set(0);
        caches.refresher.retain(|_| false);
        result?;
        if shutdown.clone().now_or_never().is_some() {
            return Ok(());
        }
        warn!("lost the lease: another replica reconciles now");
    }
}

pub async fn run(
    client: Client,
    settings: Settings,
    caches: Caches,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    check_crd(&client).await?;
    // Once the caches are ready, every profile once (this replica may have missed their events while it was not
    // reconciling), then whatever the caches mark dirty.
    let triggers = {
        let caches = caches.clone();
        let all_once = {
            let caches = caches.clone();
            async move {
                caches.ready.clone().await;
                // Every profile, and every profile named in a ServiceAccount's record (it may have been deleted
                // while no replica was reconciling).
                let mut names: BTreeSet<String> = caches.profiles.state().iter().map(|p| p.name_any()).collect();
                names.extend(
                    caches
                        .service_accounts
                        .filter_map(|sa| Some(service_accounts::record_of(&sa)))
                        .into_iter()
                        .flat_map(BTreeMap::into_keys),
                );
                names.into_iter().collect::<Vec<_>>()
            }
        };
        let client = client.clone();
        futures::stream::once(all_once).chain(caches.dirty.clone().batches()).flat_map(move |names| {
            let mut objects = Vec::new();
            for name in names {
                match caches.profiles.get(&ObjectRef::new(&name)) {
                    Some(p) => objects.push(Ok(RegistryProfile::clone(&p))),
                    // Gone from the view: its minting stops, and what it left on ServiceAccounts goes too (its
                    // Secrets are the garbage collector's).
                    None => {
                        caches.refresher.stop(&name);
                        if !recorded_by(&caches, &name).is_empty() {
                            tokio::spawn(release_service_accounts(client.clone(), caches.clone(), name));
                        }
                    }
                }
            }
            futures::stream::iter(objects)
        })
    };
    let controller = Controller::for_stream(triggers, caches.profiles.clone())
        .with_config(ControllerRuntimeConfig::default().concurrency(4));
    let recorder = Recorder::new(client.clone(), Reporter { controller: settings.reporter.clone(), instance: None });
    let ctx = Arc::new(Context {
        writes: sync::WriteBudget::new(settings.write_concurrency),
        client,
        settings,
        recorder,
        caches,
        metrics,
        written: Default::default(),
        checks: Default::default(),
    });
    info!("controller starting");
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            |profile, ctx| async move {
                let started = std::time::Instant::now();
                let result = reconcile(profile, ctx.clone()).await;
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
    info!("controller stopped");
    Ok(())
}

/// The Secret name a profile writes.
pub fn secret_name(profile: &RegistryProfile) -> String {
    profile.spec.secret_name.clone().unwrap_or_else(|| format!("regcred-{}", profile.name_any()))
}

fn failed(reason: &str, message: impl Into<String>) -> CredentialsOutcome {
    CredentialsOutcome::Failed { reason: reason.into(), message: message.into() }
}

/// The keys of a source Secret in regcred's namespace, from the cache.
fn source_data(caches: &Caches, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, CredentialsOutcome> {
    let key = ObjectRef::<Secret>::new(name).within(namespace);
    let source = caches.sources.get(&key).ok_or_else(|| {
        let e = crate::credentials::CredentialError::SecretNotFound { namespace: namespace.into(), name: name.into() };
        failed(e.reason(), e.to_string())
    })?;
    Ok(source.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect())
}

/// The token source of a profile with `credentials.ecr` or `credentials.gcp` (`None` for other profiles).
fn token_source(
    profile: &RegistryProfile,
    registry: Option<&str>,
    caches: &Caches,
    operator_namespace: &str,
) -> Option<Result<TokenSource, CredentialsOutcome>> {
    let creds = &profile.spec.credentials;
    if let Some(ecr) = &creds.ecr {
        return Some(ecr_source(profile, ecr, registry, caches, operator_namespace));
    }
    creds.gcp.as_ref().map(|gcp| gcp_source(gcp, registry, caches, operator_namespace))
}

fn ecr_source(
    profile: &RegistryProfile,
    ecr: &crate::api::EcrTokenSource,
    registry: Option<&str>,
    caches: &Caches,
    ns: &str,
) -> Result<TokenSource, CredentialsOutcome> {
    use crate::credentials::ecr::{PUBLIC_REGION, known_region, region_of_host};
    use crate::credentials::tokens::{AwsKeys, EcrSource};
    let public = profile.spec.provider == crate::api::Provider::EcrPublic;
    let region = if public {
        Some(PUBLIC_REGION.to_owned())
    } else {
        ecr.region.clone().or_else(|| registry.and_then(region_of_host))
    };
    let region = region.ok_or_else(|| {
        failed("RegionInvalid", "no AWS region: set credentials.ecr.region, or use an ECR host as server")
    })?;
    if !known_region(&region) {
        return Err(failed("RegionInvalid", format!("{region} is not a region of any AWS partition")));
    }
    let keys = match &ecr.secret_ref {
        None => None,
        Some(r) => {
            let data = source_data(caches, ns, &r.name)?;
            let get = |k: &str| data.get(k).filter(|v| !v.is_empty()).cloned();
            let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) else {
                return Err(failed(
                    "MissingKey",
                    format!("Secret {ns}/{} needs the keys aws_access_key_id and aws_secret_access_key", r.name),
                ));
            };
            Some(AwsKeys {
                access_key_id: String::from_utf8_lossy(&id).trim().to_owned(),
                secret_access_key: SecretBytes::new(secret),
                session_token: get("aws_session_token").map(SecretBytes::new),
            })
        }
    };
    Ok(TokenSource::Ecr(EcrSource {
        public,
        region,
        registry_ids: ecr.registry_ids.clone(),
        role_arn: ecr.role_arn.clone(),
        external_id: ecr.external_id.clone(),
        keys,
    }))
}

fn gcp_source(
    gcp: &crate::api::GcpTokenSource,
    registry: Option<&str>,
    caches: &Caches,
    ns: &str,
) -> Result<TokenSource, CredentialsOutcome> {
    let registry = registry.ok_or_else(|| failed("MissingServer", "spec.server is required for this provider"))?;
    let data = source_data(caches, ns, &gcp.secret_ref.name)?;
    let key =
        data.get("key.json").filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
            failed("MissingKey", format!("Secret {ns}/{} needs the key key.json", gcp.secret_ref.name))
        })?;
    Ok(TokenSource::Gcp(crate::credentials::tokens::GcpSource {
        key: SecretBytes::new(key),
        registry_key: config_key(registry),
    }))
}

/// Whether a profile's credentials are short-lived tokens regcred mints.
pub fn mints_tokens(profile: &RegistryProfile) -> bool {
    profile.spec.credentials.ecr.is_some() || profile.spec.credentials.gcp.is_some()
}

/// The credentials a token-source profile writes now: its last good token, if it has not expired.
/// `start`: begin minting if needed (the controller); the webhook only looks.
fn token_credentials(
    profile: &str,
    source: &TokenSource,
    caches: &Caches,
    start: bool,
) -> Result<Option<DockerConfig>, CredentialsOutcome> {
    let snapshot =
        if start { Some(caches.refresher.snapshot(profile, source)) } else { caches.refresher.peek(profile) };
    let snapshot = snapshot.unwrap_or_default();
    match (snapshot.token, snapshot.error) {
        // The newest token minting could give: written even if it claims to be expired already (the refresher
        // then mints again at its minimum interval).
        (Some(t), None) => Ok(Some(t.config)),
        // Minting fails: the last good token serves until it expires.
        (Some(t), Some(_)) if t.expires_at > jiff::Timestamp::now() => Ok(Some(t.config)),
        (_, Some(e)) => Err(failed(e.reason, e.message)),
        (None, None) => Err(failed("Minting", "minting the first token")),
    }
}

fn resolve_credentials(
    profile: &RegistryProfile,
    registry: Option<&str>,
    caches: &Caches,
    operator_namespace: &str,
    start_minting: bool,
) -> Result<Option<DockerConfig>, CredentialsOutcome> {
    let creds = &profile.spec.credentials;
    if let Some(source) = token_source(profile, registry, caches, operator_namespace) {
        return token_credentials(&profile.name_any(), &source?, caches, start_minting);
    }
    let Some(secret_ref) = creds.secret_ref.as_ref() else {
        return if creds.anonymous == Some(true) {
            Ok(None)
        } else {
            Err(CredentialsOutcome::Failed {
                reason: "NoCredentialSource".into(),
                message: "set spec.credentials.secretRef or spec.credentials.anonymous: true".into(),
            })
        };
    };
    let Some(registry) = registry else {
        return Err(CredentialsOutcome::Failed {
            reason: "MissingServer".into(),
            message: "spec.server is required for this provider".into(),
        });
    };
    let ns = operator_namespace;
    let fail = |e: crate::credentials::CredentialError| CredentialsOutcome::Failed {
        reason: e.reason().into(),
        message: e.to_string(),
    };
    let data = source_data(caches, ns, &secret_ref.name)?;
    let label = format!("{ns}/{}", secret_ref.name);
    dockerconfig_from_source(&label, &data, profile.spec.provider, &config_key(registry)).map(Some).map_err(fail)
}

async fn reconcile(profile: Arc<RegistryProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.caches.ready.clone().await {
        return Err(Error::CacheStopped);
    }
    let name = profile.name_any();
    let uid = profile.uid().ok_or(Error::MissingUid)?;
    if profile.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the Secrets through their ownerReferences.
        return Ok(Action::await_change());
    }
    let registry = resolve_server(profile.spec.provider, profile.spec.server.as_deref());
    let secret_name = secret_name(&profile);

    let credentials =
        resolve_credentials(&profile, registry.as_deref(), &ctx.caches, &ctx.settings.operator_namespace, true);
    if !mints_tokens(&profile) {
        ctx.caches.refresher.stop(&name);
    }
    let token = ctx.caches.refresher.peek(&name);
    if mints_tokens(&profile)
        && let Ok(Some(config)) = &credentials
    {
        let expires_at = token.as_ref().and_then(|t| t.token.as_ref()).map(|m| m.expires_at);
        keep_token_copy(&ctx, &profile, config, expires_at).await;
    }
    let selection = CompiledSelection::new(&profile.spec.namespaces, &ctx.settings.operator_namespace);

    let verdict = match (&profile.spec.validation, &credentials, registry.as_deref()) {
        (Some(validation), Ok(config), Some(registry)) => {
            Some(preflight(&ctx, &profile, validation, registry, config.as_ref()).await)
        }
        _ => {
            ctx.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
            None
        }
    };
    let withheld = verdict
        .as_ref()
        .and_then(|v| v.failure())
        .filter(|_| profile.spec.validation.as_ref().is_some_and(|v| v.on_failure == crate::api::OnFailure::Withhold));

    let mut service_accounts_listed = profile.status.as_ref().and_then(|s| s.service_accounts);
    let (creds_outcome, sync_outcome) = match (&credentials, selection) {
        (Err(failed), _) => (
            failed.clone(),
            SyncOutcome::Skipped {
                reason: "CredentialsUnavailable".into(),
                message: "existing Secrets are left as they are until the credentials resolve".into(),
            },
        ),
        (Ok(config), Ok(_)) if let Some(failure) = withheld => (
            outcome_of(config, &profile, &ctx, token.as_ref()),
            SyncOutcome::Skipped {
                reason: "WithheldByPreflight".into(),
                message: format!(
                    "spec.validation.onFailure is Withhold and the registry preflight failed ({}): existing Secrets are left as they are",
                    failure.reason
                ),
            },
        ),
        (Ok(config), Err(invalid)) => (
            outcome_of(config, &profile, &ctx, token.as_ref()),
            SyncOutcome::Skipped { reason: "InvalidSelector".into(), message: invalid.to_string() },
        ),
        (Ok(config), Ok(selection)) => {
            let selected: BTreeSet<String> = ctx.caches.namespaces.selected_by(&selection);
            let observed: Vec<ObservedSecret> = ctx.caches.managed.observed_for(&name);
            let target = match config {
                Some(cfg) => Target::Write {
                    name: secret_name.clone(),
                    content_hash: plan::content_hash(DOCKER_CONFIG_TYPE, [(DOCKER_CONFIG_KEY, cfg.0.expose())]),
                },
                None => Target::Nothing,
            };
            let plan = plan::plan(&target, &selected, &observed, &uid);
            let failures = if plan.actions.is_empty() {
                Vec::new()
            } else {
                info!(profile = %name, writes = plan.actions.len(), "syncing Secrets");
                let writer = sync::Writer {
                    client: ctx.client.clone(),
                    profile: profile.clone(),
                    secret_name: secret_name.clone(),
                    config: config.clone(),
                    expires_at: token.as_ref().and_then(|t| t.token.as_ref()).map(|m| m.expires_at),
                };
                // The writes run in a task of their own: kube-runtime polls reconcilers inside the controller's
                // stream, where they would share one task with decoding the watch events the writes cause.
                let writes = ctx.writes.clone();
                tokio::spawn(async move { writer.execute(plan.actions, &writes).await })
                    .await
                    .map_err(|e| Error::SyncTask(e.to_string()))?
            };
            let selected_count = if config.is_some() { selected.len() as i32 } else { 0 };
            let synced = selected_count.saturating_sub(failures.len() as i32);
            let failed: BTreeSet<&str> = failures.iter().map(|f| f.namespace.as_str()).collect();
            let in_place: BTreeSet<String> =
                selected.iter().filter(|ns| !failed.contains(ns.as_str())).cloned().collect();
            let secret = config.is_some().then_some(secret_name.as_str());
            let (listed, sa_failures) = sync_service_accounts(&ctx, &profile, secret, &selected, &in_place).await;
            service_accounts_listed = listed;
            let mut failures = failures;
            failures.extend(sa_failures);
            (
                outcome_of(config, &profile, &ctx, token.as_ref()),
                SyncOutcome::Synced { selected: selected_count, synced, failures },
            )
        }
    };

    let now = Time(jiff::Timestamp::now());
    let mut next = status::compute(
        profile.status.as_ref(),
        profile.meta().generation,
        registry,
        &creds_outcome,
        &sync_outcome,
        verdict.as_ref(),
        now,
    );
    next.service_accounts = service_accounts_listed;
    if let Some(t) = &token {
        next.expires_at = t.token.as_ref().map(|m| Time(m.expires_at));
        next.last_refresh_time = t.last_refresh.map(Time);
        next.next_refresh_time = t.next_refresh.map(Time);
    }
    if profile.status.as_ref() != Some(&next) && !ctx.recently_written(&name, &next) {
        let events = status::events(profile.status.as_ref(), &next);
        let ready = next.conditions.iter().find(|c| c.type_ == status::READY);
        info!(
            profile = %name,
            synced = next.sync_summary.as_deref().unwrap_or_default(),
            ready = ready.map(|c| c.status.as_str()).unwrap_or_default(),
            reason = ready.map(|c| c.reason.as_str()).unwrap_or_default(),
            previous = ?profile.status.as_ref().and_then(|s| s.sync_summary.as_deref()),
            "status changed"
        );
        let patch = serde_json::json!({
            "apiVersion": "regcred.dev/v1alpha1",
            "kind": "RegistryProfile",
            "status": next,
        });
        Api::<RegistryProfile>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::StatusUpdate)?;
        ctx.remember_written(&name, next.clone());
        let reference = profile.object_ref(&());
        for ev in events {
            let event = Event {
                type_: if ev.warning { EventType::Warning } else { EventType::Normal },
                reason: ev.reason,
                note: Some(ev.note),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                warn!(profile = %name, error = %e, "could not publish an Event");
            }
        }
    }
    let now = jiff::Timestamp::now();
    let mut after = requeue_after(&next, now);
    if let Some(validation) = &profile.spec.validation
        && let Some(record) = ctx.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&name)
    {
        after = after.min(checks::until_due(record, now, checks::interval(validation)));
    }
    Ok(Action::requeue(after))
}

/// The registry preflight's verdict for `profile`: the last one while nothing it depends on changed and its
/// interval has not passed, otherwise a fresh check (shown as `Checking` meanwhile when something changed).
async fn preflight(
    ctx: &Context,
    profile: &RegistryProfile,
    validation: &crate::api::Validation,
    registry: &str,
    config: Option<&DockerConfig>,
) -> checks::Verdict {
    use crate::registry::preflight::{Failure, Reason, Report};
    let name = profile.name_any();
    let tls = profile.spec.tls.as_ref();
    let fingerprint = checks::fingerprint(validation, tls, registry, config);
    let now = jiff::Timestamp::now();
    let record = ctx.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&name).cloned();
    if let Some(r) = record.as_ref().filter(|r| !checks::due(Some(r), fingerprint, now, checks::interval(validation))) {
        return checks::verdict(&r.report, r.at);
    }
    if record.as_ref().is_none_or(|r| r.fingerprint != fingerprint) {
        let pending = serde_json::json!({"status": {"checks": checks::CHECKING}});
        let api = Api::<RegistryProfile>::all(ctx.client.clone());
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&pending)).await {
            debug!(profile = %name, error = %e, "could not show the preflight as pending");
        }
    }
    let credentials = config.and_then(|c| checks::credentials_in(c, &config_key(registry)));
    let options = checks::options(validation, tls);
    let check = crate::registry::preflight::check(registry, credentials.as_ref(), &validation.images, &options);
    let report = match tokio::time::timeout(PREFLIGHT_TIMEOUT, check).await {
        Ok(report) => report,
        Err(_) => Report {
            registry: registry.to_owned(),
            credentials: Some(Failure {
                reason: Reason::RegistryUnreachable,
                message: format!("the preflight did not finish within {} s", PREFLIGHT_TIMEOUT.as_secs()),
            }),
            images: Vec::new(),
            duration_ms: u64::try_from(PREFLIGHT_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        },
    };
    info!(
        profile = %name,
        result = report.first_failure().map_or("passed", |f| f.reason.as_str()),
        images = report.images.len(),
        duration_ms = report.duration_ms,
        "registry preflight"
    );
    let verdict = checks::verdict(&report, now);
    ctx.checks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name, checks::Record { fingerprint, at: now, report });
    verdict
}

/// The longest a preflight may hold up a reconcile.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(60);

/// ServiceAccount mode for one profile: every cached ServiceAccount gets what the profile wants of it (see
/// [`service_accounts::want`]); only those that need a change are patched. Returns how many accounts list the
/// Secret (`None` when the mode is off) and the accounts that could not be patched.
async fn sync_service_accounts(
    ctx: &Context,
    profile: &RegistryProfile,
    secret: Option<&str>,
    selected: &BTreeSet<String>,
    in_place: &BTreeSet<String>,
) -> (Option<i32>, Vec<NamespaceFailure>) {
    let name = profile.name_any();
    let patterns = profile.spec.service_accounts.as_ref().map(|s| s.names.as_slice());
    let mut listed = 0;
    let work = ctx.caches.service_accounts.filter_map(|sa| {
        let ns = sa.namespace().unwrap_or_default();
        let want =
            service_accounts::want(patterns, &sa.name_any(), selected.contains(&ns), secret, in_place.contains(&ns));
        if matches!(want, service_accounts::Want::Listed(_)) {
            listed += 1;
        }
        let record = service_accounts::record_of(&sa);
        let pulls = sa.image_pull_secrets.as_deref().unwrap_or_default();
        service_accounts::change(pulls, &record, &name, &want).is_some().then_some((sa, want))
    });
    if !work.is_empty() {
        info!(profile = %name, patches = work.len(), "updating ServiceAccounts");
    }
    let client = &ctx.client;
    let name = name.as_str();
    let failures = ctx
        .writes
        .run(work, |(sa, want)| async move {
            match service_accounts::converge(client, &sa, name, &want).await {
                Ok(_) => None,
                Err(e) => Some(NamespaceFailure {
                    namespace: sa.namespace().unwrap_or_default(),
                    reason: "ServiceAccountPatchFailed".into(),
                    message: format!("ServiceAccount {}: {e}", sa.name_any()),
                }),
            }
        })
        .await;
    let listed = patterns.map(|_| listed - failures.len() as i32);
    (listed, failures)
}

/// Removes the ServiceAccount entries of a profile that is no longer in this replica's view, once the API
/// confirms it is gone (with a profile selector, another replica may own it).
pub async fn release_service_accounts(client: Client, caches: Caches, profile: String) {
    match Api::<RegistryProfile>::all(client.clone()).get_metadata_opt(&profile).await {
        Ok(None) => {}
        Ok(Some(_)) => return,
        Err(e) => {
            warn!(profile, error = %e, "could not check whether a profile is gone; its ServiceAccount entries stay");
            return;
        }
    }
    for sa in recorded_by(&caches, &profile) {
        if let Err(e) = service_accounts::converge(&client, &sa, &profile, &service_accounts::Want::Removed).await {
            warn!(profile, namespace = sa.namespace().unwrap_or_default(), account = %sa.name_any(), error = %e,
                "could not remove a deleted profile's entry from a ServiceAccount");
        }
    }
}

/// The cached ServiceAccounts on which `profile` recorded an entry.
fn recorded_by(caches: &Caches, profile: &str) -> Vec<ServiceAccount> {
    caches.service_accounts.filter_map(|sa| service_accounts::record_of(&sa).contains_key(profile).then_some(sa))
}

/// Why [`ensure_secret`] could not put a Secret in place.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("the profile's credentials do not resolve: {0}")]
    Credentials(String),
    #[error("the profile writes no Secret")]
    NothingToWrite,
    #[error("{reason}: {message}")]
    Write { reason: String, message: String },
}

impl From<CredentialsOutcome> for EnsureError {
    fn from(outcome: CredentialsOutcome) -> Self {
        match outcome {
            CredentialsOutcome::Failed { message, .. } => Self::Credentials(message),
            _ => Self::NothingToWrite,
        }
    }
}

/// Makes sure `profile`'s Secret exists in `namespace` now, without waiting for a reconcile: the webhook calls it
/// when a Pod is admitted into a namespace created a moment ago. Creating is idempotent (a Secret that appeared
/// meanwhile is adopted only if it is ours), so racing the controller is harmless.
pub async fn ensure_secret(
    client: &Client,
    caches: &Caches,
    operator_namespace: &str,
    profile: Arc<RegistryProfile>,
    namespace: &str,
) -> Result<(), EnsureError> {
    let registry = resolve_server(profile.spec.provider, profile.spec.server.as_deref());
    let minted = caches.refresher.peek(&profile.name_any()).and_then(|t| t.token).map(|m| m.expires_at);
    let (config, expires_at) =
        match resolve_credentials(&profile, registry.as_deref(), caches, operator_namespace, false) {
            Ok(Some(config)) => (config, minted),
            Ok(None) => return Err(EnsureError::NothingToWrite),
            // Only the leader mints: on another replica (or while a mint is failing) the current token is in the
            // copy the leader keeps in regcred's own namespace.
            Err(outcome) if mints_tokens(&profile) => match copy_of_written(caches, operator_namespace, &profile) {
                Some(copy) => copy,
                None => return Err(EnsureError::from(outcome)),
            },
            Err(outcome) => return Err(EnsureError::from(outcome)),
        };
    let writer = sync::Writer {
        client: client.clone(),
        secret_name: secret_name(&profile),
        expires_at,
        profile,
        config: Some(config),
    };
    // Outside the write budget: an admission must not wait behind a sync's writes.
    match writer.run(plan::Action::Create { namespace: namespace.to_owned() }).await {
        None => Ok(()),
        Some(f) => Err(EnsureError::Write { reason: f.reason, message: f.message }),
    }
}

/// Writes the copy of a minted token into regcred's own namespace when the cached copy differs: once per mint.
async fn keep_token_copy(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    config: &DockerConfig,
    expires_at: Option<jiff::Timestamp>,
) {
    let current = copy_of_written(&ctx.caches, &ctx.settings.operator_namespace, profile);
    if current.is_some_and(|(c, e)| c.0.expose() == config.0.expose() && e == expires_at) {
        return;
    }
    let writer = sync::Writer {
        client: ctx.client.clone(),
        profile: profile.clone(),
        secret_name: token_copy_name(&profile.uid().unwrap_or_default()),
        config: Some(config.clone()),
        expires_at,
    };
    if let Err(e) = writer.keep_token_copy(&ctx.settings.operator_namespace).await {
        warn!(profile = %profile.name_any(), error = %e, "could not keep the token's copy for other replicas");
    }
}

/// The current token of `profile` as the leader keeps it in regcred's own namespace. Never read from the
/// tenants' namespaces: a Secret there could be forged (labels, ownerReferences, even managedFields are written by
/// whoever creates the object), and copying it would plant one tenant's content in another's namespace.
fn copy_of_written(
    caches: &Caches,
    operator_namespace: &str,
    profile: &RegistryProfile,
) -> Option<(DockerConfig, Option<jiff::Timestamp>)> {
    let uid = profile.uid()?;
    let key = ObjectRef::<Secret>::new(&token_copy_name(&uid)).within(operator_namespace);
    let copy = caches.sources.get(&key)?;
    if !copy.owner_references().iter().any(|o| o.uid == uid) {
        return None;
    }
    let expires_at = copy.annotations().get(EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok());
    Some((docker_config_of(Secret::clone(&copy))?, expires_at))
}

/// The `.dockerconfigjson` a Secret holds.
pub fn docker_config_of(secret: Secret) -> Option<DockerConfig> {
    let bytes = secret.data?.remove(DOCKER_CONFIG_KEY)?;
    Some(DockerConfig(SecretBytes::new(bytes.0)))
}

/// When to look again without an outside trigger. A healthy profile is re-checked every 10 minutes as a safety
/// net. A failing one is retried soon, then less and less often: half the time it has been failing, between 5 s
/// and 5 min. Failures such as a conflicting foreign Secret produce no watch event when they are fixed, so the
/// retry is what heals them.
pub fn requeue_after(status: &crate::api::RegistryProfileStatus, now: jiff::Timestamp) -> Duration {
    let failing_since = status
        .conditions
        .iter()
        .filter(|c| c.type_ == status::READY && c.status != "True")
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

fn outcome_of(
    config: &Option<DockerConfig>,
    profile: &RegistryProfile,
    ctx: &Context,
    token: Option<&crate::credentials::refresher::Snapshot>,
) -> CredentialsOutcome {
    let creds = &profile.spec.credentials;
    if mints_tokens(profile) {
        // A token is in place (or this would not be called): say whether minting still works.
        return match token.and_then(|t| t.error.as_ref()) {
            Some(e) => failed(e.reason, format!("{}; the last good token stays in place until it expires", e.message)),
            None => CredentialsOutcome::Resolved {
                source: if creds.ecr.is_some() { "an ECR token" } else { "a GCP access token" }.into(),
            },
        };
    }
    match (config, &creds.secret_ref) {
        (Some(_), Some(r)) => {
            CredentialsOutcome::Resolved { source: format!("Secret {}/{}", ctx.settings.operator_namespace, r.name) }
        }
        _ => CredentialsOutcome::Anonymous,
    }
}

fn error_policy(profile: Arc<RegistryProfile>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(profile = %profile.name_any(), error = %error, kind = error.metric_label(), "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}
