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

/// Runs `regcred check` with `args` (and `stdin`); returns the exit status and standard output followed by
/// standard error.
async fn regcred_check(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcred"))
        .arg("check")
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout + &String::from_utf8_lossy(&out.stderr))
}

async fn cli_cases(auth: Auth) {
    let mut registry = Registry::start(auth).await;
    registry.push_image("team/docker:1", true, 2048, "amd64").await;
    registry.push_image("team/oci:1", false, 2048, "amd64").await;
    registry.push_image("team/big:1", false, 64 * 1024, "amd64").await;
    let ca = registry.dir.join("ca.pem");
    std::fs::write(&ca, &registry.ca_pem).unwrap();
    let ca = ca.to_str().unwrap().to_owned();
    let addr = registry.addr.clone();
    let image = |name: &str| format!("{addr}/team/{name}");
    let login = ["--username", USER, "--password-stdin", "--ca-file", &ca];
    let run = |extra: Vec<String>, password: &'static str| {
        let mut args: Vec<String> = login.iter().map(|s| (*s).to_owned()).collect();
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            regcred_check(&args, password, &[]).await
        }
    };

    let (code, out) = run(vec![image("docker:1"), image("oci:1")], PASSWORD).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("passed in") && out.contains("sha256:"), "{out}");
    let (code, out) =
        run(vec![image("oci:1"), "--output".into(), "json".into(), "--log-level".into(), "off".into()], PASSWORD).await;
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["images"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");

    let expectations: Vec<(Vec<String>, &'static str, i32, &str)> = vec![
        (vec![image("oci:1")], "wrong", 3, "AuthenticationFailed"),
        (vec![image("nothing:1")], PASSWORD, 6, "ImageNotFound"),
        (vec![image("oci:9")], PASSWORD, 6, "ImageNotFound"),
        (vec![image("big:1"), "--max-image-size".into(), "32Ki".into()], PASSWORD, 7, "ImageTooLarge"),
        (vec![image("docker:1"), "--manifest-type".into(), "oci".into()], PASSWORD, 8, "UnsupportedManifestType"),
    ];
    for (args, password, want, reason) in expectations {
        let (code, out) = run(args.clone(), password).await;
        assert_eq!(code, want, "{args:?}: {out}");
        assert!(out.contains(reason), "{args:?}: {out}");
    }
    // Without the CA: untrusted.
    let (code, out) = regcred_check(&["--username", USER, "--password-stdin", &image("oci:1")], PASSWORD, &[]).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("TLSUntrusted"), "{out}");
    // Credentials from a Docker config file.
    let config = registry.dir.join("config.json");
    let auth_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    std::fs::write(&config, serde_json::json!({"auths": {registry.addr.clone(): {"auth": auth_b64}}}).to_string())
        .unwrap();
    let (code, out) =
        regcred_check(&["--docker-config", config.to_str().unwrap(), "--ca-file", &ca, &image("oci:1")], "", &[]).await;
    assert_eq!(code, 0, "{out}");
    // Bad input.
    let (code, out) = regcred_check(&["--ca-file", &ca], "", &[]).await;
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(vec![image("oci:1"), "--max-image-size".into(), "20GB".into()], PASSWORD).await;
    assert_eq!(code, 2, "{out}");
    // Registry stopped.
    registry.stop().await;
    let (code, out) = run(vec![image("oci:1")], PASSWORD).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("RegistryUnreachable"), "{out}");
}

#[tokio::test]
async fn regcred_check_exit_status_says_what_failed_with_basic_authentication() {
    cli_cases(Auth::Basic).await;
}

#[tokio::test]
async fn regcred_check_exit_status_says_what_failed_with_token_authentication() {
    cli_cases(Auth::Token).await;
}

