//! The webhook's own counters and latency, and its image checks': it registers them where it is told.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::images;

/// Counters and latency of the webhook, registered as metrics (clones share their values).
#[derive(Debug, Clone)]
pub struct Stats {
    pub requests: Counter,
    pub patched: Counter,
    pub malformed: Counter,
    pub secrets_created: Counter,
    pub errors: Counter,
    /// Warnings the image checks gave.
    pub image_warnings: Counter,
    /// Admissions the image checks rejected (`Deny` profiles).
    pub image_denials: Counter,
    /// Admissions whose object had more images or pull Secret names than are checked.
    pub over_cap: Counter,
    /// Admissions answered with image checks or pull Secret lookups cut by the deadline ("not checked").
    pub checks_cut: Counter,
    /// Admissions whose namespace lookup or Secret creation the deadline cut: the Pod was admitted without
    /// that Secret.
    pub injections_cut: Counter,
    /// The image checks' registry resolutions and cache hits.
    pub image_checks: images::CheckStats,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// Whether the listener is bound with its certificate: until then the replica is not ready (`/readyz`), so
    /// the Service never routes an admission to a replica that would refuse the connection.
    pub serving: watch::Sender<bool>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: Counter::default(),
            patched: Counter::default(),
            malformed: Counter::default(),
            secrets_created: Counter::default(),
            errors: Counter::default(),
            image_warnings: Counter::default(),
            image_denials: Counter::default(),
            over_cap: Counter::default(),
            checks_cut: Counter::default(),
            injections_cut: Counter::default(),
            image_checks: images::CheckStats::default(),
            // 25 µs to ~3.3 s: the handler's microseconds, and the seconds of a new namespace's Secret.
            latency: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
            serving: watch::Sender::new(false),
        }
    }
}

impl Stats {
    /// Registers every counter and the latency in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("webhook_requests", "Admission requests answered", self.requests.clone());
        registry.register("webhook_patched", "Pods given pull secrets", self.patched.clone());
        registry.register("webhook_malformed", "Malformed admission requests", self.malformed.clone());
        registry.register(
            "webhook_errors",
            "Admission requests answered without a patch after an error",
            self.errors.clone(),
        );
        registry.register(
            "webhook_secrets_created",
            "Secrets created at admission for a brand-new namespace",
            self.secrets_created.clone(),
        );
        registry.register("webhook_request_duration_seconds", "Admission request latency", self.latency.clone());
        registry.register(
            "image_check_warnings",
            "Admission warnings given by image checks",
            self.image_warnings.clone(),
        );
        registry.register("image_check_denials", "Admissions rejected by image checks", self.image_denials.clone());
        register_checks(registry, &self.image_checks);
        registry.register(
            "webhook_checks_cut_by_deadline",
            "Admissions answered with image checks or pull Secret lookups cut by the admission deadline (not checked)",
            self.checks_cut.clone(),
        );
        registry.register(
            "webhook_injections_cut_by_deadline",
            "Admissions whose namespace lookup or Secret creation the admission deadline cut (Pod admitted without it)",
            self.injections_cut.clone(),
        );
        registry.register(
            "webhook_images_over_cap",
            "Admissions whose object had more images or pull Secret names than are checked",
            self.over_cap.clone(),
        );
    }
}

/// The image checks' registry resolutions, cache hits and refusals.
fn register_checks(registry: &mut Registry, checks: &images::CheckStats) {
    registry.register(
        "image_check_registry_requests",
        "Images resolved against a registry at admission",
        checks.registry_checks.clone(),
    );
    registry.register(
        "image_check_cache_hits",
        "Admission image checks answered from the cache",
        checks.cache_hits.clone(),
    );
    registry.register(
        "image_check_over_budget",
        "Admission image checks that outlived their budget",
        checks.over_budget.clone(),
    );
    registry.register(
        "image_check_saturated",
        "Admission image checks not made: the bound on registry checks in flight was reached",
        checks.saturated.clone(),
    );
}
