//! The Helm chart: it lints, and what it renders is accepted by the real apiserver (server-side dry run).
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use support::{TestEnv, helm};

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

            // Every object of the chart, with every optional part that needs no other operator switched on, is
            // accepted by the apiserver (server-side dry run).
            let docs = render(&ns, &["networkPolicy.enabled=true", "serviceAccount.annotations.a=b"]);
            for kind in ["Deployment", "PodDisruptionBudget", "NetworkPolicy", "CustomResourceDefinition", "Lease"] {
                assert!(docs.iter().any(|d| d["kind"] == kind), "no {kind} rendered");
            }
            for doc in &docs {
                dry_run_apply(&env.client, &ns, doc).await;
            }
            let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
            let container = &pod["containers"][0]["securityContext"];
            assert_eq!(container["readOnlyRootFilesystem"], true);
            assert_eq!(container["allowPrivilegeEscalation"], false);
            assert_eq!(container["capabilities"]["drop"], serde_json::json!(["ALL"]));
            assert_eq!(deployment["spec"]["replicas"], 2);

            // values.schema.json rejects what the chart cannot honour.
            for bad in
                ["webhook.failurePolicy=Sometimes", "replicas=3", "logging.format=xml", "webhook.timeoutSeconds=60"]
            {
                let out = std::process::Command::new(support::repo_root().join(".local/bin/helm"))
                    .args(["template", "r", "charts/regcred", "--kube-version", "1.37.2", "--set", bad])
                    .current_dir(support::repo_root())
                    .output()
                    .unwrap();
                assert!(!out.status.success(), "{bad} was accepted");
            }
        })
        .await;
}

/// The API of the object `doc` describes (in its own namespace, else `namespace`, if it is namespaced), its kind and
/// its name.
async fn api_of(
    client: &kube::Client,
    namespace: &str,
    doc: &serde_json::Value,
) -> (Api<kube::api::DynamicObject>, String, String) {
    let api_version = doc["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api = match caps.scope {
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), doc["metadata"]["namespace"].as_str().unwrap_or(namespace), &resource)
        }
    };
    (api, gvk.kind, doc["metadata"]["name"].as_str().unwrap().to_owned())
}

/// Server-side applies `doc` as a dry run: the apiserver validates it as it would on install.
async fn dry_run_apply(client: &kube::Client, namespace: &str, doc: &serde_json::Value) {
    let (api, kind, name) = api_of(client, namespace, doc).await;
    let params = kube::api::PatchParams::apply("regcred-chart-test").force().dry_run();
    if let Err(e) = api.patch(&name, &params, &kube::api::Patch::Apply(doc)).await {
        panic!("the apiserver rejects {kind} {name}: {e}");
    }
}

/// The environment the chart's Deployment gives the operator container: its literal values, with what differs
/// outside a Pod overridden (addresses on loopback, the certificate's name the apiserver dials).
fn deployment_env(docs: &[serde_json::Value], port: u16) -> Vec<(String, String)> {
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["run"]));
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect();
    for (name, value) in
        [("REGCRED_WEBHOOK_ADDR", format!("127.0.0.1:{port}")), ("REGCRED_WEBHOOK_DNS_NAMES", "127.0.0.1".to_owned())]
    {
        let slot = env.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("the chart sets no {name}"));
        slot.1 = value;
    }
    env
}

