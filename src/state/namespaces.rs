//! The namespaces as selection reads them, and nothing more: each namespace's name, labels and whether it is
//! being deleted, in a [`compact`] index (every name, label key and value interned). The labels are kept as a
//! label set shared by every namespace labelled alike, less the `kubernetes.io/metadata.name` label the apiserver
//! gives every namespace (its value is the name, known from the key): a namespace whose other labels are like
//! its neighbours' costs no label storage of its own. About 100 bytes a namespace, where a reflector store of
//! metadata kept well over a kilobyte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::compact::{self, Interner, LabelSet, NameSet, Strings};
use crate::resolve::selection::{CompiledSelection, Labels, NamespaceInfo};

/// The label the apiserver sets on every namespace, whose value is the namespace's name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What is kept of one namespace.
struct Entry {
    /// Sorted by key (see [`crate::resolve::selection::Labels`]), without [`NAME_LABEL`] when `named`; shared.
    labels: LabelSet,
    /// Whether the namespace carries [`NAME_LABEL`] with its own name as value.
    named: bool,
    terminating: bool,
}

impl Entry {
    #[expect(clippy::unnecessary_wraps, reason = "the shape compact::Shared::apply takes for every index")]
    fn of(strings: &mut Interner, ns: &PartialObjectMeta<Namespace>) -> Option<Self> {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        let named = ns.labels().get(NAME_LABEL).is_some_and(|v| v == name);
        // A BTreeMap iterates in key order: the pairs come out sorted.
        let pairs = ns
            .labels()
            .iter()
            .filter(|(k, _)| !(named && k.as_str() == NAME_LABEL))
            .map(|(k, v)| (strings.intern(k), strings.intern(v)))
            .collect();
        Some(Self {
            labels: strings.intern_labels(pairs),
            named,
            terminating: ns.metadata.deletion_timestamp.is_some(),
        })
    }

    /// The namespace `name`'s labels, as selection reads them.
    fn labels<'a>(&'a self, name: &'a str) -> Named<'a> {
        Named { name, entry: self }
    }
}

/// One namespace's labels: the shared set, and [`NAME_LABEL`] from the name.
struct Named<'a> {
    name: &'a str,
    entry: &'a Entry,
}

impl Labels for Named<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        if self.entry.named && key == NAME_LABEL {
            return Some(self.name);
        }
        self.entry.labels.label(key)
    }
}

/// The index, shared by the controller and the webhook. Cheap to clone.
#[derive(Clone, Default)]
pub struct Namespaces {
    index: compact::Shared<Entry>,
    /// What a namespace looked like before its labels (or its deletion) changed, until the view's watch takes it
    /// ([`Namespaces::take_previous`]): a profile that selected it before and holds nothing there (delivery
    /// `CredentialProvider`) hears of the change only through these.
    previous: Arc<Mutex<HashMap<String, NamespaceInfo>>>,
}

impl Namespaces {
    /// An empty index interning into `strings`, shared with the view's other indexes.
    pub fn with_strings(strings: Strings) -> Self {
        Self { index: compact::Shared::with_strings(strings), previous: Arc::default() }
    }

