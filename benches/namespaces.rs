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
//! - operator CPU per new namespace: CPU_NAMESPACES namespaces created CPU_SPACING_MS apart, each waited for until
//!   its Secret is there, then CPU_TAIL_S for what follows (reconciles, a status write); the process's CPU time
//!   (its threads' schedstat) over that run, less its idle CPU over as long (measured just before, once settled),
//!   per namespace. Beside it, in the same run and on equal terms, two hand-written clients ([`hand`]): minimal
//!   kube-rs programs that watch namespaces (metadata only, as regcred does) and create the Secret in each new one
//!   they select, one of them also keeping its Secrets in place (a watch of its own Secrets, as regcred's drift
//!   repair), each started as a process of its own with the chart's ServiceAccount and regcred's logging level,
//!   each of the three alone, CPU_RUNS times alternately.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{cpu_seconds, percentile, row};

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
    common::audited_requests(user, from, jiff::Timestamp::now())
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

/// How operator CPU per new namespace is measured (see the module's documentation).
struct CpuRun {
    namespaces: usize,
    spacing: Duration,
    tail: Duration,
    /// Runs of each, alternately.
    runs: usize,
}

impl CpuRun {
    fn from_env() -> Self {
        Self {
            namespaces: env_or("CPU_NAMESPACES", 120) as usize,
            spacing: Duration::from_millis(env_or("CPU_SPACING_MS", 250)),
            tail: Duration::from_secs(env_or("CPU_TAIL_S", 6)),
            runs: env_or("CPU_RUNS", 3) as usize,
        }
    }

    fn describe(&self) -> serde_json::Value {
        json!({"namespaces": self.namespaces, "spacing_ms": self.spacing.as_millis() as u64,
               "tail_s": self.tail.as_secs(), "runs": self.runs})
    }

    /// The mean of several runs' figures per namespace, beside the runs.
    fn summary(runs: Vec<serde_json::Value>) -> serde_json::Value {
        let per: Vec<f64> = runs.iter().map(|r| r["per_namespace_ms"].as_f64().unwrap()).collect();
        json!({"per_namespace_ms": per.iter().sum::<f64>() / per.len() as f64, "runs": runs})
    }

    /// The CPU process `pid` spends per new namespace: namespaces named `<tag>-NNN` with `labels`, one every
    /// `spacing` (each waited for until `seen` shows its Secret), then `tail`; its idle CPU over as long, measured
    /// just before, taken off.
    async fn measure(
        &self,
        env: &TestEnv,
        pid: u32,
        seen: &Arrivals,
        tag: &str,
        labels: &[(&str, &str)],
    ) -> serde_json::Value {
        let idle_rate = common::idle_rate(pid).await;
        let (from, start) = (cpu_seconds(pid).unwrap(), Instant::now());
        for k in 0..self.namespaces {
            let ns = env.namespace_nowait(&format!("{tag}-{k:03}"), labels).await;
            seen.wait(&ns).await;
            tokio::time::sleep_until((start + self.spacing * (k as u32 + 1)).into()).await;
        }
        tokio::time::sleep(self.tail).await;
        let (used, elapsed) = (cpu_seconds(pid).unwrap() - from, start.elapsed().as_secs_f64());
        let idle = idle_rate * elapsed;
        json!({
            "per_namespace_ms": (used - idle) / self.namespaces as f64 * 1000.0,
            "cpu_seconds": used, "idle_cpu_seconds": idle, "seconds": elapsed,
        })
    }
}

