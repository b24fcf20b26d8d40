//! One reconcile of one profile: resolve -> decide -> execute -> status.
//!
//! 1. Resolve: the profile's [`Meaning`] from the view (compiled once per generation), where its credentials come
//!    from ([`resolve::source`]; for token sources minting starts here), and what is written now: the credentials
//!    in force and whether they are withheld ([`resolve::in_force_from`], [`resolve::withheld`]), the one answer
//!    the new-namespace path, the webhook and the writer take too.
//! 2. Decide, purely: which namespaces to plan ([`plan::reach`]: every one, or when nothing but some namespaces
//!    changed since the last full plan, only those), the writes that bring them to what is written
//!    ([`plan::secrets`]), and which of the deletions among them run now ([`guard::decide`]).
//! 3. Execute: the Secret writes through the one writer, within the shared budget; then ServiceAccount mode.
//! 4. Status: computed ([`status::compute`]) and written only when it changed, a change of counts alone at most
//!    once per [`STATUS_SETTLE`], with an Event per changed condition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::events::{Event, EventType};
use super::plan::{self, Desired, Ledger, NameSet, Reach};
use super::status::{self, Held, SyncOutcome};
use super::{Context, Error, patch_service_accounts, preflight, requeue_after};
use crate::api::conditions::{CHECKS_CHECKING, DELETIONS_HELD, INVALID_SELECTOR, READY, TRUE};
use crate::api::{NamespaceFailure, RegistryProfile, RegistryProfileStatus};
use crate::credentials::refresher::Snapshot;
use crate::names::{
    CONFIRM_DELETIONS_ANNOTATION, DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, FIELD_MANAGER, token_copy_name,
};
use crate::resolve::selection::CompiledSelection;
use crate::resolve::{self, Content, Meaning, Source, Written};
use crate::secrets::guard::{self, Cause, Deletion};
use crate::secrets::{Action as Write, Writer};
use crate::state::View;
use k8s_openapi::api::core::v1::ServiceAccount;

/// A change of a profile's status in its counts alone (a new namespace synced, see [`status::counts_only`]) is
/// written at most once in this long: a burst of new namespaces, or a steady trickle, costs a status write per
/// window rather than one per namespace. Every other change is written at once. The state layer marks a profile
/// for a trickle of namespace events at most once per this window too ([`crate::state::SETTLE_WINDOW`]).
pub const STATUS_SETTLE: Duration = crate::state::SETTLE_WINDOW;

/// Reconciles one profile, in a span naming it.
pub async fn reconcile(profile: Arc<RegistryProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", profile = %profile.name_any());
    reconcile_inner(profile, ctx).instrument(span).await
}

/// What the kubelet (pull failures) and self-healing reported lately about the profile `name`, into `next`.
fn reported(ctx: &Context, name: &str, next: &mut RegistryProfileStatus, now: jiff::Timestamp) {
    let shown = ctx.pulls.recent(name, now);
    next.pull_failures = shown.selected;
    next.unselected_pull_failures = shown.unselected;
    next.healing = ctx.healer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).status(name, now);
}

async fn reconcile_inner(profile: Arc<RegistryProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.view.ready().await {
        return Err(Error::CacheStopped);
    }
    let uid = profile.uid().ok_or(Error::MissingUid)?;
    if profile.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the Secrets through their ownerReferences.
        ctx.ledgers.take(&uid);
        drop(ctx.view.dirty().changed(&profile.name_any()));
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();
    let meaning = ctx.view.meaning(&profile);
    let resolved = resolve_written(&ctx, &profile, &meaning, now).await;
    let synced = sync(&ctx, &profile, &meaning, &resolved.written, &uid).await?;
    let previous = ctx.previous_status(&profile);
    let next = next_status(&ctx, &profile, &meaning, &resolved, synced, previous.as_ref(), now);
    let deferred = write_status(&ctx, &profile, previous.as_ref(), &next).await?;
    Ok(Action::requeue(requeue(&ctx, &profile, &next, deferred)))
}

/// What the resolve step found.
struct Resolved {
    written: Written,
    preflight: Option<preflight::State>,
    token: Option<Snapshot>,
}

