//! Self-healing of a Pod whose authentication failure is confirmed ([`super::pull_failures`]) and that was admitted
//! without the Secret of a profile that selects its namespace. [`crate::images::heal`] decides, purely, whether
//! and how: evicted when a controller re-creates it (the Eviction API: PodDisruptionBudgets decide), or an Event
//! on the Pod and the profile that says what to do. Shown in the profile's status and counted in
//! `regcred_heals_total`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Resource as _;
use kube::api::{Api, DeleteParams, EvictParams, Preconditions};
use tracing::{debug, warn};

use super::Context;
use super::events::{Event, EventType};
use super::pull_failures::{LOOKUP_TIMEOUT, lock};
use crate::images::heal::{self, Evicted, Step};
use crate::images::pulls::{Claim, PodPulls};

/// When self-healing's clock started (its loop guards count from it).
static ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
/// How long the webhook must have listened before an eviction counts on it: the apiserver reaches it through the
/// Service, whose endpoints follow the Pods' readiness a few seconds later. An eviction before that would have
/// the replacement admitted without the Secret, again.
const WEBHOOK_SETTLE: Duration = Duration::from_secs(15);
/// When this replica's webhook was first seen listening by self-healing.
static LISTENING_SINCE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Waits, once, until this replica's webhook has listened for [`WEBHOOK_SETTLE`] (at most that long plus as
/// long again for it to start); says whether it listens. `false` at once without a webhook.
async fn webhook_settled(ctx: &Context) -> bool {
    let Some(mut listening) = ctx.settings.webhook.clone() else { return false };
    let started = tokio::time::timeout(WEBHOOK_SETTLE, listening.wait_for(|l| *l)).await.is_ok_and(|l| l.is_ok());
    if !started {
        return false;
    }
    let since = *LISTENING_SINCE.get_or_init(Instant::now);
    tokio::time::sleep(WEBHOOK_SETTLE.saturating_sub(since.elapsed())).await;
    true
}

/// One Pod being healed: whose failure, which profile's Secret it lacks, and when (on self-healing's clock).
struct Case<'a> {
    ctx: &'a Context,
    claim: &'a Claim,
    pod: &'a PodPulls,
    profile: &'a str,
    secret: &'a str,
    now: Duration,
}

/// Heals the Pod of a confirmed failure, when [`heal::decide`] says so and its loop guards let it.
pub(super) async fn heal(ctx: &Context, claim: &Claim, pod: &PodPulls) {
    // Before the webhook's settle wait, which only an eviction needs.
    if !heal::heals(claim.reason) {
        return;
    }
    let injects = ctx.settings.webhook.is_some() && webhook_settled(ctx).await;
    let Some(verdict) = verdict(ctx, claim, pod, injects).await else { return };
    let now = ORIGIN.elapsed();
    let step = lock(&ctx.healer).step(&verdict, pod, now);
    let (profile, secret) = match &verdict {
        heal::Verdict::Evict { profile, secret } | heal::Verdict::Notify { profile, secret, .. } => (profile, secret),
        heal::Verdict::Leave(_) => return,
    };
    let case = Case { ctx, claim, pod, profile, secret, now };
    match step {
        Step::Skip(why) => {
            ctx.metrics.healed(profile, why);
            debug!(namespace = claim.namespace, pod = claim.pod, profile, why, "not healed now");
        }
        Step::Notify(why) => case.notify(why).await,
        Step::Evict => case.evict().await,
    }
}

/// What [`heal::decide`] says of the Pod, over the view as it is now; `None` when its namespace is gone, or when
/// its ServiceAccount could not be read.
async fn verdict(ctx: &Context, claim: &Claim, pod: &PodPulls, injects: bool) -> Option<heal::Verdict> {
    let ns = ctx.view.namespace(&claim.namespace)?;
    let account_pulls = account_pulls(ctx, claim, pod).await?;
    let profiles = ctx.view.profiles_and_meanings();
    let view = &ctx.view;
    let offers = heal::offers(
        &claim.image,
        &profiles,
        &ns,
        pod,
        heal::Cap { mode: ctx.settings.healing, injects, operator_namespace: &ctx.settings.operator_namespace },
        |namespace, secret| view.managed().contains(namespace, secret),
        |_, _, secret| account_pulls.iter().any(|s| s == secret),
    );
    Some(heal::decide(claim.reason, &claim.image, pod, &offers))
}

/// The pull Secrets the Pod's ServiceAccount lists (what the ServiceAccount admission plugin copies into a Pod that
/// names none), read when it matters: the view follows ServiceAccounts only for ServiceAccount mode, and a failed
/// pull is rare where namespaces are not. `None` when it could not be read.
async fn account_pulls(ctx: &Context, claim: &Claim, pod: &PodPulls) -> Option<Vec<String>> {
    if !pod.pull_secrets.is_empty() {
        return Some(Vec::new());
    }
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &claim.namespace);
    match tokio::time::timeout(LOOKUP_TIMEOUT, accounts.get_opt(&pod.service_account)).await {
        Ok(Ok(account)) => {
            Some(account.and_then(|a| a.image_pull_secrets).into_iter().flatten().map(|r| r.name).collect())
        }
        Ok(Err(e)) => {
            warn!(namespace = claim.namespace, account = pod.service_account, error = %e,
                "could not read the Pod's ServiceAccount; not healed now");
            None
        }
        Err(_) => {
            warn!(
                namespace = claim.namespace,
                account = pod.service_account,
                "reading the Pod's ServiceAccount timed out; not healed now"
            );
            None
        }
    }
}

