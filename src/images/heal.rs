//! Self-healing: a Pod admitted without a profile's Secret (created while regcred was down, before the profile
//! selected its namespace, or before its ServiceAccount listed the Secret) never gets it, because a Pod's
//! `imagePullSecrets` cannot change. When the kubelet's authentication failure for such a Pod is confirmed
//! ([`super::pulls`]), and a Pod created now would get the Secret, regcred asks its controller for a new one by
//! evicting it (the Eviction API: PodDisruptionBudgets decide, nothing is forced); a Pod no controller re-creates
//! gets an Event that says what to do.
//!
//! [`decide`] says what one confirmed failure calls for; [`Healer`] keeps it from becoming a loop: a Pod is acted
//! on once, and a Pod its controller created after regcred evicted one of its Pods (within [`BACKOFF`]) is not
//! evicted: it is the replacement, failing again, so something else is wrong and it gets an Event instead (its
//! siblings created before that eviction, during the same outage, are evicted as they fail), a Pod whose eviction a budget refused waits [`BLOCKED_RETRY`], and
//! evictions are limited per profile ([`PER_PROFILE_RATE`]) under a global bound. All of it is pure: the caller
//! passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::limit::{Limiter, Rate};
use super::pulls::PodPulls;
use crate::api::{HealAction, HealingMode, HealingStatus};

/// The controllers that re-create an evicted Pod from their template, by `(apiVersion, kind)`.
pub const CONTROLLERS: [(&str, &str); 4] =
    [("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("batch/v1", "Job")];
/// A controller whose Pod was evicted is not evicted again for this long: a re-created Pod that fails the same
/// way has another problem, and evicting it again would only repeat it.
pub const BACKOFF: Duration = Duration::from_secs(15 * 60);
/// A Pod whose eviction a PodDisruptionBudget refused is tried again after this long, at its next failure.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(60);
/// Evictions per profile and namespace: 20 at once (a Deployment's worth of Pods created during an outage), then one
/// every 6 s, so one namespace cannot take a shared profile's whole rate.
pub const PER_NAMESPACE_RATE: Rate = Rate { burst: 20, every: Duration::from_secs(6) };
/// Evictions per profile: 50 at once, then one a second.
pub const PER_PROFILE_RATE: Rate = Rate { burst: 50, every: Duration::from_secs(1) };
/// Evictions of all profiles together: 100 at once, then four a second.
pub const GLOBAL_RATE: Rate = Rate { burst: 100, every: Duration::from_millis(250) };
/// A replacement Pod's creation time (the apiserver's clock, in whole seconds) is compared with regcred's clock at
/// the first eviction less this margin: a doubt makes an Event, not a second eviction.
pub const CLOCK_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);
/// Pods and controllers remembered (beyond it the oldest go); a forgotten Pod is at worst acted on again.
pub const REMEMBERED: usize = 4096;
/// How long an action counts as recent in status.
pub const RECENT: Duration = Duration::from_secs(60 * 60);
/// Actions shown per profile, and per namespace within them.
pub const SHOWN: usize = 10;
pub const SHOWN_PER_NAMESPACE: usize = 3;

/// How a Pod created now would get a profile's Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The webhook adds it (regcred serves the webhook, and neither the namespace nor the Pod opted out).
    Webhook,
    /// The Pod's ServiceAccount lists it.
    ServiceAccount,
    /// Neither: re-creating the Pod would not help.
    None,
}

/// One profile that selects the Pod's namespace and serves the failing image, as self-healing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub profile: String,
    pub secret: String,
    /// The profile's mode, capped by regcred's own (`--healing`).
    pub mode: HealingMode,
    /// regcred's Secret is in the Pod's namespace now.
    pub in_place: bool,
    pub delivery: Delivery,
}

/// What regcred itself allows (`--healing`), whether its webhook serves now, and its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap<'a> {
    pub mode: HealingMode,
    pub injects: bool,
    pub operator_namespace: &'a str,
}

/// Namespaces the chart's webhook configuration never sends (besides regcred's own and those opted out).
pub const UNSERVED_NAMESPACES: [&str; 1] = ["kube-system"];

