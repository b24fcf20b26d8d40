//! `make bench`: regcred at the scale of a large multi-tenant cluster, on the real local control plane, beside a
//! raw-client baseline measured in the same run. Prints a table and writes `.local/bench/scale-<namespaces>.json`.
//! Nothing here asserts a target: the figures are read, not tested.
//!
//! The cluster: SCALE_NAMESPACES namespaces (default 10,000), each in one of the teams, and SCALE_PROFILES
//! profiles (default 2). SCALE_WIDE of them (default 2: the company registry and a Docker Hub mirror, say) select
//! every namespace; each of the others selects one team's namespaces (the namespaces are spread evenly over as
//! many teams). With the defaults every namespace holds 2 Secrets.
//!
//! 0. The namespaces are created, and the run waits until the controller-manager has given each its `default`
//!    ServiceAccount and `kube-root-ca.crt` ConfigMap (regcred holds the ServiceAccounts; until they are all there
//!    the controller-manager's writes load the apiserver). regcred is started and its caches proven warm.
//! 1. Raw baseline: the same Secrets (same size, labels, ownerReference) created by a hand-written kube-rs program
//!    (`common/rawclient.rs`): a process of its own acting as regcred's ServiceAccount, with regcred's logging and
//!    as many writes in flight as regcred can have (its --write-concurrency, 128). It lists the namespaces first;
//!    its clock starts when it is told to write.
//! 2. Full sync: the operator already running and its caches warm, all profiles applied at once.
//!
//! Both clocks stop the same way: when a watch on the run's Secrets has shown the last one.
//! 3. Steady state: SCALE_IDLE_SECONDS (default 30) with nothing changing: the operator's writes (audit log; its
//!    leader-election Lease renewals are counted apart), CPU and RSS. Peak RSS is the kernel's high-water mark over
//!    the whole run (VmHWM).
//!
//! `make bench` runs it at each size of SCALE_SIZES (1,000, 10,000, 50,000 namespaces), each on a fresh cluster
//! (SCALE_THROWAWAY_CLUSTER=1: the namespaces are left for `make cluster-down`), then once more with
//! SCALE_CURVE=<the sizes>, which starts nothing and prints the curve from the sizes' figures.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/rawclient.rs"]
mod rawclient;
use common::row;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
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

/// The operator's peak and current resident memory, in MiB.
fn rss_mib(operator: &Operator) -> (f64, f64) {
    let (peak, now) = operator.memory_kib().unwrap_or((0, 0));
    (peak as f64 / 1024.0, now as f64 / 1024.0)
}

/// How many objects named `name` of kind `K` live in namespaces whose name starts with `prefix` (metadata only, in
/// pages).
async fn count_named<K>(client: &kube::Client, name: &str, prefix: &str) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let mut params = ListParams::default().fields(&format!("metadata.name={name}")).limit(5000);
    let mut count = 0;
    loop {
        let Ok(page) = api.list_metadata(&params).await else { return count };
        count += page.items.iter().filter(|o| o.namespace().is_some_and(|ns| ns.starts_with(prefix))).count();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return count,
        }
    }
}

/// Memory of the control plane's processes (etcd, kube-apiserver, kube-controller-manager), RSS in MiB, from the
/// local cluster's pid file.
fn control_plane_mib() -> BTreeMap<String, f64> {
    let local = std::env::var("REGCRED_LOCAL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| support::repo_root().join(".local"));
    let pids = std::fs::read_to_string(local.join("cluster/pids")).unwrap_or_default();
    pids.lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            let (_, rss) = common::memory_kib(pid.trim().parse().ok()?)?;
            Some((name.to_owned(), (rss as f64 / 1024.0 * 10.0).round() / 10.0))
        })
        .collect()
}

fn main() {
    rawclient::run_if_asked();
    if let Ok(sizes) = std::env::var("SCALE_CURVE") {
        curve(&sizes);
        return;
    }
    bench();
}

