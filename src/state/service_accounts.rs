//! The cluster's ServiceAccounts as ServiceAccount mode reads them, and the record regcred keeps on each.
//!
//! The index is filled only while the view follows ServiceAccounts: while a profile uses ServiceAccount mode or
//! an account holds an entry of regcred's to remove (see `View::follow_service_accounts`). Every namespace has an
//! account, and following them all costs a watch event per new namespace and memory per namespace, which a
//! cluster that never uses the mode should not pay. Each following is a generation of the index: the events of
//! an earlier one, still in flight when it ended, change nothing.
//!
//! Which `imagePullSecrets` entries are regcred's is recorded on the ServiceAccount in the [`RECORD_ANNOTATION`]
//! (`profile=secret` pairs): an entry someone else put there is never recorded, so it is never removed. What a
//! profile wants of an account, and the patch that gets it there, are the controller's
//! (`controller::service_accounts`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::ResourceExt;
use kube::runtime::watcher;

use super::compact::{self, Interner, Strings};

/// The entries regcred added to a ServiceAccount, as `profile=secret` pairs separated by commas.
pub const RECORD_ANNOTATION: &str = "regcred.dev/image-pull-secrets";

/// Parses the record annotation; malformed pairs are ignored (they name nothing regcred could remove safely).
pub fn parse_record(value: Option<&str>) -> BTreeMap<String, String> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(p, s)| !p.is_empty() && !s.is_empty())
        .map(|(p, s)| (p.trim().to_owned(), s.trim().to_owned()))
        .collect()
}

/// The entries regcred recorded on a ServiceAccount (see [`parse_record`]).
pub fn record_of(sa: &ServiceAccount) -> BTreeMap<String, String> {
    parse_record(sa.annotations().get(RECORD_ANNOTATION).map(String::as_str))
}

/// The record annotation's value for `record` (`None`: no entries, no annotation).
pub fn render_record(record: &BTreeMap<String, String>) -> Option<String> {
    (!record.is_empty()).then(|| record.iter().map(|(p, s)| format!("{p}={s}")).collect::<Vec<_>>().join(","))
}

pub use crate::resolve::selection::names_match;

/// What is kept of one ServiceAccount: only what ServiceAccount mode reads.
struct Account {
    /// The guard of every patch.
    resource_version: Option<Box<str>>,
    image_pull_secrets: Box<[Arc<str>]>,
    /// regcred's record annotation, as written (interned: most accounts carry the same one).
    record: Option<Arc<str>>,
}

impl Account {
    #[expect(clippy::unnecessary_wraps, reason = "the shape compact::Shared::apply takes for every index")]
    fn of(strings: &mut Interner, sa: &ServiceAccount) -> Option<Self> {
        let pulls = sa.image_pull_secrets.iter().flatten().map(|r| strings.intern(&r.name)).collect();
        Some(Self {
            resource_version: sa.metadata.resource_version.as_deref().map(Box::from),
            image_pull_secrets: pulls,
            record: sa.annotations().get(RECORD_ANNOTATION).map(|r| strings.intern(r)),
        })
    }

    /// The account as an object again, with only what was kept.
    fn to_object(&self, namespace: &str, name: &str) -> ServiceAccount {
        let pulls: Vec<LocalObjectReference> =
            self.image_pull_secrets.iter().map(|n| LocalObjectReference { name: n.to_string() }).collect();
        ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                resource_version: self.resource_version.as_deref().map(str::to_owned),
                annotations: self.record.as_ref().map(|r| [(RECORD_ANNOTATION.to_owned(), r.to_string())].into()),
                ..Default::default()
            },
            image_pull_secrets: (!pulls.is_empty()).then_some(pulls),
            ..Default::default()
        }
    }
}

/// The cluster's ServiceAccounts in a [`compact`] index (every namespace has at least `default`: 10,000
/// namespaces, 10,000 accounts). Cheap to clone.
#[derive(Clone, Default)]
pub struct ServiceAccounts {
    index: compact::Shared<Account>,
    /// The following whose events the index takes (see [`ServiceAccounts::begin`]).
    generation: Arc<AtomicU64>,
}

impl ServiceAccounts {
    /// An empty index interning into `strings`, shared with the view's other indexes.
    pub fn with_strings(strings: Strings) -> Self {
        Self { index: compact::Shared::with_strings(strings), generation: Arc::default() }
    }

    /// Applies one watch event (whatever the generation: for an index fed by hand).
    pub fn apply(&self, event: &watcher::Event<ServiceAccount>) {
        self.index.apply(event, Account::of);
    }

