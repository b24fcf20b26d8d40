//! `make bench`: what the webhook adds to Pod creation through the real apiserver. The apiserver calls the real
//! `regcred` binary over HTTPS, as in the webhook tests. Pods are created one at a time, alternating between a
//! namespace the webhook serves and one it is configured to skip (the opt-out label), so both series see the
//! same apiserver at the same moment; the overhead is the difference of their percentiles. A third series goes
//! through a webhook that computes nothing (an HTTPS server in this process answering at once with the same patch
//! regcred gives): the floor any webhook with that answer costs on this machine, regcred or not. Prints a table and writes `.local/bench/admission.json`;
//! nothing is asserted.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/floor.rs"]
mod floor;
use common::{percentile, row};

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::TestEnv;
use support::webhook::{REGISTRY, SECRET, start};

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i:05}"), "labels": {"app": "bench"}},
        "spec": {"containers": [
            {"name": "app", "image": format!("{REGISTRY}/shop/web:1.4.2")},
            {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"},
            {"name": "metrics", "image": "ghcr.io/acme/exporter:2"},
        ]},
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let env = TestEnv::new("admit").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            // The injection alone: image checks are measured by benches/images.rs, against a registry.
            let h = start(&env, &["--image-checks", "false"]).await;
            let served = env.namespace("served", &[("pull", "yes")]).await;
            let skipped = env.namespace("skipped", &[("pull", "yes"), ("regcred.dev/inject", "disabled")]).await;
            h.wait_credentials(&served, SECRET, REGISTRY, "pw").await;
            // The floor: an instant webhook with the same answer, on a namespace of its own (regcred's skips it).
            floor::register(&env, SECRET).await;
            let floor_ns = env
                .namespace("floor", &[("pull", "yes"), ("regcred.dev/inject", "disabled"), ("floor-bench", &env.id)])
                .await;
            let floor = Api::<Pod>::namespaced(h.client(), &floor_ns);
            let (with, without) =
                (Api::<Pod>::namespaced(h.client(), &served), Api::<Pod>::namespaced(h.client(), &skipped));
            // Warm both paths (connections, TLS sessions, caches).
            for i in 0..20 {
                for api in [&with, &without, &floor] {
                    api.create(&PostParams::default(), &pod(n + i)).await.unwrap();
                }
            }
            let (mut on, mut off, mut noop) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                // Rotate which goes first, so no series always follows another.
                let mut order: [(&Api<Pod>, &mut Vec<Duration>); 3] =
                    [(&with, &mut on), (&without, &mut off), (&floor, &mut noop)];
                order.rotate_left(i % 3);
                for (api, series) in order {
                    let t0 = Instant::now();
                    let created = api.create(&PostParams::default(), &pod(i)).await.unwrap();
                    series.push(t0.elapsed());
                    let pulls = created.spec.unwrap().image_pull_secrets.unwrap_or_default();
                    assert_eq!(pulls.is_empty(), std::ptr::eq(api, &without), "a webhook served the wrong namespace");
                }
            }
            on.sort();
            off.sort();
            noop.sort();
            // regcred's own share: the handler's time as its metrics saw it (request in to answer out).
            let addr = h.operator.as_ref().unwrap().metrics_addr().await;
            let (_, metrics) = support::http_get(&addr, "/metrics").await;
            let value = |name: &str| {
                metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(f64::NAN)
            };
            let handler_mean_ms = value("regcred_webhook_request_duration_seconds_sum")
                / value("regcred_webhook_request_duration_seconds_count")
                * 1e3;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            json!({
                "pods_per_series": n,
                "with_webhook_p50_ms": ms(percentile(&on, 0.5)),
                "with_webhook_p99_ms": ms(percentile(&on, 0.99)),
                "without_webhook_p50_ms": ms(percentile(&off, 0.5)),
                "without_webhook_p99_ms": ms(percentile(&off, 0.99)),
                "overhead_p50_ms": ms(percentile(&on, 0.5)) - ms(percentile(&off, 0.5)),
                "overhead_p99_ms": ms(percentile(&on, 0.99)) - ms(percentile(&off, 0.99)),
                "regcred_handler_mean_ms": handler_mean_ms,
                "noop_webhook_p50_ms": ms(percentile(&noop, 0.5)),
                "noop_webhook_p99_ms": ms(percentile(&noop, 0.99)),
                "floor_overhead_p50_ms": ms(percentile(&noop, 0.5)) - ms(percentile(&off, 0.5)),
                "floor_overhead_p99_ms": ms(percentile(&noop, 0.99)) - ms(percentile(&off, 0.99)),
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("regcred webhook through the apiserver ({} Pods per series, 3 containers)", report["pods_per_series"]);
    row("figure", "measured", "target");
    row("Pod create, webhook skipped, p50", &format!("{:.2}ms", f("without_webhook_p50_ms")), "");
    row("Pod create, webhook skipped, p99", &format!("{:.2}ms", f("without_webhook_p99_ms")), "");
    row("Pod create, through the webhook, p50", &format!("{:.2}ms", f("with_webhook_p50_ms")), "");
    row("Pod create, through the webhook, p99", &format!("{:.2}ms", f("with_webhook_p99_ms")), "");
    row("webhook overhead, p50", &format!("{:.2}ms", f("overhead_p50_ms")), "");
    row("webhook overhead, p99", &format!("{:.2}ms", f("overhead_p99_ms")), "<= 2ms");
    row("floor: an instant webhook, same patch, overhead p50", &format!("{:.2}ms", f("floor_overhead_p50_ms")), "");
    row("floor: an instant webhook, same patch, overhead p99", &format!("{:.2}ms", f("floor_overhead_p99_ms")), "");
    row("of which regcred's handler (mean, from its metrics)", &format!("{:.3}ms", f("regcred_handler_mean_ms")), "");
    common::write_report("admission", &report);
}
