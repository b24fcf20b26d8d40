//! Kubernetes Events on profiles (`events.k8s.io/v1`), aggregated as client-go's events broadcaster does: the
//! same Event again (type, reason, action, what it regards, what it relates to, and its note) within [`TTL`]
//! counts up a series on the first one; an Event with another note is an Event of its own.
//!
//! kube-runtime's `Recorder` leaves the note out of that key: a second `PullFailed` about another Pod, or a
//! condition failing again for another cause, would only count up the first Event, whose note said something
//! else, and the new message would never be seen. The decision is [`Aggregator`], pure; [`Recorder`] does the
//! requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a repeat counts up the series of an Event rather than making a new one (client-go: 6 minutes).
pub const TTL: Duration = Duration::from_secs(6 * 60);
/// At most this many Events are remembered; past it the oldest are forgotten (a repeat of one is then new).
const CAPACITY: usize = 1024;
/// The API's limit on an Event's note.
const NOTE_LIMIT: usize = 1024;

/// What makes two Events the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: String,
    regarding: Identity,
    related: Option<Identity>,
}

/// The fields of an object reference that name the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for Identity {
    fn from(r: &ObjectReference) -> Self {
        Self { kind: r.kind.clone(), namespace: r.namespace.clone(), name: r.name.clone(), uid: r.uid.clone() }
    }
}

impl Key {
    pub fn of(ev: &Event, regarding: &ObjectReference) -> Self {
        Self {
            warning: matches!(ev.type_, EventType::Warning),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone().unwrap_or_default(),
            regarding: regarding.into(),
            related: ev.secondary.as_ref().map(Identity::from),
        }
    }
}

/// What to do with an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// A new Event.
    Create,
    /// A repeat: the Event `name` (in `namespace`) gets this series.
    Series { namespace: String, name: String, count: i32 },
}

#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

/// The Events published within [`TTL`], and what a new one means. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Aggregator {
    seen: HashMap<Key, Seen>,
}

impl Aggregator {
    /// Decides for `key` at `now`, counting it when it is a repeat.
    pub fn next(&mut self, key: &Key, now: Timestamp) -> Publish {
        self.seen.retain(|_, s| now.duration_since(s.last).unsigned_abs() < TTL);
        match self.seen.get_mut(key) {
            Some(s) => {
                s.count = s.count.saturating_add(1);
                s.last = now;
                Publish::Series { namespace: s.namespace.clone(), name: s.name.clone(), count: s.count }
            }
            None => Publish::Create,
        }
    }

    /// Remembers that `key` was created as `namespace/name` at `now`.
    pub fn created(&mut self, key: Key, namespace: &str, name: &str, now: Timestamp) {
        if self.seen.len() >= CAPACITY
            && let Some(oldest) = self.seen.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key, Seen { namespace: namespace.to_owned(), name: name.to_owned(), count: 1, last: now });
    }

    /// Forgets `key` (its Event is gone).
    pub fn forget(&mut self, key: &Key) {
        self.seen.remove(key);
    }

    /// How many Events are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

/// The Event as the API takes it: in the namespace of what it regards (`default` for cluster-scoped objects),
/// named after it and the time, the note cut to the API's limit.
pub fn event(reporter: &Reporter, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
    let base = regarding.name.as_deref().unwrap_or(&reporter.controller);
    // Room for the time within a name's 253 characters.
    let base: String = base.chars().take(230).collect();
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace_of(regarding)),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if matches!(ev.type_, EventType::Warning) { "Warning" } else { "Normal" }.into()),
        reason: Some(ev.reason.clone()),
        action: Some(ev.action.clone()),
        note: ev.note.as_deref().map(|n| cut(n, NOTE_LIMIT)),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone().unwrap_or_else(|| reporter.controller.clone())),
        ..K8sEvent::default()
    }
}

fn namespace_of(regarding: &ObjectReference) -> String {
    regarding.namespace.clone().unwrap_or_else(|| "default".into())
}