/// Resolves what is written for the profile now. For a token source, minting starts (or restarts, for a changed
/// source) before its state is read, and the token's copy in regcred's own namespace is kept current.
async fn resolve_written(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    meaning: &Meaning,
    now: jiff::Timestamp,
) -> Resolved {
    let name = meaning.name.as_str();
    let source = resolve::source(profile, meaning.registry.as_deref(), &ctx.view);
    match &source {
        Ok(Source::Token(t)) => ctx.view.refresher().ensure_minting(name, t),
        _ if !resolve::mints_tokens(profile) => ctx.view.refresher().stop(name),
        _ => {}
    }
    let token = ctx.view.refresher().peek(name);
    let in_force = resolve::in_force_from(profile, &source, &ctx.view, token.as_ref(), now);
    if resolve::mints_tokens(profile)
        && let Ok(Some(content)) = &in_force.content
    {
        keep_token_copy(ctx, profile, content).await;
    }
    let preflight = if let (Some(validation), Ok(content), Some(registry)) =
        (&profile.spec.validation, &in_force.content, &meaning.registry)
    {
        let request = preflight::Request {
            profile: name.to_owned(),
            registry: registry.clone(),
            validation: validation.clone(),
            tls: profile.spec.tls.clone(),
            config: content.as_ref().map(|c| c.config.clone()),
        };
        Some(ctx.checks.state(request, now))
    } else {
        ctx.checks.forget(name);
        None
    };
    let word = preflight.as_ref().map_or(resolve::Preflight::Passed, preflight::State::word);
    let withheld = resolve::withheld(profile, meaning, &in_force, &word);
    Resolved { written: Written { in_force, withheld }, preflight, token }
}

/// The status after this reconcile.
fn next_status(
    ctx: &Context,
    profile: &RegistryProfile,
    meaning: &Meaning,
    resolved: &Resolved,
    synced: Synced,
    previous: Option<&RegistryProfileStatus>,
    now: jiff::Timestamp,
) -> RegistryProfileStatus {
    let mut next = status::compute(
        previous,
        profile.meta().generation,
        meaning.registry.clone(),
        &resolved.written.in_force.report,
        &synced.outcome,
        resolved.preflight.as_ref().and_then(preflight::State::shown),
        Time(jiff::Timestamp::now()),
    );
    next.service_accounts = synced.service_accounts;
    reported(ctx, &meaning.name, &mut next, now);
    if matches!(resolved.preflight, Some(preflight::State::Pending { .. })) {
        next.checks = Some(CHECKS_CHECKING.into());
    }
    if let Some(t) = &resolved.token {
        next.expires_at = t.token.as_ref().map(|m| Time(m.expires_at));
        next.last_refresh_time = t.last_refresh.map(Time);
        next.next_refresh_time = t.next_refresh.map(Time);
    }
    next
}

/// When to reconcile again without an outside trigger: see [`requeue_after`]; sooner for a status change that
/// waits (`deferred`), a pull failure that is no longer recent, or a preflight that is due.
fn requeue(
    ctx: &Context,
    profile: &RegistryProfile,
    next: &RegistryProfileStatus,
    deferred: Option<Duration>,
) -> Duration {
    let name = profile.name_any();
    let now = jiff::Timestamp::now();
    let mut after = requeue_after(next, now);
    // A status without the pull failures that are no longer recent, when the oldest turns so.
    let failures = [next.pull_failures.as_slice(), next.unselected_pull_failures.as_slice()].concat();
    let healing = ctx.healer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_expiry(&name, now);
    if let Some(expiry) = crate::images::pulls::next_expiry(&failures, now).into_iter().chain(healing).min() {
        after = after.min(expiry + Duration::from_secs(1));
    }
    if let Some(validation) = &profile.spec.validation
        && let Some(due) = ctx.checks.until_due(&name, validation, now)
    {
        after = after.min(due);
    }
    deferred.map_or(after, |d| after.min(d))
}

/// A count as status holds it (`int32`; no cluster has more namespaces than that).
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What a reconcile's sync did: the outcome status reports, and how many ServiceAccounts list the Secret (`None`:
/// ServiceAccount mode is off).
struct Synced {
    outcome: SyncOutcome,
    service_accounts: Option<i32>,
}

