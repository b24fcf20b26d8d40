//! The alerts and the dashboard against the real thing: every metric they use is one regcred exports, and
//! Prometheus, finding regcred through Kubernetes service discovery on the local apiserver with the shipped rules
//! loaded, fires the "will expire" alert when a token endpoint goes down, before the token expires.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use regcred::fixtures::wait_secret;
use serde_json::{Value, json};
use support::harness::{Harness, WAIT};
use support::tokens::{GcpTokenEndpoint, gcp_spec};
use support::{TestEnv, apply, wait_for};

/// The shipped alert rules (the chart's; deploy/prometheus/rules.yaml is rendered from them).
const ALERTS: &str = "charts/regcred/files/alerts.yaml";
/// The shipped Grafana dashboard.
const DASHBOARD: &str = "charts/regcred/files/dashboard.json";
/// The plain rules file a Prometheus without the operator loads.
const RULES: &str = "deploy/prometheus/rules.yaml";

/// Every `regcred_*` name in `query`.
fn metric_names(query: &str, into: &mut BTreeSet<String>) {
    let mut rest = query;
    while let Some(at) = rest.find("regcred_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        rest = &rest[at + name.len()..];
        into.insert(name);
    }
}

/// The metric names the alert rules' expressions use.
fn alert_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(support::repo_root().join(ALERTS)).unwrap();
    let rules: Value = serde_yaml::from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            metric_names(rule["expr"].as_str().unwrap(), &mut names);
        }
    }
    names
}

/// The metric names the dashboard's queries (panels and template variables) use.
fn dashboard_metrics() -> BTreeSet<String> {
    fn walk(v: &Value, names: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(q)) => metric_names(q, names),
                        _ => walk(v, names),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(support::repo_root().join(DASHBOARD)).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    walk(&dashboard, &mut names);
    names
}

/// The sample names an exposition declares (`# TYPE` lines, with the suffixes of their type) or holds.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let name: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

/// Pod `name` in `namespace` pulling `image`, its status showing the failed pull and an Event saying so, as the
/// kubelet would write them (there is no kubelet here).
async fn failed_pull(env: &TestEnv, namespace: &str, name: &str, image: &str) {
    let pods = Api::<Pod>::namespaced(env.client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": image}]},
    }))
    .unwrap();
    let uid = pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap();
    let status = json!({"status": {"containerStatuses": [{
        "name": "c", "image": image, "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ErrImagePull", "message": "401 Unauthorized"}},
    }]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let now = serde_json::to_value(Time(jiff::Timestamp::now())).unwrap();
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.kubelet"), "namespace": namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": name, "uid": uid},
        "reason": "Failed", "type": "Warning", "source": {"component": "kubelet"},
        "message": format!("Failed to pull image \"{image}\": failed to resolve reference \"{image}\": 401 Unauthorized"),
        "count": 1, "firstTimestamp": now, "lastTimestamp": now,
    }))
    .unwrap();
    Api::<Event>::namespaced(env.client.clone(), namespace).create(&PostParams::default(), &event).await.unwrap();
}

