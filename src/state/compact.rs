//! The shape shared by regcred's compact caches: a map from namespace to name to a small entry, kept current by
//! a watch, with every string interned.
//!
//! A kube-runtime reflector store keeps each object whole (its metadata alone is several hundred bytes, a label
//! map at least one B-tree node of about 550 bytes). At 10,000 namespaces the namespace and ServiceAccount stores
//! cost about 2 KiB per namespace and the managed Secrets far more. The caches built on this keep only what the
//! controller reads, and share each string (a namespace's name, a label key, `default`, a profile's name) between
//! every entry that uses it, in every cache: the view's three indexes intern into one [`Strings`], so a
//! namespace's name is held once however many caches file something under it (heaptrack at 10,000 namespaces:
//! three copies of each name and their interners' tables were 1.4 MiB of the 7.8 MiB the indexes held).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::Resource;
use kube::runtime::watcher;

/// A sorted set of label pairs, shared by every namespace labelled alike.
pub type LabelSet = Arc<[(Arc<str>, Arc<str>)]>;

/// Strings (and label sets) shared by every entry that uses them, released with their last user.
#[derive(Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    label_sets: HashSet<LabelSet>,
    lists: HashSet<Arc<[Arc<str>]>>,
}

/// One [`Interner`] shared by several indexes. Locked only while an index applies an event, after that index's
/// own lock, and never while waiting for another lock.
#[derive(Clone, Default)]
pub struct Strings(Arc<Mutex<Interner>>);

impl Strings {
    /// The interner, for one event.
    pub fn lock(&self) -> MutexGuard<'_, Interner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The shared copy of the label set `pairs` (sorted by key).
    pub fn intern_labels(&mut self, pairs: Vec<(Arc<str>, Arc<str>)>) -> LabelSet {
        if let Some(set) = self.label_sets.get(pairs.as_slice()) {
            return set.clone();
        }
        let set: LabelSet = pairs.into();
        self.label_sets.insert(set.clone());
        set
    }

    /// The shared copy of the list of strings `items` (a Secret's owner uids, say).
    pub fn intern_list(&mut self, items: Vec<Arc<str>>) -> Arc<[Arc<str>]> {
        if let Some(list) = self.lists.get(items.as_slice()) {
            return list.clone();
        }
        let list: Arc<[Arc<str>]> = items.into();
        self.lists.insert(list.clone());
        list
    }

    /// Drops the strings and label sets nobody uses any more (a deleted namespace's name, a deleted profile's).
    /// Label sets and lists first: they hold strings.
    fn release_unused(&mut self) {
        self.label_sets.retain(|s| Arc::strong_count(s) > 1);
        self.label_sets.shrink_to_fit();
        self.lists.retain(|s| Arc::strong_count(s) > 1);
        self.lists.shrink_to_fit();
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.strings.shrink_to_fit();
    }

    #[cfg(test)]
    pub fn contains(&self, s: &str) -> bool {
        self.strings.contains(s)
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.strings.len()
    }

    #[cfg(test)]
    pub fn label_sets(&self) -> usize {
        self.label_sets.len()
    }
}

/// Names (of namespaces, say), sorted and each held once: 16 bytes a name whatever its length, the name itself
/// being the index's shared copy. A full plan at 50,000 namespaces holds its selection this way, in 0.8 MB and
/// one allocation, where a `BTreeSet<String>` held a fresh copy of each name (an allocation each) in tree nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameSet(Box<[Arc<str>]>);

