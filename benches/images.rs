//! `make bench`: image checks at admission, against Debian's docker-registry (htpasswd, TLS) on loopback.
//!
//! - Warm: Pod creation through the apiserver with regcred checking every image (all in its cache), beside the
//!   same regcred for a profile whose checks are Off and the do-nothing floor webhook (same patch, no checks; a
//!   process of its own registered through the same chart configuration as regcred, see `common/admit.rs`),
//!   Pod by Pod in turn in the same run: p50 and p99 and their ratios (target: within 1.1x of the floor), the
//!   apiserver's own time per webhook call, and the warnings each series got (none is due).
//! - Cold: one check of a Pod's 3 images (one an index) with an empty cache, p50/p99.
//! - Requests: registry requests for 1,000 Pods of one image created through the apiserver, against those of a
//!   single check; and 1,000 checks of one image at once, which share one resolution.
//!
//! Prints a table and writes `.local/bench/images.json`; nothing is asserted.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/admit.rs"]
mod admit;
mod common;
#[path = "common/floor.rs"]
mod floor;
use common::{percentile, row};

use std::time::{Duration, Instant};

use admit::{SELECT_LABEL, Series, apiserver_webhooks, webhook_since};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use regcred::images::{CheckStats, Checker, Lookup};
use regcred::registry::preflight::{Credentials, Options};
use serde_json::json;
use support::TestEnv;
use support::registry::{Auth, PASSWORD, Registry, USER};
use support::webhook::SECRET;

fn pod(i: usize, images: &[String]) -> Pod {
    let containers: Vec<_> =
        images.iter().enumerate().map(|(c, image)| json!({"name": format!("c{c}"), "image": image})).collect();
    serde_json::from_value(json!({"metadata": {"name": format!("p{i:05}")}, "spec": {"containers": containers}}))
        .unwrap()
}

fn main() {
    floor::serve_if_asked();
    bench();
}

