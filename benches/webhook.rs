//! `make bench`: regcred's real admission handler (`regcred::webhook::answer`, what its HTTPS server calls with
//! the request body) in process, on the AdmissionReview the apiserver sends for a typical 3-container Pod
//! (`benches/data/admission-review.json`, captured from the local apiserver: the Pod after defaulting, with its
//! ServiceAccount volume and managedFields), with 20 profiles and the Pod's namespace and Secret in the caches.
//! Everything but TLS and the network: decoding the review, the decision, the patch and encoding the answer.
//!
//! - hot: requests back to back, as a load test would send them;
//! - caches flushed: before each request the CPU caches are filled with other data (64 MiB walked through, not
//!   timed), as when an admission arrives after the apiserver, etcd and the rest have run: what one admission
//!   costs regcred in a cluster that is not flooding it;
//! - where the time goes: the same, stage by stage (decode, decide, encode).
//!
//! Prints p50/p99 and the requests per second one core sustains; writes `.local/bench/webhook.json`.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::percentile;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use regcred::webhook::Webhook;
use serde_json::json;

const REVIEW: &str = include_str!("data/admission-review.json");
const NAMESPACE: &str = "shop";

/// The handler with 20 profiles (17 of other registries; the Pod's registry, Docker Hub and ghcr.io/acme), all
/// selecting the Pod's namespace, whose Secrets are all in the cache already.
fn webhook() -> Webhook {
    regcred::install_crypto_provider();
    let (view, mut feeds) = regcred::state::View::detached("regcred-system", 2.0 / 3.0);
    let mut servers: Vec<String> = (0..17).map(|i| format!("registry{i}.example.org")).collect();
    servers.extend(["registry.example.com:5000".into(), "docker.io".into(), "ghcr.io/acme".into()]);
    for (i, server) in servers.iter().enumerate() {
        let mut profile: regcred::api::RegistryProfile = serde_json::from_value(json!({
            "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
            "metadata": {"name": format!("p{i:02}"), "uid": format!("uid-{i:02}"), "generation": 1},
            "spec": {"server": server, "credentials": {"secretRef": {"name": "creds"}},
                     "namespaces": {"names": ["*"]}, "secretName": format!("pull-{i:02}")},
        }))
        .unwrap();
        profile.metadata.resource_version = Some("1".into());
        feeds.profiles.apply_watcher_event(&watcher::Event::Apply(profile));
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": format!("pull-{i:02}"), "namespace": NAMESPACE, "uid": format!("00000000-0000-4000-8000-0000000000{i:02}"),
                         "resourceVersion": "1",
                         "labels": {"app.kubernetes.io/managed-by": "regcred", "regcred.dev/profile": format!("p{i:02}")}},
        });
        view.managed().apply(&watcher::Event::Apply(serde_json::from_value(secret).unwrap()));
    }
    let namespace = PartialObjectMeta::<Namespace> {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            labels: Some([("kubernetes.io/metadata.name".to_owned(), NAMESPACE.to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    view.namespaces().apply(&watcher::Event::Apply(namespace));
    // Nothing listens there: the handler must answer from its caches. The injection alone, as benches/admission.rs
    // runs regcred (image checks are benches/images.rs's).
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        webhook: regcred::config::WebhookArgs,
    }
    let args = <Args as clap::Parser>::parse_from(["webhook", "--image-checks", "false"]);
    Webhook::new(client, view, "regcred-system", &args.webhook).unwrap()
}

/// One admission through the real handler: the body in, the answer's bytes out.
async fn handle(webhook: &Webhook, body: &[u8]) -> axum::body::Bytes {
    let response = regcred::webhook::answer(webhook, body).await;
    axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()
}

/// The handler's stages, each timed: decoding the review, deciding (`admit_by`), encoding the answer.
async fn stages(webhook: &Webhook, body: &[u8]) -> [Duration; 3] {
    let t0 = Instant::now();
    let review: regcred::webhook::review::Review = serde_json::from_slice(body).unwrap();
    let request = review.into_request().unwrap();
    let t1 = Instant::now();
    let response = webhook.admit(&request).await;
    let t2 = Instant::now();
    let bytes = response.to_json().unwrap();
    std::hint::black_box(bytes);
    [t1 - t0, t2 - t1, t2.elapsed()]
}

/// Fills the CPU caches with other data: 64 MiB, twice the last-level cache of the machines this runs on.
fn flush(buffer: &mut [u64]) {
    for (i, x) in buffer.iter_mut().enumerate().step_by(8) {
        *x = x.wrapping_add(i as u64);
    }
    std::hint::black_box(&buffer[..]);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // regcred's logger as the chart sets it up (info, JSON): an admission logs nothing at info, but its span is
    // recorded.
    common::child_logging();
    let webhook = Arc::new(webhook());
    let body = REVIEW.as_bytes();
    let answer = handle(&webhook, body).await;
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    // The patch as the apiserver reads it: base64, or (kube-core's serialisation of bytes) an array of numbers.
    let patch: Vec<u8> = match &answer["response"]["patch"] {
        serde_json::Value::String(b64) => {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
        }
        other => serde_json::from_value(other.clone()).unwrap(),
    };
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("pull-17") && patch.contains("pull-18"), "the fixture must be given its Secrets: {answer}");
    for _ in 0..2_000 {
        std::hint::black_box(handle(&webhook, body).await);
    }

    let n = 50_000;
    let mut hot = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(handle(&webhook, body).await);
        hot.push(t.elapsed());
    }
    let rps = n as f64 / started.elapsed().as_secs_f64();
    hot.sort();

    let cold_n = 2_000;
    let mut buffer = vec![0u64; 64 << 20 >> 3];
    let mut cold = Vec::with_capacity(cold_n);
    let mut parts: [Vec<Duration>; 3] = Default::default();
    for i in 0..2 * cold_n {
        flush(&mut buffer);
        if i % 2 == 0 {
            let t = Instant::now();
            std::hint::black_box(handle(&webhook, body).await);
            cold.push(t.elapsed());
        } else {
            for (part, d) in parts.iter_mut().zip(stages(&webhook, body).await) {
                part.push(d);
            }
        }
    }
    cold.sort();
    for part in &mut parts {
        part.sort();
    }

    let p = |s: &[Duration], q: f64| ms(percentile(s, q)) * 1e3;
    println!(
        "regcred's admission handler in process (the apiserver's review of a 3-container Pod, {} bytes; 20 profiles):",
        body.len()
    );
    println!("  {:<46} {:>9.1} us", "hot, p50", p(&hot, 0.5));
    println!("  {:<46} {:>9.1} us   (target <= 250 us)", "hot, p99", p(&hot, 0.99));
    println!("  {:<46} {:>9.0}", "hot, requests per second (one core)", rps);
    println!("  {:<46} {:>9.1} us", "caches flushed before each, p50", p(&cold, 0.5));
    println!("  {:<46} {:>9.1} us", "caches flushed before each, p99", p(&cold, 0.99));
    for (name, part) in ["decode the review", "decide (admit)", "encode the answer"].iter().zip(&parts) {
        println!("  {:<46} {:>9.1} us", format!("  caches flushed, p50: {name}"), p(part, 0.5));
    }
    let json = json!({
        "review_bytes": body.len(),
        "p50_us": p(&hot, 0.5),
        "p99_us": p(&hot, 0.99),
        "rps_one_core": rps,
        "flushed_p50_us": p(&cold, 0.5),
        "flushed_p99_us": p(&cold, 0.99),
        "flushed_decode_p50_us": p(&parts[0], 0.5),
        "flushed_admit_p50_us": p(&parts[1], 0.5),
        "flushed_encode_p50_us": p(&parts[2], 0.5),
    });
    common::write_report("webhook", &json);
}
