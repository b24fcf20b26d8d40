//! The state layer: regcred's watched, in-memory view of the cluster, shared by the controller and the webhook.
//! Every watch regcred opens is here; the layers above read the view (through its methods) and the streams this
//! layer hands them, and none watches anything itself.
//!
//! It owns:
//! - the view's five watches, each in a task of its own, so the view stays current whether or not this replica
//!   reconciles: profiles and the Secrets of regcred's own namespace (reflector stores: few and small), and three
//!   that grow with the cluster, each in a [`compact`] index of only what is read: [`namespaces`] (name, labels,
//!   whether going), [`managed`] Secrets (hashes and owners) and [`service_accounts`] (pull secrets and regcred's
//!   record). ServiceAccounts are followed only while something needs them
//!   ([`View::follow_service_accounts`]);
//! - the watches opened for one consumer each, as [`streams`]: the kubelet's pull failures (the leader's
//!   self-healing) and the webhook's own configuration (its certificate keeper);
//! - the [`dirty::Dirty`] set: each change is mapped to the profiles it concerns and marked there (a change of a
//!   namespace, a managed Secret or a ServiceAccount with that namespace, so the reconcile plans only it), and the
//!   controller drains it as its trigger stream;
//! - the handle to the token [`Refresher`], whose mints mark their profile dirty;
//! - each profile's compiled meaning (see [`crate::resolve`]), once per generation.
//!
//! Own writes reach the view at once: the Secret writer ([`crate::secrets`]) records what it wrote in the
//! managed index, so no reconcile rewrites a Secret because the watch has not delivered regcred's own write yet.

pub mod compact;
pub mod dirty;
pub mod managed;
pub mod namespaces;
pub mod service_accounts;
pub mod streams;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::api::RegistryProfile;
use crate::credentials::identity::Identity;
use crate::credentials::refresher::Refresher;
use crate::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL};
use crate::resolve::selection::NamespaceInfo;
use crate::resolve::{Meaning, Sources};
pub use dirty::Dirty;
use managed::{ManagedSecrets, WatchedSecret};
use namespaces::Namespaces;
use service_accounts::ServiceAccounts;

/// The shared view: cheap to clone. Read through its methods.
#[derive(Clone)]
pub struct View {
    profiles: Store<RegistryProfile>,
    namespaces: Namespaces,
    managed: ManagedSecrets,
    sources: Store<Secret>,
    service_accounts: ServiceAccounts,
    /// Short-lived tokens, minted once per profile; shared so the webhook can write a new namespace's Secret.
    refresher: Arc<Refresher>,
    /// Resolves once all five caches hold their initial lists (false if one stopped first). See [`all_ready`].
    ready: Shared<BoxFuture<'static, bool>>,
    dirty: Arc<Dirty>,
    /// Namespaces that appeared or changed since the initial list: the controller's new-namespace path.
    new_namespaces: Arc<Dirty>,
    /// regcred's own namespace: where source Secrets are read, never selected unless named.
    operator_namespace: Arc<str>,
    /// Each profile's [`Meaning`], compiled once per generation.
    meanings: Arc<Mutex<HashMap<String, Arc<Meaning>>>>,
    /// The ServiceAccount watch, while one runs; what it is opened with (`None`: a detached view, fed by hand).
    accounts_watch: Arc<Mutex<Option<Following>>>,
    client: Option<Client>,
}

/// A watch that runs while it is needed: its ready flag and its task.
struct Following {
    ready: watch::Receiver<bool>,
    task: AbortHandle,
}

/// One watch's events, after its store or index has applied each.
type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The view's watches, opened and not yet followed.
struct Watches {
    profiles: Events<RegistryProfile>,
    namespaces: Events<PartialObjectMeta<Namespace>>,
    managed: Events<WatchedSecret>,
    sources: Events<Secret>,
    service_accounts: (watch::Receiver<bool>, Events<ServiceAccount>),
}

