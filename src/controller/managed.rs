//! The managed Secrets as the controller needs to see them, and nothing more: for each Secret labelled
//! `app.kubernetes.io/managed-by=regcred`, its profile label, uid, owners, a hash of its content, and whether its
//! type and labels are right. No secret material, no object metadata.
//!
//! A kube-runtime `Store<Secret>` would keep each Secret as a full object (about 1.5 KiB even with its data
//! replaced by a hash); at 10,000 namespaces and 20 profiles that is 200,000 objects and hundreds of MiB. Here an
//! entry is about 100 bytes: namespaces, names, profiles and owner uids are interned (each string once, shared by
//! every entry that uses it, and released with its last user), and the Secret's uid is kept as 16 bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::watcher;

use super::plan::{self, ObservedSecret};
use super::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL};

/// What is kept of one managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Its `regcred.dev/profile` label ("" when someone removed it).
    profile: Arc<str>,
    uid: Uid,
    owner_uids: Box<[Arc<str>]>,
    content_hash: u64,
    type_ok: bool,
    labels_ok: bool,
}

/// A Kubernetes uid: a UUID packed into 16 bytes, or (never seen in practice) the text as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Uid {
    Packed(u128),
    Text(Box<str>),
}

impl Uid {
    fn new(text: &str) -> Self {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        match u128::from_str_radix(&hex, 16) {
            // Packed only when it reads back exactly as it came.
            Ok(n) if hex.len() == 32 && Self::Packed(n).to_text() == text => Self::Packed(n),
            _ => Self::Text(text.into()),
        }
    }

    fn to_text(&self) -> String {
        match self {
            Self::Packed(n) => {
                let h = format!("{n:032x}");
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            }
            Self::Text(t) => t.to_string(),
        }
    }
}

/// namespace → name → entry, every string interned. Nested so that lookups by `&str` allocate nothing.
type Entries = HashMap<Arc<str>, HashMap<Arc<str>, Entry>>;

#[derive(Default)]
struct Inner {
    entries: Entries,
    strings: HashSet<Arc<str>>,
    /// The list being received after a (re)list; swapped in at its end.
    pending: Option<Entries>,
    /// Deletes since unused strings were last released.
    deletes: usize,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    fn key_and_entry(&mut self, secret: &Secret) -> Option<(Arc<str>, Arc<str>, Entry)> {
        let namespace = secret.metadata.namespace.as_deref()?;
        let name = secret.metadata.name.as_deref()?;
        let labels = secret.labels();
        let hash = plan::content_hash(
            secret.type_.as_deref().unwrap_or_default(),
            secret
                .data
                .iter()
                .flatten()
                .filter(|(k, _)| *k == DOCKER_CONFIG_KEY)
                .map(|(k, v)| (k.as_str(), v.0.as_slice())),
        );
        let profile = labels.get(PROFILE_LABEL).map(String::as_str).unwrap_or_default();
        let owners: Vec<Arc<str>> = secret.owner_references().iter().map(|o| self.intern(&o.uid)).collect();
        let entry = Entry {
            profile: self.intern(profile),
            uid: Uid::new(secret.metadata.uid.as_deref().unwrap_or_default()),
            owner_uids: owners.into_boxed_slice(),
            content_hash: hash,
            type_ok: secret.type_.as_deref() == Some(DOCKER_CONFIG_TYPE),
            labels_ok: labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE),
        };
        Some((self.intern(namespace), self.intern(name), entry))
    }

    /// Drops interned strings nobody uses any more (a deleted namespace's name, a deleted profile's).
    fn release_unused(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.deletes = 0;
    }
}

/// The index, shared by the controller, the webhook and the metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct ManagedSecrets {
    inner: Arc<RwLock<Inner>>,
}

