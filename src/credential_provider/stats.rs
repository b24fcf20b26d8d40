//! The credential endpoint's own counters and latency: it registers them where it is told. Labels are results,
//! never a namespace, a token or a credential.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What a request came to (the `result` label of `credential_provider_requests`).
pub mod result {
    /// Credentials given.
    pub const SERVED: &str = "served";
    /// An empty answer: nothing selects the requester for that image.
    pub const EMPTY: &str = "empty";
    /// 401: the token was refused.
    pub const REFUSED: &str = "refused";
    /// 400: not a CredentialProviderRequest.
    pub const MALFORMED: &str = "malformed";
    /// 503: the token could not be reviewed, or the deadline came.
    pub const UNAVAILABLE: &str = "unavailable";
}

/// Counters and latency of the credential endpoint (clones share their values).
#[derive(Debug, Clone)]
pub struct Stats {
    pub requests: Family<ResultLabels, Counter>,
    /// TokenReviews sent, by result (`accepted`, `refused`, `failed`).
    pub token_reviews: Family<ResultLabels, Counter>,
    /// Tokens refused on their own claims, without a TokenReview (not a JWT, expired, another audience).
    pub prechecked: Counter,
    /// Requests answered from a review kept from before.
    pub cache_hits: Counter,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// Whether the listener is bound with its certificate.
    pub serving: watch::Sender<bool>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            token_reviews: Family::default(),
            prechecked: Counter::default(),
            cache_hits: Counter::default(),
            // 25 µs to ~3.3 s: a remembered token's microseconds, a TokenReview's milliseconds.
            latency: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
            serving: watch::Sender::new(false),
        }
    }
}

impl Stats {
    /// Counts a request that came to `result`.
    pub fn request(&self, result: &'static str) {
        self.requests.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a TokenReview that came to `result`.
    pub fn review(&self, result: &'static str) {
        self.token_reviews.get_or_create(&ResultLabels { result }).inc();
    }

    /// The requests counted with `result`.
    pub fn requests_with(&self, result: &'static str) -> u64 {
        self.requests.get_or_create(&ResultLabels { result }).get()
    }

    /// Registers every counter and the latency in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "credential_provider_requests",
            "Credential provider requests by result (served, empty, refused, malformed, unavailable)",
            self.requests.clone(),
        );
        registry.register(
            "credential_provider_request_duration_seconds",
            "Credential provider request latency",
            self.latency.clone(),
        );
        registry.register(
            "credential_provider_token_reviews",
            "TokenReviews of the kubelet's ServiceAccount tokens by result (accepted, refused, failed)",
            self.token_reviews.clone(),
        );
        registry.register(
            "credential_provider_tokens_prechecked",
            "Tokens refused on their own claims without a TokenReview (not a JWT, expired, another audience)",
            self.prechecked.clone(),
        );
        registry.register(
            "credential_provider_token_cache_hits",
            "Credential provider requests whose token was reviewed before (no TokenReview)",
            self.cache_hits.clone(),
        );
    }
}