impl View {
    /// Starts the watches in background tasks. `operator_namespace` is where source Secrets are read;
    /// `profile_selector` restricts the profiles handled; `refresh_fraction` is the share of a token's remaining
    /// lifetime after which it is replaced.
    pub fn start(
        client: &Client,
        operator_namespace: &str,
        profile_selector: Option<&str>,
        refresh_fraction: f64,
        identity: Arc<Identity>,
    ) -> Self {
        let dirty = Arc::new(Dirty::default());
        let refresher = refresher(&dirty, refresh_fraction, identity);
        let (view, watches) = Self::open(client, operator_namespace, profile_selector, dirty, refresher);
        view.follow(watches);
        view
    }

    /// The view over the five watches' stores and indexes, and the watches, not yet followed.
    fn open(
        client: &Client,
        operator_namespace: &str,
        profile_selector: Option<&str>,
        dirty: Arc<Dirty>,
        refresher: Arc<Refresher>,
    ) -> (Self, Watches) {
        let mut profile_config = watcher::Config::default();
        if let Some(sel) = profile_selector {
            profile_config = profile_config.labels(sel);
        }
        let (profiles, profiles_ready, profile_events) =
            reflected(Api::<RegistryProfile>::all(client.clone()), profile_config, |p| {
                p.metadata.managed_fields = None;
            });
        let (sources, sources_ready, source_events) =
            reflected(Api::<Secret>::namespaced(client.clone(), operator_namespace), watcher::Config::default(), |s| {
                s.metadata.managed_fields = None;
            });
        let Grown {
            namespaces: (namespaces, ns_ready, ns_events),
            managed: (managed, managed_ready, managed_events),
            service_accounts: (service_accounts, sa_ready, sa_events),
        } = Grown::open(client);
        let view = Self {
            profiles,
            namespaces,
            managed,
            sources,
            service_accounts,
            refresher,
            ready: all_ready(vec![profiles_ready, ns_ready, managed_ready, sources_ready, sa_ready.clone()]),
            dirty,
            new_namespaces: Arc::default(),
            operator_namespace: operator_namespace.into(),
            meanings: Arc::default(),
            accounts_watch: Arc::default(),
            client: Some(client.clone()),
        };
        let watches = Watches {
            profiles: profile_events.boxed(),
            namespaces: ns_events,
            managed: managed_events,
            sources: source_events.boxed(),
            service_accounts: (sa_ready, sa_events),
        };
        (view, watches)
    }

    /// Follows each watch in a task of its own, marking the profiles each change concerns.
    fn follow(&self, watches: Watches) {
        // A profile changed: itself, and the profiles that write a Secret of the name it writes, or wrote, since a
        // conflict between them may have begun or ended (see `resolve::Meaning::may_write`).
        // Not when only its status changed: the echo of the status this replica wrote would reconcile it once more
        // for nothing (see `ProfileInputs`). And ServiceAccounts may no longer be needed (see
        // `unfollow_service_accounts_if_idle`).
        let seen = Mutex::new(HashMap::<String, ProfileInputs>::new());
        self.drive("profiles", watches.profiles, move |c, p| {
            let name = p.name_any();
            let now = c.profile(&name).map(|p| ProfileInputs::of(&p));
            let before =
                if let Some(now) = now.clone() { lock(&seen).insert(name, now) } else { lock(&seen).remove(&name) };
            if now.is_none() || before != now {
                c.dirty.mark(c.profile_and_rivals(&p));
            }
            c.unfollow_service_accounts_if_idle();
        });
        self.follow_namespaces(watches.namespaces);
        // A managed Secret was written, edited or deleted by someone else (the index drops the echoes of regcred's
        // own writes and deletes, which their callers count): its profile, for that namespace.
        self.drive("managed secrets", watches.managed, |c, s| {
            let profile = s.labels().get(PROFILE_LABEL).cloned().into_iter().collect();
            c.dirty.mark_namespace(profile, &s.namespace().unwrap_or_default());
        });
        // A Secret in regcred's namespace changed: the profiles that read it.
        self.drive("source secrets", watches.sources, |c, s| c.dirty.mark(c.profiles_reading(&s.name_any())));
        let (sa_ready, sa_events) = watches.service_accounts;
        self.drive_service_accounts(&mut lock(&self.accounts_watch), sa_ready, sa_events);
        // Followed from the start, to learn whether any account holds an entry of regcred's; then only if needed.
        let view = self.clone();
        tokio::spawn(async move {
            if view.ready().await {
                view.unfollow_service_accounts_if_idle();
            }
        });
    }