impl NameSet {
    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    /// The names, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        self.0.iter()
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Arc<str>>> for NameSet {
    /// Sorted in place, duplicates dropped; the buffer shrinks to fit.
    fn from(mut names: Vec<Arc<str>>) -> Self {
        names.sort_unstable();
        names.dedup();
        Self(names.into_boxed_slice())
    }
}

impl FromIterator<Arc<str>> for NameSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(names: I) -> Self {
        Self::from(names.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a NameSet {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One group's entries, sorted by name, in a boxed slice exactly as long as needed: a namespace holds a few (one
/// Secret per profile, a ServiceAccount or two), and a hash map of its own cost 300 to 500 bytes each (measured
/// with heaptrack at 10,000 namespaces: 6.5 MiB of the managed Secret and ServiceAccount indexes).
struct Names<V>(Box<[(Arc<str>, V)]>);

impl<V> Default for Names<V> {
    fn default() -> Self {
        Self(Box::default())
    }
}

impl<V> Names<V> {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, name: Arc<str>, v: V) {
        match self.find(&name) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => {
                let mut all = std::mem::take(&mut self.0).into_vec();
                all.insert(i, (name, v));
                self.0 = all.into_boxed_slice();
            }
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let Ok(i) = self.find(name) else { return false };
        let mut all = std::mem::take(&mut self.0).into_vec();
        all.remove(i);
        self.0 = all.into_boxed_slice();
        true
    }
}

/// Group → name → entry. A namespaced object is filed under its namespace and name, a cluster-scoped one under
/// its name and "" (see [`key`]), so lookups by `&str` allocate nothing.
type Entries<V> = HashMap<Arc<str>, Names<V>>;

/// Where an object is filed: (namespace, name), or (name, "") for a cluster-scoped object.
fn key<'a>(namespace: &'a str, name: &'a str) -> (&'a str, &'a str) {
    if namespace.is_empty() { (name, "") } else { (namespace, name) }
}

/// The index proper.
pub struct Index<V> {
    entries: Entries<V>,
    pub strings: Strings,
    /// The list being received after a (re)list; swapped in at its end, so readers never see half a list.
    pending: Option<Entries<V>>,
    /// Deletes since unused strings were last released.
    deletes: usize,
    /// The namespace of cluster-scoped objects, as [`Index::iter`] reports it.
    empty: Arc<str>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Self::with_strings(Strings::default())
    }
}

impl<V> Index<V> {
    /// An empty index interning into `strings`.
    pub fn with_strings(strings: Strings) -> Self {
        Self { entries: HashMap::new(), strings, pending: None, deletes: 0, empty: Arc::from("") }
    }

    /// Applies one watch event; `entry` reduces an object to what is kept (`None`: not kept).
    pub fn apply<K: Resource>(&mut self, event: &watcher::Event<K>, entry: impl Fn(&mut Interner, &K) -> Option<V>) {
        match event {
            watcher::Event::Init => self.pending = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some((group, name, v)) = self.key_and_entry(obj, &entry) {
                    self.pending.get_or_insert_with(HashMap::new).entry(group).or_default().insert(name, v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = self.pending.take() {
                    self.entries = list;
                    self.entries.shrink_to_fit();
                    self.release_unused();
                }
            }
            watcher::Event::Apply(obj) => match self.key_and_entry(obj, &entry) {
                Some((group, name, v)) => self.entries.entry(group).or_default().insert(name, v),
                // No longer kept (a namespace that lost what made it worth keeping, say): as if deleted.
                None => self.remove(obj),
            },
            watcher::Event::Delete(obj) => self.remove(obj),
        }
    }

    fn key_and_entry<K: Resource>(
        &mut self,
        obj: &K,
        entry: &impl Fn(&mut Interner, &K) -> Option<V>,
    ) -> Option<(Arc<str>, Arc<str>, V)> {
        let meta = obj.meta();
        let (group, name) = key(meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref()?);
        let mut strings = self.strings.lock();
        let v = entry(&mut strings, obj)?;
        Some((strings.intern(group), strings.intern(name), v))
    }

    fn remove<K: Resource>(&mut self, obj: &K) {
        let meta = obj.meta();
        let Some(name) = meta.name.as_deref() else { return };
        let (group, name) = key(meta.namespace.as_deref().unwrap_or_default(), name);
        let Some(names) = self.entries.get_mut(group) else { return };
        if names.remove(name) {
            if names.0.is_empty() {
                self.entries.remove(group);
            }
            // Amortized: a sweep costs the live strings plus the garbage (at most a few per delete), so it runs
            // once per as many deletes as there are groups.
            self.deletes += 1;
            if self.deletes >= self.entries.len().max(64) {
                self.release_unused();
            }
        }
    }

    fn release_unused(&mut self) {
        self.strings.lock().release_unused();
        self.deletes = 0;
    }

    /// The entry for `name` in `namespace` ("" for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        let (group, name) = key(namespace, name);
        self.entries.get(group)?.get(name)
    }