/// What a release leaves in the cluster: (kind, namespace, name) of every object `helm get manifest` lists.
fn release_objects(release: &str, namespace: &str) -> Vec<serde_json::Value> {
    let text = helm(&["get", "manifest", release, "--namespace", namespace]);
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

#[tokio::test]
async fn helm_install_runs_the_operator_as_the_charts_service_account_and_uninstall_leaves_only_what_is_kept() {
    use k8s_openapi::api::core::v1::Secret;
    use std::time::Duration;
    use support::webhook::{REGISTRY, SECRET, create_pod, pod, serve_registry, wait_ca_bundle};
    use support::{Operator, free_port, harness::Harness, wait_for};

    TestEnv::new("helm")
        .await
        .run(|env| async move {
            support::install_crd(&env.client).await;
            let ns = env.namespace("system", &[]).await;
            let release = support::webhook_configuration_name(&env);
            let port = free_port();
            let values = [
                "crds.install=false".to_owned(),
                format!("webhook.url=https://127.0.0.1:{port}/mutate"),
                format!("webhook.namespaceSelector.matchLabels.regcred-test={}", env.id),
                format!("controller.profileSelector=regcred-test={}", env.id),
            ];
            let mut install = support::helm_install_args(&release, &ns);
            install.push("--wait=false".to_owned());
            for v in &values {
                install.extend(["--set".to_owned(), v.clone()]);
            }
            helm(&install.iter().map(String::as_str).collect::<Vec<_>>());
            env.cleanup::<MutatingWebhookConfiguration>(&release);
            env.cleanup::<k8s_openapi::api::rbac::v1::ClusterRole>(&release);
            env.cleanup::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&release);
            let installed = release_objects(&release, &ns);
            let kinds: Vec<&str> = installed.iter().filter_map(|d| d["kind"].as_str()).collect();
            for kind in
                ["Deployment", "ServiceAccount", "ClusterRole", "Role", "Service", "PodDisruptionBudget", "Lease"]
            {
                assert!(kinds.contains(&kind), "the release has no {kind}: {kinds:?}");
            }

            // The operator as the chart runs it: its ServiceAccount, its environment.
            let kubeconfig = support::service_account_kubeconfig(&env.client, &ns, &release).await;
            let envs = deployment_env(&installed, port);
            let envs: Vec<(&str, String)> = envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let operator = Operator::start_env(&kubeconfig, &ns, &env.id, &[], &envs);
            let h = Harness { env: env.clone(), op_ns: ns.clone(), operator: Some(operator), kubeconfig };
            let webhooks = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
            let bundle = wait_ca_bundle(&env.client, &release, Duration::from_secs(60)).await;
            serve_registry(&h).await;
            let image = format!("{REGISTRY}/team/app:1");
            let selected = env.namespace("app", &[("pull", "yes")]).await;
            assert_eq!(create_pod(&h, &selected, &pod("a", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);
            // The chart asked for JSON logs, and got them.
            let first = h.logs().lines().next().unwrap_or_default().to_owned();
            assert!(serde_json::from_str::<serde_json::Value>(&first).is_ok(), "not JSON: {first}");
            let leases = Api::<Lease>::namespaced(env.client.clone(), &ns);
            wait_for("the chart's Lease to get a holder", Duration::from_secs(30), || async {
                leases.get(&release).await.ok()?.spec?.holder_identity.map(|_| ())
            })
            .await;

            // An upgrade that changes a value keeps what regcred manages at run time (the caBundle) and the
            // webhook working.
            let mut upgrade =
                vec!["upgrade", &release, "charts/regcred", "--namespace", &ns, "--set", "webhook.timeoutSeconds=3"];
            for v in &values {
                upgrade.extend(["--set", v]);
            }
            helm(&upgrade);
            let config = webhooks.get(&release).await.unwrap();
            let hook = &config.webhooks.as_ref().unwrap()[0];
            assert_eq!(hook.timeout_seconds, Some(3));
            assert_eq!(hook.client_config.ca_bundle.as_ref(), Some(&bundle), "the upgrade dropped the caBundle");
            assert_eq!(create_pod(&h, &selected, &pod("b", &[&image], &[], &[])).await, vec![SECRET.to_owned()]);

            // Uninstall: every object of the release is gone, and the certificate Secret regcred created goes
            // with the webhook configuration that owns it. The profile (a user's object) and its Secrets stay.
            drop(h.operator);
            let tls = Api::<Secret>::namespaced(env.client.clone(), &ns);
            assert!(tls.get_opt(&format!("{release}-webhook-tls")).await.unwrap().is_some());
            helm(&["uninstall", &release, "--namespace", &ns, "--wait"]);
            for object in &installed {
                let (api, kind, name) = api_of(&env.client, &ns, object).await;
                wait_for(&format!("{kind} {name} to be gone"), Duration::from_secs(60), || async {
                    api.get_opt(&name).await.unwrap().is_none().then_some(())
                })
                .await;
            }
            wait_for("the webhook certificate Secret to be collected", Duration::from_secs(90), || async {
                tls.get_opt(&format!("{release}-webhook-tls")).await.unwrap().is_none().then_some(())
            })
            .await;
            assert!(Api::<Secret>::namespaced(env.client.clone(), &selected).get_opt(SECRET).await.unwrap().is_some());
        })
        .await;
}

/// One RBAC rule as the security model's table lists it: where, API group, resource, verb.
type Grant = (String, String, String, String);

/// The docs page that lists every RBAC rule with its reason.
const SECURITY_MODEL: &str = "docs/security.md";

/// Every (where, group, resource, verb) in the RBAC table of the docs' security model.
fn rbac_table() -> std::collections::BTreeSet<Grant> {
    let page = std::fs::read_to_string(support::repo_root().join(SECURITY_MODEL)).unwrap();
    let section = page.split("## RBAC: every rule").nth(1).expect("the security model's RBAC table");
    let mut grants = std::collections::BTreeSet::new();
    for line in section.lines().skip_while(|l| !l.starts_with("| where")).skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let place = ["profile editors", "healing", "nodes", "node installer", "credential provider", "own namespace"]
            .into_iter()
            .find(|p| cells[0].starts_with(p))
            .unwrap_or(cells[0]);
        let group = match cells[1] {
            "core" => String::new(),
            g => g.trim_matches('`').to_owned(),
        };
        let resource = cells[2].split('`').nth(1).unwrap().to_owned();
        for verb in cells[3].split(',') {
            grants.insert((place.to_owned(), group.clone(), resource.clone(), verb.trim().to_owned()));
        }
    }
    grants
}

/// Every (where, group, resource, verb) the chart grants, from its rendered Roles and ClusterRoles.
fn rbac_granted(docs: &[serde_json::Value], namespace: &str) -> std::collections::BTreeSet<Grant> {
    let mut grants = std::collections::BTreeSet::new();
    for doc in docs.iter().filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole") {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let place = match (doc["kind"].as_str().unwrap(), doc["metadata"]["namespace"].as_str()) {
            ("ClusterRole", _) if name.contains("profile-editor") => "profile editors".to_owned(),
            ("ClusterRole", _) if name.ends_with("-healing") => "healing".to_owned(),
            ("ClusterRole", _) if name.ends_with("-node-token-audience") => "nodes".to_owned(),
            ("Role", _) if name.ends_with("-credential-provider") => "node installer".to_owned(),
            ("ClusterRole", _) if name.ends_with("-credential-provider") => "credential provider".to_owned(),
            ("ClusterRole", _) => "cluster".to_owned(),
            (_, Some(ns)) if ns == namespace => "own namespace".to_owned(),
            (_, Some(ns)) => format!("`{ns}` namespace"),
            (_, None) => panic!("a Role without a namespace: {doc}"),
        };
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        grants.insert((
                            place.clone(),
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

#[test]
fn every_rbac_rule_the_chart_grants_is_in_the_security_models_table_with_its_reason() {
    const PROVIDER: [&str; 3] = [
        "credentialProvider.enabled=true",
        "credentialProvider.nodeInstaller.enabled=true",
        "credentialProvider.nodeInstaller.matchImages={10.250.0.1:5000}",
    ];
    let docs = render("regcred-system", &PROVIDER);
    let granted = rbac_granted(&docs, "regcred-system");
    let listed = rbac_table();
    let unlisted: Vec<_> = granted.difference(&listed).collect();
    assert!(unlisted.is_empty(), "the chart grants rules {SECURITY_MODEL}'s RBAC table does not list: {unlisted:?}");
    let stale: Vec<_> = listed.difference(&granted).collect();
    assert!(stale.is_empty(), "{SECURITY_MODEL}'s RBAC table lists rules the chart does not grant: {stale:?}");
    // Nothing cluster-wide that a namespaced Role could do: Events about profiles go to `default` only.
    assert!(!granted.iter().any(|(place, group, _, _)| place == "cluster" && group == "events.k8s.io"));
    let off = rbac_granted(&render("regcred-system", &["rbac.profileEditorRole=false"]), "regcred-system");
    assert!(!off.iter().any(|(place, ..)| place == "profile editors"));
    // Self-healing's rules go with it: Notify keeps the Events and drops evictions, Off drops both.
    let evicts =
        |g: &std::collections::BTreeSet<Grant>| g.iter().any(|(_, _, resource, _)| resource == "pods/eviction");
    let healing = |g: &std::collections::BTreeSet<Grant>| g.iter().any(|(place, ..)| place == "healing");
    assert!(evicts(&granted));
    let notify = rbac_granted(&render("regcred-system", &["healing.mode=Notify"]), "regcred-system");
    assert!(healing(&notify) && !evicts(&notify));
    let off = rbac_granted(&render("regcred-system", &["healing.mode=Off"]), "regcred-system");
    assert!(!healing(&off));
    // The nodes' token audience rule comes with the provider endpoint, the installer's with the installer.
    let nodes = |g: &std::collections::BTreeSet<Grant>| g.iter().any(|(place, ..)| place == "nodes");
    let installer = |g: &std::collections::BTreeSet<Grant>| g.iter().any(|(place, ..)| place == "node installer");
    assert!(nodes(&granted) && installer(&granted));
    let endpoint_only = rbac_granted(&render("regcred-system", &PROVIDER[..1]), "regcred-system");
    assert!(nodes(&endpoint_only) && !installer(&endpoint_only));
    let neither = rbac_granted(&render("regcred-system", &[]), "regcred-system");
    assert!(!nodes(&neither) && !installer(&neither));
    // The credential endpoint's rules go with it: TokenReviews, and the CA ConfigMap (by name but for create).
    let default = neither;
    let endpoint = |g: &std::collections::BTreeSet<Grant>| {
        g.iter().any(|(_, _, resource, _)| resource == "tokenreviews" || resource == "configmaps")
    };
    assert!(endpoint(&granted) && !endpoint(&default));
    let named = docs.iter().filter(|d| d["kind"] == "Role").flat_map(|d| d["rules"].as_array().unwrap().iter());
    for rule in named.filter(|r| r["resources"][0] == "configmaps") {
        let verbs: Vec<&str> = rule["verbs"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert!(verbs == ["create"] || rule["resourceNames"] == serde_json::json!(["regcred-ca"]), "{rule}");
    }
}

/// The node installer: its DaemonSet mounts only the kubelet's two directories, runs as root with nothing else,
/// and the schema refuses values the kubelet would (checked again by the installer before it writes).
#[test]
fn the_node_installer_renders_only_when_asked_and_the_schema_refuses_what_the_kubelet_would() {
    let sets = [
        "credentialProvider.enabled=true",
        "credentialProvider.nodeInstaller.enabled=true",
        "credentialProvider.nodeInstaller.matchImages={10.250.0.1:5000,*.example.com}",
    ];
    let docs = render("regcred-system", &sets);
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("the installer's DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let paths: Vec<&str> =
        pod["volumes"].as_array().unwrap().iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            "/usr/libexec/kubernetes/kubelet-plugins/credential-provider/exec",
            "/etc/kubernetes/image-credential-provider"
        ]
    );
    assert!(pod["hostNetwork"].is_null(), "no host network");
    // Whatever selects the operator's Pods (its Service, PodDisruptionBudget, NetworkPolicy) never selects the
    // installer's: a Service that did would send admissions and the kubelet's requests to it.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let operator = docs.iter().find(|d| d["kind"] == "Deployment").expect("the operator's Deployment");
    let selector = operator["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(selector.iter().any(|(k, v)| labels[k] != *v), "the operator's selector picks the installer: {labels}");
    for d in docs
        .iter()
        .filter(|d| ["Service", "PodDisruptionBudget", "NetworkPolicy"].contains(&d["kind"].as_str().unwrap_or("")))
    {
        let chosen = match d["kind"].as_str() {
            Some("Service") => &d["spec"]["selector"],
            Some("PodDisruptionBudget") => &d["spec"]["selector"]["matchLabels"],
            _ => &d["spec"]["podSelector"]["matchLabels"],
        };
        if let Some(chosen) = chosen.as_object() {
            assert!(
                chosen.iter().any(|(k, v)| labels[k] != *v),
                "{} {} picks the installer",
                d["kind"],
                d["metadata"]["name"]
            );
        }
    }
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "install-credential-provider");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    let env: std::collections::BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env["REGCRED_INSTALL_MATCH_IMAGES"], "10.250.0.1:5000,*.example.com");
    assert_eq!(env["REGCRED_INSTALL_SERVER_NAME"], "regcred.regcred-system.svc");
    assert!(render("regcred-system", &sets[..1]).iter().all(|d| d["kind"] != "DaemonSet"));
    for (value, refusal) in [
        ("credentialProvider.nodeInstaller.defaultCacheDuration=1d", "defaultCacheDuration"),
        ("credentialProvider.nodeInstaller.matchImages={https://ghcr.io}", "matchImages"),
        ("credentialProvider.nodeInstaller.binDir=relative", "binDir"),
    ] {
        let mut args = vec!["template", "regcred", "charts/regcred", "--kube-version", "1.37.2"];
        for s in sets.iter().chain([&value]) {
            args.extend(["--set", s]);
        }
        let out =
            std::process::Command::new(support::repo_root().join(".local/bin/helm")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{value} rendered");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(refusal),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let empty = std::process::Command::new(support::repo_root().join(".local/bin/helm"))
        .args(["template", "regcred", "charts/regcred", "--kube-version", "1.37.2", "--set", sets[0], "--set", sets[1]])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&empty.stderr).contains("matchImages"), "no matchImages: refused");
}

/// Where users read how to install regcred: the README's Install section and the docs' Install page, each as
/// (file, its heading; the section ends at the next heading of that level).
const INSTALL_SECTIONS: [(&str, &str); 2] = [("README.md", "## Install"), ("docs/install.md", "# Install")];

/// The commands of the `sh` blocks of the section under `heading` in `file` (up to the next heading of the same or a
/// higher level outside a code block), comments dropped, split into words.
fn install_commands(file: &str, heading: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(support::repo_root().join(file)).unwrap();
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = text.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "{file} has no {heading:?}");
    let mut commands = Vec::new();
    let (mut in_code, mut in_sh) = (false, false);
    for line in lines {
        if line.starts_with("```") {
            in_sh = !in_code && line == "```sh";
            in_code = !in_code;
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        let command = line.split(" #").next().unwrap().trim();
        if in_sh && !command.is_empty() && !command.starts_with('#') {
            commands.push(command.split_whitespace().map(str::to_owned).collect());
        }
    }
    commands
}

#[test]
fn the_readme_and_the_docs_install_the_crd_and_the_chart_with_the_commands_the_tests_run() {
    for (file, heading) in INSTALL_SECTIONS {
        install_commands_are_the_tests(file, &install_commands(file, heading));
    }
}

/// Every command of an install section (`file`) that applies crds/ or installs the chart is what the tests run.
fn install_commands_are_the_tests(file: &str, commands: &[Vec<String>]) {
    // The CRD: every command there that applies crds/ is, word for word, what support::install_crd runs.
    let crd: Vec<_> = commands
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some("kubectl") && c.iter().any(|w| w.starts_with("crds")))
        .collect();
    assert!(!crd.is_empty(), "{file}'s Install section no longer says how to apply crds/: {commands:?}");
    let tests_crd: Vec<String> =
        ["kubectl"].iter().chain(support::CRD_INSTALL.iter()).map(|w| (*w).to_owned()).collect();
    for command in crd {
        assert_eq!(command, &tests_crd, "{file} applies the CRD one way, the tests another");
    }
    // The chart: every `helm install` there is support::helm_install_args (what every install of the tests starts
    // with) for its release and namespace, then only values.
    let helm: Vec<_> = commands.iter().filter(|c| c.first().map(String::as_str) == Some("helm")).collect();
    assert!(!helm.is_empty(), "{file}'s Install section no longer says how to install the chart: {commands:?}");
    for command in helm {
        assert_eq!(command[1], "install", "a helm command of {file} the tests do not run: {command:?}");
        let tests_helm = support::node::documented_install_args(&command[3], &command[2], "regcred-system");
        assert_eq!(
            command[1..=tests_helm.len()],
            tests_helm[..],
            "{file} installs the chart one way, the tests another"
        );
        let rest = &command[tests_helm.len() + 1..];
        assert!(
            rest.chunks(2).all(|pair| pair[0] == "--set" && pair.len() == 2),
            "helm install flags of {file} the tests do not use: {rest:?}"
        );
    }
}

/// One step of a path into an object: a field, the first item of an array, a key of a map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    Item,
    Key,
}