    /// Follows ServiceAccounts, unless the view already does; the returned flag is set once the index holds the
    /// initial list. ServiceAccount mode calls this before it reads the index. The watch runs until nothing needs
    /// it ([`View::unfollow_service_accounts_if_idle`]).
    pub fn follow_service_accounts(&self) -> watch::Receiver<bool> {
        let mut following = lock(&self.accounts_watch);
        if let Some(f) = following.as_ref() {
            return f.ready.clone();
        }
        let Some(client) = &self.client else { return watch::channel(true).1 };
        let (ready, events) = service_accounts_watch(client, &self.service_accounts);
        self.drive_service_accounts(&mut following, ready.clone(), events);
        info!("following ServiceAccounts: a profile uses ServiceAccount mode");
        ready
    }

    /// Waits until the ServiceAccount index holds the initial list of a following ([`View::follow_service_accounts`]);
    /// false if that following ended first.
    pub async fn service_accounts_ready(&self) -> bool {
        self.follow_service_accounts().wait_for(|ready| *ready).await.is_ok()
    }

    /// Follows one ServiceAccount watch's events, recorded in `following`.
    fn drive_service_accounts(
        &self,
        following: &mut Option<Following>,
        ready: watch::Receiver<bool>,
        events: Events<ServiceAccount>,
    ) {
        // A ServiceAccount appeared or changed: the profiles that recorded an entry on it, and those in
        // ServiceAccount mode that select its namespace and name it, for that namespace. Then, whether the
        // following is still needed (the last entry of a profile that left the mode may just have gone).
        let task = self.drive("service accounts", events, |c, sa| {
            c.dirty.mark_namespace(c.profiles_for_service_account(&sa), &sa.namespace().unwrap_or_default());
            c.unfollow_service_accounts_if_idle();
        });
        *following = Some(Following { ready, task });
    }

    /// Stops following ServiceAccounts, and empties their index, once the view is ready and nothing needs them:
    /// no profile in the view uses ServiceAccount mode and no account holds an entry of regcred's (one that a
    /// profile which left the mode, or went, still has to remove). Entries of profiles another replica handles
    /// (a profile selector) keep the watch running: whether their profile is gone is not known here.
    pub fn unfollow_service_accounts_if_idle(&self) {
        let mut following = lock(&self.accounts_watch);
        if following.is_none() || !self.is_ready() {
            return;
        }
        if self.profiles().iter().any(|p| p.spec.service_accounts.is_some()) || self.service_accounts.any_recorded() {
            return;
        }
        if let Some(f) = following.take() {
            f.task.abort();
        }
        self.service_accounts.end();
        info!("stopped following ServiceAccounts: no profile uses ServiceAccount mode and none holds an entry");
    }

