//! Leader election: every replica watches and serves the webhook, one replica (the holder of a Lease in
//! regcred's namespace) reconciles profiles and mints tokens. Outside events reach the controller as a stream of
//! leadership changes.

use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{info, warn};

/// Who competes for which Lease, and for how long a lease holds.
#[derive(Clone, Debug)]
pub struct Election {
    /// Lease name, in regcred's namespace.
    pub lease: String,
    pub namespace: String,
    /// This replica's identity (its Pod name in a cluster).
    pub identity: String,
    /// How long a lease holds without renewal: the worst-case failover time after a crash.
    pub duration: Duration,
}

impl Election {
    /// Renewal starts this long before the lease expires: a third of its duration, at least one second.
    fn grace(&self) -> u64 {
        (self.duration.as_secs() / 3).max(1)
    }
}

/// Joins the election. The receiver says whether this replica leads now; it changes as leadership moves. When
/// every receiver is dropped the lease is released and the returned task ends: await it on shutdown so the next
/// leader does not wait for the lease to expire.
pub async fn join(
    client: Client,
    election: &Election,
) -> Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>), LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration.as_secs().max(2))
        .with_grace(election.grace())
        .with_field_manager(format!("regcred-{}", election.identity))
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    let identity = election.identity.clone();
    let task = tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => info!(%identity, "left the leader election"),
            Ok(Err(e)) => warn!(%identity, error = %e, "leader election ended with an error"),
            Err(e) => warn!(%identity, error = %e, "leader election task failed"),
        }
    });
    Ok((leading, task))
}

/// A default identity for a process outside a Pod: host name and process id.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "regcred".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Completes when `leading` says this replica leads (true) or follows (false), or the election is gone.
pub async fn until(leading: &mut watch::Receiver<bool>, lead: bool) -> bool {
    leading.wait_for(|l| *l == lead).await.is_ok()
}

/// A future that completes when either future does.
pub fn either(
    a: impl std::future::Future<Output = ()> + Send + 'static,
    b: impl std::future::Future<Output = ()> + Send + 'static,
) -> futures::future::BoxFuture<'static, ()> {
    futures::future::select(a.boxed(), b.boxed()).map(|_| ()).boxed()
}
