//! `make soak`: regcred under faults, on the real local control plane, bounded in time (each scenario has its own
//! deadline; the whole soak takes about 10 minutes). Prints a table, writes `.local/bench/soak.json`, and exits 1
//! if any fault broke a promise:
//!
//! 1. SIGKILL of the operator at random points of large syncs (creation, rotation, removal, re-selection), several
//!    times: each time it converges, with every managed Secret present once, current, owned, and nowhere else.
//! 2. The apiserver killed and restarted while namespaces are created and the credentials rotate: the operator
//!    rides it out and converges without a restart of its own.
//! 3. The leader killed several times under a stream of new namespaces: another replica serves within 15 s.
//! 4. The webhook killed while Pods are created: no Pod is rejected.
//! 5. A GCP token endpoint failing for a quarter of a token's lifetime, over many namespaces: no Secret ever holds
//!    an expired token.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::row;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use rand::Rng;
use serde_json::{Value, json};
use support::harness::{Harness, SERVER, basic_spec, password_in};
use support::{Operator, TestEnv, wait_for};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A broken promise, with what was seen.
type Violations = Vec<String>;

/// Every managed Secret of `profile`, checked against what should be: one in each of `namespaces` holding
/// `password`, owned by the profile, and none anywhere else.
async fn check_secrets(h: &Harness, profile: &str, namespaces: &BTreeSet<String>, password: &str) -> Violations {
    let uid = Api::<regcred::api::RegistryProfile>::all(h.client()).get(profile).await.unwrap().uid().unwrap();
    let secrets = Api::<Secret>::all(h.client());
    let list = secrets.list(&ListParams::default().labels(&format!("regcred.dev/profile={profile}"))).await.unwrap();
    let mut out = Vec::new();
    let mut per_ns: BTreeMap<String, usize> = BTreeMap::new();
    for s in &list.items {
        let ns = s.namespace().unwrap_or_default();
        *per_ns.entry(ns.clone()).or_default() += 1;
        if !namespaces.contains(&ns) {
            out.push(format!("{profile}: a Secret in unselected namespace {ns}"));
        }
        if password_in(s, SERVER).as_deref() != Some(password) {
            out.push(format!("{profile}: {ns}/{} does not hold the current credentials", s.name_any()));
        }
        if !s.owner_references().iter().any(|o| o.uid == uid) {
            out.push(format!("{profile}: {ns}/{} is not owned by the profile", s.name_any()));
        }
    }
    for ns in namespaces {
        match per_ns.get(ns) {
            None => out.push(format!("{profile}: Secret missing in {ns}")),
            Some(1) => {}
            Some(n) => out.push(format!("{profile}: {n} Secrets in {ns}")),
        }
    }
    out
}