impl Case<'_> {
    /// Tells the Pod and the profile what to do (`why`: why it is not evicted).
    async fn notify(&self, why: heal::Why) {
        let (claim, profile) = (self.claim, self.profile);
        let note = heal::advice(why, &claim.namespace, &claim.pod, &claim.image, profile, self.secret);
        lock(&self.ctx.healer).notified(self.pod, Some(why), self.now);
        self.tell("MissingPullSecret", &note).await;
        self.show("Notified", note);
        self.ctx.metrics.healed(profile, if why == heal::Why::StillFailing { "still_failing" } else { "notified" });
    }

    /// Evicts the Pod, and says how that went.
    async fn evict(&self) {
        let (ctx, claim, profile) = (self.ctx, self.claim, self.profile);
        let (result, error) = evict(ctx, claim, self.pod).await;
        let Some(result) = result else {
            // Gone or replaced already: nothing left to heal in this Pod.
            lock(&ctx.healer).notified(self.pod, None, self.now);
            return;
        };
        lock(&ctx.healer).evicted(profile, self.pod, result, self.now, jiff::Timestamp::now());
        let (namespace, name, image) = (&claim.namespace, &claim.pod, &claim.image);
        let note = heal::evicted_note(result, namespace, name, image, self.secret, &error);
        let (action, reason, label) = match result {
            Evicted::Done => ("Evicted", "EvictedForPullSecret", "evicted"),
            Evicted::Blocked => ("Blocked", "EvictionBlocked", "blocked"),
            Evicted::Failed | Evicted::Unknown => ("Failed", "EvictionFailed", "failed"),
        };
        if result == Evicted::Done {
            tracing::info!(namespace, pod = name, profile, "evicted a Pod admitted without its pull Secret");
        } else {
            warn!(namespace, pod = name, profile, error, "could not evict a Pod admitted without its pull Secret");
        }
        self.tell(reason, &note).await;
        self.show(action, note);
        ctx.metrics.healed(profile, label);
    }

    /// A Warning Event on the Pod (where `kubectl describe pod` shows it) and on the profile.
    async fn tell(&self, reason: &str, note: &str) {
        let (ctx, claim) = (self.ctx, self.claim);
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(crate::images::shorten(note)),
            action: "Heal".into(),
            secondary: None,
        };
        let on_pod = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(claim.namespace.clone()),
            name: Some(claim.pod.clone()),
            uid: self.pod.uid.clone(),
            ..Default::default()
        };
        let on_profile = ctx.view.profile(self.profile).map(|p| p.object_ref(&()));
        for reference in std::iter::once(on_pod).chain(on_profile) {
            match tokio::time::timeout(LOOKUP_TIMEOUT, ctx.recorder.publish(&event, &reference)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "could not publish an Event"),
                Err(_) => warn!("could not publish an Event: no answer within {LOOKUP_TIMEOUT:?}"),
            }
        }
    }

    /// Shows the action in the profile's status (at its next reconcile, which this asks for).
    fn show(&self, action: &str, note: String) {
        let claim = self.claim;
        let entry = heal::action(&claim.namespace, &claim.pod, &claim.image, action, note, jiff::Timestamp::now());
        lock(&self.ctx.healer).show(self.profile, entry);
        self.ctx.view.dirty().mark([self.profile.to_owned()]);
    }
}

/// Evicts the Pod, only if it is still the one looked at (uid precondition). `None`: it is gone or replaced
/// already (nothing to report).
async fn evict(ctx: &Context, claim: &Claim, pod: &PodPulls) -> (Option<Evicted>, String) {
    let api = Api::<Pod>::namespaced(ctx.evictions.clone(), &claim.namespace);
    let preconditions = Preconditions { uid: pod.uid.clone(), resource_version: None };
    let params = EvictParams {
        delete_options: Some(DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() }),
        ..EvictParams::default()
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, api.evict(&claim.pod, &params)).await {
        Ok(Ok(_)) => (Some(Evicted::Done), String::new()),
        // A budget's refusal says so; a 429 for any other reason (an overloaded apiserver) is a failure.
        Ok(Err(kube::Error::Api(s))) if s.code == 429 && s.message.contains("disruption budget") => {
            (Some(Evicted::Blocked), s.message)
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => (None, s.message),
        Ok(Err(e)) => (Some(Evicted::Failed), e.to_string()),
        Err(_) => (Some(Evicted::Unknown), format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}
