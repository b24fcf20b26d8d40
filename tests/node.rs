//! End to end on the local node (`make node-up`): regcred runs as the chart's Deployment, pulled by the kubelet
//! through the chart's `imagePullSecrets`; Pods pull private images from Debian's docker-registry through the
//! Secrets regcred wrote, with htpasswd and with token authentication, and without them the registry refuses.
//!
//! The tests share one installation (release `regcred` in `regcred-system`, the chart's defaults but for the
//! image and its pull secret), so they run one at a time (`make e2e`: `--test-threads=1`).
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::node::{
    NS, Node, Pull, RELEASE, SELECTOR, Scene, WAIT, helm_install_release_args, install, pod, profile, pull_outcome,
    pull_secrets, ready_pods, scene, selection, wait_for_ca_bundle, wait_secret,
};
use support::registry::{Auth, PASSWORD};
use support::{TestEnv, helm, wait_for};

async fn create_pod(client: &Client, ns: &str, pod: &Pod) {
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), pod).await.unwrap();
}

fn assert_refused_401(outcome: &Pull, what: &str) {
    match outcome {
        Pull::Refused(message) => assert!(message.contains("401"), "{what}: refused, but not with 401: {message}"),
        Pull::Running => panic!("{what}: the Pod ran without regcred's credentials"),
    }
}

#[tokio::test]
async fn regcred_runs_as_the_charts_deployment_hands_over_and_upgrades_without_an_admission_outage() {
    let node = Node::get();
    TestEnv::new("deployment")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let install = install(&client, &node).await;
            // The Deployment as the chart made it: two replicas, pulled by the kubelet with the pull secret.
            let deployment = Api::<Deployment>::namespaced(client.clone(), NS).get(RELEASE).await.unwrap();
            let spec = deployment.spec.template.spec.unwrap();
            assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "regcred-image");
            assert_eq!(spec.host_network, None, "regcred must not be on the host network");
            let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
            for p in ready_pods(&client, NS, SELECTOR).await {
                let events = support::node::kubelet_events(&client, NS, &p).await;
                assert!(
                    events.iter().any(|e| e.starts_with("Pulled:") || e.contains("already present")),
                    "{p}: {events:?}"
                );
                let status = pods.get(&p).await.unwrap().status.unwrap();
                let ip = status.pod_ip.unwrap();
                assert!(ip.starts_with("10.244."), "{p} is not on the pod network: {ip}");
                // The image `make release` pushed, by digest: the OCI chart's default image, with no value set. (The
                // repository the runtime names is any it pulled these bytes from: earlier tests' registries too.)
                let image_id = &status.container_statuses.unwrap()[0].image_id;
                let digest = install.release.image.rsplit_once('@').unwrap().1;
                assert!(image_id.ends_with(&format!("@{digest}")), "{p} runs {image_id}, not the release's {digest}");
            }

            // The webhook through its Service: a Pod in a selected namespace gets the Secret.
            let (key, value) = selection(&env);
            let profile = profile(&env, &install.registry, false).await;
            let ns = env.namespace("app", &[(&key, &value)]).await;
            let dry_run = PostParams { dry_run: true, ..Default::default() };
            let probe = pod("probe", &format!("{}/team/app:1.0", install.registry.addr), "Always");
            let injected = |p: Pod| {
                p.spec
                    .and_then(|s| s.image_pull_secrets)
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r.name == format!("regcred-{profile}"))
            };
            let admitted = Api::<Pod>::namespaced(client.clone(), &ns).create(&dry_run, &probe).await.unwrap();
            assert!(injected(admitted), "the webhook did not inject through its Service");

            // Killing the leader's Pod hands the work over to the other replica.
            let holder = || support::node::leader(&client);
            let leader = wait_for("a leader", WAIT, holder).await;
            let killed = Instant::now();
            pods.delete(&leader, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
            let successor =
                wait_for("another replica to lead", WAIT, || async { holder().await.filter(|h| *h != leader) }).await;
            eprintln!("leader {leader} killed; {successor} leads after {:.1}s", killed.elapsed().as_secs_f64());
            let fresh = env.namespace("after-failover", &[(&key, &value)]).await;
            wait_secret(&client, &fresh, &profile, &install.registry.addr, PASSWORD).await;
            wait_for("two Ready replicas again", WAIT, || async {
                (ready_pods(&client, NS, SELECTOR).await.len() == 2).then_some(())
            })
            .await;

            // helm upgrade rolls both Pods while Pods keep being admitted with their Secret.
            let before = ready_pods(&client, NS, SELECTOR).await;
            let values = helm(&["get", "values", RELEASE, "--namespace", NS, "-o", "json"]);
            let values_file = std::env::temp_dir().join(format!("regcred-values-{}.json", env.id));
            std::fs::write(&values_file, values).unwrap();
            let rollout = env.id.clone();
            let mut upgrade = install.release.upgrade_args(RELEASE, NS);
            upgrade.extend(["-f".into(), values_file.display().to_string(), "--set-string".into()]);
            upgrade.extend([
                format!("podAnnotations.rollout={rollout}"),
                "--wait".into(),
                "--timeout".into(),
                "180s".into(),
            ]);
            let upgrade =
                tokio::task::spawn_blocking(move || helm(&upgrade.iter().map(String::as_str).collect::<Vec<_>>()));
            let (mut admissions, mut missed) = (0, Vec::new());
            let api = Api::<Pod>::namespaced(client.clone(), &ns);
            while !upgrade.is_finished() {
                let admitted = api.create(&dry_run, &probe).await.unwrap();
                admissions += 1;
                if !injected(admitted) {
                    missed.push(admissions);
                }
                // The rate of the probes during the rollout (what is measured), not a wait for something.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            upgrade.await.unwrap();
            let after = wait_for("the rolled replicas Ready", WAIT, || async {
                let now = ready_pods(&client, NS, SELECTOR).await;
                (now.len() == 2 && now.iter().all(|p| !before.contains(p))).then_some(now)
            })
            .await;
            eprintln!("helm upgrade rolled {before:?} -> {after:?}; {admissions} Pods admitted during it");
            assert!(admissions > 10, "too few admissions during the rollout to tell: {admissions}");
            assert!(missed.is_empty(), "admissions {missed:?} of {admissions} got no Secret during the rollout");
        })
        .await;
}