/// The [`Offer`]s for a failure of `image` in `pod`, in namespace `ns`: the profiles that may write their Secret
/// into it ([`Meaning::may_write_secret`](crate::resolve::Meaning::may_write_secret): they write Secrets, select
/// the namespace, and it is not contested) and serve the image. A profile delivered by the kubelet's credential
/// provider alone makes no offer: a re-created Pod would get no Secret of it either. `in_place(namespace, secret)`
/// says whether regcred's Secret is there, `account_lists(namespace, account, secret)` whether a ServiceAccount
/// lists it. Pure but for those two.
pub fn offers(
    image: &str,
    profiles: &[(std::sync::Arc<crate::api::RegistryProfile>, std::sync::Arc<crate::resolve::Meaning>)],
    ns: &crate::resolve::selection::NamespaceInfo,
    pod: &PodPulls,
    cap: Cap<'_>,
    in_place: impl Fn(&str, &str) -> bool,
    account_lists: impl Fn(&str, &str, &str) -> bool,
) -> Vec<Offer> {
    let Some(parsed) = crate::registry::reference::parse_memo(image) else { return Vec::new() };
    let meanings = || profiles.iter().map(|(_, m)| &**m);
    let ns_opted_out = ns.labels.get(crate::api::OPT_OUT_LABEL).is_some_and(|v| v == crate::api::OPT_OUT_VALUE)
        || UNSERVED_NAMESPACES.contains(&ns.name.as_str())
        || ns.name == cap.operator_namespace;
    profiles
        .iter()
        .filter(|(_, m)| m.keys.iter().any(|(_, k)| k.matches(&parsed)))
        .filter(|(_, m)| m.may_write_secret(ns, meanings()).is_ok())
        .map(|(p, m)| {
            let mode = p.spec.healing.as_ref().map(|h| h.mode).unwrap_or_default().min(cap.mode);
            let delivery = if cap.injects && !ns_opted_out && !pod.opted_out {
                Delivery::Webhook
            } else if pod.pull_secrets.is_empty() && account_lists(&ns.name, &pod.service_account, &m.secret_name) {
                // The ServiceAccount admission plugin copies its account's pull Secrets only into a Pod that
                // names none.
                Delivery::ServiceAccount
            } else {
                Delivery::None
            };
            Offer {
                profile: m.name.clone(),
                secret: m.secret_name.clone(),
                mode,
                in_place: in_place(&ns.name, &m.secret_name),
                delivery,
            }
        })
        .collect()
}

/// Why a Pod gets an Event rather than an eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No ReplicaSet, StatefulSet, DaemonSet or Job owns it.
    NoController,
    /// Only an ephemeral container fails, which no new Pod would have.
    Ephemeral,
    /// The webhook is off (or opted out of) and the ServiceAccount does not list the Secret.
    NotDelivered,
    /// The profile (or regcred) says `Notify`.
    Chosen,
    /// Its controller's Pod was evicted a moment ago, and the new one fails too.
    StillFailing,
}

/// What one confirmed failure calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Evict {
        profile: String,
        secret: String,
    },
    Notify {
        profile: String,
        secret: String,
        why: Why,
    },
    /// Nothing to heal, and why (a metric label).
    Leave(&'static str),
}

/// Whether a pull failure with this registry reason ([`super::pulls::reason`]) can be healed: only an
/// authentication failure says the Pod may lack the Secret.
pub fn heals(reason: &str) -> bool {
    reason == "AuthenticationFailed"
}

/// What a confirmed pull failure of `image` with registry reason `reason` in `pod` calls for, given the `offers`
/// of the profiles that select the namespace and serve the image. Pure.
///
/// Only an authentication failure of a Pod that lists none of the profiles' Secrets is healed, and only once a
/// Secret is in place (until then a new Pod would fail the same way; the kubelet's next retry brings another
/// Event). A Pod that lists the Secret and still fails has wrong credentials, which no eviction fixes.
pub fn decide(reason: &str, image: &str, pod: &PodPulls, offers: &[Offer]) -> Verdict {
    if !heals(reason) {
        return Verdict::Leave("not_authentication");
    }
    let on: Vec<&Offer> = offers.iter().filter(|o| o.mode != HealingMode::Off).collect();
    if on.is_empty() {
        return Verdict::Leave(if offers.is_empty() { "no_profile" } else { "off" });
    }
    if on.iter().any(|o| pod.pull_secrets.contains(&o.secret)) {
        return Verdict::Leave("lists_secret");
    }
    // The offer most able to help: in place, then delivered, then allowed to evict.
    let Some(best) = on.iter().filter(|o| o.in_place).max_by_key(|o| (o.delivery != Delivery::None, o.mode)) else {
        return Verdict::Leave("secret_not_in_place");
    };
    let (profile, secret) = (best.profile.clone(), best.secret.clone());
    let notify = |why| Verdict::Notify { profile: profile.clone(), secret: secret.clone(), why };
    let controlled =
        pod.owner.as_ref().is_some_and(|(api, kind, _)| CONTROLLERS.iter().any(|(a, k)| a == api && k == kind));
    if pod.failing_ephemeral.iter().any(|i| super::pulls::same_image(i, image)) {
        notify(Why::Ephemeral)
    } else if !controlled {
        notify(Why::NoController)
    } else if best.delivery == Delivery::None {
        notify(Why::NotDelivered)
    } else if best.mode == HealingMode::Notify {
        notify(Why::Chosen)
    } else {
        Verdict::Evict { profile, secret }
    }
}

