//! One reconcile of one profile: resolve -> decide -> execute -> status.
//!
//! 1. Resolve: the profile's [`Meaning`] from the view (compiled once per generation), where its credentials
//!    come from ([`resolve::source`]), and for token sources the refresher's state (minting starts here).
//! 2. Decide, purely: what to write ([`decide::credentials`]), whether to sync at all ([`decide::gate`]), the
//!    writes that bring every selected namespace to it ([`plan::plan`]), and which of the deletions among them run
//!    now ([`guard::decide`]).
//! 3. Execute: the Secret writes through the one writer, within the shared budget; then ServiceAccount mode.
//! 4. Status: computed ([`status::compute`]) and written only when it changed, with an Event per change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::decide::{self, Written};
use super::events::{Event, EventType};
use super::plan::{self, Target};
use super::status::{self, Held, SyncOutcome};
use super::{Context, Error, patch_service_accounts, preflight, requeue_after};
use crate::api::{NamespaceFailure, OnFailure, RegistryProfile, RegistryProfileStatus};
use crate::names::{
    CONFIRM_DELETIONS_ANNOTATION, DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, FIELD_MANAGER, token_copy_name,
};
use crate::resolve::{self, Meaning, Source};
use crate::secrets::Writer;
use crate::secrets::guard::{self, Cause, Deletion};

/// Reconciles one profile, in a span naming it.
pub async fn reconcile(profile: Arc<RegistryProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", profile = %profile.name_any());
    reconcile_inner(profile, ctx).instrument(span).await
}

/// What the kubelet (pull failures) and self-healing reported lately about the profile `name`, into `next`.
fn reported(ctx: &Context, name: &str, next: &mut crate::api::RegistryProfileStatus, now: jiff::Timestamp) {
    let shown = ctx.pulls.recent(name, now);
    next.pull_failures = shown.selected;
    next.unselected_pull_failures = shown.unselected;
    next.healing = ctx.healer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).status(name, now);
}