#[tokio::test]
async fn pods_pull_private_images_through_regcreds_secrets_from_an_htpasswd_registry() {
    let node = Node::get();
    TestEnv::new("pull-basic")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let Scene { mut registry, image, profile, chosen, other } = scene(&env, &node, Auth::Basic, true).await;
            let (key, value) = selection(&env);

            // A selected namespace: the Pod pulls and runs. An unselected one: 401 from the registry.
            create_pod(&client, &chosen, &pod("app", &image, "Always")).await;
            create_pod(&client, &other, &pod("app", &image, "Always")).await;
            assert_eq!(pull_outcome(&client, &chosen, "app").await, Pull::Running);
            assert!(pull_secrets(&client, &chosen, "app").await.contains(&format!("regcred-{profile}")));
            let events = support::node::kubelet_events(&client, &chosen, "app").await;
            assert!(events.iter().any(|e| e.starts_with("Pulled:")), "no Pulled event: {events:?}");
            assert_refused_401(&pull_outcome(&client, &other, "app").await, "unselected namespace");

            // The image is on the node now; IfNotPresent does not let a Pod without credentials use it.
            assert!(node.has_image(&image), "{image} not on the node after a pull");
            create_pod(&client, &other, &pod("cached", &image, "IfNotPresent")).await;
            assert_refused_401(&pull_outcome(&client, &other, "cached").await, "IfNotPresent without a Secret");

            // A namespace and a Pod created at once: the webhook makes the Secret first; it runs.
            let fresh = env.namespace_nowait("fresh", &[(&key, &value)]).await;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &fresh);
            wait_for("the fresh namespace's default ServiceAccount", WAIT, || async {
                pods.create(&PostParams::default(), &pod("app", &image, "Always")).await.ok()
            })
            .await;
            assert_eq!(pull_outcome(&client, &fresh, "app").await, Pull::Running);
            let events = support::node::kubelet_events(&client, &fresh, "app").await;
            assert!(!events.iter().any(|e| e.contains("BackOff")), "the fresh Pod backed off: {events:?}");

            // Rotation: the registry takes a new password; the source Secret follows; a Pod created after the
            // rotation pulls with it, and the registry refuses the old one.
            let rotated = "battery-staple-2";
            registry.set_password(rotated).await;
            let sources: Api<Secret> = Api::namespaced(client.clone(), NS);
            let patch = json!({"stringData": {"password": rotated}});
            sources.patch(&profile, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            wait_secret(&client, &chosen, &profile, &registry.addr, rotated).await;
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod("after-rotation", &image, "Always")).await;
            assert_eq!(pull_outcome(&client, &chosen, "after-rotation").await, Pull::Running);
            assert_eq!(registry.v2_status(PASSWORD).await, 401, "the old password still works");
            assert_eq!(registry.v2_status(rotated).await, 200);

            // ServiceAccount mode: with the webhook deleted, a new Pod still gets the Secret (from the default
            // ServiceAccount) and pulls.
            let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &chosen);
            wait_for("the default ServiceAccount to list the Secret", WAIT, || async {
                let sa = sas.get("default").await.ok()?;
                sa.image_pull_secrets?.iter().any(|r| r.name == format!("regcred-{profile}")).then_some(())
            })
            .await;
            let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
            configs.delete(RELEASE, &DeleteParams::default()).await.unwrap();
            wait_for("the webhook configuration gone", WAIT, || async {
                configs.get_opt(RELEASE).await.unwrap().is_none().then_some(())
            })
            .await;
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod("no-webhook", &image, "Always")).await;
            let outcome = pull_outcome(&client, &chosen, "no-webhook").await;
            // Put the webhook back for whoever comes next, before asserting.
            helm(&["upgrade", RELEASE, "charts/regcred", "--namespace", NS, "--reuse-values", "--wait"]);
            wait_for_ca_bundle(&client).await;
            assert_eq!(outcome, Pull::Running, "ServiceAccount mode without the webhook");
            assert!(pull_secrets(&client, &chosen, "no-webhook").await.contains(&format!("regcred-{profile}")));
        })
        .await;
}

