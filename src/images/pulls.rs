//! The kubelet's pull failures, as its Events tell them and as the Pods' own status confirms them. Anyone who may
//! create Events in a namespace can write one that looks like the kubelet's, so an Event is only a claim:
//!
//! - it is used only when its namespace is its `involvedObject`'s ([`claim`]): an Event with `eventTime` set may
//!   name an object in any namespace, so nothing else ties the two;
//! - the Pod must exist, have the Event's uid when it gives one, and its own status (which only the kubelet and
//!   those who may write `pods/status` can set) must show a container waiting with `ErrImagePull` or
//!   `ImagePullBackOff` for that image ([`confirm`]);
//! - counts are the occurrences regcred observed (each new version of an Event once), never the Event's `count`;
//! - a profile keeps the failures of the namespaces it selects apart from those of namespaces it does not
//!   ([`Shown`]), each list within its own bound and at most a few entries per namespace, so no namespace crowds
//!   out another's;
//! - what one namespace can make regcred do (Pod lookups, status writes, Events, reconciles) is bounded by a
//!   [`Limiter`](super::limit::Limiter) per namespace under a global one ([`limiter`]).
//!
//! All of it is pure; [`PullFailures`] keeps the recent ones per profile, within fixed bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::limit::{Limiter, Rate};
use crate::api::PullFailure;

/// Failures kept (and shown in status) per profile, from the namespaces it selects.
pub const PER_PROFILE: usize = 10;
/// Failures kept per profile from namespaces it does not select: a hint that they pull from its registry
/// without its Secret, in a list of their own so they never take the place of a selected namespace's.
pub const UNSELECTED_PER_PROFILE: usize = 3;
/// Entries one namespace may hold in a profile's list of selected namespaces' failures.
pub const PER_NAMESPACE: usize = 3;
/// Entries one namespace may hold in a profile's list of unselected namespaces' failures.
pub const UNSELECTED_PER_NAMESPACE: usize = 1;
/// How long a failure counts as recent.
pub const RECENT: Duration = Duration::from_secs(60 * 60);
/// Observations (Event uid and resourceVersion) remembered per entry, so a relist does not count again.
const OBSERVATIONS_KEPT: usize = 4;
/// The container states that say a pull failed.
const PULL_FAILED_STATES: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];

/// What one namespace may make regcred do from its Events: 20 at once, then one each 6 s (10 a minute).
pub const PER_NAMESPACE_RATE: Rate = Rate { burst: 20, every: Duration::from_secs(6) };
/// What all namespaces together may: 200 at once, then 20 a second.
pub const GLOBAL_RATE: Rate = Rate { burst: 200, every: Duration::from_millis(50) };
/// Namespaces with a bucket that is not full at once; beyond them, new namespaces wait.
pub const LIMITED_NAMESPACES: usize = 4096;

/// The limiter of pull-failure Events: per namespace, under the global bound.
pub fn limiter() -> Limiter {
    Limiter::new(PER_NAMESPACE_RATE, GLOBAL_RATE, LIMITED_NAMESPACES)
}

/// Why an Event is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the kubelet's pull failure (most `Failed` Events about Pods are other failures).
    NotAPullFailure,
    /// The Event's namespace is not its `involvedObject`'s.
    OtherNamespace,
    /// Older than [`RECENT`].
    Stale,
    /// Its namespace has used its share (or regcred its global one).
    RateLimited,
    /// No such Pod.
    PodNotFound,
    /// The Pod has another uid than the Event names.
    UidMismatch,
    /// The Pod's status shows no failed pull of that image.
    NotFailing,
}

impl Refusal {
    /// A short label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::NotAPullFailure => "not_a_pull_failure",
            Self::OtherNamespace => "other_namespace",
            Self::Stale => "stale",
            Self::RateLimited => "rate_limited",
            Self::PodNotFound => "pod_not_found",
            Self::UidMismatch => "uid_mismatch",
            Self::NotFailing => "not_failing",
        }
    }
}

/// A pull failure an Event claims, before the Pod confirms it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
    pub image: String,
    pub reason: &'static str,
    pub message: String,
    /// When the Event says it happened, never later than when regcred saw it.
    pub at: jiff::Timestamp,
    /// This version of this Event: each is counted once.
    pub observation: String,
}

