//! The local control plane is a real Kubernetes: each test fails if the part it names were missing.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use support::{TestEnv, wait_for};

fn pinned_version() -> String {
    let text = std::fs::read_to_string(support::repo_root().join("tools/controlplane/versions.env")).unwrap();
    text.lines().find_map(|l| l.strip_prefix("KUBERNETES_VERSION=")).unwrap().trim().to_owned()
}

#[tokio::test]
async fn server_reports_the_pinned_kubernetes_release() {
    let client = support::client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, pinned_version());
}

#[tokio::test]
async fn a_deleted_namespace_disappears_through_the_namespace_controller() {
    TestEnv::new("nsdelete")
        .await
        .run(|env| async move {
            let ns = env.namespace("gone", &[]).await;
            let cm = ConfigMap {
                metadata: ObjectMeta { name: Some("content".into()), ..Default::default() },
                ..Default::default()
            };
            Api::<ConfigMap>::namespaced(env.client.clone(), &ns).create(&PostParams::default(), &cm).await.unwrap();
            let api = Api::<Namespace>::all(env.client.clone());
            api.delete(&ns, &DeleteParams::default()).await.unwrap();
            // Only the namespace controller empties the namespace and removes its `kubernetes` finalizer.
            wait_for("the namespace to be gone", Duration::from_secs(60), || async {
                api.get_opt(&ns).await.unwrap().is_none().then_some(())
            })
            .await;
        })
        .await;
}

#[tokio::test]
async fn a_pod_in_a_fresh_namespace_is_admitted_with_the_default_service_account() {
    TestEnv::new("podsa")
        .await
        .run(|env| async move {
            let ns = env.namespace("pods", &[]).await;
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "registry.example.com/app:1"}]}
            }))
            .unwrap();
            let created =
                Api::<Pod>::namespaced(env.client.clone(), &ns).create(&PostParams::default(), &pod).await.unwrap();
            let spec = created.spec.unwrap();
            assert_eq!(spec.service_account_name.as_deref(), Some("default"));
            // ServiceAccount admission mounts the projected token volume.
            let volumes = spec.volumes.unwrap_or_default();
            assert!(volumes.iter().any(|v| v.name.starts_with("kube-api-access-")), "{volumes:?}");
        })
        .await;
}

#[tokio::test]
async fn a_service_account_token_without_grants_is_forbidden_to_list_secrets() {
    TestEnv::new("rbac")
        .await
        .run(|env| async move {
            let ns = env.namespace("rbac", &[]).await;
            let kubeconfig = support::service_account_kubeconfig(&env.client, &ns, "nobody").await;
            let client = support::client_from(&kubeconfig).await;
            // The token authenticates...
            let version = client.apiserver_version().await;
            assert!(version.is_ok(), "{version:?}");
            // ...but RBAC grants nothing.
            let err = Api::<Secret>::namespaced(client, &ns).list(&ListParams::default()).await.unwrap_err();
            assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err:?}");
        })
        .await;
}

#[tokio::test]
async fn a_configmap_whose_owner_is_deleted_is_garbage_collected() {
    TestEnv::new("gc")
        .await
        .run(|env| async move {
            let ns = env.namespace("gc", &[]).await;
            let api = Api::<ConfigMap>::namespaced(env.client.clone(), &ns);
            let owner = ConfigMap {
                metadata: ObjectMeta { name: Some("owner".into()), ..Default::default() },
                ..Default::default()
            };
            let owner = api.create(&PostParams::default(), &owner).await.unwrap();
            let child = ConfigMap {
                metadata: ObjectMeta {
                    name: Some("child".into()),
                    owner_references: Some(vec![owner.controller_owner_ref(&()).unwrap()]),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &child).await.unwrap();
            api.delete("owner", &DeleteParams::default()).await.unwrap();
            wait_for("the child to be collected", Duration::from_secs(60), || async {
                api.get_opt("child").await.unwrap().is_none().then_some(())
            })
            .await;
        })
        .await;
}

#[tokio::test]
async fn a_crd_with_a_cel_rule_rejects_an_invalid_object() {
    let env = TestEnv::new("cel").await;
    let group = format!("{}.test.regcred.dev", env.id);
    let crd_name = format!("widgets.{group}");
    env.cleanup::<CustomResourceDefinition>(&crd_name);
    env.run(|env| async move {
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": crd_name},
            "spec": {
                "group": group,
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                "scope": "Cluster",
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]
                    }}
                }}}]
            }
        }))
        .unwrap();
        let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
        crds.create(&PostParams::default(), &crd).await.unwrap();
        wait_for("the CRD to be established", Duration::from_secs(30), || async {
            let c = crds.get(&crd_name).await.ok()?;
            c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
        let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &resource);
        let object = |min: i64, max: i64, name: &str| {
            let mut o = DynamicObject::new(name, &resource);
            o.data = serde_json::json!({"spec": {"min": min, "max": max}});
            o
        };
        // The discovery cache of a new CRD can lag a moment behind Established.
        wait_for("a valid object to be accepted", Duration::from_secs(30), || async {
            api.create(&PostParams::default(), &object(1, 2, "good")).await.ok()
        })
        .await;
        let err = api.create(&PostParams::default(), &object(3, 2, "bad")).await.unwrap_err();
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 422);
                assert!(s.message.contains("min must not exceed max"), "{}", s.message);
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        api.delete("good", &DeleteParams::default()).await.unwrap();
    })
    .await;
}