async fn reconcile_inner(profile: Arc<RegistryProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.view.ready().await {
        return Err(Error::CacheStopped);
    }
    let name = profile.name_any();
    let uid = profile.uid().ok_or(Error::MissingUid)?;
    if profile.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the Secrets through their ownerReferences.
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();

    // Resolve.
    let meaning = ctx.view.meaning(&profile);
    let source = resolve::source(&profile, meaning.registry.as_deref(), &ctx.view);
    match &source {
        Ok(Source::Token(t)) => drop(ctx.view.refresher().snapshot(&name, t)),
        _ if !resolve::mints_tokens(&profile) => ctx.view.refresher().stop(&name),
        _ => {}
    }
    let token = ctx.view.refresher().peek(&name);

    // Decide.
    let credentials = decide::credentials(&source, token.as_ref(), now);
    if resolve::mints_tokens(&profile)
        && let Ok(Some(written)) = &credentials.write
    {
        keep_token_copy(&ctx, &profile, written).await;
    }
    let preflight = if let (Some(validation), Ok(written), Some(registry)) =
        (&profile.spec.validation, &credentials.write, &meaning.registry)
    {
        Some(ctx.checks.state(
            preflight::Request {
                profile: name.clone(),
                registry: registry.clone(),
                validation: validation.clone(),
                tls: profile.spec.tls.clone(),
                config: written.as_ref().map(|w| w.config.clone()),
            },
            now,
        ))
    } else {
        ctx.checks.forget(&name);
        None
    };
    let withhold = profile.spec.validation.as_ref().is_some_and(|v| v.on_failure == OnFailure::Withhold);
    let gate = decide::gate(&credentials, meaning.selection.as_ref(), preflight.as_ref(), withhold);

    // Execute.
    let mut service_accounts_listed = ctx.previous_status(&profile).and_then(|s| s.service_accounts);
    let sync = match gate {
        Err(skipped) => skipped,
        Ok((written, selection)) => {
            let selected = ctx.view.namespaces().selected_by(selection);
            let conflicts = conflicts(&ctx, &meaning, &selected);
            let secrets = sync_secrets(&ctx, &profile, &meaning, written, &selected, conflicts, &uid).await?;
            let mut failures = secrets.failures;
            let selected_count = if written.is_some() { count(selected.len()) } else { 0 };
            let synced = selected_count.saturating_sub(count(failures.len()));
            let failed: BTreeSet<&str> = failures.iter().map(|f| f.namespace.as_str()).collect();
            let in_place: BTreeSet<String> =
                selected.iter().filter(|ns| !failed.contains(ns.as_str())).cloned().collect();
            let secret = written.is_some().then_some(meaning.secret_name.as_str());
            let (listed, more) =
                sync_service_accounts(&ctx, &profile, secret, &selected, &in_place, &secrets.kept).await;
            service_accounts_listed = listed;
            failures.extend(more);
            SyncOutcome::Synced { selected: selected_count, synced, failures, held: secrets.held }
        }
    };

    // Status.
    let previous = ctx.previous_status(&profile);
    let mut next = status::compute(
        previous.as_ref(),
        profile.meta().generation,
        meaning.registry.clone(),
        &credentials.outcome,
        &sync,
        preflight.as_ref().and_then(preflight::State::shown),
        Time(jiff::Timestamp::now()),
    );
    next.service_accounts = service_accounts_listed;
    reported(&ctx, &name, &mut next, now);
    if matches!(preflight, Some(preflight::State::Pending { .. })) {
        next.checks = Some(super::checks::CHECKING.into());
    }
    if let Some(t) = &token {
        next.expires_at = t.token.as_ref().map(|m| Time(m.expires_at));
        next.last_refresh_time = t.last_refresh.map(Time);
        next.next_refresh_time = t.next_refresh.map(Time);
    }
    write_status(&ctx, &profile, previous.as_ref(), &next).await?;
    let now = jiff::Timestamp::now();
    let mut after = requeue_after(&next, now);
    // A status without the pull failures that are no longer recent, when the oldest turns so.
    let failures = [next.pull_failures.as_slice(), next.unselected_pull_failures.as_slice()].concat();
    let healing = ctx.healer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_expiry(&name, now);
    if let Some(expiry) = crate::images::pulls::next_expiry(&failures, now).into_iter().chain(healing).min() {
        after = after.min(expiry + std::time::Duration::from_secs(1));
    }
    if let Some(validation) = &profile.spec.validation
        && let Some(due) = ctx.checks.until_due(&name, validation, now)
    {
        after = after.min(due);
    }
    Ok(Action::requeue(after))
}

