//! The one Secret writer: every Secret regcred writes goes through [`Writer`], for the controller's syncs and for
//! the webhook's new-namespace path ([`ensure`]) alike. Each write is idempotent (create, or server-side apply of
//! regcred's fields, or a delete by uid), many run at a time within one [`WriteBudget`], and each completed write
//! is recorded in the state layer's managed index at once, so the next plan never repeats a write because the
//! watch has not delivered it yet.
//!
//! The writer is also where the rule of who may receive a profile's credentials is enforced
//! ([`crate::resolve::Meaning::may_write_secret`]): whoever planned a write (a reconcile, the new-namespace path,
//! the webhook), it creates or updates a profile's Secret only when that profile writes Secrets now (its
//! `spec.delivery` is not `CredentialProvider`, it is not anonymous), in a namespace it selects now and that no
//! other profile writing the same Secret name selects. A plan that is wrong, or stale, cannot put one profile's
//! credentials where another's belong.
//!
//! It is also where the deletion guard ([`guard`]) is enforced: it deletes a Secret only as a [`guard::Released`]
//! deletion, which only the guard's decision makes, so no path deletes what the guard holds.

pub mod guard;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::api::conditions::{CONFLICT, WRITE_FAILED};
use crate::api::{NamespaceFailure, RegistryProfile};
use crate::credentials::DockerConfig;
use crate::names::{
    DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, EXPIRES_AT_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    PART_OF_LABEL, PROFILE_LABEL,
};
use crate::resolve::selection::NamespaceInfo;
use crate::resolve::{self, NotWritten, Preflight, Refusal, Withheld};
use crate::state::View;
use crate::state::managed::{WatchedSecret, content_hash};

/// The writes regcred may have in flight at once, shared by every reconcile: the most load its syncs put on the
/// apiserver. A profile alone may use all of it (a sync of 10,000 namespaces does not slow down once the small
/// profiles beside it are done); profiles syncing together take permits in turn.
#[derive(Clone, Debug)]
pub struct WriteBudget {
    permits: Arc<Semaphore>,
    size: usize,
}

impl WriteBudget {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self { permits: Arc::new(Semaphore::new(size)), size }
    }

    /// Runs `work` on every item, each holding a permit while it runs; returns the failures. A caller waits for
    /// one permit at a time, so several callers are served in turn and no work is started before its permit.
    pub async fn run<T, Fut>(&self, items: Vec<T>, work: impl Fn(T) -> Fut) -> Vec<NamespaceFailure>
    where
        Fut: Future<Output = WriteResult>,
    {
        futures::stream::iter(items)
            .then(|item| {
                let permits = self.permits.clone();
                // The semaphore is never closed: an error here cannot happen, and would only mean no limit.
                async move { (permits.acquire_owned().await.ok(), item) }
            })
            .map(|(permit, item)| {
                let outcome = work(item);
                async move {
                    let outcome = outcome.await;
                    drop(permit);
                    outcome
                }
            })
            .buffer_unordered(self.size)
            .filter_map(|o| async move { o })
            .collect()
            .await
    }
}

/// One write. 40 bytes, the namespace being the state index's shared copy of its name: a first sync of 50,000
/// namespaces plans 50,000 of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Create the Secret; the namespace has none of ours.
    Create { namespace: Arc<str> },
    /// Apply the desired content over ours, which drifted.
    Update { namespace: Arc<str> },
    /// Ours has the wrong type, which cannot change in place: delete that object (by uid) and create it anew.
    Replace { namespace: Arc<str>, uid: String },
    /// Delete a Secret of ours that is no longer wanted (by uid, so nothing else is ever deleted), once the
    /// deletion guard released it: the writer deletes nothing the guard holds. Boxed: rare, and three times the
    /// size of the others.
    Delete(Box<guard::Released>),
}

pub struct Writer {
    pub client: Client,
    /// Where completed writes are recorded, and what says which namespaces the profile may write into.
    pub view: View,
    /// A namespace the caller read from the API a moment ago, which the view may not hold yet (a Pod's brand-new
    /// namespace): the selection is checked against it when the view does not know the namespace.
    pub fresh: Option<NamespaceInfo>,
    pub profile: Arc<RegistryProfile>,
    pub secret_name: String,
    pub config: Option<DockerConfig>,
    /// When the credentials expire (short-lived tokens), stamped on every Secret.
    pub expires_at: Option<jiff::Timestamp>,
}

/// What one write came to: `None` when done (or moot), the namespace's failure otherwise.
pub type WriteResult = Option<NamespaceFailure>;

