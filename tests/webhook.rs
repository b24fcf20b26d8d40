//! The Pod admission webhook against the real local control plane: the apiserver calls the real `regcred` binary
//! over HTTPS (registered by URL, trusted through the caBundle regcred manages), and the operator runs as a
//! ServiceAccount bound to exactly the chart's RBAC rules.
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::harness::{Harness, WAIT, basic_spec};
use support::{TestEnv, wait_for};

const REGISTRY: &str = "registry.example.com:5000";

/// A loopback port nothing listens on yet.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The Secret name `basic_spec` gives the profile.
const SECRET: &str = "pull";

/// Registers the test's webhook (by URL, without a caBundle: regcred fills it in), limited to the test's own
/// namespaces so parallel tests do not call each other's webhooks, starts the operator serving it, and applies a
/// ready profile for namespaces labelled `pull=yes` with images from [`REGISTRY`].
async fn start(env: &TestEnv, extra: &[&str]) -> Harness {
    let port = free_port();
    let name = support::webhook_configuration_name(env);
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "pods.regcred.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "namespaceSelector": {
                "matchLabels": {"regcred-test": env.id},
                "matchExpressions": [{"key": "regcred.dev/inject", "operator": "NotIn", "values": ["disabled"]}],
            },
            "objectSelector": {
                "matchExpressions": [{"key": "regcred.dev/inject", "operator": "NotIn", "values": ["disabled"]}],
            },
        }],
    }))
    .unwrap();
    support::apply(&Api::<MutatingWebhookConfiguration>::all(env.client.clone()), &config).await;
    env.cleanup::<MutatingWebhookConfiguration>(&name);
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
    args.extend_from_slice(extra);
    let h = Harness::start_with(env, &args).await;
    // Ready once regcred has published its CA.
    let api = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    wait_for("the webhook's caBundle", WAIT, || async {
        let c = api.get(&name).await.ok()?;
        c.webhooks?.first()?.client_config.ca_bundle.as_ref().map(|_| ())
    })
    .await;
    h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
    let mut spec = basic_spec(h.select("yes"));
    spec["server"] = json!(REGISTRY);
    let profile = h.profile("p", spec).await;
    h.ready(&profile).await;
    h
}

fn pod(name: &str, images: &[&str], pull_secrets: &[&str], labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        },
        "spec": {
            "containers": images.iter().enumerate().map(|(i, image)| json!({"name": format!("c{i}"), "image": image})).collect::<Vec<_>>(),
            "imagePullSecrets": pull_secrets.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        }
    }))
    .unwrap()
}

/// Creates a Pod (retrying while the namespace's default ServiceAccount is not there yet) and returns the names
/// of its imagePullSecrets as admitted.
async fn create_pod(h: &Harness, ns: &str, pod: &Pod) -> Vec<String> {
    let api = Api::<Pod>::namespaced(h.client(), ns);
    let created = wait_for("a Pod to be admitted", WAIT, || async {
        match api.create(&PostParams::default(), pod).await {
            Ok(p) => Some(p),
            Err(kube::Error::Api(e)) if e.message.contains("serviceaccount") => None,
            Err(e) => panic!("creating Pod {:?} in {ns}: {e}", pod.metadata.name),
        }
    })
    .await;
    created.spec.unwrap().image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect()
}

