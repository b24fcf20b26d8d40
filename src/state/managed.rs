//! The managed Secrets as the controller needs to see them, and nothing more: for each Secret labelled
//! `app.kubernetes.io/managed-by=regcred`, its profile label, uid, owners, a hash of its content, and whether its
//! type and labels are right. No secret material, no object metadata.
//!
//! A kube-runtime `Store<Secret>` would keep each Secret as a full object (about 1.5 KiB even with its data
//! replaced by a hash); at 10,000 namespaces and 20 profiles that is 200,000 objects and hundreds of MiB. Here an
//! entry is about 100 bytes: namespaces, names, profiles and owner uids are interned (each string once, shared by
//! every entry that uses it, and released with its last user), and the Secret's uid is kept as 16 bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};
use tokio::sync::watch;

use super::compact::{self, Interner, Strings};
use crate::names::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL};

/// A managed Secret as its watch decodes it: only what an [`Entry`] is made of. Its managedFields, annotations
/// and any other data are skipped unread: a large sync causes one watch event per Secret it writes, and decoding
/// each in full (managedFields are nested JSON maps) was allocation and CPU for nothing.
///
/// Its metadata holds only name, namespace, uid, resourceVersion, labels and the owners' uids.
#[derive(Clone, Debug, Deserialize)]
pub struct WatchedSecret {
    #[serde(deserialize_with = "kept_metadata")]
    metadata: ObjectMeta,
    #[serde(rename = "type", default)]
    type_: Option<String>,
    /// The one key of `data` the content hash covers.
    #[serde(rename = "data", default, deserialize_with = "docker_config")]
    docker_config: Option<ByteString>,
}

impl kube::Resource for WatchedSecret {
    type DynamicType = ();
    type Scope = <Secret as kube::Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl WatchedSecret {
    /// An object naming only `namespace/name`.
    fn named(namespace: &str, name: &str) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            type_: None,
            docker_config: None,
        }
    }
}

/// A Secret's resourceVersion as a number (0 when it is not one).
fn revision(secret: &WatchedSecret) -> u64 {
    secret.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn kept_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kept {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<Owner>>,
    }
    #[derive(Deserialize)]
    struct Owner {
        uid: String,
    }
    let kept = Kept::deserialize(d)?;
    Ok(ObjectMeta {
        name: kept.name,
        namespace: kept.namespace,
        uid: kept.uid,
        resource_version: kept.resource_version,
        labels: kept.labels,
        owner_references: kept
            .owner_references
            .map(|owners| owners.into_iter().map(|o| OwnerReference { uid: o.uid, ..Default::default() }).collect()),
        ..ObjectMeta::default()
    })
}

fn docker_config<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteString>, D::Error> {
    #[derive(Deserialize)]
    struct Data {
        // DOCKER_CONFIG_KEY (a test checks they agree).
        #[serde(rename = ".dockerconfigjson")]
        docker_config: Option<ByteString>,
    }
    Ok(Option::<Data>::deserialize(d)?.and_then(|data| data.docker_config))
}

/// What the cache shows of one managed Secret that carries this profile's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSecret {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// Its uid, as the index keeps it: no allocation per Secret when a plan reads a profile's every Secret.
    pub uid: Uid,
    /// [`content_hash`] of its type and data.
    pub content_hash: u64,
    /// Its type is `kubernetes.io/dockerconfigjson` (a type cannot be changed in place).
    pub type_ok: bool,
    /// It carries every label regcred sets.
    pub labels_ok: bool,
    /// UIDs in its ownerReferences, shared by every Secret with the same owners.
    pub owner_uids: Arc<[Arc<str>]>,
}

/// Hash of a Secret's type and content, to compare cached Secrets with the desired one without keeping
/// secret material in the cache. Stable within one process, which is all the cache needs.
pub fn content_hash<'a>(secret_type: &str, data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> u64 {
    let mut h = DefaultHasher::new();
    secret_type.hash(&mut h);
    for (k, v) in data {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// What is kept of one managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Its `regcred.dev/profile` label ("" when someone removed it).
    profile: Arc<str>,
    uid: Uid,
    /// Interned: the Secrets of one profile share one list.
    owner_uids: Arc<[Arc<str>]>,
    content_hash: u64,
    type_ok: bool,
    labels_ok: bool,
    /// Its resourceVersion when that is a number (etcd's revisions are), else 0: what orders regcred's record of
    /// its own write against a watch event that is older than that write.
    resource_version: u64,
}

/// A Kubernetes uid: a UUID packed into 16 bytes, or (never seen in practice) the text as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    Packed(uuid::Uuid),
    Text(Box<str>),
}

