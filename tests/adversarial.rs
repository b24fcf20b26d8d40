//! Tenants who try to steer regcred: forged Secrets with its names and labels, edits of the Secrets it manages,
//! labels on their own namespaces, profiles that reach for Secrets outside regcred's namespace, Events forged to
//! look like the kubelet's pull failures, and Secret names shared by several profiles. Each tenant
//! acts as a ServiceAccount that owns the Secrets and Pods of its own namespace only (plus, where said, the right to label
//! that namespace); regcred runs as the chart's ServiceAccount.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use regcred::api::RegistryProfile;
use serde_json::json;
use support::harness::{Harness, SERVER, WAIT, basic_spec, password_in};
use support::{TestEnv, wait_for};

const FORGED: &str = r#"{"auths":{"registry.example.com:5000":{"username":"attacker","password":"planted"}}}"#;

/// A tenant: a ServiceAccount with full rights over Secrets, Pods, ServiceAccounts, ConfigMaps and Events in `namespace` only; `may_label` also lets it
/// patch its own Namespace object (as some self-service setups allow).
async fn tenant(env: &TestEnv, namespace: &str, may_label: bool) -> Client {
    // What the `admin` role gives a namespace's owner over these objects (the local control plane does not run the
    // controller that aggregates `admin`, so the rules are spelled out).
    let resources = ["secrets", "pods", "serviceaccounts", "configmaps", "events"];
    let verbs = ["get", "list", "watch", "create", "update", "patch", "delete"];
    support::grant_tenant(env, namespace, &resources, &verbs).await;
    if may_label {
        let name = format!("{namespace}-label");
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [namespace],
                       "verbs": ["get", "patch"]}],
        }))
        .unwrap();
        support::apply(&Api::<ClusterRole>::all(env.client.clone()), &role).await;
        env.cleanup::<ClusterRole>(&name);
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        }))
        .unwrap();
        support::apply(&Api::<ClusterRoleBinding>::all(env.client.clone()), &binding).await;
        env.cleanup::<ClusterRoleBinding>(&name);
    }
    let kubeconfig = support::service_account_kubeconfig(&env.client, namespace, "tenant").await;
    support::client_from(&kubeconfig).await
}