/// The claim an Event makes, when its shape allows one: a kubelet pull failure about a Pod in the Event's own
/// namespace, seen within [`RECENT`] of `now`. Pure.
pub fn claim(event: &Event, now: jiff::Timestamp) -> Result<Claim, Refusal> {
    let message = event.message.as_deref().unwrap_or_default();
    let (image, reason) = parse(message).ok_or(Refusal::NotAPullFailure)?;
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") || object.api_version.as_deref().is_some_and(|v| v != "v1") {
        return Err(Refusal::NotAPullFailure);
    }
    let (Some(namespace), Some(pod)) = (object.namespace.as_deref(), object.name.as_deref()) else {
        return Err(Refusal::NotAPullFailure);
    };
    if event.metadata.namespace.as_deref() != Some(namespace) {
        return Err(Refusal::OtherNamespace);
    }
    let at = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .map_or(now, |at| at.min(now));
    if now.duration_since(at).unsigned_abs() >= RECENT {
        return Err(Refusal::Stale);
    }
    let id = event.metadata.uid.as_deref().or(event.metadata.name.as_deref()).unwrap_or_default();
    let version = event.metadata.resource_version.as_deref().unwrap_or_default();
    Ok(Claim {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        uid: object.uid.clone().filter(|u| !u.is_empty()),
        image,
        reason,
        message: super::shorten(message),
        at,
        observation: format!("{id}/{version}"),
    })
}

/// What a Pod's own status says about its pulls (its uid and the images of the containers waiting after a failed
/// pull), with what self-healing needs of its spec. Small, so that a cache of them stays small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPulls {
    pub uid: Option<String>,
    pub namespace: String,
    pub failing: Vec<String>,
    /// The images of `failing` that only ephemeral containers wait for (re-creating the Pod would not help them).
    pub failing_ephemeral: Vec<String>,
    /// The controller that owns the Pod: `(apiVersion, kind, uid)`.
    pub owner: Option<(String, String, String)>,
    /// The names in `spec.imagePullSecrets`.
    pub pull_secrets: Vec<String>,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// The Pod carries the webhook's opt-out label.
    pub opted_out: bool,
    /// When the apiserver created the Pod.
    pub created: Option<jiff::Timestamp>,
}

/// The [`PodPulls`] of `pod`. Pure.
pub fn pod_pulls(pod: &Pod) -> PodPulls {
    let mut failing = Vec::new();
    let mut ephemeral = Vec::new();
    // The image as the Pod's spec names it: a status reports the image a container ran with under any name the
    // runtime has for the same content (another registry's, once the node holds it from there).
    let spec = pod.spec.as_ref();
    let containers = spec.iter().flat_map(|s| s.containers.iter().map(|c| (&c.name, &c.image)));
    let init = spec.iter().flat_map(|s| s.init_containers.iter().flatten().map(|c| (&c.name, &c.image)));
    let debug = spec.iter().flat_map(|s| s.ephemeral_containers.iter().flatten().map(|c| (&c.name, &c.image)));
    let named: std::collections::HashMap<&String, &Option<String>> = containers.chain(init).chain(debug).collect();
    if let Some(status) = &pod.status {
        let regular = [&status.init_container_statuses, &status.container_statuses];
        let all = regular.into_iter().map(|s| (s, false)).chain([(&status.ephemeral_container_statuses, true)]);
        for (statuses, is_ephemeral) in all {
            for s in statuses.iter().flatten() {
                let waiting = s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref());
                let image = named.get(&s.name).and_then(|i| i.as_ref()).unwrap_or(&s.image);
                if waiting.is_some_and(|r| PULL_FAILED_STATES.contains(&r)) && !image.is_empty() {
                    failing.push(image.clone());
                    if is_ephemeral {
                        ephemeral.push(image.clone());
                    }
                }
            }
        }
    }
    // An image a regular container also waits for is not "ephemeral only".
    let regular: Vec<&String> = failing.iter().filter(|i| !ephemeral.contains(i)).collect();
    let failing_ephemeral = ephemeral.iter().filter(|i| !regular.contains(i)).cloned().collect();
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    PodPulls {
        uid: pod.metadata.uid.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        failing,
        failing_ephemeral,
        owner: owner.map(|o| (o.api_version.clone(), o.kind.clone(), o.uid.clone())),
        pull_secrets: spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect(),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        opted_out: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::api::OPT_OUT_LABEL))
            .is_some_and(|v| v == crate::api::OPT_OUT_VALUE),
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// Whether the Pod (`None`: it does not exist) confirms the claim: same uid when the Event gives one, and a
/// container waiting after a failed pull of that image. Pure.
pub fn confirm(claim: &Claim, pod: Option<&PodPulls>) -> Result<(), Refusal> {
    let pod = pod.ok_or(Refusal::PodNotFound)?;
    if claim.uid.is_some() && claim.uid != pod.uid {
        return Err(Refusal::UidMismatch);
    }
    if pod.failing.iter().any(|i| same_image(i, &claim.image)) { Ok(()) } else { Err(Refusal::NotFailing) }
}

