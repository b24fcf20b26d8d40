//! `make bench`: what one new namespace costs, and how many writes regcred makes per Secret, at 1,000 and at
//! 10,000 namespaces (NAMESPACES_SMALL, NAMESPACES_LARGE), on the real local control plane. Prints a table and
//! writes `.local/bench/namespaces.json`; nothing here asserts a target.
//!
//! Two profiles, run by an operator with exactly its chart's permissions: `wide` selects every namespace of the
//! run, `team` half of them. At each size:
//! - new namespace: NAMESPACE_SAMPLES namespaces created one at a time; each is timed from just before its create
//!   request to the moment a watch shows the wide profile's Secret in it. The floor, measured in the same run
//!   and interleaved: a namespace created the same way, into which the benchmark itself creates a Secret as soon
//!   as the namespace's create returns, timed to the moment the same kind of watch shows it.
//! - writes per Secret: the operator's Secret writes (audit log) divided by the Secrets, over the sync that brings
//!   the new namespaces their Secrets, and over a rotation of the source credential (every Secret rewritten).
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use regcred::api::RegistryProfile;
use serde_json::json;
use support::{Operator, TestEnv, wait_for};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// When a watch first showed a Secret named `name` in each namespace.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl Arrivals {
    fn watch(client: Client, name: &str) -> Self {
        let arrivals = Self::default();
        let seen = arrivals.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = Box::pin(watcher::watcher(Api::<Secret>::all(client), cfg).applied_objects());
        tokio::spawn(async move {
            while let Ok(Some(s)) = stream.try_next().await {
                seen.0.lock().unwrap().entry(s.namespace().unwrap_or_default()).or_insert_with(Instant::now);
            }
        });
        arrivals
    }

    async fn wait(&self, namespace: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.0.lock().unwrap().get(namespace) {
                return *at;
            }
            assert!(Instant::now() < deadline, "no Secret in {namespace} after 60 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// The operator's Secret writes (create, patch, update) in the audit log within [from, now].
fn secret_writes(user: &str, from: jiff::Timestamp) -> usize {
    common::audited_writes(user, from, jiff::Timestamp::now())
        .iter()
        .filter(|w| w.contains("/secrets") && !w.starts_with("delete") && !w.contains("regcred-token-"))
        .count()
}

/// Waits until the writes counted since `from` reach `at_least`, then until they stop growing for 3 s.
async fn settled_writes(user: &str, from: jiff::Timestamp, at_least: usize) -> usize {
    wait_for("the operator's writes", Duration::from_secs(900), || async {
        (secret_writes(user, from) >= at_least).then_some(())
    })
    .await;
    let mut last = secret_writes(user, from);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = secret_writes(user, from);
        if now == last {
            return now;
        }
        last = now;
    }
}

struct Figures {
    regcred: Vec<Duration>,
    floor: Vec<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `samples` new namespaces, one at a time, each timed to the wide profile's Secret in it; the floor interleaved
/// (a namespace, then a Secret the benchmark creates in it itself).
async fn sample(env: &TestEnv, regcred_seen: &Arrivals, floor_seen: &Arrivals, tag: &str, samples: usize) -> Figures {
    let client = env.client.clone();
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut figures = Figures { regcred: Vec::new(), floor: Vec::new() };
    for k in 0..samples {
        let name = format!("{}-s{tag}-{k:03}", env.id);
        env.cleanup_namespace(&name);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    ("regcred-test".to_owned(), env.id.clone()),
                    ("bench".to_owned(), "wide".to_owned()),
                    ("team".to_owned(), "t1".to_owned()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        let t0 = Instant::now();
        namespaces.create(&PostParams::default(), &ns).await.unwrap();
        figures.regcred.push(regcred_seen.wait(&name).await - t0);

        let floor_name = format!("{}-f{tag}-{k:03}", env.id);
        env.cleanup_namespace(&floor_name);
        let floor_ns = Namespace {
            metadata: ObjectMeta { name: Some(floor_name.clone()), ..Default::default() },
            ..Default::default()
        };
        let secret = Secret {
            metadata: ObjectMeta { name: Some("floor".into()), ..Default::default() },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(".dockerconfigjson".into(), ByteString(b"{\"auths\":{}}".to_vec()))])),
            ..Default::default()
        };
        let t0 = Instant::now();
        namespaces.create(&PostParams::default(), &floor_ns).await.unwrap();
        Api::<Secret>::namespaced(client.clone(), &floor_name).create(&PostParams::default(), &secret).await.unwrap();
        figures.floor.push(floor_seen.wait(&floor_name).await - t0);
    }
    figures.regcred.sort();
    figures.floor.sort();
    figures
}