    /// A namespace appeared, changed labels or is going: the new-namespace path hears of it at once, and the
    /// profiles that select it or have a Secret in it, for that namespace, a moment later, all marks of that moment
    /// at once. A new namespace already has its Secret from the new-namespace path, and a burst of namespaces
    /// reconciles each profile once, not once per namespace, while the new-namespace path has the CPU; a trickle
    /// reconciles each at most once per [`SETTLE_WINDOW`] ([`settle_wait`]).
    fn follow_namespaces(&self, events: Events<PartialObjectMeta<Namespace>>) {
        let new_namespaces = self.new_namespaces.clone();
        let events = events.inspect(move |event| {
            if let Ok(watcher::Event::Apply(ns)) = event {
                new_namespaces.mark([ns.name_any()]);
            }
        });
        let settling = Arc::new(Dirty::default());
        let settle = settling.clone();
        self.drive("namespaces", events, move |c, ns| {
            let mut names = c.profiles_for_namespace(&namespace_info(&ns));
            // And those that selected it before the change (with nothing of theirs there to mark them).
            if let Some(before) = c.namespaces.take_previous(&ns.name_any()) {
                let before = c.profiles_for_namespace(&before);
                names.extend(before.into_iter().filter(|n| !names.contains(n)).collect::<Vec<_>>());
            }
            c.dirty.note(&names, &ns.name_any());
            settle.mark(names);
        });
        let dirty = self.dirty.clone();
        tokio::spawn(async move {
            let mut batches = std::pin::pin!(settling.batches());
            let mut last: Option<tokio::time::Instant> = None;
            while let Some(names) = batches.next().await {
                tokio::time::sleep(settle_wait(last.map(|at| at.elapsed()))).await;
                last = Some(tokio::time::Instant::now());
                // A reconcile since (the namespace's new Secret marks its profile at once) took the change along.
                dirty.mark_noted(names);
            }
        });
    }

    /// A view fed by hand rather than by watches, ready at once: for tests of the layers above it (the reconcile
    /// against a mocked apiserver, say). Profiles and source Secrets go in through the returned writers, the
    /// indexes through their own `apply`.
    pub fn detached(operator_namespace: &str, refresh_fraction: f64) -> (Self, Feeds) {
        let dirty = Arc::new(Dirty::default());
        let refresher = refresher(&dirty, refresh_fraction, Identity::detached(operator_namespace));
        let (profiles, profiles_feed) = reflector::store();
        let (sources, sources_feed) = reflector::store();
        let view = Self {
            profiles,
            namespaces: Namespaces::default(),
            managed: ManagedSecrets::default(),
            sources,
            service_accounts: ServiceAccounts::default(),
            refresher,
            ready: futures::future::ready(true).boxed().shared(),
            dirty,
            new_namespaces: Arc::default(),
            operator_namespace: operator_namespace.into(),
            meanings: Arc::default(),
            accounts_watch: Arc::default(),
            client: None,
        };
        (view, Feeds { profiles: profiles_feed, sources: sources_feed })
    }

