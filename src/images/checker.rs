//! Asking the registry about workload images, gently: one resolution per image and credentials per cache
//! lifetime however many admissions ask (concurrent ones share it), and never longer than a budget per admission.
//! A check that outlives its admission's budget goes on in the background and fills the cache for the next one.

use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use moka::future::Cache;
use prometheus_client::metrics::counter::Counter;

use super::Outcome;
use crate::registry::preflight::{self, Credentials, ManifestKind, Options};

/// How long a passed image is trusted, by tag: a tag can be moved or deleted.
pub const PASSED_TAG: Duration = Duration::from_secs(5 * 60);
/// How long a passed image is trusted, by digest: its content cannot change.
pub const PASSED_DIGEST: Duration = Duration::from_secs(60 * 60);
/// How long a refusal is kept: short, so an image pushed after a failed apply is seen at the next one.
pub const REFUSED: Duration = Duration::from_secs(30);
/// How long an unanswered check is kept: an unreachable registry costs each admission nothing meanwhile.
pub const NOT_CHECKED: Duration = Duration::from_secs(30);
/// The longest one check runs in the background.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an outcome is cached: passed images for long (longer by digest than by tag), anything else briefly.
pub fn lifetime(outcome: &Outcome, by_digest: bool) -> Duration {
    match outcome {
        Outcome::Passed if by_digest => PASSED_DIGEST,
        Outcome::Passed => PASSED_TAG,
        Outcome::Refused(_) => REFUSED,
        Outcome::NotChecked(_) => NOT_CHECKED,
    }
}

/// One image to resolve: its full reference, the credentials its profile's Secrets hold now (`None`: anonymous),
/// and the profile's validation and TLS settings.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub image: String,
    pub credentials: Option<Credentials>,
    pub options: Options,
}

/// A cache key: the image, and a keyed hash of everything its answer depends on (the credentials, so a rotation
/// is a new key, and the validation options). The hash is keyed per process: it says nothing about a password.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    access: u64,
    image: String,
}

/// Counters of the checks, registered as metrics.
#[derive(Clone, Debug, Default)]
pub struct CheckStats {
    /// Images resolved against a registry.
    pub registry_checks: Counter,
    /// Images answered from the cache.
    pub cache_hits: Counter,
    /// Admissions that waited their whole budget for an answer.
    pub over_budget: Counter,
    /// Images not checked because [`Checker`]'s bound on checks in flight was reached within the budget.
    pub saturated: Counter,
}

/// Registry sessions kept for reuse (one per set of credentials and TLS options).
pub const SESSIONS: u64 = 256;
/// How long an unused session is kept.
pub const SESSION_IDLE: Duration = Duration::from_secs(10 * 60);

/// The admission image checks' cache, budget, bound on registry checks in flight and registry sessions. One per
/// process, shared by every admission.
pub struct Checker {
    cache: Cache<Key, Outcome>,
    hasher: std::hash::RandomState,
    budget: Duration,
    /// Registry checks in flight, across all admissions: a check waits for a permit within its admission's budget.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Registry clients by [`Key::access`]'s hash of the credentials and TLS options: reused across admissions,
    /// never across credentials (oci-client keeps the authentication it was given per registry).
    sessions: Cache<u64, preflight::Session>,
    pub stats: CheckStats,
}

struct Lifetimes;

impl moka::Expiry<Key, Outcome> for Lifetimes {
    fn expire_after_create(&self, key: &Key, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(lifetime(value, key.image.contains('@')))
    }
}