/// The hand-written clients the operator's CPU is compared with: what a minimal kube-rs program that gives every
/// new namespace a pull Secret does, and nothing more. It watches namespaces (metadata only, as regcred does),
/// selects by the same labels regcred's wide profile selects by (here `bench=hand`), reads the source Secret once,
/// and creates the Secret in each namespace that appears after its first list. It runs as a process of its own
/// (this benchmark's binary, built like regcred, started again with [`hand::ENV`] set), with the chart's
/// ServiceAccount and regcred's logging level (`info`, plain), as regcred does.
///
/// It runs in two kinds ([`hand::Kind`]): `Namespaces`, exactly the above; and `RepairsDrift`, which also keeps
/// its Secrets in place, as regcred does: it watches the Secrets it labelled (label-selected, with their data, to
/// see an edit) and writes one back when it is deleted or edited. The second is the client on equal terms with
/// regcred's job for these namespaces; the first is the least any such program does.
mod hand {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use base64::Engine as _;
    use futures::StreamExt;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, ObjectMeta, PostParams};
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt, watcher};
    use kube::{Client, ResourceExt};
    use tracing::{debug, info, warn};

    /// Set in the environment of the client's process.
    pub const ENV: &str = "NSBENCH_HAND_CLIENT";
    /// The name of the Secret it writes.
    pub const SECRET: &str = "pull-hand";
    /// The label on the Secrets it writes.
    const LABEL: (&str, &str) = ("nsbench-hand", "managed");
    /// The registry its Secret is for.
    const SERVER: &str = "hand.registry.example.com";

    /// What the client does (see the documentation of the module's caller).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind {
        /// Creates the Secret in each new namespace.
        Namespaces,
        /// And keeps it there: watches its Secrets and writes back one that was deleted or edited.
        RepairsDrift,
    }

    impl Kind {
        pub fn name(self) -> &'static str {
            match self {
                Self::Namespaces => "namespaces",
                Self::RepairsDrift => "repairs-drift",
            }
        }
    }

    /// The client itself.
    pub async fn run() {
        tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
        let var = |name: &str| std::env::var(name).unwrap();
        let (source_namespace, test_id) = (var("NSBENCH_SOURCE_NAMESPACE"), var("NSBENCH_TEST_ID"));
        let kind = if var(ENV) == Kind::RepairsDrift.name() { Kind::RepairsDrift } else { Kind::Namespaces };
        let selector = BTreeMap::from([("regcred-test".to_owned(), test_id), ("bench".to_owned(), "hand".to_owned())]);
        let client = Client::try_default().await.unwrap();
        let source = Api::<Secret>::namespaced(client.clone(), &source_namespace).get("creds").await.unwrap();
        let data = source.data.unwrap_or_default();
        let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
        let (username, password) = (text("username"), text("password"));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let config = serde_json::json!({"auths": {SERVER: {"username": username, "password": password, "auth": auth}}})
            .to_string()
            .into_bytes();
        if kind == Kind::RepairsDrift {
            tokio::spawn(repair(client.clone(), config.clone()));
        }
        let namespaces = Api::<PartialObjectMeta<Namespace>>::all(client.clone());
        let mut events = watcher(namespaces, watcher::Config::default()).default_backoff().boxed();
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    listed = true;
                    info!(kind = kind.name(), "watching namespaces");
                }
                Ok(watcher::Event::Apply(ns)) if listed => {
                    let labels = ns.labels();
                    let selected = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
                    if selected && ns.metadata.deletion_timestamp.is_none() {
                        create(&client, &ns.name_any(), &config).await;
                    }
                }
                Err(e) => warn!(error = %e, "watch failed; retrying"),
                _ => {}
            }
        }
    }

    /// Keeps the client's Secrets as it wrote them: one deleted (in a namespace that is not going) is created
    /// again, one edited is replaced.
    async fn repair(client: Client, config: Vec<u8>) {
        let secrets = Api::<Secret>::all(client.clone());
        let cfg = watcher::Config::default().labels(&format!("{}={}", LABEL.0, LABEL.1));
        let mut events = watcher(secrets, cfg).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    let current = s.data.as_ref().and_then(|d| d.get(".dockerconfigjson")).map(|b| &b.0);
                    if current != Some(&config) {
                        let api = Api::<Secret>::namespaced(client.clone(), &s.namespace().unwrap_or_default());
                        if let Err(e) = api.replace(SECRET, &PostParams::default(), &secret(&config)).await {
                            warn!(error = %e, "could not repair a Secret");
                        }
                    }
                }
                Ok(watcher::Event::Delete(s)) => {
                    let namespace = s.namespace().unwrap_or_default();
                    let going = Api::<Namespace>::all(client.clone())
                        .get_metadata_opt(&namespace)
                        .await
                        .ok()
                        .flatten()
                        .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some());
                    if !going {
                        create(&client, &namespace, &config).await;
                    }
                }
                Err(e) => warn!(error = %e, "Secret watch failed; retrying"),
                _ => {}
            }
        }
    }

    fn secret(config: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                labels: Some(BTreeMap::from([(LABEL.0.to_owned(), LABEL.1.to_owned())])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(".dockerconfigjson".into(), ByteString(config.to_vec()))])),
            ..Default::default()
        }
    }

    async fn create(client: &Client, namespace: &str, config: &[u8]) {
        match Api::<Secret>::namespaced(client.clone(), namespace).create(&PostParams::default(), &secret(config)).await
        {
            Ok(_) => debug!(namespace, "Secret created"),
            Err(kube::Error::Api(e)) if e.is_already_exists() => debug!(namespace, "Secret already there"),
            Err(e) => warn!(namespace, error = %e, "could not create the Secret"),
        }
    }

    /// The client's process. Killed when dropped.
    pub struct Process {
        child: tokio::process::Child,
        log: PathBuf,
    }

    impl Process {
        /// Starts the client with `kubeconfig` (the chart's ServiceAccount), reading the source Secret `creds` in
        /// `source_namespace`, serving the namespaces of test `test_id` labelled `bench=hand`.
        pub fn start(kind: Kind, kubeconfig: &Path, source_namespace: &str, test_id: &str) -> Self {
            let log = std::env::temp_dir().join("regcred-tests").join(format!("hand-{}-{test_id}.log", kind.name()));
            std::fs::create_dir_all(log.parent().unwrap()).unwrap();
            let child = tokio::process::Command::new(std::env::current_exe().unwrap())
                .env(ENV, kind.name())
                .env("KUBECONFIG", kubeconfig)
                .env("NSBENCH_SOURCE_NAMESPACE", source_namespace)
                .env("NSBENCH_TEST_ID", test_id)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            Self { child, log }
        }

        /// Waits until it has listed the namespaces and watches for new ones.
        pub async fn ready(&self) {
            super::wait_for("the hand-written client to watch", Duration::from_secs(60), || async {
                std::fs::read_to_string(&self.log).ok()?.contains("watching namespaces").then_some(())
            })
            .await;
        }

        pub fn pid(&self) -> u32 {
            self.child.id().unwrap()
        }
    }
}