    /// Runs one watch's events in a task of its own, calling `changed` with each object it applies or deletes, and
    /// marking every profile, every namespace of it, when a (re)list completes.
    ///
    /// The second matters after a watch is lost (an apiserver restart, a compaction): the relist's objects reach
    /// the stream before the store swaps them in at `InitDone`, so a reconcile they trigger can run on the old
    /// view, and an object created during the gap would then wait for the next periodic resync (found by
    /// `make soak`: namespaces created while the apiserver restarted got no Secret). The relist's own objects mark
    /// nothing: its end marks everything.
    fn drive<K, S>(&self, what: &'static str, events: S, changed: impl Fn(&View, K) + Send + 'static) -> AbortHandle
    where
        K: Send + 'static,
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let view = self.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => changed(&view, obj),
                    Ok(watcher::Event::InitDone) => {
                        view.dirty.mark_everything(view.profiles().iter().map(|p| p.name_any()));
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    // default_backoff() retries; the error is only worth a line in the log.
                    Err(e) => warn!(cache = what, error = %e, "watch failed; retrying"),
                }
            }
        });
        task.abort_handle()
    }

    /// The profiles that read the Secret `name` of regcred's namespace.
    fn profiles_reading(&self, name: &str) -> Vec<String> {
        let profiles = self.profiles();
        profiles.iter().filter(|p| crate::resolve::source_secrets(p).contains(&name)).map(|p| p.name_any()).collect()
    }

    /// Every profile in the view.
    pub fn profiles(&self) -> Vec<Arc<RegistryProfile>> {
        self.profiles.state()
    }

    /// The profile `name`, as the view holds it.
    pub fn profile(&self, name: &str) -> Option<Arc<RegistryProfile>> {
        self.profiles.get(&reflector::ObjectRef::new(name))
    }

    /// The profiles' reflector store, for kube-runtime's Controller (which reads its objects from it).
    pub fn profile_store(&self) -> Store<RegistryProfile> {
        self.profiles.clone()
    }

    /// The namespaces, as selection reads them.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The managed Secrets, and the writes of them under way.
    pub fn managed(&self) -> &ManagedSecrets {
        &self.managed
    }

    /// The cluster's ServiceAccounts.
    pub fn service_accounts(&self) -> &ServiceAccounts {
        &self.service_accounts
    }

    /// The token refresher: one minting task per profile that mints.
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.refresher
    }

    /// The profiles waiting for a reconcile.
    pub fn dirty(&self) -> &Arc<Dirty> {
        &self.dirty
    }

    /// The namespaces that appeared or changed since the initial list, for the new-namespace path.
    pub fn new_namespaces(&self) -> &Arc<Dirty> {
        &self.new_namespaces
    }

    /// Completes once all five caches hold their initial lists: true, or false if one stopped first.
    pub fn ready(&self) -> Shared<BoxFuture<'static, bool>> {
        self.ready.clone()
    }

    /// Whether all five caches hold their initial lists now.
    pub fn is_ready(&self) -> bool {
        self.ready.clone().now_or_never() == Some(true)
    }

    /// The profiles that select a namespace or hold a Secret in it: one lookup per profile, so a namespace event
    /// costs O(profiles) whatever the number of managed Secrets.
    pub fn profiles_for_namespace(&self, ns: &NamespaceInfo) -> Vec<String> {
        self.profiles_and_meanings()
            .into_iter()
            .filter(|(_, m)| self.managed.contains(&ns.name, &m.secret_name) || m.selects(ns))
            .map(|(_, m)| m.name.clone())
            .collect()
    }

    /// The profiles a ServiceAccount concerns: those that recorded an entry on it, and those in ServiceAccount mode
    /// that select its namespace and name it.
    pub fn profiles_for_service_account(&self, sa: &ServiceAccount) -> Vec<String> {
        let mut names: Vec<String> = service_accounts::record_of(sa).into_keys().collect();
        let Some(namespace) = sa.namespace().and_then(|ns| self.namespace(&ns)) else { return names };
        let account = sa.name_any();
        names.extend(
            self.profiles_and_meanings()
                .into_iter()
                .filter(|(p, m)| {
                    p.spec.service_accounts.as_ref().is_some_and(|s| service_accounts::names_match(&s.names, &account))
                        && m.selects(&namespace)
                })
                .map(|(_, m)| m.name.clone()),
        );
        names
    }

    /// `profile` and every other profile that writes a Secret of the name it writes now or wrote before (its
    /// meaning compiled for an earlier generation).
    fn profile_and_rivals(&self, profile: &RegistryProfile) -> Vec<String> {
        let name = profile.name_any();
        let previous = lock(&self.meanings).get(&name).map(|m| m.secret_name.clone());
        let current = crate::names::secret_name(profile);
        let mut names = vec![name.clone()];
        names.extend(
            self.profiles_and_meanings()
                .into_iter()
                .filter(|(_, m)| {
                    m.name != name && (m.secret_name == current || Some(&m.secret_name) == previous.as_ref())
                })
                .map(|(_, m)| m.name.clone()),
        );
        names
    }

    /// regcred's own namespace.
    pub fn operator_namespace(&self) -> &str {
        &self.operator_namespace
    }

    /// What `profile` means, compiled at most once per generation.
    pub fn meaning(&self, profile: &RegistryProfile) -> Arc<Meaning> {
        self.meaning_in(&mut lock(&self.meanings), profile)
    }

    /// Every profile in the view with its meaning. Meanings of profiles no longer in the view are dropped.
    pub fn profiles_and_meanings(&self) -> Vec<(Arc<RegistryProfile>, Arc<Meaning>)> {
        let profiles = self.profiles();
        let mut meanings = lock(&self.meanings);
        if meanings.len() > profiles.len() {
            let names: HashSet<String> = profiles.iter().map(|p| p.name_any()).collect();
            meanings.retain(|n, _| names.contains(n));
        }
        profiles
            .into_iter()
            .map(|p| {
                let m = self.meaning_in(&mut meanings, &p);
                (p, m)
            })
            .collect()
    }

    /// `profile`'s meaning from `meanings`, compiled (and kept there) when it holds none for this generation.
    fn meaning_in(&self, meanings: &mut HashMap<String, Arc<Meaning>>, profile: &RegistryProfile) -> Arc<Meaning> {
        let name = profile.name_any();
        if let Some(m) = meanings.get(&name).filter(|m| m.is_of(profile)) {
            return m.clone();
        }
        let m = Arc::new(Meaning::of(profile, &self.operator_namespace));
        meanings.insert(name, m.clone());
        m
    }

    /// The namespace as the caches know it.
    pub fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.namespaces.get(name)
    }
}