/// The reasons of the Events on profile `name`.
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events = kube::Api::<Event>::all(client.clone()).list(&Default::default()).await.unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn profiles_report_their_preflight_and_withhold_secrets_only_when_asked() {
    use serde_json::json;
    use support::harness::Harness;
    use support::{TestEnv, wait_for};
    TestEnv::new("preflight")
        .await
        .run(|env| async move {
            let registry = Registry::start(Auth::Token).await;
            registry.push_image("team/app:1", false, 2048, "amd64").await;
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
            let first = env.namespace("a", &[("pull", "yes")]).await;
            let mut spec = json!({
                "server": registry.addr,
                "credentials": {"secretRef": {"name": "creds"}},
                "namespaces": h.select("yes"),
                "secretName": "pull",
                "validation": {"images": ["team/app:1"], "maxImageSize": "1Mi"},
                "tls": {"caBundle": registry.ca_pem},
            });
            let profile = h.profile("p", spec.clone()).await;

            // Passing: both conditions, the image's digest and size, Ready.
            let p = h.condition(&profile, "ImagesVerified", "True", "Verified").await;
            h.condition(&profile, "CredentialsValid", "True", "Valid").await;
            let status = p.status.unwrap();
            assert_eq!(status.checks.as_deref(), Some("Passed"));
            assert!(status.last_check_time.is_some());
            let image = &status.images[0];
            assert_eq!(image.image, format!("{}/team/app:1", registry.addr));
            assert!(image.digest.as_deref().unwrap().starts_with("sha256:"));
            assert!(image.size.unwrap() > 2048);
            h.ready(&profile).await;

            // Wrong credentials: reported (Ready says why, an Event too), but Report mode still writes them.
            h.source("creds", &[("username", USER), ("password", "wrong")]).await;
            h.condition(&profile, "CredentialsValid", "False", "AuthenticationFailed").await;
            h.condition(&profile, "Ready", "False", "AuthenticationFailed").await;
            h.wait_credentials(&first, "pull", &registry.addr, "wrong").await;
            assert!(event_reasons(&h.client(), &profile).await.contains(&"AuthenticationFailed".to_owned()));

            // Withhold: nothing is written while the check fails; a newly selected namespace waits.
            spec["validation"]["onFailure"] = json!("Withhold");
            h.profile("p", spec.clone()).await;
            h.condition(&profile, "SecretsSynced", "False", "WithheldByPreflight").await;
            let operator = h.operator.as_ref().unwrap();
            let before = operator.metric("regcred_reconciles_total").await;
            let second = env.namespace("b", &[("pull", "yes")]).await;
            wait_for("a reconcile after the new namespace", std::time::Duration::from_secs(30), || async {
                (operator.metric("regcred_reconciles_total").await > before).then_some(())
            })
            .await;
            assert!(h.secret(&second, "pull").await.is_none(), "a Secret was written while withheld");
            // Fixed: the check passes again, and the withheld namespace gets working credentials.
            h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
            h.wait_credentials(&second, "pull", &registry.addr, PASSWORD).await;
            h.wait_credentials(&first, "pull", &registry.addr, PASSWORD).await;
            h.condition(&profile, "CredentialsValid", "True", "Valid").await;

            // A probe image that does not exist.
            spec["validation"]["images"] = json!(["team/app:1", "team/app:2"]);
            h.profile("p", spec.clone()).await;
            let p = h.condition(&profile, "ImagesVerified", "False", "ImageNotFound").await;
            let images = p.status.unwrap().images;
            assert_eq!(images[1].reason.as_deref(), Some("ImageNotFound"), "{images:?}");
            assert_eq!(images[0].reason, None);

            // `regcred check --profile` runs the same checks from a terminal, with the admin's kubeconfig.
            let kubeconfig = support::kubeconfig_path();
            let (code, out) = regcred_check(
                &["--profile", &profile, "--namespace", &h.op_ns],
                "",
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
            .await;
            assert_eq!(code, 6, "{out}");
            assert!(out.contains("team/app:2") && out.contains("ImageNotFound"), "{out}");
            let (code, out) = regcred_check(
                &["--profile", &profile, "--namespace", &h.op_ns, "team/app:1"],
                "",
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
            .await;
            assert_eq!(code, 0, "{out}");
        })
        .await;
}

/// While a check runs the profile says so; a registry that accepts connections and never answers is reported as
/// unreachable once the request times out.
#[tokio::test]
async fn a_running_preflight_shows_as_checking_and_a_silent_registry_as_unreachable() {
    use serde_json::json;
    use support::harness::Harness;
    use support::{TestEnv, wait_for};
    TestEnv::new("checking")
        .await
        .run(|env| async move {
            // Accepts TCP connections, holds them, says nothing.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let silent = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            });
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
            let spec = json!({
                "server": addr.to_string(),
                "credentials": {"secretRef": {"name": "creds"}},
                "namespaces": h.select("yes"),
                "validation": {"images": ["team/app:1"]},
            });
            let profile = h.profile("p", spec).await;
            let api = kube::Api::<regcred::api::RegistryProfile>::all(h.client());
            wait_for("the profile to show its preflight as Checking", std::time::Duration::from_secs(30), || async {
                let p = api.get(&profile).await.ok()?;
                (p.status?.checks.as_deref() == Some("Checking")).then_some(())
            })
            .await;
            let p = h.condition(&profile, "CredentialsValid", "False", "RegistryUnreachable").await;
            let status = p.status.unwrap();
            assert_eq!(status.checks.as_deref(), Some("Failed"));
            let message = &status.conditions.iter().find(|c| c.type_ == "CredentialsValid").unwrap().message;
            assert!(message.contains(&addr.to_string()), "{message}");
            silent.abort();
        })
        .await;
}