/// Every `enum` of a CRD's schemas, by version and path from the object's root, with its values.
type Enums = std::collections::BTreeMap<(String, Vec<Step>), Vec<serde_json::Value>>;

fn crd_enums(crd: &serde_json::Value) -> Enums {
    fn walk(schema: &serde_json::Value, version: &str, path: &mut Vec<Step>, out: &mut Enums) {
        if let Some(values) = schema["enum"].as_array() {
            out.insert((version.to_owned(), path.clone()), values.clone());
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            path.push(Step::Field(name.clone()));
            walk(property, version, path, out);
            path.pop();
        }
        for (step, child) in [(Step::Item, &schema["items"]), (Step::Key, &schema["additionalProperties"])] {
            if child.is_object() {
                path.push(step);
                walk(child, version, path, out);
                path.pop();
            }
        }
    }
    let mut out = Enums::new();
    for version in crd["spec"]["versions"].as_array().unwrap() {
        let name = version["name"].as_str().unwrap();
        walk(&version["schema"]["openAPIV3Schema"], name, &mut Vec::new(), &mut out);
    }
    out
}

/// The place `path` names in `object`, created on the way when `create`.
fn place<'a>(object: &'a mut serde_json::Value, path: &[Step]) -> &'a mut serde_json::Value {
    let mut here = object;
    for step in path {
        here = match step {
            Step::Field(name) => here.as_object_mut().unwrap().entry(name.clone()).or_insert(serde_json::json!({})),
            Step::Key => here.as_object_mut().unwrap().entry("k").or_insert(serde_json::json!({})),
            Step::Item => {
                if !here.is_array() {
                    *here = serde_json::json!([{}]);
                }
                &mut here[0]
            }
        };
    }
    here
}