fn secret(name: &str, labels: &[(&str, &str)], owner: Option<&RegistryProfile>, config: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            owner_references: owner.map(|p| {
                vec![OwnerReference {
                    api_version: "regcred.dev/v1alpha1".into(),
                    kind: "RegistryProfile".into(),
                    name: p.name_any(),
                    uid: p.uid().unwrap(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(".dockerconfigjson".into(), ByteString(config.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

/// Creates a selected namespace and waits for its Secret: every change made before it has been through a
/// reconcile of the profile by then (reconciles of one profile run one after another, each over the whole view).
async fn barrier(h: &Harness, env: &TestEnv, name: &str) {
    let ns = env.namespace_nowait(name, &[("pull", "yes")]).await;
    h.wait_credentials(&ns, "pull", SERVER, "real").await;
}

#[tokio::test]
async fn forged_and_edited_secrets_never_move_credentials_and_what_regcred_owns_is_restored() {
    TestEnv::new("forged")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", "bot"), ("password", "real")]).await;
            let name = h.profile("p", basic_spec(h.select("yes"))).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "no")]).await;
            h.wait_credentials(&a, "pull", SERVER, "real").await;
            let profile = Api::<RegistryProfile>::all(h.client()).get(&name).await.unwrap();
            let (tenant_a, tenant_b) = (tenant(&env, &a, false).await, tenant(&env, &b, false).await);
            let (in_a, in_b) = (Api::<Secret>::namespaced(tenant_a, &a), Api::<Secret>::namespaced(tenant_b, &b));
            let managed = [("app.kubernetes.io/managed-by", "regcred"), ("regcred.dev/profile", name.as_str())];

            // In an unselected namespace, a Secret with regcred's name and labels (no ownerReference) is not
            // regcred's: never written, never deleted.
            let forged = in_b.create(&PostParams::default(), &secret("pull", &managed, None, FORGED)).await.unwrap();
            // In a selected namespace, a Secret with regcred's labels under another name: left alone too.
            let decoy = in_a.create(&PostParams::default(), &secret("decoy", &managed, None, FORGED)).await.unwrap();
            barrier(&h, &env, "c").await;
            for (api, original) in [(&in_b, &forged), (&in_a, &decoy)] {
                let now = api.get(&original.name_any()).await.unwrap();
                assert_eq!(now.resource_version(), original.resource_version(), "regcred touched a forged Secret");
            }

            // A forgery that claims the profile as its owner, in an unselected namespace: it never receives the
            // credentials (regcred deletes what claims to be its own where nothing is selected).
            in_b.delete("pull", &Default::default()).await.unwrap();
            in_b.create(&PostParams::default(), &secret("pull", &managed, Some(&profile), FORGED)).await.unwrap();
            wait_for("the owner-claiming forgery to be removed", WAIT, || async {
                match in_b.get_opt("pull").await.unwrap() {
                    None => Some(()),
                    Some(s) => {
                        assert_ne!(password_in(&s, SERVER).as_deref(), Some("real"), "credentials reached {b}");
                        None
                    }
                }
            })
            .await;

            // The tenant of a selected namespace edits regcred's Secret: content, then labels; both restored.
            let patch = json!({"data": {".dockerconfigjson": base64(FORGED)}});
            in_a.patch("pull", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            h.wait_credentials(&a, "pull", SERVER, "real").await;
            let patch =
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null, "regcred.dev/profile": null}}});
            in_a.patch("pull", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            wait_for("the labels to be restored", WAIT, || async {
                let s = in_a.get("pull").await.ok()?;
                (s.labels().get("regcred.dev/profile") == Some(&name)).then_some(())
            })
            .await;
            // Deleted by the tenant: recreated.
            in_a.delete("pull", &Default::default()).await.unwrap();
            h.wait_credentials(&a, "pull", SERVER, "real").await;

            // The tenant strips everything that marks it as regcred's: it is the tenant's now. regcred reports
            // the conflict and leaves it alone rather than take a Secret it cannot prove is its own.
            let patch = json!({"metadata": {"ownerReferences": null, "labels": null}});
            in_a.patch("pull", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            let taken = in_a.get("pull").await.unwrap();
            h.condition(&name, "SecretsSynced", "False", "Conflict").await;
            assert_eq!(in_a.get("pull").await.unwrap().resource_version(), taken.resource_version());

            // Through all of it the decoy and the forged Secrets kept what the tenants wrote.
            let decoy = in_a.get("decoy").await.unwrap();
            assert_eq!(decoy.data.unwrap()[".dockerconfigjson"].0, FORGED.as_bytes());
        })
        .await;
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_profile_cannot_read_a_secret_outside_regcreds_namespace() {
    TestEnv::new("reach")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let tenant_secrets = Api::<Secret>::namespaced(tenant(&env, &a, false).await, &a);
            let theirs = Secret {
                metadata: ObjectMeta { name: Some("creds".into()), ..Default::default() },
                string_data: Some(BTreeMap::from([
                    ("username".into(), "tenant".into()),
                    ("password".into(), "theirs".into()),
                ])),
                ..Default::default()
            };
            tenant_secrets.create(&PostParams::default(), &theirs).await.unwrap();

            // The CRD has no way to name another namespace. Server-side apply (kubectl apply --server-side, GitOps
            // tools) and strict validation (kubectl's default) refuse the field.
            let mut spec = basic_spec(h.select("yes"));
            spec["credentials"]["secretRef"]["namespace"] = json!(a);
            let full = format!("{}-p", env.id);
            let doc = json!({
                "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                "metadata": {"name": full, "labels": {"regcred-test": env.id}}, "spec": spec,
            });
            let profiles = Api::<RegistryProfile>::all(h.client());
            for params in [PatchParams::apply("adversary"), PatchParams::apply("adversary").validation_strict()] {
                let err = profiles.patch(&full, &params, &Patch::Apply(&doc)).await.unwrap_err().to_string();
                assert!(err.contains("secretRef.namespace") && err.contains("not declared in schema"), "{err}");
            }

            // A plain create without validation drops the field: the profile reads `creds` from regcred's
            // namespace, where there is none yet, and says so. Nothing is written anywhere.
            let created: RegistryProfile = h
                .client()
                .request(
                    axum::http::Request::post("/apis/regcred.dev/v1alpha1/registryprofiles?fieldValidation=Ignore")
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&doc).unwrap())
                        .unwrap(),
                )
                .await
                .unwrap();
            env.cleanup::<RegistryProfile>(&full);
            let stored = serde_json::to_value(&created.spec).unwrap();
            assert!(stored["credentials"]["secretRef"].get("namespace").is_none(), "{stored}");
            h.condition(&full, "CredentialsResolved", "False", "SecretNotFound").await;
            assert!(h.secret(&a, "pull").await.is_none());
            let status = profiles.get(&full).await.unwrap().status.unwrap();
            let text = serde_json::to_string(&status).unwrap();
            assert!(!text.contains("theirs"));

            // Once regcred's own namespace has `creds`, that is what is distributed; the tenant's stays theirs.
            h.source("creds", &[("username", "bot"), ("password", "real")]).await;
            h.wait_credentials(&a, "pull", SERVER, "real").await;
            let still = tenant_secrets.get("creds").await.unwrap();
            assert!(still.labels().is_empty() && still.owner_references().is_empty());
        })
        .await;
}

