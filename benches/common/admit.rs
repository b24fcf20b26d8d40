//! What the admission benchmarks share: regcred and the floor webhook registered through the chart's own
//! MutatingWebhookConfiguration (rendered by helm, as `helm install` would, each pointed at its own process by
//! `webhook.url`), Pod series created alternately through the real apiserver, and the apiserver's own
//! per-webhook admission metrics.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::floor::Floor;
use crate::support::harness::{Harness, WAIT};
use crate::support::{self, TestEnv};

/// The namespace label the benchmark's webhook configurations select on (the chart's
/// `webhook.namespaceSelector.matchLabels`): `regcred-<id>` for regcred's, `floor-<id>` for the floor's.
pub const SELECT_LABEL: &str = "regcred-bench-webhook";

/// regcred's namespace in a benchmark (where [`Harness::start_env`] puts it).
fn operator_namespace(env: &TestEnv) -> String {
    format!("{}-system", env.id)
}

/// The chart's MutatingWebhookConfiguration for the benchmark's release in regcred's namespace, as `helm install`
/// renders it with `webhook.url` = `url` (regcred outside the cluster), `webhook.imageChecks.enabled` =
/// `image_checks` (regcred's `--image-checks`: the second entry, for workloads, only with checks), and the
/// namespaces labelled [`SELECT_LABEL`]`=<selects>`, for the cluster's Kubernetes version.
pub async fn chart_configuration(
    env: &TestEnv,
    url: &str,
    selects: &str,
    image_checks: bool,
) -> MutatingWebhookConfiguration {
    let release = support::release_name(&env.id);
    let (url, select) =
        (format!("webhook.url={url}"), format!("webhook.namespaceSelector.matchLabels.{SELECT_LABEL}={selects}"));
    let checks = format!("webhook.imageChecks.enabled={image_checks}");
    let namespace = operator_namespace(env);
    let version = env.client.apiserver_version().await.unwrap().git_version;
    let yaml = support::helm(&[
        "template",
        &release,
        support::CHART,
        "--namespace",
        &namespace,
        "--show-only",
        "templates/mutatingwebhookconfiguration.yaml",
        "--set-string",
        &url,
        "--set-string",
        &select,
        "--set",
        &checks,
        "--kube-version",
        &version,
    ]);
    serde_yaml::from_str(&yaml).unwrap()
}

/// Starts regcred (plus `extra` arguments) serving its webhook with self-managed certificates, registered through
/// the chart's configuration for the namespaces labelled [`SELECT_LABEL`]`=regcred-<id>`, logging as the chart
/// sets it; returns once regcred has published its CA.
pub async fn start_regcred(env: &TestEnv, extra: &[&str], image_checks: bool) -> Harness {
    let port = support::free_port();
    let config = chart_configuration(
        env,
        &format!("https://127.0.0.1:{port}/mutate"),
        &format!("regcred-{}", env.id),
        image_checks,
    )
    .await;
    let name = config.metadata.name.clone().unwrap();
    support::apply(&Api::<MutatingWebhookConfiguration>::all(env.client.clone()), &config).await;
    env.cleanup::<MutatingWebhookConfiguration>(&name);
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--webhook-addr", &addr, "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
    args.extend_from_slice(extra);
    let envs: Vec<(&str, String)> = crate::common::LOG_ENV.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let h = Harness::start_env(env, &args, &envs).await;
    support::webhook::wait_ca_bundle(&env.client, &name, WAIT).await;
    h
}