/// `s` cut to at most `limit` bytes, at a character boundary.
fn cut(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Publishes Events, aggregated by [`Aggregator`].
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    aggregator: Mutex<Aggregator>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { client, reporter, aggregator: Mutex::default() }
    }

    fn aggregator(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `ev` about `regarding`: a new Event, or a repeat counted on the one published before.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key::of(ev, regarding);
        let decision = self.aggregator().next(&key, now);
        if let Publish::Series { namespace, name, count } = decision {
            let series = EventSeries { count, last_observed_time: MicroTime(now) };
            let patch = serde_json::json!({ "series": series });
            let api = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace);
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // The Event is gone (deleted, or expired by the apiserver): a new one.
                Err(kube::Error::Api(s)) if s.is_not_found() => self.aggregator().forget(&key),
                Err(e) => return Err(e),
            }
        }
        let event = event(&self.reporter, ev, regarding, now);
        let namespace = namespace_of(regarding);
        let created =
            Api::<K8sEvent>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.aggregator().created(key, &namespace, &name, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> ObjectReference {
        ObjectReference {
            api_version: Some("regcred.dev/v1alpha1".into()),
            kind: Some("RegistryProfile".into()),
            name: Some("p".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        }
    }

    fn failed(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "PullFailed".into(),
            note: Some(note.into()),
            action: "Pull".into(),
            secondary: None,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_repeat_counts_up_the_first_event_and_another_note_is_an_event_of_its_own() {
        let mut a = Aggregator::default();
        let first = Key::of(&failed("Pod a/app could not pull x: AuthenticationFailed"), &profile());
        assert_eq!(a.next(&first, at(0)), Publish::Create);
        a.created(first.clone(), "default", "p.1", at(0));
        let series = |count| Publish::Series { namespace: "default".into(), name: "p.1".into(), count };
        assert_eq!(a.next(&first, at(10)), series(2));
        assert_eq!(a.next(&first, at(20)), series(3));
        // Same reason, action and object, another note: the case kube-runtime's Recorder folds into the first.
        let other = Key::of(&failed("Pod b/missing could not pull x:404: ImageNotFound"), &profile());
        assert_eq!(a.next(&other, at(30)), Publish::Create);
        // Another object, or another type, is another Event too.
        let mut gone = profile();
        gone.uid = Some("u2".into());
        assert_eq!(
            a.next(&Key::of(&failed("Pod a/app could not pull x: AuthenticationFailed"), &gone), at(31)),
            Publish::Create
        );
        let normal = Event { type_: EventType::Normal, ..failed("Pod a/app could not pull x: AuthenticationFailed") };
        assert_eq!(a.next(&Key::of(&normal, &profile()), at(32)), Publish::Create);
    }

    #[test]
    fn a_repeat_after_the_ttl_is_new_and_a_forgotten_event_is_new() {
        let mut a = Aggregator::default();
        let key = Key::of(&failed("n"), &profile());
        a.created(key.clone(), "default", "p.1", at(0));
        let ttl = i64::try_from(TTL.as_secs()).unwrap();
        assert!(matches!(a.next(&key, at(ttl - 1)), Publish::Series { count: 2, .. }));
        // The TTL runs from the last repeat.
        assert!(matches!(a.next(&key, at(2 * ttl - 2)), Publish::Series { count: 3, .. }));
        assert_eq!(a.next(&key, at(3 * ttl)), Publish::Create);
        assert_eq!(a.remembered(), 0, "expired entries are dropped");
        a.created(key.clone(), "default", "p.2", at(0));
        a.forget(&key);
        assert_eq!(a.next(&key, at(1)), Publish::Create);
    }

    #[test]
    fn the_memory_is_bounded_forgetting_the_oldest() {
        let mut a = Aggregator::default();
        for i in 0..CAPACITY + 10 {
            let key = Key::of(&failed(&format!("note {i}")), &profile());
            a.created(key, "default", &format!("p.{i}"), at(i64::try_from(i).unwrap() / 10));
        }
        assert_eq!(a.remembered(), CAPACITY);
        assert_eq!(a.next(&Key::of(&failed("note 0"), &profile()), at(200)), Publish::Create);
        let newest = Key::of(&failed(&format!("note {}", CAPACITY + 9)), &profile());
        assert!(matches!(a.next(&newest, at(200)), Publish::Series { .. }));
    }

    #[test]
    fn the_event_is_in_the_objects_namespace_or_default_with_a_valid_name_and_a_note_within_the_limit() {
        let reporter = Reporter { controller: "regcred".into(), instance: None };
        let long = "é".repeat(NOTE_LIMIT);
        let e = event(&reporter, &failed(&long), &profile(), at(0));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("p."));
        assert!(e.note.as_ref().unwrap().len() <= NOTE_LIMIT);
        assert_eq!((e.type_.as_deref(), e.reporting_instance.as_deref()), (Some("Warning"), Some("regcred")));
        let mut pod = profile();
        pod.namespace = Some("team".into());
        pod.name = Some("x".repeat(253));
        let e = event(&reporter, &failed("n"), &pod, at(0));
        assert_eq!(e.metadata.namespace.as_deref(), Some("team"));
        assert!(e.metadata.name.unwrap().len() <= 253);
    }
}
