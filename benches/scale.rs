//! `make bench`: regcred at the scale of a large multi-tenant cluster, on the real local control plane. Prints a
//! table and writes `.local/bench/scale.json`. Nothing here asserts a target: the figures are read, not tested.
//!
//! The cluster: SCALE_NAMESPACES namespaces (default 10,000), each in one of the teams, and SCALE_PROFILES
//! profiles (default 20). SCALE_WIDE of them (default 2: the company registry and a Docker Hub mirror, say) select
//! every namespace; each of the others selects one team's namespaces (the namespaces are spread evenly over as
//! many teams). With the defaults every namespace holds 3 Secrets: 30,000 in all. SCALE_WIDE=20 is the worst case,
//! every profile in every namespace (200,000 Secrets).
//!
//! 1. Raw baseline: the same Secrets (same size, labels, ownerReference) created directly by the operator's own
//!    ServiceAccount with as many writes in flight as regcred can have (its --write-concurrency, 128).
//! 2. Full sync: the operator already running and its caches warm, all profiles applied at once.
//!
//! Both clocks stop the same way: when a watch on the run's Secrets has shown the last one.
//! 3. Steady state: SCALE_IDLE_SECONDS (default 60) with nothing changing: the operator's writes (audit log; its
//!    leader-election Lease renewals are counted apart), CPU and RSS. Peak RSS is the kernel's high-water mark over the whole run (VmHWM).
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::row;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use regcred::api::RegistryProfile;
use serde_json::json;
use support::{Operator, TestEnv, wait_for};

/// Writes in flight (regcred's default --write-concurrency, shared by all its reconciles).
const WRITE_CONCURRENCY: usize = 128;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Starts watching the Secrets labelled `selector` and resolves to the instants the watch had shown each tenth of
/// `expected` distinct (namespace, `key` label) pairs whose label value starts with `prefix`, the last being when
/// it had shown them all: the same end-of-run signal for the baseline and for regcred, each paying for one watch.
fn all_seen(
    client: kube::Client,
    selector: &str,
    key: &'static str,
    prefix: String,
    expected: usize,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    let cfg = watcher::Config::default().labels(selector);
    let mut stream = Box::pin(watcher::watcher(Api::<Secret>::all(client), cfg).applied_objects());
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut tenths = Vec::with_capacity(10);
        while let Ok(Some(s)) = stream.try_next().await {
            let value = s.labels().get(key).cloned().unwrap_or_default();
            if value.starts_with(&prefix) && seen.insert((s.namespace().unwrap_or_default(), value)) {
                if seen.len() * 10 >= expected * (tenths.len() + 1) {
                    tenths.push(Instant::now());
                }
                if seen.len() == expected {
                    return tenths;
                }
            }
        }
        panic!("the Secret watch ended");
    })
}

/// When each tenth of a run was in place, in seconds from its start: where a run loses time (a slow start, a
/// long tail) shows in how these compare between the baseline and the sync.
fn progress(start: Instant, tenths: &[Instant]) -> Vec<f64> {
    tenths.iter().map(|t| (t.duration_since(start).as_secs_f64() * 10.0).round() / 10.0).collect()
}