/// What to do now, after the loop guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Evict,
    Notify(Why),
    /// Nothing now (a metric label): acted on already, waiting after a refusal, or over the rate.
    Skip(&'static str),
}

/// What happened to an eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    Done,
    /// A PodDisruptionBudget refused it (429).
    Blocked,
    /// Any other error (reported, tried again at the next failure).
    Failed,
    /// No answer in time: it may have happened, so the controller counts as evicted (its next Pods get Events).
    Unknown,
}

/// The loop guards and the recent actions of every profile. Bounded by [`REMEMBERED`] and [`SHOWN`].
#[derive(Debug)]
pub struct Healer {
    /// Pods acted on for good (evicted or notified), by uid.
    done: HashMap<String, Duration>,
    /// Pods whose eviction a budget refused, by uid, and when.
    blocked: HashMap<String, Duration>,
    /// Controllers whose Pod was evicted, by uid: when first within [`BACKOFF`] (by the clock the caller
    /// passes, and by the wall clock, which a Pod's creation time is compared with).
    evicted_owners: HashMap<String, (Duration, jiff::Timestamp)>,
    /// Per profile and namespace, under the global rate.
    limiter: Limiter,
    /// Per profile.
    per_profile: Limiter,
    /// Pods told by a `NotDelivered` Event, which a later eviction may still heal, by uid.
    deferred: HashMap<String, Duration>,
    shown: HashMap<String, Vec<HealAction>>,
    evictions: HashMap<String, VecDeque<jiff::Timestamp>>,
}

impl Default for Healer {
    fn default() -> Self {
        Self {
            done: HashMap::new(),
            blocked: HashMap::new(),
            evicted_owners: HashMap::new(),
            limiter: Limiter::new(PER_NAMESPACE_RATE, GLOBAL_RATE, REMEMBERED),
            per_profile: Limiter::new(PER_PROFILE_RATE, Rate { burst: u32::MAX, every: Duration::ZERO }, REMEMBERED),
            deferred: HashMap::new(),
            shown: HashMap::new(),
            evictions: HashMap::new(),
        }
    }
}

/// The key of a Pod's controller: its namespace and uid (a uid alone could be forged from another namespace).
fn owner_key(pod: &PodPulls) -> String {
    let uid = pod.owner.as_ref().map(|(_, _, uid)| uid.as_str()).unwrap_or_default();
    format!("{}/{uid}", pod.namespace)
}

/// Remembers `key` at `now` in `map`, dropping entries older than `keep` (and the oldest) past [`REMEMBERED`].
fn remember(map: &mut HashMap<String, Duration>, key: &str, now: Duration, keep: Duration) {
    remember_as(map, key, now, now, keep, |at| *at);
}

