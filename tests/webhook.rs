//! The Pod admission webhook against the real local control plane: the apiserver calls the real `regcred` binary
//! over HTTPS (registered by URL, trusted through the caBundle regcred manages), and the operator runs as a
//! ServiceAccount bound to exactly the chart's RBAC rules.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::harness::{Harness, WAIT, basic_spec};
use support::webhook::slow::issue;
use support::webhook::{REGISTRY, SECRET, create_pod, pod, start};
use support::{TestEnv, wait_for};

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

/// A profile delivered by the kubelet's credential provider alone, beside a Secret profile of another registry: the
/// webhook injects nothing for it (it writes no Secret to inject) and still checks its images at admission.
#[tokio::test]
async fn a_profile_the_credential_provider_delivers_gets_nothing_injected_and_its_images_still_checked() {
    TestEnv::new("provider")
        .await
        .run(|env| async move {
            let h = start(&env, &[]).await;
            // A registry that refuses connections: its images' checks fail at once, with a warning.
            let elsewhere = format!("127.0.0.1:{}", support::free_port());
            let mut spec = basic_spec(h.select("yes"));
            spec["server"] = json!(elsewhere);
            spec["secretName"] = json!("pull-provider");
            spec["delivery"] = json!("CredentialProvider");
            let provider = h.profile("provider", spec).await;
            h.condition(&provider, "SecretsSynced", "True", "CredentialProvider").await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let ours = format!("{REGISTRY}/team/app:1");
            let theirs = format!("{elsewhere}/team/app:1");
            // Images of both registries: the Secret profile's Secret alone.
            let both = create_pod(&h, &ns, &pod("both", &[&ours, &theirs], &[], &[])).await;
            assert_eq!(both, vec![SECRET.to_owned()]);
            // The provider's registry alone: nothing, and no Secret of it was written to inject.
            assert!(create_pod(&h, &ns, &pod("provider", &[&theirs], &[], &[])).await.is_empty());
            assert!(h.secret(&ns, "pull-provider").await.is_none(), "a Secret of the provider's profile");
            // Its images are still checked at admission.
            let out = create_with_kubectl(&ns, &pod("shown", &[&theirs], &[], &[])).await;
            assert!(out.contains(&format!("image {theirs} (RegistryProfile {provider})")), "{out}");
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

/// Replaces a file at once (as the kubelet swaps a mounted Secret's files), never half-written.
fn replace(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn certificates_from_files_are_reloaded_when_they_change() {
    TestEnv::new("files")
        .await
        .run(|env| async move {
            let dir = std::env::temp_dir().join("regcred-tests").join(format!("certs-{}", env.id));
            std::fs::create_dir_all(&dir).unwrap();
            let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
            let (ca, crt, k) = issue();
            replace(&key, &k);
            replace(&cert, &crt);
            // cert-manager's CA injector keeps the caBundle; regcred only serves the files.
            let port = support::free_port();
            let name = support::webhook::register(&env, port, Some(&ca)).await;
            let addr = format!("127.0.0.1:{port}");
            let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
            let args = [
                "--webhook-addr",
                &addr,
                "--webhook-configuration",
                &name,
                "--webhook-cert-file",
                &cert_arg,
                "--webhook-key-file",
                &key_arg,
            ];
            let h = Harness::start_with(&env, &args).await;
            support::webhook::serve_registry(&h).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let image = format!("{REGISTRY}/team/app:1");
            let injected = |i: usize| {
                let (h, ns, image) = (&h, &ns, &image);
                async move {
                    (create_pod(h, ns, &pod(&format!("p{i}"), &[image], &[], &[])).await == [SECRET]).then_some(())
                }
            };
            assert!(injected(0).await.is_some(), "served with the first certificate");

            // A new CA: the apiserver trusts only it from now on, so Pods are injected again only once regcred
            // serves the new files.
            let (ca2, crt2, k2) = issue();
            let bundle = base64::engine::general_purpose::STANDARD.encode(&ca2);
            let patch = json!({"webhooks": [{"name": "pods.regcred.dev", "clientConfig": {"caBundle": bundle}}]});
            let configs = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
            configs.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
            replace(&key, &k2);
            replace(&cert, &crt2);
            let mut i = 1;
            wait_for("Pods injected with the reloaded certificate", WAIT, || {
                i += 1;
                injected(i)
            })
            .await;
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

/// The CA of the client certificate the local apiserver presents to admission webhooks (tools/cluster-up.sh).
fn apiserver_webhook_client_ca() -> std::path::PathBuf {
    let kubeconfig = support::kubeconfig_path();
    let ca = kubeconfig.parent().unwrap().join("cluster/pki/webhook-client-ca.crt");
    assert!(
        ca.exists(),
        "{} is missing: restart the local cluster (tools/cluster-down.sh, tools/cluster-up.sh)",
        ca.display()
    );
    ca
}

/// The URL the test's webhook configuration calls regcred at.
async fn webhook_url(env: &TestEnv) -> String {
    let api = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    let config = api.get(&support::webhook_configuration_name(env)).await.unwrap();
    config.webhooks.unwrap()[0].client_config.url.clone().unwrap()
}

#[tokio::test]
async fn a_forged_admission_review_from_a_client_without_the_apiservers_certificate_is_refused_in_the_tls_handshake() {
    TestEnv::new("forged")
        .await
        .run(|env| async move {
            let ca = apiserver_webhook_client_ca();
            let h = start(&env, &["--webhook-client-ca-file", ca.to_str().unwrap()]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let image = format!("{REGISTRY}/team/app:1");
            // The apiserver's admissions work: it presents its client certificate.
            assert_eq!(create_pod(&h, &ns, &pod("legit", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);

            // The attacker posts a review naming another namespace straight to regcred's port: without a client
            // certificate, and with a certificate of the cluster's own CA (the admin's) that is not the apiserver's.
            let operator = h.operator.as_ref().unwrap();
            let answered = operator.metric("regcred_webhook_requests_total").await;
            let url = webhook_url(&env).await;
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "00000000-0000-4000-8000-000000000001",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": ns, "operation": "CREATE", "userInfo": {},
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forged", "namespace": ns},
                               "spec": {"containers": [{"name": "c", "image": image}]}},
                },
            });
            let pki = ca.parent().unwrap();
            let admin =
                [std::fs::read(pki.join("admin.crt")).unwrap(), std::fs::read(pki.join("admin.key")).unwrap()].concat();
            regcred::install_crypto_provider();
            let clients = [
                ("no certificate", reqwest::Client::builder()),
                (
                    "the cluster CA's admin certificate",
                    reqwest::Client::builder().identity(reqwest::Identity::from_pem(&admin).unwrap()),
                ),
            ];
            for (who, builder) in clients {
                let client = builder.tls_danger_accept_invalid_certs(true).build().unwrap();
                match client.post(&url).json(&review).send().await {
                    Err(e) => assert!(!e.is_status(), "{who}: {e}"),
                    Ok(r) => panic!("{who}: the forged review was answered: {} {:?}", r.status(), r.text().await),
                }
            }
            assert_eq!(
                operator.metric("regcred_webhook_requests_total").await,
                answered,
                "a forged review reached the handler"
            );
            // And the apiserver's admissions still work.
            assert_eq!(create_pod(&h, &ns, &pod("after", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);
        })
        .await;
}

#[tokio::test]
async fn an_object_with_a_thousand_images_is_admitted_with_its_secret_a_warning_and_bounded_checks() {
    TestEnv::new("thousand")
        .await
        .run(|env| async move {
            let h = start(&env, &[]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let operator = h.operator.as_ref().unwrap();
            let checked = operator.metric("regcred_image_check_registry_requests_total").await;
            let images: Vec<String> = (0..1000).map(|i| format!("{REGISTRY}/team/app{i}:1")).collect();
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let mut many = serde_json::to_value(pod("many", &images, &[], &[])).unwrap();
            many["metadata"]["namespace"] = json!(ns);
            let (ok, out) = support::webhook::kubectl(
                &["create", "-o", "jsonpath={.spec.imagePullSecrets[*].name}", "-f", "-"],
                &many.to_string(),
            )
            .await;
            assert!(ok, "{out}");
            // Injected all the same, and told why not every image was checked.
            assert!(out.contains(SECRET), "{out}");
            assert!(
                out.contains("regcred checked only the first 50 images of this object (950 more not checked)"),
                "{out}"
            );
            let asked = operator.metric("regcred_image_check_registry_requests_total").await - checked;
            assert!(asked <= 50.0, "{asked} registry checks for one object");
            // A legitimate Pod right after is admitted as before.
            let image = format!("{REGISTRY}/team/app:1");
            assert_eq!(create_pod(&h, &ns, &pod("after", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);
        })
        .await;
}

/// The median and the largest of `samples`.
fn spread(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// Creates `pod` in `ns` through kubectl, as a user would; returns its imagePullSecrets and the warnings kubectl
/// printed.
async fn create_with_kubectl(ns: &str, pod: &Pod) -> String {
    let mut object = serde_json::to_value(pod).unwrap();
    object["metadata"]["namespace"] = json!(ns);
    let args = ["create", "-o", "jsonpath={.spec.imagePullSecrets[*].name}", "-f", "-"];
    let (ok, out) = support::webhook::kubectl(&args, &object.to_string()).await;
    assert!(ok, "{out}");
    out
}

/// A registry that accepts connections and never answers, with an image-check budget past the admission deadline
/// (4 s, under the default timeoutSeconds of 5): each Pod is still admitted with its pull Secret, by the deadline
/// (the apiserver did not give up on the webhook), and with a "not checked" warning.
#[tokio::test]
async fn a_registry_that_never_answers_costs_a_pod_its_check_never_its_secret() {
    TestEnv::new("deadline-registry")
        .await
        .run(|env| async move {
            let (addr, silent) = regcred::fixtures::silent_registry().await;
            let h = support::webhook::start_operator(&env, &["--image-check-budget", "20s"]).await;
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let mut spec = basic_spec(h.select("yes"));
            spec["server"] = json!(addr.to_string());
            spec["imageChecks"] = json!({"mode": "Warn"});
            let profile = h.profile("p", spec).await;
            h.ready(&profile).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            // A new image each time: no answer from the cache, every check cut by the deadline.
            let mut took = Vec::new();
            for i in 0..4 {
                let image = format!("{addr}/team/app{i}:1");
                let started = Instant::now();
                let names = create_pod(&h, &ns, &pod(&format!("p{i}"), &[&image], &[], &[])).await;
                took.push(started.elapsed());
                assert_eq!(names, vec![SECRET.to_owned()], "Pod {i} was admitted without its Secret");
            }
            // What the user sees.
            let image = format!("{addr}/team/shown:1");
            let out = create_with_kubectl(&ns, &pod("shown", &[&image], &[], &[])).await;
            assert!(out.contains(SECRET), "{out}");
            let warning =
                format!("image {image} (RegistryProfile {profile}): not checked: the registry did not answer");
            assert!(out.contains(&warning) && out.contains("the admission's deadline"), "{out}");
            let operator = h.operator.as_ref().unwrap();
            assert!(operator.metric("regcred_webhook_checks_cut_by_deadline_total").await >= 5.0);
            let (p50, max) = spread(&mut took);
            eprintln!(
                "admission latency at the deadline (a registry that never answers; deadline 4 s, timeoutSeconds 5): \
                 p50 {p50:?}, max {max:?} over {} Pods",
                took.len()
            );
            silent.abort();
        })
        .await;
}

/// regcred reaches the apiserver through a proxy that holds its admission lookups (a Namespace, a Secret) for
/// 8 s, past the deadline and the apiserver's own timeout: a Pod whose Secret regcred already holds is admitted
/// with it by the deadline, its pull Secret lookup "not checked"; a Pod in a brand-new namespace, whose Secret
/// cannot be made in time, is admitted by the deadline and never names a Secret that does not exist.
#[tokio::test]
async fn a_slow_apiserver_costs_a_pod_its_lookups_never_a_secret_regcred_holds() {
    TestEnv::new("deadline-apiserver")
        .await
        .run(|env| async move {
            let (h, apiserver) = support::webhook::start_behind_slow_apiserver(&env, Duration::from_secs(8), &[]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let image = format!("{REGISTRY}/team/app:1");
            // While the apiserver answers at once: the namespace's Secret is written and in regcred's cache.
            let mut i = 0;
            wait_for("a Pod given the Secret", WAIT, || {
                i += 1;
                let (h, ns, image) = (&h, &ns, &image);
                async move {
                    (create_pod(h, ns, &pod(&format!("warm{i}"), &[image], &[], &[])).await == [SECRET]).then_some(())
                }
            })
            .await;

            apiserver.slow(true);
            let mut took = Vec::new();
            // Each Pod names a pull Secret of its own that regcred does not know: its lookup is held.
            for i in 0..4 {
                let theirs = format!("theirs{i}");
                let started = Instant::now();
                let names = create_pod(&h, &ns, &pod(&format!("p{i}"), &[&image], &[&theirs], &[])).await;
                took.push(started.elapsed());
                assert_eq!(names, vec![theirs, SECRET.to_owned()], "Pod {i} was admitted without its Secret");
            }
            let out = create_with_kubectl(&ns, &pod("shown", &[&image], &["theirs-shown"], &[])).await;
            assert!(out.contains(SECRET), "{out}");
            let warning = "imagePullSecrets names Secret theirs-shown: not checked: the apiserver did not answer \
                           regcred's lookup within";
            assert!(out.contains(warning) && out.contains("the admission's deadline"), "{out}");

            // A brand-new namespace: regcred's Secret for it is written through the slow apiserver.
            let fresh = env.namespace("fresh", &[("pull", "yes")]).await;
            let started = Instant::now();
            let names = create_pod(&h, &fresh, &pod("new", &[&image], &[], &[])).await;
            let new_namespace = started.elapsed();
            took.push(new_namespace);
            if names.iter().any(|n| n == SECRET) {
                assert!(h.secret(&fresh, SECRET).await.is_some(), "the Pod in {fresh} names a missing Secret");
            }

            assert!(apiserver.held() >= 5, "only {} requests held: the lookups did not go through", apiserver.held());
            let operator = h.operator.as_ref().unwrap();
            assert!(operator.metric("regcred_webhook_checks_cut_by_deadline_total").await >= 5.0);
            let (p50, max) = spread(&mut took);
            eprintln!(
                "admission latency at the deadline (an apiserver holding regcred's lookups 8 s; deadline 4 s, \
                 timeoutSeconds 5): p50 {p50:?}, max {max:?} over {} Pods (new namespace: {new_namespace:?}, \
                 Secret {}; injections cut: {})",
                took.len(),
                if names.is_empty() { "not named" } else { "named" },
                operator.metric("regcred_webhook_injections_cut_by_deadline_total").await,
            );
        })
        .await;
}