/// Starts the floor webhook answering with `secret`, registered through the same chart configuration as regcred's
/// for the namespaces labelled [`SELECT_LABEL`]`=floor-<id>`. Two things differ, and only these: the URL and
/// caBundle (the floor's), and the names (the configuration's `-floor`, each webhook's `.floor.regcred.dev`), so
/// that the apiserver's per-webhook metrics tell the two apart.
pub async fn start_floor(env: &TestEnv, secret: &str, image_checks: bool) -> Floor {
    let floor = Floor::start(secret).await;
    let mut config = chart_configuration(env, &floor.url(), &format!("floor-{}", env.id), image_checks).await;
    let name = format!("{}-floor", config.metadata.name.clone().unwrap());
    config.metadata.name = Some(name.clone());
    for webhook in config.webhooks.iter_mut().flatten() {
        webhook.name = webhook.name.replace(".regcred.dev", ".floor.regcred.dev");
        webhook.client_config.ca_bundle = Some(ByteString(floor.ca_pem.clone().into_bytes()));
    }
    support::apply(&Api::<MutatingWebhookConfiguration>::all(env.client.clone()), &config).await;
    env.cleanup::<MutatingWebhookConfiguration>(&name);
    floor
}

/// One series of Pods: where they are created, what each must be admitted with, and what was measured.
pub struct Series {
    pub name: &'static str,
    pub namespace: String,
    /// The pull Secrets every Pod of the series must be admitted with.
    pub expect: Vec<String>,
    /// Client-side latency of each Pod creation.
    pub latencies: Vec<Duration>,
    /// The apiserver's warnings (the `Warning` headers of its answers), all Pods of the series.
    pub warnings: Vec<String>,
}

impl Series {
    pub fn new(name: &'static str, namespace: &str, expect: &[&str]) -> Self {
        let expect = expect.iter().map(|s| (*s).to_owned()).collect();
        Self { name, namespace: namespace.to_owned(), expect, latencies: Vec::new(), warnings: Vec::new() }
    }

    /// The sorted latencies.
    pub fn sorted(&self) -> Vec<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
    }

    pub fn p(&self, p: f64) -> Duration {
        crate::common::percentile(&self.sorted(), p)
    }
}

/// Creates `pod` in `namespace` as one request; returns the time to its answer, the Pod as admitted and the
/// apiserver's warnings.
pub async fn create_pod(client: &Client, namespace: &str, pod: &Pod) -> (Duration, Pod, Vec<String>) {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .create(&PostParams::default(), serde_json::to_vec(pod).unwrap())
        .unwrap();
    let started = Instant::now();
    let response = client.send(request.map(kube::client::Body::from)).await.unwrap();
    let status = response.status();
    let warnings: Vec<String> =
        response.headers().get_all("warning").iter().map(|w| String::from_utf8_lossy(w.as_bytes()).into()).collect();
    let body = response.into_body().collect_bytes().await.unwrap();
    let elapsed = started.elapsed();
    assert!(status.is_success(), "creating a Pod in {namespace}: {status} {}", String::from_utf8_lossy(&body));
    (elapsed, serde_json::from_slice(&body).unwrap(), warnings)
}

/// Creates Pods `pod(i)` for `i` in `range` in every series, one Pod per series in turn, rotating which series goes
/// first so that none always follows another; checks each Pod got exactly its series' pull Secrets.
pub async fn interleave(
    client: &Client,
    series: &mut [Series],
    range: std::ops::Range<usize>,
    pod: impl Fn(usize) -> Pod,
) {
    let count = series.len();
    for i in range {
        for k in 0..count {
            let s = &mut series[(i + k) % count];
            let (elapsed, created, warnings) = create_pod(client, &s.namespace, &pod(i)).await;
            let got: Vec<String> =
                created.spec.unwrap().image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect();
            assert_eq!(got, s.expect, "series {}: a Pod admitted with the wrong pull Secrets", s.name);
            s.latencies.push(elapsed);
            s.warnings.extend(warnings);
        }
    }
}

/// The apiserver's own figures for one webhook (summed over operations and outcomes).
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookFigures {
    /// Calls (`apiserver_admission_webhook_admission_duration_seconds_count`).
    pub calls: f64,
    /// Seconds spent in them, as the apiserver timed them (`..._sum`): the request written, the webhook's answer,
    /// and its decoding.
    pub seconds: f64,
    /// Requests with an HTTP answer (`apiserver_admission_webhook_request_total`).
    pub requests: f64,
}