#[tokio::main]
async fn bench() {
    let n = env_or("SCALE_NAMESPACES", 10_000) as usize;
    let profiles_n = env_or("SCALE_PROFILES", 2).max(1) as usize;
    let wide = (env_or("SCALE_WIDE", 2) as usize).min(profiles_n);
    let teams = (profiles_n - wide).max(1);
    let idle = Duration::from_secs(env_or("SCALE_IDLE_SECONDS", 30));
    let throwaway = std::env::var("SCALE_THROWAWAY_CLUSTER").as_deref() == Ok("1");
    // The waits grow with the size: a list of 50,000 namespaces and their ServiceAccounts takes a while.
    let patience = Duration::from_secs(300 + n as u64 / 50);
    let env = TestEnv::new("scale").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let client = env.client.clone();
            let support::BenchOperator { namespace: op_ns, kubeconfig, client: _, user } =
                support::bench_operator(&env).await;

            eprintln!("scale: creating {n} namespaces in {teams} teams");
            let started = Instant::now();
            let namespaces: Vec<(String, usize)> = futures::stream::iter(0..n)
                .map(|i| {
                    let env = env.clone();
                    let client = client.clone();
                    async move {
                        let team = i % teams;
                        let name = format!("{}-n{i:05}", env.id);
                        let labels = BTreeMap::from([
                            ("regcred-test".to_owned(), env.id.clone()),
                            ("team".to_owned(), format!("t{team:02}")),
                        ]);
                        let ns = Namespace {
                            metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels), ..Default::default() },
                            ..Default::default()
                        };
                        Api::<Namespace>::all(client).create(&PostParams::default(), &ns).await.unwrap();
                        if !throwaway {
                            env.cleanup_namespace(&name);
                        }
                        (name, team)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            let created_in = started.elapsed();
            eprintln!("scale: {n} namespaces created in {:.1}s", created_in.as_secs_f64());
            // The controller-manager gives each namespace its ServiceAccount and CA ConfigMap at its own pace.
            let prefix = format!("{}-n", env.id);
            wait_for("every namespace's ServiceAccount and CA ConfigMap", patience, || async {
                let sas = count_named::<ServiceAccount>(&client, "default", &prefix).await;
                let cms = count_named::<ConfigMap>(&client, "kube-root-ca.crt", &prefix).await;
                eprintln!("scale: {sas} ServiceAccounts, {cms} ConfigMaps of {n}");
                if sas < n || cms < n {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                (sas >= n && cms >= n).then_some(())
            })
            .await;
            let settled_in = started.elapsed();
            eprintln!("scale: namespaces settled in {:.1}s", settled_in.as_secs_f64());

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

            let envs: Vec<(&str, String)> = common::LOG_ENV.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            let operator = Operator::start_env(&kubeconfig, &op_ns, &env.id, &[], &envs);
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
            // Warm-up: a profile selecting nothing proves the operator's caches hold the namespaces.
            let warm = support::apply(
                &profiles,
                &profile_of("warm", json!({"matchLabels": {"regcred-bench": "none"}}), "warm"),
            )
            .await;
            wait_for("the warm-up profile", patience, || async {
                profiles.get(&warm.name_any()).await.ok()?.status?.sync_summary.filter(|s| s == "0/0")
            })
            .await;
            let (peak_before, rss_before) = rss_mib(&operator);
            eprintln!(
                "scale: operator warm, RSS {rss_before:.1} MiB (peak {peak_before:.1} MiB; {})",
                operator.memory_detail().unwrap_or_default()
            );

            // 1. The raw baseline.
            let owner = OwnerReference {
                api_version: "regcred.dev/v1alpha1".into(),
                kind: "RegistryProfile".into(),
                name: warm.name_any(),
                uid: warm.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: None,
            };
            // Only the wide profiles' Secrets come from a list: team profiles are for SCALE_PROFILES > SCALE_WIDE,
            // whose baseline writes what each team's namespaces get.
            let job = |secrets: Vec<rawclient::Labelled>, selector: String| rawclient::Job {
                kubeconfig: kubeconfig.clone(),
                selector,
                secrets,
                owner: owner.clone(),
                payload: ByteString(
                    regcred::credentials::render("registry.example.com", "bench", "pw").0.expose().to_vec(),
                ),
                concurrency: WRITE_CONCURRENCY,
            };
            let labels_of = |k: usize| {
                BTreeMap::from([
                    ("app.kubernetes.io/managed-by".to_owned(), "rawbase".to_owned()),
                    ("regcred.dev/baseline".to_owned(), format!("{}-p{k:02}", env.id)),
                ])
            };
            // regcred's own namespace carries the run's label too, and regcred never writes there.
            let not_regcreds = format!("kubernetes.io/metadata.name!={op_ns}");
            let mut jobs = vec![job(
                (0..wide).map(|k| (format!("baseline-{k:02}"), labels_of(k))).collect(),
                format!("regcred-test={},{not_regcreds}", env.id),
            )];
            for k in wide..profiles_n {
                jobs.push(job(
                    vec![(format!("baseline-{k:02}"), labels_of(k))],
                    format!("regcred-test={},team=t{:02},{not_regcreds}", env.id, k - wide),
                ));
            }
            eprintln!("scale: baseline, {expected} Secrets");
            let mut clients = Vec::new();
            let mut listed = 0;
            for job in &jobs {
                let (raw, count) = rawclient::RawClient::start(job).await;
                listed += count * job.secrets.len();
                clients.push(raw);
            }
            assert_eq!(listed, expected, "the raw client found other namespaces than the profiles select");
            let baseline_done = all_seen(
                client.clone(),
                "app.kubernetes.io/managed-by=rawbase",
                "regcred.dev/baseline",
                format!("{}-", env.id),
                expected,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let baseline_from = jiff::Timestamp::now();
            let start = Instant::now();
            for raw in &mut clients {
                raw.go().await;
            }
            let done = futures::future::join_all(clients.into_iter().map(rawclient::RawClient::done)).await;
            let baseline_at = baseline_done.await.unwrap();
            let baseline = baseline_at[baseline_at.len() - 1].duration_since(start);
            let baseline_tenths = progress(start, &baseline_at);
            // The same identity as regcred's: its Lease renewals meanwhile are not the raw client's.
            let baseline_writes = common::audited_requests(&user, baseline_from, jiff::Timestamp::now())
                .iter()
                .filter(|w| w.contains("/secrets"))
                .count();
            let baseline_errors: u64 = done.iter().map(|d| d.errors).sum();
            let baseline_peak_mib = done.iter().map(|d| d.peak_kib).max().unwrap_or(0) as f64 / 1024.0;
            eprintln!(
                "scale: baseline {:.1}s, {baseline_writes} writes ({baseline_errors} failed), peak RSS {baseline_peak_mib:.1} MiB",
                baseline.as_secs_f64()
            );

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
            let operator_cpu = || operator.pid().and_then(common::cpu_seconds).unwrap_or(0.0);
            let sync_cpu_from = operator_cpu();
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
            let sync_cpu = operator_cpu() - sync_cpu_from;
            eprintln!("scale: full sync {:.1}s, operator CPU {sync_cpu:.1}s", full_sync.as_secs_f64());
            for p in &applied {
                let k: usize = p.name_any().rsplit('p').next().unwrap().parse().unwrap();
                let want = selected_by(k).len();
                wait_for(&format!("{} Ready at {want}/{want}", p.name_any()), patience, || async {
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
            let sync_audited = common::audited_requests(&user, sync_from, jiff::Timestamp::now());
            let sync_secret_writes = sync_audited.iter().filter(|w| w.contains("/secrets")).count();

            // 3. Steady state.
            eprintln!("scale: idle for {idle:?}");
            let cpu_from = operator_cpu();
            let reconciles_from = operator.metric("regcred_reconciles_total").await;
            let from = jiff::Timestamp::now();
            tokio::time::sleep(idle).await;
            let to = jiff::Timestamp::now();
            let cpu = operator_cpu() - cpu_from;
            let idle_reconciles = operator.metric("regcred_reconciles_total").await - reconciles_from;
            // Leader election renews its Lease every few seconds: every elected operator does, and it is counted
            // apart from the writes regcred's own work makes.
            let (renewals, idle_writes): (Vec<String>, Vec<String>) =
                common::audited_requests(&user, from, to).into_iter().partition(|w| w.contains("/leases/"));
            let (peak, steady) = rss_mib(&operator);
            eprintln!(
                "scale: end of idle, RSS {steady:.1} MiB (peak {peak:.1} MiB; {})",
                operator.memory_detail().unwrap_or_default()
            );
            for line in operator.logs().lines().filter(|l| l.contains("freed memory returned")) {
                eprintln!("scale: operator: {line}");
            }
            let control_plane = control_plane_mib();
            eprintln!("scale: control plane RSS (MiB): {control_plane:?}");
            drop(operator);
            json!({
                "namespaces": n,
                "profiles": profiles_n,
                "profiles_selecting_every_namespace": wide,
                "secrets": expected,
                "namespaces_created_seconds": created_in.as_secs_f64(),
                "namespaces_settled_seconds": settled_in.as_secs_f64(),
                "log": common::LOG_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "baseline_concurrency": WRITE_CONCURRENCY,
                "baseline_seconds": baseline.as_secs_f64(),
                "baseline_writes": baseline_writes,
                "baseline_errors": baseline_errors,
                "baseline_peak_rss_mib": baseline_peak_mib,
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
                "sync_writes": sync_audited.len(),
                "sync_secret_writes": sync_secret_writes,
                "idle_seconds": idle.as_secs(),
                "idle_cpu_seconds": cpu,
                "idle_reconciles": idle_reconciles,
                "idle_cpu_percent_of_a_core": cpu / idle.as_secs_f64() * 100.0,
                "idle_writes": idle_writes.len(),
                "idle_lease_renewals": renewals.len(),
                "idle_write_examples": idle_writes.iter().take(5).collect::<Vec<_>>(),
                "control_plane_rss_mib": control_plane,
            })
        })
        .await;
    print_size(&report);
    common::write_report(&format!("scale-{n}"), &report);
}

/// The table of one size.
fn print_size(report: &serde_json::Value) {
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "regcred at scale: {} namespaces, {} profiles ({} selecting every namespace, the others one team each), {} Secrets",
        report["namespaces"], report["profiles"], report["profiles_selecting_every_namespace"], report["secrets"]
    );
    row("figure", "measured", "target");
    row("raw client: create the Secrets (its own process)", &format!("{:.1}s", f("baseline_seconds")), "");
    row("all profiles applied: every Secret in place", &format!("{:.1}s", f("full_sync_seconds")), "");
    row("full sync / baseline", &format!("{:.2}x", f("full_sync_vs_baseline")), "<= 1.10x");
    row(
        "Secret writes: raw client / regcred (audit log)",
        &format!("{} / {}", report["baseline_writes"], report["sync_secret_writes"]),
        "",
    );
    row("operator CPU during the full sync", &format!("{:.1}s", f("full_sync_operator_cpu_seconds")), "");
    row("operator RSS, caches warm before the sync", &format!("{:.1}MiB", f("rss_warm_mib")), "");
    row("operator peak RSS (whole run)", &format!("{:.1}MiB", f("peak_rss_mib")), "");
    row("operator steady RSS (end of idle)", &format!("{:.1}MiB", f("steady_rss_mib")), "");
    row("raw client peak RSS", &format!("{:.1}MiB", f("baseline_peak_rss_mib")), "");
    let idle = format!("operator CPU during {}s idle", report["idle_seconds"]);
    row(&idle, &format!("{:.2}%", f("idle_cpu_percent_of_a_core")), "");
    let idle = format!("reconciles during {}s idle", report["idle_seconds"]);
    row(&idle, &report["idle_reconciles"].to_string(), "");
    let idle = format!("operator writes during {}s idle", report["idle_seconds"]);
    row(&idle, &report["idle_writes"].to_string(), "0");
    let idle = format!("  and Lease renewals (leader election) in {}s", report["idle_seconds"]);
    row(&idle, &report["idle_lease_renewals"].to_string(), "");
}

/// SCALE_CURVE=<sizes>: the curve from each size's figures (`.local/bench/scale-<size>.json`), with the growth per
/// 10,000 namespaces between the two largest sizes. Starts nothing.
fn curve(sizes: &str) {
    let dir = support::repo_root().join(".local/bench");
    let reports: Vec<serde_json::Value> = sizes
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::fs::read(dir.join(format!("scale-{s}.json"))).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("regcred's scale curve: two profiles selecting every namespace, each size on a fresh cluster");
    println!(
        "{:>10} {:>8} {:>9} {:>9} {:>7} {:>15} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "namespaces",
        "Secrets",
        "raw (s)",
        "sync (s)",
        "ratio",
        "writes raw/reg",
        "warm",
        "peak",
        "steady",
        "raw pk",
        "sync CPU"
    );
    for r in &reports {
        println!(
            "{:>10} {:>8} {:>9.1} {:>9.1} {:>6.2}x {:>15} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}s",
            r["namespaces"].to_string(),
            r["secrets"].to_string(),
            f(r, "baseline_seconds"),
            f(r, "full_sync_seconds"),
            f(r, "full_sync_vs_baseline"),
            format!("{}/{}", r["baseline_writes"], r["sync_secret_writes"]),
            f(r, "rss_warm_mib"),
            f(r, "peak_rss_mib"),
            f(r, "steady_rss_mib"),
            f(r, "baseline_peak_rss_mib"),
            f(r, "full_sync_operator_cpu_seconds"),
        );
    }
    println!("(RSS in MiB: regcred's with caches warm, peak over the run, steady after idling; the raw client's peak)");
    println!("targets: sync <= 1.10x the raw client at every size; peak RSS <= 64 MiB at 50,000 namespaces");
    if let [.., small, large] = reports.as_slice() {
        let per = (f(large, "namespaces") - f(small, "namespaces")) / 10_000.0;
        let growth = |k: &str| (f(large, k) - f(small, k)) / per;
        println!(
            "growth per 10,000 namespaces ({} -> {}): warm {:.1} MiB, peak {:.1} MiB, steady {:.1} MiB, sync {:.1}s (raw client {:.1}s)",
            small["namespaces"],
            large["namespaces"],
            growth("rss_warm_mib"),
            growth("peak_rss_mib"),
            growth("steady_rss_mib"),
            growth("full_sync_seconds"),
            growth("baseline_seconds"),
        );
    }
    let missing = sizes.split([',', ' ']).filter(|s| !s.is_empty()).count() - reports.len();
    if missing > 0 {
        println!("{missing} size(s) have no figures: see that run's output above");
    }
    common::write_report("scale", &json!({"sizes": reports}));
}
