//! The registry preflight against a real registry (Debian's docker-registry, TLS from a test CA), with htpasswd
//! (Basic) and with token authentication behind a local token server; the images are pushed by the tests.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use regcred::registry::preflight::{Credentials, ManifestKind, Options, Reason, Report, check};
use support::regcred_check;
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

/// A registry with the images every case reads.
struct Pushed {
    registry: Registry,
    docker: serde_json::Value,
    oci: serde_json::Value,
    entries: Vec<serde_json::Value>,
    big: serde_json::Value,
    opts: Options,
    addr: String,
}

async fn pushed(auth: Auth) -> Pushed {
    let registry = Registry::start(auth).await;
    let docker = registry.push_image("team/docker:1", true, 2048, "amd64").await;
    let oci = registry.push_image("team/oci:1", false, 2048, "amd64").await;
    let entries = registry.push_index("team/multi:1", &["arm64", "amd64"]).await;
    let big = registry.push_image("team/big:1", false, 64 * 1024, "amd64").await;
    let opts = trusting(&registry);
    let addr = registry.addr.clone();
    Pushed { registry, docker, oci, entries, big, opts, addr }
}

fn three() -> Vec<String> {
    ["team/docker:1".to_owned(), "team/oci:1".to_owned(), "team/multi:1".to_owned()].into()
}

/// The requests regcred made since `from` (registry, token server), all of them logged.
async fn requests_since(registry: &Registry, from: (usize, usize)) -> (usize, usize) {
    let now = registry.settled_requests().await;
    (now.0 - from.0, now.1 - from.1)
}

/// Valid credentials; a Docker v2 image, an OCI image, an index resolved to linux/amd64; and exactly the
/// requests that takes (see [`BASIC_REQUESTS`]): a change in these counts means the preflight asks the registry
/// more, or less, than before.
async fn valid_credentials_resolve_every_kind_of_image(auth: Auth, want_requests: (usize, usize)) {
    let p = pushed(auth).await;
    let from = p.registry.settled_requests().await;
    let started = std::time::Instant::now();
    let report = check(&p.addr, Some(&good()), &three(), &p.opts).await;
    let took = started.elapsed();
    assert_eq!(report.credentials, None, "{report:?}");
    assert_eq!(reasons(&report), vec![None, None, None], "{report:?}");
    assert_eq!(report.images[0].digest.as_ref(), p.docker["digest"].as_str().map(String::from).as_ref());
    assert_eq!(report.images[0].media_type.as_deref(), Some("application/vnd.docker.distribution.manifest.v2+json"));
    assert_eq!(report.images[1].digest.as_ref(), p.oci["digest"].as_str().map(String::from).as_ref());
    assert_eq!(report.images[1].media_type.as_deref(), Some("application/vnd.oci.image.manifest.v1+json"));
    let config_and_layer = report.images[1].size.unwrap();
    assert!(config_and_layer > 2048 && config_and_layer < 2048 + 512, "size {config_and_layer}");
    assert_eq!(report.images[2].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(report.images[2].digest.as_ref(), p.entries[1]["digest"].as_str().map(String::from).as_ref());
    let counted = requests_since(&p.registry, from).await;
    println!(
        "{auth:?}: full preflight of 3 images (one an index) in {:.1} ms; {counted:?} (registry, token) requests",
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(counted, want_requests, "(registry, token server) requests of one preflight of 3 images");
}

async fn an_index_resolves_to_the_asked_platform_or_names_those_it_has(auth: Auth) {
    let p = pushed(auth).await;
    let one = ["team/multi:1".to_owned()];
    let arm = check(&p.addr, Some(&good()), &one, &Options { platform: "linux/arm64".into(), ..p.opts.clone() }).await;
    assert_eq!(arm.images[0].digest.as_ref(), p.entries[0]["digest"].as_str().map(String::from).as_ref());
    let none =
        check(&p.addr, Some(&good()), &one, &Options { platform: "windows/amd64".into(), ..p.opts.clone() }).await;
    let failure = none.images[0].failure.as_ref().unwrap();
    assert_eq!(failure.reason, Reason::ImageNotFound);
    assert!(failure.message.contains("linux/arm64") && failure.message.contains("linux/amd64"), "{}", failure.message);
}

async fn a_wrong_password_fails_the_credentials_and_never_shows_in_the_report(auth: Auth) {
    let p = pushed(auth).await;
    let wrong = Credentials { username: USER.into(), password: "wrong".into() };
    let report = check(&p.addr, Some(&wrong), &three(), &p.opts).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::AuthenticationFailed), "{report:?}");
    assert!(report.images.is_empty());
    assert!(!format!("{report:?}").contains("wrong"), "the password leaked into the report: {report:?}");
    let message = &report.credentials.as_ref().unwrap().message;
    let want = format!("registry {} refused the credentials of user \"{USER}\"", p.addr);
    assert!(message.starts_with(&want) && message.contains("check the username and password"), "{message}");
}