/// What a reconcile reads of a profile itself, besides its spec's generation: everything but its status (and the
/// resourceVersion every write bumps). A profile event that changes none of it, the echo of the status this
/// replica wrote above all, marks nothing; a status edited by someone else is rewritten at the next periodic
/// reconcile (see `controller::requeue_after`).
#[derive(Clone, Debug, PartialEq)]
struct ProfileInputs {
    uid: Option<String>,
    generation: Option<i64>,
    deleting: bool,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

impl ProfileInputs {
    fn of(p: &RegistryProfile) -> Self {
        Self {
            uid: p.metadata.uid.clone(),
            generation: p.metadata.generation,
            deleting: p.metadata.deletion_timestamp.is_some(),
            labels: p.labels().clone(),
            annotations: p.annotations().clone(),
        }
    }
}

/// The token refresher of a view whose mints mark their profile in `dirty`.
fn refresher(dirty: &Arc<Dirty>, refresh_fraction: f64, identity: Arc<Identity>) -> Arc<Refresher> {
    let marks = dirty.clone();
    Arc::new(Refresher::new(Arc::new(move |p: &str| marks.mark([p.to_owned()])), refresh_fraction, identity))
}

/// How long reconciles triggered by namespace events wait for more of them.
const SETTLE: Duration = Duration::from_millis(500);

/// The window of a trickle: namespace events that keep coming mark their profiles at most once in this long. It is
/// the controller's status settle window (`controller::STATUS_SETTLE`, which is this constant): a change of counts
/// alone is written at most once per window, so a reconcile per window is all a trickle of namespaces that the
/// new-namespace path already served needs. A namespace that appears is served at once whatever this says; what
/// waits is what only a reconcile does for it (a Secret to remove after a label change, its count in status).
pub const SETTLE_WINDOW: Duration = Duration::from_secs(5);

/// How long the namespace events of a batch wait before marking their profiles, `since_last` the last batch
/// marked them: [`SETTLE`] after a quiet spell, else until [`SETTLE_WINDOW`] has passed since the last batch.
fn settle_wait(since_last: Option<Duration>) -> Duration {
    since_last.map_or(SETTLE, |since| SETTLE_WINDOW.saturating_sub(since).max(SETTLE))
}

/// The three indexes that grow with the cluster, each with its ready flag and its watch's events (the
/// ServiceAccounts' first following). One interner for all three: each namespace's name is held once.
struct Grown {
    namespaces: (Namespaces, watch::Receiver<bool>, Events<PartialObjectMeta<Namespace>>),
    managed: (ManagedSecrets, watch::Receiver<bool>, Events<WatchedSecret>),
    service_accounts: (ServiceAccounts, watch::Receiver<bool>, Events<ServiceAccount>),
}

/// A following of every ServiceAccount into `index` (see [`ServiceAccounts::begin`]): its ready flag and events.
fn service_accounts_watch(client: &Client, index: &ServiceAccounts) -> (watch::Receiver<bool>, Events<ServiceAccount>) {
    let generation = index.begin();
    let (ready, events) = indexed(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        (index.clone(), generation),
        |(index, generation), event| index.apply_of(*generation, event),
    );
    (ready, events.boxed())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Grown {
    fn open(client: &Client) -> Self {
        let strings = compact::Strings::default();
        let namespaces = Namespaces::with_strings(strings.clone());
        let (ns_ready, ns_events) = indexed(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            namespaces.clone(),
            |index, event| {
                index.apply(event);
                true
            },
        );
        let managed = ManagedSecrets::with_strings(strings.clone());
        let managed_config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let (managed_ready, managed_events) =
            indexed(Api::<WatchedSecret>::all(client.clone()), managed_config, managed.clone(), ManagedSecrets::apply);
        let service_accounts = ServiceAccounts::with_strings(strings);
        let (sa_ready, sa_events) = service_accounts_watch(client, &service_accounts);
        Self {
            namespaces: (namespaces, ns_ready, ns_events.boxed()),
            managed: (managed, managed_ready, managed_events.boxed()),
            service_accounts: (service_accounts, sa_ready, sa_events),
        }
    }
}

/// What feeds a [`View::detached`].
pub struct Feeds {
    pub profiles: reflector::store::Writer<RegistryProfile>,
    pub sources: reflector::store::Writer<Secret>,
}

/// Source Secrets come from the view of regcred's own namespace.
impl Sources for View {
    fn namespace(&self) -> &str {
        &self.operator_namespace
    }
    fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.sources.get(&reflector::ObjectRef::new(name).within(&self.operator_namespace))
    }
}

/// One reflector: a store of `K` kept current by a watch (`modify` applied to each object before it is stored),
/// a flag set once the initial list is in, and the stream of its watch events (after the store has applied each).
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, watch::Receiver<bool>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let ready = watch::channel(false).0;
    let flag = ready.subscribe();
    let events = watcher(api, config).default_backoff().modify(modify).reflect(writer).inspect(ready_on_init(&ready));
    (store, flag, events)
}

