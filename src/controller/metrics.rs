//! The controller's own metrics: reconciles and their durations, leadership, the managed Secrets and the tokens'
//! expiry (read from the view at each scrape), token mints, the kubelet's pull failures, self-healing and the
//! deletion guard. It registers them where it is told ([`Metrics::register`]). No metric carries secret
//! material: labels are profile names, results and reasons.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// The gauges read from the view when scraped: `managed_secrets` and `token_expiry_seconds`.
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
        let expiry = Family::<ProfileLabels, Gauge<f64, AtomicU64>>::default();
        let now = jiff::Timestamp::now();
        for (profile, snapshot) in self.view.refresher().snapshots() {
            if let Some(token) = snapshot.token {
                let left = token.expires_at.duration_since(now).as_secs_f64();
                expiry.get_or_create(&ProfileLabels { profile }).set(left);
            }
        }
        if !expiry.is_empty() {
            let help = "Seconds until the profile's current short-lived token expires (negative: expired)";
            expiry.encode(encoder.encode_descriptor("token_expiry_seconds", help, None, expiry.metric_type())?)?;
        }
        Ok(())
    }
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
        assert_eq!(metrics.reconciles_total(), 1);
    }
}
