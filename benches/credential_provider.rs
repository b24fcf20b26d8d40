//! `make bench`: the credential endpoint's latency as the kubelet's provider meets it, over HTTPS with a
//! connection kept open (as the plugin process opens one per exec, the TLS handshake is reported apart): p50 and
//! p99 of a request whose token regcred reviewed before (a cache hit: no apiserver request) and of one with a new
//! token (a TokenReview), each answering static credentials; and TokenReviews per request of one Pod's token.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row, write_report};

use std::time::{Duration, Instant};

use serde_json::json;
use support::credential_provider::{AUDIENCE, Endpoint, endpoint_args, pod, pod_token};
use support::harness::{Harness, SERVER, basic_spec};
use support::{TestEnv, free_port};

/// Requests per kind.
const REQUESTS: usize = 200;
/// Pods whose tokens are each shown once (TokenReview misses).
const MISSES: usize = 100;

#[tokio::main]
async fn main() {
    TestEnv::new("benchcp").await.run(run).await;
}

async fn run(env: TestEnv) {
    let port = free_port();
    let release = support::release_name(&env.id);
    let args = endpoint_args(&release, port, "60s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let h = Harness::start_chart(&env, &["credentialProvider.enabled=true"], &args, &[]).await;
    h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
    let ns = env.namespace("a", &[("pull", "yes")]).await;
    let mut spec = basic_spec(h.select("yes"));
    spec["delivery"] = json!("CredentialProvider");
    let profile = h.profile("p", spec).await;
    h.ready(&profile).await;
    let endpoint =
        Endpoint::new(&env.client, &h.op_ns, &format!("{release}-ca"), &format!("regcred.{}.svc", h.op_ns), port).await;
    let image = format!("{SERVER}/team/app");

    // Tokens first (their TokenRequests are not what is measured): one per Pod.
    let mut tokens = Vec::new();
    for i in 0..=MISSES {
        let p = pod(&env.client, &ns, &format!("p{i}"), "default").await;
        tokens.push(pod_token(&env.client, &p, AUDIENCE).await.unwrap());
    }
    let time = |token: String| {
        let endpoint = &endpoint;
        let image = &image;
        async move {
            let started = Instant::now();
            let answer = endpoint.answer(&token, image).await;
            assert_eq!(answer.auth.len(), 1, "{answer:?}");
            started.elapsed()
        }
    };
    // The connection's TLS handshake and the first token's review, then hits on that token.
    let first = time(tokens[0].clone()).await;
    let reviews_before = h.operator.as_ref().unwrap().metric("regcred_credential_provider_token_reviews_total").await;
    let mut hits = Vec::new();
    for _ in 0..REQUESTS {
        hits.push(time(tokens[0].clone()).await);
    }
    let reviews_hits =
        h.operator.as_ref().unwrap().metric("regcred_credential_provider_token_reviews_total").await - reviews_before;
    let mut misses = Vec::new();
    for token in &tokens[1..] {
        misses.push(time(token.clone()).await);
    }
    hits.sort();
    misses.sort();
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1000.0);
    println!("\ncredential endpoint ({REQUESTS} cache hits, {MISSES} TokenReview misses, one HTTPS connection)");
    row("figure", "measured", "target");
    row("first request (TLS handshake + TokenReview)", &ms(first), "");
    row("cache hit p50", &ms(percentile(&hits, 0.5)), "");
    row("cache hit p99", &ms(percentile(&hits, 0.99)), "");
    row("TokenReview miss p50", &ms(percentile(&misses, 0.5)), "");
    row("TokenReview miss p99", &ms(percentile(&misses, 0.99)), "");
    row("TokenReviews for 200 requests of one Pod's token", &format!("{reviews_hits}"), "0");
    write_report(
        "credential_provider",
        &json!({
            "first_ms": first.as_secs_f64() * 1000.0,
            "hit_p50_ms": percentile(&hits, 0.5).as_secs_f64() * 1000.0,
            "hit_p99_ms": percentile(&hits, 0.99).as_secs_f64() * 1000.0,
            "miss_p50_ms": percentile(&misses, 0.5).as_secs_f64() * 1000.0,
            "miss_p99_ms": percentile(&misses, 0.99).as_secs_f64() * 1000.0,
            "token_reviews_for_hits": reviews_hits,
        }),
    );
    assert_eq!(reviews_hits, 0.0, "a remembered token was reviewed again");
}
