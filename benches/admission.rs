//! `make bench`: what regcred's webhook adds to Pod creation through the real apiserver, beside a floor measured
//! on equal terms in the same run. Three series of Pods, created one at a time, Pod by Pod in turn (so every
//! series sees the same apiserver at the same moment):
//!
//! - skipped: a namespace both webhooks are configured to skip (the chart's opt-out label);
//! - floor: a webhook that computes nothing (`common/floor.rs`), answering at once with the patch regcred gives;
//! - regcred: the real `regcred` binary, with image checks off (benches/images.rs measures them).
//!
//! regcred and the floor are placed alike (each a process of its own on loopback, HTTPS, logging as the chart
//! sets it: `info`, JSON) and registered through the same configuration: the chart's, rendered by helm, each with
//! its own URL and caBundle. Beside the client-side latency the table prints the apiserver's own time per webhook
//! call (`apiserver_admission_webhook_admission_duration_seconds`) and the calls per Pod, and regcred's handler
//! time from its own metrics. Writes `.local/bench/admission.json`; nothing is asserted.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/admit.rs"]
mod admit;
mod common;
#[path = "common/floor.rs"]
mod floor;
use common::row;

use std::time::Duration;

use admit::{SELECT_LABEL, Series, apiserver_webhooks, webhook_since};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use support::TestEnv;
use support::webhook::{REGISTRY, SECRET, serve_registry};

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

fn main() {
    floor::serve_if_asked();
    bench();
}

#[tokio::main]
async fn bench() {
    let n: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let env = TestEnv::new("admit").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let h = admit::start_regcred(&env, &["--image-checks", "false"], false).await;
            serve_registry(&h).await;
            let floor = admit::start_floor(&env, SECRET, false).await;
            let (to_regcred, to_floor) = (format!("regcred-{}", env.id), format!("floor-{}", env.id));
            let served = env.namespace("served", &[("pull", "yes"), (SELECT_LABEL, &to_regcred)]).await;
            let skipped = env
                .namespace(
                    "skipped",
                    &[("pull", "yes"), (SELECT_LABEL, &to_regcred), ("regcred.dev/inject", "disabled")],
                )
                .await;
            let floor_ns = env.namespace("floor", &[("pull", "yes"), (SELECT_LABEL, &to_floor)]).await;
            h.wait_credentials(&served, SECRET, REGISTRY, "pw").await;
            let client = h.client();
            let mut series = [
                Series::new("regcred", &served, &[SECRET]),
                Series::new("skipped", &skipped, &[]),
                Series::new("floor", &floor_ns, &[SECRET]),
            ];
            // Warm every path (connections, TLS sessions, caches); then measure from zero.
            admit::interleave(&client, &mut series, n..n + 20, pod).await;
            for s in &mut series {
                s.latencies.clear();
            }
            let operator = h.operator.as_ref().unwrap();
            let handler_before = admit::Handler::read(operator).await;
            let idle_cpu = admit::idle_cpu(operator, &floor).await;
            let cpu_before = admit::cpu(operator, &floor);
            let series_started = std::time::Instant::now();
            let before = apiserver_webhooks(&client).await;
            admit::interleave(&client, &mut series, 0..n, pod).await;
            let after = apiserver_webhooks(&client).await;
            let handler = admit::Handler::read(operator).await.since(&handler_before);
            let cpu_after = admit::cpu(operator, &floor);
            let series_took = series_started.elapsed();
            let [regcred, skipped, floor_series] = &series;
            let apiserver_regcred = webhook_since(&after, &before, "pods.regcred.dev");
            let apiserver_floor = webhook_since(&after, &before, "pods.floor.regcred.dev");
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            drop(floor);
            json!({
                "pods_per_series": n,
                "log": common::LOG_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "skipped_p50_ms": ms(skipped.p(0.5)),
                "skipped_p99_ms": ms(skipped.p(0.99)),
                "floor_p50_ms": ms(floor_series.p(0.5)),
                "floor_p99_ms": ms(floor_series.p(0.99)),
                "regcred_p50_ms": ms(regcred.p(0.5)),
                "regcred_p99_ms": ms(regcred.p(0.99)),
                "regcred_vs_floor_p50": regcred.p(0.5).as_secs_f64() / floor_series.p(0.5).as_secs_f64(),
                "regcred_vs_floor_p99": regcred.p(0.99).as_secs_f64() / floor_series.p(0.99).as_secs_f64(),
                "regcred_overhead_p50_ms": ms(regcred.p(0.5)) - ms(skipped.p(0.5)),
                "floor_overhead_p50_ms": ms(floor_series.p(0.5)) - ms(skipped.p(0.5)),
                "apiserver_webhook_mean_ms_regcred": apiserver_regcred.mean_ms(),
                "apiserver_webhook_mean_ms_floor": apiserver_floor.mean_ms(),
                "apiserver_webhook_calls_per_pod_regcred": apiserver_regcred.calls / n as f64,
                "apiserver_webhook_calls_per_pod_floor": apiserver_floor.calls / n as f64,
                "regcred_handler_mean_ms": handler.mean_ms(),
                "regcred_handler_p50_ms": handler.quantile_ms(0.5),
                "regcred_handler_p99_ms": handler.quantile_ms(0.99),
                "cpu_per_admission_ms_regcred":
                    admit::cpu_per_admission(cpu_after.0 - cpu_before.0, idle_cpu.0, series_took, handler.requests),
                "cpu_per_admission_ms_floor":
                    admit::cpu_per_admission(cpu_after.1 - cpu_before.1, idle_cpu.1, series_took, apiserver_floor.calls),
                "idle_cpu_percent_regcred": idle_cpu.0 * 100.0,
                "regcred_handler_requests_per_pod": handler.requests / n as f64,
                "warnings_regcred": regcred.warnings.len(),
                "warnings_floor": floor_series.warnings.len(),
                "warning_examples": regcred.warnings.iter().take(3).collect::<Vec<_>>(),
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let ms = |k: &str| format!("{:.2}ms", f(k));
    println!();
    println!(
        "regcred's webhook through the apiserver beside the floor webhook ({} Pods per series, 3 containers, \
         the chart's configuration for both, logging {})",
        report["pods_per_series"],
        report["log"]
            .as_array()
            .map(|l| l.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    row("figure", "measured", "target");
    row("Pod create, webhooks skipped (opt-out label), p50", &ms("skipped_p50_ms"), "");
    row("Pod create, webhooks skipped (opt-out label), p99", &ms("skipped_p99_ms"), "");
    row("Pod create, floor webhook (same patch, no work), p50", &ms("floor_p50_ms"), "");
    row("Pod create, floor webhook (same patch, no work), p99", &ms("floor_p99_ms"), "");
    row("Pod create, regcred, p50", &ms("regcred_p50_ms"), "");
    row("Pod create, regcred, p99", &ms("regcred_p99_ms"), "");
    row("regcred / floor, p50", &format!("{:.3}x", f("regcred_vs_floor_p50")), "<= 1.05x");
    row("regcred / floor, p99", &format!("{:.3}x", f("regcred_vs_floor_p99")), "");
    row("overhead over skipped, p50: floor", &ms("floor_overhead_p50_ms"), "");
    row("overhead over skipped, p50: regcred", &ms("regcred_overhead_p50_ms"), "");
    common::webhook_cost_rows(&report);
    row(
        "admission requests per Pod (regcred's metrics)",
        &format!("{:.2}", f("regcred_handler_requests_per_pod")),
        "1",
    );
    row("warnings, regcred series", &report["warnings_regcred"].to_string(), "0");
    common::write_report("admission", &report);
}