/// Reads the Secrets every 500 ms until [`check_secrets`] finds nothing wrong: how long that took, or `None` and
/// the last problems found when `timeout` passed first.
async fn secrets_converge(
    h: &Harness,
    profile: &str,
    namespaces: &BTreeSet<String>,
    password: &str,
    timeout: Duration,
) -> Result<Duration, Violations> {
    let started = Instant::now();
    loop {
        let problems = check_secrets(h, profile, namespaces, password).await;
        if problems.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(problems);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (up to `timeout`) until the profile's status says `n/n` and Ready.
async fn converged(h: &Harness, profile: &str, n: usize, timeout: Duration) -> Option<Duration> {
    let api = Api::<regcred::api::RegistryProfile>::all(h.client());
    let started = Instant::now();
    let want = format!("{n}/{n}");
    while started.elapsed() < timeout {
        if let Ok(p) = api.get(profile).await
            && let Some(st) = p.status
            && st.sync_summary.as_deref() == Some(want.as_str())
            && st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && st.observed_generation == p.metadata.generation
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn create_namespaces(env: &TestEnv, prefix: &str, n: usize, labels: &[(&str, &str)]) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move { env.namespace_nowait(&format!("{prefix}{i:04}"), labels).await })
        .buffer_unordered(32)
        .collect()
        .await
}

/// 1. SIGKILL at random points of large syncs.
async fn kill_mid_sync(env: TestEnv) -> (Value, Violations) {
    let n = env_or("SOAK_NAMESPACES", 2000) as usize;
    let mut h = Harness::start(&env).await;
    h.operator.take();
    let mut namespaces: Vec<String> = create_namespaces(&env, "k", n, &[("pull", "yes")]).await;
    namespaces.sort();
    let mut selected: BTreeSet<String> = namespaces.iter().cloned().collect();
    let mut violations = Vec::new();
    let mut rounds = Vec::new();
    let secrets = Api::<Secret>::all(h.client());
    let mut password = String::from("first");
    let mut profile = String::new();
    // Each round changes what the profile needs, starts the operator, kills it at a random point of the sync it
    // started, then restarts it and checks convergence.
    for round in 0..5 {
        let what = match round {
            0 => {
                h.source("creds", &[("username", "bot"), ("password", &password)]).await;
                profile = h.profile("p", basic_spec(h.select("yes"))).await;
                "first sync"
            }
            1 | 4 => {
                password = format!("rotated-{round}");
                h.source("creds", &[("username", "bot"), ("password", &password)]).await;
                "rotation"
            }
            2 => {
                for ns in namespaces.iter().step_by(2) {
                    h.set_labels(ns, json!({"pull": "no"})).await;
                    selected.remove(ns);
                }
                "half unselected"
            }
            _ => {
                for ns in namespaces.iter().step_by(2) {
                    h.set_labels(ns, json!({"pull": "yes"})).await;
                    selected.insert(ns.clone());
                }
                "re-selected"
            }
        };
        // The kill lands at a random point of the sync this change starts: between 0 and 1.5 s after the
        // operator logs that it is writing (2,000 Secrets take about 2-3 s here).
        let operator = Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &["--log-level", "info"]);
        let started = Instant::now();
        while !operator.logs().contains("syncing Secrets") && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let into_sync = Duration::from_millis(rand::rng().random_range(0..1500));
        tokio::time::sleep(into_sync).await;
        let delay = started.elapsed();
        operator.kill().await;
        let ours = ListParams::default().labels(&format!("regcred.dev/profile={profile}"));
        let current = secrets
            .list(&ours)
            .await
            .map(|l| l.items.iter().filter(|s| password_in(s, SERVER).as_deref() == Some(password.as_str())).count())
            .unwrap_or(0);
        h.restart();
        // Converged means the Secrets themselves are right (the status of an earlier round may still say n/n),
        // and then the status says so too.
        let took = secrets_converge(&h, &profile, &selected, &password, Duration::from_secs(300)).await;
        match &took {
            Err(last) => violations.push(format!(
                "round {round} ({what}): not converged within 300 s; {} problems, such as {:?}",
                last.len(),
                last.first()
            )),
            Ok(_) => {
                if converged(&h, &profile, selected.len(), Duration::from_secs(60)).await.is_none() {
                    violations.push(format!("round {round} ({what}): Secrets right, but the status never said so"));
                }
            }
        }
        let took = took.ok();
        h.operator.take();
        eprintln!(
            "soak: kill round {round} ({what}): killed {into_sync:?} into the sync with {current} of {} Secrets current; converged {took:?} after the restart",
            selected.len()
        );
        rounds.push(json!({
            "change": what, "killed_after_ms": delay.as_millis() as u64, "into_sync_ms": into_sync.as_millis() as u64,
            "current_at_kill": current,
            "selected": selected.len(), "converged_after_restart_s": took.map(|d| d.as_secs_f64()),
        }));
    }
    (json!({"namespaces": n, "rounds": rounds}), violations)
}

/// 2. The apiserver killed and restarted under load.
async fn apiserver_restart(env: TestEnv) -> (Value, Violations) {
    let h = Harness::start(&env).await;
    h.source("creds", &[("username", "bot"), ("password", "before")]).await;
    let mut selected: BTreeSet<String> =
        create_namespaces(&env, "a", 300, &[("pull", "yes")]).await.into_iter().collect();
    let profile = h.profile("p", basic_spec(h.select("yes"))).await;
    let mut violations = Vec::new();
    if converged(&h, &profile, selected.len(), Duration::from_secs(120)).await.is_none() {
        violations.push("no convergence before the restart".into());
    }
    // Load: namespaces created one after another (retried while the apiserver is away), and a rotation.
    let creating = {
        let env = env.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..200 {
                let name = format!("{}-b{i:03}", env.id);
                let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"regcred-test": env.id, "pull": "yes"}}
                }))
                .unwrap();
                let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone());
                for _ in 0..600 {
                    match api.create(&PostParams::default(), &ns).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(e)) if e.code == 409 => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                made.push(name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            made
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.source("creds", &[("username", "bot"), ("password", "after")]).await;
    let restart_started = Instant::now();
    let out = tokio::process::Command::new(support::repo_root().join("tools/cluster-restart.sh"))
        .args(["--kill", "--down", "3", "kube-apiserver"])
        .output()
        .await
        .unwrap();
    let restart = restart_started.elapsed();
    if !out.status.success() {
        violations.push(format!("cluster-restart failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let made = creating.await.unwrap();
    // Namespaces created while it was away are deleted by nobody: TestEnv removes them with the rest.
    selected.extend(made.iter().cloned());
    let after_ready = match secrets_converge(&h, &profile, &selected, "after", Duration::from_secs(180)).await {
        Ok(took) => Some(took),
        Err(last) => {
            violations.push(format!("not converged within 180 s of the apiserver's return: {:?}", last.first()));
            None
        }
    };
    let alive = h
        .operator
        .as_ref()
        .and_then(Operator::pid)
        .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
    if !alive {
        violations.push("the operator exited when the apiserver went away".into());
    }
    eprintln!("soak: apiserver down and back in {restart:?}; converged {after_ready:?} after");
    for ns in &made {
        env.cleanup_namespace(ns);
    }
    (
        json!({
            "namespaces": selected.len(), "apiserver_away_s": restart.as_secs_f64(),
            "converged_after_return_s": after_ready.map(|d| d.as_secs_f64()), "operator_survived": alive,
        }),
        violations,
    )
}

/// 3. The leader killed several times; a replica serves a new namespace within 15 s each time.
async fn leader_failover(env: TestEnv) -> (Value, Violations) {
    let mut h = Harness::start(&env).await;
    h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
    let profile = h.profile("p", basic_spec(h.select("yes"))).await;
    let mut replicas = vec![h.operator.take().unwrap(), Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &[])];
    let mut violations = Vec::new();
    let mut takeovers = Vec::new();
    converged(&h, &profile, 0, Duration::from_secs(60)).await;
    for round in 0..4 {
        let leader = support::leader_of(&replicas.iter().collect::<Vec<_>>()).await;
        replicas.remove(leader).kill().await;
        let killed = Instant::now();
        let ns = env.namespace_nowait(&format!("l{round}"), &[("pull", "yes")]).await;
        let served = wait_for("a replica to serve the new namespace", Duration::from_secs(60), || async {
            h.secret(&ns, "pull").await.map(|_| killed.elapsed())
        })
        .await;
        if served > Duration::from_secs(15) {
            violations.push(format!("round {round}: a new leader served after {served:?} (> 15 s)"));
        }
        eprintln!("soak: leader killed, new namespace served after {served:?}");
        takeovers.push(served.as_secs_f64());
        // A replacement replica, as the Deployment would start.
        replicas.push(Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &[]));
    }
    let max = takeovers.iter().copied().fold(0.0, f64::max);
    (json!({"takeovers_s": takeovers, "max_takeover_s": max, "lease_duration_s": 10}), violations)
}

/// 4. The webhook killed and restarted while Pods are created: none rejected.
async fn webhook_outage(env: TestEnv) -> (Value, Violations) {
    let port = support::free_port();
    let name = support::webhook::register(&env, port, None).await;
    let addr = format!("127.0.0.1:{port}");
    let args = ["--webhook-addr", addr.as_str(), "--webhook-configuration", &name, "--webhook-dns-names", "127.0.0.1"];
    let mut h = Harness::start_with(&env, &args).await;
    support::webhook::wait_ca_bundle(&env.client, &name, Duration::from_secs(30)).await;
    support::webhook::serve_registry(&h).await;
    let ns = env.namespace("pods", &[("pull", "yes")]).await;
    let image = format!("{}/team/app:1", support::webhook::REGISTRY);
    let api = Api::<Pod>::namespaced(h.client(), &ns);
    let creating = {
        let api = api.clone();
        let image = image.clone();
        tokio::spawn(async move {
            let (mut with, mut without, mut rejected) = (0, 0, Vec::new());
            for i in 0..300 {
                let pod = support::webhook::pod(&format!("p{i:03}"), &[&image], &[], &[]);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p)
                        if p.spec
                            .as_ref()
                            .and_then(|s| s.image_pull_secrets.as_ref())
                            .is_some_and(|s| !s.is_empty()) =>
                    {
                        with += 1
                    }
                    Ok(_) => without += 1,
                    Err(e) => rejected.push(format!("pod {i}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (with, without, rejected)
        })
    };
    let mut outages = 0;
    while !creating.is_finished() {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..1500))).await;
        if let Some(op) = h.operator.take() {
            op.kill().await;
            outages += 1;
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..2000))).await;
            h.operator = Some(Operator::start(&h.kubeconfig, &h.op_ns, &env.id, &args));
        }
    }
    let (with, without, rejected) = creating.await.unwrap();
    eprintln!(
        "soak: {outages} webhook outages; {with} Pods injected, {without} admitted without, {} rejected",
        rejected.len()
    );
    let violations = rejected.iter().take(5).map(|r| format!("Pod rejected: {r}")).collect();
    (
        json!({"pods": 300, "webhook_kills": outages, "injected": with, "admitted_uninjected": without,
               "rejected": rejected.len()}),
        violations,
    )
}