/// A count as status holds it (`int32`; no cluster has more namespaces than that).
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The selected namespaces where another profile writes a Secret of the same name (see
/// [`Meaning::may_write`]), each with the failure status shows for it. Only rivals are looked at, so the usual
/// profile, whose Secret name is its own, costs one pass over the profiles.
fn conflicts(ctx: &Context, meaning: &Meaning, selected: &BTreeSet<String>) -> BTreeMap<String, NamespaceFailure> {
    let all = ctx.view.profiles_and_meanings();
    let rivals: Vec<&Meaning> = all.iter().map(|(_, m)| &**m).filter(|m| meaning.rivals(m)).collect();
    if rivals.is_empty() {
        return BTreeMap::new();
    }
    selected
        .iter()
        .filter_map(|name| {
            let ns = ctx.view.namespace(name)?;
            match meaning.may_write(&ns, rivals.iter().copied()) {
                Err(refusal @ resolve::Refusal::Conflict(_)) => Some((
                    name.clone(),
                    NamespaceFailure {
                        namespace: name.clone(),
                        reason: refusal.reason().into(),
                        message: refusal.message(&meaning.secret_name),
                    },
                )),
                _ => None,
            }
        })
        .collect()
}

/// What a profile's Secret sync did.
struct SecretSync {
    /// The namespaces where a write failed or a conflict holds.
    failures: Vec<NamespaceFailure>,
    /// The deletions the guard holds, as status tells of them.
    held: Option<Held>,
    /// The namespaces no longer selected whose Secret the guard holds: their ServiceAccounts keep listing it.
    kept: BTreeSet<String>,
}

impl SecretSync {
    fn new(profile: &RegistryProfile, failures: Vec<NamespaceFailure>, held: &[Deletion], holding: usize) -> Self {
        let told = (!held.is_empty()).then(|| Held {
            secrets: held.len(),
            message: guard::message(held, holding, &profile.name_any(), profile.meta().generation),
        });
        let kept = held.iter().filter(|d| d.cause == Cause::Deselected).map(|d| d.namespace.clone()).collect();
        Self { failures, held: told, kept }
    }
}

/// Plans and makes the Secret writes of one profile, the deletions among them as far as the deletion guard
/// releases them. Namespaces in `conflicts` are left exactly as they are: nothing created, updated or removed
/// there; the failures returned include theirs.
async fn sync_secrets(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    meaning: &Meaning,
    written: Option<&Written>,
    selected: &BTreeSet<String>,
    conflicts: BTreeMap<String, NamespaceFailure>,
    uid: &str,
) -> Result<SecretSync, Error> {
    let observed = ctx.view.managed().observed_for(&meaning.name);
    let target = match written {
        Some(w) => Target::Write {
            name: meaning.secret_name.clone(),
            content_hash: plan::content_hash(DOCKER_CONFIG_TYPE, [(DOCKER_CONFIG_KEY, w.config.0.expose())]),
        },
        None => Target::Nothing,
    };
    let held: BTreeSet<&str> = conflicts.keys().map(String::as_str).collect();
    let gone = |ns: &str| ctx.view.namespace(ns).is_none_or(|n| n.terminating);
    let mut plan = plan::plan(&target, selected, &held, &observed, uid, gone);
    let was_holding = ctx
        .previous_status(profile)
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == status::DELETIONS_HELD && c.status == "True"));
    let confirmation = profile.annotations().get(CONFIRM_DELETIONS_ANNOTATION).map(String::as_str);
    let decision = guard::decide(
        std::mem::take(&mut plan.deletions),
        plan.holding,
        was_holding,
        guard::confirmed(confirmation, profile.meta().generation),
    );
    if !decision.held.is_empty() {
        debug!(held = decision.held.len(), holding = plan.holding, "deletions held until confirmed or reverted");
    }
    ctx.metrics.set_deletions_held(&meaning.name, decision.held.len());
    plan.actions.extend(decision.released.into_iter().map(plan::Action::Delete));
    let sync = |mut failures: Vec<NamespaceFailure>| {
        failures.extend(conflicts.into_values());
        SecretSync::new(profile, failures, &decision.held, plan.holding)
    };
    if plan.actions.is_empty() {
        return Ok(sync(Vec::new()));
    }
    info!(writes = plan.actions.len(), "syncing Secrets");
    let writer = writer(ctx, profile, &meaning.secret_name, written);
    // The writes run in a task of their own: kube-runtime polls reconcilers inside the controller's stream, where
    // they would share one task with decoding the watch events the writes cause.
    let writes = ctx.writes.clone();
    let actions = std::mem::take(&mut plan.actions);
    let failures = tokio::spawn(async move { writer.execute(actions, &writes).await })
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))?;
    Ok(sync(failures))
}

fn writer(ctx: &Context, profile: &Arc<RegistryProfile>, secret_name: &str, written: Option<&Written>) -> Writer {
    Writer {
        client: ctx.client.clone(),
        view: ctx.view.clone(),
        fresh: None,
        profile: profile.clone(),
        secret_name: secret_name.to_owned(),
        config: written.map(|w| w.config.clone()),
        expires_at: written.and_then(|w| w.expires_at),
    }
}

