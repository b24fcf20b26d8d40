//! `make bench`: ACR tokens from Azure Workload Identity (regcred's own ServiceAccount token, Entra ID, ACR's
//! exchange, all local endpoints that verify what they get) written to 1,000 namespaces and rotated: exchanges
//! per rotation (target: 1 per profile), the time from the exchange issuing a token to every namespace's Secret
//! holding it, and the operator's memory.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row, write_report};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::TestEnv;
use support::cloud::{AppCredential, CloudRegistry, Entra};
use support::harness::{Harness, password_in};

const NAMESPACES: usize = 1000;
const LIFETIME: u64 = 60;
const ROTATIONS: usize = 3;

#[tokio::main]
async fn main() {
    TestEnv::new("benchid").await.run(run).await;
}

async fn run(env: TestEnv) {
    let registry = CloudRegistry::start(&env.client, "127.0.0.1").await;
    registry.lifetime_secs.store(LIFETIME, Ordering::SeqCst);
    let mut h = Harness::start(&env).await;
    let subject = format!("system:serviceaccount:{}:{}", h.op_ns, support::webhook_configuration_name(&env));
    let entra = Entra::start(&env.client, "127.0.0.1", AppCredential::Federated { subject }).await;
    *registry.entra.lock().unwrap() = Some(entra.clone());
    let dir = std::env::temp_dir().join("regcred-tests");
    let ca = dir.join(format!("bench-ca-{}.pem", env.id));
    std::fs::write(&ca, &entra.ca_pem).unwrap();
    h.restart_env(&[
        ("SSL_CERT_FILE", ca.display().to_string()),
        support::cloud::allow(&[&entra.authority, &registry.addr]),
    ]);
    for i in 0..NAMESPACES {
        env.namespace_nowait(&format!("n{i:04}"), &[("pull", "yes")]).await;
    }
    let profile = h
        .profile(
            "p",
            json!({
                "provider": "acr", "server": registry.addr,
                "credentials": {"acr": {"tenantId": entra.tenant, "clientId": entra.client_id, "authorityHost": entra.authority}},
                "namespaces": h.select("yes"), "secretName": "pull", "tls": {"caBundle": registry.ca_pem},
            }),
        )
        .await;
    println!(
        "ACR workload identity: {NAMESPACES} namespaces, refresh tokens living {LIFETIME} s, {ROTATIONS} rotations"
    );
    let secrets = Api::<Secret>::all(h.client());
    let ours = ListParams::default().labels(&format!("regcred.dev/profile={profile}"));
    // token -> when every namespace first held it.
    let mut everywhere: BTreeMap<String, Instant> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(LIFETIME * (ROTATIONS as u64 + 2));
    while everywhere.len() < ROTATIONS + 1 && Instant::now() < deadline {
        if let Ok(list) = secrets.list(&ours).await {
            let tokens: Vec<String> = list.items.iter().filter_map(|s| password_in(s, &registry.addr)).collect();
            seen.extend(tokens.iter().cloned());
            if tokens.len() == NAMESPACES && tokens.iter().all(|t| *t == tokens[0]) {
                everywhere.entry(tokens[0].clone()).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issues = registry.issues.lock().unwrap().clone();
    let mints = registry.mints.load(Ordering::SeqCst);
    let mut delays: Vec<Duration> = everywhere
        .iter()
        .filter_map(|(token, at)| issues.iter().find(|(t, _)| t == token).map(|(_, issued)| at.duration_since(*issued)))
        .collect();
    delays.sort();
    let rotations = everywhere.len();
    let per_rotation = mints as f64 / rotations.max(1) as f64;
    let (peak, rss) = h.operator.as_ref().unwrap().memory_kib().unwrap_or_default();
    row(
        "exchanges per token (1,000 namespaces)",
        &format!("{per_rotation:.2} ({mints} for {rotations} tokens)"),
        "1 per profile",
    );
    row(
        "issue -> all Secrets hold it",
        &format!(
            "p50 {:.2} s, max {:.2} s",
            percentile(&delays, 0.5).as_secs_f64(),
            delays.last().copied().unwrap_or_default().as_secs_f64()
        ),
        "",
    );
    row("distinct tokens seen in Secrets", &seen.len().to_string(), &format!("{rotations}"));
    row("operator RSS (steady, peak)", &format!("{:.1} MiB, {:.1} MiB", rss as f64 / 1024.0, peak as f64 / 1024.0), "");
    write_report(
        "identity",
        &json!({
            "namespaces": NAMESPACES, "exchanges": mints, "tokens_everywhere": rotations,
            "exchanges_per_token": per_rotation,
            "issue_to_all_p50_s": percentile(&delays, 0.5).as_secs_f64(),
            "issue_to_all_max_s": delays.last().copied().unwrap_or_default().as_secs_f64(),
            "rss_kib": rss, "peak_rss_kib": peak,
        }),
    );
    assert!(rotations > ROTATIONS, "only {rotations} tokens reached every namespace");
}
