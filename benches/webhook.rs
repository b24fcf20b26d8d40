//! `make bench`: the webhook's in-process handling of a typical 3-container Pod against 20 profiles: decoding
//! the AdmissionReview, the decision, the patch and encoding the answer (everything but TLS and the network).
//! Prints p50/p99 and the requests per second one core sustains.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::percentile;

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use regcred::registry::reference::CredentialKey;
use regcred::webhook::{Candidate, decide, patch, pod_images};

fn review() -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f1c1c8e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-7d9f8-", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "registry.example.com:5000/shop/web:1.4.2", "ports": [{"containerPort": 8080}]},
                        {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"},
                        {"name": "metrics", "image": "ghcr.io/acme/exporter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                    ],
                    "imagePullSecrets": [{"name": "legacy"}],
                },
            },
        }
    })
    .to_string()
}

fn candidates() -> Vec<Candidate> {
    let mut keys: Vec<String> = (0..17).map(|i| format!("registry{i}.example.org")).collect();
    keys.extend(["registry.example.com:5000".into(), "https://index.docker.io/v1/".into(), "ghcr.io/acme".into()]);
    keys.iter()
        .enumerate()
        .map(|(i, k)| Candidate {
            profile: format!("p{i}"),
            secret_name: format!("regcred-p{i}"),
            key: CredentialKey::parse(k),
            selects_namespace: i % 3 != 1,
        })
        .collect()
}

fn handle(body: &str, candidates: &[Candidate]) -> Vec<u8> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_str(body).unwrap();
    let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
    let pod: Pod = serde_json::from_value(serde_json::to_value(request.object.as_ref().unwrap()).unwrap()).unwrap();
    let existing: Vec<String> =
        pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect();
    let add = decide(&pod_images(&pod), &existing, candidates);
    let mut response = AdmissionResponse::from(&request);
    if !add.is_empty() {
        response = response.with_patch(patch(!existing.is_empty(), &add)).unwrap();
    }
    serde_json::to_vec(&response.into_review()).unwrap()
}

fn main() {
    let body = review();
    let candidates = candidates();
    let answer = handle(&body, &candidates);
    assert!(String::from_utf8_lossy(&answer).contains("\"patch\""), "the fixture must produce a patch");
    for _ in 0..2_000 {
        std::hint::black_box(handle(&body, &candidates));
    }
    let n = 50_000;
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(handle(&body, &candidates));
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    let rps = n as f64 / total.as_secs_f64();
    println!("webhook handler, 3-container Pod, 20 profiles, {n} requests, one thread:");
    println!("  {:<34} {:>10.1} us", "p50", p50.as_secs_f64() * 1e6);
    println!("  {:<34} {:>10.1} us   (target <= 250 us)", "p99", p99.as_secs_f64() * 1e6);
    println!("  {:<34} {:>10.0}", "requests per second (one core)", rps);
    let json =
        serde_json::json!({"p50_us": p50.as_secs_f64() * 1e6, "p99_us": p99.as_secs_f64() * 1e6, "rps_one_core": rps});
    common::write_report("webhook", &json);
}