impl Uid {
    pub fn new(text: &str) -> Self {
        match uuid::Uuid::try_parse(text) {
            // Packed only when it reads back exactly as it came (uuid also reads upper case, braces, no hyphens).
            Ok(packed) if packed.hyphenated().to_string() == text => Self::Packed(packed),
            _ => Self::Text(text.into()),
        }
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Packed(packed) => packed.hyphenated().fmt(f),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl From<&str> for Uid {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl Entry {
    /// The Secret as the sync plan reads it.
    fn observed(&self, namespace: &Arc<str>, name: &Arc<str>) -> ObservedSecret {
        ObservedSecret {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: self.uid.clone(),
            content_hash: self.content_hash,
            type_ok: self.type_ok,
            labels_ok: self.labels_ok,
            owner_uids: self.owner_uids.clone(),
        }
    }

    /// What is kept of a Secret.
    #[expect(clippy::unnecessary_wraps, reason = "the shape compact::Shared::apply takes for every index")]
    fn of(strings: &mut Interner, secret: &WatchedSecret) -> Option<Self> {
        let labels = secret.labels();
        let hash = content_hash(
            secret.type_.as_deref().unwrap_or_default(),
            secret.docker_config.iter().map(|v| (DOCKER_CONFIG_KEY, v.0.as_slice())),
        );
        let profile = labels.get(PROFILE_LABEL).map(String::as_str).unwrap_or_default();
        let owners: Vec<Arc<str>> = secret.owner_references().iter().map(|o| strings.intern(&o.uid)).collect();
        Some(Self {
            profile: strings.intern(profile),
            uid: Uid::new(secret.metadata.uid.as_deref().unwrap_or_default()),
            owner_uids: strings.intern_list(owners),
            content_hash: hash,
            type_ok: secret.type_.as_deref() == Some(DOCKER_CONFIG_TYPE),
            labels_ok: labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE),
            resource_version: revision(secret),
        })
    }
}

/// The index, shared by the controller, the webhook and the metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct ManagedSecrets {
    index: compact::Shared<Entry>,
    /// The Secrets being written now (namespace, name): one write of each at a time, whoever asks.
    in_flight: Arc<Mutex<InFlight>>,
}

/// The writes under way, each with the sender its claim holds: never sent on, dropped with the claim, which is
/// what tells whoever waits for that write ([`ManagedSecrets::settled`]) that it is done.
type InFlight = HashMap<(String, String), watch::Sender<()>>;

/// The right to write one Secret, held until dropped (see [`ManagedSecrets::claim`]). The writer drops it once its
/// result is recorded, which ends the wait of [`ManagedSecrets::settled`].
pub struct Claim {
    in_flight: Arc<Mutex<InFlight>>,
    key: (String, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

impl ManagedSecrets {
    /// An empty index interning into `strings`, shared with the view's other indexes.
    pub fn with_strings(strings: Strings) -> Self {
        Self { index: compact::Shared::with_strings(strings), in_flight: Arc::default() }
    }

    /// Applies one watch event, unless the index already holds that state of the Secret or a later one: regcred
    /// records its own writes as they complete ([`ManagedSecrets::record`]), and the watch then delivers their echo,
    /// or even an earlier state. Says whether the event told the index anything: the echo of regcred's own write,
    /// or of its own delete, does not (the writer's caller already counts it), so it wakes no reconcile.
    pub fn apply(&self, event: &watcher::Event<WatchedSecret>) -> bool {
        self.index.apply_unless(event, Entry::of, |held, secret| {
            let incoming = revision(secret);
            incoming != 0 && incoming <= held.resource_version
        })
    }

    /// Records a Secret as a write of regcred's returned it, before its watch event arrives: the next plan sees
    /// regcred's own write and does not make it again.
    pub fn record(&self, secret: &WatchedSecret) {
        let _ = self.apply(&watcher::Event::Apply(secret.clone()));
    }

    /// Records that regcred deleted the Secret `name` in `namespace` (the object with `uid`).
    pub fn record_deleted(&self, namespace: &str, name: &str, uid: &str) {
        let gone = WatchedSecret::named(namespace, name);
        let _ = self.index.apply_unless(&watcher::Event::Delete(gone), Entry::of, |held, _| held.uid.to_text() != uid);
    }

    /// Claims the write of the Secret `name` in `namespace`; `None` while another write of it is under way (the
    /// controller's sync and the new-namespace path may both want to create it).
    pub fn claim(&self, namespace: &str, name: &str) -> Option<Claim> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if in_flight.contains_key(&key) {
            return None;
        }
        in_flight.insert(key.clone(), watch::Sender::new(()));
        Some(Claim { in_flight: self.in_flight.clone(), key })
    }

    /// Waits until no write of the Secret `name` in `namespace` is under way (at once when none is: the writer
    /// that holds its [`Claim`] says when it is done, by dropping it), then says whether the index holds that
    /// Secret: the write's result, as the writer recorded it.
    pub async fn settled(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let pending =
            self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).get(&key).map(watch::Sender::subscribe);
        if let Some(mut done) = pending {
            // Nothing is ever sent: this ends, with an error, when the claim drops its sender.
            let _ = done.changed().await;
        }
        self.contains(namespace, name)
    }