impl WebhookFigures {
    pub fn mean_ms(&self) -> f64 {
        self.seconds / self.calls * 1e3
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            calls: self.calls - before.calls,
            seconds: self.seconds - before.seconds,
            requests: self.requests - before.requests,
        }
    }
}

/// The apiserver's per-webhook admission metrics, by webhook name, from its `/metrics`.
pub async fn apiserver_webhooks(client: &Client) -> BTreeMap<String, WebhookFigures> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let mut figures: BTreeMap<String, WebhookFigures> = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some((metric, labels)) = series.split_once('{') else { continue };
        let Some(name) = labels.split("name=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let entry = figures.entry(name.to_owned()).or_default();
        match metric {
            "apiserver_admission_webhook_admission_duration_seconds_count" => entry.calls += value,
            "apiserver_admission_webhook_admission_duration_seconds_sum" => entry.seconds += value,
            "apiserver_admission_webhook_request_total" => entry.requests += value,
            _ => {}
        }
    }
    figures
}

/// The figures of webhook `name` between two readings of [`apiserver_webhooks`].
pub fn webhook_since(
    after: &BTreeMap<String, WebhookFigures>,
    before: &BTreeMap<String, WebhookFigures>,
    name: &str,
) -> WebhookFigures {
    after.get(name).copied().unwrap_or_default().since(&before.get(name).copied().unwrap_or_default())
}

/// regcred's handler as its own metrics saw it (request in to answer out): seconds, requests and the latency
/// histogram's buckets.
#[derive(Clone, Debug, Default)]
pub struct Handler {
    pub seconds: f64,
    pub requests: f64,
    pub buckets: Vec<(f64, f64)>,
}

impl Handler {
    const NAME: &'static str = "regcred_webhook_request_duration_seconds";

    pub async fn read(operator: &support::Operator) -> Self {
        let (_, text) = support::http_get(&operator.metrics_addr().await, "/metrics").await;
        let value = |suffix: &str| {
            let name = format!("{}_{suffix} ", Self::NAME);
            text.lines().find_map(|l| l.strip_prefix(&name)?.trim().parse::<f64>().ok()).unwrap_or(f64::NAN)
        };
        Self {
            seconds: value("sum"),
            requests: value("count"),
            buckets: crate::common::histogram_buckets(&text, Self::NAME),
        }
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            seconds: self.seconds - before.seconds,
            requests: self.requests - before.requests,
            buckets: crate::common::buckets_since(&self.buckets, &before.buckets),
        }
    }

    pub fn mean_ms(&self) -> f64 {
        self.seconds / self.requests * 1e3
    }

    /// The `q` quantile from the histogram (interpolated within its bucket: 25 us, doubling).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        crate::common::quantile_of_buckets(&self.buckets, q) * 1e3
    }
}

/// CPU seconds used so far by regcred and by the floor.
pub fn cpu(operator: &support::Operator, floor: &Floor) -> (f64, f64) {
    let of = |pid: Option<u32>| pid.and_then(crate::common::cpu_seconds).unwrap_or(f64::NAN);
    (of(operator.pid()), of(floor.process.child.id()))
}

/// CPU regcred and the floor use while no admission comes, in seconds per second, once each has settled after
/// the warm-up (see [`crate::common::idle_rate`]): regcred's watches, leader election and timers; the floor's
/// nothing.
pub async fn idle_cpu(operator: &support::Operator, floor: &Floor) -> (f64, f64) {
    let rate = async |pid: Option<u32>| match pid {
        Some(pid) => crate::common::idle_rate(pid).await,
        None => f64::NAN,
    };
    (rate(operator.pid()).await, rate(floor.process.child.id()).await)
}

/// CPU milliseconds per admission: `used` seconds over a series that took `elapsed`, less what the process uses
/// idle (`idle_rate`, seconds per second) over that time, divided among `admissions`.
pub fn cpu_per_admission(used: f64, idle_rate: f64, elapsed: Duration, admissions: f64) -> f64 {
    (used - idle_rate * elapsed.as_secs_f64()) / admissions * 1e3
}