#[tokio::test]
async fn pods_pull_private_images_through_regcreds_secrets_from_a_token_registry() {
    let node = Node::get();
    TestEnv::new("pull-token")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let Scene { registry, image, chosen, other, profile } = scene(&env, &node, Auth::Token, false).await;
            let before = registry.token_requests().await;
            create_pod(&client, &chosen, &pod("app", &image, "Always")).await;
            create_pod(&client, &other, &pod("app", &image, "Always")).await;
            assert_eq!(pull_outcome(&client, &chosen, "app").await, Pull::Running);
            assert_refused_401(&pull_outcome(&client, &other, "app").await, "unselected namespace");
            assert!(registry.token_requests().await > before, "the pull did not go through the token server");

            // Image checks from regcred's own container (its CA bundle, its egress): a missing tag is warned about
            // at admission, an existing image is not.
            let deployment = |tag: &str| {
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("d{}", tag.replace('.', "-"))},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}},
                            "spec": {"containers": [{"name": "c", "image": format!("{}:{tag}", image.rsplit_once(':').unwrap().0)}]}}},
                })
                .to_string()
            };
            let (ok, out) = support::webhook::kubectl(&["apply", "-n", &chosen, "-f", "-"], &deployment("404")).await;
            assert!(ok && out.contains("Warning:") && out.contains("ImageNotFound"), "{out}");
            let (ok, out) = support::webhook::kubectl(&["apply", "-n", &chosen, "-f", "-"], &deployment("1.0")).await;
            assert!(ok && !out.contains("Warning:"), "{out}");

            // Pull failures are reported on the profile, with the registry's reason, once the Pod's own status shows
            // them: a missing tag in the selected namespace (404), and, in a list of its own, the unselected
            // namespace's Pod refused without credentials (401).
            let missing = format!("{}:404", image.rsplit_once(':').unwrap().0);
            create_pod(&client, &chosen, &pod("missing", &missing, "Always")).await;
            assert!(matches!(pull_outcome(&client, &chosen, "missing").await, Pull::Refused(_)));
            let profiles: Api<regcred::api::RegistryProfile> = Api::all(client.clone());
            let failures = wait_for("the pull failures in the profile's status", WAIT, || async {
                let status = profiles.get(&profile).await.ok()?.status?;
                let found = |list: &[regcred::api::PullFailure], ns: &str, pod: &str| {
                    list.iter().find(|f| f.namespace == ns && f.pod == pod).cloned()
                };
                // The unselected namespace's failure is listed apart from the selected one's.
                Some((
                    found(&status.pull_failures, &chosen, "missing")?,
                    found(&status.unselected_pull_failures, &other, "app")?,
                ))
            })
            .await;
            assert_eq!(
                (failures.0.image.as_str(), failures.0.reason.as_str()),
                (missing.as_str(), "ImageNotFound"),
                "{failures:?}"
            );
            assert_eq!(
                (failures.1.image.as_str(), failures.1.reason.as_str()),
                (image.as_str(), "AuthenticationFailed"),
                "{failures:?}"
            );
            assert!(failures.0.count >= 1 && failures.0.message.contains("Failed to pull image"), "{failures:?}");
            // An Event on the profile says so too.
            let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
            let fields = format!("involvedObject.name={profile},reason=PullFailed");
            let notes = wait_for("a PullFailed Event on the profile", WAIT, || async {
                let list = events.list(&kube::api::ListParams::default().fields(&fields)).await.ok()?;
                let notes: Vec<String> = list.items.into_iter().filter_map(|e| e.message).collect();
                notes.iter().any(|n| n.contains(&missing) && n.contains("ImageNotFound")).then_some(notes)
            })
            .await;
            assert!(notes.iter().any(|n| n.contains("AuthenticationFailed")), "{notes:?}");
        })
        .await;
}

#[tokio::test]
async fn a_registry_that_refuses_regcreds_own_image_shows_as_err_image_pull_on_its_pods() {
    let node = Node::get();
    TestEnv::new("own-image")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let install = install(&client, &node).await;
            // A second release whose pull secret holds a password the registry refuses.
            let ns = env.namespace("refused", &[]).await;
            let wrong = Secret {
                metadata: kube::api::ObjectMeta { name: Some("regcred-image".into()), ..Default::default() },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(std::collections::BTreeMap::from([(
                    ".dockerconfigjson".into(),
                    support::node::dockerconfigjson(&install.registry.addr, support::registry::USER, "wrong"),
                )])),
                ..Default::default()
            };
            Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &wrong).await.unwrap();
            let release = format!("regcred-{}", env.id);
            let published = &install.release;
            let mut command = helm_install_release_args(&release, &ns, &published.registry, &published.version);
            command.extend(published.helm_flags());
            command.extend([
                "--set".into(),
                "crds.install=false,webhook.enabled=false,replicaCount=1,imagePullSecrets[0].name=regcred-image".into(),
            ]);
            helm(&command.iter().map(String::as_str).collect::<Vec<_>>());
            env.cleanup::<k8s_openapi::api::rbac::v1::ClusterRole>(&release);
            env.cleanup::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&release);
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let name = wait_for("the release's Pod", WAIT, || async {
                pods.list(&Default::default()).await.ok()?.items.first().and_then(|p| p.metadata.name.clone())
            })
            .await;
            let outcome = pull_outcome(&client, &ns, &name).await;
            helm(&["uninstall", &release, "--namespace", &ns]);
            match outcome {
                Pull::Refused(message) => assert!(message.contains("401"), "not a 401: {message}"),
                Pull::Running => panic!("regcred's Pod ran with a refused pull secret"),
            }
        })
        .await;
}

