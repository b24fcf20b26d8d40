//! The controller's own metrics: reconciles and their durations, leadership, the managed Secrets, the tokens'
//! expiry and refresh failures and the profiles' readiness and sync counts (read from the view at each scrape),
//! token mints, the kubelet's pull failures, self-healing and the deletion guard. It registers them where it is
//! told ([`Metrics::register`]). No metric carries secret material: labels are profile names, results and reasons.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use kube::ResourceExt as _;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::RegistryProfile;
use crate::api::conditions::{READY, TRUE};
use crate::credentials::refresher::Snapshot;
use crate::state::View;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealLabels {
    profile: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    profile: String,
    reason: String,
}

/// The controller's counters and gauges. Unregistered (the default) they count all the same: tests read them.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    /// 1 while this replica leads (reconciles and mints tokens), 0 while it only serves the webhook.
    leader: Gauge,
    pull_failures: Family<PullLabels, Counter>,
    pull_events_refused: Family<ReasonLabels, Counter>,
    heals: Family<HealLabels, Counter>,
    deletions_held: Family<ProfileLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            leader: Gauge::default(),
            pull_failures: Family::default(),
            pull_events_refused: Family::default(),
            heals: Family::default(),
            deletions_held: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric in `registry` (under its prefix), with those read from `view` at each scrape: the
    /// managed Secrets, the tokens' expiry and the refresher's mints.
    pub fn register(&self, registry: &mut Registry, view: &View) {
        registry.register("reconciles", "Profile reconciles by result (ok, error)", self.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of profile reconciles",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "leader",
            "1 on the replica that reconciles profiles and mints tokens (the Lease holder), 0 on the others",
            self.leader.clone(),
        );
        registry.register(
            "token_mints",
            "Token mints by profile and result (ok, or the failure's reason)",
            view.refresher().counts.clone(),
        );
        registry.register_collector(Box::new(FromView { view: view.clone() }));
        self.register_pulls(registry);
        registry.register(
            "deletions_held",
            "Secrets of the profile the deletion guard keeps until the change is confirmed or reverted",
            self.deletions_held.clone(),
        );
    }

    /// The kubelet's pull failures, and self-healing.
    fn register_pulls(&self, registry: &mut Registry) {
        registry.register(
            "pull_failures",
            "Failed image pulls the kubelet reported from a profile's registry, by the registry's reason",
            self.pull_failures.clone(),
        );
        registry.register(
            "pull_events_refused",
            "Events that looked like the kubelet's pull failures and were not used, by why (other_namespace, \
             pod_not_found, uid_mismatch, not_failing, rate_limited, stale)",
            self.pull_events_refused.clone(),
        );
        registry.register(
            "heals",
            "Self-healing of Pods admitted without their profile's Secret, by action (evicted, notified, \
             still_failing, blocked, failed) or why nothing was done now (rate_limited, blocked_retry, \
             acted_already, lists_secret, secret_not_in_place, off)",
            self.heals.clone(),
        );
    }

    /// Says whether this replica leads.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts `n` failed pulls of `profile`'s images.
    pub fn pull_failed(&self, profile: &str, reason: &str, n: u64) {
        let labels = PullLabels { profile: profile.to_owned(), reason: reason.to_owned() };
        self.pull_failures.get_or_create(&labels).inc_by(n);
    }

    /// Counts one thing self-healing did (or did not do, and why) for `profile`.
    pub fn healed(&self, profile: &str, action: &str) {
        let labels = HealLabels { profile: profile.to_owned(), action: action.to_owned() };
        self.heals.get_or_create(&labels).inc();
    }

    /// Counts one Event about a pull failure that was not used, and why.
    pub fn pull_event_refused(&self, reason: &str) {
        self.pull_events_refused.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// How many of `profile`'s Secrets the deletion guard holds; a profile that holds none has no series.
    pub fn set_deletions_held(&self, profile: &str, n: usize) {
        let labels = ProfileLabels { profile: profile.to_owned() };
        if n == 0 {
            self.deletions_held.remove(&labels);
        } else {
            self.deletions_held.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Records one reconcile.
    pub fn reconciled(&self, ok: bool, started: Instant) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&ResultLabels { result: result.into() }).inc();
        self.reconcile_duration.observe(started.elapsed().as_secs_f64());
    }

    /// Reconciles so far, whatever their result.
    pub fn reconciles_total(&self) -> u64 {
        ["ok", "error"]
            .into_iter()
            .map(|result| self.reconciles.get_or_create(&ResultLabels { result: result.into() }).get())
            .sum()
    }
}

