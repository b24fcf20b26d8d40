//! The Helm chart: it lints, and what it renders is accepted by the real apiserver (server-side dry run).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use support::TestEnv;

fn helm(args: &[&str]) -> String {
    let helm = support::repo_root().join(".local/bin/helm");
    let out = std::process::Command::new(&helm).args(args).current_dir(support::repo_root()).output().unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered documents of the chart with `sets`.
fn render(namespace: &str, sets: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["template", "regcred", "charts/regcred", "--namespace", namespace, "--kube-version", "1.37.2"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let text = helm(&args);
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn webhook_configuration(docs: &[serde_json::Value]) -> MutatingWebhookConfiguration {
    let doc = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").expect("a webhook configuration");
    serde_json::from_value(doc.clone()).unwrap()
}

#[tokio::test]
async fn the_chart_renders_a_webhook_configuration_the_apiserver_accepts() {
    TestEnv::new("chart")
        .await
        .run(|env| async move {
            helm(&["lint", "charts/regcred", "--kube-version", "1.37.2"]);
            let ns = env.namespace("system", &[]).await;
            let config = webhook_configuration(&render(&ns, &[]));
            let hook = &config.webhooks.as_ref().unwrap()[0];
            assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
            assert_eq!(hook.side_effects, "NoneOnDryRun");
            assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
            assert_eq!(hook.timeout_seconds, Some(5));
            let rules = hook.rules.as_ref().unwrap();
            assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_owned()][..]));
            assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_owned()][..]));
            let selector = serde_json::to_value(hook.namespace_selector.as_ref().unwrap()).unwrap().to_string();
            for excluded in ["kube-system", ns.as_str(), "regcred.dev/inject", "disabled"] {
                assert!(selector.contains(excluded), "{excluded} not excluded: {selector}");
            }
            let objects = serde_json::to_value(hook.object_selector.as_ref().unwrap()).unwrap().to_string();
            assert!(objects.contains("regcred.dev/inject"), "no Pod opt-out: {objects}");
            let service = hook.client_config.service.as_ref().unwrap();
            assert_eq!((service.namespace.as_str(), service.path.as_deref()), (ns.as_str(), Some("/mutate")));

            // The apiserver validates it as it would on install.
            let api = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
            api.create(&PostParams { dry_run: true, ..Default::default() }, &config).await.unwrap();

            // Options: fail closed, a shorter timeout, cert-manager.
            let docs = render(
                &ns,
                &["webhook.failurePolicy=Fail", "webhook.timeoutSeconds=3", "webhook.certManager.enabled=true"],
            );
            let config = webhook_configuration(&docs);
            let hook = &config.webhooks.as_ref().unwrap()[0];
            assert_eq!((hook.failure_policy.as_deref(), hook.timeout_seconds), (Some("Fail"), Some(3)));
            let inject = config.metadata.annotations.as_ref().and_then(|a| a.get("cert-manager.io/inject-ca-from"));
            assert_eq!(inject.map(String::as_str), Some(format!("{ns}/regcred-webhook").as_str()));
            assert!(docs.iter().any(|d| d["kind"] == "Certificate"), "no Certificate with cert-manager on");
            api.create(&PostParams { dry_run: true, ..Default::default() }, &config).await.unwrap();
            assert!(
                render(&ns, &["webhook.enabled=false"]).iter().all(|d| d["kind"] != "MutatingWebhookConfiguration")
            );
        })
        .await;
}