#[tokio::test]
async fn tenants_labelling_their_namespace_get_only_what_the_selector_grants() {
    TestEnv::new("labels")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", "bot"), ("password", "real")]).await;
            let excluded = env.namespace("x", &[]).await;
            let mut spec = basic_spec(h.select("yes"));
            spec["namespaces"]["exclude"] = json!([excluded]);
            let name = h.profile("p", spec).await;
            let c = env.namespace("c", &[]).await;
            let namespaces_as = |client: Client| Api::<Namespace>::all(client);
            let (tenant_x, tenant_c) = (tenant(&env, &excluded, true).await, tenant(&env, &c, true).await);
            let label = |v: &str| json!({"metadata": {"labels": {"pull": v}}});

            // A tenant may label only its own namespace, and an excluded one stays excluded whatever its labels.
            let other = namespaces_as(tenant_x.clone()).patch(&c, &PatchParams::default(), &Patch::Merge(&label("yes"))).await;
            assert!(matches!(other, Err(kube::Error::Api(ref e)) if e.code == 403), "{other:?}");
            namespaces_as(tenant_x).patch(&excluded, &PatchParams::default(), &Patch::Merge(&label("yes"))).await.unwrap();
            // The selector grants to whoever can set its labels: the tenant of c opts in, then out.
            namespaces_as(tenant_c.clone()).patch(&c, &PatchParams::default(), &Patch::Merge(&label("yes"))).await.unwrap();
            h.wait_credentials(&c, "pull", SERVER, "real").await;
            assert!(h.secret(&excluded, "pull").await.is_none(), "an excluded namespace got the Secret");
            // The status follows the Secret's write: wait for it rather than read the status of the last reconcile.
            let profiles = Api::<regcred::api::RegistryProfile>::all(env.client.clone());
            support::wait_for("the profile's summary to count the opted-in namespace", WAIT, || async {
                let p = profiles.get(&name).await.ok()?;
                (p.status?.sync_summary.as_deref() == Some("1/1")).then_some(())
            })
            .await;
            h.ready(&name).await;
            namespaces_as(tenant_c).patch(&c, &PatchParams::default(), &Patch::Merge(&label("no"))).await.unwrap();
            h.wait_gone(&c, "pull").await;
            // regcred's own labels on a namespace mean nothing to it.
            let forged = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "regcred", "regcred.dev/profile": name}}});
            Api::<Namespace>::all(h.client()).patch(&c, &PatchParams::default(), &Patch::Merge(&forged)).await.unwrap();
            barrier(&h, &env, "d").await;
            assert!(h.secret(&c, "pull").await.is_none());
        })
        .await;
}

/// Whether a Secret carries `password` anywhere in its dockerconfigjson (whatever the registry key).
fn holds_password(secret: &Secret, password: &str) -> bool {
    regcred::fixtures::auths(secret).keys().any(|server| password_in(secret, server).as_deref() == Some(password))
}

/// Watches the Secrets of `namespace` as `client` (a tenant) until dropped; returns every Secret it saw.
fn watch_secrets(
    client: Client,
    namespace: &str,
) -> (tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::Mutex<Vec<Secret>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = seen.clone();
    let api = Api::<Secret>::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(kube::runtime::watcher::Event::Apply(s) | kube::runtime::watcher::Event::InitApply(s)) => {
                    into.lock().unwrap().push(s);
                }
                Ok(_) => {}
                Err(e) => panic!("the tenant's watch failed: {e}"),
            }
        }
    });
    (task, seen)
}

