//! The new-namespace path: a namespace that appears (or gains the labels a profile selects) gets each profile's
//! Secret at once, without waiting for that profile's reconcile, which may be busy with other work (a full plan,
//! a rotation). Here the cost is one lookup per profile and one create: what one namespace costs. What is written
//! is the Secret [`crate::resolve::Written::secret_in`] says is written there now (through [`secrets::ensure`]);
//! a profile whose delivery writes no Secret (`spec.delivery: CredentialProvider`) is passed over. The
//! reconcile that follows (the namespace marked its profiles, for that namespace) plans that namespace alone,
//! finds the Secret in place, because the writer records its writes in the view, and counts it in the status.

use futures::StreamExt;
use kube::Client;
use tracing::{Instrument, debug, debug_span};

use crate::secrets::{self, EnsureError};
use crate::state::View;

/// Namespaces served at once.
const CONCURRENCY: usize = 16;

/// Serves new namespaces until dropped. Namespaces that appeared while this replica did not lead are covered by
/// the reconcile of every profile that starts each term, so the set is emptied first.
pub async fn serve(client: Client, view: View) {
    if !view.ready().await {
        return;
    }
    view.new_namespaces().clear();
    let batches = view.new_namespaces().clone().batches();
    batches
        .flat_map(futures::stream::iter)
        .for_each_concurrent(CONCURRENCY, |namespace| {
            let (client, view) = (client.clone(), view.clone());
            // A debug span: everything this path logs is at debug, and a span at info costs every namespace a formatted
            // field for nothing.
            let span = debug_span!("new namespace", namespace = %namespace);
            async move { serve_one(&client, &view, &namespace).await }.instrument(span)
        })
        .await;
}

/// Writes every missing Secret a selecting profile owes `namespace`.
async fn serve_one(client: &Client, view: &View, namespace: &str) {
    let Some(ns) = view.namespace(namespace) else { return };
    for (profile, meaning) in view.profiles_and_meanings() {
        if !meaning.writes_secret || !meaning.selects(&ns) || view.managed().contains(namespace, &meaning.secret_name) {
            continue;
        }
        match secrets::ensure(client, view, profile, &ns).await {
            Ok(()) => debug!(profile = %meaning.name, "Secret written for a new namespace"),
            // The reconcile decides, and reports, whatever this path leaves.
            Err(e @ (EnsureError::Withheld(_) | EnsureError::NothingToWrite | EnsureError::Refused(_))) => {
                debug!(profile = %meaning.name, reason = %e, "left to the reconcile");
            }
            Err(e) => {
                debug!(profile = %meaning.name, error = %e, "write failed; the reconcile retries");
                view.dirty().mark_namespace(vec![meaning.name.clone()], namespace);
            }
        }
    }
}