/// The sync: nothing while the profile's Secrets are withheld; else a plan of the namespaces [`plan::reach`]
/// names, every one or only those that changed. A profile that writes no Secret ([`Written::secret`]: anonymous
/// access, or `spec.delivery: CredentialProvider`) plans to have none: what it wrote before goes, as far as the
/// deletion guard releases it, and ServiceAccount mode removes its entries.
async fn sync(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    meaning: &Meaning,
    written: &Written,
    uid: &str,
) -> Result<Synced, Error> {
    let changed = ctx.view.dirty().changed(&meaning.name);
    let skipped = |reason: &str, message: String| {
        ctx.ledgers.take(uid);
        let outcome = SyncOutcome::Skipped { reason: reason.into(), message };
        Synced { outcome, service_accounts: ctx.previous_status(profile).and_then(|s| s.service_accounts) }
    };
    let content = match written.secret(meaning) {
        Ok(content) => content,
        Err(withheld) => return Ok(skipped(withheld.reason, withheld.message.clone())),
    };
    // Whether there is anything to deliver at all, by Secret or by the credential provider (not anonymous).
    let delivers = written.content().is_ok_and(|c| c.is_some());
    let selection = match &meaning.selection {
        Ok(selection) => selection,
        Err(invalid) => return Ok(skipped(INVALID_SELECTOR, invalid.to_string())),
    };
    let all = ctx.view.profiles_and_meanings();
    let rivals: Vec<&Meaning> = all.iter().map(|(_, m)| &**m).filter(|m| meaning.rivals(m)).collect();
    let target = Target { meaning, content, delivers, selection, rivals: &rivals, uid };
    let basis = plan::basis(
        uid,
        profile.meta().generation,
        profile.annotations().get(CONFIRM_DELETIONS_ANNOTATION).map(String::as_str),
        &target.desired(),
        content.and_then(|c| c.expires_at),
        rivals.iter().map(|r| (r.name.as_str(), r.uid.as_deref(), r.generation)),
    );
    let ledger = ctx.ledgers.take(uid);
    if let Reach::Only(namespaces) = plan::reach(ledger.as_ref(), basis, changed, Instant::now())
        && let Some(ledger) = ledger
        && let Some(synced) = sync_some(ctx, profile, &target, ledger, &namespaces).await?
    {
        return Ok(synced);
    }
    sync_all(ctx, profile, &target, basis).await
}

/// What one sync writes, and where it may.
struct Target<'a> {
    meaning: &'a Meaning,
    /// The Secret's content (`None`: no Secret: anonymous access, or `spec.delivery: CredentialProvider`; see
    /// [`Written::secret`]).
    content: Option<&'a Content>,
    /// Whether the profile delivers credentials at all (not anonymous): its selected namespaces count as such.
    delivers: bool,
    selection: &'a CompiledSelection,
    /// The other profiles that write a Secret of the same name (see [`Meaning::rivals`]).
    rivals: &'a [&'a Meaning],
    uid: &'a str,
}