/// Two teams' profiles write a Secret under the same name (`shared-creds`) for disjoint namespaces. Team A's own
/// profile withholds its Secret (its registry preflight fails), so A's namespaces have none; A watches its Secrets
/// while creating Pods there and in a brand-new namespace. Before, the webhook picked whichever profile came first
/// under that name and wrote *team B's* credentials into A's namespace for a moment. Now nothing of B's is ever
/// written there, a namespace both select is a Conflict on both (no Secret written, each naming the other), and
/// team B's namespace keeps working.
#[tokio::test]
async fn a_tenant_never_receives_another_profiles_credentials_through_a_shared_secret_name() {
    use support::webhook::{create_pod, pod, start_operator};
    TestEnv::new("shared")
        .await
        .run(|env| async move {
            let h = start_operator(&env, &[]).await;
            h.source("creds-a", &[("username", "team-a"), ("password", "a-secret")]).await;
            h.source("creds-b", &[("username", "team-b"), ("password", "b-secret")]).await;
            let spec = |team: &str| {
                let mut spec = basic_spec(json!({"selector": {"matchLabels": {"regcred-test": env.id, team: "yes"}}}));
                spec["secretName"] = json!("shared-creds");
                spec["credentials"]["secretRef"]["name"] = json!(format!("creds-{team}"));
                spec
            };
            // B first, so that an order-dependent lookup would find B's profile under the shared name.
            let b_profile = h.profile("b", spec("b")).await;
            let mut a_spec = spec("a");
            // registry.example.com does not resolve here: the preflight fails and A withholds.
            a_spec["validation"] = json!({"onFailure": "Withhold"});
            let a_profile = h.profile("a", a_spec).await;
            let b = env.namespace("b", &[("b", "yes")]).await;
            h.wait_credentials(&b, "shared-creds", SERVER, "b-secret").await;
            h.condition(&a_profile, "SecretsSynced", "False", "WithheldByPreflight").await;

            let image = format!("{SERVER}/team-a/app:1");
            let a = env.namespace("a", &[("a", "yes")]).await;
            let tenant_a = tenant(&env, &a, false).await;
            let (watch, seen) = watch_secrets(tenant_a.clone(), &a);
            let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(tenant_a.clone(), &a);
            for i in 0..5 {
                let created =
                    pods.create(&PostParams::default(), &pod(&format!("p{i}"), &[&image], &[], &[])).await.unwrap();
                assert!(
                    created.spec.unwrap().image_pull_secrets.unwrap_or_default().is_empty(),
                    "a Pod was given a Secret A withholds"
                );
            }
            // A namespace created a moment ago, a Pod in it at once (the webhook's new-namespace path).
            let fresh = env.namespace("fresh", &[("a", "yes")]).await;
            let tenant_fresh = tenant(&env, &fresh, false).await;
            let (watch_fresh, seen_fresh) = watch_secrets(tenant_fresh.clone(), &fresh);
            let in_fresh = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(tenant_fresh, &fresh);
            let created = in_fresh.create(&PostParams::default(), &pod("p", &[&image], &[], &[])).await.unwrap();
            assert!(created.spec.unwrap().image_pull_secrets.unwrap_or_default().is_empty());

            // A namespace both teams' profiles select: a Conflict on both, naming the other; no Secret written.
            let both = env.namespace("both", &[("a", "yes"), ("b", "yes")]).await;
            let b_status = h.condition(&b_profile, "SecretsSynced", "False", "Conflict").await;
            let failure = b_status.status.unwrap().failed_namespaces.into_iter().find(|f| f.namespace == both).unwrap();
            assert!(
                failure.message.contains(&a_profile) && failure.message.contains("shared-creds"),
                "{}",
                failure.message
            );
            let in_both = create_pod(&h, &both, &pod("p", &[&image], &[], &[])).await;
            assert!(in_both.is_empty(), "a Pod in a contested namespace was given {in_both:?}");
            assert!(h.secret(&both, "shared-creds").await.is_none(), "a contested namespace received a Secret");

            // Team B's own namespace kept working throughout, and its new Pods get the Secret.
            let in_b = create_pod(&h, &b, &pod("p", &[&image], &[], &[])).await;
            assert_eq!(in_b, ["shared-creds"]);
            h.wait_credentials(&b, "shared-creds", SERVER, "b-secret").await;
            // A barrier: a Secret for B's next namespace means every write above has been through B's reconcile.
            let b2 = env.namespace("b2", &[("b", "yes")]).await;
            h.wait_credentials(&b2, "shared-creds", SERVER, "b-secret").await;

            watch.abort();
            watch_fresh.abort();
            for (namespace, seen) in [(&a, seen), (&fresh, seen_fresh)] {
                let seen = seen.lock().unwrap();
                let leaked: Vec<String> =
                    seen.iter().filter(|s| holds_password(s, "b-secret")).map(|s| s.name_any()).collect();
                assert!(leaked.is_empty(), "tenant A's watch of {namespace} saw team B's credentials in {leaked:?}");
            }
        })
        .await;
}