/// As [`remember`], for a map whose values say when (`at`) they were remembered.
fn remember_as<V>(
    map: &mut HashMap<String, V>,
    key: &str,
    value: V,
    now: Duration,
    keep: Duration,
    at: impl Fn(&V) -> Duration,
) {
    if !map.contains_key(key) && map.len() >= REMEMBERED {
        map.retain(|_, v| now.saturating_sub(at(v)) < keep);
        if map.len() >= REMEMBERED
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(key.to_owned(), value);
}

impl Healer {
    /// The step `verdict` leads to for `pod` at `now`: each Pod is acted on once; an eviction of a Pod created
    /// after its controller had one evicted (within [`BACKOFF`]) becomes an Event; a refused one waits
    /// [`BLOCKED_RETRY`]; evictions take from the profile's rate.
    pub fn step(&mut self, verdict: &Verdict, pod: &PodPulls, now: Duration) -> Step {
        let uid = pod.uid.as_deref().unwrap_or_default();
        if self.done.contains_key(uid) {
            return Step::Skip("acted_already");
        }
        match verdict {
            Verdict::Leave(why) => Step::Skip(why),
            Verdict::Notify { why: Why::NotDelivered, .. }
                if self.deferred.get(uid).is_some_and(|at| now.saturating_sub(*at) < BACKOFF) =>
            {
                Step::Skip("notified_recently")
            }
            Verdict::Notify { why, .. } => Step::Notify(*why),
            Verdict::Evict { profile, .. } => {
                let replacement = self.evicted_owners.get(&owner_key(pod)).is_some_and(|(at, wall)| {
                    now.saturating_sub(*at) < BACKOFF
                        && pod.created.is_none_or(|created| wall.checked_sub(CLOCK_MARGIN).is_ok_and(|w| created >= w))
                });
                if replacement {
                    return Step::Notify(Why::StillFailing);
                }
                if self.blocked.get(uid).is_some_and(|at| now.saturating_sub(*at) < BLOCKED_RETRY) {
                    return Step::Skip("blocked_retry");
                }
                if !self.limiter.allow(&format!("{profile}/{}", pod.namespace), now)
                    || !self.per_profile.allow(profile, now)
                {
                    return Step::Skip("rate_limited");
                }
                // In flight: a second claim about the same Pod waits for this one's outcome.
                remember(&mut self.blocked, uid, now, BLOCKED_RETRY);
                Step::Evict
            }
        }
    }

    /// Records that `pod` got an Event for `why`: it gets no other, but one that only said a new Pod would not get
    /// the Secret either leaves a later eviction possible (once the webhook or the ServiceAccount would help).
    pub fn notified(&mut self, pod: &PodPulls, why: Option<Why>, now: Duration) {
        let uid = pod.uid.as_deref().unwrap_or_default();
        if why == Some(Why::NotDelivered) {
            remember(&mut self.deferred, uid, now, BACKOFF);
        } else {
            remember(&mut self.done, uid, now, BACKOFF);
        }
    }

    /// Records what an eviction of `pod` for `profile` did.
    pub fn evicted(&mut self, profile: &str, pod: &PodPulls, result: Evicted, now: Duration, at: jiff::Timestamp) {
        let uid = pod.uid.as_deref().unwrap_or_default();
        if result == Evicted::Done {
            self.blocked.remove(uid);
            remember(&mut self.done, uid, now, BACKOFF);
            let times = self.evictions.entry(profile.to_owned()).or_default();
            times.push_back(at);
            while times.len() > REMEMBERED {
                times.pop_front();
            }
        } else {
            remember(&mut self.blocked, uid, now, BLOCKED_RETRY);
        }
        if matches!(result, Evicted::Done | Evicted::Unknown) && pod.owner.is_some() {
            // The first eviction within the backoff is the one replacements are compared with.
            let owner = owner_key(pod);
            if self.evicted_owners.get(&owner).is_none_or(|(t, _)| now.saturating_sub(*t) >= BACKOFF) {
                remember_as(&mut self.evicted_owners, &owner, (now, at), now, BACKOFF, |(t, _)| *t);
            }
        }
    }

    /// Shows `action` in `profile`'s status: newest first, at most [`SHOWN_PER_NAMESPACE`] per namespace and
    /// [`SHOWN`] in all; a repeat for the same Pod replaces its entry.
    pub fn show(&mut self, profile: &str, action: HealAction) {
        let list = self.shown.entry(profile.to_owned()).or_default();
        list.retain(|a| !(a.namespace == action.namespace && a.pod == action.pod));
        list.insert(0, action);
        let namespace = list[0].namespace.clone();
        let mut of_namespace = 0;
        list.retain(|a| {
            if a.namespace != namespace {
                return true;
            }
            of_namespace += 1;
            of_namespace <= SHOWN_PER_NAMESPACE
        });
        list.truncate(SHOWN);
    }

    /// `profile`'s healing as status shows it (`None`: nothing in the last hour); older actions are dropped.
    pub fn status(&mut self, profile: &str, now: jiff::Timestamp) -> Option<HealingStatus> {
        let fresh = |t: &jiff::Timestamp| now.duration_since(*t).unsigned_abs() < RECENT;
        let recent = self.shown.get_mut(profile).map_or_else(Vec::new, |list| {
            list.retain(|a| fresh(&a.at.0));
            list.clone()
        });
        let evictions = self.evictions.get_mut(profile).map_or(0, |times| {
            times.retain(fresh);
            times.len()
        });
        if recent.is_empty() && evictions == 0 {
            self.shown.remove(profile);
            self.evictions.remove(profile);
            return None;
        }
        Some(HealingStatus { evictions: i32::try_from(evictions).unwrap_or(i32::MAX), recent })
    }

    /// When the oldest shown action of `profile` stops being recent (a status without it is due then).
    pub fn next_expiry(&self, profile: &str, now: jiff::Timestamp) -> Option<Duration> {
        let shown = self.shown.get(profile).into_iter().flatten().map(|a| a.at.0);
        let evicted = self.evictions.get(profile).into_iter().flatten().copied();
        shown.chain(evicted).map(|t| RECENT.saturating_sub(now.duration_since(t).unsigned_abs())).min()
    }

    /// Forgets profiles `keep` says no to.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.shown.retain(|p, _| keep(p));
        self.evictions.retain(|p, _| keep(p));
    }
}

