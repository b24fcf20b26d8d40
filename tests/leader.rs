//! Leader election between replicas: one reconciles and mints, the others only serve the webhook; a crashed
//! leader is replaced within the lease duration (and a margin, asserted on the Lease's own times), and a stopped
//! one hands over cleanly.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use regcred::names::PROFILE_LABEL;
use support::harness::{Harness, SERVER, WAIT, basic_spec};
use support::{Operator, TestEnv, http_get, leader_of, wait_for};

/// The Lease regcred's replicas compete for (`--leader-election-lease`).
const LEASE: &str = "regcred";

/// How late after the lease expired a live replica may acquire it: kube-lease-manager waits up to 1 s after
/// clearing an expired holder before it takes the lease, and the two requests it makes meanwhile are allowed 2 s
/// on this busy 2-core machine.
const TAKEOVER_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(3);

/// Waits until `operator` is ready: its caches hold their initial lists (and its webhook serves, if it has one).
async fn ready(operator: &Operator) {
    let addr = operator.metrics_addr().await;
    wait_for("the replica to be ready", WAIT, || async { (http_get(&addr, "/readyz").await.0 == 200).then_some(()) })
        .await;
}

/// Every version of the Lease the apiserver stores from now on (the current one first), collected in the
/// background while the returned handle is alive.
async fn lease_history(leases: Api<Lease>) -> (Arc<Mutex<Vec<Lease>>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(Vec::new()));
    let seen = history.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
    let mut versions = Box::pin(watcher(leases, config).applied_objects());
    let task = tokio::spawn(async move {
        while let Ok(Some(lease)) = versions.try_next().await {
            seen.lock().unwrap().push(lease);
        }
    });
    wait_for("the Lease's current version", WAIT, || async { (!history.lock().unwrap().is_empty()).then_some(()) })
        .await;
    (history, task)
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

#[tokio::test]
async fn one_replica_reconciles_and_another_takes_over_within_the_lease_when_it_dies() {
    TestEnv::new("leader")
        .await
        .run(|env| async move {
            let mut h = Harness::start(&env).await;
            h.source("creds", &[("username", "u"), ("password", "first")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            let ns1 = env.namespace("a", &[("pull", "yes")]).await;
            h.wait_credentials(&ns1, "pull", SERVER, "first").await;
            h.ready(&profile).await;
            let leader = h.operator.take().unwrap();
            leader_of(&[&leader]).await;

            // A second replica, started with the Secret in place: once ready, its view holds it (its caches hold
            // their initial lists), as its webhook would answer from it. It watches but writes nothing.
            let follower = Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &[]);
            ready(&follower).await;
            assert_eq!(leader_of(&[&leader, &follower]).await, 0, "the first replica leads");
            assert_eq!(follower.metric("regcred_reconciles_total").await, 0.0, "a follower reconciled");

            // The leader crashes. A namespace created now is served by the follower once it holds the lease.
            let leases: Api<Lease> = Api::namespaced(h.client(), &h.op_ns);
            let (history, watching) = lease_history(leases).await;
            let old = history.lock().unwrap()[0].clone();
            let old_holder = holder(&old).expect("the Lease has a holder").to_owned();
            leader.kill().await;
            let ns2 = env.namespace("b", &[("pull", "yes")]).await;
            let lease_duration = old.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap();
            wait_for(
                "the follower to take over and serve the new namespace",
                std::time::Duration::from_secs(u64::try_from(lease_duration).unwrap() * 6),
                || async { h.secret(&ns2, "pull").await },
            )
            .await;
            assert_eq!(follower.metric("regcred_leader").await, 1.0);

            // The bound, from the Lease's own record: the follower acquired it after the old holder's last
            // renewal had expired, and at most the margin later.
            watching.abort();
            let history = history.lock().unwrap().clone();
            let last_renewal = history
                .iter()
                .filter(|l| holder(l) == Some(&old_holder))
                .filter_map(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0))
                .max()
                .unwrap();
            let taken = history.iter().find(|l| holder(l).is_some_and(|h| h != old_holder)).expect("a new holder");
            let new_holder = holder(taken).unwrap();
            let pid = follower.pid().unwrap();
            assert!(new_holder.ends_with(&format!("-{pid}")), "{new_holder} is not the follower (pid {pid})");
            let acquired = taken.spec.as_ref().and_then(|s| s.acquire_time.as_ref()).unwrap().0;
            let expired = last_renewal + jiff::SignedDuration::from_secs(i64::from(lease_duration));
            let late = acquired.duration_since(expired);
            println!(
                "takeover after SIGKILL of the leader: acquired {:.2} s after its last renewal (lease duration {lease_duration} s)",
                acquired.duration_since(last_renewal).as_secs_f64()
            );
            assert!(!late.is_negative(), "the lease was taken {:?} before it expired", late.abs());
            assert!(late <= TAKEOVER_MARGIN, "the lease was taken {late:?} after it expired (margin {TAKEOVER_MARGIN:?})");

            // Counted once the reconcile that wrote the Secret has also written the status.
            wait_for("the new leader's reconciles to be counted", WAIT, || async {
                (follower.metric("regcred_reconciles_total").await >= 1.0).then_some(())
            })
            .await;
            let logs = follower.logs();
            assert!(logs.contains("leading: reconciling"), "{logs}");
            // This profile's Secrets, wherever they are: the two namespaces it selects, and nothing else.
            let ours = ListParams::default().labels(&format!("{PROFILE_LABEL}={profile}"));
            let written = Api::<Secret>::all(h.client()).list(&ours).await.unwrap();
            let places: BTreeSet<String> = written.items.iter().filter_map(|s| s.namespace()).collect();
            assert_eq!((written.items.len(), places), (2, BTreeSet::from([ns1, ns2])));
        })
        .await;
}