/// Whether two image references name the same image as the kubelet writes them: its Events add `:latest` to a
/// reference with neither tag nor digest, the Pod's status does not. Pure.
pub fn same_image(a: &str, b: &str) -> bool {
    crate::registry::reference::canonical(a) == crate::registry::reference::canonical(b)
}

/// Pod lookups remembered for a short while, so that repeated Events about one Pod cost one lookup: at most
/// `max` of them, each for `ttl`. Pure: the caller passes the time.
#[derive(Debug)]
pub struct PodCache {
    ttl: Duration,
    max: usize,
    entries: HashMap<(String, String), (Duration, Option<PodPulls>)>,
}

impl PodCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max, entries: HashMap::new() }
    }

    /// The Pod as last looked up within `ttl` of `now` (`Some(None)`: it did not exist).
    pub fn get(&self, namespace: &str, pod: &str, now: Duration) -> Option<Option<PodPulls>> {
        let (at, found) = self.entries.get(&(namespace.to_owned(), pod.to_owned()))?;
        (now.saturating_sub(*at) < self.ttl).then(|| found.clone())
    }

    /// Remembers a lookup; the oldest goes when the cache is full.
    pub fn put(&mut self, namespace: &str, pod: &str, now: Duration, found: Option<PodPulls>) {
        let key = (namespace.to_owned(), pod.to_owned());
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _)| now.saturating_sub(*at) < ttl);
            if self.entries.len() >= self.max
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        if self.max > 0 {
            self.entries.insert(key, (now, found));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A failure kept, with the observations already counted in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub failure: PullFailure,
    observations: VecDeque<String>,
}

/// What recording an observation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A Pod and image not in the list before.
    New,
    /// One more failure of a Pod and image already listed.
    Again,
    /// Nothing changed: this version of the Event was counted already, or the entry did not stay in the list.
    Unchanged,
}

/// The shape of one list: its bound and the share one namespace may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub total: usize,
    pub per_namespace: usize,
}

/// The bounds of the selected namespaces' list and of the others'.
pub const SELECTED: Bounds = Bounds { total: PER_PROFILE, per_namespace: PER_NAMESPACE };
pub const UNSELECTED: Bounds = Bounds { total: UNSELECTED_PER_PROFILE, per_namespace: UNSELECTED_PER_NAMESPACE };

/// Adds one observation of `seen` (whose own count is ignored) to `list`, newest first within `bounds`: the entry
/// for the same Pod and image counts one more, unless `observation` was counted already; a namespace over its
/// share loses its oldest entry, the list over its bound its oldest. Pure.
pub fn merge(list: &mut Vec<Entry>, bounds: Bounds, seen: PullFailure, observation: &str) -> Recorded {
    let same =
        |e: &Entry| e.failure.namespace == seen.namespace && e.failure.pod == seen.pod && e.failure.image == seen.image;
    let recorded = if let Some(entry) = list.iter_mut().find(|e| same(e)) {
        if entry.observations.iter().any(|o| o == observation) {
            return Recorded::Unchanged;
        }
        entry.observations.push_back(observation.to_owned());
        if entry.observations.len() > OBSERVATIONS_KEPT {
            entry.observations.pop_front();
        }
        let count = entry.failure.count.saturating_add(1);
        let last_seen = if seen.last_seen.0 > entry.failure.last_seen.0 {
            seen.last_seen.clone()
        } else {
            entry.failure.last_seen.clone()
        };
        entry.failure = PullFailure { count, last_seen, ..seen.clone() };
        Recorded::Again
    } else {
        list.push(Entry {
            failure: PullFailure { count: 1, ..seen.clone() },
            observations: [observation.to_owned()].into(),
        });
        Recorded::New
    };
    list.sort_by_key(|e| std::cmp::Reverse(e.failure.last_seen.0));
    // Newest first: past its share, a namespace's oldest entries go.
    let mut of_namespace = 0;
    list.retain(|e| {
        if e.failure.namespace != seen.namespace {
            return true;
        }
        of_namespace += 1;
        of_namespace <= bounds.per_namespace
    });
    list.truncate(bounds.total);
    if list.iter().any(same) { recorded } else { Recorded::Unchanged }
}