impl Target<'_> {
    fn desired(&self) -> Desired {
        match self.content {
            Some(c) => Desired::Write {
                name: self.meaning.secret_name.clone(),
                content_hash: plan::content_hash(DOCKER_CONFIG_TYPE, [(DOCKER_CONFIG_KEY, c.config.0.expose())]),
            },
            None => Desired::Nothing,
        }
    }

    /// The namespaces of `selected` where a rival writes a Secret of the same name (see [`Meaning::may_write`]),
    /// each with the failure status shows for it. The usual profile, whose Secret name is its own, has no rival.
    fn conflicts(&self, view: &View, selected: &NameSet) -> BTreeMap<String, NamespaceFailure> {
        if self.rivals.is_empty() {
            return BTreeMap::new();
        }
        let meaning = self.meaning;
        selected
            .iter()
            .filter_map(|name| {
                let ns = view.namespace(name)?;
                match meaning.may_write(&ns, self.rivals.iter().copied()) {
                    Err(refusal @ resolve::Refusal::Conflict(_)) => Some((
                        name.to_string(),
                        NamespaceFailure {
                            namespace: name.to_string(),
                            reason: refusal.reason().into(),
                            message: refusal.message(&meaning.secret_name),
                        },
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

/// A full plan: every namespace the profile selects or holds a Secret in, then ServiceAccount mode over every
/// cached account. What it found is kept in the profile's [`Ledger`].
async fn sync_all(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    target: &Target<'_>,
    basis: u64,
) -> Result<Synced, Error> {
    let was_holding = ctx
        .previous_status(profile)
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == DELETIONS_HELD && c.status == TRUE));
    let FullPlan { selected, writes, conflicts, held, holding } = plan_all(&ctx.view, profile, target, was_holding);
    ctx.metrics.set_deletions_held(&target.meaning.name, held.len());
    let mut failures = execute(ctx, profile, target, writes).await?;
    failures.extend(conflicts.into_values());
    let secrets = SecretSync::new(profile, failures, &held, holding);
    drop(held);
    let served = Served::new(target, &selected, &secrets.failures, &secrets.kept);
    let accounts = sync_service_accounts(ctx, profile, &served, None).await;
    let settled = secrets.held.is_none();
    let none = NameSet::default();
    // An anonymous profile counts no namespace as selected: it delivers nothing anywhere.
    let counted = if target.delivers { &selected } else { &none };
    let selected_count = count(counted.len());
    let mut failures = secrets.failures;
    failures.extend(accounts.failures);
    let ledger = Ledger::new(basis, Instant::now(), counted, failures.iter().cloned(), accounts.listed, settled);
    let service_accounts = ledger.listed();
    ctx.ledgers.put(target.uid, ledger, &ctx.view.profiles());
    let synced = selected_count.saturating_sub(count(failures.len()));
    let delivery = target.meaning.delivery;
    let outcome = SyncOutcome::Synced { selected: selected_count, synced, failures, held: secrets.held, delivery };
    Ok(Synced { outcome, service_accounts })
}

/// A plan of `namespaces` alone (those that changed since the last plan, and those it failed in), Secrets and
/// ServiceAccounts, from the last full plan's `ledger`: what one namespace costs, whatever the number of
/// namespaces. `None` when a full plan must decide instead: a deletion the guard weighs against every namespace
/// holding the Secret.
async fn sync_some(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    target: &Target<'_>,
    mut ledger: Ledger,
    namespaces: &BTreeSet<String>,
) -> Result<Option<Synced>, Error> {
    let name = target.meaning.name.as_str();
    let selected = ctx.view.namespaces().selected_among(target.selection, namespaces.iter().map(String::as_str));
    let observed: Vec<_> = namespaces.iter().flat_map(|ns| ctx.view.managed().observed_in(name, ns)).collect();
    let conflicts = target.conflicts(&ctx.view, &selected);
    let held: BTreeSet<&str> = conflicts.keys().map(String::as_str).collect();
    let gone = |ns: &str| ctx.view.namespace(ns).is_none_or(|n| n.terminating);
    let mut plan = plan::secrets(&target.desired(), &selected, &held, observed, target.uid, gone);
    if plan.deletions.iter().any(|d| d.cause.guarded()) {
        return Ok(None);
    }
    // Only deletions the guard never holds (a namespace that is going): all released.
    let decision = guard::decide(std::mem::take(&mut plan.deletions), plan.holding, false, false);
    plan.actions.extend(decision.released.into_iter().map(|d| Write::Delete(Box::new(d))));
    let mut failures = execute(ctx, profile, target, plan.actions).await?;
    failures.extend(conflicts.into_values());
    let none_kept = NameSet::default();
    let served = Served::new(target, &selected, &failures, &none_kept);
    let accounts = sync_service_accounts(ctx, profile, &served, Some(namespaces)).await;
    failures.extend(accounts.failures);
    let counted = if target.delivers { selected } else { NameSet::default() };
    ledger.update(namespaces, &counted, failures, &accounts.listed.unwrap_or_default());
    let selected_count = count(ledger.selected());
    let failures = ledger.failures();
    let synced = selected_count.saturating_sub(count(failures.len()));
    let service_accounts = ledger.listed();
    ctx.ledgers.put(target.uid, ledger, &ctx.view.profiles());
    let delivery = target.meaning.delivery;
    let outcome = SyncOutcome::Synced { selected: selected_count, synced, failures, held: None, delivery };
    Ok(Some(Synced { outcome, service_accounts }))
}

/// Where a profile's ServiceAccount entries go: the namespaces it serves, those where its Secret is in place, and
/// the Secret's name (`None`: it writes none).
struct Served<'a> {
    secret: Option<&'a str>,
    selected: &'a NameSet,
    /// The selected namespaces where the Secret is not in place: a write failed or a conflict holds (few, unlike
    /// those where it is, which a full plan at 50,000 namespaces would copy).
    failed: BTreeSet<String>,
    /// Namespaces no longer selected whose Secret the deletion guard holds: their accounts are left as they are.
    kept: &'a NameSet,
}

impl<'a> Served<'a> {
    fn new(target: &Target<'a>, selected: &'a NameSet, failures: &[NamespaceFailure], kept: &'a NameSet) -> Self {
        let failed = failures.iter().map(|f| f.namespace.clone()).collect();
        let secret = target.content.is_some().then_some(target.meaning.secret_name.as_str());
        Self { secret, selected, failed, kept }
    }

    /// Whether the Secret is in place in `namespace`: selected, and neither failed nor held there.
    fn in_place(&self, namespace: &str) -> bool {
        self.selected.contains(namespace) && !self.failed.contains(namespace)
    }
}

/// What a profile's Secret sync did.
struct SecretSync {
    /// The namespaces where a write failed or a conflict holds.
    failures: Vec<NamespaceFailure>,
    /// The deletions the guard holds, as status tells of them.
    held: Option<Held>,
    /// The namespaces no longer selected whose Secret the guard holds: their ServiceAccounts keep listing it.
    kept: NameSet,
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

/// What a full plan of one profile's Secrets decided, before any write.
struct FullPlan {
    /// The namespaces the profile selects.
    selected: NameSet,
    /// The writes, the deletions the guard released included.
    writes: Vec<Write>,
    /// The namespaces where a rival writes a Secret of the same name: left exactly as they are.
    conflicts: BTreeMap<String, NamespaceFailure>,
    /// The deletions the guard holds.
    held: Vec<Deletion>,
    /// The namespaces where the profile has a Secret of its own now.
    holding: usize,
}

/// Plans the Secret writes of one profile over every namespace, from the view alone (no request), the deletions
/// among them as far as the deletion guard releases them (`was_holding`: the profile's last status said it held
/// some). Namespaces where a rival's conflict holds are left exactly as they are: nothing created, updated or
/// removed there.
fn plan_all(view: &View, profile: &RegistryProfile, target: &Target<'_>, was_holding: bool) -> FullPlan {
    let selected = view.namespaces().selected_by(target.selection);
    let conflicts = target.conflicts(view, &selected);
    let observed = view.managed().observed_for(&target.meaning.name);
    let held: BTreeSet<&str> = conflicts.keys().map(String::as_str).collect();
    let gone = |ns: &str| view.namespace(ns).is_none_or(|n| n.terminating);
    let mut plan = plan::secrets(&target.desired(), &selected, &held, observed, target.uid, gone);
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
    plan.actions.extend(decision.released.into_iter().map(|d| Write::Delete(Box::new(d))));
    FullPlan { selected, writes: plan.actions, conflicts, held: decision.held, holding: plan.holding }
}

/// Makes `actions` through the one writer, within the shared budget; returns the namespaces that failed.
async fn execute(
    ctx: &Context,
    profile: &Arc<RegistryProfile>,
    target: &Target<'_>,
    actions: Vec<Write>,
) -> Result<Vec<NamespaceFailure>, Error> {
    if actions.is_empty() {
        return Ok(Vec::new());
    }
    info!(writes = actions.len(), "syncing Secrets");
    let writer = writer(ctx, profile, &target.meaning.secret_name, target.content);
    // The writes run in a task of their own: kube-runtime polls reconcilers inside the controller's stream, where
    // they would share one task with decoding the watch events the writes cause.
    let writes = ctx.writes.clone();
    tokio::spawn(async move { writer.execute(actions, &writes).await })
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))
}

fn writer(ctx: &Context, profile: &Arc<RegistryProfile>, secret_name: &str, content: Option<&Content>) -> Writer {
    Writer {
        client: ctx.client.clone(),
        view: ctx.view.clone(),
        fresh: None,
        profile: profile.clone(),
        secret_name: secret_name.to_owned(),
        config: content.map(|c| c.config.clone()),
        expires_at: content.and_then(|c| c.expires_at),
    }
}

/// Writes the copy of a minted token into regcred's own namespace when the cached copy differs: once per mint.
async fn keep_token_copy(ctx: &Context, profile: &Arc<RegistryProfile>, content: &Content) {
    let current = resolve::token_copy(profile, &ctx.view);
    if current.is_some_and(|(c, e)| c == content.config && e == content.expires_at) {
        return;
    }
    let writer = writer(ctx, profile, &token_copy_name(&profile.uid().unwrap_or_default()), Some(content));
    if let Err(e) = writer.keep_token_copy(&ctx.settings.operator_namespace).await {
        warn!(error = %e, "could not keep the token's copy for other replicas");
    }
}

/// What the ServiceAccount pass did: in ServiceAccount mode, how many accounts list the Secret per namespace; and
/// the accounts it could not patch.
struct AccountSync {
    listed: Option<BTreeMap<String, i32>>,
    failures: Vec<NamespaceFailure>,
}

/// ServiceAccount mode for one profile: every followed account (of `only` those namespaces, when given) gets what
/// the profile wants of it (see [`patch_service_accounts::want`]); only those that need a change are patched. In the
/// namespaces the guard keeps, accounts are left as they are.
async fn sync_service_accounts(
    ctx: &Context,
    profile: &RegistryProfile,
    served: &Served<'_>,
    only: Option<&BTreeSet<String>>,
) -> AccountSync {
    let name = profile.name_any();
    let patterns = profile.spec.service_accounts.as_ref().map(|s| s.names.as_slice());
    // In the mode, every account it names must be known: the view follows them from now on. Out of it, only the
    // entries it recorded are removed, and the view follows accounts as long as any holds one.
    if patterns.is_some() && !ctx.view.service_accounts_ready().await {
        debug!("the ServiceAccount following ended before its list was in: the profile left the mode meanwhile");
    }
    let mut listed: BTreeMap<String, i32> = BTreeMap::new();
    let mut visit = |sa: ServiceAccount| {
        let ns = sa.namespace().unwrap_or_default();
        let serves = served.selected.contains(&ns) || served.kept.contains(&ns);
        let in_place = served.in_place(&ns);
        let want = patch_service_accounts::want(patterns, &sa.name_any(), serves, served.secret, in_place);
        let record = crate::state::service_accounts::record_of(&sa);
        let pulls = sa.image_pull_secrets.as_deref().unwrap_or_default();
        let change = patch_service_accounts::change(pulls, &record, &name, &want).is_some();
        if matches!(want, patch_service_accounts::Want::Listed(_)) {
            *listed.entry(ns).or_default() += 1;
        }
        change.then_some((sa, want))
    };
    let work = match only {
        None => ctx.view.service_accounts().filter_map(&mut visit),
        Some(namespaces) => {
            namespaces.iter().flat_map(|ns| ctx.view.service_accounts().filter_map_in(ns, &mut visit)).collect()
        }
    };
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
    // An account that could not be patched is not counted as listing the Secret.
    for f in &failures {
        *listed.entry(f.namespace.clone()).or_default() -= 1;
    }
    AccountSync { listed: patterns.map(|_| listed), failures }
}

/// How long a change of counts alone still waits: until [`STATUS_SETTLE`] has passed since the profile's status
/// was last written (`None`: it need not wait).
fn status_settling(ctx: &Context, uid: &str) -> Option<Duration> {
    let written = ctx.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_, at) = written.get(uid)?;
    Some(STATUS_SETTLE.saturating_sub(at.elapsed())).filter(|wait| !wait.is_zero())
}

/// Writes `next` as the profile's status when it differs from the `previous` one (see
/// [`Context::previous_status`]) and from what the view shows, and publishes an Event for each condition that
/// changed. A change of counts alone waits until [`STATUS_SETTLE`] has passed since the last write: `Some` says how
/// long it still waits.
async fn write_status(
    ctx: &Context,
    profile: &RegistryProfile,
    previous: Option<&RegistryProfileStatus>,
    next: &RegistryProfileStatus,
) -> Result<Option<Duration>, Error> {
    let name = profile.name_any();
    let uid = profile.uid().unwrap_or_default();
    if previous == Some(next) || profile.status.as_ref() == Some(next) {
        return Ok(None);
    }
    if let Some(previous) = previous
        && status::counts_only(previous, next)
        && let Some(wait) = status_settling(ctx, &uid)
    {
        debug!(
            synced = next.sync_summary.as_deref().unwrap_or_default(),
            wait_ms = wait.as_millis(),
            "status counts wait"
        );
        return Ok(Some(wait));
    }
    let events = status::events(previous, next);
    let ready = next.conditions.iter().find(|c| c.type_ == READY);
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
    // The answer is not decoded: nothing reads it (the profile watch brings the profile back), and decoding a whole
    // profile, managedFields and all, on every status write cost CPU for nothing.
    let request = kube::core::Request::new(RegistryProfile::url_path(&(), None)).patch_subresource(
        "status",
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    );
    let request = request.map_err(kube::Error::BuildRequest);
    crate::client::send_undecoded(&ctx.client, request, "patch_status").await.map_err(Error::StatusUpdate)?;
    ctx.remember_written(&uid, next.clone());
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
    Ok(None)
}

#[cfg(test)]
mod tests;