impl Checker {
    /// `budget`: the longest an admission waits for the registry; `capacity`: images and credentials kept;
    /// `in_flight`: registry checks at once, across all admissions; `stats`: where the counts go.
    pub fn new(budget: Duration, capacity: u64, in_flight: usize, stats: CheckStats) -> Self {
        Self {
            cache: Cache::builder().max_capacity(capacity).expire_after(Lifetimes).build(),
            hasher: std::hash::RandomState::new(),
            budget,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight.max(1))),
            sessions: Cache::builder().max_capacity(SESSIONS).time_to_idle(SESSION_IDLE).build(),
            stats,
        }
    }

    /// The hash of what a registry session depends on: the credentials and the TLS options.
    fn session_key(&self, target: &Lookup) -> u64 {
        let mut h = self.hasher.build_hasher();
        match &target.credentials {
            Some(c) => (1u8, &c.username, &c.password).hash(&mut h),
            None => 0u8.hash(&mut h),
        }
        (&target.options.ca_pem, target.options.insecure_skip_verify, target.options.timeout).hash(&mut h);
        h.finish()
    }

    /// The session for `target`'s credentials and TLS options, reused when there is one.
    async fn session(&self, target: &Lookup) -> Result<preflight::Session, preflight::Failure> {
        let options = target.options.clone();
        self.sessions
            .try_get_with(self.session_key(target), async move { preflight::Session::new(&options) })
            .await
            .map_err(|e| (*e).clone())
    }

    /// The cache key of `target`.
    pub fn key(&self, target: &Lookup) -> Key {
        let mut h = self.hasher.build_hasher();
        match &target.credentials {
            Some(c) => (1u8, &c.username, &c.password).hash(&mut h),
            None => 0u8.hash(&mut h),
        }
        let o = &target.options;
        (&o.ca_pem, o.insecure_skip_verify, &o.platform, o.max_size).hash(&mut h);
        for kind in &o.accepted {
            matches!(kind, ManifestKind::Docker).hash(&mut h);
        }
        // One key for every way of writing the same image (`nginx`, `docker.io/library/nginx:latest`).
        let image = image_key(&target.image);
        Key { access: h.finish(), image }
    }

    /// The outcomes of `targets`, in order, within the budget: cached ones at once, the rest from the registry
    /// (all at the same time); those without an answer when the budget runs out are `NotChecked`, and their
    /// checks finish in the background.
    pub async fn check(&self, targets: Vec<Lookup>) -> Vec<Outcome> {
        self.check_until(targets, None).await.0
    }

    /// [`Checker::check`], and no later than `limit` (an admission's deadline, see [`crate::webhook`]) when that
    /// comes before the budget runs out. Also returns how many images the limit cut (their outcome says so).
    pub async fn check_until(
        &self,
        targets: Vec<Lookup>,
        limit: Option<tokio::time::Instant>,
    ) -> (Vec<Outcome>, usize) {
        let started = tokio::time::Instant::now();
        let budget = started + self.budget;
        let wait = match limit {
            Some(limit) if limit < budget => Wait::Limit { at: limit, after: limit.saturating_duration_since(started) },
            _ => Wait::Budget(budget),
        };
        let outcomes: Vec<(Outcome, bool)> =
            futures::future::join_all(targets.into_iter().map(|t| self.one(t, wait))).await;
        let cut = outcomes.iter().filter(|(_, cut)| *cut).count();
        (outcomes.into_iter().map(|(o, _)| o).collect(), cut)
    }

    /// What the cache holds for `target`, without asking the registry.
    pub async fn cached(&self, target: &Lookup) -> Option<Outcome> {
        self.cache.get(&self.key(target)).await
    }

    /// One image's outcome, and whether an admission's deadline (rather than the budget) cut it.
    async fn one(&self, target: Lookup, wait: Wait) -> (Outcome, bool) {
        let key = self.key(&target);
        if let Some(hit) = self.cache.get(&key).await {
            self.stats.cache_hits.inc();
            return (hit, false);
        }
        let deadline = wait.at();
        // A permit before anything is spawned: the checks (and background tasks) in flight stay bounded however
        // many admissions ask. Not cached: the next admission asks again.
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await else {
            self.stats.saturated.inc();
            let outcome =
                Outcome::NotChecked("regcred is checking as many images as it may at once; not checked".into());
            return (outcome, false);
        };
        let session = match self.session(&target).await {
            Ok(session) => session,
            Err(f) => return (Outcome::of(&preflight::ImageResult { failure: Some(f), ..Default::default() }), false),
        };
        let cache = self.cache.clone();
        let checks = self.stats.registry_checks.clone();
        // A task of its own, so the check outlives an admission that stops waiting. Concurrent misses of one key
        // share one resolution (the cache runs one `get_with` initialiser per key).
        let task = tokio::spawn(async move {
            let outcome = cache
                .get_with(key, async move {
                    checks.inc();
                    resolve(&session, &target).await
                })
                .await;
            drop(permit);
            outcome
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(outcome)) => (outcome, false),
            Ok(Err(e)) => (Outcome::NotChecked(format!("the check stopped: {e}")), false),
            Err(_) => match wait {
                Wait::Budget(_) => {
                    self.stats.over_budget.inc();
                    let outcome = Outcome::NotChecked(format!(
                        "the registry did not answer within {} ms (the check goes on; the next admission gets its \
                         answer)",
                        self.budget.as_millis()
                    ));
                    (outcome, false)
                }
                Wait::Limit { after, .. } => (Outcome::NotChecked(cut_by_deadline(after)), true),
            },
        }
    }
}