/// Workload identity on the node: regcred, as the chart's Deployment, mints each token from its own
/// ServiceAccount, and the kubelet pulls a private image with it from a registry that accepts nothing else. ACR:
/// Entra ID (verifying the ServiceAccount token by TokenReview) then the registry's exchange; GKE Workload Identity:
/// the metadata server; Workload Identity Federation: Google STS then IAM Credentials' impersonation; Quay: the
/// robot federation. One namespace per source, so each Pod can only have run with that source's token.
// Two worker threads: the identity endpoints run in this test's runtime, and skopeo's push (a blocking child
// process) must not stop them answering (its token request timed out on a single thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_pull_with_acr_gcp_and_quay_tokens_minted_from_regcreds_own_service_account() {
    use support::cloud::{ACR_USER, AppCredential, CloudRegistry, Entra, Gcp};
    let node = Node::get();
    TestEnv::new("pull-wi")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let subject = format!("system:serviceaccount:{NS}:{RELEASE}");
            let entra = Entra::start(&client, &node.host_ip, AppCredential::Federated { subject: subject.clone() }).await;
            let gcp = Gcp::start(&client, &node.host_ip).await;
            *gcp.subject.lock().unwrap() = subject.clone();
            let registry = CloudRegistry::start(&client, &node.host_ip).await;
            *registry.entra.lock().unwrap() = Some(entra.clone());
            *registry.gcp_tokens.lock().unwrap() = Some(gcp.tokens.clone());
            *registry.quay.lock().unwrap() = Some(("team+puller".into(), subject));
            node.trust(&registry.addr, &registry.ca_pem);
            let image = support::node::push(registry.registry(), &support::node::workload_archive(), "team/app:1.0")
                .replace(&registry.registry().addr, &registry.addr);
            // regcred's container trusts Entra ID's and Google's (local) CAs through SSL_CERT_FILE, from a
            // ConfigMap, and finds the metadata server where GCE_METADATA_HOST says.
            let ca = k8s_openapi::api::core::v1::ConfigMap {
                metadata: kube::api::ObjectMeta { name: Some("regcred-test-ca".into()), ..Default::default() },
                data: Some([("ca.pem".to_owned(), format!("{}{}", entra.ca_pem, gcp.ca_pem))].into()),
                ..Default::default()
            };
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let ns = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta { name: Some(NS.into()), ..Default::default() },
                ..Default::default()
            };
            support::apply(&namespaces, &ns).await;
            support::apply(&Api::namespaced(client.clone(), NS), &ca).await;
            let metadata_host = format!("extraEnv[1].value={}", gcp.metadata_host);
            // The local identity endpoints are allowed as an operator allows a private endpoint.
            let allowed = [&entra.authority, &gcp.sts_url, &format!("https://{}", registry.addr)]
                .map(|u| support::cloud::host_port(u))
                .join(",");
            let allowed = format!("credentials.extraAllowedEndpoints={{{allowed}}}");
            // The kubelet's credential provider too, for the registry: a Quay robot's token reaches a namespace
            // with no Secret through it, and the Secrets' namespaces still pull with their Secrets.
            let provider = node.provider_values(&[&registry.addr], PROVIDER_CACHE_SECONDS);
            let mut values = vec![
                "extraEnv[0].name=SSL_CERT_FILE",
                "extraEnv[0].value=/etc/regcred-ca/ca.pem",
                "extraEnv[1].name=GCE_METADATA_HOST",
                &metadata_host,
                "extraVolumes[0].name=test-ca",
                "extraVolumes[0].configMap.name=regcred-test-ca",
                "extraVolumeMounts[0].name=test-ca",
                "extraVolumeMounts[0].mountPath=/etc/regcred-ca",
                &allowed,
            ];
            values.extend(provider.iter().map(String::as_str));
            support::node::install_with(&client, &node, &values).await;
            node.load_provider(&[&registry.addr]).await;
            let (key, _) = selection(&env);
            let federation = json!({
                "audience": gcp.audience, "tokenUrl": gcp.sts_url,
                "serviceAccount": gcp.service_account, "serviceAccountImpersonationUrl": gcp.impersonation_url(),
            });
            let sources = [
                ("acr", "acr", json!({"acr": {"tenantId": entra.tenant, "clientId": entra.client_id, "authorityHost": entra.authority}}), ACR_USER),
                ("gke", "artifactRegistry", json!({"gcp": {"workloadIdentity": {}}}), "oauth2accesstoken"),
                ("wif", "artifactRegistry", json!({"gcp": {"externalAccount": federation}}), "oauth2accesstoken"),
                ("quay", "quay", json!({"quay": {"robot": "team+puller"}}), "team+puller"),
                ("quay-cp", "quay", json!({"quay": {"robot": "team+puller"}}), "team+puller"),
            ];
            let mut chosen = Vec::new();
            for (source, provider, credentials, _) in &sources {
                let ns = env.namespace(source, &[(&key, source)]).await;
                let name = format!("{}-{source}", env.id);
                let profile = regcred::fixtures::manifest(
                    &name,
                    &[],
                    json!({
                        "provider": provider, "server": registry.addr, "credentials": credentials,
                        "namespaces": {"selector": {"matchLabels": {key.clone(): source}}},
                        "tls": {"caBundle": registry.ca_pem},
                        "delivery": if *source == "quay-cp" { "CredentialProvider" } else { "Secret" },
                    }),
                );
                support::apply(&Api::<regcred::api::RegistryProfile>::all(client.clone()), &profile).await;
                env.cleanup::<regcred::api::RegistryProfile>(&name);
                chosen.push((ns, name));
            }
            let other = env.namespace("other", &[]).await;
            for ((ns, name), (source, _, _, user)) in chosen.iter().zip(&sources) {
                if *source == "quay-cp" {
                    // No Secret: the token reaches the kubelet through the provider once the profile is Ready.
                    regcred::fixtures::wait_condition(&client, name, "Ready", "True", "Ready", WAIT).await;
                    create_pod(&client, ns, &pod("app", &image, "Always")).await;
                    continue;
                }
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                wait_for(&format!("the {source} token in its namespace"), WAIT, || async {
                    let s = secrets.get_opt(&format!("regcred-{name}")).await.ok()??;
                    let doc: serde_json::Value = serde_json::from_slice(&s.data?.get(".dockerconfigjson")?.0).ok()?;
                    (doc["auths"][&registry.addr]["username"] == *user).then_some(())
                })
                .await;
                create_pod(&client, ns, &pod("app", &image, "Always")).await;
            }
            // One ACR exchange and one Quay federation per Quay profile, whatever the rest did.
            assert_eq!(registry.mints.load(std::sync::atomic::Ordering::SeqCst), 3);
            create_pod(&client, &other, &pod("app", &image, "Always")).await;
            for ((ns, _), (source, ..)) in chosen.iter().zip(&sources) {
                assert_eq!(pull_outcome(&client, ns, "app").await, Pull::Running, "{source}");
            }
            let (cp_ns, cp_profile) = chosen.last().unwrap();
            assert!(pull_secrets(&client, cp_ns, "app").await.is_empty(), "a Secret injected for CredentialProvider");
            assert_eq!(secrets_of(&client, cp_profile).await, Vec::<String>::new(), "a CredentialProvider profile wrote Secrets");
            assert_refused_401(&pull_outcome(&client, &other, "app").await, "unselected namespace");
        })
        .await;
}