/// A profile author holds the chart's `<fullname>-profile-editor` (an aggregated ClusterRole, bound cluster-wide):
/// it writes RegistryProfiles and reads their status, but reads no Secret (not regcred's sources, not what regcred
/// writes) and cannot request a token of regcred's ServiceAccount.
#[tokio::test]
async fn a_profile_author_writes_profiles_but_reads_no_secret_and_borrows_no_token() {
    TestEnv::new("author")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", "bot"), ("password", "real")]).await;
            let release = support::release_name(&env.id);
            let author = support::profile_author(&env).await;

            // The author writes a profile like any other.
            let full = format!("{}-authored", env.id);
            let profile = regcred::fixtures::manifest(&full, &[("regcred-test", &env.id)], basic_spec(h.select("yes")));
            let as_author = Api::<RegistryProfile>::all(author.clone());
            as_author.create(&PostParams::default(), &profile).await.unwrap();
            env.cleanup::<RegistryProfile>(&full);
            let a = env.namespace("a", &[("pull", "yes")]).await;
            h.wait_credentials(&a, "pull", SERVER, "real").await;
            h.ready(&full).await;
            assert!(as_author.get_status(&full).await.is_ok());

            // No Secret: neither regcred's sources nor what it writes; no token of regcred's ServiceAccount.
            let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
            assert!(forbidden(Api::<Secret>::namespaced(author.clone(), &h.op_ns).get("creds").await.map(drop)));
            assert!(forbidden(Api::<Secret>::namespaced(author.clone(), &a).get("pull").await.map(drop)));
            assert!(forbidden(Api::<Secret>::all(author.clone()).list(&Default::default()).await.map(drop)));
            let request = k8s_openapi::api::authentication::v1::TokenRequest::default();
            let token = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(author, &h.op_ns)
                .create_subresource::<_, k8s_openapi::api::authentication::v1::TokenRequest>(
                    "token",
                    &release,
                    &PostParams::default(),
                    &request,
                )
                .await;
            assert!(forbidden(token.map(drop)));
        })
        .await;
}

/// A failed pull of `image` in `namespace`'s Pod `pod` (`uid`), as the kubelet reports it, changed by `edit`.
fn pull_failed(namespace: &str, name: &str, pod: &str, uid: &str, image: &str, edit: serde_json::Value) -> Event {
    let now =
        serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())).unwrap();
    let mut event = json!({
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": pod, "uid": uid},
        "reason": "Failed", "type": "Warning", "source": {"component": "kubelet"},
        "message": format!("Failed to pull image \"{image}\": failed to resolve reference \"{image}\": 401 Unauthorized"),
        "count": 1, "firstTimestamp": now, "lastTimestamp": now,
    });
    json_patch_merge(&mut event, edit);
    serde_json::from_value(event).unwrap()
}

fn json_patch_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                json_patch_merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Creates Pod `name` pulling `image` in `namespace` as `client`, and makes its status show the failed pull as the
/// kubelet would (there is no kubelet here: the admin writes `pods/status`). Returns its uid.
async fn failing_pod(env: &TestEnv, client: Client, namespace: &str, name: &str, image: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": image}]},
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(client, namespace).create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"containerStatuses": [{
        "name": "c", "image": image, "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ErrImagePull", "message": "401 Unauthorized"}},
    }]}});
    let admin = Api::<Pod>::namespaced(env.client.clone(), namespace);
    admin.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    pod.uid().unwrap()
}