/// Writes the copy of a minted token into regcred's own namespace when the cached copy differs: once per mint.
async fn keep_token_copy(ctx: &Context, profile: &Arc<RegistryProfile>, written: &Written) {
    let current = resolve::token_copy(profile, &ctx.view);
    if current.is_some_and(|(c, e)| c == written.config && e == written.expires_at) {
        return;
    }
    let writer = writer(ctx, profile, &token_copy_name(&profile.uid().unwrap_or_default()), Some(written));
    if let Err(e) = writer.keep_token_copy(&ctx.settings.operator_namespace).await {
        warn!(error = %e, "could not keep the token's copy for other replicas");
    }
}

/// ServiceAccount mode for one profile: every cached ServiceAccount gets what the profile wants of it (see
/// [`patch_service_accounts::want`]); only those that need a change are patched. In the namespaces in `kept` (no longer
/// selected, their Secret held by the deletion guard) accounts are left as they are. Returns how many accounts list
/// the Secret (`None` when the mode is off) and the accounts that could not be patched.
async fn sync_service_accounts(
    ctx: &Context,
    profile: &RegistryProfile,
    secret: Option<&str>,
    selected: &BTreeSet<String>,
    in_place: &BTreeSet<String>,
    kept: &BTreeSet<String>,
) -> (Option<i32>, Vec<NamespaceFailure>) {
    let name = profile.name_any();
    let patterns = profile.spec.service_accounts.as_ref().map(|s| s.names.as_slice());
    let mut listed = 0;
    let work = ctx.view.service_accounts().filter_map(|sa| {
        let ns = sa.namespace().unwrap_or_default();
        let served = selected.contains(&ns) || kept.contains(&ns);
        let want = patch_service_accounts::want(patterns, &sa.name_any(), served, secret, in_place.contains(&ns));
        if matches!(want, patch_service_accounts::Want::Listed(_)) {
            listed += 1;
        }
        let record = crate::state::service_accounts::record_of(&sa);
        let pulls = sa.image_pull_secrets.as_deref().unwrap_or_default();
        patch_service_accounts::change(pulls, &record, &name, &want).is_some().then_some((sa, want))
    });
    if !work.is_empty() {
        info!(patches = work.len(), "updating ServiceAccounts");
    }
    let client = &ctx.client;
    let name = name.as_str();
    let failures = ctx
        .writes
        .run(work, |(sa, want)| async move {
            match patch_service_accounts::converge(client, &sa, name, &want).await {
                Ok(_) => None,
                Err(e) => Some(NamespaceFailure {
                    namespace: sa.namespace().unwrap_or_default(),
                    reason: "ServiceAccountPatchFailed".into(),
                    message: format!("ServiceAccount {}: {e}", sa.name_any()),
                }),
            }
        })
        .await;
    let listed = patterns.map(|_| listed - count(failures.len()));
    (listed, failures)
}

/// Writes `next` as the profile's status when it differs from the `previous` one (see
/// [`Context::previous_status`]) and from what the view shows, and publishes an Event for each condition that
/// changed.
async fn write_status(
    ctx: &Context,
    profile: &RegistryProfile,
    previous: Option<&RegistryProfileStatus>,
    next: &RegistryProfileStatus,
) -> Result<(), Error> {
    let name = profile.name_any();
    if previous == Some(next) || profile.status.as_ref() == Some(next) {
        return Ok(());
    }
    let events = status::events(previous, next);
    let ready = next.conditions.iter().find(|c| c.type_ == status::READY);
    info!(
        synced = next.sync_summary.as_deref().unwrap_or_default(),
        ready = ready.map(|c| c.status.as_str()).unwrap_or_default(),
        reason = ready.map(|c| c.reason.as_str()).unwrap_or_default(),
        previous = ?previous.and_then(|s| s.sync_summary.as_deref()),
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
    ctx.remember_written(&profile.uid().unwrap_or_default(), next.clone());
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
            warn!(error = %e, "could not publish an Event");
        }
    }
    Ok(())
}
