//! The registry preflight against a real registry (Debian's docker-registry, TLS from a test CA), with htpasswd
//! (Basic) and with token authentication behind a local token server; the images are pushed by the tests.
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use regcred::registry::preflight::{Credentials, ManifestKind, Options, Reason, Report, check};
use support::registry::{Auth, PASSWORD, Registry, USER};

fn good() -> Credentials {
    Credentials { username: USER.into(), password: PASSWORD.into() }
}

fn trusting(registry: &Registry) -> Options {
    Options { ca_pem: Some(registry.ca_pem.clone()), ..Options::default() }
}

fn reasons(report: &Report) -> Vec<Option<&'static str>> {
    report.images.iter().map(|i| i.failure.as_ref().map(|f| f.reason.as_str())).collect()
}

/// Every case of the issue, once per authentication mode.
async fn every_case(auth: Auth) {
    let mut registry = Registry::start(auth).await;
    let docker = registry.push_image("team/docker:1", true, 2048, "amd64").await;
    let oci = registry.push_image("team/oci:1", false, 2048, "amd64").await;
    let entries = registry.push_index("team/multi:1", &["arm64", "amd64"]).await;
    let big = registry.push_image("team/big:1", false, 64 * 1024, "amd64").await;
    let opts = trusting(&registry);
    let addr = registry.addr.clone();

    // Valid credentials; a Docker v2 image, an OCI image, an index resolved to linux/amd64.
    let (requests, tokens) = (registry.requests(), registry.token_requests().await);
    let started = std::time::Instant::now();
    let images = ["team/docker:1".to_owned(), "team/oci:1".to_owned(), "team/multi:1".to_owned()];
    let report = check(&addr, Some(&good()), &images, &opts).await;
    let took = started.elapsed();
    assert_eq!(report.credentials, None, "{report:?}");
    assert_eq!(reasons(&report), vec![None, None, None], "{report:?}");
    assert_eq!(report.images[0].digest.as_ref(), docker["digest"].as_str().map(String::from).as_ref());
    assert_eq!(report.images[0].media_type.as_deref(), Some("application/vnd.docker.distribution.manifest.v2+json"));
    assert_eq!(report.images[1].digest.as_ref(), oci["digest"].as_str().map(String::from).as_ref());
    assert_eq!(report.images[1].media_type.as_deref(), Some("application/vnd.oci.image.manifest.v1+json"));
    let config_and_layer = report.images[1].size.unwrap();
    assert!(config_and_layer > 2048 && config_and_layer < 2048 + 512, "size {config_and_layer}");
    assert_eq!(report.images[2].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(report.images[2].digest.as_ref(), entries[1]["digest"].as_str().map(String::from).as_ref());
    // Let the registry flush its access log before counting.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (registry_requests, token_requests) =
        (registry.requests() - requests, registry.token_requests().await - tokens);
    println!(
        "{auth:?}: full preflight of 3 images (one an index) in {:.1} ms; {registry_requests} registry requests + {token_requests} token requests",
        took.as_secs_f64() * 1000.0
    );

    // Another platform of the index.
    let arm = check(
        &addr,
        Some(&good()),
        &["team/multi:1".to_owned()],
        &Options { platform: "linux/arm64".into(), ..opts.clone() },
    )
    .await;
    assert_eq!(arm.images[0].digest.as_ref(), entries[0]["digest"].as_str().map(String::from).as_ref());
    let none = check(
        &addr,
        Some(&good()),
        &["team/multi:1".to_owned()],
        &Options { platform: "windows/amd64".into(), ..opts.clone() },
    )
    .await;
    let failure = none.images[0].failure.as_ref().unwrap();
    assert_eq!(failure.reason, Reason::ImageNotFound);
    assert!(failure.message.contains("linux/arm64") && failure.message.contains("linux/amd64"), "{}", failure.message);

    // Wrong password.
    let wrong = Credentials { username: USER.into(), password: "wrong".into() };
    let report = check(&addr, Some(&wrong), &images, &opts).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::AuthenticationFailed), "{report:?}");
    assert!(report.images.is_empty());
    assert!(!format!("{report:?}").contains("wrong"), "the password leaked into the report");

    // Unknown repository, unknown tag.
    let report = check(&addr, Some(&good()), &["team/nothing:1".to_owned(), "team/oci:2".to_owned()], &opts).await;
    assert_eq!(reasons(&report), vec![Some("ImageNotFound"), Some("ImageNotFound")], "{report:?}");

    // Too large, and a manifest type the profile does not accept.
    let limited = Options { max_size: Some(32 * 1024), accepted: vec![ManifestKind::Oci], ..opts.clone() };
    let report = check(
        &addr,
        Some(&good()),
        &["team/big:1".to_owned(), "team/docker:1".to_owned(), "team/oci:1".to_owned()],
        &limited,
    )
    .await;
    assert_eq!(reasons(&report), vec![Some("ImageTooLarge"), Some("UnsupportedManifestType"), None], "{report:?}");
    assert_eq!(report.images[0].digest.as_ref(), big["digest"].as_str().map(String::from).as_ref());

    // Untrusted certificate (the test CA not given), then explicitly skipped.
    let report = check(&addr, Some(&good()), &images, &Options::default()).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::TlsUntrusted), "{report:?}");
    let skipped =
        check(&addr, Some(&good()), &images, &Options { insecure_skip_verify: true, ..Options::default() }).await;
    assert_eq!(skipped.first_failure(), None, "{skipped:?}");

    // Registry stopped.
    registry.stop().await;
    let report = check(&addr, Some(&good()), &images, &opts).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::RegistryUnreachable), "{report:?}");
}

#[tokio::test]
async fn preflight_with_htpasswd_basic_authentication() {
    every_case(Auth::Basic).await;
}

#[tokio::test]
async fn preflight_with_token_authentication() {
    every_case(Auth::Token).await;
}
