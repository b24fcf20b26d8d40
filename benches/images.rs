//! `make bench`: image checks at admission, against Debian's docker-registry (htpasswd, TLS) on loopback.
//!
//! - Warm: Pod creation through the apiserver with regcred checking every image (all in its cache), beside the
//!   same regcred for a profile whose checks are Off and the do-nothing floor webhook (same patch, no checks),
//!   alternating Pod by Pod in the same run: p50 and p99 and their ratios (target: within 1.1x of the floor).
//! - Cold: one check of a Pod's 3 images (one an index) with an empty cache, p50/p99.
//! - Requests: registry requests for 1,000 Pods of one image created through the apiserver, against those of a
//!   single check; and 1,000 checks of one image at once, which share one resolution.
//!
//! Prints a table and writes `.local/bench/images.json`; nothing is asserted.
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
use regcred::images::{CheckStats, Checker, Lookup};
use regcred::registry::preflight::{Credentials, Options};
use serde_json::json;
use support::TestEnv;
use support::registry::{Auth, PASSWORD, Registry, USER};
use support::webhook::{SECRET, start_operator};

fn pod(i: usize, images: &[String]) -> Pod {
    let containers: Vec<_> =
        images.iter().enumerate().map(|(c, image)| json!({"name": format!("c{c}"), "image": image})).collect();
    serde_json::from_value(json!({"metadata": {"name": format!("p{i:05}")}, "spec": {"containers": containers}}))
        .unwrap()
}

/// The registry's requests once they have settled (its log is written a moment after each answer).
async fn settled(registry: &Registry) -> usize {
    let mut last = registry.requests();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = registry.requests();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::main]