    /// Whether the index already holds the Secret `name` in `namespace` as `profile` (with uid `owner`) writes it:
    /// its content hashing to `content_hash`, its type and labels right. A plan made a moment ago may still ask for
    /// a write another writer has just made.
    pub fn holds(&self, namespace: &str, name: &str, profile: &str, owner: &str, content_hash: u64) -> bool {
        self.index.read().get(namespace, name).is_some_and(|e| {
            e.content_hash == content_hash
                && e.type_ok
                && e.labels_ok
                && &*e.profile == profile
                && e.owner_uids.iter().any(|u| &**u == owner)
        })
    }

    /// Whether a managed Secret `name` exists in `namespace`.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.index.read().get(namespace, name).is_some()
    }

    /// The Secrets labelled with `profile`, as the sync plan reads them: counted first, so that the list is
    /// allocated once and exactly as long as needed (a profile over 50,000 namespaces reads 4.4 MB of them).
    pub fn observed_for(&self, profile: &str) -> Vec<ObservedSecret> {
        let index = self.index.read();
        let of = |(_, _, e): &(&Arc<str>, &Arc<str>, &Entry)| &*e.profile == profile;
        let mut observed = Vec::with_capacity(index.iter().filter(of).count());
        observed.extend(index.iter().filter(of).map(|(ns, name, e)| e.observed(ns, name)));
        observed
    }

    /// The Secrets labelled with `profile` in `namespace` alone, as a plan of that namespace reads them.
    pub fn observed_in(&self, profile: &str, namespace: &str) -> Vec<ObservedSecret> {
        let index = self.index.read();
        let namespace: Arc<str> = namespace.into();
        let group = index.in_namespace(&namespace);
        group.filter(|(_, e)| &*e.profile == profile).map(|(name, e)| e.observed(&namespace, name)).collect()
    }

    /// How many managed Secrets the index holds.
    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.index.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0f8e2a4c-1b3d-4e5f-8a9b-0c1d2e3f4a5b";

    /// A Secret as its watch decodes it, through the same JSON the apiserver sends.
    fn secret(ns: &str, name: &str, profile: &str, data: &str) -> WatchedSecret {
        watched(&full(ns, name, profile, data))
    }

    fn watched(secret: &Secret) -> WatchedSecret {
        serde_json::from_value(serde_json::to_value(secret).unwrap()).unwrap()
    }