/// Waits until the operator at `addr` exports a series of `name` (a line starting `name{` or `name `).
async fn wait_series(addr: &str, name: &str) -> String {
    wait_for(&format!("a series of {name}"), WAIT, || async {
        let (_, text) = support::http_get(addr, "/metrics").await;
        text.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))).then_some(text)
    })
    .await
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    TestEnv::new("obsnames")
        .await
        .run(|env| async move {
            // Every series exists only once its state does: the webhook's (registered where it is served), a
            // minted token's, a profile's, a failed pull's and self-healing's (a Pod admitted before regcred
            // served its webhook, without the Secret), the deletion guard's (a selector typo).
            let gcp = GcpTokenEndpoint::start(3600).await;
            let port = support::free_port();
            let configuration = support::webhook::register(&env, port, None).await;
            let mut namespaces = Vec::new();
            for i in 0..4 {
                namespaces.push(env.namespace(&format!("n{i}"), &[("pull", "yes")]).await);
            }
            failed_pull(&env, &namespaces[0], "app", "gcr.io/team/app:1").await;
            let addr = format!("127.0.0.1:{port}");
            let args = [
                "--webhook-addr",
                &addr,
                "--webhook-configuration",
                &configuration,
                "--webhook-dns-names",
                "127.0.0.1",
            ];
            let h = Harness::start_env(&env, &args, &gcp.operator_env(&env, &[])).await;
            let key = gcp.key_json();
            h.source("gcp", &[("key.json", key.as_str())]).await;
            let profile = h.profile("p", gcp_spec(&h, "gcp", "pull")).await;
            for ns in &namespaces {
                wait_secret(&h.client(), ns, "pull", WAIT, |_| true).await;
            }
            h.ready(&profile).await;
            let metrics_addr = h.operator.as_ref().unwrap().metrics_addr().await;
            wait_series(&metrics_addr, "regcred_profile_ready").await;
            wait_series(&metrics_addr, "regcred_token_expiry_timestamp_seconds").await;
            wait_series(&metrics_addr, "regcred_pull_failures_total").await;
            wait_series(&metrics_addr, "regcred_heals_total").await;
            let mut typo = gcp_spec(&h, "gcp", "pull");
            typo["namespaces"] = h.select("yse");
            h.profile("p", typo).await;
            let text = wait_series(&metrics_addr, "regcred_deletions_held").await;

            let exported = exported(&text);
            let (alerts, dashboard) = (alert_metrics(), dashboard_metrics());
            assert!(alerts.len() >= 10 && dashboard.len() >= 25, "too few names found: {alerts:?} {dashboard:?}");
            let missing: Vec<String> = alerts.union(&dashboard).filter(|n| !exported.contains(*n)).cloned().collect();
            assert!(missing.is_empty(), "used by the alerts or the dashboard, not exported: {missing:?}\n{text}");
            assert!(!text.contains("ya29."), "a token in the metrics");
        })
        .await;
}

/// The chart rendered with `sets` (the monitoring objects are opt-in).
fn render(sets: &[&str]) -> Vec<Value> {
    use serde::Deserialize as _;
    let mut args = vec!["template", "r", "charts/regcred", "--namespace", "ops", "--kube-version", "1.37.2"];
    for s in sets {
        args.extend(["--set", s]);
    }
    serde_yaml::Deserializer::from_str(&support::helm(&args))
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn the_chart_ships_the_rules_and_the_dashboard_only_when_asked_with_the_labels_given() {
    let kinds =
        |docs: &[Value]| docs.iter().filter(|d| d["kind"] == "PrometheusRule" || d["kind"] == "ConfigMap").count();
    assert_eq!(kinds(&render(&[])), 0, "monitoring objects by default");
    let docs = render(&[
        "metrics.prometheusRule.enabled=true,metrics.prometheusRule.labels.release=kps",
        "metrics.prometheusRule.alertLabels.team=platform,metrics.prometheusRule.alertLabels.severity=low",
        "metrics.prometheusRule.alertAnnotations.dashboard=https://grafana.example/d/regcred",
        "metrics.prometheusRule.runbookBaseURL=https://wiki.example/regcred",
        "metrics.grafanaDashboard.enabled=true,metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=regcred",
    ]);
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    let source: Value =
        serde_yaml::from_str(&std::fs::read_to_string(support::repo_root().join(ALERTS)).unwrap()).unwrap();
    let (rules, sources) =
        (rule["spec"]["groups"][0]["rules"].as_array().unwrap(), source["groups"][0]["rules"].as_array().unwrap());
    assert_eq!(rules.len(), sources.len());
    for (rule, source) in rules.iter().zip(sources) {
        let name = source["alert"].as_str().unwrap();
        assert_eq!((&rule["alert"], &rule["expr"], &rule["for"]), (&source["alert"], &source["expr"], &source["for"]));
        // The alert's own severity wins over the extra labels; the rest are added.
        assert_eq!(rule["labels"]["severity"], source["labels"]["severity"], "{name}");
        assert_eq!(rule["labels"]["team"], "platform", "{name}");
        assert_eq!(rule["annotations"]["summary"], source["annotations"]["summary"], "{name}");
        assert_eq!(rule["annotations"]["dashboard"], "https://grafana.example/d/regcred", "{name}");
        let runbook = format!("https://wiki.example/regcred#{}", name.to_lowercase());
        assert_eq!(rule["annotations"]["runbook_url"], runbook.as_str(), "{name}");
        // Each runbook anchor is a heading of docs/runbooks.md (its slug: the alert's name in lower case).
        let runbooks = std::fs::read_to_string(support::repo_root().join("docs/runbooks.md")).unwrap();
        assert!(runbooks.lines().any(|l| l == format!("## {name}")), "no runbook section for {name}");
    }
    let map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "regcred");
    let dashboard = std::fs::read_to_string(support::repo_root().join(DASHBOARD)).unwrap();
    assert_eq!(map["data"]["regcred.json"].as_str().unwrap(), dashboard.trim_end());
}