fn latency_row(figures: &Figures) -> serde_json::Value {
    json!({
        "samples": figures.regcred.len(),
        "new_namespace_p50_ms": ms(percentile(&figures.regcred, 0.5)),
        "new_namespace_p99_ms": ms(percentile(&figures.regcred, 0.99)),
        "new_namespace_max_ms": ms(*figures.regcred.last().unwrap()),
        "floor_p50_ms": ms(percentile(&figures.floor, 0.5)),
        "floor_p99_ms": ms(percentile(&figures.floor, 0.99)),
        "p50_vs_floor": ms(percentile(&figures.regcred, 0.5)) / ms(percentile(&figures.floor, 0.5)),
    })
}

#[tokio::main]
async fn main() {
    let small = env_or("NAMESPACES_SMALL", 1_000) as usize;
    let large = (env_or("NAMESPACES_LARGE", 10_000) as usize).max(small);
    let samples = env_or("NAMESPACE_SAMPLES", 100) as usize;
    let env = TestEnv::new("nsbench").await;
    support::install_crd(&env.client).await;
    let report = env
        .clone()
        .run(|env| async move {
            let client = env.client.clone();
            let support::BenchOperator { namespace: op_ns, kubeconfig, user, .. } = support::bench_operator(&env).await;
            let operator = Operator::start(&kubeconfig, &op_ns, &env.id, &["--log-level", "info"]);
            let profiles = Api::<RegistryProfile>::all(client.clone());
            let profile = |name: &str, selector: serde_json::Value| -> RegistryProfile {
                env.cleanup::<RegistryProfile>(&format!("{}-{name}", env.id));
                serde_json::from_value(json!({
                    "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                    "metadata": {"name": format!("{}-{name}", env.id), "labels": {"regcred-test": env.id}},
                    "spec": {"server": format!("{name}.registry.example.com"),
                             "credentials": {"secretRef": {"name": "creds"}},
                             "namespaces": {"selector": {"matchLabels": selector}}, "secretName": format!("pull-{name}")},
                }))
                .unwrap()
            };
            let wide = support::apply(&profiles, &profile("wide", json!({"regcred-test": env.id, "bench": "wide"}))).await;
            let team = support::apply(
                &profiles,
                &profile("team", json!({"regcred-test": env.id, "bench": "wide", "team": "t0"})),
            )
            .await;
            let ready = |name: String, want: usize| {
                let profiles = profiles.clone();
                async move {
                    wait_for(&format!("{name} Ready at {want}/{want}"), Duration::from_secs(900), || async {
                        let st = profiles.get(&name).await.ok()?.status?;
                        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                        (ready && st.sync_summary == Some(format!("{want}/{want}"))).then_some(())
                    })
                    .await;
                }
            };
            // Secrets the two profiles hold in place, from their status once both are Ready.
            let secrets_in_place = || {
                let (profiles, names) = (profiles.clone(), [wide.name_any(), team.name_any()]);
                async move {
                    let mut total = 0;
                    for name in names {
                        total += wait_for(&format!("{name} Ready"), Duration::from_secs(900), || async {
                            let st = profiles.get(&name).await.ok()?.status?;
                            let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                            let synced = st.synced_namespaces == st.selected_namespaces;
                            (ready && synced).then_some(st.synced_namespaces as usize)
                        })
                        .await;
                    }
                    total
                }
            };
            let regcred_seen = Arrivals::watch(client.clone(), "pull-wide");
            let floor_seen = Arrivals::watch(client.clone(), "floor");
            let mut created = 0usize;
            let mut rows = BTreeMap::new();
            let mut password = 1;
            for size in [small, large] {
                // Grow the run to `size` selected namespaces (the samples of the size before count) and let it sync.
                let before = secrets_in_place().await;
                let grow = size.saturating_sub(created + rows.len() * samples);
                eprintln!("namespaces: growing to {size} (+{grow})");
                let sync_from = jiff::Timestamp::now();
                let start = created;
                futures::stream::iter(start..start + grow)
                    .map(|i| {
                        let env = env.clone();
                        async move {
                            let team = format!("t{}", i % 2);
                            env.namespace_nowait(&format!("n{i:05}"), &[("bench", "wide"), ("team", &team)]).await
                        }
                    })
                    .buffer_unordered(64)
                    .collect::<Vec<_>>()
                    .await;
                created += grow;
                let selected = created + rows.len() * samples;
                ready(wide.name_any(), selected).await;
                let sync_secrets = secrets_in_place().await - before;
                let sync_writes = settled_writes(&user, sync_from, sync_secrets).await;
                eprintln!("namespaces: {size}: synced, {sync_writes} Secret writes for {sync_secrets} new Secrets");

                let figures = sample(&env, &regcred_seen, &floor_seen, &size.to_string(), samples).await;
                ready(wide.name_any(), selected + samples).await;

                // A rotation: every Secret of both profiles rewritten.
                password += 1;
                let rotation_from = jiff::Timestamp::now();
                let rotated = Instant::now();
                let secrets_now = secrets_in_place().await;
                let patch = json!({"stringData": {"password": format!("pw{password}")}});
                Api::<Secret>::namespaced(client.clone(), &op_ns)
                    .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                let rotation_writes = settled_writes(&user, rotation_from, secrets_now).await;
                let rotation_seconds = rotated.elapsed().as_secs_f64() - 3.0;
                eprintln!("namespaces: {size}: rotation, {rotation_writes} Secret writes for {secrets_now} Secrets");

                let mut row = latency_row(&figures);
                row["namespaces"] = json!(selected);
                for (k, v) in [
                    ("sync_secret_writes", json!(sync_writes)),
                    ("sync_new_secrets", json!(sync_secrets)),
                    ("sync_writes_per_secret", json!(sync_writes as f64 / sync_secrets.max(1) as f64)),
                    ("rotation_secret_writes", json!(rotation_writes)),
                    ("rotation_secrets", json!(secrets_now)),
                    ("rotation_writes_per_secret", json!(rotation_writes as f64 / secrets_now as f64)),
                    ("rotation_seconds_upper_bound", json!(rotation_seconds)),
                ] {
                    row[k] = v;
                }
                rows.insert(size, row);
                // The sample namespaces stay: they count in the next size.
            }
            // The same at the largest size with HANGING profiles whose registries accept connections and never
            // answer: their preflights are pending all along, on workers of their own.
            let hanging_n = env_or("HANGING_PROFILES", 8) as usize;
            let (addr, silent) = regcred::fixtures::silent_registry().await;
            for i in 0..hanging_n {
                let mut p = profile(&format!("hang{i}"), json!({"regcred-test": env.id, "bench": "none"}));
                p.spec.server = Some(format!("{addr}/p{i}"));
                p.spec.validation = Some(serde_json::from_value(json!({"images": ["team/app:1"]})).unwrap());
                support::apply(&profiles, &p).await;
            }
            let figures = sample(&env, &regcred_seen, &floor_seen, "hang", samples).await;
            let hanging = latency_row(&figures);
            silent.abort();
            drop(operator);
            json!({ "sizes": rows, "hanging_profiles": hanging_n, "with_hanging_registries": hanging })
        })
        .await;
    println!();
    println!("regcred: one new namespace, and writes per Secret, by the number of namespaces");
    row("figure", "measured", "target");
    for (size, r) in report["sizes"].as_object().unwrap() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!("at {} namespaces (run of {size}):", r["namespaces"]);
        row("  new namespace -> its Secret, p50", &format!("{:.1}ms", f("new_namespace_p50_ms")), "<= 9ms");
        row("  new namespace -> its Secret, p99", &format!("{:.1}ms", f("new_namespace_p99_ms")), "");
        row("  floor (namespace, then a Secret by hand), p50", &format!("{:.1}ms", f("floor_p50_ms")), "");
        row("  floor, p99", &format!("{:.1}ms", f("floor_p99_ms")), "");
        row("  p50 / floor p50", &format!("{:.2}x", f("p50_vs_floor")), "");
        row("  Secret writes per new Secret (sync)", &format!("{:.3}", f("sync_writes_per_secret")), "1");
        row("  Secret writes per Secret (rotation)", &format!("{:.3}", f("rotation_writes_per_secret")), "1");
    }
    let h = &report["with_hanging_registries"];
    let f = |k: &str| h[k].as_f64().unwrap_or(f64::NAN);
    println!("at the largest size, with {} profiles whose registries never answer:", report["hanging_profiles"]);
    row("  new namespace -> its Secret, p50", &format!("{:.1}ms", f("new_namespace_p50_ms")), "");
    row("  new namespace -> its Secret, p99", &format!("{:.1}ms", f("new_namespace_p99_ms")), "");
    row("  p50 / floor p50", &format!("{:.2}x", f("p50_vs_floor")), "");
    common::write_report("namespaces", &report);
}
