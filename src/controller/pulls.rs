//! The kubelet's pull failures, reported on the profiles whose registry they concern: an outside stream of
//! Events (the kubelet's `Failed` Events about Pods, selected by the apiserver), each read by
//! [`crate::images::pulls`] and recorded within its bound; the profile is then reconciled, and its status shows them.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::Resource as _;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use tracing::{debug, warn};

use super::Context;
use super::events::{Event, EventType};
use crate::images::pulls;

/// The kubelet's pull failures: reason `Failed` on a Pod (its message says `Failed to pull image ...`).
const FIELDS: &str = "involvedObject.kind=Pod,reason=Failed";

/// Follows the kubelet's pull-failure Events until the stream ends (it does not: the watcher retries).
pub async fn follow(ctx: Arc<Context>) {
    let api = Api::<CoreEvent>::all(ctx.client.clone());
    let events = watcher(api, watcher::Config::default().fields(FIELDS)).default_backoff().applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => seen(&ctx, &event).await,
            Err(e) => warn!(error = %e, "watching the kubelet's pull failures"),
        }
    }
}

/// Records one Event, when it is a recent pull failure of an image from a profile's registry.
async fn seen(ctx: &Context, event: &CoreEvent) {
    let Some((image, reason)) = event.message.as_deref().and_then(pulls::parse) else { return };
    let (Some(namespace), Some(pod)) = (&event.involved_object.namespace, &event.involved_object.name) else {
        return;
    };
    let at = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .unwrap_or_else(jiff::Timestamp::now);
    let now = jiff::Timestamp::now();
    if now.duration_since(at).unsigned_abs() >= pulls::RECENT {
        return;
    }
    let Some(ns) = ctx.view.namespace(namespace) else { return };
    let profiles = ctx.view.profiles_and_meanings();
    // Profiles that are gone take their failures with them (the bound holds whatever the churn of profiles).
    ctx.pulls.retain(|p| profiles.iter().any(|(_, m)| m.name == p));
    let count = event.count.or_else(|| event.series.as_ref().and_then(|s| s.count)).unwrap_or(1).max(1);
    let message = event.message.as_deref().unwrap_or_default();
    for profile in pulls::profiles_for(&image, &profiles, &ns) {
        let failure = pulls::failure(namespace, pod, &image, reason, message, count, at);
        let previous = ctx.pulls.record(&profile, failure);
        let added = count - previous.unwrap_or(0);
        if added > 0 {
            ctx.metrics.pull_failed(&profile, reason, u64::from(added.unsigned_abs()));
        }
        debug!(profile, namespace, pod, image, reason, "pull failure");
        if previous.is_none()
            && let Some(p) = ctx.view.profiles.get(&ObjectRef::new(&profile))
        {
            let note = format!("Pod {namespace}/{pod} could not pull {image}: {reason}");
            let event = Event {
                type_: EventType::Warning,
                reason: "PullFailed".into(),
                note: Some(pulls::shorten(&note)),
                action: "Pull".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &p.object_ref(&())).await {
                warn!(error = %e, "could not publish an Event");
            }
        }
        ctx.view.dirty.mark([profile]);
    }
}