#[tokio::test]
async fn pods_get_exactly_the_secrets_their_images_need() {
    TestEnv::new("inject")
        .await
        .run(|env| async move {
            let h = start(&env, &[]).await;
            let selected = env.namespace("sel", &[("pull", "yes")]).await;
            let unselected = env.namespace("unsel", &[("pull", "no")]).await;
            let opted_out = env.namespace("optout", &[("pull", "yes"), ("regcred.dev/inject", "disabled")]).await;
            let image = format!("{REGISTRY}/team/app:1");

            // A Pod whose image comes from the profile's registry gets its Secret.
            assert_eq!(create_pod(&h, &selected, &pod("a", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);
            // Several containers, one matching: still exactly one entry.
            let two = pod("b", &["nginx", &image, &format!("{REGISTRY}/other")], &[], &[]);
            assert_eq!(create_pod(&h, &selected, &two).await, vec![SECRET.to_owned()]);
            // Images from elsewhere: untouched.
            assert!(create_pod(&h, &selected, &pod("c", &["nginx", "ghcr.io/x/y"], &[], &[])).await.is_empty());
            // Existing pull secrets are kept and merged, never duplicated.
            let merged = create_pod(&h, &selected, &pod("d", &[&image], &["mine"], &[])).await;
            assert_eq!(merged, vec!["mine".to_owned(), SECRET.to_owned()]);
            let already = create_pod(&h, &selected, &pod("e", &[&image], &[SECRET], &[])).await;
            assert_eq!(already, vec![SECRET.to_owned()]);
            // A namespace the profile does not select, an opted-out namespace, an opted-out Pod: untouched.
            assert!(create_pod(&h, &unselected, &pod("f", &[&image], &[], &[])).await.is_empty());
            assert!(create_pod(&h, &opted_out, &pod("g", &[&image], &[], &[])).await.is_empty());
            let pod_out = pod("h", &[&image], &[], &[("regcred.dev/inject", "disabled")]);
            assert!(create_pod(&h, &selected, &pod_out).await.is_empty());
            // Init containers count too.
            let mut init = pod("i", &["nginx"], &[], &[]);
            let spec = init.spec.as_mut().unwrap();
            spec.init_containers = Some(vec![serde_json::from_value(json!({"name": "init", "image": image})).unwrap()]);
            assert_eq!(create_pod(&h, &selected, &init).await, vec![SECRET.to_owned()]);
        })
        .await;
}

#[tokio::test]
async fn a_pod_in_a_brand_new_namespace_never_references_a_missing_secret() {
    TestEnv::new("newns")
        .await
        .run(|env| async move {
            let h = start(&env, &[]).await;
            let image = format!("{REGISTRY}/team/app:1");
            for i in 0..8 {
                let ns = env.namespace_nowait(&format!("n{i}"), &[("pull", "yes")]).await;
                let names = create_pod(&h, &ns, &pod("p", &[&image], &[], &[])).await;
                assert_eq!(names, vec![SECRET.to_owned()], "namespace {ns}");
                // Read right after admission: the Secret the Pod references exists.
                assert!(h.secret(&ns, SECRET).await.is_some(), "the Pod in {ns} references a missing Secret");
            }
        })
        .await;
}

#[tokio::test]
async fn dry_runs_have_no_side_effects_and_pods_are_admitted_while_the_webhook_is_down() {
    TestEnv::new("down")
        .await
        .run(|env| async move {
            let mut h = start(&env, &[]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let image = format!("{REGISTRY}/team/app:1");
            // A dry run answers as the real request would, and creates no Pod.
            let api = Api::<Pod>::namespaced(h.client(), &ns);
            let dry = api
                .create(&PostParams { dry_run: true, ..Default::default() }, &pod("dry", &[&image], &[], &[]))
                .await
                .unwrap();
            assert_eq!(dry.spec.unwrap().image_pull_secrets.unwrap().len(), 1);
            assert!(api.get_opt("dry").await.unwrap().is_none());

            // failurePolicy Ignore: with regcred gone, Pods are still created, promptly.
            h.operator.take().unwrap().kill().await;
            let started = Instant::now();
            let names = create_pod(&h, &ns, &pod("while-down", &[&image], &[], &[])).await;
            assert!(names.is_empty());
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "a down webhook delayed a Pod by {:?}",
                started.elapsed()
            );
        })
        .await;
}

#[tokio::test]
async fn with_service_account_mode_pods_carry_the_secret_while_the_webhook_is_down() {
    TestEnv::new("samode")
        .await
        .run(|env| async move {
            let mut h = start(&env, &[]).await;
            let mut spec = basic_spec(h.select("yes"));
            spec["server"] = json!(REGISTRY);
            spec["serviceAccounts"] = json!({"names": ["default"]});
            h.profile("p", spec).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let accounts = Api::<ServiceAccount>::namespaced(h.client(), &ns);
            wait_for("the default ServiceAccount to list the Secret", WAIT, || async {
                let sa = accounts.get_opt("default").await.ok()??;
                sa.image_pull_secrets?.iter().any(|r| r.name == SECRET).then_some(())
            })
            .await;

            // The webhook (and the whole operator) is down: the ServiceAccount admission plugin still gives the
            // Pod the Secret.
            h.operator.take().unwrap().kill().await;
            let image = format!("{REGISTRY}/team/app:1");
            let names = create_pod(&h, &ns, &pod("while-down", &[&image], &[], &[])).await;
            assert_eq!(names, vec![SECRET.to_owned()]);
        })
        .await;
}

#[tokio::test]
async fn certificate_rotation_under_a_stream_of_pods_loses_no_request() {
    TestEnv::new("rotate")
        .await
        .run(|env| async move {
            // 15 s certificates: replaced every 10 s.
            let h = start(&env, &["--webhook-cert-lifetime", "15s"]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let image = format!("{REGISTRY}/team/app:1");
            let tls = Api::<Secret>::namespaced(h.client(), &h.op_ns);
            let serving = || async {
                let s = tls.get("regcred-webhook-tls").await.unwrap();
                s.data.unwrap().get("tls.crt").unwrap().0.clone()
            };
            let mut certificates = vec![serving().await];
            let deadline = Instant::now() + Duration::from_secs(32);
            let mut pods = 0;
            while Instant::now() < deadline {
                let names = create_pod(&h, &ns, &pod(&format!("p{pods}"), &[&image], &[], &[])).await;
                assert_eq!(names, vec![SECRET.to_owned()], "Pod {pods} was admitted without the webhook's answer");
                pods += 1;
                let current = serving().await;
                if certificates.last() != Some(&current) {
                    certificates.push(current);
                }
            }
            assert!(certificates.len() >= 3, "only {} certificates served over {pods} Pods", certificates.len());
            assert!(pods >= 20, "only {pods} Pods created");
        })
        .await;
}