    /// Applies one watch event, remembering what a changed namespace looked like before.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Namespace>>) {
        if let watcher::Event::Apply(ns) | watcher::Event::Delete(ns) = event {
            let name = ns.name_any();
            if let Some(before) = self.get(&name) {
                let labels_now = |k: &String, v: &String| ns.labels().get(k) == Some(v);
                let changed = matches!(event, watcher::Event::Delete(_))
                    || before.labels.len() != ns.labels().len()
                    || !before.labels.iter().all(|(k, v)| labels_now(k, v));
                if changed {
                    self.previous.lock().unwrap_or_else(PoisonError::into_inner).insert(name, before);
                }
            }
        }
        self.index.apply(event, Entry::of);
    }

    /// What the namespace `name` looked like before its last change, once.
    pub fn take_previous(&self, name: &str) -> Option<NamespaceInfo> {
        self.previous.lock().unwrap_or_else(PoisonError::into_inner).remove(name)
    }

    /// One namespace, as the selection sees it.
    pub fn get(&self, name: &str) -> Option<NamespaceInfo> {
        let index = self.index.read();
        let entry = index.get("", name)?;
        let own = entry.named.then(|| (NAME_LABEL.to_owned(), name.to_owned()));
        Some(NamespaceInfo {
            name: name.to_owned(),
            labels: entry.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(own).collect(),
            terminating: entry.terminating,
        })
    }

    /// The names of the namespaces `selection` selects: the index's own copies, no name copied.
    pub fn selected_by(&self, selection: &CompiledSelection) -> NameSet {
        let index = self.index.read();
        let mut names = Vec::with_capacity(index.len());
        names.extend(
            index
                .iter()
                .filter(|(_, name, e)| selection.selects_parts(name, &e.labels(name), e.terminating))
                .map(|(_, name, _)| name.clone()),
        );
        NameSet::from(names)
    }

    /// Those of `names` that `selection` selects, as [`Namespaces::selected_by`] finds them.
    pub fn selected_among<'a>(
        &self,
        selection: &CompiledSelection,
        names: impl IntoIterator<Item = &'a str>,
    ) -> NameSet {
        let index = self.index.read();
        names
            .into_iter()
            .filter_map(|name| index.get_named("", name))
            .filter(|(name, e)| selection.selects_parts(name, &e.labels(name), e.terminating))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamespaceSelection;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;
    use std::sync::Arc;

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

    fn names(v: &[&str]) -> NameSet {
        v.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn a_namespace_remembers_its_labels_from_before_a_change_once() {
        let index = Namespaces::default();
        let apply = |labels: &[(&str, &str)]| index.apply(&watcher::Event::Apply(ns("team", labels, false)));
        apply(&[("pull", "yes")]);
        assert_eq!(index.take_previous("team"), None, "new: nothing before");
        apply(&[("pull", "yes")]);
        assert_eq!(index.take_previous("team"), None, "the same labels: no change");
        apply(&[("pull", "yes"), ("other", "x")]);
        let before = index.take_previous("team").expect("a label added");
        assert_eq!(before.labels.get("pull").map(String::as_str), Some("yes"));
        assert!(!before.labels.contains_key("other"));
        apply(&[]);
        assert!(index.take_previous("team").is_some_and(|b| b.labels.contains_key("other")), "labels removed");
        assert_eq!(index.take_previous("team"), None, "taken once");
        index.apply(&watcher::Event::Delete(ns("team", &[], false)));
        assert!(index.take_previous("team").is_some(), "deleted");
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
        assert_eq!(index.selected_by(&selection), names(&["a"]));
        let info = index.get("a").unwrap();
        assert_eq!(info.labels.get("team").map(String::as_str), Some("red"));
        assert_eq!(info.labels.len(), 2);
        assert!(index.get("c").unwrap().terminating);
        for o in &objects {
            let info = index.get(&o.name_any()).unwrap();
            assert_eq!(selection.selects(&info), index.selected_by(&selection).contains(&info.name));
        }

        // The names are the index's own copies; among a few names, the same answer.
        let selected = index.selected_by(&selection);
        assert!(Arc::ptr_eq(
            selected.iter().next().unwrap(),
            index.index.read().iter().find(|e| &**e.1 == "a").unwrap().1
        ));
        let among = |v: &[&str]| index.selected_among(&selection, v.iter().copied());
        assert_eq!(among(&["a", "b", "c", "kube-system", "unknown"]), names(&["a"]));
        assert_eq!(among(&["b"]), names(&[]));

        // Relabelled, then deleted.
        index.apply(&watcher::Event::Apply(ns("b", &[("team", "red")], false)));
        assert_eq!(index.selected_by(&selection), names(&["a", "b"]));
        assert_eq!(among(&["b", "a"]), names(&["a", "b"]));
        index.apply(&watcher::Event::Delete(ns("b", &[], false)));
        assert!(index.get("b").is_none());
    }

    #[test]
    fn the_name_label_comes_from_the_name_and_alike_namespaces_share_one_label_set() {
        let index = Namespaces::default();
        for name in ["a", "b"] {
            index.apply(&watcher::Event::Apply(ns(name, &[("team", "red"), (NAME_LABEL, name)], false)));
        }
        // Not as the apiserver writes it: kept as it is.
        index.apply(&watcher::Event::Apply(ns("odd", &[("team", "red"), (NAME_LABEL, "other")], false)));
        index.apply(&watcher::Event::Apply(ns("bare", &[("team", "red")], false)));
        {
            let read = index.index.read();
            let (a, b) = (read.get("", "a").unwrap(), read.get("", "b").unwrap());
            assert!(Arc::ptr_eq(&a.labels, &b.labels), "alike namespaces do not share their label set");
            assert!(a.named && !read.get("", "odd").unwrap().named && !read.get("", "bare").unwrap().named);
            assert_eq!(read.strings.lock().label_sets(), 2, "one set for a, b and bare, one for odd");
        }
        let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert_eq!(index.get("a").unwrap().labels, want(&[("team", "red"), (NAME_LABEL, "a")]));
        assert_eq!(index.get("odd").unwrap().labels, want(&[("team", "red"), (NAME_LABEL, "other")]));
        assert_eq!(index.get("bare").unwrap().labels, want(&[("team", "red")]));
        let by_name = |selector: LabelSelector| {
            let spec = NamespaceSelection { selector: Some(selector), ..Default::default() };
            index.selected_by(&CompiledSelection::new(&spec, "regcred").unwrap())
        };
        let equal = LabelSelector { match_labels: Some(want(&[(NAME_LABEL, "b")])), ..Default::default() };
        assert_eq!(by_name(equal), names(&["b"]));
        let other = LabelSelector { match_labels: Some(want(&[(NAME_LABEL, "other")])), ..Default::default() };
        assert_eq!(by_name(other), names(&["odd"]));
        let without = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAME_LABEL.to_owned(),
                operator: "DoesNotExist".to_owned(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(by_name(without), names(&["bare"]));
        for name in ["a", "b", "odd", "bare"] {
            index.apply(&watcher::Event::Delete(ns(name, &[], false)));
        }
        assert!(index.index.read().is_empty());
    }
}
