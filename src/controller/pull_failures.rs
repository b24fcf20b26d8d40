//! The kubelet's pull failures, reported on the profiles whose registry they concern: an outside stream of
//! Events (`Failed` Events about Pods, selected by the apiserver). Anyone who may create Events can write one, so
//! each is a claim ([`crate::images::pulls`] decides, purely, what to believe): read, limited per namespace,
//! confirmed by the Pod's own status (one cached GET of `pods/status`), then recorded; the profile is then
//! reconciled, and its status shows it.
//!
//! Why a GET per claim rather than a watch of Pods: the Pod's status is what proves the failure, so a
//! metadata-only watch would not do, and a watch of whole Pods would hold every Pod of the cluster in memory and
//! need `list`/`watch` on them all, to serve a few lookups an hour. A GET is made only for an Event that names a
//! profile's registry and that its namespace's rate allows, is cached for [`POD_TTL`], and needs only `get` on
//! `pods/status`.
//!
//! A confirmed authentication failure of a Pod admitted without the Secret of a profile that selects its
//! namespace is then healed ([`super::healing`]).
//!
//! The Events come from a stream the state layer opens ([`crate::state::streams::pull_failures`]): the
//! controller watches nothing itself.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::Resource as _;
use kube::api::Api;
use tracing::{debug, warn};

use super::Context;
use super::events::{Event, EventType};
use crate::images::limit::Limiter;
use crate::images::pulls::{self, Claim, PodCache, PodPulls, Recorded, Refusal};
/// Claims being confirmed at once (a claim may wait a few seconds for the Pod's status, see [`LOOK_AGAIN`]).
const LOOKUPS: usize = 8;
/// How long a Pod lookup answers for repeated Events about the same Pod.
const POD_TTL: Duration = Duration::from_secs(10);
/// Pod lookups remembered.
const PODS_CACHED: usize = 1024;
/// The longest a Pod lookup (or an eviction, or an Event) may take.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// When to look at a Pod whose status does not show the failure yet (the kubelet writes it a moment after its
/// Event): at once, then after 1 s and 3 s more. At most three lookups per claim the limiter let through.
const LOOK_AGAIN: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(3)];

/// What this stream keeps between Events: the limiter and the Pod lookups, both bounded.
struct Gate {
    origin: Instant,
    limiter: Limiter,
    pods: PodCache,
}

/// Follows the kubelet's pull-failure Events until the stream ends (it does not: the watcher retries).
pub async fn follow(ctx: Arc<Context>) {
    let events = crate::state::streams::pull_failures(&ctx.client);
    let gate = Arc::new(Mutex::new(Gate {
        origin: Instant::now(),
        limiter: pulls::limiter(),
        pods: PodCache::new(POD_TTL, PODS_CACHED),
    }));
    events
        .filter_map(|event| {
            let admitted = match event {
                Ok(event) => admit(&ctx, &gate, &event),
                Err(e) => {
                    warn!(error = %e, "watching the kubelet's pull failures");
                    None
                }
            };
            futures::future::ready(admitted)
        })
        .map(|(claim, profiles)| confirm_and_record(ctx.clone(), gate.clone(), claim, profiles))
        .buffer_unordered(LOOKUPS)
        .for_each(|()| futures::future::ready(()))
        .await;
}

fn refused(ctx: &Context, claim: Option<&Claim>, refusal: Refusal) {
    if refusal != Refusal::NotAPullFailure {
        ctx.metrics.pull_event_refused(refusal.metric_label());
        if let Some(c) = claim {
            debug!(
                namespace = c.namespace,
                pod = c.pod,
                image = c.image,
                why = refusal.metric_label(),
                "pull failure Event not used"
            );
        }
    }
}

/// The first, pure steps: what the Event claims, whether its image is a profile's, and whether its namespace may
/// make regcred look further. Returns the claim and the profiles it concerns (with whether each selects the
/// namespace).
fn admit(ctx: &Context, gate: &Mutex<Gate>, event: &CoreEvent) -> Option<(Claim, Vec<(String, bool)>)> {
    let claim = match pulls::claim(event, jiff::Timestamp::now()) {
        Ok(claim) => claim,
        Err(refusal) => {
            refused(ctx, None, refusal);
            return None;
        }
    };
    let ns = ctx.view.namespace(&claim.namespace)?;
    let profiles = ctx.view.profiles_and_meanings();
    // Profiles that are gone take their failures with them (the bound holds whatever the churn of profiles).
    ctx.pulls.retain(|p| profiles.iter().any(|(_, m)| m.name == p));
    lock(&ctx.healer).retain(|p| profiles.iter().any(|(_, m)| m.name == p));
    let concerned = pulls::profiles_for(&claim.image, &profiles, &ns);
    if concerned.is_empty() {
        return None;
    }
    let mut gate = lock(gate);
    let now = gate.origin.elapsed();
    if !gate.limiter.allow(&claim.namespace, now) {
        drop(gate);
        refused(ctx, Some(&claim), Refusal::RateLimited);
        return None;
    }
    Some((claim, concerned))
}

