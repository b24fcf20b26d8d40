//! `make soak`: bounded-time fuzzing, no panic allowed. Two targets, `FUZZ_SECONDS` each (default 60):
//! - the webhook's AdmissionReview decoder and handler (`regcred::webhook::answer`, what the HTTPS route calls),
//!   fed mutations of a valid review: byte flips, insertions, deletions, truncations, splices of JSON values and
//!   of random image references;
//! - the image-reference parser and the kubelet-style key matching, fed random strings over the characters that
//!   matter to the grammar, and mutations of valid references.
//!
//! A panic stops the run, writes the input to `.local/fuzz/`, and fails the command.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use rand::seq::IndexedRandom;
use regcred::registry::reference::{CredentialKey, parse};
use regcred::webhook::{Webhook, answer};

const SEED_REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"3f1c1c8e-0000-4000-8000-000000000001","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop","labels":{"app":"web"}},"spec":{"containers":[{"name":"app","image":"registry.example.com:5000/shop/web:1.4.2"},{"name":"b","image":"nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],"initContainers":[{"name":"i","image":"ghcr.io/acme/init:1"}],"imagePullSecrets":[{"name":"legacy"}]}}}}"#;

const SPLICES: &[&str] = &[
    "null",
    "[]",
    "{}",
    "0",
    "-1",
    "1e309",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[[[[[[[[[[]]]]]]]]]]",
    "{\"a\":",
    "\"CREATE\"",
    "\"DELETE\"",
    "\"Pod\"",
    "\"v1\"",
    "{\"name\":\"x\"}",
];
const REFERENCE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:@._-*?[]% \t\n\\";
const SEED_REFERENCES: &[&str] = &[
    "nginx",
    "library/nginx:1.27",
    "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "localhost:5000/a/b/c:tag",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:v1",
    "europe-west4-docker.pkg.dev/proj/repo/img:1",
    "[::1]:5000/x",
];

fn random_reference(rng: &mut impl Rng) -> String {
    if rng.random_bool(0.5) {
        let len = rng.random_range(0..80);
        (0..len).map(|_| char::from(*REFERENCE_CHARS.choose(rng).unwrap())).collect()
    } else {
        let mut s: Vec<u8> = SEED_REFERENCES.choose(rng).unwrap().as_bytes().to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..=s.len());
            match rng.random_range(0..3) {
                0 if at < s.len() => {
                    s.remove(at);
                }
                1 => s.insert(at, *REFERENCE_CHARS.choose(rng).unwrap()),
                _ => s.truncate(at),
            }
        }
        String::from_utf8_lossy(&s).into_owned()
    }
}

fn mutate_review(rng: &mut impl Rng) -> Vec<u8> {
    let mut s = SEED_REVIEW.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=s.len());
        match rng.random_range(0..6) {
            0 if at < s.len() => s[at] = rng.random(),
            1 if at < s.len() => {
                s.remove(at);
            }
            2 => s.insert(at, rng.random()),
            3 => s.truncate(at),
            4 => {
                let splice = SPLICES.choose(rng).unwrap().as_bytes();
                let end = (at + rng.random_range(0..12)).min(s.len());
                s.splice(at..end, splice.iter().copied());
            }
            _ => {
                // A random image reference in place of the first one, JSON-escaped.
                let image = serde_json::to_string(&random_reference(rng)).unwrap();
                let text =
                    String::from_utf8_lossy(&s).replacen("\"registry.example.com:5000/shop/web:1.4.2\"", &image, 1);
                s = text.into_bytes();
            }
        }
    }
    s
}

fn crash(target: &str, input: &[u8]) -> ! {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("crash-{target}-{}", std::process::id()));
    std::fs::write(&path, input).unwrap();
    eprintln!("fuzz: {target} panicked; input written to {}", path.display());
    std::process::exit(1);
}

fn main() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let budget = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rng = rand::rng();
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));

    // The handler, with caches that stay empty and a client whose API nothing answers (connection refused): what
    // needs the API is answered without it, as the handler must when the API is down.
    let webhook = runtime.block_on(async {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let view = regcred::state::View::start(
            &client,
            "regcred-system",
            None,
            2.0 / 3.0,
            regcred::credentials::identity::Identity::detached("regcred-system"),
        );
        let checker =
            Some(Arc::new(regcred::images::Checker::new(Duration::from_millis(50), 64, 8, Default::default())));
        let known_secrets = regcred::webhook::known_secrets();
        let operator_namespace = "regcred-system".into();
        let max_images = regcred::webhook::MAX_IMAGES;
        Arc::new(Webhook {
            client,
            view,
            operator_namespace,
            stats: Default::default(),
            checker,
            known_secrets,
            max_images,
            deadline: regcred::webhook::DEFAULT_DEADLINE,
        })
    });
    let (started, mut cases, mut rejected) = (Instant::now(), 0u64, 0u64);
    while started.elapsed() < budget {
        let input = mutate_review(&mut rng);
        let outcome = runtime.block_on(AssertUnwindSafe(answer(&webhook, &input)).catch_unwind());
        match outcome {
            Ok(response) => rejected += u64::from(response.status() == axum::http::StatusCode::BAD_REQUEST),
            Err(_) => crash("admission-review", &input),
        }
        cases += 1;
    }
    println!(
        "fuzz admission-review: {cases} inputs in {seconds} s ({rejected} rejected as malformed with 400, the rest answered), no panic"
    );

    let (started, mut cases, mut parsed) = (Instant::now(), 0u64, 0u64);
    let keys: Vec<CredentialKey> =
        ["*.example.com", "registry.example.com:5000/shop", "https://index.docker.io/v1/", "localhost:5000"]
            .iter()
            .map(|k| CredentialKey::parse(k))
            .collect();
    while started.elapsed() < budget {
        let reference = random_reference(&mut rng);
        let key = CredentialKey::parse(&random_reference(&mut rng));
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(image) = parse(&reference) {
                assert!(!image.repository().is_empty(), "a parsed reference has a repository");
                let _ = key.matches(&image);
                for k in &keys {
                    let _ = k.matches(&image);
                }
                return true;
            }
            false
        });
        match outcome {
            Ok(ok) => parsed += u64::from(ok),
            Err(_) => crash("image-reference", reference.as_bytes()),
        }
        cases += 1;
    }
    println!("fuzz image-reference: {cases} inputs in {seconds} s ({parsed} parsed, the rest rejected), no panic");
}