/// The profiles a confirmed failure of `image` in `ns` is reported to, each with whether it selects `ns`: those
/// whose registry serves the image and that select the namespace, or failing that, every profile whose registry
/// serves it (the namespace pulls from it without its Secret).
pub fn profiles_for(
    image: &str,
    profiles: &[(std::sync::Arc<crate::api::RegistryProfile>, std::sync::Arc<crate::resolve::Meaning>)],
    ns: &crate::resolve::selection::NamespaceInfo,
) -> Vec<(String, bool)> {
    let Some(parsed) = crate::registry::reference::parse_memo(image) else { return Vec::new() };
    let serving: Vec<&crate::resolve::Meaning> =
        profiles.iter().map(|(_, m)| &**m).filter(|m| m.keys.iter().any(|(_, k)| k.matches(&parsed))).collect();
    let selecting: Vec<(String, bool)> =
        serving.iter().filter(|m| m.selects(ns)).map(|m| (m.name.clone(), true)).collect();
    if selecting.is_empty() { serving.iter().map(|m| (m.name.clone(), false)).collect() } else { selecting }
}

/// The failures of `list` seen within [`RECENT`] of `now`.
pub fn recent(list: &[PullFailure], now: jiff::Timestamp) -> Vec<PullFailure> {
    list.iter().filter(|f| now.duration_since(f.last_seen.0).unsigned_abs() < RECENT).cloned().collect()
}

/// When the oldest of `list` stops being recent (a status without it is due then).
pub fn next_expiry(list: &[PullFailure], now: jiff::Timestamp) -> Option<Duration> {
    list.iter().map(|f| RECENT.saturating_sub(now.duration_since(f.last_seen.0).unsigned_abs())).min()
}

/// A profile's recent failures as its status shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// From the namespaces it selects.
    pub selected: Vec<PullFailure>,
    /// From namespaces it does not select.
    pub unselected: Vec<PullFailure>,
}

#[derive(Default)]
struct Lists {
    selected: Vec<Entry>,
    unselected: Vec<Entry>,
}

/// The recent pull failures of every profile. Bounded: [`PER_PROFILE`] and [`UNSELECTED_PER_PROFILE`] per
/// profile.
#[derive(Default)]
pub struct PullFailures {
    by_profile: Mutex<HashMap<String, Lists>>,
}

impl PullFailures {
    /// Records one observation of a failure for `profile`, in the list of selected namespaces or the other.
    pub fn record(&self, profile: &str, selected: bool, seen: PullFailure, observation: &str) -> Recorded {
        let mut all = self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lists = all.entry(profile.to_owned()).or_default();
        if selected {
            merge(&mut lists.selected, SELECTED, seen, observation)
        } else {
            merge(&mut lists.unselected, UNSELECTED, seen, observation)
        }
    }

    /// The recent failures of `profile`, dropping the others.
    pub fn recent(&self, profile: &str, now: jiff::Timestamp) -> Shown {
        let mut all = self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(lists) = all.get_mut(profile) else { return Shown::default() };
        let fresh = |e: &Entry| now.duration_since(e.failure.last_seen.0).unsigned_abs() < RECENT;
        lists.selected.retain(fresh);
        lists.unselected.retain(fresh);
        let shown = Shown {
            selected: lists.selected.iter().map(|e| e.failure.clone()).collect(),
            unselected: lists.unselected.iter().map(|e| e.failure.clone()).collect(),
        };
        if lists.selected.is_empty() && lists.unselected.is_empty() {
            all.remove(profile);
        }
        shown
    }

    /// Forgets profiles `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|p, _| keep(p));
    }
}

/// A failure as status shows it (its count is set when recorded).
pub fn failure(claim: &Claim) -> PullFailure {
    PullFailure {
        namespace: claim.namespace.clone(),
        pod: claim.pod.clone(),
        image: claim.image.clone(),
        reason: claim.reason.to_owned(),
        message: claim.message.clone(),
        count: 1,
        last_seen: Time(claim.at),
    }
}