#[tokio::test]
async fn sigterm_stops_the_operator_cleanly_and_releases_its_lease() {
    TestEnv::new("shutdown")
        .await
        .run(|env| async move {
            let mut h = Harness::start(&env).await;
            let operator = h.operator.take().unwrap();
            leader_of(&[&operator]).await;
            let leases: Api<Lease> = Api::namespaced(h.client(), &h.op_ns);
            let held = leases.get(LEASE).await.unwrap();
            assert!(held.spec.unwrap().holder_identity.is_some());

            let (success, took) = operator.terminate().await;
            println!("SIGTERM to exit: {:.2} s", took.as_secs_f64());
            assert!(success, "regcred did not exit successfully on SIGTERM");
            let released = leases.get(LEASE).await.unwrap();
            assert_eq!(released.spec.unwrap().holder_identity, None, "the lease was not released");
        })
        .await;
}

/// Only the leader mints. A follower's webhook that admits a Pod into a namespace created a moment ago (here:
/// while the leader is dead and its lease not yet expired) copies the token the leader wrote elsewhere, so the Pod
/// still references a Secret that exists and works.
#[tokio::test]
async fn a_followers_webhook_serves_a_token_profile_in_a_brand_new_namespace() {
    use support::free_port;
    use support::webhook::{create_pod, pod, register};
    const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    TestEnv::new("followerhook")
        .await
        .run(|env| async move {
            let moto = support::tokens::Moto::start().await;
            // The leader: no webhook.
            let mut h = Harness::start_env(&env, &[], &moto.env()).await;
            let leader = h.operator.take().unwrap();
            leader_of(&[&leader]).await;
            h.source("aws", &[("aws_access_key_id", "AKIDTESTTESTTEST"), ("aws_secret_access_key", "secret-test")])
                .await;
            let spec = serde_json::json!({
                "provider": "ecr",
                "server": ECR_HOST,
                "credentials": {"ecr": {"secretRef": {"name": "aws"}}},
                "namespaces": h.select("yes"),
                "secretName": "pull",
            });
            let profile = h.profile("p", spec).await;
            let first = env.namespace("a", &[("pull", "yes")]).await;
            h.wait_credentials(&first, "pull", ECR_HOST, "123456789012-auth-token").await;
            h.ready(&profile).await;
            let uid = Api::<regcred::api::RegistryProfile>::all(h.client()).get(&profile).await.unwrap().metadata.uid;
            let copy = regcred::names::token_copy_name(uid.as_deref().unwrap());
            wait_for("the leader's copy of the token in regcred's namespace", WAIT, || async {
                h.secret(&h.op_ns, &copy).await
            })
            .await;
            // Tenants forge Secrets with the profile's Secret name, regcred's label and an ownerReference to the
            // profile, holding credentials of their own. The follower must never copy one of those.
            let planted = format!(r#"{{"auths":{{"{ECR_HOST}":{{"username":"AWS","password":"planted"}}}}}}"#);
            for i in 0..5 {
                let ns = env.namespace_nowait(&format!("forger{i}"), &[("pull", "no")]).await;
                let forged: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "pull", "labels": {"app.kubernetes.io/managed-by": "regcred"},
                                 "ownerReferences": [{"apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                                                      "name": profile, "uid": uid}]},
                    "type": "kubernetes.io/dockerconfigjson",
                    "stringData": {".dockerconfigjson": planted},
                }))
                .unwrap();
                Api::namespaced(h.client(), &ns).create(&Default::default(), &forged).await.unwrap();
            }
            // The follower: the only webhook the apiserver calls. Started with the leader's Secret, its token copy
            // and the forgeries in place: once ready, its view holds them all (its caches hold their initial lists).
            let port = free_port();
            let name = register(&env, port, None).await;
            let addr = format!("127.0.0.1:{port}");
            let args = ["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
            let follower = Operator::start_env(&h.kubeconfig, &h.op_ns, &env.id, &args, &moto.env());
            support::webhook::wait_ca_bundle(&h.client(), &name, WAIT).await;
            ready(&follower).await;

            leader.kill().await;
            let fresh = env.namespace_nowait("b", &[("pull", "yes")]).await;
            let image = format!("{ECR_HOST}/team/app:1");
            let secrets = create_pod(&h, &fresh, &pod("app", &[&image], &[], &[])).await;
            assert_eq!(follower.metric("regcred_leader").await, 0.0, "the follower took over too early to tell");
            assert_eq!(secrets, vec!["pull".to_owned()], "{}", follower.logs());
            assert_eq!(follower.metric("regcred_webhook_secrets_created_total").await, 1.0);
            h.wait_credentials(&fresh, "pull", ECR_HOST, "123456789012-auth-token").await;
            let secret = h.secret(&fresh, "pull").await.unwrap();
            assert!(secret.metadata.annotations.unwrap_or_default().contains_key("regcred.dev/expires-at"));
            assert_eq!(follower.metric("regcred_token_mints_total").await, 0.0, "a follower minted");
        })
        .await;
}