/// What the user reads about a Pod that got an Event (on the Pod and on the profile): what is wrong and exactly
/// what to do.
pub fn advice(why: Why, namespace: &str, pod: &str, image: &str, profile: &str, secret: &str) -> String {
    let missing = format!(
        "Pod {namespace}/{pod} cannot pull {image}: it was admitted without regcred's Secret {secret} (profile {profile}), which is in the namespace now"
    );
    let fix = match why {
        Why::NoController => format!(
            "no controller re-creates it: delete and re-create it (kubectl -n {namespace} delete pod {pod}, then apply it again), or add imagePullSecrets: [{{name: {secret}}}] to its manifest"
        ),
        Why::Ephemeral => "only an ephemeral container fails, and a Pod's pull Secrets cannot change: start the debug container in a Pod created since".to_owned(),
        Why::NotDelivered => format!(
            "a new Pod would not get it either (the webhook is off or opted out, and the Pod's ServiceAccount does not list it): add imagePullSecrets: [{{name: {secret}}}] to the workload, or name its ServiceAccount in the profile's spec.serviceAccounts"
        ),
        Why::Chosen => format!(
            "healing is Notify: delete the Pod (kubectl -n {namespace} delete pod {pod}) so its controller re-creates it with the Secret"
        ),
        Why::StillFailing => format!(
            "its controller's previous Pod was evicted for the same reason less than {} min ago and the new one fails too: check that the webhook serves the namespace and the image, and the workload's imagePullSecrets",
            BACKOFF.as_secs() / 60
        ),
    };
    format!("{missing}; {fix}")
}

/// What the user reads about an eviction.
pub fn evicted_note(result: Evicted, namespace: &str, pod: &str, image: &str, secret: &str, error: &str) -> String {
    match result {
        Evicted::Done => format!(
            "evicted Pod {namespace}/{pod}: it could not pull {image} without Secret {secret}; its controller re-creates it with the Secret"
        ),
        Evicted::Blocked => format!(
            "could not evict Pod {namespace}/{pod} (it cannot pull {image} without Secret {secret}): a PodDisruptionBudget allows no disruption now; tried again at its next failure after {} s, never forced",
            BLOCKED_RETRY.as_secs()
        ),
        Evicted::Failed | Evicted::Unknown => {
            format!("could not evict Pod {namespace}/{pod} (it cannot pull {image} without Secret {secret}): {error}")
        }
    }
}