/// The image and the reason of a kubelet Event `Failed to pull image "<image>": <detail>`; `None` for any other
/// message.
pub fn parse(message: &str) -> Option<(String, &'static str)> {
    let rest = message.strip_prefix("Failed to pull image \"")?;
    let (image, detail) = rest.split_once('"')?;
    Some((image.to_owned(), reason(detail)))
}

/// The registry's reason, from the container runtime's words (containerd and CRI-O phrase them alike).
pub fn reason(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if any(&["x509:", "certificate signed by unknown authority", "tls: failed to verify"]) {
        "TLSUntrusted"
    } else if any(&[
        "401 unauthorized",
        "403 forbidden",
        "unauthorized",
        "authorization failed",
        "access denied",
        "denied:",
    ]) {
        "AuthenticationFailed"
    } else if any(&["code = notfound", ": not found", "404 not found", "manifest unknown", "no match for platform"]) {
        "ImageNotFound"
    } else if any(&[
        "dial tcp",
        "connection refused",
        "i/o timeout",
        "no such host",
        "context deadline exceeded",
        "tls handshake timeout",
        "connection reset",
        "no route to host",
    ]) {
        "RegistryUnreachable"
    } else {
        "PullFailed"
    }
}

/// What a pull failure's [`reason`] means for a person, and what to do: the note of the profile's `PullFailed`
/// Event.
pub fn advice(reason: &str) -> &'static str {
    match reason {
        "TLSUntrusted" => {
            "the node does not trust the registry's TLS certificate: add the registry's CA to the container \
             runtime's trust store on the nodes"
        }
        "AuthenticationFailed" => {
            "the registry refused the credentials the kubelet sent: check that the Pod lists the profile's Secret \
             in imagePullSecrets and that the profile is Ready (kubectl get registryprofiles)"
        }
        "ImageNotFound" => "the image, its tag or its platform does not exist: check the image name and tag",
        "RegistryUnreachable" => "the node could not reach the registry: check DNS and the node's network or proxy",
        _ => "the kubelet could not pull it: see the Pod's Events (kubectl describe pod) for the runtime's words",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pull_failure_reason_has_advice() {
        let reasons = ["TLSUntrusted", "AuthenticationFailed", "ImageNotFound", "RegistryUnreachable", "PullFailed"];
        for words in
            ["x509: certificate signed by unknown authority", "401 Unauthorized", "manifest unknown", "dial tcp", "?"]
        {
            assert!(reasons.contains(&reason(words)), "{words}: a reason the table does not list");
        }
        let advices: std::collections::BTreeSet<&str> = reasons.iter().map(|r| advice(r)).collect();
        assert_eq!(advices.len(), reasons.len(), "each reason has its own advice");
        assert!(advices.iter().all(|a| a.contains(": check") || a.contains(": add") || a.contains(": see")));
    }

    #[test]
    fn kubelet_messages_give_the_image_and_the_registrys_reason() {
        let cases = [
            (
                r#"Failed to pull image "127.0.0.1:5000/team/app:1": failed to pull and unpack image "127.0.0.1:5000/team/app:1": failed to resolve reference "127.0.0.1:5000/team/app:1": unexpected status from HEAD request to https://127.0.0.1:5000/v2/team/app/manifests/1: 401 Unauthorized"#,
                "AuthenticationFailed",
            ),
            (
                r#"Failed to pull image "r.example.com/app:2": rpc error: code = NotFound desc = failed to pull and unpack image "r.example.com/app:2": failed to resolve reference "r.example.com/app:2": r.example.com/app:2: not found"#,
                "ImageNotFound",
            ),
            (
                r#"Failed to pull image "r.example.com/app:2": failed to resolve reference "r.example.com/app:2": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"#,
                "AuthenticationFailed",
            ),
            (
                r#"Failed to pull image "10.0.0.1:5000/app:1": failed to do request: Head "https://10.0.0.1:5000/v2/app/manifests/1": dial tcp 10.0.0.1:5000: connect: connection refused"#,
                "RegistryUnreachable",
            ),
            (
                r#"Failed to pull image "r.example.com/app:1": failed to do request: Head "https://r.example.com/v2/app/manifests/1": tls: failed to verify certificate: x509: certificate signed by unknown authority"#,
                "TLSUntrusted",
            ),
            (r#"Failed to pull image "r.example.com/app:1": something else entirely"#, "PullFailed"),
        ];
        for (message, want) in cases {
            let (image, reason) = parse(message).unwrap();
            assert!(message.contains(&format!("\"{image}\"")));
            assert_eq!(reason, want, "{message}");
        }
        for other in ["Error: ErrImagePull", "Back-off pulling image \"x\"", "Failed to pull image x", ""] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    fn at(minutes_ago: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 - minutes_ago * 60).unwrap()
    }

    const FAILED: &str = r#"Failed to pull image "r.example.com/app:1": rpc error: 401 Unauthorized"#;

    /// An Event as the kubelet writes it (in the Pod's namespace, no eventTime), changed by `edit`.
    fn event(edit: impl FnOnce(&mut serde_json::Value)) -> Event {
        let mut e = serde_json::json!({
            "metadata": {"name": "app.1", "namespace": "a", "uid": "e1", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": "a", "name": "app", "uid": "u1"},
            "reason": "Failed", "message": FAILED, "count": 9999,
            "lastTimestamp": at(2).to_string(),
        });
        edit(&mut e);
        serde_json::from_value(e).unwrap()
    }

    #[test]
    fn an_event_claims_a_failure_only_for_a_pod_in_its_own_namespace_recently() {
        use serde_json::json;
        type Edit = fn(&mut serde_json::Value);
        type Case<'a> = (&'a str, Edit, Result<(&'a str, &'a str, Option<&'a str>), Refusal>);
        let now = at(0);
        let cases: &[Case] = &[
            ("the kubelet's Event", |_| {}, Ok(("a", "app", Some("u1")))),
            (
                "eventTime set, naming a Pod in another namespace",
                |e| {
                    e["metadata"]["namespace"] = json!("tenant");
                    e["eventTime"] = json!(at(1).to_string());
                },
                Err(Refusal::OtherNamespace),
            ),
            ("no namespace of its own", |e| e["metadata"]["namespace"] = json!(null), Err(Refusal::OtherNamespace)),
            (
                "about something other than a Pod",
                |e| e["involvedObject"]["kind"] = json!("Node"),
                Err(Refusal::NotAPullFailure),
            ),
            (
                "a Pod of another API",
                |e| e["involvedObject"]["apiVersion"] = json!("x/v1"),
                Err(Refusal::NotAPullFailure),
            ),
            ("another message", |e| e["message"] = json!("Error: ErrImagePull"), Err(Refusal::NotAPullFailure)),
            ("older than an hour", |e| e["lastTimestamp"] = json!(at(61).to_string()), Err(Refusal::Stale)),
            (
                "from the future: as of now",
                |e| e["lastTimestamp"] = json!(at(-600).to_string()),
                Ok(("a", "app", Some("u1"))),
            ),
            ("no uid", |e| e["involvedObject"]["uid"] = json!(""), Ok(("a", "app", None))),
        ];
        for (name, edit, want) in cases {
            let got = claim(&event(*edit), now);
            let got = got.as_ref().map(|c| (c.namespace.as_str(), c.pod.as_str(), c.uid.as_deref())).map_err(|r| *r);
            assert_eq!(got, want.clone(), "{name}");
        }
        let c = claim(&event(|_| {}), now).unwrap();
        assert_eq!(
            (c.image.as_str(), c.reason, c.at, c.observation.as_str()),
            ("r.example.com/app:1", "AuthenticationFailed", at(2), "e1/7")
        );
        assert_eq!(claim(&event(|e| e["lastTimestamp"] = json!(at(-600).to_string())), now).unwrap().at, now);
    }

    fn pod(uid: &str, statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "app", "uid": uid}, "status": statuses}))
            .unwrap()
    }

    fn waiting(image: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"name": "c", "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason}}})
    }

    #[test]
    fn only_the_pods_own_status_confirms_a_failure() {
        use serde_json::json;
        let c = claim(&event(|_| {}), at(0)).unwrap();
        let cases: Vec<(&str, Option<Pod>, Result<(), Refusal>)> = vec![
            (
                "waiting after a failed pull",
                Some(pod("u1", json!({"containerStatuses": [waiting("r.example.com/app:1", "ErrImagePull")]}))),
                Ok(()),
            ),
            (
                "backing off",
                Some(pod("u1", json!({"containerStatuses": [waiting("r.example.com/app:1", "ImagePullBackOff")]}))),
                Ok(()),
            ),
            (
                "an init container",
                Some(pod("u1", json!({"initContainerStatuses": [waiting("r.example.com/app:1", "ErrImagePull")]}))),
                Ok(()),
            ),
            ("no such Pod", None, Err(Refusal::PodNotFound)),
            (
                "another Pod of that name",
                Some(pod("u2", json!({"containerStatuses": [waiting("r.example.com/app:1", "ErrImagePull")]}))),
                Err(Refusal::UidMismatch),
            ),
            (
                "another image failing",
                Some(pod("u1", json!({"containerStatuses": [waiting("r.example.com/other:1", "ErrImagePull")]}))),
                Err(Refusal::NotFailing),
            ),
            (
                "waiting for another reason",
                Some(pod("u1", json!({"containerStatuses": [waiting("r.example.com/app:1", "ContainerCreating")]}))),
                Err(Refusal::NotFailing),
            ),
            ("no status", Some(pod("u1", json!({}))), Err(Refusal::NotFailing)),
        ];
        // The runtime may report the image under another name for the same content (another registry's that the
        // node pulled it from before): the spec's name is the one the kubelet pulls and its Event gives.
        let mut renamed = pod("u1", json!({"containerStatuses": [waiting("s.example.com/app:1", "ImagePullBackOff")]}));
        renamed.spec =
            serde_json::from_value(json!({"containers": [{"name": "c", "image": "r.example.com/app:1"}]})).unwrap();
        assert_eq!(confirm(&c, Some(&pod_pulls(&renamed))), Ok(()), "a status naming the image another way");
        for (name, pod, want) in cases {
            let pulls = pod.as_ref().map(pod_pulls);
            assert_eq!(confirm(&c, pulls.as_ref()), want, "{name}");
        }
        // Without a uid in the Event, any Pod of that name whose status shows the failure.
        let no_uid = Claim { uid: None, ..c };
        let other =
            pod_pulls(&pod("u2", json!({"containerStatuses": [waiting("r.example.com/app:1", "ErrImagePull")]})));
        assert_eq!(confirm(&no_uid, Some(&other)), Ok(()));
    }

    #[test]
    fn images_compare_as_the_kubelet_writes_them() {
        let cases = [
            ("r.example.com/app:1", "r.example.com/app:1", true),
            ("nginx", "nginx:latest", true),
            ("r.example.com:5000/app", "r.example.com:5000/app:latest", true),
            ("r.example.com:5000/app", "r.example.com:5000/app:1", false),
            ("app@sha256:00", "app@sha256:00", true),
            ("app@sha256:00", "app:latest", false),
            ("r.example.com/app:1", "s.example.com/app:1", false),
        ];
        for (a, b, want) in cases {
            assert_eq!((same_image(a, b), same_image(b, a)), (want, want), "{a} {b}");
        }
    }

    #[test]
    fn pod_lookups_are_remembered_for_a_while_within_a_bound() {
        let s = Duration::from_secs;
        let mut cache = PodCache::new(s(10), 2);
        let found = PodPulls { uid: Some("u".into()), failing: vec!["i".into()], ..Default::default() };
        assert_eq!(cache.get("a", "p", s(0)), None);
        cache.put("a", "p", s(0), Some(found.clone()));
        cache.put("a", "gone", s(1), None);
        assert_eq!(cache.get("a", "p", s(9)), Some(Some(found.clone())));
        assert_eq!(cache.get("a", "gone", s(9)), Some(None));
        assert_eq!(cache.get("a", "p", s(10)), None, "expired");
        // Full: the oldest goes.
        cache.put("b", "p", s(5), None);
        assert_eq!((cache.len(), cache.get("a", "p", s(5)), cache.get("a", "gone", s(5))), (2, None, Some(None)));
        // Expired ones go first.
        cache.put("c", "p", s(12), None);
        assert_eq!((cache.len(), cache.get("b", "p", s(12))), (2, Some(None)));
    }

    fn seen(ns: &str, pod: &str, minutes_ago: i64, reason: &str) -> PullFailure {
        PullFailure {
            namespace: ns.into(),
            pod: pod.into(),
            image: "img".into(),
            reason: reason.into(),
            message: "m".into(),
            count: 9999,
            last_seen: Time(at(minutes_ago)),
        }
    }

    #[test]
    fn counts_are_what_regcred_observed_each_version_of_an_event_once() {
        let mut list = Vec::new();
        assert_eq!(merge(&mut list, SELECTED, seen("a", "p", 5, "ImageNotFound"), "e1/1"), Recorded::New);
        assert_eq!(list[0].failure.count, 1, "the Event's own count is not believed");
        // The same version again (a relist): not counted.
        assert_eq!(merge(&mut list, SELECTED, seen("a", "p", 5, "ImageNotFound"), "e1/1"), Recorded::Unchanged);
        // A new version of the Event, and another Event: counted, time and reason from the newest.
        assert_eq!(merge(&mut list, SELECTED, seen("a", "p", 3, "ImageNotFound"), "e1/2"), Recorded::Again);
        assert_eq!(merge(&mut list, SELECTED, seen("a", "p", 1, "AuthenticationFailed"), "e2/1"), Recorded::Again);
        assert_eq!((list.len(), list[0].failure.count, list[0].failure.last_seen.0), (1, 3, at(1)));
        assert_eq!(list[0].failure.reason, "AuthenticationFailed");
        // An older observation does not move the time back.
        merge(&mut list, SELECTED, seen("a", "p", 30, "AuthenticationFailed"), "e3/1");
        assert_eq!((list[0].failure.count, list[0].failure.last_seen.0), (4, at(1)));
    }

    #[test]
    fn no_namespace_crowds_out_another_and_lists_stay_within_their_bounds() {
        let mut list = Vec::new();
        merge(&mut list, SELECTED, seen("legit", "p", 30, "ImageNotFound"), "x");
        // A flood of failures from one namespace keeps only its newest few.
        for i in 0..50 {
            let r = merge(&mut list, SELECTED, seen("noisy", &format!("p{i}"), 10, "PullFailed"), &format!("o{i}"));
            assert_ne!(r, Recorded::Again);
        }
        let of = |list: &[Entry], ns: &str| list.iter().filter(|e| e.failure.namespace == ns).count();
        assert_eq!((of(&list, "noisy"), of(&list, "legit")), (PER_NAMESPACE, 1));
        // Many namespaces: the newest PER_PROFILE, at most PER_NAMESPACE each.
        for n in 0..20 {
            for p in 0..5 {
                merge(&mut list, SELECTED, seen(&format!("n{n}"), &format!("p{p}"), 5, "PullFailed"), "o");
            }
        }
        assert_eq!(list.len(), PER_PROFILE);
        assert!(list.iter().all(|e| of(&list, &e.failure.namespace) <= PER_NAMESPACE));
        // An entry too old to stay is not reported as recorded.
        assert_eq!(merge(&mut list, SELECTED, seen("old", "p", 59, "PullFailed"), "o"), Recorded::Unchanged);
        // The unselected list: one per namespace, three in all.
        let mut other = Vec::new();
        for n in 0..5 {
            for p in 0..3 {
                merge(&mut other, UNSELECTED, seen(&format!("u{n}"), &format!("p{p}"), 5, "PullFailed"), "o");
            }
        }
        assert_eq!(other.len(), UNSELECTED_PER_PROFILE);
        assert!(other.iter().all(|e| of(&other, &e.failure.namespace) == 1));
    }

    #[test]
    fn unselected_namespaces_never_take_the_place_of_selected_ones() {
        let store = PullFailures::default();
        store.record("p", true, seen("mine", "app", 30, "AuthenticationFailed"), "o");
        for n in 0..100 {
            store.record("p", false, seen(&format!("t{n}"), "app", 1, "PullFailed"), &format!("o{n}"));
        }
        let shown = store.recent("p", at(0));
        assert_eq!(shown.selected.iter().map(|f| f.namespace.as_str()).collect::<Vec<_>>(), ["mine"]);
        assert_eq!(shown.unselected.len(), UNSELECTED_PER_PROFILE);
        // Older than an hour: no longer recent, and due to leave status when it turns so.
        assert_eq!(store.recent("p", at(-31)).selected, []);
        let now = at(0);
        let old = vec![seen("a", "old", 61, "PullFailed"), seen("a", "new", 50, "PullFailed")];
        assert_eq!(recent(&old, now).iter().map(|f| f.pod.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(next_expiry(&recent(&old, now), now), Some(Duration::from_secs(10 * 60)));
        assert_eq!(crate::images::shorten(&"x".repeat(1000)).chars().count(), crate::images::MAX_MESSAGE);
    }
}