/// Prometheus, built by tools/prometheus.sh (when missing).
fn prometheus_binary() -> PathBuf {
    let out = std::process::Command::new(support::repo_root().join("tools/prometheus.sh")).output().unwrap();
    assert!(out.status.success(), "tools/prometheus.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("prometheus")
}

/// What Prometheus needs to find regcred by Kubernetes service discovery, as it would in a cluster: a Service
/// (without selector: regcred runs as a process here, not a Pod) whose EndpointSlice points at regcred's metrics
/// port, and a ServiceAccount allowed to discover them in regcred's namespace. Returns its kubeconfig.
async fn discoverable(h: &Harness, metrics_port: u16) -> PathBuf {
    let client = h.client();
    let ns = h.op_ns.as_str();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "prometheus"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .unwrap();
    apply(&Api::<Role>::namespaced(client.clone(), ns), &role).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "prometheus"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prometheus"},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": ns}],
    }))
    .unwrap();
    apply(&Api::<RoleBinding>::namespaced(client.clone(), ns), &binding).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "regcred-metrics"},
        "spec": {"ports": [{"name": "metrics", "port": 8080, "protocol": "TCP"}]},
    }))
    .unwrap();
    apply(&Api::<Service>::namespaced(client.clone(), ns), &service).await;
    // The apiserver refuses loopback IP addresses in EndpointSlices; as a name, 127.0.0.1 is a valid FQDN.
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "regcred-metrics-1", "labels": {"kubernetes.io/service-name": "regcred-metrics"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "metrics", "port": metrics_port, "protocol": "TCP"}],
    }))
    .unwrap();
    apply(&Api::<EndpointSlice>::namespaced(client.clone(), ns), &slice).await;
    support::service_account_kubeconfig(&client, ns, "prometheus").await
}

/// A Prometheus process on a free loopback port; killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    addr: String,
}

impl Prometheus {
    /// Scrapes the endpoints of Service `regcred-metrics` in `namespace` every second, found through the
    /// apiserver with `kubeconfig`, and evaluates the shipped rules every second.
    async fn start(env: &TestEnv, namespace: &str, kubeconfig: &std::path::Path) -> Self {
        let dir = std::env::temp_dir().join("regcred-tests").join(format!("prometheus-{}", env.id));
        std::fs::create_dir_all(&dir).unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [support::repo_root().join(RULES)],
            "scrape_configs": [{
                "job_name": "regcred",
                "kubernetes_sd_configs": [{
                    "role": "endpointslice",
                    "kubeconfig_file": kubeconfig,
                    "namespaces": {"names": [namespace]},
                }],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_service_name", "__meta_kubernetes_endpointslice_port_name"],
                     "regex": "regcred-metrics;metrics", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                ],
            }],
        });
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
        let addr = format!("127.0.0.1:{}", support::free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let prometheus = Self { _child: child, addr };
        wait_for("Prometheus to be ready", WAIT, || async {
            let ok = tokio::net::TcpStream::connect(&prometheus.addr).await.is_ok();
            (ok && support::http_get(&prometheus.addr, "/-/ready").await.0 == 200).then_some(())
        })
        .await;
        prometheus
    }

    /// `GET path` of the HTTP API: its `data`.
    async fn api(&self, path: &str) -> Value {
        let (status, body) = support::http_get(&self.addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    }

    /// The labels of the alerts named `name` in state `state`.
    async fn alerts(&self, name: &str, state: &str) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").await;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        alerts.into_iter().filter(|a| a["labels"]["alertname"] == name && a["state"] == state).collect()
    }
}

