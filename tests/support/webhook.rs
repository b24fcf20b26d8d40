//! The webhook registered with the local control plane, for tests and benchmarks.

pub mod slow;

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::harness::{Harness, WAIT, basic_spec};
use super::{TestEnv, free_port, wait_for};

pub const REGISTRY: &str = "registry.example.com:5000";

/// The Secret name `basic_spec` gives the profile.
pub const SECRET: &str = "pull";

/// The test's webhook configuration: by URL on `port`, limited to the test's own namespaces so parallel tests do
/// not call each other's webhooks; its caBundle is `ca_bundle` (PEM), or left for regcred to fill in.
pub async fn register(env: &TestEnv, port: u16, ca_bundle: Option<&str>) -> String {
    let name = super::webhook_configuration_name(env);
    let mut client_config = json!({"url": format!("https://127.0.0.1:{port}/mutate")});
    if let Some(pem) = ca_bundle {
        client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let selectors = json!({
        "namespaceSelector": {
            "matchLabels": {"regcred-test": env.id},
            "matchExpressions": [{"key": "regcred.dev/inject", "operator": "NotIn", "values": ["disabled"]}],
        },
        "objectSelector": {
            "matchExpressions": [{"key": "regcred.dev/inject", "operator": "NotIn", "values": ["disabled"]}],
        },
    });
    let mut pods = json!({
        "name": "pods.regcred.dev",
        "clientConfig": client_config,
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        "failurePolicy": "Ignore",
        "sideEffects": "NoneOnDryRun",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        "reinvocationPolicy": "IfNeeded",
    });
    // As the chart's images.regcred.dev: Pod updates and workloads, for the image checks.
    let mut images = json!({
        "name": "images.regcred.dev",
        "clientConfig": client_config,
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]},
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
            {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["jobs", "cronjobs"]},
        ],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    });
    for entry in [&mut pods, &mut images] {
        entry.as_object_mut().unwrap().extend(selectors.as_object().unwrap().clone());
    }
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [pods, images],
    }))
    .unwrap();
    super::apply(&Api::<MutatingWebhookConfiguration>::all(env.client.clone()), &config).await;
    env.cleanup::<MutatingWebhookConfiguration>(&name);
    name
}

/// Applies a ready profile for namespaces labelled `pull=yes` with images from [`REGISTRY`].
pub async fn serve_registry(h: &Harness) {
    h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
    let mut spec = basic_spec(h.select("yes"));
    spec["server"] = json!(REGISTRY);
    let profile = h.profile("p", spec).await;
    h.ready(&profile).await;
}

/// Registers the test's webhook without a caBundle, starts the operator serving it with self-managed
/// certificates (plus `extra` arguments), and waits until regcred has published its CA.
pub async fn start_operator(env: &TestEnv, extra: &[&str]) -> Harness {
    let port = free_port();
    let name = register(env, port, None).await;
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
    args.extend_from_slice(extra);
    let h = Harness::start_with(env, &args).await;
    wait_ca_bundle(&env.client, &name, WAIT).await;
    h
}

/// [`start`], with regcred talking to the apiserver through a [`slow::SlowApiserver`] that holds its admission
/// lookups for `delay` once switched on (the webhook's own tests reach the apiserver directly).
pub async fn start_behind_slow_apiserver(
    env: &TestEnv,
    delay: std::time::Duration,
    extra: &[&str],
) -> (Harness, slow::SlowApiserver) {
    super::install_crd(&env.client).await;
    let op_ns = env.namespace("system", &[]).await;
    let identity = super::operator_identity(env, &op_ns).await;
    let apiserver = slow::SlowApiserver::start(&identity, delay).await;
    let port = free_port();
    let name = register(env, port, None).await;
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
    args.extend_from_slice(extra);
    let operator = super::Operator::start_env(&apiserver.kubeconfig, &op_ns, &env.id, &args, &[]);
    let kubeconfig = apiserver.kubeconfig.clone();
    let h = Harness { env: env.clone(), op_ns, operator: Some(operator), kubeconfig };
    wait_ca_bundle(&env.client, &name, WAIT).await;
    serve_registry(&h).await;
    (h, apiserver)
}

/// [`start_operator`], then the profile of [`serve_registry`].
pub async fn start(env: &TestEnv, extra: &[&str]) -> Harness {
    let h = start_operator(env, extra).await;
    serve_registry(&h).await;
    h
}

/// Waits until the MutatingWebhookConfiguration `name` carries a caBundle (regcred has published its CA) and
/// returns it.
pub async fn wait_ca_bundle(
    client: &kube::Client,
    name: &str,
    timeout: std::time::Duration,
) -> k8s_openapi::ByteString {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    wait_for(&format!("the caBundle of {name}"), timeout, || async {
        let c = api.get(name).await.ok()?;
        c.webhooks?.first()?.client_config.ca_bundle.clone().filter(|b| !b.0.is_empty())
    })
    .await
}

/// Runs `kubectl` with `args` against the cluster under test, `stdin` on its standard input; returns whether it
/// succeeded and its standard output followed by its standard error (where it prints admission warnings).
pub async fn kubectl(args: &[&str], stdin: &str) -> (bool, String) {
    let local = super::repo_root().join(".local/bin/kubectl");
    let program = if local.exists() { local } else { "kubectl".into() };
    let mut command = tokio::process::Command::new(program);
    command.args(args).env("KUBECONFIG", super::kubeconfig_path());
    let (status, output) = super::run_with_input(command, stdin).await;
    (status == 0, output)
}

pub fn pod(name: &str, images: &[&str], pull_secrets: &[&str], labels: &[(&str, &str)]) -> Pod {
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
pub async fn create_pod(h: &Harness, ns: &str, pod: &Pod) -> Vec<String> {
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