fn show(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Field(n) => format!(".{n}"),
            Step::Item => "[0]".to_owned(),
            Step::Key => ".k".to_owned(),
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

/// Runs kubectl with `stdin`; panics with its output when it fails.
async fn kubectl(args: &[&str], stdin: &str) -> String {
    let (ok, out) = support::webhook::kubectl(args, stdin).await;
    assert!(ok, "kubectl {args:?}: {out}");
    out
}

#[tokio::test]
async fn every_enum_value_of_the_crd_is_the_same_through_kubectl_and_helm_and_round_trips_through_kubectl() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    TestEnv::new("enums")
        .await
        .run(|env| async move {
            support::install_crd(&env.client).await;
            // The CRDs of crds/ as a YAML 1.2 reader (serde_yaml) reads them: what `make crds` meant to write.
            let mut files: Vec<_> = std::fs::read_dir(support::repo_root().join("crds"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            files.sort();
            let written: Vec<serde_json::Value> = files
                .iter()
                .flat_map(|f| {
                    let text = std::fs::read_to_string(f).unwrap();
                    serde_yaml::Deserializer::from_str(&text)
                        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
                        .collect::<Vec<_>>()
                })
                .filter(|d| d["kind"] == "CustomResourceDefinition")
                .collect();
            let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
            for crd in &written {
                let name = crd["metadata"]["name"].as_str().unwrap();
                let expected = crd_enums(crd);

                // As the apiserver holds it after `kubectl apply --server-side -f crds/` (kubectl's YAML 1.1 reader).
                let installed = serde_json::to_value(crds.get(name).await.unwrap()).unwrap();
                assert_eq!(
                    crd_enums(&installed),
                    expected,
                    "{name}: kubectl's reading of crds/ differs from YAML 1.2's"
                );

                // As Helm installs it: the chart's template of files/crd.yaml (crds.install), rendered by Helm,
                // read by the apiserver. A server-side dry run under kubectl's field manager, the one that applied
                // crds/, so what the chart leaves out is not taken from the installed CRD.
                let rendered = helm(&[
                    "template",
                    "regcred",
                    "charts/regcred",
                    "--namespace",
                    "regcred-system",
                    "--kube-version",
                    "1.37.2",
                    "--set",
                    "crds.install=true",
                    "--show-only",
                    "templates/crd.yaml",
                ]);
                let out =
                    kubectl(&["apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-"], &rendered).await;
                let helmed: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(helmed["metadata"]["name"], name);
                assert_eq!(crd_enums(&helmed), expected, "{name}: Helm's CRD differs from crds/ as YAML 1.2 reads it");

                // Every value of every enum under spec, set through kubectl's reader in a profile that is
                // otherwise valid, and read back the same.
                let group = crd["spec"]["group"].as_str().unwrap();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
                let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
                let mut docs = Vec::new();
                let mut cases = Vec::new();
                for ((version, path), values) in &expected {
                    assert_eq!(
                        path.first(),
                        Some(&Step::Field("spec".into())),
                        "an enum outside spec ({}): teach this test to set it",
                        show(path)
                    );
                    for value in values {
                        let name = format!("{}-{}", env.id, cases.len());
                        let mut doc = serde_json::json!({
                            "apiVersion": format!("{group}/{version}"),
                            "kind": kind,
                            "metadata": {"name": name, "labels": {"regcred-test": env.id}},
                            "spec": {
                                "server": "registry.example.com",
                                "credentials": {"anonymous": true},
                                "namespaces": {"names": ["none"]},
                            },
                        });
                        // The value goes in as YAML text, quoted when it is a string, as the docs tell users
                        // to write `mode: 'Off'`.
                        *place(&mut doc, path) = serde_json::json!("ENUM-VALUE");
                        let literal = match value {
                            serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
                            other => other.to_string(),
                        };
                        docs.push(serde_yaml::to_string(&doc).unwrap().replace("ENUM-VALUE", &literal));
                        env.cleanup::<regcred::api::RegistryProfile>(&name);
                        cases.push((name, path.clone(), value.clone()));
                    }
                }
                let out = kubectl(&["apply", "-f", "-"], &docs.join("---\n")).await;
                assert_eq!(out.lines().count(), cases.len(), "{out}");
                let label = format!("regcred-test={}", env.id);
                let read: serde_json::Value =
                    serde_json::from_str(&kubectl(&["get", plural, "-l", &label, "-o", "json"], "").await).unwrap();
                let items = read["items"].as_array().unwrap();
                for (name, path, value) in &cases {
                    let mut item = items.iter().find(|i| i["metadata"]["name"] == *name).unwrap().clone();
                    assert_eq!(place(&mut item, path), value, "{kind} {}: {value} did not round-trip", show(path));
                }
                eprintln!("{name}: {} enums, {} values round-tripped through kubectl", expected.len(), cases.len());
            }
        })
        .await;
}