/// The gauges read from the view when scraped: `managed_secrets`, the tokens' ([`token_gauges`]) and the
/// profiles' ([`profile_gauges`]).
struct FromView {
    view: View,
}

impl fmt::Debug for FromView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromView").finish_non_exhaustive()
    }
}

impl Collector for FromView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let managed = Gauge::<i64>::default();
        managed.set(i64::try_from(self.view.managed().len()).unwrap_or(i64::MAX));
        let help = "Secrets labelled as managed by regcred, cluster-wide";
        managed.encode(encoder.encode_descriptor("managed_secrets", help, None, managed.metric_type())?)?;
        let tokens = token_gauges(jiff::Timestamp::now(), &self.view.refresher().snapshots());
        let profiles = profile_gauges(&self.view.profiles());
        for gauge in tokens.into_iter().chain(profiles) {
            gauge.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// One gauge per profile, read at a scrape.
#[derive(Debug, PartialEq)]
struct ProfileGauge {
    name: &'static str,
    help: &'static str,
    values: Vec<(String, f64)>,
}

impl ProfileGauge {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, values: Vec::new() }
    }

    /// Writes the gauge, or nothing when no profile has a value.
    fn encode(self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if self.values.is_empty() {
            return Ok(());
        }
        let family = Family::<ProfileLabels, Gauge<f64, AtomicU64>>::default();
        for (profile, value) in self.values {
            family.get_or_create(&ProfileLabels { profile }).set(value);
        }
        family.encode(encoder.encode_descriptor(self.name, self.help, None, family.metric_type())?)
    }
}

fn unix_seconds(t: jiff::Timestamp) -> f64 {
    // Milliseconds are exact in an f64 for any date a token carries.
    #[allow(clippy::cast_precision_loss)]
    let ms = t.as_millisecond() as f64;
    ms / 1000.0
}

/// What the refresher knows of each profile's token, as gauges: the time left (`token_expiry_seconds`), when the
/// token expires and when it was minted (Unix seconds: what alerts compare with `time()`), and the failed attempts
/// since the last success. The first three only while a token is held; the failures for every profile that mints.
fn token_gauges(now: jiff::Timestamp, snapshots: &[(String, Snapshot)]) -> Vec<ProfileGauge> {
    let mut left = ProfileGauge::new(
        "token_expiry_seconds",
        "Seconds until the profile's current short-lived token expires (negative: expired)",
    );
    let mut expiry = ProfileGauge::new(
        "token_expiry_timestamp_seconds",
        "When the profile's current short-lived token expires, in Unix seconds",
    );
    let mut minted = ProfileGauge::new(
        "token_last_refresh_timestamp_seconds",
        "When the profile's current short-lived token was minted, in Unix seconds",
    );
    let mut failures = ProfileGauge::new(
        "token_refresh_failures",
        "Attempts to mint the profile's token that failed since the last success (0 after a success)",
    );
    for (profile, snapshot) in snapshots {
        if let Some(token) = &snapshot.token {
            left.values.push((profile.clone(), token.expires_at.duration_since(now).as_secs_f64()));
            expiry.values.push((profile.clone(), unix_seconds(token.expires_at)));
            if let Some(at) = snapshot.last_refresh {
                minted.values.push((profile.clone(), unix_seconds(at)));
            }
        }
        failures.values.push((profile.clone(), f64::from(snapshot.failures)));
    }
    vec![left, expiry, minted, failures]
}