impl ManagedSecrets {
    /// Applies one watch event; the Secrets it carried, for the caller to map to profiles.
    pub fn apply(&self, event: &watcher::Event<Secret>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => inner.pending = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                if let Some((ns, name, entry)) = inner.key_and_entry(secret) {
                    inner.pending.get_or_insert_with(HashMap::new).entry(ns).or_default().insert(name, entry);
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = inner.pending.take() {
                    inner.entries = list;
                    inner.release_unused();
                }
            }
            watcher::Event::Apply(secret) => {
                if let Some((ns, name, entry)) = inner.key_and_entry(secret) {
                    inner.entries.entry(ns).or_default().insert(name, entry);
                }
            }
            watcher::Event::Delete(secret) => {
                let (Some(ns), Some(name)) = (secret.metadata.namespace.as_deref(), secret.metadata.name.as_deref())
                else {
                    return;
                };
                let Some(names) = inner.entries.get_mut(ns) else { return };
                if names.remove(name).is_some() {
                    if names.is_empty() {
                        inner.entries.remove(ns);
                    }
                    // Amortized: a sweep costs the live strings plus the garbage (at most a few per delete), so it
                    // runs once per as many deletes as there are namespaces with Secrets.
                    inner.deletes += 1;
                    if inner.deletes >= inner.entries.len().max(64) {
                        inner.release_unused();
                    }
                }
            }
        }
    }

    /// Whether a managed Secret `name` exists in `namespace`.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(namespace).is_some_and(|names| names.contains_key(name))
    }

    /// The Secrets labelled with `profile`, as the sync plan reads them.
    pub fn observed_for(&self, profile: &str) -> Vec<ObservedSecret> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .entries
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(name, e)| (ns, name, e)))
            .filter(|(_, _, e)| &*e.profile == profile)
            .map(|(ns, name, e)| ObservedSecret {
                namespace: ns.clone(),
                name: name.clone(),
                uid: e.uid.to_text(),
                content_hash: e.content_hash,
                type_ok: e.type_ok,
                labels_ok: e.labels_ok,
                owner_uids: e.owner_uids.to_vec(),
            })
            .collect()
    }

    /// How many managed Secrets the index holds.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).entries.values().map(HashMap::len).sum()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;

    const UID: &str = "0f8e2a4c-1b3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn secret(ns: &str, name: &str, profile: &str, data: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(UID.into()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
                    (PROFILE_LABEL.into(), profile.into()),
                ])),
                owner_references: Some(vec![OwnerReference { uid: "owner-1".into(), ..Default::default() }]),
                ..Default::default()
            },
            type_: Some(DOCKER_CONFIG_TYPE.into()),
            data: Some(BTreeMap::from([(DOCKER_CONFIG_KEY.into(), ByteString(data.as_bytes().to_vec()))])),
            ..Default::default()
        }
    }

    #[test]
    fn uids_round_trip_packed_or_as_text() {
        assert_eq!(Uid::new(UID), Uid::Packed(0x0f8e2a4c_1b3d_4e5f_8a9b_0c1d2e3f4a5b));
        assert_eq!(Uid::new(UID).to_text(), UID);
        for odd in ["", "not-a-uid", "0F8E2A4C-1B3D-4E5F-8A9B-0C1D2E3F4A5B", "0f8e2a4c1b3d4e5f8a9b0c1d2e3f4a5b0000"] {
            assert_eq!(Uid::new(odd).to_text(), odd);
        }
    }

    #[test]
    fn the_index_follows_the_watch_and_lists_each_profiles_secrets() {
        let index = ManagedSecrets::default();
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("a", "pull", "p", "one")));
        index.apply(&watcher::Event::InitApply(secret("b", "pull", "q", "one")));
        assert!(index.is_empty(), "the list is swapped in only when complete");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.len(), 2);
        assert!(index.contains("a", "pull") && !index.contains("a", "other"));
        let seen = index.observed_for("p");
        assert_eq!(seen.len(), 1);
        assert_eq!((&*seen[0].namespace, seen[0].uid.as_str()), ("a", UID));
        assert_eq!(seen[0].owner_uids, vec![Arc::from("owner-1")]);
        assert!(seen[0].type_ok && seen[0].labels_ok);
        let before = seen[0].content_hash;

        // Drift shows as a new hash; a relabel moves the Secret to the other profile.
        index.apply(&watcher::Event::Apply(secret("a", "pull", "p", "two")));
        assert_ne!(index.observed_for("p")[0].content_hash, before);
        index.apply(&watcher::Event::Apply(secret("a", "pull", "q", "two")));
        assert!(index.observed_for("p").is_empty());
        assert_eq!(index.observed_for("q").len(), 2);

        // Deletes release the strings only deleted Secrets used, once enough deletes have accumulated.
        index.apply(&watcher::Event::Delete(secret("b", "pull", "q", "one")));
        assert!(!index.contains("b", "pull"));
        for i in 0..200 {
            let ns = format!("n{i}");
            index.apply(&watcher::Event::Apply(secret(&ns, "pull", "q", "x")));
            index.apply(&watcher::Event::Delete(secret(&ns, "pull", "q", "x")));
        }
        let inner = index.inner.read().unwrap();
        assert!(!inner.strings.contains("b"), "the deleted namespace's name is still interned");
        assert!(inner.strings.len() <= 80, "{} strings interned: garbage is not released", inner.strings.len());
        assert!(inner.strings.contains("a"));
    }

    #[test]
    fn a_relist_replaces_everything() {
        let index = ManagedSecrets::default();
        index.apply(&watcher::Event::Apply(secret("gone", "pull", "p", "x")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("kept", "pull", "p", "x")));
        index.apply(&watcher::Event::InitDone);
        assert!(!index.contains("gone", "pull") && index.contains("kept", "pull"));
        assert!(!index.inner.read().unwrap().strings.contains("gone"));
    }
}