    fn full(ns: &str, name: &str, profile: &str, data: &str) -> Secret {
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
        assert_eq!(Uid::new(UID), Uid::Packed(uuid::Uuid::from_u128(0x0f8e2a4c_1b3d_4e5f_8a9b_0c1d2e3f4a5b)));
        assert_eq!(Uid::new(UID).to_text(), UID);
        for odd in [
            "",
            "not-a-uid",
            "0F8E2A4C-1B3D-4E5F-8A9B-0C1D2E3F4A5B",
            "0f8e2a4c1b3d4e5f8a9b0c1d2e3f4a5b",
            "{0f8e2a4c-1b3d-4e5f-8a9b-0c1d2e3f4a5b}",
            "0f8e2a4c1b3d4e5f8a9b0c1d2e3f4a5b0000",
        ] {
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
        assert_eq!((&*seen[0].namespace, seen[0].uid.to_string().as_str()), ("a", UID));
        assert_eq!(*seen[0].owner_uids, [Arc::from("owner-1")]);
        assert!(seen[0].type_ok && seen[0].labels_ok);
        let before = seen[0].content_hash;

        // Drift shows as a new hash; a relabel moves the Secret to the other profile.
        index.apply(&watcher::Event::Apply(secret("a", "pull", "p", "two")));
        assert_ne!(index.observed_for("p")[0].content_hash, before);
        index.apply(&watcher::Event::Apply(secret("a", "pull", "q", "two")));
        assert!(index.observed_for("p").is_empty());
        assert_eq!(index.observed_for("q").len(), 2);

        index.apply(&watcher::Event::Delete(secret("b", "pull", "q", "one")));
        assert!(!index.contains("b", "pull"));
        assert_eq!(index.len(), 1);
    }

    #[tokio::test]
    async fn a_wait_for_a_write_ends_when_its_writer_is_done_and_says_what_it_left() {
        let index = ManagedSecrets::default();
        assert!(!index.settled("a", "pull").await, "no write under way, nothing there: at once");
        let claim = index.claim("a", "pull").unwrap();
        assert!(index.claim("a", "pull").is_none(), "one write of a Secret at a time");
        let mut waiting = Box::pin(index.settled("a", "pull"));
        assert!(futures::poll!(&mut waiting).is_pending(), "the write is under way");
        index.record(&secret("a", "pull", "p", "x"));
        assert!(futures::poll!(&mut waiting).is_pending(), "recorded, but its writer is not done yet");
        drop(claim);
        assert!(waiting.await, "the writer recorded the Secret");
        // A write that failed leaves nothing, and says so.
        let claim = index.claim("b", "pull").unwrap();
        let waiting = index.settled("b", "pull");
        drop(claim);
        assert!(!waiting.await);
    }

    #[test]
    fn the_echo_of_regcreds_own_write_or_delete_tells_the_index_nothing() {
        let at = |revision: &str, data: &str| {
            let mut s = secret("a", "pull", "p", data);
            s.metadata.resource_version = Some(revision.into());
            s
        };
        let index = ManagedSecrets::default();
        index.record(&at("5", "mine"));
        let apply = |s: WatchedSecret| index.apply(&watcher::Event::Apply(s));
        assert!(!apply(at("5", "mine")), "the echo of the write regcred recorded");
        assert!(!apply(at("4", "older")), "an earlier state");
        assert_eq!(
            index.observed_for("p")[0].content_hash,
            Entry::of(&mut Interner::default(), &at("5", "mine")).unwrap().content_hash
        );
        assert!(apply(at("6", "drift")), "someone else's edit");
        assert!(apply(secret("b", "pull", "p", "x")), "a Secret without a numeric resourceVersion always counts");
        // regcred's own delete: recorded first, its echo then finds nothing held.
        let uid = index.observed_for("p").iter().find(|o| &*o.namespace == "a").unwrap().uid.to_string();
        index.record_deleted("a", "pull", &uid);
        assert!(!index.apply(&watcher::Event::Delete(at("7", "drift"))), "the echo of regcred's own delete");
        assert!(index.apply(&watcher::Event::Delete(secret("b", "pull", "p", "x"))), "someone else's delete");
    }

    #[test]
    fn a_relist_replaces_everything() {
        let index = ManagedSecrets::default();
        index.apply(&watcher::Event::Apply(secret("gone", "pull", "p", "x")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("kept", "pull", "p", "x")));
        index.apply(&watcher::Event::InitDone);
        assert!(!index.contains("gone", "pull") && index.contains("kept", "pull"));
    }

    #[test]
    fn the_watch_decodes_what_the_index_keeps_and_skips_the_rest() {
        let mut secret = full("a", "pull", "p", "one");
        let kept = watched(&secret);
        assert_eq!(DOCKER_CONFIG_KEY, ".dockerconfigjson");
        assert_eq!(kept.metadata.resource_version, None);
        // What the apiserver adds, and what a tenant might: none of it changes the entry.
        let mut json = serde_json::to_value(&secret).unwrap();
        json["metadata"]["managedFields"] =
            json!([{"manager": "regcred", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]);
        json["metadata"]["annotations"] = json!({"note": "x"});
        json["metadata"]["resourceVersion"] = json!("42");
        json["data"]["other"] = json!("b3RoZXI=");
        let busy: WatchedSecret = serde_json::from_value(json).unwrap();
        assert_eq!(busy.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(busy.metadata.managed_fields, None);
        assert_eq!(busy.metadata.annotations, None);
        let mut strings = Interner::default();
        let mut entry = Entry::of(&mut strings, &busy).unwrap();
        assert_eq!(entry.resource_version, 42, "the resourceVersion orders regcred's own writes against the watch");
        entry.resource_version = 0;
        assert_eq!(Some(entry), Entry::of(&mut strings, &kept));

        // Each kept field still counts.
        let entry = Entry::of(&mut strings, &kept).unwrap();
        secret.type_ = Some("Opaque".into());
        assert!(!Entry::of(&mut strings, &watched(&secret)).unwrap().type_ok);
        secret.data = None;
        assert_ne!(Entry::of(&mut strings, &watched(&secret)).unwrap().content_hash, entry.content_hash);
        secret.metadata.owner_references = None;
        assert_eq!(Entry::of(&mut strings, &watched(&secret)).unwrap().owner_uids.len(), 0);
        let entry = Entry::of(&mut strings, &secret_with_owner_json()).unwrap();
        assert_eq!(*entry.owner_uids, [Arc::from("owner-2")]);
        let again = Entry::of(&mut strings, &secret_with_owner_json()).unwrap();
        assert!(Arc::ptr_eq(&entry.owner_uids, &again.owner_uids), "Secrets with the same owners share one list");
    }

    fn secret_with_owner_json() -> WatchedSecret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pull", "namespace": "a", "uid": UID,
                "ownerReferences": [{"apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile", "name": "p", "uid": "owner-2"}]},
            "type": DOCKER_CONFIG_TYPE,
            "data": null
        }))
        .unwrap()
    }
}