#[tokio::test]
async fn forged_pull_failure_events_never_reach_status_and_real_failures_still_do() {
    TestEnv::new("forged-events")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", "bot"), ("password", "real")]).await;
            let name = h.profile("p", basic_spec(h.select("yes"))).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let t = env.namespace("t", &[("pull", "no")]).await;
            h.wait_credentials(&a, "pull", SERVER, "real").await;
            let operator = h.operator.as_ref().unwrap();
            let reconciles_before = operator.metric("regcred_reconciles_total").await;
            let image = format!("{SERVER}/team/app:1");
            let tenant = tenant(&env, &t, false).await;
            let forge = Api::<Event>::namespaced(tenant.clone(), &t);

            // The legitimate namespace's Pod really fails its pull; so does one of the tenant's own.
            let app = failing_pod(&env, env.client.clone(), &a, "app", &image).await;
            let own = failing_pod(&env, tenant.clone(), &t, "own", &image).await;

            // From its own (unselected) namespace, the tenant names the Pod of the selected one: an Event with
            // eventTime set passes the apiserver's validation whatever namespace it names.
            let event_time = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::now(),
            ))
            .unwrap();
            // Everything else about it is true (that Pod, its uid, the image it fails to pull), so only the
            // namespace gives it away.
            let mut other = pull_failed(&t, "other-namespace", "app", &app, &image, json!({
                "eventTime": event_time, "reportingComponent": "kubelet", "reportingInstance": "node-1", "action": "Pull",
                "count": 9999, "message": format!("Failed to pull image \"{image}\": {image}: not found"),
            }));
            other.involved_object.namespace = Some(a.clone());
            let other = forge.create(&PostParams::default(), &other).await.unwrap();
            assert_eq!(other.involved_object.namespace.as_deref(), Some(a.as_str()), "the apiserver tied the namespaces");
            // A Pod that does not exist, with a count to impress.
            forge.create(&PostParams::default(), &pull_failed(&t, "ghost", "ghost", "", &image, json!({"count": 9999}))).await.unwrap();
            // A flood about its own failing Pod, each claiming 9999 failures.
            let flood = 200;
            futures::stream::iter(0..flood)
                .for_each_concurrent(16, |i| {
                    let (forge, t, own, image) = (forge.clone(), t.clone(), own.clone(), image.clone());
                    async move {
                        let e = pull_failed(&t, &format!("flood-{i}"), "own", &own, &image, json!({"count": 9999}));
                        forge.create(&PostParams::default(), &e).await.unwrap();
                    }
                })
                .await;
            // Then the kubelet reports the selected namespace's real failure.
            Api::<Event>::namespaced(env.client.clone(), &a)
                .create(&PostParams::default(), &pull_failed(&a, "app.kubelet", "app", &app, &image, json!({})))
                .await
                .unwrap();

            // Every Event has been weighed once regcred has used or refused all of them (the refusals and the
            // failures recorded add up to what was written).
            let refused = |reason: &'static str| async move {
                let body = support::http_get(&operator.metrics_addr().await, "/metrics").await.1;
                let line = format!("regcred_pull_events_refused_total{{reason=\"{reason}\"}} ");
                body.lines().find_map(|l| l.strip_prefix(&line)?.parse::<f64>().ok()).unwrap_or(0.0)
            };
            let (limited, used) = wait_for("every forged Event to be weighed", WAIT, || async {
                let limited = refused("rate_limited").await;
                let used = operator.metric("regcred_pull_failures_total").await;
                let weighed = refused("other_namespace").await + refused("pod_not_found").await + limited + used;
                (weighed >= f64::from(flood + 3)).then_some((limited, used))
            })
            .await;
            assert_eq!((refused("other_namespace").await, refused("pod_not_found").await), (1.0, 1.0));
            // The tenant's namespace got its share, and no more: the rest of the flood was refused unread.
            let own_count = used - 1.0;
            assert!((1.0..=20.0).contains(&own_count) && limited >= f64::from(flood) - own_count, "{used} {limited}");

            // The status shows the real failure as the kubelet reported it, counted as seen; the tenant's own
            // Pod only among the unselected namespaces', counted as regcred saw it; nothing forged.
            let profiles = Api::<RegistryProfile>::all(h.client());
            let status = wait_for("the real failure and the tenant's own in status", WAIT, || async {
                let status = profiles.get(&name).await.ok()?.status?;
                let own = status.unselected_pull_failures.iter().find(|f| f.pod == "own")?;
                (status.pull_failures.iter().any(|f| f.pod == "app") && f64::from(own.count) == own_count)
                    .then_some(status)
            })
            .await;
            let shown: Vec<_> =
                status.pull_failures.iter().map(|f| (f.namespace.as_str(), f.pod.as_str(), f.image.as_str(), f.count)).collect();
            assert_eq!(shown, [(a.as_str(), "app", image.as_str(), 1)], "{status:?}");
            assert_eq!(status.pull_failures[0].reason, "AuthenticationFailed");
            let unselected: Vec<_> =
                status.unselected_pull_failures.iter().map(|f| (f.namespace.as_str(), f.pod.as_str())).collect();
            assert_eq!(unselected, [(t.as_str(), "own")], "{status:?}");
            // The flood did not make regcred reconcile once per Event.
            let reconciles = operator.metric("regcred_reconciles_total").await - reconciles_before;
            assert!(reconciles < 50.0, "{reconciles} reconciles");
        })
        .await;
}