/// Scales regcred's Deployment to `replicas` and waits until that many of its Pods are Ready (0: none left).
async fn scale_regcred(client: &Client, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"replicas": replicas}});
    deployments.patch(RELEASE, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for(&format!("regcred at {replicas} replicas"), WAIT, || async {
        let all = pods.list(&kube::api::ListParams::default().labels(SELECTOR)).await.ok()?.items.len();
        let ready = ready_pods(client, NS, SELECTOR).await.len();
        (ready == usize::try_from(replicas).unwrap() && (replicas > 0 || all == 0)).then_some(())
    })
    .await;
}

/// The Pods of `ns` (name, uid, running, pull Secrets).
async fn pods_of(client: &Client, ns: &str) -> Vec<(String, String, bool, Vec<String>)> {
    let list = Api::<Pod>::namespaced(client.clone(), ns).list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let running = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())));
            let secrets = p.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default().into_iter();
            (p.metadata.name.unwrap(), p.metadata.uid.unwrap(), running, secrets.map(|r| r.name).collect())
        })
        .collect()
}

/// Self-healing on the node: with regcred scaled to 0, a Deployment (16 Pods), a StatefulSet (4 Pods, in a
/// namespace created during the outage) and a standalone Pod are admitted without regcred's Secret. Once regcred
/// is back, the controllers' Pods are evicted once each and re-created with the Secret, and run; the standalone
/// Pod gets an Event saying what to do.
#[tokio::test]
async fn workloads_admitted_while_regcred_was_down_heal_once_it_is_back() {
    let node = Node::get();
    TestEnv::new("heal")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            // The registry lives as long as its handle: kept to the end.
            let Scene { registry: _registry, image, profile, chosen, .. } =
                scene(&env, &node, Auth::Basic, false).await;
            let secret = format!("regcred-{profile}");
            let (key, value) = selection(&env);
            scale_regcred(&client, 0).await;
            let late = env.namespace("late", &[(&key, &value)]).await;
            let template = |app: &str, pull_secrets: serde_json::Value| {
                let container = json!({"name": "app", "image": image, "imagePullPolicy": "Always"});
                json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [container],
                    "imagePullSecrets": pull_secrets, "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": false}})
            };
            let deployment = |name: &str, replicas: i32, pull_secrets: serde_json::Value| -> Deployment {
                serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": name}}, "template": template(name, pull_secrets)}}))
                .unwrap()
            };
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &chosen);
            let post = PostParams::default();
            deployments.create(&post, &deployment("web", 16, json!([]))).await.unwrap();
            let statefulset: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
                "metadata": {"name": "db"}, "spec": {"replicas": 4, "serviceName": "db",
                "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
                "template": template("db", json!([]))}}))
            .unwrap();
            Api::namespaced(client.clone(), &late).create(&post, &statefulset).await.unwrap();
            create_pod(&client, &chosen, &pod("lonely", &image, "Always")).await;

            // Every Pod admitted without regcred's Secret.
            let pods: Api<Pod> = Api::namespaced(client.clone(), &chosen);
            let before = wait_for("the 21 Pods created", WAIT, || async {
                let all = [pods_of(&client, &chosen).await, pods_of(&client, &late).await].concat();
                (all.len() == 21).then_some(all)
            })
            .await;
            assert!(before.iter().all(|(_, _, running, s)| !running && !s.contains(&secret)), "{before:?}");
            let healable: Vec<String> = before
                .iter()
                .filter(|(n, ..)| n.starts_with("web-") || n.starts_with("db-"))
                .map(|(_, uid, ..)| uid.clone())
                .collect();

            // regcred comes back: every Deployment and StatefulSet Pod is replaced by one with the Secret, and runs.
            let back = Instant::now();
            scale_regcred(&client, 2).await;
            let running_at = std::sync::Mutex::new(std::collections::BTreeMap::<String, Duration>::new());
            wait_for("20 re-created Pods running with the Secret", Duration::from_secs(300), || async {
                let now = [pods_of(&client, &chosen).await, pods_of(&client, &late).await].concat();
                let mut running_at = running_at.lock().unwrap();
                for (name, uid, running, s) in now {
                    let ours = name.starts_with("web-") || name.starts_with("db-");
                    if ours && running && s.contains(&secret) && !healable.contains(&uid) {
                        running_at.entry(uid).or_insert_with(|| back.elapsed());
                    }
                }
                (running_at.len() >= 20).then_some(())
            })
            .await;
            let running_at = running_at.into_inner().unwrap();
            let mut times: Vec<f64> = running_at.values().map(Duration::as_secs_f64).collect();
            times.sort_by(f64::total_cmp);
            eprintln!(
                "self-healing: {} Pods running with the Secret after regcred's return: p50 {:.1}s, max {:.1}s",
                times.len(),
                times[times.len() / 2],
                times[times.len() - 1]
            );

            // The standalone Pod: an Event on it and on the profile says what to do; it is not deleted.
            let events = wait_for("the standalone Pod's Event", WAIT, || async {
                let events = support::node::events_from(&client, &chosen, "lonely", "regcred").await;
                events.iter().any(|e| e.starts_with("MissingPullSecret:")).then_some(events)
            })
            .await;
            let note = events.iter().find(|e| e.starts_with("MissingPullSecret:")).unwrap();
            assert!(note.contains(&secret) && note.contains("delete"), "{note}");
            assert!(pods.get_opt("lonely").await.unwrap().is_some(), "the standalone Pod was deleted");

            let profiles = Api::<regcred::api::RegistryProfile>::all(client.clone());
            let healed = running_at.len();
            let status = wait_for("every eviction in status", WAIT, || async {
                let healing = profiles.get(&profile).await.ok()?.status?.healing?;
                (usize::try_from(healing.evictions).ok()? >= healed).then_some(healing)
            })
            .await;
            // One eviction per healed Pod: none of the re-created Pods was evicted again.
            assert_eq!(usize::try_from(status.evictions).unwrap(), healed, "{status:?}");
            eprintln!(
                "self-healing: {} evictions for {healed} healed Pods: {:.2} per Pod",
                status.evictions,
                f64::from(status.evictions) / healed as f64
            );
        })
        .await;
}

