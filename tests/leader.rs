//! Leader election between replicas: one reconciles and mints, the others only serve the webhook; a crashed
//! leader is replaced within the lease duration, and a stopped one hands over cleanly.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use support::harness::{Harness, basic_spec};
use support::{Operator, TestEnv, wait_for};

/// Waits until exactly one of `replicas` says it leads; returns its index.
async fn leader_of(replicas: &[&Operator]) -> usize {
    wait_for("exactly one replica to lead", Duration::from_secs(60), || async {
        let mut leading = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.metric("regcred_leader").await == 1.0 {
                leading.push(i);
            }
        }
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

#[tokio::test]
async fn one_replica_reconciles_and_another_takes_over_within_the_lease_when_it_dies() {
    TestEnv::new("leader")
        .await
        .run(|env| async move {
            let mut h = Harness::start(&env).await;
            let second = Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &[]);
            h.source("creds", &[("username", "u"), ("password", "first")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            let ns1 = env.namespace("a", &[("regcred-test", &env.id), ("pull", "yes")]).await;
            h.wait_credentials(&ns1, "pull", support::harness::SERVER, "first").await;
            h.ready(&profile).await;

            let first = h.operator.take().unwrap();
            let leader = leader_of(&[&first, &second]).await;
            let (leader, follower) = if leader == 0 { (first, second) } else { (second, first) };
            // The follower watches (its webhook answers from the same view) but writes nothing.
            assert_eq!(follower.metric("regcred_reconciles_total").await, 0.0, "a follower reconciled");
            assert!(follower.metric("regcred_managed_secrets").await >= 1.0, "the follower's view is empty");

            // The leader crashes. A namespace created now is served by the follower once it holds the lease.
            leader.kill().await;
            let killed = Instant::now();
            let ns2 = env.namespace("b", &[("regcred-test", &env.id), ("pull", "yes")]).await;
            let lease_duration = Duration::from_secs(10);
            wait_for("the follower to take over and serve the new namespace", lease_duration * 6, || async {
                h.secret(&ns2, "pull").await
            })
            .await;
            let takeover = killed.elapsed();
            println!("takeover after SIGKILL of the leader: {:.1} s (lease duration 10 s)", takeover.as_secs_f64());
            assert_eq!(follower.metric("regcred_leader").await, 1.0);
            assert!(follower.metric("regcred_reconciles_total").await >= 1.0);
            let logs = follower.logs();
            assert!(logs.contains("leading: reconciling"), "{logs}");
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
            let held = leases.get("regcred").await.unwrap();
            assert!(held.spec.unwrap().holder_identity.is_some());

            let (success, took) = operator.terminate().await;
            println!("SIGTERM to exit: {:.2} s", took.as_secs_f64());
            assert!(success, "regcred did not exit successfully on SIGTERM");
            let released = leases.get("regcred").await.unwrap();
            assert_eq!(released.spec.unwrap().holder_identity, None, "the lease was not released");
        })
        .await;
}