    /// The entry for `name` in `namespace` ("" for cluster-scoped objects), with the index's shared copy of its name.
    pub fn get_named(&self, namespace: &str, name: &str) -> Option<(&Arc<str>, &V)> {
        let (group, key) = key(namespace, name);
        let (group, names) = self.entries.get_key_value(group)?;
        let i = names.find(key).ok()?;
        let (name, v) = &names.0[i];
        Some((if namespace.is_empty() { group } else { name }, v))
    }

    /// Every entry, with its namespace ("" for cluster-scoped objects) and name.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>, &V)> {
        self.entries.iter().flat_map(move |(group, names)| {
            names
                .0
                .iter()
                .map(move |(name, v)| if name.is_empty() { (&self.empty, group, v) } else { (group, name, v) })
        })
    }

    /// The entries of one namespace, with their names.
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.entries.get(namespace).into_iter().flat_map(|names| names.0.iter().map(|(name, v)| (name, v)))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.values().map(|names| names.0.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry (and a list being received), and releases the strings only they used.
    pub fn clear(&mut self) {
        self.entries = HashMap::new();
        self.pending = None;
        self.release_unused();
    }
}

/// An [`Index`] shared between the watch that writes it and its readers. Cheap to clone.
pub struct Shared<V> {
    inner: Arc<RwLock<Index<V>>>,
}

impl<V> Clone for Shared<V> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<V> Default for Shared<V> {
    fn default() -> Self {
        Self::with_strings(Strings::default())
    }
}

impl<V> Shared<V> {
    /// An empty index interning into `strings`, shared with other indexes.
    pub fn with_strings(strings: Strings) -> Self {
        Self { inner: Arc::new(RwLock::new(Index::with_strings(strings))) }
    }

    /// Applies one watch event (see [`Index::apply`]).
    pub fn apply<K: Resource>(&self, event: &watcher::Event<K>, entry: impl Fn(&mut Interner, &K) -> Option<V>) {
        self.write().apply(event, entry);
    }

    /// [`Shared::apply`], except that an `Apply` or `Delete` of an object for which `known(held, object)` says the
    /// held entry is as new or newer, and a `Delete` of an object not held, change nothing. Checked and applied
    /// under one lock; says whether the event told the index anything (every other event does).
    pub fn apply_unless<K: Resource>(
        &self,
        event: &watcher::Event<K>,
        entry: impl Fn(&mut Interner, &K) -> Option<V>,
        known: impl Fn(&V, &K) -> bool,
    ) -> bool {
        let mut index = self.write();
        if let watcher::Event::Apply(obj) | watcher::Event::Delete(obj) = event {
            let meta = obj.meta();
            let held = meta.name.as_deref().and_then(|n| index.get(meta.namespace.as_deref().unwrap_or_default(), n));
            let gone = held.is_none() && matches!(event, watcher::Event::Delete(_));
            if gone || held.is_some_and(|held| known(held, obj)) {
                return false;
            }
        }
        index.apply(event, entry);
        true
    }