/// Self-healing respects PodDisruptionBudgets: a Pod admitted before its namespace was selected, with a pull
/// Secret of its own that later goes, fails to pull on a restart while Running (only a Running Pod is protected by a
/// budget). regcred's eviction is refused by the budget: reported in status and by an Event on the Pod, never
/// forced; the Pod stays.
#[tokio::test]
async fn a_disruption_budget_that_forbids_the_eviction_is_reported_not_forced() {
    let node = Node::get();
    TestEnv::new("heal-pdb")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            // The registry lives as long as its handle: kept to the end.
            let Scene { registry, image, profile, .. } = scene(&env, &node, Auth::Basic, false).await;
            let secret = format!("regcred-{profile}");
            let (key, value) = selection(&env);
            let ns = env.namespace("guarded", &[]).await;
            let legacy = Secret {
                metadata: kube::api::ObjectMeta { name: Some("legacy".into()), ..Default::default() },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(
                    [(
                        ".dockerconfigjson".to_owned(),
                        support::node::dockerconfigjson(&registry.addr, support::registry::USER, PASSWORD),
                    )]
                    .into(),
                ),
                ..Default::default()
            };
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let post = PostParams::default();
            secrets.create(&post, &legacy).await.unwrap();
            // A liveness probe that always fails restarts the container every few seconds; Always pulls each time.
            let deployment: Deployment = serde_json::from_value(json!({
                "metadata": {"name": "guarded"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "guarded"}}, "template": {
                    "metadata": {"labels": {"app": "guarded"}},
                    "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always",
                        "livenessProbe": {"tcpSocket": {"port": 9}, "initialDelaySeconds": 3, "periodSeconds": 1,
                            "failureThreshold": 1}}],
                        "imagePullSecrets": [{"name": "legacy"}], "terminationGracePeriodSeconds": 1,
                        "automountServiceAccountToken": false}}}}))
            .unwrap();
            Api::<Deployment>::namespaced(client.clone(), &ns).create(&post, &deployment).await.unwrap();
            let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
                "metadata": {"name": "guarded"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
            .unwrap();
            Api::namespaced(client.clone(), &ns).create(&post, &pdb).await.unwrap();
            let guarded = wait_for("the guarded Pod running with its own Secret", WAIT, || async {
                pods_of(&client, &ns).await.into_iter().find(|(_, _, running, _)| *running)
            })
            .await;
            assert!(!guarded.3.contains(&secret), "{guarded:?}");

            // Its namespace is selected now: regcred's Secret arrives. Its own Secret goes: the next pull fails.
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let label = json!({"metadata": {"labels": {key.clone(): value.clone()}}});
            namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
            wait_secret(&client, &ns, &profile, &registry.addr, PASSWORD).await;
            secrets.delete("legacy", &DeleteParams::default()).await.unwrap();

            // The eviction is refused by the budget: shown in status and on the Pod; the Pod is not deleted.
            let profiles = Api::<regcred::api::RegistryProfile>::all(client.clone());
            wait_for("the refused eviction in status", Duration::from_secs(240), || async {
                let healing = profiles.get(&profile).await.ok()?.status?.healing?;
                healing.recent.iter().any(|a| a.pod == guarded.0 && a.action == "Blocked").then_some(())
            })
            .await;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let now = pods.get(&guarded.0).await.unwrap();
            assert_eq!(now.metadata.uid.as_deref(), Some(guarded.1.as_str()), "the guarded Pod was replaced");
            assert!(now.metadata.deletion_timestamp.is_none(), "the guarded Pod is being deleted");
            assert_eq!(now.status.and_then(|s| s.phase).as_deref(), Some("Running"));
            let events = support::node::events_from(&client, &ns, &guarded.0, "regcred").await;
            let blocked =
                events.iter().find(|e| e.starts_with("EvictionBlocked:")).unwrap_or_else(|| panic!("{events:?}"));
            assert!(blocked.contains("PodDisruptionBudget") && blocked.contains(&secret), "{blocked}");
            let healing = profiles.get(&profile).await.unwrap().status.unwrap().healing.unwrap();
            assert_eq!(healing.evictions, 0, "{healing:?}");
        })
        .await;
}

