//! `make bench`: the controller's figures on the real local control plane. Prints a table and writes
//! `.local/bench/controller.json`. Nothing here asserts a target: the figures are read, not tested.
//!
//! 1. A profile applied over N existing namespaces (default 1,000): time until every Secret is in place, beside a
//!    raw baseline that creates the same N Secrets (same size, labels, ownerReference) directly, as the same
//!    ServiceAccount, at the same concurrency;
//!    BENCH_ROUNDS rounds (default 5) of baseline then sync, the median ratio reported.
//! 2. New namespace to Secret present, p50/p99 over 100 namespaces.
//! 3. Writes the operator makes during 60 s with nothing changing, counted from the apiserver's audit log.
//! 4. The operator's peak and current RSS.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use regcred::api::RegistryProfile;
use serde_json::json;
use support::{Operator, TestEnv, wait_for};

/// Writes in flight: regcred's default --write-concurrency, and the baseline's.
const CONCURRENCY: usize = 128;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn create_namespaces(client: &Client, env: &TestEnv, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let env = env.clone();
            async move { env.namespace_nowait(&name, &[("pull", "yes")]).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let _ = client;
    names.iter().map(|n| format!("{}-{n}", env.id)).collect()
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_NAMESPACES", 1000) as usize;
    let new_ns = env_or("BENCH_NEW_NAMESPACES", 100) as usize;
    let idle = Duration::from_secs(env_or("BENCH_IDLE_SECONDS", 60));
    let rounds = env_or("BENCH_ROUNDS", 5).max(1) as usize;
    let env = TestEnv::new("bench").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let client = env.client.clone();
            let support::BenchOperator { namespace: op_ns, kubeconfig, client: sa_client, user } =
                support::bench_operator(&env).await;

            let run_from = jiff::Timestamp::now();
            eprintln!("bench: creating {n} namespaces");
            let namespaces = create_namespaces(&client, &env, "n", n).await;

            let operator = Operator::start(&kubeconfig, &op_ns, &env.id, &["--log-level", "info"]);
            let profiles = Api::<RegistryProfile>::all(client.clone());
            let apply_profile = |name: &str, selector: serde_json::Value, secret_name: &str| {
                let profile: RegistryProfile = serde_json::from_value(json!({
                    "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                    "metadata": {"name": format!("{}-{name}", env.id), "labels": {"regcred-test": env.id}},
                    "spec": {"server": "registry.example.com", "credentials": {"secretRef": {"name": "creds"}},
                             "namespaces": {"selector": selector}, "secretName": secret_name},
                }))
                .unwrap();
                env.cleanup::<RegistryProfile>(&profile.name_any());
                let profiles = profiles.clone();
                async move { support::apply(&profiles, &profile).await }
            };
            let ready = |name: String, summary: String| {
                let profiles = profiles.clone();
                async move {
                    wait_for(&format!("{name} at {summary}"), Duration::from_secs(600), || async {
                        let p = profiles.get(&name).await.ok()?;
                        let st = p.status?;
                        (st.sync_summary.as_deref() == Some(summary.as_str())
                            && st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                        .then_some(())
                    })
                    .await
                }
            };
            // Warm-up: a profile selecting nothing proves the operator's caches are synced.
            let warm = apply_profile("warm", json!({"matchLabels": {"regcred-bench": "none"}}), "pull").await;
            ready(warm.name_any(), "0/0".into()).await;

            // Rounds, each a raw baseline immediately followed by a profile's full sync, so that both see the same
            // apiserver (its etcd grows with every round): the ratio is taken per round and its median reported.
            let payload = regcred::credentials::render("registry.example.com", "bench", "pw").0.expose().to_vec();
            let owner = OwnerReference {
                api_version: "regcred.dev/v1alpha1".into(),
                kind: "RegistryProfile".into(),
                name: warm.name_any(),
                uid: warm.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: None,
            };
            let mut rounds_out = Vec::new();
            let mut profile = None;
            for round in 0..rounds {
                // Baseline: the same N dockerconfigjson Secrets, created directly by the same identity at the same
                // concurrency.
                let start = Instant::now();
                futures::stream::iter(namespaces.iter().cloned())
                    .map(|ns| {
                        let api = Api::<Secret>::namespaced(sa_client.clone(), &ns);
                        // The same object as regcred writes: labels of the same size (values regcred does not
                        // watch) and a controller ownerReference the garbage collector tracks, as it tracks ours.
                        let secret = Secret {
                            metadata: ObjectMeta {
                                name: Some(format!("baseline-{round}")),
                                labels: Some(BTreeMap::from([
                                    ("app.kubernetes.io/managed-by".into(), "rawbase".into()),
                                    ("regcred.dev/baseline".into(), format!("{}-p{round}", env.id)),
                                ])),
                                owner_references: Some(vec![owner.clone()]),
                                ..Default::default()
                            },
                            type_: Some("kubernetes.io/dockerconfigjson".into()),
                            data: Some(BTreeMap::from([(".dockerconfigjson".into(), ByteString(payload.clone()))])),
                            ..Default::default()
                        };
                        async move { api.create(&PostParams::default(), &secret).await.unwrap() }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect::<Vec<_>>()
                    .await;
                let baseline = start.elapsed();

                // The end of the sync is seen through a watch on the profile's Secrets: the instant the N-th
                // namespace holds its Secret.
                let profile_name = format!("{}-p{round}", env.id);
                let cfg = watcher::Config::default().labels(&format!("regcred.dev/profile={profile_name}"));
                let mut stream =
                    Box::pin(watcher::watcher(Api::<Secret>::all(client.clone()), cfg).applied_objects());
                let all_in_place = tokio::spawn(async move {
                    let mut seen = std::collections::HashSet::new();
                    while let Ok(Some(s)) = stream.try_next().await {
                        seen.insert(s.namespace().unwrap_or_default());
                        if seen.len() == n {
                            return Instant::now();
                        }
                    }
                    panic!("the Secret watch ended");
                });
                // Let the watch establish before the clock starts.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let start = Instant::now();
                let p = apply_profile(
                    &format!("p{round}"),
                    json!({"matchLabels": {"regcred-test": env.id, "pull": "yes"}}),
                    &format!("pull-{round}"),
                )
                .await;
                let full_sync = all_in_place.await.unwrap().duration_since(start);
                ready(p.name_any(), format!("{n}/{n}")).await;
                eprintln!("bench: round {round}: baseline {baseline:?}, full sync {full_sync:?}");
                rounds_out.push((baseline.as_secs_f64(), full_sync.as_secs_f64()));
                profile = Some(p);
            }
            let profile = profile.expect("at least one round");
            // The earlier rounds' profiles stop selecting anything (regcred deletes their Secrets), so what follows
            // measures one profile, as a cluster with one registry would see it. Deselecting every namespace at once
            // is what the deletion guard holds until confirmed: confirmed for the new generation, as an
            // administrator does.
            for round in 0..rounds - 1 {
                let p = apply_profile(
                    &format!("p{round}"),
                    json!({"matchLabels": {"regcred-bench": "none"}}),
                    &format!("pull-{round}"),
                )
                .await;
                let generation = p.metadata.generation.unwrap_or_default().to_string();
                let confirm =
                    json!({"metadata": {"annotations": {regcred::names::CONFIRM_DELETIONS_ANNOTATION: generation}}});
                profiles.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&confirm)).await.unwrap();
                ready(p.name_any(), "0/0".into()).await;
            }
            let mut ratios: Vec<f64> = rounds_out.iter().map(|(b, s)| s / b).collect();
            ratios.sort_by(f64::total_cmp);
            let median_ratio = ratios[ratios.len() / 2];
            let (baseline, full_sync) = rounds_out
                .iter()
                .copied()
                .find(|(b, s)| s / b == median_ratio)
                .unwrap_or(rounds_out[0]);

            // New namespace to Secret present, one namespace at a time, seen through a watch.
            let secrets = Api::<Secret>::all(client.clone());
            let cfg = watcher::Config::default().labels(&format!("regcred.dev/profile={}", profile.name_any()));
            let mut seen = Box::pin(watcher::watcher(secrets, cfg).applied_objects());
            let mut latencies = Vec::new();
            // Drain the initial list.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
            tokio::spawn(async move {
                while let Ok(Some(s)) = seen.try_next().await {
                    let _ = tx.send((s.namespace().unwrap_or_default(), Instant::now()));
                }
            });
            for i in 0..new_ns {
                let t0 = Instant::now();
                let ns = env.namespace_nowait(&format!("new{i:03}"), &[("pull", "yes")]).await;
                loop {
                    let (got, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
                    if got == ns {
                        latencies.push(at.duration_since(t0));
                        break;
                    }
                }
            }
            latencies.sort();
            let total = n + new_ns;
            ready(profile.name_any(), format!("{total}/{total}")).await;

            // Nothing changes: count the operator's writes.
            eprintln!("bench: idle for {idle:?}");
            let from = jiff::Timestamp::now();
            tokio::time::sleep(idle).await;
            let to = jiff::Timestamp::now();
            // Lease renewals (leader election) are not regcred's work: counted apart.
            let (renewals, idle_writes): (Vec<String>, Vec<String>) =
                common::audited_requests(&user, from, to).into_iter().partition(|w| w.contains("/leases/"));
            // The same filter over the whole run must see the operator's writes, or the idle count means nothing.
            let run_writes = common::audited_requests(&user, run_from, to).len();
            let (peak_kib, rss_kib) = operator.memory_kib().unwrap_or((0, 0));
            drop(operator);
            json!({
                "namespaces": n,
                "rounds": rounds_out.iter().map(|(b, s)| json!({"baseline_seconds": b, "full_sync_seconds": s, "ratio": s / b})).collect::<Vec<_>>(),
                "baseline_seconds": baseline,
                "full_sync_seconds": full_sync,
                "full_sync_vs_baseline": median_ratio,
                "new_namespace_p50_ms": percentile(&latencies, 0.5).as_secs_f64() * 1e3,
                "new_namespace_p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
                "new_namespace_samples": latencies.len(),
                "idle_seconds": idle.as_secs(),
                "idle_writes": idle_writes.len(),
                "idle_lease_renewals": renewals.len(),
                "operator_writes_whole_run": run_writes,
                "idle_write_examples": idle_writes.iter().take(5).collect::<Vec<_>>(),
                "operator_peak_rss_mib": peak_kib as f64 / 1024.0,
                "operator_rss_mib": rss_kib as f64 / 1024.0,
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("regcred controller benchmark ({} namespaces, write concurrency {CONCURRENCY})", report["namespaces"]);
    row("figure", "measured", "target");
    for (i, r) in report["rounds"].as_array().into_iter().flatten().enumerate() {
        let g = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let round =
            format!("round {i}: baseline {:.2}s, full sync {:.2}s", g("baseline_seconds"), g("full_sync_seconds"));
        row(&round, &format!("{:.2}x", g("ratio")), "");
    }
    row("raw baseline: create N Secrets directly", &format!("{:.2}s", f("baseline_seconds")), "");
    row("profile applied: every Secret in place", &format!("{:.2}s", f("full_sync_seconds")), "");
    row("full sync / baseline (median round)", &format!("{:.2}x", f("full_sync_vs_baseline")), "<= 1.2x");
    row("new namespace -> Secret, p50", &format!("{:.1}ms", f("new_namespace_p50_ms")), "");
    row("new namespace -> Secret, p99", &format!("{:.1}ms", f("new_namespace_p99_ms")), "<= 200ms");
    let idle = format!("operator writes during {}s idle", report["idle_seconds"]);
    row(&idle, &report["idle_writes"].to_string(), "0");
    row("  and Lease renewals (leader election)", &report["idle_lease_renewals"].to_string(), "");
    row("operator writes over the whole run (audit log)", &report["operator_writes_whole_run"].to_string(), "");
    row("operator peak RSS", &format!("{:.1}MiB", f("operator_peak_rss_mib")), "<= 40MiB");
    row("operator RSS at the end", &format!("{:.1}MiB", f("operator_rss_mib")), "");
    common::write_report("controller", &report);
}