/// 5. The token endpoint failing for a quarter of a token's lifetime, over many namespaces.
async fn token_outage(env: TestEnv) -> (Value, Violations) {
    let lifetime = 40;
    let gcp = support::tokens::GcpTokenEndpoint::start(lifetime).await;
    let h = Harness::start_env(&env, &[], &gcp.operator_env(&env, &[])).await;
    let key = gcp.key_json();
    h.source("gcp", &[("key.json", key.as_str())]).await;
    let n = 500;
    create_namespaces(&env, "t", n, &[("pull", "yes")]).await;
    let profile = h.profile("p", support::tokens::gcp_spec(&h, "gcp", "pull")).await;
    let mut violations = Vec::new();
    if converged(&h, &profile, n, Duration::from_secs(120)).await.is_none() {
        violations.push(format!("the GCP profile did not reach {n}/{n}"));
    }
    let run = support::tokens::rotate_through_outage(&h, &gcp, &profile, lifetime, Duration::from_secs(150)).await;
    violations.extend(run.expired.iter().take(5).map(|e| format!("expired token observed: {e}")));
    if !h.logs().contains("minting failed") {
        violations.push("the outage never met a refresh".into());
    }
    eprintln!(
        "soak: token endpoint down {:?}: {} mints, {} tokens seen in {} reads of {n} Secrets, {} expired",
        run.outage,
        run.mints,
        run.tokens_seen,
        run.observations,
        run.expired.len()
    );
    (
        json!({"namespaces": n, "lifetime_s": lifetime, "outage_s": run.outage.as_secs_f64(), "mints": run.mints,
               "tokens_seen": run.tokens_seen, "observations": run.observations, "expired_seen": run.expired.len()}),
        violations,
    )
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let mut report = serde_json::Map::new();
    let mut all: Vec<(String, Violations)> = Vec::new();
    // SOAK_ONLY=kill-mid-sync,token-outage runs only those.
    let only = std::env::var("SOAK_ONLY").unwrap_or_default();
    macro_rules! scenario {
        ($key:literal, $f:ident) => {{
            if !only.is_empty() && !only.split(',').any(|o| o == $key) {
                eprintln!("soak: {} skipped (SOAK_ONLY)", $key);
            } else {
                eprintln!("soak: {} ...", $key);
                let env = TestEnv::new($key).await;
                support::install_crd(&env.client).await;
                let t = Instant::now();
                let (mut figures, violations) = env.clone().run($f).await;
                figures["seconds"] = json!(t.elapsed().as_secs_f64());
                figures["violations"] = json!(violations);
                report.insert($key.into(), figures);
                all.push(($key.into(), violations));
            }
        }};
    }
    scenario!("kill-mid-sync", kill_mid_sync);
    scenario!("apiserver-restart", apiserver_restart);
    scenario!("leader-failover", leader_failover);
    scenario!("webhook-outage", webhook_outage);
    scenario!("token-outage", token_outage);
    let report = Value::Object(report);
    println!();
    println!("regcred soak ({:.0}s)", started.elapsed().as_secs_f64());
    row("fault", "result", "promise");
    let k = &report["kill-mid-sync"];
    let kills = k["rounds"].as_array().map(Vec::len).unwrap_or(0);
    let slowest = k["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["converged_after_restart_s"].as_f64())
        .fold(0.0, f64::max);
    row(
        &format!("SIGKILL mid-sync x{kills} ({} namespaces)", k["namespaces"]),
        &format!("{slowest:.1}s max"),
        "converges",
    );
    let a = &report["apiserver-restart"];
    row(
        &format!("apiserver killed, away {:.1}s", a["apiserver_away_s"].as_f64().unwrap_or(f64::NAN)),
        &format!("{:.1}s", a["converged_after_return_s"].as_f64().unwrap_or(f64::NAN)),
        "converges",
    );
    let l = &report["leader-failover"];
    row(
        "leader SIGKILL x4: new namespace served",
        &format!("{:.1}s max", l["max_takeover_s"].as_f64().unwrap_or(f64::NAN)),
        "<= 15s",
    );
    let w = &report["webhook-outage"];
    row(
        &format!("webhook killed x{} during 300 Pods", w["webhook_kills"]),
        &format!("{} rejected", w["rejected"]),
        "0 rejected",
    );
    let t = &report["token-outage"];
    row(
        &format!(
            "token endpoint down {:.0}s of a {}s lifetime",
            t["outage_s"].as_f64().unwrap_or(f64::NAN),
            t["lifetime_s"]
        ),
        &format!("{} expired", t["expired_seen"]),
        "0 expired",
    );
    common::write_report("soak", &report);
    let broken: Vec<String> = all.iter().flat_map(|(k, v)| v.iter().map(move |m| format!("{k}: {m}"))).collect();
    if !broken.is_empty() {
        eprintln!("soak: {} broken promises:", broken.len());
        for b in &broken {
            eprintln!("  {b}");
        }
        std::process::exit(1);
    }
    println!("soak: every promise held");
}
