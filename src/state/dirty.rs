//! The profiles waiting to be reconciled: a set rather than a queue. Ten thousand namespace events at start-up
//! collapse into one entry per profile, and a replica that is not reconciling holds at most one entry per profile.
//! The controller drains it as its trigger stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use tokio::sync::Notify;

/// Names waiting to be handled (profiles to reconcile, new namespaces to serve), without duplicates.
#[derive(Default)]
pub struct Dirty {
    names: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Dirty {
    /// Marks profiles as needing a reconcile.
    pub fn mark(&self, names: impl IntoIterator<Item = String>) {
        let mut set = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let before = set.len();
        set.extend(names);
        if set.len() > before {
            self.notify.notify_one();
        }
    }

    /// Forgets every mark.
    pub fn clear(&self) {
        self.names.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn take(&self) -> Vec<String> {
        let mut set = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = set.drain().collect();
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
}