fn main() {
    if std::env::var_os(hand::ENV).is_some() {
        return common::runtime().block_on(hand::run());
    }
    bench();
}

#[tokio::main]
async fn bench() {
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
            let start_operator = || Operator::start(&kubeconfig, &op_ns, &env.id, &["--log-level", "info"]);
            let mut operator = start_operator();
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
            let hand_seen = Arrivals::watch(client.clone(), hand::SECRET);
            let cpu_run = CpuRun::from_env();
            // Namespaces the wide profile selects: `created` by the growth, `extra` by the measurements.
            let mut created = 0usize;
            let mut extra = 0usize;
            let mut rows = BTreeMap::new();
            let mut password = 1;
            // One size when both are the same (a quick CPU-only run): each size names its namespaces by size.
            let sizes = if small == large { vec![small] } else { vec![small, large] };
            for size in sizes {
                // Grow the run to `size` selected namespaces (the samples of the size before count) and let it sync.
                let before = secrets_in_place().await;
                let grow = size.saturating_sub(created + extra);
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
                let selected = created + extra;
                ready(wide.name_any(), selected).await;
                let sync_secrets = secrets_in_place().await - before;
                let sync_writes = settled_writes(&user, sync_from, sync_secrets).await;
                eprintln!("namespaces: {size}: synced, {sync_writes} Secret writes for {sync_secrets} new Secrets");

                let figures = sample(&env, &regcred_seen, &floor_seen, &size.to_string(), samples).await;
                extra += samples;
                ready(wide.name_any(), created + extra).await;

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

                // Operator CPU per new namespace: regcred, then each kind of hand-written client, each alone (regcred
                // stopped by SIGTERM, which gives up its lease, and started again afterwards), CPU_RUNS times
                // alternately.
                let wide_labels = [("bench", "wide"), ("team", "t1")];
                let kinds = [hand::Kind::Namespaces, hand::Kind::RepairsDrift];
                let (mut regcred_runs, mut hand_runs) = (Vec::new(), [Vec::new(), Vec::new()]);
                for run in 0..cpu_run.runs {
                    let tag = format!("c{size}r{run}");
                    let pid = operator.pid().unwrap();
                    regcred_runs.push(cpu_run.measure(&env, pid, &regcred_seen, &tag, &wide_labels).await);
                    extra += cpu_run.namespaces;
                    ready(wide.name_any(), created + extra).await;
                    assert!(operator.terminate().await.0, "regcred did not stop cleanly");
                    for (kind, runs) in kinds.iter().zip(&mut hand_runs) {
                        let client = hand::Process::start(*kind, &kubeconfig, &op_ns, &env.id);
                        client.ready().await;
                        let (tag, pid) = (format!("h{}{size}r{run}", &kind.name()[..1]), client.pid());
                        runs.push(cpu_run.measure(&env, pid, &hand_seen, &tag, &[("bench", "hand")]).await);
                    }
                    operator = start_operator();
                    wait_for("the restarted operator to lead and reconcile", Duration::from_secs(120), || async {
                        let leading = operator.metric("regcred_leader").await == 1.0;
                        (leading && operator.metric("regcred_reconciles_total").await >= 2.0).then_some(())
                    })
                    .await;
                }
                let regcred_cpu = CpuRun::summary(regcred_runs);
                let [hand_cpu, drift_cpu] = hand_runs.map(CpuRun::summary);
                eprintln!(
                    "namespaces: {size}: CPU per new namespace: regcred {:.3} ms, hand-written client {:.3} ms, \
                     one that also repairs drift {:.3} ms",
                    regcred_cpu["per_namespace_ms"], hand_cpu["per_namespace_ms"], drift_cpu["per_namespace_ms"]
                );
                row["cpu_regcred"] = regcred_cpu;
                row["cpu_hand_written"] = hand_cpu;
                row["cpu_hand_written_repairs_drift"] = drift_cpu;
                rows.insert(size, row);
                // The sample and measurement namespaces stay: they count in the next size.
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
            json!({ "sizes": rows, "hanging_profiles": hanging_n, "with_hanging_registries": hanging,
                    "cpu_run": cpu_run.describe() })
        })
        .await;
    let cpu = &report["cpu_run"];
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
    println!(
        "operator CPU per new namespace ({} namespaces {} ms apart, each to its Secret, then {} s; idle CPU subtracted; \
         mean of {} runs each, alternately):",
        cpu["namespaces"], cpu["spacing_ms"], cpu["tail_s"], cpu["runs"]
    );
    let per = |r: &serde_json::Value, who: &str| r[who]["per_namespace_ms"].as_f64().unwrap_or(f64::NAN);
    let sizes: Vec<(&String, &serde_json::Value)> = report["sizes"].as_object().unwrap().iter().collect();
    for (_, r) in &sizes {
        let (regcred, hand) = (per(r, "cpu_regcred"), per(r, "cpu_hand_written"));
        let drift = per(r, "cpu_hand_written_repairs_drift");
        println!("at {} namespaces:", r["namespaces"]);
        row("  regcred", &format!("{regcred:.2}ms"), "<= the client");
        row("  client that repairs drift, as regcred (same run, alone)", &format!("{drift:.2}ms"), "");
        row("  client that only creates (same run, alone)", &format!("{hand:.2}ms"), "");
        row("  regcred / client that repairs drift", &format!("{:.2}x", regcred / drift), "<= 1x");
        row("  regcred / client that only creates", &format!("{:.2}x", regcred / hand), "");
    }
    if let [(_, first), .., (_, last)] = sizes.as_slice() {
        let growth = per(last, "cpu_regcred") / per(first, "cpu_regcred");
        row("regcred at the largest size / at the smallest", &format!("{growth:.2}x"), "1x within noise");
        let client = per(last, "cpu_hand_written") / per(first, "cpu_hand_written");
        row("client at the largest size / at the smallest", &format!("{client:.2}x"), "");
    }
    let h = &report["with_hanging_registries"];
    let f = |k: &str| h[k].as_f64().unwrap_or(f64::NAN);
    println!("at the largest size, with {} profiles whose registries never answer:", report["hanging_profiles"]);
    row("  new namespace -> its Secret, p50", &format!("{:.1}ms", f("new_namespace_p50_ms")), "");
    row("  new namespace -> its Secret, p99", &format!("{:.1}ms", f("new_namespace_p99_ms")), "");
    row("  p50 / floor p50", &format!("{:.2}x", f("p50_vs_floor")), "");
    common::write_report("namespaces", &report);
}
