//! The namespaces as selection reads them, and nothing more: each namespace's name, labels and whether it is
//! being deleted, in a [`compact`] index (every name, label key and value interned; the
//! `kubernetes.io/metadata.name` label shares its namespace's name). About 100 bytes a namespace, where a
//! reflector store of metadata kept well over a kilobyte.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::compact::{self, Interner};
use crate::resolve::selection::{CompiledSelection, NamespaceInfo};

/// What is kept of one namespace.
struct Entry {
    /// Sorted by key (see [`crate::resolve::selection::Labels`]).
    labels: Box<[(Arc<str>, Arc<str>)]>,
    terminating: bool,
}

impl Entry {
    #[expect(clippy::unnecessary_wraps, reason = "the shape compact::Shared::apply takes for every index")]
    fn of(strings: &mut Interner, ns: &PartialObjectMeta<Namespace>) -> Option<Self> {
        // A BTreeMap iterates in key order: the pairs come out sorted.
        let labels = ns.labels().iter().map(|(k, v)| (strings.intern(k), strings.intern(v))).collect();
        Some(Self { labels, terminating: ns.metadata.deletion_timestamp.is_some() })
    }
}

/// The index, shared by the controller and the webhook. Cheap to clone.
#[derive(Clone, Default)]
pub struct Namespaces {
    index: compact::Shared<Entry>,
}

impl Namespaces {
    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Namespace>>) {
        self.index.apply(event, Entry::of);
    }

    /// One namespace, as the selection sees it.
    pub fn get(&self, name: &str) -> Option<NamespaceInfo> {
        let index = self.index.read();
        let entry = index.get("", name)?;
        Some(NamespaceInfo {
            name: name.to_owned(),
            labels: entry.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            terminating: entry.terminating,
        })
    }

    /// The names of the namespaces `selection` selects.
    pub fn selected_by(&self, selection: &CompiledSelection) -> BTreeSet<String> {
        self.index
            .read()
            .iter()
            .filter(|(_, name, e)| selection.selects_parts(name, &*e.labels, e.terminating))
            .map(|(_, name, _)| name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamespaceSelection;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use kube::api::ObjectMeta;

    fn ns(name: &str, labels: &[(&str, &str)], terminating: bool) -> PartialObjectMeta<Namespace> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
                deletion_timestamp: terminating.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn selection_over_the_index_matches_selection_over_the_objects() {
        let index = Namespaces::default();
        let objects = [
            ns("a", &[("team", "red"), ("kubernetes.io/metadata.name", "a")], false),
            ns("b", &[("team", "blue")], false),
            ns("c", &[("team", "red")], true),
            ns("kube-system", &[("team", "red")], false),
        ];
        index.apply(&watcher::Event::Init);
        for o in &objects {
            index.apply(&watcher::Event::InitApply(o.clone()));
        }
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.index.read().len(), 4);
        let spec = NamespaceSelection {
            selector: Some(LabelSelector {
                match_labels: Some([("team".to_owned(), "red".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let selection = CompiledSelection::new(&spec, "regcred").unwrap();
        assert_eq!(index.selected_by(&selection), BTreeSet::from(["a".to_owned()]));
        let info = index.get("a").unwrap();
        assert_eq!(info.labels.get("team").map(String::as_str), Some("red"));
        assert_eq!(info.labels.len(), 2);
        assert!(index.get("c").unwrap().terminating);
        for o in &objects {
            let info = index.get(&o.name_any()).unwrap();
            assert_eq!(selection.selects(&info), index.selected_by(&selection).contains(&info.name));
        }

        // Relabelled, then deleted.
        index.apply(&watcher::Event::Apply(ns("b", &[("team", "red")], false)));
        assert_eq!(index.selected_by(&selection).len(), 2);
        index.apply(&watcher::Event::Delete(ns("b", &[], false)));
        assert!(index.get("b").is_none());
    }
}