/// A status entry.
pub fn action(
    namespace: &str,
    pod: &str,
    image: &str,
    action: &str,
    message: String,
    at: jiff::Timestamp,
) -> HealAction {
    HealAction {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        image: image.to_owned(),
        action: action.to_owned(),
        message: super::shorten(&message),
        at: Time(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(owner: Option<(&str, &str)>, secrets: &[&str]) -> PodPulls {
        PodPulls {
            uid: Some("pod-1".into()),
            failing: vec!["r.example/app:1".into()],
            owner: owner.map(|(api, kind)| (api.into(), kind.into(), "owner-1".into())),
            pull_secrets: secrets.iter().map(|s| (*s).into()).collect(),
            service_account: "default".into(),
            ..Default::default()
        }
    }

    fn offer(mode: HealingMode, in_place: bool, delivery: Delivery) -> Offer {
        Offer { profile: "p".into(), secret: "regcred-p".into(), mode, in_place, delivery }
    }

    const RS: Option<(&str, &str)> = Some(("apps/v1", "ReplicaSet"));
    const IMAGE: &str = "r.example/app:1";

    #[test]
    fn only_an_authentication_failure_of_a_pod_without_the_secret_is_healed() {
        use Delivery::{None as Undelivered, ServiceAccount, Webhook};
        use HealingMode::{Evict, Notify, Off};
        let evict = Verdict::Evict { profile: "p".into(), secret: "regcred-p".into() };
        let notify = |why| Verdict::Notify { profile: "p".into(), secret: "regcred-p".into(), why };
        let cases = [
            (
                "controlled, webhook",
                "AuthenticationFailed",
                pod(RS, &[]),
                vec![offer(Evict, true, Webhook)],
                evict.clone(),
            ),
            (
                "service account mode",
                "AuthenticationFailed",
                pod(Some(("apps/v1", "StatefulSet")), &["other"]),
                vec![offer(Evict, true, ServiceAccount)],
                evict.clone(),
            ),
            (
                "job",
                "AuthenticationFailed",
                pod(Some(("batch/v1", "Job")), &[]),
                vec![offer(Evict, true, Webhook)],
                evict.clone(),
            ),
            (
                "not found is not healed",
                "ImageNotFound",
                pod(RS, &[]),
                vec![offer(Evict, true, Webhook)],
                Verdict::Leave("not_authentication"),
            ),
            (
                "lists the secret: wrong credentials",
                "AuthenticationFailed",
                pod(RS, &["regcred-p"]),
                vec![offer(Evict, true, Webhook)],
                Verdict::Leave("lists_secret"),
            ),
            (
                "secret not there yet",
                "AuthenticationFailed",
                pod(RS, &[]),
                vec![offer(Evict, false, Webhook)],
                Verdict::Leave("secret_not_in_place"),
            ),
            ("off", "AuthenticationFailed", pod(RS, &[]), vec![offer(Off, true, Webhook)], Verdict::Leave("off")),
            ("no profile", "AuthenticationFailed", pod(RS, &[]), vec![], Verdict::Leave("no_profile")),
            (
                "standalone",
                "AuthenticationFailed",
                pod(None, &[]),
                vec![offer(Evict, true, Webhook)],
                notify(Why::NoController),
            ),
            (
                "unknown controller",
                "AuthenticationFailed",
                pod(Some(("example.com/v1", "Thing")), &[]),
                vec![offer(Evict, true, Webhook)],
                notify(Why::NoController),
            ),
            (
                "not delivered",
                "AuthenticationFailed",
                pod(RS, &[]),
                vec![offer(Evict, true, Undelivered)],
                notify(Why::NotDelivered),
            ),
            (
                "notify mode",
                "AuthenticationFailed",
                pod(RS, &[]),
                vec![offer(Notify, true, Webhook)],
                notify(Why::Chosen),
            ),
        ];
        for (name, reason, pod, offers, want) in cases {
            assert_eq!(decide(reason, IMAGE, &pod, &offers), want, "{name}");
        }
        let mut debug = pod(RS, &[]);
        debug.failing_ephemeral = vec![IMAGE.into()];
        assert_eq!(
            decide("AuthenticationFailed", IMAGE, &debug, &[offer(Evict, true, Webhook)]),
            notify(Why::Ephemeral)
        );
        // Of two profiles, the one that can help is chosen.
        let mut other = offer(Evict, true, Webhook);
        other.profile = "q".into();
        other.secret = "regcred-q".into();
        let offers = [offer(Evict, false, Webhook), other];
        assert_eq!(
            decide("AuthenticationFailed", IMAGE, &pod(RS, &[]), &offers),
            Verdict::Evict { profile: "q".into(), secret: "regcred-q".into() }
        );
    }

    #[test]
    fn only_a_profile_that_writes_its_secret_there_offers_to_heal() {
        use std::sync::Arc;
        let make = |name: &str, delivery: &str, anonymous: bool| {
            let credentials = if anonymous {
                serde_json::json!({"anonymous": true})
            } else {
                serde_json::json!({"secretRef": {"name": "creds"}})
            };
            let p = crate::fixtures::profile(
                name,
                serde_json::json!({"server": "r.example", "credentials": credentials, "delivery": delivery,
                    "namespaces": {"names": ["shop"]}}),
            );
            let m = crate::resolve::Meaning::of(&p, "regcred-system");
            (Arc::new(p), Arc::new(m))
        };
        let ns = crate::resolve::selection::NamespaceInfo {
            name: "shop".into(),
            labels: std::collections::BTreeMap::default(),
            terminating: false,
        };
        let cap = Cap { mode: HealingMode::Evict, injects: true, operator_namespace: "regcred-system" };
        // The delivery, anonymous; whether the profile offers: a re-created Pod gets its Secret only where it
        // writes one.
        let cases = [
            ("Secret", false, true),
            ("Both", false, true),
            ("CredentialProvider", false, false),
            ("Secret", true, false),
        ];
        for (delivery, anonymous, offers_to_heal) in cases {
            let profiles = [make("p", delivery, anonymous)];
            let got = offers(IMAGE, &profiles, &ns, &pod(RS, &[]), cap, |_, _| true, |_, _, _| false);
            assert_eq!(!got.is_empty(), offers_to_heal, "{delivery}, anonymous {anonymous}");
            let verdict = decide("AuthenticationFailed", IMAGE, &pod(RS, &[]), &got);
            let evicts = matches!(verdict, Verdict::Evict { .. });
            assert_eq!(evicts, offers_to_heal, "{delivery}: {verdict:?}");
        }
    }

    #[test]
    fn a_pod_is_acted_on_once_and_a_controller_is_not_evicted_again_within_the_backoff() {
        let s = Duration::from_secs;
        let at = jiff::Timestamp::UNIX_EPOCH;
        let evict = Verdict::Evict { profile: "p".into(), secret: "regcred-p".into() };
        let mut healer = Healer::default();
        let created = |secs: i64| Some(at + jiff::SignedDuration::from_secs(secs));
        let mut first = pod(RS, &[]);
        first.created = created(-60);
        assert_eq!(healer.step(&evict, &first, s(0)), Step::Evict);
        healer.evicted("p", &first, Evicted::Done, s(0), at);
        assert_eq!(healer.step(&evict, &first, s(1)), Step::Skip("acted_already"));
        // A sibling created during the same outage, before the eviction: evicted too.
        let mut sibling = pod(RS, &[]);
        sibling.uid = Some("pod-sibling".into());
        sibling.created = created(-50);
        assert_eq!(healer.step(&evict, &sibling, s(2)), Step::Evict);
        healer.evicted("p", &sibling, Evicted::Done, s(2), at + jiff::SignedDuration::from_secs(2));
        // The controller's new Pod (created after the first eviction) fails too: an Event, not a second eviction.
        let mut second = pod(RS, &[]);
        second.uid = Some("pod-2".into());
        second.created = created(1);
        assert_eq!(healer.step(&evict, &second, s(5)), Step::Notify(Why::StillFailing));
        healer.notified(&second, Some(Why::StillFailing), s(5));
        assert_eq!(healer.step(&evict, &second, s(6)), Step::Skip("acted_already"));
        // After the backoff, a third Pod of the controller may be evicted.
        let mut third = pod(RS, &[]);
        third.uid = Some("pod-3".into());
        third.created = created(10);
        assert_eq!(healer.step(&evict, &third, BACKOFF + s(1)), Step::Evict);
    }

    #[test]
    fn a_refused_eviction_waits_and_evictions_are_rate_limited_per_namespace() {
        let s = Duration::from_secs;
        let at = jiff::Timestamp::UNIX_EPOCH;
        let mut healer = Healer::default();
        let evict = |p: &str| Verdict::Evict { profile: p.into(), secret: "regcred".into() };
        let blocked = pod(RS, &[]);
        assert_eq!(healer.step(&evict("p"), &blocked, s(0)), Step::Evict);
        healer.evicted("p", &blocked, Evicted::Blocked, s(0), at);
        assert_eq!(healer.step(&evict("p"), &blocked, s(30)), Step::Skip("blocked_retry"));
        assert_eq!(healer.step(&evict("p"), &blocked, BLOCKED_RETRY + s(1)), Step::Evict);
        // The burst, then nothing until a token is earned; another profile has its own.
        let burst = (2..=PER_NAMESPACE_RATE.burst)
            .map(|i| {
                let mut p = pod(Some(("apps/v1", "ReplicaSet")), &[]);
                p.uid = Some(format!("u{i}"));
                p.owner = Some(("apps/v1".into(), "ReplicaSet".into(), format!("o{i}")));
                healer.step(&evict("p"), &p, BLOCKED_RETRY + s(1))
            })
            .filter(|step| *step == Step::Evict)
            .count();
        // The retry above took one token of a bucket full again by then.
        assert_eq!(burst, usize::try_from(PER_NAMESPACE_RATE.burst).unwrap() - 1);
        let mut next = pod(RS, &[]);
        next.uid = Some("next".into());
        next.owner = Some(("apps/v1".into(), "ReplicaSet".into(), "next".into()));
        assert_eq!(healer.step(&evict("p"), &next, BLOCKED_RETRY + s(1)), Step::Skip("rate_limited"));
        assert_eq!(healer.step(&evict("q"), &next, BLOCKED_RETRY + s(1)), Step::Evict);
        // Another namespace of the same profile has a bucket of its own.
        let mut elsewhere = pod(RS, &[]);
        elsewhere.uid = Some("elsewhere".into());
        elsewhere.namespace = "other".into();
        assert_eq!(healer.step(&evict("p"), &elsewhere, BLOCKED_RETRY + s(1)), Step::Evict);
        next.uid = Some("next-2".into());
        assert_eq!(healer.step(&evict("p"), &next, BLOCKED_RETRY + s(1) + PER_NAMESPACE_RATE.every), Step::Evict);
    }

    #[test]
    fn an_eviction_in_flight_or_of_unknown_outcome_is_not_repeated_and_a_not_delivered_event_defers() {
        let s = Duration::from_secs;
        let at = jiff::Timestamp::UNIX_EPOCH;
        let evict = Verdict::Evict { profile: "p".into(), secret: "regcred-p".into() };
        let mut healer = Healer::default();
        let mut first = pod(RS, &[]);
        first.created = Some(at);
        // Two claims about one Pod at once: the second waits for the first's outcome.
        assert_eq!(healer.step(&evict, &first, s(0)), Step::Evict);
        assert_eq!(healer.step(&evict, &first, s(0)), Step::Skip("blocked_retry"));
        // No answer: it may have happened, so the controller's newer Pods get Events.
        healer.evicted("p", &first, Evicted::Unknown, s(10), at + jiff::SignedDuration::from_secs(10));
        let mut replacement = pod(RS, &[]);
        replacement.uid = Some("replacement".into());
        replacement.created = Some(at + jiff::SignedDuration::from_secs(8));
        assert_eq!(healer.step(&evict, &replacement, s(20)), Step::Notify(Why::StillFailing));
        // A Pod told a new one would not get the Secret either is not told again, but may be evicted later.
        let notify = Verdict::Notify { profile: "p".into(), secret: "regcred-p".into(), why: Why::NotDelivered };
        let mut other = pod(Some(("apps/v1", "StatefulSet")), &[]);
        other.uid = Some("other".into());
        other.owner = Some(("apps/v1".into(), "StatefulSet".into(), "sts".into()));
        assert_eq!(healer.step(&notify, &other, s(30)), Step::Notify(Why::NotDelivered));
        healer.notified(&other, Some(Why::NotDelivered), s(30));
        assert_eq!(healer.step(&notify, &other, s(40)), Step::Skip("notified_recently"));
        assert_eq!(healer.step(&evict, &other, s(50)), Step::Evict);
    }

    #[test]
    fn status_shows_recent_actions_within_bounds_and_counts_evictions_of_the_last_hour() {
        let t = |secs: i64| jiff::Timestamp::from_second(1_000_000 + secs).unwrap();
        let mut healer = Healer::default();
        for i in 0..5 {
            healer.show("p", action("a", &format!("pod-{i}"), IMAGE, "Evicted", "m".into(), t(i)));
        }
        for i in 0..12 {
            healer.show("p", action(&format!("ns-{i}"), "pod", IMAGE, "Notified", "m".into(), t(10 + i)));
        }
        let mut first = pod(RS, &[]);
        healer.evicted("p", &first, Evicted::Done, Duration::ZERO, t(0));
        first.uid = Some("other".into());
        healer.evicted("p", &first, Evicted::Blocked, Duration::ZERO, t(0));
        let status = healer.status("p", t(30)).unwrap();
        assert_eq!(status.recent.len(), SHOWN);
        assert_eq!(status.recent[0].namespace, "ns-11");
        assert_eq!(status.evictions, 1);
        // The same Pod again replaces its entry; namespace `a` keeps at most its share.
        let mut healer = Healer::default();
        for i in 0..5 {
            healer.show("p", action("a", &format!("pod-{i}"), IMAGE, "Blocked", "m".into(), t(i)));
        }
        healer.show("p", action("a", "pod-4", IMAGE, "Evicted", "m".into(), t(9)));
        let recent = healer.status("p", t(10)).unwrap().recent;
        assert_eq!(recent.iter().map(|a| a.pod.as_str()).collect::<Vec<_>>(), ["pod-4", "pod-3", "pod-2"]);
        assert_eq!(recent[0].action, "Evicted");
        // An hour later it is gone.
        assert_eq!(healer.status("p", t(10 + 3600)), None);
    }

    #[test]
    fn every_advice_names_the_pod_the_secret_and_what_to_do() {
        for why in [Why::NoController, Why::Ephemeral, Why::NotDelivered, Why::Chosen, Why::StillFailing] {
            let text = advice(why, "team", "web-1", IMAGE, "p", "regcred-p");
            assert!(text.contains("team/web-1") && text.contains("regcred-p") && text.contains(IMAGE), "{text}");
        }
    }
}