/// A watch feeding one of the compact indexes instead of a reflector store (`apply` applies each event to
/// `index`, and says whether it told the index anything); like [`reflected`], with a ready flag and the stream of
/// the watch events that did (after the index has applied each).
fn indexed<K, I>(
    api: Api<K>,
    config: watcher::Config,
    index: I,
    apply: fn(&I, &watcher::Event<K>) -> bool,
) -> (watch::Receiver<bool>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    I: Send + 'static,
{
    let ready = watch::channel(false).0;
    let flag = ready.subscribe();
    let events = watcher(api, config)
        .default_backoff()
        .filter(move |event| futures::future::ready(event.as_ref().map_or(true, |event| apply(&index, event))))
        .inspect(ready_on_init(&ready));
    (flag, events)
}

/// Marks a cache ready once its reflector has applied the initial list.
fn ready_on_init<K>(ready: &watch::Sender<bool>) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let ready = ready.clone();
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            ready.send_replace(true);
        }
    }
}

/// One future, any number of waiters: true once every flag is set, false if one's sender went away first.
///
/// Readiness comes from the watch streams themselves, not from `Store::wait_until_ready`: that wakes only the
/// last of several concurrent waiters (its oneshot receiver keeps a single waker), and kube-runtime's Controller
/// already waits on the profile store, so any wait of ours on it could starve the Controller or us.
fn all_ready(flags: Vec<watch::Receiver<bool>>) -> Shared<BoxFuture<'static, bool>> {
    async move {
        for mut flag in flags {
            if flag.wait_for(|ready| *ready).await.is_err() {
                return false;
            }
        }
        true
    }
    .boxed()
    .shared()
}