/// Sums the operator's resident memory now, in MiB.
fn rss_mib(operator: &Operator) -> (f64, f64) {
    let (peak, now) = operator.memory_kib().unwrap_or((0, 0));
    (peak as f64 / 1024.0, now as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let n = env_or("SCALE_NAMESPACES", 10_000) as usize;
    let profiles_n = env_or("SCALE_PROFILES", 20).max(1) as usize;
    let wide = (env_or("SCALE_WIDE", 2) as usize).min(profiles_n);
    let teams = (profiles_n - wide).max(1);
    let idle = Duration::from_secs(env_or("SCALE_IDLE_SECONDS", 60));
    let env = TestEnv::new("scale").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let client = env.client.clone();
            let support::BenchOperator { namespace: op_ns, kubeconfig, client: sa_client, user } =
                support::bench_operator(&env).await;

            eprintln!("scale: creating {n} namespaces in {teams} teams");
            let started = Instant::now();
            let namespaces: Vec<(String, usize)> = futures::stream::iter(0..n)
                .map(|i| {
                    let env = env.clone();
                    async move {
                        let team = i % teams;
                        let ns = env.namespace_nowait(&format!("n{i:05}"), &[("team", &format!("t{team:02}"))]).await;
                        (ns, team)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            eprintln!("scale: {n} namespaces created in {:.1}s", started.elapsed().as_secs_f64());

            // The profiles: `wide` select every namespace of the run, the others one team each.
            let selector = |k: usize| {
                if k < wide {
                    json!({"matchLabels": {"regcred-test": env.id}})
                } else {
                    json!({"matchLabels": {"regcred-test": env.id, "team": format!("t{:02}", k - wide)}})
                }
            };
            let selected_by = |k: usize| -> Vec<&str> {
                namespaces.iter().filter(|(_, team)| k < wide || *team == k - wide).map(|(ns, _)| ns.as_str()).collect()
            };
            let expected: usize = (0..profiles_n).map(|k| selected_by(k).len()).sum();

            let operator = Operator::start(&kubeconfig, &op_ns, &env.id, &["--log-level", "info"]);
            let profiles = Api::<RegistryProfile>::all(client.clone());
            let profile_of = |name: &str, selector: serde_json::Value, secret_name: &str| -> RegistryProfile {
                env.cleanup::<RegistryProfile>(&format!("{}-{name}", env.id));
                serde_json::from_value(json!({
                    "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                    "metadata": {"name": format!("{}-{name}", env.id), "labels": {"regcred-test": env.id}},
                    "spec": {"server": format!("{name}.registry.example.com"),
                             "credentials": {"secretRef": {"name": "creds"}},
                             "namespaces": {"selector": selector}, "secretName": secret_name},
                }))
                .unwrap()
            };
            // Warm-up: a profile selecting nothing proves the operator's caches hold the 10,000 namespaces.
            let warm = support::apply(
                &profiles,
                &profile_of("warm", json!({"matchLabels": {"regcred-bench": "none"}}), "warm"),
            )
            .await;
            wait_for("the warm-up profile", Duration::from_secs(300), || async {
                profiles.get(&warm.name_any()).await.ok()?.status?.sync_summary.filter(|s| s == "0/0")
            })
            .await;
            let (peak_before, rss_before) = rss_mib(&operator);
            eprintln!(
                "scale: operator warm, RSS {rss_before:.1} MiB (peak {peak_before:.1} MiB; {})",
                operator.memory_detail().unwrap_or_default()
            );

            // 1. The raw baseline.
            let payload = regcred::credentials::render("registry.example.com", "bench", "pw").0.expose().to_vec();
            let owner = OwnerReference {
                api_version: "regcred.dev/v1alpha1".into(),
                kind: "RegistryProfile".into(),
                name: warm.name_any(),
                uid: warm.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: None,
            };
            let writes: Vec<(String, usize)> =
                (0..profiles_n).flat_map(|k| selected_by(k).into_iter().map(move |ns| (ns.to_owned(), k))).collect();
            eprintln!("scale: baseline, {} Secrets", writes.len());
            let baseline_done = all_seen(
                client.clone(),
                "app.kubernetes.io/managed-by=rawbase",
                "regcred.dev/baseline",
                format!("{}-", env.id),
                writes.len(),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let start = Instant::now();
            futures::stream::iter(writes)
                .map(|(ns, k)| {
                    let api = Api::<Secret>::namespaced(sa_client.clone(), &ns);
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(format!("baseline-{k:02}")),
                            labels: Some(BTreeMap::from([
                                ("app.kubernetes.io/managed-by".into(), "rawbase".into()),
                                ("regcred.dev/baseline".into(), format!("{}-p{k:02}", env.id)),
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
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let baseline_at = baseline_done.await.unwrap();
            let baseline = baseline_at[baseline_at.len() - 1].duration_since(start);
            let baseline_tenths = progress(start, &baseline_at);
            eprintln!("scale: baseline {:.1}s", baseline.as_secs_f64());

            // 2. The full sync, seen through a watch on every managed Secret of the run.
            let all_in_place = all_seen(
                client.clone(),
                "app.kubernetes.io/managed-by=regcred",
                "regcred.dev/profile",
                format!("{}-", env.id),
                expected,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            eprintln!("scale: applying {profiles_n} profiles, {expected} Secrets");
            let sync_from = jiff::Timestamp::now();
            let sync_cpu_from = operator.cpu_seconds().unwrap_or(0.0);
            let start = Instant::now();
            let applied: Vec<RegistryProfile> = futures::stream::iter(0..profiles_n)
                .map(|k| {
                    let p = profile_of(&format!("p{k:02}"), selector(k), &format!("pull-{k:02}"));
                    let profiles = profiles.clone();
                    async move { support::apply(&profiles, &p).await }
                })
                .buffer_unordered(profiles_n)
                .collect()
                .await;
            let sync_at = all_in_place.await.unwrap();
            let full_sync = sync_at[sync_at.len() - 1].duration_since(start);
            let sync_tenths = progress(start, &sync_at);
            eprintln!("scale: each tenth in place at (s): baseline {baseline_tenths:?}, sync {sync_tenths:?}");
            // Up to a tick of /proc accounting late: the operator has little left to do once every Secret is in.
            let sync_cpu = operator.cpu_seconds().unwrap_or(0.0) - sync_cpu_from;
            eprintln!("scale: full sync {:.1}s, operator CPU {sync_cpu:.1}s", full_sync.as_secs_f64());
            for p in &applied {
                let k: usize = p.name_any().rsplit('p').next().unwrap().parse().unwrap();
                let want = selected_by(k).len();
                wait_for(&format!("{} Ready at {want}/{want}", p.name_any()), Duration::from_secs(600), || async {
                    let st = profiles.get(&p.name_any()).await.ok()?.status?;
                    let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                    (ready && st.sync_summary == Some(format!("{want}/{want}"))).then_some(())
                })
                .await;
            }
            let (peak_sync, rss_sync) = rss_mib(&operator);
            eprintln!(
                "scale: after the sync, RSS {rss_sync:.1} MiB (peak {peak_sync:.1} MiB; {})",
                operator.memory_detail().unwrap_or_default()
            );
            // The same audit filter that counts idle writes, over the sync: it must see the operator's writes.
            let sync_writes = common::audited_writes(&user, sync_from, jiff::Timestamp::now()).len();

            // 3. Steady state.
            eprintln!("scale: idle for {idle:?}");
            let cpu_from = operator.cpu_seconds().unwrap_or(0.0);
            let reconciles_from = operator.metric("regcred_reconciles_total").await;
            let from = jiff::Timestamp::now();
            tokio::time::sleep(idle).await;
            let to = jiff::Timestamp::now();
            let cpu = operator.cpu_seconds().unwrap_or(0.0) - cpu_from;
            let idle_reconciles = operator.metric("regcred_reconciles_total").await - reconciles_from;
            // Leader election renews its Lease every few seconds: every elected operator does, and it is counted
            // apart from the writes regcred's own work makes.
            let (renewals, idle_writes): (Vec<String>, Vec<String>) =
                common::audited_writes(&user, from, to).into_iter().partition(|w| w.contains("/leases/"));
            let (peak, steady) = rss_mib(&operator);
            eprintln!(
                "scale: end of idle, RSS {steady:.1} MiB (peak {peak:.1} MiB; {})",
                operator.memory_detail().unwrap_or_default()
            );
            for line in operator.logs().lines().filter(|l| l.contains("freed memory returned")) {
                eprintln!("scale: operator: {line}");
            }
            drop(operator);
            json!({
                "namespaces": n,
                "profiles": profiles_n,
                "profiles_selecting_every_namespace": wide,
                "secrets": expected,
                "baseline_concurrency": WRITE_CONCURRENCY,
                "baseline_seconds": baseline.as_secs_f64(),
                "full_sync_seconds": full_sync.as_secs_f64(),
                "full_sync_vs_baseline": full_sync.as_secs_f64() / baseline.as_secs_f64(),
                "full_sync_operator_cpu_seconds": sync_cpu,
                "baseline_tenths_seconds": baseline_tenths,
                "full_sync_tenths_seconds": sync_tenths,
                "rss_warm_mib": rss_before,
                "rss_after_sync_mib": rss_sync,
                "peak_rss_after_sync_mib": peak_sync,
                "peak_rss_mib": peak,
                "steady_rss_mib": steady,
                "sync_writes": sync_writes,
                "idle_seconds": idle.as_secs(),
                "idle_cpu_seconds": cpu,
                "idle_reconciles": idle_reconciles,
                "idle_cpu_percent_of_a_core": cpu / idle.as_secs_f64() * 100.0,
                "idle_writes": idle_writes.len(),
                "idle_lease_renewals": renewals.len(),
                "idle_write_examples": idle_writes.iter().take(5).collect::<Vec<_>>(),
            })
        })
        .await;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "regcred at scale: {} namespaces, {} profiles ({} selecting every namespace, the others one team each), {} Secrets",
        report["namespaces"], report["profiles"], report["profiles_selecting_every_namespace"], report["secrets"]
    );
    row("figure", "measured", "target");
    row("raw baseline: create the Secrets directly", &format!("{:.1}s", f("baseline_seconds")), "");
    row("all profiles applied: every Secret in place", &format!("{:.1}s", f("full_sync_seconds")), "");
    row("full sync / baseline", &format!("{:.2}x", f("full_sync_vs_baseline")), "<= 1.2x");
    row("operator CPU during the full sync", &format!("{:.1}s", f("full_sync_operator_cpu_seconds")), "");
    row("operator RSS, caches warm before the sync", &format!("{:.1}MiB", f("rss_warm_mib")), "");
    row("operator peak RSS (whole run)", &format!("{:.1}MiB", f("peak_rss_mib")), "<= 48MiB");
    row("operator steady RSS (end of idle)", &format!("{:.1}MiB", f("steady_rss_mib")), "<= 32MiB");
    row("operator writes during the sync (audit log)", &report["sync_writes"].to_string(), "");
    let idle = format!("operator CPU during {}s idle", report["idle_seconds"]);
    row(&idle, &format!("{:.2}%", f("idle_cpu_percent_of_a_core")), "");
    let idle = format!("reconciles during {}s idle", report["idle_seconds"]);
    row(&idle, &report["idle_reconciles"].to_string(), "");
    let idle = format!("operator writes during {}s idle", report["idle_seconds"]);
    row(&idle, &report["idle_writes"].to_string(), "0");
    let idle = format!("  and Lease renewals (leader election) in {}s", report["idle_seconds"]);
    row(&idle, &report["idle_lease_renewals"].to_string(), "");
    common::write_report("scale", &report);
}