async fn unknown_repositories_and_tags_are_not_found(auth: Auth) {
    let p = pushed(auth).await;
    let report = check(&p.addr, Some(&good()), &["team/nothing:1".to_owned(), "team/oci:2".to_owned()], &p.opts).await;
    assert_eq!(reasons(&report), vec![Some("ImageNotFound"), Some("ImageNotFound")], "{report:?}");
    // Said for a person: which tag of which repository, and what to do (docker-registry answers MANIFEST_UNKNOWN
    // for a repository it does not have, too).
    let message = |i: usize| report.images[i].failure.as_ref().map(|f| f.message.clone()).unwrap_or_default();
    for (i, tag, repository) in [(0, "1", "team/nothing"), (1, "2", "team/oci")] {
        let want = format!("tag \"{tag}\" does not exist in repository {}/{repository}; check the tag", p.addr);
        assert!(message(i).starts_with(&want), "{}", message(i));
    }
}

async fn too_large_images_and_refused_manifest_types_fail_with_their_reasons(auth: Auth) {
    let p = pushed(auth).await;
    let limited = Options { max_size: Some(32 * 1024), accepted: vec![ManifestKind::Oci], ..p.opts.clone() };
    let images = ["team/big:1".to_owned(), "team/docker:1".to_owned(), "team/oci:1".to_owned()];
    let report = check(&p.addr, Some(&good()), &images, &limited).await;
    assert_eq!(reasons(&report), vec![Some("ImageTooLarge"), Some("UnsupportedManifestType"), None], "{report:?}");
    assert_eq!(report.images[0].digest.as_ref(), p.big["digest"].as_str().map(String::from).as_ref());
}

async fn an_untrusted_certificate_fails_unless_verification_is_skipped(auth: Auth) {
    let p = pushed(auth).await;
    let report = check(&p.addr, Some(&good()), &three(), &Options::default()).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::TlsUntrusted), "{report:?}");
    let message = &report.credentials.as_ref().unwrap().message;
    assert!(message.contains("is not trusted") && message.contains("spec.tls.caBundle"), "{message}");
    let skipped =
        check(&p.addr, Some(&good()), &three(), &Options { insecure_skip_verify: true, ..Options::default() }).await;
    assert_eq!(skipped.first_failure(), None, "{skipped:?}");
}

async fn a_stopped_registry_is_unreachable(auth: Auth) {
    let mut p = pushed(auth).await;
    p.registry.stop().await;
    let report = check(&p.addr, Some(&good()), &three(), &p.opts).await;
    assert_eq!(report.credentials.as_ref().map(|f| f.reason), Some(Reason::RegistryUnreachable), "{report:?}");
    let message = &report.credentials.as_ref().unwrap().message;
    let want = format!("cannot reach registry {}: the connection was refused; check", p.addr);
    assert!(message.starts_with(&want), "{message}");
}

