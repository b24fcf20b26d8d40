//! `make bench`: a full registry preflight (credentials, a Docker v2 image, an OCI image and an index resolved to
//! linux/amd64) against Debian's docker-registry on loopback with TLS, once with htpasswd (Basic) and once with
//! token authentication. Prints p50/p99 of 30 rounds and the HTTP requests one preflight makes.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, write_report};

use std::time::{Duration, Instant};

use regcred::registry::preflight::{Credentials, Options, check};
use support::registry::{Auth, PASSWORD, Registry, USER};

const ROUNDS: usize = 30;

#[tokio::main]
async fn main() {
    let mut figures = serde_json::Map::new();
    println!("registry preflight: 3 images (one an index), {ROUNDS} rounds, a new client each round");
    for auth in [Auth::Basic, Auth::Token] {
        let registry = Registry::start(auth).await;
        registry.push_image("team/docker:1", true, 2048, "amd64").await;
        registry.push_image("team/oci:1", false, 2048, "amd64").await;
        registry.push_index("team/multi:1", &["arm64", "amd64"]).await;
        let creds = Credentials { username: USER.into(), password: PASSWORD.into() };
        let images = ["team/docker:1".to_owned(), "team/oci:1".to_owned(), "team/multi:1".to_owned()];
        let options = Options { ca_pem: Some(registry.ca_pem.clone()), ..Options::default() };
        let mut samples = Vec::with_capacity(ROUNDS);
        let (requests, tokens) = (registry.requests(), registry.token_requests().await);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let report = check(&registry.addr, Some(&creds), &images, &options).await;
            samples.push(started.elapsed());
            assert!(report.first_failure().is_none(), "{report:?}");
        }
        // The registry writes its log asynchronously.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per_check = (registry.requests() - requests) as f64 / ROUNDS as f64;
        let token_per_check = (registry.token_requests().await - tokens) as f64 / ROUNDS as f64;
        samples.sort();
        let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        println!(
            "  {auth:?}: p50 {:.1} ms, p99 {:.1} ms; {per_check:.0} registry requests + {token_per_check:.0} token requests per preflight",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
        figures.insert(
            format!("{auth:?}").to_lowercase(),
            serde_json::json!({
                "p50_ms": p50.as_secs_f64() * 1000.0,
                "p99_ms": p99.as_secs_f64() * 1000.0,
                "registry_requests": per_check,
                "token_requests": token_per_check,
            }),
        );
    }
    write_report("preflight", &serde_json::Value::Object(figures));
}