pub(crate) fn namespace_info(ns: &PartialObjectMeta<Namespace>) -> NamespaceInfo {
    NamespaceInfo {
        name: ns.name_any(),
        labels: ns.labels().clone(),
        terminating: ns.metadata.deletion_timestamp.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event as WatchEvent;

    #[test]
    fn a_profile_event_that_changes_only_its_status_is_no_input() {
        type Edit = fn(&mut RegistryProfile);
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let base = crate::fixtures::profile(
            "p",
            serde_json::json!({"server": "r.example.com", "credentials": {"anonymous": true}}),
        );
        let edits: [(Edit, bool, &str); 7] = [
            (|p| p.status = Some(crate::api::RegistryProfileStatus::default()), false, "status"),
            (|p| p.metadata.resource_version = Some("11".into()), false, "resourceVersion"),
            (|p| p.metadata.generation = Some(4), true, "spec (generation)"),
            (|p| p.metadata.uid = Some("u2".into()), true, "re-created"),
            (|p| drop(p.labels_mut().insert("team".into(), "b".into())), true, "labels"),
            (
                |p| drop(p.annotations_mut().insert("regcred.dev/confirm-deletions".into(), "3".into())),
                true,
                "annotations",
            ),
            (|p| p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH)), true, "deleting"),
        ];
        for (edit, input, case) in edits {
            let mut p = base.clone();
            edit(&mut p);
            assert_eq!(ProfileInputs::of(&p) != ProfileInputs::of(&base), input, "{case}");
        }
    }

    #[test]
    fn namespace_events_mark_their_profiles_soon_after_a_quiet_spell_and_once_per_window_in_a_trickle() {
        let ms = Duration::from_millis;
        for (since_last, wait, case) in [
            (None, SETTLE, "the first batch"),
            (Some(ms(60_000)), SETTLE, "after a quiet spell"),
            (Some(SETTLE_WINDOW), SETTLE, "a window after the last"),
            (Some(ms(500)), ms(4_500), "a trickle: until a window after the last"),
            (Some(ms(4_800)), SETTLE, "never less than SETTLE"),
            (Some(Duration::ZERO), SETTLE_WINDOW, "right after the last"),
        ] {
            assert_eq!(settle_wait(since_last), wait, "{case}");
        }
    }

    /// Regression: reconciles that started waiting for the caches before they were ready were never woken when
    /// several waited at once (and kube-runtime's Controller waits on the profile store too).
    #[tokio::test]
    async fn every_concurrent_waiter_is_released_when_the_caches_are_ready() {
        let (profiles, mut profiles_writer) = reflector::store::<RegistryProfile>();
        let senders: Vec<_> = (0..5).map(|_| watch::channel(false).0).collect();
        let ready = all_ready(senders.iter().map(watch::Sender::subscribe).collect());
        // The Controller's own wait on the store, alongside ours; each is polled once, so each is waiting.
        let mut controller_wait = Box::pin(profiles.wait_until_ready());
        assert!(futures::poll!(&mut controller_wait).is_pending());
        let mut waiters: Vec<_> = (0..4).map(|_| ready.clone()).collect();
        for waiter in &mut waiters {
            assert!(futures::poll!(waiter).is_pending(), "ready before the caches are");
        }
        profiles_writer.apply_watcher_event(&WatchEvent::InitDone);
        let mut mark = ready_on_init::<RegistryProfile>(&senders[0]);
        mark(&Ok(WatchEvent::InitDone));
        for s in &senders[1..] {
            s.send_replace(true);
        }
        for waiter in waiters {
            let released = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert_eq!(released, Ok(true), "a waiter was not released");
        }
        let released = tokio::time::timeout(Duration::from_secs(5), controller_wait).await;
        assert!(matches!(released, Ok(Ok(()))), "the Controller's wait was not released: {released:?}");
    }

    #[tokio::test]
    async fn a_dropped_cache_fails_the_wait_instead_of_hanging() {
        let senders: Vec<_> = (0..5).map(|_| watch::channel(false).0).collect();
        let ready = all_ready(senders.iter().map(watch::Sender::subscribe).collect());
        drop(senders);
        let released = tokio::time::timeout(Duration::from_secs(5), ready).await;
        assert_eq!(released, Ok(false));
    }
}
