//! The profiles waiting to be reconciled: a set rather than a queue. Ten thousand namespace events at start-up
//! collapse into one entry per profile, and a replica that is not reconciling holds at most one entry per profile.
//! The controller drains it as its trigger stream.
//!
//! Beside each name it keeps what changed for it since its handler last asked ([`Dirty::changed`]): the namespaces
//! whose objects changed (a namespace, a managed Secret, a ServiceAccount), or everything (a relist, or more
//! namespaces than are worth listing). A reconcile then plans only those namespaces; the profile's own inputs (its
//! spec, its credentials, a new token, a preflight's verdict) it compares itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use tokio::sync::Notify;

/// More namespaces than this changed for one name: plan them all.
pub const MAX_LISTED: usize = 512;

/// What changed for one name since its handler last asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// These namespaces (perhaps none: only the name's own inputs).
    Namespaces(BTreeSet<String>),
    /// Anything: every namespace must be looked at.
    Everything,
}

impl Default for Changed {
    fn default() -> Self {
        Self::Namespaces(BTreeSet::new())
    }
}

impl Changed {
    fn add(&mut self, namespace: &str) {
        if let Self::Namespaces(names) = self {
            if names.len() >= MAX_LISTED {
                *self = Self::Everything;
            } else {
                names.insert(namespace.to_owned());
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Names to hand out in the next batch.
    waiting: HashSet<String>,
    /// What changed for each name since its handler last asked.
    changed: HashMap<String, Changed>,
}

/// Names waiting to be handled (profiles to reconcile, new namespaces to serve), without duplicates.
#[derive(Default)]
pub struct Dirty {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Dirty {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks names as needing their handler: something of their own changed.
    pub fn mark(&self, names: impl IntoIterator<Item = String>) {
        let woken = self.with(|inner| {
            let before = inner.waiting.len();
            inner.waiting.extend(names);
            inner.waiting.len() > before
        });
        if woken {
            self.notify.notify_one();
        }
    }

    /// Marks names as needing their handler, which must look at every namespace (a watch relisted: what changed
    /// while it was away is not known).
    pub fn mark_everything(&self, names: impl IntoIterator<Item = String>) {
        let names: Vec<String> = names.into_iter().collect();
        self.with(|inner| {
            for name in &names {
                inner.changed.insert(name.clone(), Changed::Everything);
            }
        });
        self.mark(names);
    }

    /// Records that `namespace` changed for each of `names`, without waking their handler (see [`Dirty::mark`]).
    pub fn note(&self, names: &[String], namespace: &str) {
        self.with(|inner| {
            for name in names {
                inner.changed.entry(name.clone()).or_default().add(namespace);
            }
        });
    }

    /// [`Dirty::note`], then [`Dirty::mark`].
    pub fn mark_namespace(&self, names: Vec<String>, namespace: &str) {
        self.note(&names, namespace);
        self.mark(names);
    }

    /// Marks those of `names` for which a change is still recorded ([`Dirty::note`]): a later mark whose changes an
    /// earlier handler has already taken wakes nobody.
    pub fn mark_noted(&self, names: impl IntoIterator<Item = String>) {
        let names: Vec<String> =
            self.with(|inner| names.into_iter().filter(|n| inner.changed.contains_key(n)).collect());
        self.mark(names);
    }

    /// What changed for `name` since the last call (nothing recorded: no namespace in particular).
    pub fn changed(&self, name: &str) -> Changed {
        self.with(|inner| inner.changed.remove(name).unwrap_or_default())
    }

    /// Forgets every mark.
    pub fn clear(&self) {
        self.with(|inner| {
            inner.waiting.clear();
            inner.changed.clear();
        });
    }

    fn take(&self) -> Vec<String> {
        let mut names: Vec<String> = self.with(|inner| inner.waiting.drain().collect());
        names.sort();
        names
    }

    /// The names marked since the last batch, one batch at a time, forever. Meant for a single consumer.
    pub fn batches(self: Arc<Self>) -> impl Stream<Item = Vec<String>> + Send {
        futures::stream::unfold(self, |dirty| async move {
            loop {
                let names = dirty.take();
                if !names.is_empty() {
                    return Some((names, dirty));
                }
                dirty.notify.notified().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test]
    async fn dirty_marks_collapse_into_one_batch_and_wake_the_consumer() {
        let dirty = Arc::new(Dirty::default());
        let mut batches = Box::pin(dirty.clone().batches());
        for _ in 0..1000 {
            dirty.mark(["b".to_owned(), "a".to_owned()]);
        }
        let first = tokio::time::timeout(Duration::from_secs(5), batches.next()).await;
        assert_eq!(first, Ok(Some(vec!["a".to_owned(), "b".to_owned()])));
        // A consumer already waiting (polled once, found nothing) is woken by a later mark.
        let mut waiter = batches.next();
        assert!(futures::poll!(&mut waiter).is_pending(), "a batch before anything was marked");
        dirty.mark(["c".to_owned()]);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(second, Ok(Some(vec!["c".to_owned()])));
    }

    #[test]
    fn what_changed_is_kept_per_name_until_asked_and_overflows_into_everything() {
        let dirty = Dirty::default();
        let p = || vec!["p".to_owned()];
        dirty.note(&p(), "a");
        dirty.mark_namespace(p(), "b");
        dirty.mark(["q".to_owned()]);
        let names = |v: &[&str]| Changed::Namespaces(v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(dirty.changed("p"), names(&["a", "b"]));
        assert_eq!(dirty.changed("p"), names(&[]), "asking takes what was recorded");
        assert_eq!(dirty.changed("q"), names(&[]), "a mark of its own names no namespace");
        for i in 0..=MAX_LISTED {
            dirty.note(&p(), &format!("ns-{i}"));
        }
        assert_eq!(dirty.changed("p"), Changed::Everything);
        dirty.mark_everything(p());
        dirty.note(&p(), "a");
        assert_eq!(dirty.changed("p"), Changed::Everything, "everything stays everything");
        assert_eq!(dirty.take(), ["p".to_owned(), "q".to_owned()]);
        // A settled mark wakes only the names whose changes nobody has taken yet.
        dirty.note(&p(), "a");
        dirty.mark_noted(["p".to_owned(), "q".to_owned()]);
        assert_eq!(dirty.take(), ["p".to_owned()]);
        drop(dirty.changed("p"));
        dirty.mark_noted(p());
        assert!(dirty.take().is_empty());
    }
}