#[tokio::test]
async fn a_probe_image_on_a_foreign_host_is_refused_and_nothing_reaches_that_host() {
    let p = pushed(Auth::Basic).await;
    let (foreign, connections, task) = support::registry::counting().await;
    let images = ["team/oci:1".to_owned(), format!("{foreign}/team/oci:1"), "other.example.com/x:1".to_owned()];
    let report = check(&p.addr, Some(&good()), &images, &p.opts).await;
    // The profile's own image is still checked; the foreign ones are refused with the reason, without a request.
    assert_eq!(report.credentials, None, "{report:?}");
    assert_eq!(reasons(&report), vec![None, Some("ImageNotServed"), Some("ImageNotServed")], "{report:?}");
    let message = &report.images[1].failure.as_ref().unwrap().message;
    assert!(message.contains(&p.addr) && message.contains("relative to the registry"), "{message}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "a request reached the foreign host");
    task.abort();
}

#[tokio::test]
async fn a_plain_http_token_realm_never_receives_the_credentials() {
    use regcred::registry::preflight::{Session, resolve_images};
    let registry = Registry::start(Auth::TokenOverHttp).await;
    let opts = trusting(&registry);
    // The ping (controller, `regcred check`) and an admission's image check (no ping) both refuse, saying why.
    let report = check(&registry.addr, Some(&good()), &["team/app:1".to_owned()], &opts).await;
    let failure = report.credentials.as_ref().unwrap();
    assert_eq!(failure.reason, Reason::AuthenticationFailed, "{report:?}");
    assert!(failure.message.contains("plain http://"), "{}", failure.message);
    let session = Session::new(&opts).unwrap();
    let resolved = resolve_images(&session, Some(&good()), &[format!("{}/team/app:1", registry.addr)], &opts).await;
    let failure = resolved[0].failure.as_ref().unwrap();
    assert_eq!(failure.reason, Reason::AuthenticationFailed, "{resolved:?}");
    assert!(failure.message.contains("plain http://"), "{}", failure.message);
    // The realm counts every request it gets, with or without an Authorization header: none arrived.
    assert_eq!(registry.token_requests().await, 0, "the plain-HTTP realm was sent a request");
    // An HTTPS realm (the token suite) keeps working: see token::valid_credentials_resolve_every_kind_of_image.
}

/// Each case once per authentication mode, each a test of its own.
macro_rules! both_modes {
    ($($case:ident $(, $arg:expr)?;)*) => {
        mod basic {
            use super::*;
            $(#[tokio::test]
            async fn $case() {
                super::$case(Auth::Basic $(, $arg.0)?).await;
            })*
        }
        mod token {
            use super::*;
            $(#[tokio::test]
            async fn $case() {
                super::$case(Auth::Token $(, $arg.1)?).await;
            })*
        }
    };
}

both_modes! {
    valid_credentials_resolve_every_kind_of_image, (BASIC_REQUESTS, TOKEN_REQUESTS);
    an_index_resolves_to_the_asked_platform_or_names_those_it_has;
    a_wrong_password_fails_the_credentials_and_never_shows_in_the_report;
    unknown_repositories_and_tags_are_not_found;
    too_large_images_and_refused_manifest_types_fail_with_their_reasons;
    an_untrusted_certificate_fails_unless_verification_is_skipped;
    a_stopped_registry_is_unreachable;
}

/// (registry, token server) requests of a preflight of 3 images, one an index, with htpasswd: the /v2/ ping
/// (unauthenticated, then with the credentials), and for each image its manifest (the index's also its
/// platform's) read after a HEAD.
const BASIC_REQUESTS: (usize, usize) = (9, 0);
/// The same with token authentication: one token per repository (and one for the ping), the ping answered from
/// the token.
const TOKEN_REQUESTS: (usize, usize) = (8, 4);

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
            // A probe image on another host: refused by the CLI with its own exit status, and nothing reaches it.
            let (foreign, connections, task) = support::registry::counting().await;
            let (code, out) = regcred_check(
                &["--profile", &profile, "--namespace", &h.op_ns, &format!("{foreign}/team/app:1")],
                "",
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
            .await;
            assert_eq!(code, 9, "{out}");
            assert!(out.contains("ImageNotServed"), "{out}");
            assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "a request reached the foreign host");
            task.abort();
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
            let (addr, silent) = regcred::fixtures::silent_registry().await;
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

/// The preflight runs off the reconcile path: with the checks of several profiles hanging on registries that
/// accept connections and never answer, a healthy profile's brand-new namespace gets its Secret while those checks
/// are all still pending (the order is asserted; how long it took is `make bench`'s).
#[tokio::test]
async fn silent_registries_never_delay_another_profiles_new_namespace() {
    use serde_json::json;
    use support::harness::Harness;
    use support::{TestEnv, wait_for};
    TestEnv::new("hanging")
        .await
        .run(|env| async move {
            let (addr, silent) = regcred::fixtures::silent_registry().await;
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
            let api = kube::Api::<regcred::api::RegistryProfile>::all(h.client());
            // More hanging profiles than the preflight has workers, and than the controller reconciles at once.
            let mut hanging = Vec::new();
            for i in 0..8 {
                let spec = json!({
                    "server": format!("{addr}/p{i}"),
                    "credentials": {"secretRef": {"name": "creds"}},
                    "namespaces": h.select("hang"),
                    "secretName": format!("hang-{i}"),
                    "validation": {"images": ["team/app:1"]},
                });
                hanging.push(h.profile(&format!("hang{i}"), spec).await);
            }
            let checking = |name: String| {
                let api = api.clone();
                async move { api.get(&name).await.ok()?.status?.checks.filter(|c| c == "Checking") }
            };
            let healthy = h.profile("healthy", support::harness::basic_spec(h.select("yes"))).await;
            let ns = env.namespace("fresh", &[("pull", "yes")]).await;
            h.wait_credentials(&ns, "pull", support::harness::SERVER, PASSWORD).await;
            // A check goes from Checking to Failed, never back: a profile seen Checking now had not finished its
            // check when the Secret was written (with the preflight inside the reconcile, the healthy profile
            // waited for a reconcile slot until checks had failed).
            for name in &hanging {
                wait_for(
                    &format!("{name} still checking after the Secret"),
                    std::time::Duration::from_secs(30),
                    || checking(name.clone()),
                )
                .await;
            }
            h.ready(&healthy).await;
            silent.abort();
        })
        .await;
}