/// Each profile's readiness and sync counts, as its status says (the leader writes it; every replica reads it).
fn profile_gauges(profiles: &[Arc<RegistryProfile>]) -> Vec<ProfileGauge> {
    let mut ready = ProfileGauge::new("profile_ready", "1 while the profile's Ready condition is True, else 0");
    let mut selected =
        ProfileGauge::new("profile_selected_namespaces", "Namespaces the profile selects, as its status says");
    let mut synced = ProfileGauge::new(
        "profile_synced_namespaces",
        "Selected namespaces served as the profile's spec.delivery says (its Secret in place and current; for \
         CredentialProvider, no Secret of it left there), as the profile's status says",
    );
    for profile in profiles {
        let name = profile.name_any();
        let status = profile.status.as_ref();
        let is_ready = status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY && c.status == TRUE));
        ready.values.push((name.clone(), if is_ready { 1.0 } else { 0.0 }));
        selected.values.push((name.clone(), f64::from(status.map_or(0, |s| s.selected_namespaces))));
        synced.values.push((name, f64::from(status.map_or(0, |s| s.synced_namespaces))));
    }
    vec![ready, selected, synced]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_registers_its_own_metrics_and_reads_the_view_when_scraped() {
        let (view, _feeds) = View::detached("regcred-system", 2.0 / 3.0);
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("regcred");
        metrics.register(&mut registry, &view);
        metrics.reconciled(true, Instant::now());
        metrics.set_leading(true);
        metrics.set_deletions_held("p", 4);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "regcred_reconciles_total{result=\"ok\"} 1",
            "regcred_leader 1",
            "regcred_managed_secrets 0",
            "regcred_deletions_held{profile=\"p\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("webhook"), "the controller registers no webhook metric:\n{text}");
        assert!(!text.contains("token_") && !text.contains("profile_"), "no profile, no token: no series\n{text}");
        assert_eq!(metrics.reconciles_total(), 1);
    }

    fn values(gauges: &[ProfileGauge]) -> Vec<(&str, Vec<(&str, f64)>)> {
        gauges.iter().map(|g| (g.name, g.values.iter().map(|(p, v)| (p.as_str(), *v)).collect())).collect()
    }

    #[test]
    fn tokens_are_told_by_expiry_mint_time_and_failures_since_the_last_success() {
        use crate::credentials::render;
        use crate::credentials::tokens::{MintError, Minted};
        let at = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let minted = |expires| Some(Minted { config: render("r", "AWS", "secret-pw"), expires_at: at(expires) });
        let snapshots = vec![
            // Minted at 0, for an hour; all is well.
            ("fine".to_owned(), Snapshot { token: minted(3600), last_refresh: Some(at(0)), ..Snapshot::default() }),
            // The endpoint is down: the last good token stays, three attempts failed since.
            (
                "failing".to_owned(),
                Snapshot {
                    token: minted(600),
                    last_refresh: Some(at(-3000)),
                    error: Some(MintError::new("EndpointUnreachable", "down")),
                    failures: 3,
                    ..Snapshot::default()
                },
            ),
            // Never minted: no token to tell of, only the failures.
            ("never".to_owned(), Snapshot { failures: 7, ..Snapshot::default() }),
        ];
        let gauges = token_gauges(at(100), &snapshots);
        let expiry = 1_800_000_000.0;
        assert_eq!(
            values(&gauges),
            vec![
                ("token_expiry_seconds", vec![("fine", 3500.0), ("failing", 500.0)]),
                ("token_expiry_timestamp_seconds", vec![("fine", expiry + 3600.0), ("failing", expiry + 600.0)]),
                ("token_last_refresh_timestamp_seconds", vec![("fine", expiry), ("failing", expiry - 3000.0)]),
                ("token_refresh_failures", vec![("fine", 0.0), ("failing", 3.0), ("never", 7.0)]),
            ]
        );
        assert!(!format!("{gauges:?}").contains("secret-pw"));
    }

    #[test]
    fn profiles_are_told_by_their_ready_condition_and_sync_counts() {
        use crate::api::RegistryProfileStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let profile = |name: &str, ready: Option<&str>, selected: i32, synced: i32| {
            let mut p = crate::fixtures::manifest(
                name,
                &[],
                serde_json::json!({"server": "r.example", "credentials": {"anonymous": true}}),
            );
            p.status = ready.map(|status| RegistryProfileStatus {
                conditions: vec![Condition {
                    type_: READY.into(),
                    status: status.into(),
                    reason: "R".into(),
                    message: String::new(),
                    observed_generation: None,
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                }],
                selected_namespaces: selected,
                synced_namespaces: synced,
                ..RegistryProfileStatus::default()
            });
            Arc::new(p)
        };
        let profiles =
            [profile("ok", Some("True"), 3, 3), profile("bad", Some("False"), 4, 1), profile("new", None, 0, 0)];
        assert_eq!(
            values(&profile_gauges(&profiles)),
            vec![
                ("profile_ready", vec![("ok", 1.0), ("bad", 0.0), ("new", 0.0)]),
                ("profile_selected_namespaces", vec![("ok", 3.0), ("bad", 4.0), ("new", 0.0)]),
                ("profile_synced_namespaces", vec![("ok", 3.0), ("bad", 1.0), ("new", 0.0)]),
            ]
        );
    }
}