/// Confirms a claim against the Pod's own status, then records it for each profile concerned, and heals the Pod
/// when it was admitted without a Secret it would get now.
async fn confirm_and_record(ctx: Arc<Context>, gate: Arc<Mutex<Gate>>, claim: Claim, profiles: Vec<(String, bool)>) {
    let mut found = {
        let gate = lock(&gate);
        gate.pods.get(&claim.namespace, &claim.pod, gate.origin.elapsed())
    };
    let mut verdict = found.as_ref().map(|found| pulls::confirm(&claim, found.as_ref()));
    // A Pod looked up a moment ago is not looked up again: a flood of Events about a Pod that does not fail
    // costs one lookup (and its retries), not one per Event.
    let delays = if found.is_some() { &[][..] } else { &LOOK_AGAIN[..] };
    for delay in delays {
        if matches!(verdict, Some(Ok(()) | Err(Refusal::PodNotFound | Refusal::UidMismatch))) {
            break;
        }
        tokio::time::sleep(*delay).await;
        let pod = match lookup(&ctx, &claim).await {
            Ok(pod) => pod,
            Err(e) => {
                warn!(namespace = claim.namespace, pod = claim.pod, error = %e, "could not read a Pod's status");
                return;
            }
        };
        verdict = Some(pulls::confirm(&claim, pod.as_ref()));
        let mut gate = lock(&gate);
        let now = gate.origin.elapsed();
        gate.pods.put(&claim.namespace, &claim.pod, now, pod.clone());
        found = Some(pod);
    }
    match verdict {
        Some(Ok(())) => {
            let selected = profiles.iter().any(|(_, selected)| *selected);
            record(&ctx, &claim, profiles).await;
            if selected && let Some(Some(pod)) = found {
                super::healing::heal(&ctx, &claim, &pod).await;
            }
        }
        Some(Err(refusal)) => refused(&ctx, Some(&claim), refusal),
        None => {}
    }
}

/// The Pod's pulls as its status shows them; `None` when there is no such Pod.
async fn lookup(ctx: &Context, claim: &Claim) -> Result<Option<PodPulls>, String> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &claim.namespace);
    match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_status(&claim.pod)).await {
        Ok(Ok(pod)) => Ok(Some(pulls::pod_pulls(&pod))),
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() => Ok(None),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}

/// Records a confirmed failure for each profile concerned: counted, the profile marked for a reconcile, and an
/// Event on the profile the first time a Pod and image fail.
async fn record(ctx: &Context, claim: &Claim, profiles: Vec<(String, bool)>) {
    let (namespace, pod, image, reason) = (&claim.namespace, &claim.pod, &claim.image, claim.reason);
    for (profile, selected) in profiles {
        let recorded = ctx.pulls.record(&profile, selected, pulls::failure(claim), &claim.observation);
        if recorded == Recorded::Unchanged {
            continue;
        }
        ctx.metrics.pull_failed(&profile, reason, 1);
        debug!(profile, namespace, pod, image, reason, selected, "pull failure");
        if recorded == Recorded::New
            && let Some(p) = ctx.view.profile(&profile)
        {
            let whose = if selected { "" } else { " (a namespace the profile does not select)" };
            let advice = pulls::advice(reason);
            let note = format!("Pod {namespace}/{pod}{whose} could not pull {image}: {reason}: {advice}");
            let event = Event {
                type_: EventType::Warning,
                reason: "PullFailed".into(),
                note: Some(crate::images::shorten(&note)),
                action: "Pull".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &p.object_ref(&())).await {
                warn!(error = %e, "could not publish an Event");
            }
        }
        ctx.view.dirty().mark([profile]);
    }
}

/// The guard of `m`, whatever a panicking holder left (every value kept under these locks stays valid).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