impl Writer {
    /// Runs the actions within the shared write budget; returns the namespaces that failed.
    pub async fn execute(&self, actions: Vec<Action>, budget: &WriteBudget) -> Vec<NamespaceFailure> {
        budget.run(actions, |a| self.run(a)).await
    }

    /// One action, unless it is moot: another write of the same Secret is under way (whose writer reports how it
    /// went), or the view already holds what it would write (another writer made it since the plan). The Secret is
    /// claimed before the view is asked, and a writer records its write before it lets go of its claim, so two
    /// writers that planned the same Secret (the new-namespace path and a reconcile) never both write it.
    pub async fn run(&self, action: Action) -> WriteResult {
        let (namespace, name) = match &action {
            Action::Create { namespace } | Action::Update { namespace } | Action::Replace { namespace, .. } => {
                (&**namespace, self.secret_name.as_str())
            }
            Action::Delete(released) => (&*released.deletion().namespace, &*released.deletion().name),
        };
        if !matches!(action, Action::Delete(_))
            && let Err(refusal) = self.permits(namespace)
        {
            debug!(namespace, secret = name, reason = refusal.reason(), "write refused");
            return Some(failure(namespace, refusal.reason(), refusal.message(&self.secret_name)));
        }
        let Some(_claim) = self.view.managed().claim(namespace, name) else {
            debug!(namespace, secret = name, "another write of this Secret is under way");
            return None;
        };
        if matches!(action, Action::Create { .. } | Action::Update { .. }) && self.already_written(namespace) {
            return None;
        }
        match action {
            Action::Create { namespace } => self.create(&namespace).await,
            Action::Update { namespace } => self.apply(&namespace).await,
            Action::Replace { namespace, uid } => match self.delete(&namespace, &self.secret_name, &uid).await {
                None => self.create(&namespace).await,
                failure => failure,
            },
            Action::Delete(released) => {
                let d = released.deletion();
                self.delete(&d.namespace, &d.name, &d.uid).await
            }
        }
    }

    /// Whether the profile's Secret may be written into `namespace` now: the one rule
    /// ([`crate::resolve::Meaning::may_write_secret`]: nowhere for a profile whose delivery writes no Secret),
    /// over the view as it is at the moment of the write. A namespace
    /// nobody knows, or a profile no longer in the view, is not selected.
    fn permits(&self, namespace: &str) -> Result<(), Refusal> {
        let Some(ns) = self.view.namespace(namespace).or_else(|| self.fresh.clone().filter(|ns| ns.name == namespace))
        else {
            return Err(Refusal::NotSelected);
        };
        // The profile as the view holds it now, not as it was when the write was planned: a selection narrowed (or
        // a profile deleted) during a long sync takes effect at the next write.
        let all = self.view.profiles_and_meanings();
        let Some((_, meaning)) =
            all.iter().find(|(p, _)| p.uid() == self.profile.uid() && p.name_any() == self.profile.name_any())
        else {
            return Err(Refusal::NotSelected);
        };
        meaning.may_write_secret(&ns, all.iter().map(|(_, m)| &**m))
    }

    /// Whether the view holds this writer's Secret in `namespace` exactly as it would write it.
    fn already_written(&self, namespace: &str) -> bool {
        let (Some(config), Some(uid)) = (&self.config, self.profile.uid()) else { return false };
        let hash = content_hash(DOCKER_CONFIG_TYPE, [(DOCKER_CONFIG_KEY, config.0.expose())]);
        self.view.managed().holds(namespace, &self.secret_name, &self.profile.name_any(), &uid, hash)
    }

