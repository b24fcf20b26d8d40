//! Leader election between replicas: one reconciles and mints, the others only serve the webhook; a crashed
//! leader is replaced within the lease duration, and a stopped one hands over cleanly.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use support::harness::{Harness, basic_spec};
use support::{Operator, TestEnv, leader_of, wait_for};

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
            wait_for("the follower's view to hold the Secret", Duration::from_secs(30), || async {
                (follower.metric("regcred_managed_secrets").await >= 6.0).then_some(())
            })
            .await;

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
            // Counted once the reconcile that wrote the Secret has also written the status.
            wait_for("the new leader's reconciles to be counted", Duration::from_secs(30), || async {
                (follower.metric("regcred_reconciles_total").await >= 1.0).then_some(())
            })
            .await;
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

/// Only the leader mints. A follower's webhook that admits a Pod into a namespace created a moment ago (here:
/// while the leader is dead and its lease not yet expired) copies the token the leader wrote elsewhere, so the Pod
/// still references a Secret that exists and works.
#[tokio::test]
async fn a_followers_webhook_serves_a_token_profile_in_a_brand_new_namespace() {
    use support::webhook::{create_pod, free_port, pod, register};
    const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    TestEnv::new("followerhook")
        .await
        .run(|env| async move {
            let moto = support::tokens::Moto::start().await;
            // The leader: no webhook.
            let mut h = Harness::start_env(&env, &[], &moto.env()).await;
            let leader = h.operator.take().unwrap();
            leader_of(&[&leader]).await;
            // The follower: the only webhook the apiserver calls.
            let port = free_port();
            let name = register(&env, port, None).await;
            let addr = format!("127.0.0.1:{port}");
            let args = ["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
            let follower = Operator::start_env(&h.kubeconfig, &h.op_ns, &env.id, &args, &moto.env());
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
            // Tenants forge Secrets with the profile's Secret name, regcred's label and an ownerReference to the
            // profile, holding credentials of their own. The follower must never copy one of those.
            let uid = Api::<regcred::api::RegistryProfile>::all(h.client()).get(&profile).await.unwrap().metadata.uid;
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
            let configs = Api::<MutatingWebhookConfiguration>::all(h.client());
            wait_for("the follower's webhook to serve", Duration::from_secs(30), || async {
                let c = configs.get(&name).await.ok()?;
                c.webhooks?.first()?.client_config.ca_bundle.as_ref()?;
                (follower.metric("regcred_managed_secrets").await >= 6.0).then_some(())
            })
            .await;

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