async fn main() {
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

            // regcred with its webhook (both entries).
            let h = start_operator(&env, &[]).await;
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
            let served = env.namespace("served", &[("pull", "yes")]).await;
            let unchecked = env.namespace("unchecked", &[("pull", "off")]).await;
            h.wait_credentials(&served, SECRET, &registry.addr, PASSWORD).await;
            h.wait_credentials(&unchecked, SECRET, &registry.addr, PASSWORD).await;
            floor::register(&env, SECRET).await;
            let floor_ns = env
                .namespace("floor", &[("pull", "yes"), ("regcred.dev/inject", "disabled"), ("floor-bench", &env.id)])
                .await;
            let (with, without, floor) = (
                Api::<Pod>::namespaced(h.client(), &served),
                Api::<Pod>::namespaced(h.client(), &unchecked),
                Api::<Pod>::namespaced(h.client(), &floor_ns),
            );

            // Warm: the first Pods fill the cache; then the series alternate, Pod by Pod.
            for i in 0..20 {
                for api in [&with, &without, &floor] {
                    api.create(&PostParams::default(), &pod(n + i, &three)).await.unwrap();
                }
            }
            let before_warm = settled(&registry).await;
            let (mut on, mut off, mut noop) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                let mut order: [(&Api<Pod>, &mut Vec<Duration>); 3] =
                    [(&with, &mut on), (&without, &mut off), (&floor, &mut noop)];
                order.rotate_left(i % 3);
                for (api, series) in order {
                    let t0 = Instant::now();
                    let created = api.create(&PostParams::default(), &pod(i, &three)).await.unwrap();
                    series.push(t0.elapsed());
                    assert_eq!(created.spec.unwrap().image_pull_secrets.unwrap_or_default().len(), 1);
                }
            }
            let warm_requests = settled(&registry).await - before_warm;
            // regcred's own share: the handler's time as its metrics saw it (request in to answer out).
            let metrics_addr = h.operator.as_ref().unwrap().metrics_addr().await;
            let (_, metrics) = support::http_get(&metrics_addr, "/metrics").await;
            let value = |name: &str| {
                metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(f64::NAN)
            };
            let handler_mean_ms = value("regcred_webhook_request_duration_seconds_sum")
                / value("regcred_webhook_request_duration_seconds_count")
                * 1e3;
            on.sort();
            off.sort();
            noop.sort();

            // Requests: 1,000 Pods of an image no Pod had, through the apiserver.
            let once = vec![r("team/once:1")];
            let before = settled(&registry).await;
            for i in 0..1000 {
                with.create(&PostParams::default(), &pod(10_000 + i, &once)).await.unwrap();
            }
            let thousand_pods = settled(&registry).await - before;

            // Cold: a fresh cache per round, 3 images (one an index), straight through the checker.
            let creds = Credentials { username: USER.into(), password: PASSWORD.into() };
            let options = Options { ca_pem: Some(registry.ca_pem.clone()), ..Options::default() };
            let target = |image: &String| Lookup {
                image: image.clone(),
                credentials: Some(creds.clone()),
                options: options.clone(),
            };
            let mut cold = Vec::new();
            let before_cold = settled(&registry).await;
            for _ in 0..30 {
                let checker = Checker::new(Duration::from_secs(10), 64, 32, CheckStats::default());
                let t0 = Instant::now();
                let outcomes = checker.check(three.iter().map(target).collect()).await;
                cold.push(t0.elapsed());
                assert!(outcomes.iter().all(|o| o.passed()), "{outcomes:?}");
            }
            let one_check = (settled(&registry).await - before_cold) / 30;
            cold.sort();

            // 1,000 checks of one image at once, on an empty cache: one resolution.
            let checker = Checker::new(Duration::from_secs(10), 64, 32, CheckStats::default());
            let burst = futures::future::join_all((0..1000).map(|_| checker.check(vec![target(&three[0])]))).await;
            assert!(burst.iter().all(|o| o[0].passed()));
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            json!({
                "pods_per_series": n,
                "checks_warm_p50_ms": ms(percentile(&on, 0.5)),
                "checks_warm_p99_ms": ms(percentile(&on, 0.99)),
                "unchecked_p50_ms": ms(percentile(&off, 0.5)),
                "unchecked_p99_ms": ms(percentile(&off, 0.99)),
                "checks_vs_unchecked_p50": percentile(&on, 0.5).as_secs_f64() / percentile(&off, 0.5).as_secs_f64(),
                "checks_vs_unchecked_p99": percentile(&on, 0.99).as_secs_f64() / percentile(&off, 0.99).as_secs_f64(),
                "unchecked_vs_floor_p50": percentile(&off, 0.5).as_secs_f64() / percentile(&noop, 0.5).as_secs_f64(),
                "floor_p50_ms": ms(percentile(&noop, 0.5)),
                "floor_p99_ms": ms(percentile(&noop, 0.99)),
                "ratio_p50": percentile(&on, 0.5).as_secs_f64() / percentile(&noop, 0.5).as_secs_f64(),
                "ratio_p99": percentile(&on, 0.99).as_secs_f64() / percentile(&noop, 0.99).as_secs_f64(),
                "registry_requests_warm_series": warm_requests,
                "regcred_handler_mean_ms": handler_mean_ms,
                "regcred_webhook_requests": value("regcred_webhook_requests_total"),
                "cold_3_images_p50_ms": ms(percentile(&cold, 0.5)),
                "cold_3_images_p99_ms": ms(percentile(&cold, 0.99)),
                "registry_requests_one_pod_of_3_images": one_check,
                "registry_requests_1000_pods_one_image": thousand_pods,
                "resolutions_1000_concurrent_checks": checker.stats.registry_checks.get(),
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "image checks at admission ({} Pods per series, 3 images, one an index; htpasswd registry)",
        report["pods_per_series"]
    );
    row("figure", "measured", "target");
    row("Pod create, floor webhook (no checks), p50", &format!("{:.2}ms", f("floor_p50_ms")), "");
    row("Pod create, floor webhook (no checks), p99", &format!("{:.2}ms", f("floor_p99_ms")), "");
    row("Pod create, regcred checking (warm cache), p50", &format!("{:.2}ms", f("checks_warm_p50_ms")), "");
    row("Pod create, regcred checking (warm cache), p99", &format!("{:.2}ms", f("checks_warm_p99_ms")), "");
    row("Pod create, regcred, profile with checks Off, p50", &format!("{:.2}ms", f("unchecked_p50_ms")), "");
    row("Pod create, regcred, profile with checks Off, p99", &format!("{:.2}ms", f("unchecked_p99_ms")), "");
    row("warm / floor, p50", &format!("{:.2}x", f("ratio_p50")), "<= 1.1x");
    row("warm / floor, p99", &format!("{:.2}x", f("ratio_p99")), "<= 1.1x");
    row("warm checks / checks Off (the checks' own cost), p50", &format!("{:.2}x", f("checks_vs_unchecked_p50")), "");
    row("warm checks / checks Off (the checks' own cost), p99", &format!("{:.2}x", f("checks_vs_unchecked_p99")), "");
    row("checks Off / floor (regcred's injection), p50", &format!("{:.2}x", f("unchecked_vs_floor_p50")), "");
    row("of which regcred's handler (mean, from its metrics)", &format!("{:.3}ms", f("regcred_handler_mean_ms")), "");
    row(
        "admission requests regcred answered in the series (640 Pods)",
        &report["regcred_webhook_requests"].to_string(),
        "",
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
