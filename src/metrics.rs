//! Prometheus metrics and the plain-HTTP operations endpoint: `/metrics`, `/healthz` (the process serves) and
//! `/readyz` (the caches hold their initial lists). No metric carries secret material: labels are profile names
//! and reasons.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tracing::info;

use crate::state::View;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealLabels {
    pub profile: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    pub profile: String,
    pub reason: String,
}

/// Every metric regcred exposes. Clones of the metric handles share their values.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    managed_secrets: Gauge,
    /// 1 while this replica leads (reconciles and mints tokens), 0 while it only serves the webhook.
    pub leader: Gauge,
    token_expiry: Family<ProfileLabels, Gauge<f64, AtomicU64>>,
    pull_failures: Family<PullLabels, Counter>,
    pull_events_refused: Family<ReasonLabels, Counter>,
    heals: Family<HealLabels, Counter>,
    deletions_held: Family<ProfileLabels, Gauge>,
    view: View,
    /// Whether the webhook listens, when this replica serves one: part of readiness.
    webhook_serving: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Metrics {
    /// Registers the controller's, the refresher's (from `view`) and the webhook's (`webhook`) metrics.
    pub fn new(view: View, webhook: Option<&crate::webhook::Stats>) -> Self {
        let mut registry = Registry::with_prefix("regcred");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Profile reconciles by result (ok, error)", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("reconcile_duration_seconds", "Duration of profile reconciles", reconcile_duration.clone());
        let managed_secrets = Gauge::default();
        registry.register(
            "managed_secrets",
            "Secrets labelled as managed by regcred, cluster-wide",
            managed_secrets.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 on the replica that reconciles profiles and mints tokens (the Lease holder), 0 on the others",
            leader.clone(),
        );
        let token_expiry = Family::<ProfileLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until the profile's current short-lived token expires (negative: expired)",
            token_expiry.clone(),
        );
        registry.register(
            "token_mints",
            "Token mints by profile and result (ok, or the failure's reason)",
            view.refresher.counts.clone(),
        );
        if let Some(stats) = webhook {
            register_webhook(&mut registry, stats);
        }
        let pull_failures = Family::<PullLabels, Counter>::default();
        registry.register(
            "pull_failures",
            "Failed image pulls the kubelet reported from a profile's registry, by the registry's reason",
            pull_failures.clone(),
        );
        let pull_events_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "pull_events_refused",
            "Events that looked like the kubelet's pull failures and were not used, by why (other_namespace, \
             pod_not_found, uid_mismatch, not_failing, rate_limited, stale)",
            pull_events_refused.clone(),
        );
        let heals = Family::<HealLabels, Counter>::default();
        registry.register(
            "heals",
            "Self-healing of Pods admitted without their profile's Secret, by action (evicted, notified, \
             still_failing, blocked, failed) or why nothing was done now (rate_limited, blocked_retry, \
             acted_already, lists_secret, secret_not_in_place, off)",
            heals.clone(),
        );
        let deletions_held = Family::<ProfileLabels, Gauge>::default();
        registry.register(
            "deletions_held",
            "Secrets of the profile the deletion guard keeps until the change is confirmed or reverted",
            deletions_held.clone(),
        );
        let webhook_serving = webhook.map(|stats| stats.serving.clone());
        Self {
            registry,
            reconciles,
            reconcile_duration,
            managed_secrets,
            leader,
            token_expiry,
            pull_failures,
            pull_events_refused,
            heals,
            deletions_held,
            view,
            webhook_serving,
        }
    }

    /// The text exposition, with the gauges read from the caches at this instant.
    pub fn render(&self) -> String {
        self.managed_secrets.set(i64::try_from(self.view.managed.len()).unwrap_or(i64::MAX));
        let now = jiff::Timestamp::now();
        self.token_expiry.clear();
        for (profile, snapshot) in self.view.refresher.snapshots() {
            if let Some(token) = snapshot.token {
                let left = token.expires_at.duration_since(now).as_secs_f64();
                self.token_expiry.get_or_create(&ProfileLabels { profile }).set(left);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts `n` failed pulls of `profile`'s images.
    pub fn pull_failed(&self, profile: &str, reason: &str, n: u64) {
        let labels = PullLabels { profile: profile.to_owned(), reason: reason.to_owned() };
        self.pull_failures.get_or_create(&labels).inc_by(n);
    }

    /// Whether this replica's webhook listens (`true` when it serves none).
    pub fn webhook_listening(&self) -> bool {
        self.webhook_serving.as_ref().is_none_or(|s| s.load(std::sync::atomic::Ordering::Acquire))
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

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (plain HTTP) until `shutdown` completes.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(metrics);
    let addr = listener.local_addr()?;
    info!(%addr, "metrics and health serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let webhook = metrics.webhook_serving.as_ref().is_none_or(|s| s.load(std::sync::atomic::Ordering::Acquire));
    match (metrics.view.ready.clone().now_or_never(), webhook) {
        (Some(true), true) => (StatusCode::OK, "ok"),
        (Some(true), false) => (StatusCode::SERVICE_UNAVAILABLE, "the webhook is not serving yet"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet"),
    }
}

/// The webhook's counters and latency, and its image checks'.
fn register_webhook(registry: &mut Registry, stats: &crate::webhook::Stats) {
    registry.register("webhook_requests", "Admission requests answered", stats.requests.clone());
    registry.register("webhook_patched", "Pods given pull secrets", stats.patched.clone());
    registry.register("webhook_malformed", "Malformed admission requests", stats.malformed.clone());
    registry.register(
        "webhook_errors",
        "Admission requests answered without a patch after an error",
        stats.errors.clone(),
    );
    registry.register(
        "webhook_secrets_created",
        "Secrets created at admission for a brand-new namespace",
        stats.secrets_created.clone(),
    );
    registry.register("webhook_request_duration_seconds", "Admission request latency", stats.latency.clone());
    registry.register("image_check_warnings", "Admission warnings given by image checks", stats.image_warnings.clone());
    registry.register("image_check_denials", "Admissions rejected by image checks", stats.image_denials.clone());
    let checks = &stats.image_checks;
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
    registry.register(
        "webhook_checks_cut_by_deadline",
        "Admissions answered with image checks or pull Secret lookups cut by the admission deadline (not checked)",
        stats.checks_cut.clone(),
    );
    registry.register(
        "webhook_injections_cut_by_deadline",
        "Admissions whose namespace lookup or Secret creation the admission deadline cut (Pod admitted without it)",
        stats.injections_cut.clone(),
    );
    registry.register(
        "webhook_images_over_cap",
        "Admissions whose object had more images or pull Secret names than are checked",
        stats.over_cap.clone(),
    );
}