    fn api(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Requests on the Secrets of `namespace`.
    fn request(namespace: &str) -> kube::core::Request {
        kube::core::Request::new(<Secret as kube::Resource>::url_path(&(), Some(namespace)))
    }

    /// Server-side apply of `secret` under regcred's field manager, into `namespace`.
    async fn send_apply(&self, namespace: &str, secret: &Secret) -> kube::Result<String> {
        let request = Self::request(namespace)
            .patch(&self.secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(secret))
            .map_err(kube::Error::BuildRequest);
        self.send(request, "patch").await
    }

    /// Sends a write, its answer undecoded ([`crate::client::send_undecoded`]): decoding the whole Secret on every
    /// write of a large sync cost CPU for nothing; [`Writer::record`] reads only what the managed index keeps.
    async fn send(&self, request: kube::Result<http::Request<Vec<u8>>>, verb: &'static str) -> kube::Result<String> {
        crate::client::send_undecoded(&self.client, request, verb).await
    }

    /// Records the Secret a write returned in the managed index (an answer that does not decode is left to the
    /// watch).
    fn record(&self, answer: &str) {
        match serde_json::from_str::<WatchedSecret>(answer) {
            Ok(secret) => self.view.managed().record(&secret),
            Err(e) => debug!(error = %e, "the written Secret did not decode; the watch will report it"),
        }
    }

    /// The Secret as regcred wants it.
    fn desired(&self, namespace: &str) -> Option<Secret> {
        let config = self.config.as_ref()?;
        let profile_name = self.profile.name_any();
        let mut owner = self.profile.controller_owner_ref(&())?;
        // Not blocking: that would need permission on the profile's finalizers, which regcred lacks.
        owner.block_owner_deletion = None;
        Some(Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (PROFILE_LABEL.to_owned(), profile_name.clone()),
                ])),
                annotations: self
                    .expires_at
                    .map(|t| BTreeMap::from([(EXPIRES_AT_ANNOTATION.to_owned(), t.to_string())])),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            type_: Some(DOCKER_CONFIG_TYPE.to_owned()),
            data: Some(BTreeMap::from([(DOCKER_CONFIG_KEY.to_owned(), ByteString(config.0.expose().to_vec()))])),
            ..Secret::default()
        })
    }

    /// Creates the Secret. Creation (not apply) is what guarantees a Secret regcred does not manage is never
    /// taken over: if the name is taken, the existing object is inspected and only adopted when it is ours.
    async fn create(&self, namespace: &str) -> WriteResult {
        let secret = self.desired(namespace)?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let request = serde_json::to_vec(&secret)
            .map_err(kube::Error::SerdeError)
            .and_then(|body| Self::request(namespace).create(&params, body).map_err(kube::Error::BuildRequest));
        match self.send(request, "create").await {
            Ok(answer) => {
                self.record(&answer);
                None
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                match self.api(namespace).get_metadata_opt(&self.secret_name).await {
                    Ok(Some(existing)) if self.is_ours(&existing.metadata) => self.apply(namespace).await,
                    Ok(Some(_)) => Some(failure(
                        namespace,
                        CONFLICT,
                        format!(
                            "a Secret named {} that regcred does not manage exists; it is left untouched",
                            self.secret_name
                        ),
                    )),
                    Ok(None) => {
                        Some(failure(namespace, "Retrying", "the Secret was deleted while being created".into()))
                    }
                    Err(e) => Some(api_failure(namespace, &e)),
                }
            }
            Err(e) if namespace_gone(&e) => None,
            Err(e) => Some(api_failure(namespace, &e)),
        }
    }

    /// A Secret is ours when it carries our labels, or when its ownerReferences name this very profile (someone
    /// removed our labels: we restore them). Anything else is a foreign Secret and is never taken over.
    fn is_ours(&self, meta: &ObjectMeta) -> bool {
        let labels = meta.labels.as_ref();
        let labelled = labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY_VALUE)
            && labels.and_then(|l| l.get(PROFILE_LABEL)) == Some(&self.profile.name_any());
        let uid = self.profile.uid();
        let owned = meta.owner_references.iter().flatten().any(|o| Some(&o.uid) == uid.as_ref());
        labelled || owned
    }

    /// Keeps the copy of a short-lived token in regcred's own namespace, under this writer's `secret_name`
    /// ([`crate::names::token_copy_name`]), where tenants cannot write: other replicas' webhooks copy the current token
    /// from there into brand-new namespaces. The copy carries no managed-by label, so no profile's sync plan ever
    /// sees it.
    pub async fn keep_token_copy(&self, operator_namespace: &str) -> Result<(), kube::Error> {
        let Some(mut secret) = self.desired(operator_namespace) else { return Ok(()) };
        secret.metadata.labels = Some(BTreeMap::from([(PART_OF_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())]));
        self.send_apply(operator_namespace, &secret).await.map(drop)
    }

    /// Server-side apply of the desired Secret under regcred's field manager.
    async fn apply(&self, namespace: &str) -> WriteResult {
        let secret = self.desired(namespace)?;
        match self.send_apply(namespace, &secret).await {
            Ok(answer) => {
                self.record(&answer);
                None
            }
            Err(e) if namespace_gone(&e) => None,
            Err(e) => Some(api_failure(namespace, &e)),
        }
    }

    /// Deletes exactly the object with `uid`: never a Secret that replaced it.
    async fn delete(&self, namespace: &str, name: &str, uid: &str) -> WriteResult {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
            ..DeleteParams::default()
        };
        match self.api(namespace).delete(name, &params).await {
            Ok(_) => {
                self.view.managed().record_deleted(namespace, name, uid);
                None
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => None,
            Err(e) => Some(api_failure(namespace, &e)),
        }
    }
}