    /// A consistent view for reading; hold it briefly (the watch waits for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Index<V>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index for a change that must be decided and made under one lock; hold it briefly.
    pub fn write(&self) -> RwLockWriteGuard<'_, Index<V>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(ns: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..Default::default()
        }
    }

    /// The value, interned; objects without one are not kept.
    fn value(strings: &mut Interner, cm: &ConfigMap) -> Option<Arc<str>> {
        cm.data.as_ref()?.get("v").filter(|v| !v.is_empty()).map(|v| strings.intern(v))
    }

    #[test]
    fn the_index_follows_the_watch_and_swaps_a_list_in_only_when_complete() {
        let mut index = Index::default();
        index.apply(&watcher::Event::Apply(object("gone", "a", "x")), value);
        index.apply(&watcher::Event::Init, value);
        index.apply(&watcher::Event::InitApply(object("n1", "a", "x")), value);
        index.apply(&watcher::Event::InitApply(object("n2", "a", "x")), value);
        assert!(index.get("gone", "a").is_some() && index.get("n1", "a").is_none(), "half a list was swapped in");
        index.apply(&watcher::Event::InitDone, value);
        assert_eq!(index.len(), 2);
        assert!(index.get("gone", "a").is_none());
        assert!(!index.strings.lock().contains("gone"), "a string only the old list used is still interned");
        let (a, b) = (index.get("n1", "a").unwrap(), index.get("n2", "a").unwrap());
        assert!(Arc::ptr_eq(a, b), "equal strings are not shared");

        index.apply(&watcher::Event::Apply(object("n1", "a", "y")), value);
        assert_eq!(index.get("n1", "a").map(|v| &**v), Some("y"));
        // An object that stops being kept leaves the index.
        index.apply(&watcher::Event::Apply(object("n1", "a", "")), value);
        assert!(index.get("n1", "a").is_none());
        index.apply(&watcher::Event::Delete(object("n2", "a", "x")), value);
        assert!(index.is_empty());
    }

    #[test]
    fn cluster_scoped_objects_and_several_names_per_namespace() {
        let mut index = Index::default();
        let cluster = |name: &str| ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some([("v".to_owned(), name.to_owned())].into()),
            ..Default::default()
        };
        for name in ["c", "a", "b"] {
            index.apply(&watcher::Event::Apply(cluster(name)), value);
            index.apply(&watcher::Event::Apply(object("ns", name, name)), value);
        }
        assert_eq!(index.len(), 6);
        assert_eq!(index.get("", "b").map(|v| &**v), Some("b"));
        assert_eq!(index.get("ns", "b").map(|v| &**v), Some("b"));
        let mut seen: Vec<(String, String)> = index.iter().map(|(ns, n, _)| (ns.to_string(), n.to_string())).collect();
        seen.sort();
        let want: Vec<(String, String)> = ["", "ns"]
            .iter()
            .flat_map(|ns| ["a", "b", "c"].iter().map(move |n| (ns.to_string(), n.to_string())))
            .collect();
        assert_eq!(seen, want);
        index.apply(&watcher::Event::Delete(object("ns", "b", "b")), value);
        index.apply(&watcher::Event::Delete(cluster("a")), value);
        assert!(index.get("ns", "b").is_none() && index.get("", "a").is_none());
        assert_eq!(index.get("ns", "c").map(|v| &**v), Some("c"));
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn a_name_set_is_sorted_once_without_duplicates_and_shares_its_names() {
        let shared: Arc<str> = Arc::from("b");
        let set: NameSet = ["c", "a"].into_iter().map(Arc::from).chain([shared.clone(), shared.clone()]).collect();
        let names: Vec<&str> = set.iter().map(|n| &**n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(set.contains("a") && set.contains("c") && !set.contains("d") && !set.contains(""));
        assert!(set.iter().any(|n| Arc::ptr_eq(n, &shared)), "a name was copied");
        assert_eq!((set.len(), NameSet::default().is_empty()), (3, true));
    }

    #[test]
    fn deletes_release_unused_strings_amortized() {
        let mut index = Index::default();
        index.apply(&watcher::Event::Apply(object("kept", "a", "x")), value);
        for i in 0..200 {
            let obj = object(&format!("n{i}"), "a", &format!("v{i}"));
            index.apply(&watcher::Event::Apply(obj.clone()), value);
            index.apply(&watcher::Event::Delete(obj), value);
        }
        let strings = index.strings.lock();
        assert!(strings.count() <= 80, "{} strings interned: garbage is not released", strings.count());
        assert!(strings.contains("kept") && strings.contains("x"));
        assert!(!strings.contains("n0"));
    }

    #[test]
    fn indexes_sharing_strings_hold_each_name_once_and_release_it_with_its_last_user() {
        let strings = Strings::default();
        let (mut one, mut two) = (Index::with_strings(strings.clone()), Index::with_strings(strings.clone()));
        one.apply(&watcher::Event::Apply(object("shop", "a", "x")), value);
        two.apply(&watcher::Event::Apply(object("shop", "b", "y")), value);
        let group = |index: &Index<Arc<str>>| index.iter().next().map(|(ns, _, _)| ns.clone()).unwrap();
        assert!(Arc::ptr_eq(&group(&one), &group(&two)), "the namespace's name is held twice");
        // A list in one index that no longer has the namespace releases nothing the other still uses.
        one.apply(&watcher::Event::Init, value);
        one.apply(&watcher::Event::InitDone, value);
        assert!(one.is_empty());
        assert!(strings.lock().contains("shop") && !strings.lock().contains("x"));
        two.apply(&watcher::Event::Init, value);
        two.apply(&watcher::Event::InitDone, value);
        assert!(!strings.lock().contains("shop"));
    }
}
