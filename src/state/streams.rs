//! The watches opened for one consumer each, rather than kept in the view: what they deliver is acted on once and
//! not read again, and each runs only while its consumer does.
//!
//! - [`pull_failures`]: the kubelet's pull-failure Events, which the leader's self-healing reads while it leads;
//! - [`webhook_configuration`]: the webhook's own MutatingWebhookConfiguration, whose `caBundle` the webhook's
//!   certificate keeper restores when the configuration is re-created without it.
//!
//! Both retry with kube's default backoff: the streams end only when dropped.

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

/// The kubelet's pull failures, selected by the apiserver: reason `Failed` on a Pod (its message says
/// `Failed to pull image ...`).
pub const PULL_FAILURE_FIELDS: &str = "involvedObject.kind=Pod,reason=Failed";

/// Every Event that may be the kubelet's report of a failed pull ([`PULL_FAILURE_FIELDS`]), cluster-wide, as it is
/// created or updated. Anyone who may create Events can write one: each is a claim to be checked, never a fact.
pub fn pull_failures(client: &Client) -> impl Stream<Item = Result<CoreEvent, watcher::Error>> + Send + 'static {
    let api = Api::<CoreEvent>::all(client.clone());
    watcher(api, watcher::Config::default().fields(PULL_FAILURE_FIELDS)).default_backoff().applied_objects()
}

/// The MutatingWebhookConfiguration `name`, each time it is created or changed. Watch errors are retried inside
/// the stream and left out of it: only the configurations it delivers matter to its reader.
pub fn webhook_configuration(client: &Client, name: &str) -> impl Stream<Item = MutatingWebhookConfiguration> + Send {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config).default_backoff().applied_objects().filter_map(|c| futures::future::ready(c.ok()))
}