/// Why [`ensure`] could not put a Secret in place.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The profile may not write into the namespace.
    #[error("{}", .0.reason())]
    Refused(Refusal),
    /// The profile's Secrets are left as they are (credentials that do not resolve, a withholding preflight).
    #[error("{}: {}", .0.reason, .0.message)]
    Withheld(Withheld),
    #[error("the profile writes no Secret")]
    NothingToWrite,
    #[error("{reason}: {message}")]
    Write { reason: String, message: String },
}

/// Makes sure `profile`'s Secret exists in `namespace` now, without waiting for a reconcile: for a namespace
/// created a moment ago (the controller's new-namespace path, and the webhook when a Pod lands there first). What
/// it writes is the Secret [`resolve::Written::secret_in`] says is written there now (none for a profile whose
/// delivery writes no Secret), the preflight as the profile's status tells it. Creating is idempotent (a Secret that appeared meanwhile is adopted only if it is ours), so racing the
/// controller is harmless; the write is recorded in the view, so the reconcile that follows does not repeat it.
/// Outside the write budget: a new namespace must not wait behind a large sync.
pub async fn ensure(
    client: &Client,
    view: &View,
    profile: Arc<RegistryProfile>,
    namespace: &NamespaceInfo,
) -> Result<(), EnsureError> {
    let meaning = view.meaning(&profile);
    let snapshot = view.refresher().peek(&meaning.name);
    let preflight = Preflight::from_status(&profile);
    let written = resolve::written(&profile, &meaning, view, snapshot.as_ref(), &preflight, jiff::Timestamp::now());
    let all = view.profiles_and_meanings();
    let content = match written.secret_in(&meaning, namespace, all.iter().map(|(_, m)| &**m)) {
        Ok(Some(content)) => content.clone(),
        Ok(None) => return Err(EnsureError::NothingToWrite),
        Err(NotWritten::Refused(refusal)) => return Err(EnsureError::Refused(refusal)),
        Err(NotWritten::Withheld(withheld)) => return Err(EnsureError::Withheld(withheld)),
    };
    let writer = Writer {
        client: client.clone(),
        view: view.clone(),
        fresh: Some(namespace.clone()),
        secret_name: meaning.secret_name.clone(),
        expires_at: content.expires_at,
        profile,
        config: Some(content.config),
    };
    match writer.run(Action::Create { namespace: namespace.name.as_str().into() }).await {
        None => Ok(()),
        Some(f) => Err(EnsureError::Write { reason: f.reason, message: f.message }),
    }
}

/// Writes into a namespace that is gone or going are moot: the namespace watch deselects it.
fn namespace_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (s.is_not_found() && s.message.contains("namespaces")) || (s.is_forbidden() && s.message.contains("being terminated")))
}

fn failure(namespace: &str, reason: &str, message: String) -> NamespaceFailure {
    NamespaceFailure { namespace: namespace.to_owned(), reason: reason.to_owned(), message }
}

fn api_failure(namespace: &str, e: &kube::Error) -> NamespaceFailure {
    debug!(namespace, error = %e, "Secret write failed");
    let reason = match e {
        kube::Error::Api(s) if s.is_forbidden() => "Forbidden",
        kube::Error::Api(s) if s.is_invalid() => "Invalid",
        kube::Error::Api(_) => WRITE_FAILED,
        _ => "APIUnreachable",
    };
    failure(namespace, reason, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_budget_bounds_writes_across_callers_and_lets_one_use_it_all() {
        let budget = WriteBudget::new(8);
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let work = |i: usize| {
            let (running, most) = (&running, &most);
            async move {
                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                (i % 2 == 1).then(|| failure(&format!("ns-{i}"), WRITE_FAILED, String::new()))
            }
        };
        let failures = budget.run((0..64).collect(), work).await;
        assert_eq!(most.load(Ordering::SeqCst), 8, "one caller alone uses the whole budget");
        assert_eq!(failures.len(), 32, "every failure is returned");

        most.store(0, Ordering::SeqCst);
        let (a, b) = tokio::join!(budget.run((0..64).collect(), work), budget.run((0..64).collect(), work));
        assert_eq!((a.len(), b.len()), (32, 32));
        assert_eq!(most.load(Ordering::SeqCst), 8, "two callers share the budget, never exceed it");
    }
}