#[tokio::test]
async fn prometheus_fires_the_expiry_alert_before_a_token_whose_endpoint_went_down_expires() {
    TestEnv::new("obsprom")
        .await
        .run(|env| async move {
            // One-minute tokens: refreshed after about 40 s; the alert may fire from 45 s (a quarter left).
            let lifetime = 60;
            let gcp = GcpTokenEndpoint::start(lifetime).await;
            let h = Harness::start_env(&env, &[], &gcp.operator_env(&env, &[])).await;
            let metrics_addr = h.operator.as_ref().unwrap().metrics_addr().await;
            let metrics_port: u16 = metrics_addr.rsplit(':').next().unwrap().parse().unwrap();
            let kubeconfig = discoverable(&h, metrics_port).await;
            let prometheus = Prometheus::start(&env, &h.op_ns, &kubeconfig).await;
            wait_for("Prometheus to discover and scrape regcred", WAIT, || async {
                let data = prometheus.api("/api/v1/targets").await;
                let targets = data["activeTargets"].as_array().cloned().unwrap_or_default();
                targets
                    .iter()
                    .any(|t| t["health"] == "up" && t["labels"]["namespace"] == h.op_ns.as_str())
                    .then_some(())
            })
            .await;

            let key = gcp.key_json();
            h.source("gcp", &[("key.json", key.as_str())]).await;
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let profile = h.profile("p", gcp_spec(&h, "gcp", "pull")).await;
            wait_for("the first token", WAIT, || async { (gcp.mints() >= 1).then_some(()) }).await;
            // The endpoint goes down for good, long before the token's refresh is due.
            gcp.failing.store(true, Ordering::SeqCst);
            let expires_at = gcp.issued.lock().unwrap().values().map(|t| t.expires_at).max().unwrap();
            wait_secret(&h.client(), &ns, "pull", WAIT, |_| true).await;
            let query =
                format!("/api/v1/query?query=regcred_token_expiry_timestamp_seconds%7Bprofile%3D%22{profile}%22%7D");
            wait_for("Prometheus to hold the token's expiry", WAIT, || async {
                let data = prometheus.api(&query).await;
                data["result"].as_array().is_some_and(|r| !r.is_empty()).then_some(())
            })
            .await;
            assert!(
                prometheus.alerts("RegcredTokenExpiresBeforeRefresh", "firing").await.is_empty(),
                "the alert fires while the token is fresh"
            );

            let alert = wait_for("the expiry alert to fire", Duration::from_secs(lifetime + 30), || async {
                let firing = prometheus.alerts("RegcredTokenExpiresBeforeRefresh", "firing").await;
                firing.into_iter().find(|a| a["labels"]["profile"] == profile.as_str())
            })
            .await;
            let now = SystemTime::now();
            assert!(now < expires_at, "the alert fired {:?} after the token expired", now.duration_since(expires_at));
            let left = expires_at.duration_since(now).unwrap();
            eprintln!("RegcredTokenExpiresBeforeRefresh fired {left:?} before the token expired: {alert}");
            assert_eq!(alert["labels"]["severity"], "critical");
            assert_eq!(alert["labels"]["namespace"], h.op_ns.as_str());
            let runbook = alert["annotations"]["runbook_url"].as_str().unwrap();
            assert!(runbook.ends_with("/docs/runbooks.md#regcredtokenexpiresbeforerefresh"), "{runbook}");
            assert!(h.logs().contains("minting failed"), "no refresh met the outage");
        })
        .await;
}