/// How long one admission's checks wait: their budget, or an admission deadline that comes first.
#[derive(Clone, Copy, Debug)]
enum Wait {
    Budget(tokio::time::Instant),
    /// The deadline, at `at`, `after` the checks started.
    Limit {
        at: tokio::time::Instant,
        after: Duration,
    },
}

impl Wait {
    fn at(self) -> tokio::time::Instant {
        match self {
            Self::Budget(at) | Self::Limit { at, .. } => at,
        }
    }
}

/// Why an image cut by its admission's deadline (`after` the check started) was not checked.
pub fn cut_by_deadline(after: Duration) -> String {
    format!(
        "the registry did not answer within {} ms, when the admission's deadline came (the check goes on; the next \
         admission gets its answer)",
        after.as_millis()
    )
}

/// The image as the cache knows it: its canonical full reference, or as written when it does not parse.
fn image_key(image: &str) -> String {
    crate::registry::reference::canonical(image)
}

/// One resolution, within [`CHECK_TIMEOUT`].
async fn resolve(session: &preflight::Session, target: &Lookup) -> Outcome {
    let images = [target.image.clone()];
    let resolved = preflight::resolve_images(session, target.credentials.as_ref(), &images, &target.options);
    match tokio::time::timeout(CHECK_TIMEOUT, resolved).await {
        Ok(results) => results.first().map_or_else(|| Outcome::NotChecked("nothing resolved".into()), Outcome::of),
        Err(_) => Outcome::NotChecked(format!("the registry did not answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::preflight::{Failure, Reason};

    fn target(image: &str, password: Option<&str>) -> Lookup {
        Lookup {
            image: image.into(),
            credentials: password.map(|p| Credentials { username: "bot".into(), password: p.into() }),
            options: Options::default(),
        }
    }

    #[test]
    fn passed_images_are_kept_longer_by_digest_than_by_tag_and_anything_else_briefly() {
        let refused = Outcome::Refused(Failure { reason: Reason::ImageNotFound, message: String::new() });
        assert_eq!(lifetime(&Outcome::Passed, false), PASSED_TAG);
        assert_eq!(lifetime(&Outcome::Passed, true), PASSED_DIGEST);
        assert!(PASSED_DIGEST > PASSED_TAG);
        for other in [refused, Outcome::NotChecked(String::new())] {
            for digest in [false, true] {
                assert!(lifetime(&other, digest) <= Duration::from_secs(30), "{other:?}");
            }
        }
    }

    #[test]
    fn keys_follow_the_image_the_credentials_and_the_options() {
        let checker = Checker::new(Duration::from_secs(1), 16, 8, CheckStats::default());
        let base = checker.key(&target("nginx", Some("a")));
        // The same image, however it is written.
        assert_eq!(checker.key(&target("docker.io/library/nginx:latest", Some("a"))), base);
        // Rotated credentials, anonymous access, another image or other options: another key.
        assert_ne!(checker.key(&target("nginx", Some("b"))), base);
        assert_ne!(checker.key(&target("nginx", None)), base);
        assert_ne!(checker.key(&target("nginx:1", Some("a"))), base);
        let mut arm = target("nginx", Some("a"));
        arm.options.platform = "linux/arm64".into();
        assert_ne!(checker.key(&arm), base);
        let mut small = target("nginx", Some("a"));
        small.options.max_size = Some(1);
        assert_ne!(checker.key(&small), base);
        // Nothing of the password in the key.
        assert!(!format!("{:?}", checker.key(&target("nginx", Some("hunter2")))).contains("hunter2"));
    }

    #[tokio::test]
    async fn a_silent_registry_costs_one_budget_and_one_check_however_many_ask() {
        crate::install_crypto_provider();
        let (addr, task) = crate::fixtures::silent_registry().await;
        let checker = Checker::new(Duration::from_millis(200), 16, 8, CheckStats::default());
        let image = format!("{addr}/team/app:1");
        let started = Instant::now();
        let outcomes = checker.check(vec![target(&image, Some("a")); 3]).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::NotChecked(m) if m.contains("200 ms"))), "{outcomes:?}");
        // Three admissions at once, one resolution.
        assert_eq!(checker.stats.registry_checks.get(), 1);
        assert_eq!(checker.stats.over_budget.get(), 3);
        assert_eq!(checker.cached(&target(&image, Some("a"))).await, None);
        task.abort();
    }

    #[tokio::test]
    async fn an_admission_deadline_before_the_budget_cuts_the_checks_and_says_so() {
        crate::install_crypto_provider();
        let (addr, task) = crate::fixtures::silent_registry().await;
        let checker = Checker::new(Duration::from_secs(60), 16, 8, CheckStats::default());
        let image = format!("{addr}/team/app:1");
        let limit = tokio::time::Instant::now() + Duration::from_millis(200);
        let (outcomes, cut) = checker.check_until(vec![target(&image, Some("a")); 2], Some(limit)).await;
        assert_eq!(cut, 2);
        assert!(
            outcomes.iter().all(|o| matches!(o, Outcome::NotChecked(m) if m.contains("the admission's deadline"))),
            "{outcomes:?}"
        );
        // Not the budget's doing: nothing counted over budget.
        assert_eq!(checker.stats.over_budget.get(), 0);
        // A limit after the budget: the budget's answer, nothing cut.
        let short = Checker::new(Duration::from_millis(100), 16, 8, CheckStats::default());
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let (outcomes, cut) = short.check_until(vec![target(&image, Some("b"))], Some(far)).await;
        assert_eq!(cut, 0);
        assert!(matches!(&outcomes[0], Outcome::NotChecked(m) if m.contains("100 ms")), "{outcomes:?}");
        task.abort();
    }

    #[tokio::test]
    async fn an_answer_is_cached_and_rotated_credentials_ask_again() {
        crate::install_crypto_provider();
        // A registry that refuses connections at once: a definite "unreachable", cached briefly.
        let closed = crate::fixtures::closed_registry();
        let checker = Checker::new(Duration::from_secs(10), 16, 8, CheckStats::default());
        let image = format!("{closed}/team/app:1");
        let first = checker.check(vec![target(&image, Some("a"))]).await;
        assert!(matches!(&first[0], Outcome::NotChecked(m) if m.contains("RegistryUnreachable")), "{first:?}");
        let again = checker.check(vec![target(&image, Some("a"))]).await;
        assert_eq!(again, first);
        assert_eq!((checker.stats.registry_checks.get(), checker.stats.cache_hits.get()), (1, 1));
        checker.check(vec![target(&image, Some("b"))]).await;
        assert_eq!(checker.stats.registry_checks.get(), 2);
    }
}
