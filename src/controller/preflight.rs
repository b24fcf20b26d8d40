//! The registry preflight, off the reconcile path: checks run on a few workers of their own, and each result
//! comes back through the dirty set, like any other change. A reconcile only reads the last verdict and asks for a
//! check when one is due, so no number of silent registries delays another profile's Secrets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span};

use super::checks::{self, Record, Verdict};
use crate::api::{RegistryTls, Validation};
use crate::credentials::DockerConfig;
use crate::registry::config_key;
use crate::registry::preflight::{self, Failure, Options, Reason, Report};
use crate::resolve::Preflight;
use crate::state::Dirty;

/// The longest one preflight may run before it is reported as unreachable.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a reconcile knows of its profile's preflight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The verdict on what the profile is now (perhaps being re-checked after its interval).
    Current(Verdict),
    /// A check of what the profile is now is running; `previous` is the verdict on what it was before.
    Pending { previous: Option<Verdict> },
}

impl State {
    /// The verdict to show: the current one, or while pending the previous one.
    pub fn shown(&self) -> Option<&Verdict> {
        match self {
            Self::Current(v) => Some(v),
            Self::Pending { previous } => previous.as_ref(),
        }
    }

    /// What it says to a profile that withholds its Secrets until the preflight passes (see
    /// [`crate::resolve::withheld`]).
    pub fn word(&self) -> Preflight {
        match self {
            Self::Current(v) => {
                v.failure().map_or(Preflight::Passed, |f| Preflight::Failed { reason: f.reason.clone() })
            }
            Self::Pending { .. } => Preflight::Pending,
        }
    }
}

/// What one check needs: all owned, so it can run on a worker.
#[derive(Clone, Debug)]
pub struct Request {
    pub profile: String,
    pub registry: String,
    pub validation: Validation,
    pub tls: Option<RegistryTls>,
    pub config: Option<DockerConfig>,
}

impl Request {
    fn fingerprint(&self) -> u64 {
        checks::fingerprint(&self.validation, self.tls.as_ref(), &self.registry, self.config.as_ref())
    }
}

/// The preflight's records and workers, shared by every reconcile.
pub struct Checks {
    records: Mutex<HashMap<String, Record>>,
    /// Checks running now, by profile and fingerprint: one at a time for each.
    running: Mutex<HashSet<(String, u64)>>,
    workers: Arc<Semaphore>,
    dirty: Arc<Dirty>,
}

impl Checks {
    /// `workers`: checks that may run at once.
    pub fn new(workers: usize, dirty: Arc<Dirty>) -> Arc<Self> {
        Arc::new(Self {
            records: Mutex::default(),
            running: Mutex::default(),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            dirty,
        })
    }

    /// The preflight's state for `request`, starting a check on a worker when one is due. Never waits.
    pub fn state(self: &Arc<Self>, request: Request, now: jiff::Timestamp) -> State {
        let fingerprint = request.fingerprint();
        let every = checks::interval(&request.validation);
        let record = self.records.lock().unwrap_or_else(PoisonError::into_inner).get(&request.profile).cloned();
        if checks::due(record.as_ref(), fingerprint, now, every) {
            self.start(request, fingerprint);
        }
        match record {
            Some(r) if r.fingerprint == fingerprint => State::Current(checks::verdict(&r.report, r.at)),
            r => State::Pending { previous: r.map(|r| checks::verdict(&r.report, r.at)) },
        }
    }

    /// How long until `profile`'s next periodic check, if it has one.
    pub fn until_due(&self, profile: &str, validation: &Validation, now: jiff::Timestamp) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.get(profile).map(|r| checks::until_due(r, now, checks::interval(validation)))
    }

    /// Forgets a profile that no longer asks for checks.
    pub fn forget(&self, profile: &str) {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).remove(profile);
    }

    fn start(self: &Arc<Self>, request: Request, fingerprint: u64) {
        let key = (request.profile.clone(), fingerprint);
        if !self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone()) {
            return;
        }
        let this = self.clone();
        let span = info_span!("preflight", profile = %request.profile, registry = %request.registry);
        tokio::spawn(
            async move {
                // The semaphore is never closed; without a permit the check would only run unbounded.
                let permit = this.workers.clone().acquire_owned().await.ok();
                let report = run(&request).await;
                drop(permit);
                info!(
                    result = report.first_failure().map_or("passed", |f| f.reason.as_str()),
                    images = report.images.len(),
                    duration_ms = report.duration_ms,
                    "registry preflight"
                );
                let record = Record { fingerprint, at: jiff::Timestamp::now(), report };
                this.records.lock().unwrap_or_else(PoisonError::into_inner).insert(request.profile.clone(), record);
                this.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                this.dirty.mark([request.profile]);
            }
            .instrument(span),
        );
    }
}

/// One check, within [`PREFLIGHT_TIMEOUT`].
async fn run(request: &Request) -> Report {
    let credentials = request.config.as_ref().and_then(|c| c.login(&config_key(&request.registry)));
    let options = Options::for_profile(&request.validation, request.tls.as_ref());
    let check = preflight::check(&request.registry, credentials.as_ref(), &request.validation.images, &options);
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, check).await {
        Ok(report) => report,
        Err(_) => Report {
            registry: request.registry.clone(),
            credentials: Some(Failure {
                reason: Reason::RegistryUnreachable,
                message: format!(
                    "the preflight of {} did not finish within {} s",
                    request.registry,
                    PREFLIGHT_TIMEOUT.as_secs()
                ),
            }),
            images: Vec::new(),
            duration_ms: u64::try_from(PREFLIGHT_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{closed_registry, silent_registry};
    use futures::StreamExt;

    fn request(profile: &str, registry: &str) -> Request {
        Request {
            profile: profile.into(),
            registry: registry.into(),
            validation: Validation::default(),
            tls: None,
            config: None,
        }
    }

    #[tokio::test]
    async fn a_check_never_blocks_the_caller_and_reports_through_the_dirty_set() {
        crate::install_crypto_provider();
        let dirty = Arc::new(Dirty::default());
        let checks = Checks::new(1, dirty.clone());
        let (hanging, task) = silent_registry().await;
        let now = jiff::Timestamp::now();
        // Asking returns at once, pending, however long the registry takes; asking again starts nothing new.
        assert_eq!(checks.state(request("slow", &hanging), now), State::Pending { previous: None });
        assert_eq!(checks.state(request("slow", &hanging), now), State::Pending { previous: None });
        assert_eq!(checks.running.lock().unwrap().len(), 1);
        // A registry that refuses connections at once: its verdict arrives through the dirty set.
        let closed = closed_registry();
        let mut batches = Box::pin(dirty.clone().batches());
        let workers = Checks::new(4, dirty.clone());
        assert!(matches!(workers.state(request("fast", &closed), now), State::Pending { .. }));
        let batch = tokio::time::timeout(Duration::from_secs(30), batches.next()).await.unwrap().unwrap();
        assert_eq!(batch, ["fast"]);
        match workers.state(request("fast", &closed), jiff::Timestamp::now()) {
            State::Current(v) => assert_eq!(v.credentials.reason, "RegistryUnreachable"),
            other @ State::Pending { .. } => panic!("{other:?}"),
        }
        task.abort();
    }
}