    /// A new following begins: from now on only events applied with the generation returned change the index.
    pub fn begin(&self) -> u64 {
        let _index = self.index.write();
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Applies one event of the following `generation`; an event of an ended following changes nothing. Says
    /// whether it was applied.
    pub fn apply_of(&self, generation: u64, event: &watcher::Event<ServiceAccount>) -> bool {
        let mut index = self.index.write();
        let current = self.generation.load(Ordering::SeqCst) == generation;
        if current {
            index.apply(event, Account::of);
        }
        current
    }

    /// The following ends: the index is emptied, and the events still in flight change nothing.
    pub fn end(&self) {
        let mut index = self.index.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        index.clear();
    }

    /// Whether any account holds an entry of regcred's (of any profile): one that must be removed when its
    /// profile goes or leaves ServiceAccount mode.
    pub fn any_recorded(&self) -> bool {
        self.index.read().iter().any(|(_, _, account)| account.record.is_some())
    }

    /// Visits every cached account (as an object holding only what the cache keeps: name, namespace,
    /// resourceVersion, `imagePullSecrets` and regcred's record) and collects what `f` returns for them. One
    /// account is rebuilt at a time, so a visit costs no more memory than what `f` keeps. `f` runs under the
    /// cache's read lock: it must not wait on anything.
    pub fn filter_map<T>(&self, mut f: impl FnMut(ServiceAccount) -> Option<T>) -> Vec<T> {
        self.index.read().iter().filter_map(|(ns, name, account)| f(account.to_object(ns, name))).collect()
    }

    /// [`ServiceAccounts::filter_map`] over the accounts of `namespace` alone.
    pub fn filter_map_in<T>(&self, namespace: &str, mut f: impl FnMut(ServiceAccount) -> Option<T>) -> Vec<T> {
        let index = self.index.read();
        index.in_namespace(namespace).filter_map(|(name, account)| f(account.to_object(namespace, name))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::{record as rec, refs};

    #[test]
    fn the_record_parser_ignores_malformed_pairs() {
        assert_eq!(parse_record(Some("p=pull, q = x ,junk,=y,z=")), rec(&[("p", "pull"), ("q", "x")]));
        assert_eq!(parse_record(None), rec(&[]));
        assert_eq!(render_record(&rec(&[("b", "2"), ("a", "1")])).as_deref(), Some("a=1,b=2"));
    }

    #[test]
    fn the_cache_keeps_what_service_account_mode_reads_and_nothing_else() {
        let cache = ServiceAccounts::default();
        let full = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("default".into()),
                namespace: Some("shop".into()),
                resource_version: Some("42".into()),
                uid: Some("u".into()),
                labels: Some([("a".to_owned(), "b".to_owned())].into()),
                annotations: Some(
                    [(RECORD_ANNOTATION.to_owned(), "p=pull".to_owned()), ("other".to_owned(), "x".to_owned())].into(),
                ),
                ..Default::default()
            },
            image_pull_secrets: Some(refs(&["theirs", "pull"])),
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        cache.apply(&watcher::Event::Apply(full.clone()));
        let cached = cache.filter_map(Some);
        assert_eq!(cached.len(), 1);
        let sa = &cached[0];
        assert_eq!(
            (sa.name_any(), sa.namespace(), sa.resource_version()),
            (full.name_any(), full.namespace(), full.resource_version())
        );
        assert_eq!(sa.image_pull_secrets, full.image_pull_secrets);
        assert_eq!(record_of(sa), record_of(&full));
        assert_eq!(sa.annotations().len(), 1, "only regcred's record is kept");
        assert!(
            sa.metadata.uid.is_none() && sa.metadata.labels.is_none() && sa.automount_service_account_token.is_none()
        );

        // Without pull secrets or a record, the account reads back without them.
        let bare = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("builder".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        cache.apply(&watcher::Event::Apply(bare));
        let builder = cache.filter_map(|sa| (sa.name_any() == "builder").then_some(sa));
        assert_eq!(builder[0].image_pull_secrets, None);
        assert!(builder[0].metadata.annotations.is_none());
        assert_eq!(cache.index.read().len(), 2);
    }

    #[test]
    fn a_following_that_ended_changes_nothing_and_its_index_is_emptied() {
        let cache = ServiceAccounts::default();
        let account = |name: &str, record: Option<&str>| ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                annotations: record.map(|r| [(RECORD_ANNOTATION.to_owned(), r.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let first = cache.begin();
        assert!(cache.apply_of(first, &watcher::Event::Apply(account("default", None))));
        assert!(!cache.any_recorded());
        assert!(cache.apply_of(first, &watcher::Event::Apply(account("ci", Some("p=pull")))));
        assert!(cache.any_recorded(), "an entry of regcred's to remove");
        cache.end();
        assert_eq!(cache.index.read().len(), 0, "emptied when the following ends");
        assert!(!cache.any_recorded());
        assert!(!cache.apply_of(first, &watcher::Event::Apply(account("late", None))), "an event still in flight");
        assert_eq!(cache.index.read().len(), 0);
        let second = cache.begin();
        assert!(!cache.apply_of(first, &watcher::Event::Apply(account("late", None))), "an earlier following's");
        assert!(cache.apply_of(second, &watcher::Event::Apply(account("default", None))));
        assert_eq!(cache.filter_map(|sa| Some(sa.name_any())), ["default"]);
    }

    #[test]
    fn account_names_match_with_globs() {
        let pats = vec!["default".to_owned(), "ci-*".to_owned()];
        assert!(names_match(&pats, "default"));
        assert!(names_match(&pats, "ci-runner"));
        assert!(!names_match(&pats, "builder"));
        assert!(names_match(&["*".to_owned()], "anything"));
    }
}
