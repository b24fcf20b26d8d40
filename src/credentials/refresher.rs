//! The refresher: one minting task per profile with a token source, whatever the number of namespaces. Each
//! task mints, publishes the token in a snapshot the controller reads, tells its owner which profile changed (the
//! state layer marks it dirty: the stream through which new tokens reach the controller), and sleeps until the next refresh: two thirds of the
//! token's real remaining lifetime (with jitter), or a backoff after a failure, while the last good token stays
//! in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::identity::Identity;
use super::tokens::{self, MintError, Minted, TokenSource};

/// What the refresher knows of one profile's token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The last good token, until it expires.
    pub token: Option<Minted>,
    /// The last attempt's failure, cleared by a success.
    pub error: Option<MintError>,
    pub last_refresh: Option<Timestamp>,
    pub next_refresh: Option<Timestamp>,
    /// Successful mints since the task started.
    pub mints: u64,
    /// Attempts that failed since the last success (0 after a success).
    pub failures: u32,
}

struct Entry {
    source: TokenSource,
    snapshot: Arc<Mutex<Snapshot>>,
    task: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Labels of the mint counter: the profile, and `ok` or the failure's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MintLabels {
    pub profile: String,
    pub result: String,
}

/// Mints by profile and result; registered as a metric (clones share their values).
pub type MintCounts = Family<MintLabels, Counter>;

/// Called with a profile's name after each mint or failed attempt.
pub type OnChange = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Refresher {
    entries: Mutex<HashMap<String, Entry>>,
    on_change: OnChange,
    fraction: f64,
    identity: Arc<Identity>,
    pub counts: MintCounts,
}

impl Refresher {
    /// `fraction`: the share of a token's remaining lifetime after which it is replaced (default 2/3);
    /// `identity`: regcred's own, for the sources that federate from it.
    pub fn new(on_change: OnChange, fraction: f64, identity: Arc<Identity>) -> Self {
        Self { entries: Mutex::default(), on_change, fraction, identity, counts: MintCounts::default() }
    }

    /// Makes sure a task mints for `profile` from `source`: starts one if the profile has none, or restarts it if
    /// its source changed (a rotated key, another role), so a token minted from an old source is never served for a
    /// new one. Read what it minted with [`Refresher::peek`].
    pub fn ensure_minting(&self, profile: &str, source: &TokenSource) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(profile).is_some_and(|e| &e.source == source) {
            return;
        }
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let task = tokio::spawn(run(
            profile.to_owned(),
            source.clone(),
            snapshot.clone(),
            self.on_change.clone(),
            self.fraction,
            self.identity.clone(),
            self.counts.clone(),
        ));
        entries.insert(profile.to_owned(), Entry { source: source.clone(), snapshot, task });
    }

    /// The profile's token state, starting nothing (`None`: no task mints for it on this replica).
    pub fn peek(&self, profile: &str) -> Option<Snapshot> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(profile).map(|e| e.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Stops minting for a profile (deleted, or no longer using a token source).
    pub fn stop(&self, profile: &str) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(profile);
    }

    /// Every profile's token state, for metrics.
    pub fn snapshots(&self) -> Vec<(String, Snapshot)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|(name, e)| (name.clone(), e.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone()))
            .collect()
    }

    /// Stops minting for every profile `keep` rejects.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).retain(|name, _| keep(name));
    }
}

/// Mints with the source's provider.
pub async fn mint(source: &TokenSource, identity: &Identity) -> Result<Minted, MintError> {
    let minted = match source {
        TokenSource::Ecr(ecr) => super::ecr::mint(ecr).await,
        TokenSource::Gcp(gcp) => super::gcp::mint(gcp, identity).await,
        TokenSource::Acr(acr) => super::azure::mint(acr, identity).await,
        TokenSource::Quay(quay) => super::quay::mint(quay, identity).await,
    };
    minted.map_err(|e| super::phrase::mint_failure(source, identity, e))
}

fn jitter() -> f64 {
    // Enough spread for profiles minted at the same instant; no need for a random number generator.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    f64::from(nanos.unwrap_or(0) % 1000) / 1000.0
}

async fn run(
    profile: String,
    source: TokenSource,
    snapshot: Arc<Mutex<Snapshot>>,
    on_change: OnChange,
    fraction: f64,
    identity: Arc<Identity>,
    counts: MintCounts,
) {
    let mut failures = 0u32;
    loop {
        let result =
            tokio::time::timeout(Duration::from_secs(60), mint(&source, &identity)).await.unwrap_or_else(|_| {
                let timed_out = MintError::new("EndpointUnreachable", "minting timed out after 60s");
                Err(super::phrase::mint_failure(&source, &identity, timed_out))
            });
        let now = Timestamp::now();
        let delay = {
            let mut snap = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
            let delay = match result {
                Ok(minted) => {
                    failures = 0;
                    counts.get_or_create(&MintLabels { profile: profile.clone(), result: "ok".into() }).inc();
                    let delay = tokens::refresh_after(now, minted.expires_at, fraction, jitter());
                    info!(profile, expires_at = %minted.expires_at, next_in = ?delay, "token minted");
                    snap.token = Some(minted);
                    snap.error = None;
                    snap.failures = 0;
                    snap.last_refresh = Some(now);
                    snap.mints += 1;
                    delay
                }
                Err(e) => {
                    failures += 1;
                    counts.get_or_create(&MintLabels { profile: profile.clone(), result: e.reason.into() }).inc();
                    let delay = tokens::retry_after(failures, now, snap.token.as_ref().map(|t| t.expires_at));
                    warn!(profile, reason = e.reason, error = %e, retry_in = ?delay, "minting failed; the last good token, if any, stays");
                    snap.error = Some(e);
                    snap.failures = failures;
                    delay
                }
            };
            snap.next_refresh = jiff::SignedDuration::try_from(delay).ok().and_then(|d| now.checked_add(d).ok());
            delay
        };
        on_change(&profile);
        tokio::time::sleep(delay).await;
    }
}