/// A profile author names, as its credential source, another team's Secret in regcred's namespace (which names
/// the profiles that may use it) and a Secret regcred writes itself (a token copy): both refused with
/// `SourceNotAllowed`, nothing written anywhere, while the team's own profile keeps working.
#[tokio::test]
async fn a_profile_cannot_use_a_source_secret_that_does_not_name_it_or_one_regcred_writes() {
    TestEnv::new("borrow")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let team_b = format!("{}-b", env.id);
            let sources = Api::<Secret>::namespaced(h.client(), &h.op_ns);
            let bound: Secret = serde_json::from_value(json!({
                "metadata": {"name": "team-b-creds", "annotations": {"regcred.dev/profiles": team_b}},
                "stringData": {"username": "team-b", "password": "b-secret"},
            }))
            .unwrap();
            support::apply(&sources, &bound).await;
            let copy: Secret = serde_json::from_value(json!({
                "metadata": {"name": "regcred-token-0000", "labels": {"app.kubernetes.io/part-of": "regcred"}},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": FORGED},
            }))
            .unwrap();
            support::apply(&sources, &copy).await;
            let mut spec = basic_spec(h.select("b"));
            spec["credentials"]["secretRef"]["name"] = json!("team-b-creds");
            assert_eq!(h.profile("b", spec.clone()).await, team_b);
            let b = env.namespace("b", &[("pull", "b")]).await;
            h.wait_credentials(&b, "pull", SERVER, "b-secret").await;

            let mine = env.namespace("mine", &[("pull", "mine")]).await;
            let mut borrow = basic_spec(h.select("mine"));
            borrow["credentials"]["secretRef"]["name"] = json!("team-b-creds");
            let thief = h.profile("thief", borrow).await;
            let p = h.condition(&thief, "CredentialsResolved", "False", "SourceNotAllowed").await;
            let c = p.status.unwrap().conditions.into_iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
            assert!(c.message.contains("regcred.dev/profiles") && !c.message.contains("b-secret"), "{}", c.message);
            let mut copy_spec = basic_spec(h.select("mine"));
            copy_spec["credentials"]["secretRef"]["name"] = json!("regcred-token-0000");
            copy_spec["secretName"] = json!("pull-copy");
            let copier = h.profile("copier", copy_spec).await;
            h.condition(&copier, "CredentialsResolved", "False", "SourceNotAllowed").await;
            assert!(h.secret(&mine, "pull").await.is_none() && h.secret(&mine, "pull-copy").await.is_none());

            // Team B's own profile is untouched, and a new namespace of B's is served.
            let b2 = env.namespace("b2", &[("pull", "b")]).await;
            h.wait_credentials(&b2, "pull", SERVER, "b-secret").await;
            assert!(h.secret(&mine, "pull").await.is_none(), "the thief's namespace received team B's Secret");
        })
        .await;
}