/// `make release` says what is missing or malformed before it builds or pushes anything.
#[test]
fn make_release_says_what_is_missing_or_malformed() {
    let team = "REGISTRY=registry.example/team";
    for (args, says) in [
        (&[][..], "REGISTRY is missing"),
        (&[team][..], "VERSION is missing"),
        (&[team, "VERSION=v1.2.3"][..], "SemVer without the leading v: '1.2.3'"),
        (&[team, "VERSION=1.2"][..], "VERSION must be SemVer"),
        (&[team, "VERSION=1.2.3+build.1"][..], "cannot carry build metadata"),
        (&["REGISTRY=https://registry.example/team", "VERSION=1.2.3"][..], "without a scheme"),
        (&["REGISTRY=registry.example/Team", "VERSION=1.2.3"][..], "must be lower case"),
    ] {
        let out = std::process::Command::new("make")
            .args(["--no-print-directory", "release"])
            .args(args)
            .current_dir(support::repo_root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "make release {args:?}: {stderr}");
    }
}

/// How long the kubelet may keep an answer of regcred's provider in the provider tests
/// (`credentialProvider.cacheMaxSeconds`): short, so deselection and rotation show within the test.
const PROVIDER_CACHE_SECONDS: u64 = 10;

/// A Pod of `image` run by ServiceAccount `sa`, with no imagePullSecrets.
fn pod_as(name: &str, image: &str, policy: &str, sa: &str) -> Pod {
    let mut p = pod(name, image, policy);
    p.spec.as_mut().unwrap().service_account_name = Some(sa.into());
    p
}

async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
}

/// Waits until the Pod `ns/name` runs (after back-offs: the kubelet retries a failed pull by itself).
async fn running_eventually(client: &Client, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("{ns}/{name} to run"), Duration::from_secs(300), || async {
        let p = pods.get(name).await.ok()?;
        let state = p.status?.container_statuses?.first()?.state.clone()?;
        state.running.map(|_| ())
    })
    .await;
}

/// The Secrets anywhere in the cluster that regcred wrote for `profile`.
async fn secrets_of(client: &Client, profile: &str) -> Vec<String> {
    let params = kube::api::ListParams::default().labels(&format!("{}={profile}", regcred::names::PROFILE_LABEL));
    let list = Api::<Secret>::all(client.clone()).list(&params).await.unwrap();
    list.items
        .iter()
        .map(|s| format!("{}/{}", s.metadata.namespace.clone().unwrap(), s.metadata.name.clone().unwrap()))
        .collect()
}