#[tokio::main]
async fn bench() {
    let n: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let env = TestEnv::new("images").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let registry = Registry::start(Auth::Basic).await;
            registry.push_image("team/app:1", false, 2048, "amd64").await;
            registry.push_image("team/sidecar:1", true, 2048, "amd64").await;
            registry.push_index("team/multi:1", &["arm64", "amd64"]).await;
            registry.push_image("team/once:1", false, 2048, "amd64").await;
            let r = |path: &str| format!("{}/{path}", registry.addr);
            let three = vec![r("team/app:1"), r("team/sidecar:1"), r("team/multi:1")];

            // regcred with its webhook (both entries of the chart's configuration), and the floor likewise.
            let h = admit::start_regcred(&env, &[], true).await;
            let floor = admit::start_floor(&env, SECRET, true).await;
            h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
            // Two profiles for the registry, writing Secret `pull`: one checks images (Warn), one does not (Off).
            let spec = |select: &str, mode: &str| {
                json!({
                    "server": registry.addr, "secretName": SECRET,
                    "credentials": {"secretRef": {"name": "creds"}},
                    "namespaces": h.select(select), "tls": {"caBundle": registry.ca_pem},
                    "imageChecks": {"mode": mode},
                })
            };
            for (name, select, mode) in [("checks", "yes", "Warn"), ("unchecked", "off", "Off")] {
                let profile = h.profile(name, spec(select, mode)).await;
                h.ready(&profile).await;
            }
            let (to_regcred, to_floor) = (format!("regcred-{}", env.id), format!("floor-{}", env.id));
            let served = env.namespace("served", &[("pull", "yes"), (SELECT_LABEL, &to_regcred)]).await;
            let unchecked = env.namespace("unchecked", &[("pull", "off"), (SELECT_LABEL, &to_regcred)]).await;
            let floor_ns = env.namespace("floor", &[("pull", "yes"), (SELECT_LABEL, &to_floor)]).await;
            h.wait_credentials(&served, SECRET, &registry.addr, PASSWORD).await;
            h.wait_credentials(&unchecked, SECRET, &registry.addr, PASSWORD).await;
            let client = h.client();
            let with = Api::<Pod>::namespaced(client.clone(), &served);
            let mut series = [
                Series::new("checks", &served, &[SECRET]),
                Series::new("checks Off", &unchecked, &[SECRET]),
                Series::new("floor", &floor_ns, &[SECRET]),
            ];

            // Warm: the first Pods fill the cache; then the series alternate, Pod by Pod.
            admit::interleave(&client, &mut series, n..n + 20, |i| pod(i, &three)).await;
            for s in &mut series {
                s.latencies.clear();
                s.warnings.clear();
            }
            let operator = h.operator.as_ref().unwrap();
            let before_warm = registry.settled_requests().await.0;
            let handler_before = admit::Handler::read(operator).await;
            let idle_cpu = admit::idle_cpu(operator, &floor).await;
            let cpu_before = admit::cpu(operator, &floor);
            let series_started = std::time::Instant::now();
            let before = apiserver_webhooks(&client).await;
            admit::interleave(&client, &mut series, 0..n, |i| pod(i, &three)).await;
            let after = apiserver_webhooks(&client).await;
            let handler = admit::Handler::read(operator).await.since(&handler_before);
            let cpu_after = admit::cpu(operator, &floor);
            let series_took = series_started.elapsed();
            let warm_requests = registry.settled_requests().await.0 - before_warm;
            let apiserver_regcred = webhook_since(&after, &before, "pods.regcred.dev");
            let apiserver_floor = webhook_since(&after, &before, "pods.floor.regcred.dev");
            drop(floor);
            let [on, off, noop] = &series;

            // Requests: 1,000 Pods of an image no Pod had, through the apiserver.
            let once = vec![r("team/once:1")];
            let before = registry.settled_requests().await.0;
            for i in 0..1000 {
                with.create(&PostParams::default(), &pod(10_000 + i, &once)).await.unwrap();
            }
            let thousand_pods = registry.settled_requests().await.0 - before;

            // Cold: a fresh cache per round, 3 images (one an index), straight through the checker.
            let creds = Credentials { username: USER.into(), password: PASSWORD.into() };
            let options = Options { ca_pem: Some(registry.ca_pem.clone()), ..Options::default() };
            let target = |image: &String| Lookup {
                image: image.clone(),
                credentials: Some(creds.clone()),
                options: options.clone(),
            };
            let mut cold = Vec::new();
            let before_cold = registry.settled_requests().await.0;
            for _ in 0..30 {
                let checker = Checker::new(Duration::from_secs(10), 64, 32, CheckStats::default());
                let t0 = Instant::now();
                let outcomes = checker.check(three.iter().map(target).collect()).await;
                cold.push(t0.elapsed());
                assert!(outcomes.iter().all(|o| o.passed()), "{outcomes:?}");
            }
            let one_check = (registry.settled_requests().await.0 - before_cold) / 30;
            cold.sort();

            // 1,000 checks of one image at once, on an empty cache: one resolution.
            let checker = Checker::new(Duration::from_secs(10), 64, 32, CheckStats::default());
            let burst = futures::future::join_all((0..1000).map(|_| checker.check(vec![target(&three[0])]))).await;
            assert!(burst.iter().all(|o| o[0].passed()));
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let ratio = |a: &Series, b: &Series, p: f64| a.p(p).as_secs_f64() / b.p(p).as_secs_f64();
            json!({
                "pods_per_series": n,
                "log": common::LOG_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "checks_warm_p50_ms": ms(on.p(0.5)),
                "checks_warm_p99_ms": ms(on.p(0.99)),
                "unchecked_p50_ms": ms(off.p(0.5)),
                "unchecked_p99_ms": ms(off.p(0.99)),
                "floor_p50_ms": ms(noop.p(0.5)),
                "floor_p99_ms": ms(noop.p(0.99)),
                "checks_vs_unchecked_p50": ratio(on, off, 0.5),
                "checks_vs_unchecked_p99": ratio(on, off, 0.99),
                "unchecked_vs_floor_p50": ratio(off, noop, 0.5),
                "unchecked_vs_floor_p99": ratio(off, noop, 0.99),
                "ratio_p50": ratio(on, noop, 0.5),
                "ratio_p99": ratio(on, noop, 0.99),
                "warnings_checks": on.warnings.len(),
                "warnings_checks_off": off.warnings.len(),
                "warnings_floor": noop.warnings.len(),
                "warning_examples": on.warnings.iter().chain(&off.warnings).take(3).collect::<Vec<_>>(),
                "registry_requests_warm_series": warm_requests,
                "apiserver_webhook_mean_ms_regcred": apiserver_regcred.mean_ms(),
                "apiserver_webhook_mean_ms_floor": apiserver_floor.mean_ms(),
                "apiserver_webhook_calls_per_pod_regcred": apiserver_regcred.calls / (2 * n) as f64,
                "apiserver_webhook_calls_per_pod_floor": apiserver_floor.calls / n as f64,
                "regcred_handler_mean_ms": handler.mean_ms(),
                "regcred_handler_p50_ms": handler.quantile_ms(0.5),
                "regcred_handler_p99_ms": handler.quantile_ms(0.99),
                "cpu_per_admission_ms_regcred":
                    admit::cpu_per_admission(cpu_after.0 - cpu_before.0, idle_cpu.0, series_took, handler.requests),
                "cpu_per_admission_ms_floor":
                    admit::cpu_per_admission(cpu_after.1 - cpu_before.1, idle_cpu.1, series_took, apiserver_floor.calls),
                "idle_cpu_percent_regcred": idle_cpu.0 * 100.0,
                "regcred_admission_requests": handler.requests,
                "regcred_pods": 2 * n,
                "cold_3_images_p50_ms": ms(percentile(&cold, 0.5)),
                "cold_3_images_p99_ms": ms(percentile(&cold, 0.99)),
                "registry_requests_one_pod_of_3_images": one_check,
                "registry_requests_1000_pods_one_image": thousand_pods,
                "resolutions_1000_concurrent_checks": checker.stats.registry_checks.get(),
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let ms = |k: &str| format!("{:.2}ms", f(k));
    let x = |k: &str| format!("{:.3}x", f(k));
    println!();
    println!(
        "image checks at admission ({} Pods per series, 3 images, one an index; htpasswd registry; the chart's \
         configuration for regcred and the floor; logging {})",
        report["pods_per_series"],
        report["log"]
            .as_array()
            .map(|l| l.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    row("figure", "measured", "target");
    row("Pod create, floor webhook (no checks), p50", &ms("floor_p50_ms"), "");
    row("Pod create, floor webhook (no checks), p99", &ms("floor_p99_ms"), "");
    row("Pod create, regcred checking (warm cache), p50", &ms("checks_warm_p50_ms"), "");
    row("Pod create, regcred checking (warm cache), p99", &ms("checks_warm_p99_ms"), "");
    row("Pod create, regcred, profile with checks Off, p50", &ms("unchecked_p50_ms"), "");
    row("Pod create, regcred, profile with checks Off, p99", &ms("unchecked_p99_ms"), "");
    row("warm / floor, p50", &x("ratio_p50"), "<= 1.1x");
    row("warm / floor, p99", &x("ratio_p99"), "");
    row("checks Off / floor (regcred's injection), p50", &x("unchecked_vs_floor_p50"), "<= 1.05x");
    row("checks Off / floor (regcred's injection), p99", &x("unchecked_vs_floor_p99"), "");
    row("warm checks / checks Off (the checks' own cost), p50", &x("checks_vs_unchecked_p50"), "");
    row("warm checks / checks Off (the checks' own cost), p99", &x("checks_vs_unchecked_p99"), "");
    common::webhook_cost_rows(&report);
    let answered = format!("admission requests regcred answered ({} Pods)", report["regcred_pods"]);
    row(&answered, &report["regcred_admission_requests"].to_string(), "");
    row(
        "warnings: checks / checks Off / floor",
        &format!("{} / {} / {}", report["warnings_checks"], report["warnings_checks_off"], report["warnings_floor"]),
        "0 / 0 / 0",
    );
    row("registry requests during the warm series", &report["registry_requests_warm_series"].to_string(), "0");
    row("cold check of 3 images, p50", &format!("{:.1}ms", f("cold_3_images_p50_ms")), "");
    row("cold check of 3 images, p99", &format!("{:.1}ms", f("cold_3_images_p99_ms")), "");
    row("registry requests, one check of 3 images", &report["registry_requests_one_pod_of_3_images"].to_string(), "");
    row(
        "registry requests, 1,000 Pods of one new image",
        &report["registry_requests_1000_pods_one_image"].to_string(),
        "1 check",
    );
    row(
        "resolutions, 1,000 checks of one image at once",
        &report["resolutions_1000_concurrent_checks"].to_string(),
        "1",
    );
    common::write_report("images", &report);
}