/// No Secret at all: the chart installs regcred's kubelet credential provider on the node, and a
/// `delivery: CredentialProvider` profile's credentials reach the kubelet at pull time, for the namespaces and
/// ServiceAccounts it selects only, without a Secret anywhere. The node's image cache is no side door; deselection
/// and rotation take effect within the stated bound; with regcred down the provider fails closed, and regcred's own
/// Pods never depend on it.
#[tokio::test]
async fn pods_pull_through_regcreds_kubelet_credential_provider_with_no_secret_anywhere() {
    let node = Node::get();
    TestEnv::new("pull-cp")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let mut registry = node.registry(Auth::Basic).await;
            let image = support::node::push(&registry, &support::node::workload_archive(), "team/app:1.0");
            let values = node.provider_values(&[&registry.addr], PROVIDER_CACHE_SECONDS);
            support::node::install_with(&client, &node, &values.iter().map(String::as_str).collect::<Vec<_>>())
                .await;
            let config = node.load_provider(&[&registry.addr]).await;
            let more = json!({"delivery": "CredentialProvider", "serviceAccounts": {"names": ["builder"]}});
            let profile = support::node::profile_with(&env, &registry, "cp", more).await;
            let (key, value) = selection(&env);
            let chosen = env.namespace("chosen", &[(&key, &value)]).await;
            let other = env.namespace("other", &[]).await;
            for ns in [&chosen, &other] {
                service_account(&client, ns, "builder").await;
            }

            // The selected namespace's named ServiceAccount pulls, with no Secret; the same Pod elsewhere, or run
            // by a ServiceAccount the profile does not name, is refused by the registry.
            create_pod(&client, &chosen, &pod_as("app", &image, "Always", "builder")).await;
            create_pod(&client, &other, &pod_as("app", &image, "Always", "builder")).await;
            create_pod(&client, &chosen, &pod_as("unnamed", &image, "Always", "default")).await;
            assert_eq!(pull_outcome(&client, &chosen, "app").await, Pull::Running);
            assert!(pull_secrets(&client, &chosen, "app").await.is_empty(), "the webhook injected a Secret");
            assert_refused_401(&pull_outcome(&client, &other, "app").await, "unselected namespace");
            assert_refused_401(&pull_outcome(&client, &chosen, "unnamed").await, "a ServiceAccount not named");
            assert_eq!(secrets_of(&client, &profile).await, Vec::<String>::new(), "a CredentialProvider profile wrote Secrets");
            let in_chosen = Api::<Secret>::namespaced(client.clone(), &chosen).list(&Default::default()).await.unwrap();
            let pull_secret_types: Vec<_> =
                in_chosen.items.iter().filter(|s| s.type_.as_deref() == Some("kubernetes.io/dockerconfigjson")).collect();
            assert!(pull_secret_types.is_empty(), "a pull Secret in the selected namespace");

            // The image is on the node now: an IfNotPresent Pod of a namespace that may not have it pulls again.
            assert!(node.has_image(&image), "{image} not on the node after a pull");
            create_pod(&client, &other, &pod_as("cached", &image, "IfNotPresent", "builder")).await;
            assert_refused_401(&pull_outcome(&client, &other, "cached").await, "IfNotPresent in an unselected namespace");

            // What the kubelet would get for a forged token: nothing, and the provider says why.
            let forged = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest",
                "image": format!("{}/team/app", registry.addr), "serviceAccountToken": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."});
            let (ok, stdout, stderr) = node.run_provider(&config, &forged);
            assert!(!ok, "the provider answered a forged token: {stdout}");
            assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "a password in the provider's output");
            assert!(stderr.contains("401") || stderr.to_lowercase().contains("refused"), "stderr: {stderr}");

            // Rotation: a new password reaches the kubelet within the bound; the registry refuses the old one.
            let rotated = "battery-staple-cp";
            registry.set_password(rotated).await;
            let sources: Api<Secret> = Api::namespaced(client.clone(), NS);
            let patch = json!({"stringData": {"password": rotated}});
            sources.patch(&profile, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(PROVIDER_CACHE_SECONDS + 2)).await;
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod_as("rotated", &image, "Always", "builder")).await;
            assert_eq!(pull_outcome(&client, &chosen, "rotated").await, Pull::Running, "after the rotation");

            // regcred unreachable: the provider fails closed, and the kubelet keeps what it was answered for its
            // cacheDuration. The "rotated" Pod's answer is seconds old: with the Service's credentials port gone
            // (the kubelet's requests are refused at once, as with no replica), a pull of the same ServiceAccount
            // still gets its credentials from the kubelet's cache.
            let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), NS);
            let service = services.get(RELEASE).await.unwrap();
            let kept: Vec<_> = service.spec.clone().unwrap().ports.unwrap().into_iter().filter(|p| p.port != 8444).collect();
            let cut = json!({"spec": {"ports": kept}});
            services.patch(RELEASE, &PatchParams::default(), &Patch::Merge(&cut)).await.unwrap();
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod_as("within-cache", &image, "Always", "builder")).await;
            assert_eq!(pull_outcome(&client, &chosen, "within-cache").await, Pull::Running, "within the kubelet's cache");
            let back = json!({"spec": {"ports": service.spec.unwrap().ports}});
            services.patch(RELEASE, &PatchParams::default(), &Patch::Merge(&back)).await.unwrap();

            // regcred down, beyond the kubelet's cache: every pull from the provider's registries is refused, even
            // an IfNotPresent Pod of the ServiceAccount that pulled the image (the kubelet verifies it again, with
            // credentials it cannot get). regcred's own Pods come back: their image is not the provider's.
            scale_regcred(&client, 0).await;
            tokio::time::sleep(Duration::from_secs(PROVIDER_CACHE_SECONDS + 2)).await;
            create_pod(&client, &chosen, &pod_as("down-cached", &image, "IfNotPresent", "builder")).await;
            assert_refused_401(&pull_outcome(&client, &chosen, "down-cached").await, "IfNotPresent, regcred down");
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod_as("down", &image, "Always", "builder")).await;
            assert_refused_401(&pull_outcome(&client, &chosen, "down").await, "a pull while regcred is down");
            scale_regcred(&client, 2).await;
            // Once it is back, the same Pod recovers on the kubelet's next retry, without being re-created.
            running_eventually(&client, &chosen, "down").await;

            // Deselection: once regcred has seen it, the kubelet gets nothing after at most the cache bound.
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let unlabel = json!({"metadata": {"labels": {key.clone(): null}}});
            namespaces.patch(&chosen, &PatchParams::default(), &Patch::Merge(&unlabel)).await.unwrap();
            wait_for("the profile to select nothing", WAIT, || async {
                let p = Api::<regcred::api::RegistryProfile>::all(client.clone()).get(&profile).await.ok()?;
                (p.status?.selected_namespaces == 0).then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_secs(PROVIDER_CACHE_SECONDS + 2)).await;
            node.forget_image(&image);
            create_pod(&client, &chosen, &pod_as("deselected", &image, "Always", "builder")).await;
            assert_refused_401(&pull_outcome(&client, &chosen, "deselected").await, "after deselection");
            assert_eq!(registry.v2_status(PASSWORD).await, 401, "the old password still works");
        })
        .await;
}
