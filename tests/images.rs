//! Image checks at admission, end to end: the real control plane calls regcred's webhook, regcred resolves the
//! workload's images against a real registry (Debian's docker-registry, htpasswd or token authentication) with
//! the profile's credentials, and `kubectl apply` prints the warnings (or the rejection) users see.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use regcred::api::RegistryProfile;
use serde_json::{Value, json};
use support::harness::{Harness, WAIT};
use support::registry::{Auth, PASSWORD, Registry, USER};
use support::webhook::{kubectl, start_operator};
use support::{TestEnv, wait_for};

/// A registry with an image of each kind a check tells apart.
async fn registry(auth: Auth) -> Registry {
    let registry = Registry::start(auth).await;
    registry.push_image("team/oci:1", false, 2048, "amd64").await;
    registry.push_image("team/docker:1", true, 2048, "amd64").await;
    registry.push_image("team/big:1", false, 64 * 1024, "amd64").await;
    registry.push_index("team/multi:1", &["arm64", "amd64"]).await;
    registry.push_index("team/armonly:1", &["arm64"]).await;
    registry
}

/// A profile for `server` (trusting `ca_pem`, when given) selecting namespaces labelled `pull=yes`: OCI
/// manifests only, at most 32 KiB, in `mode`.
async fn profile(h: &Harness, server: &str, ca_pem: &str, mode: &str) -> String {
    h.source("creds", &[("username", USER), ("password", PASSWORD)]).await;
    let mut spec = json!({
        "server": server,
        "credentials": {"secretRef": {"name": "creds"}},
        "namespaces": h.select("yes"),
        "imageChecks": {"mode": mode},
    });
    if !ca_pem.is_empty() {
        spec["tls"] = json!({"caBundle": ca_pem});
        spec["validation"] = json!({"maxImageSize": "32Ki", "manifestTypes": ["oci"], "interval": "1h"});
    }
    let name = h.profile("p", spec).await;
    h.ready(&name).await;
    if !ca_pem.is_empty() {
        // The profile's own preflight (spec.validation) asks the registry too: done before any admission is
        // counted.
        let profiles = Api::<RegistryProfile>::all(h.client());
        wait_for(&format!("the preflight of {name}"), WAIT, || async {
            let checks = profiles.get(&name).await.ok()?.status?.checks?;
            (checks != "Checking").then_some(())
        })
        .await;
    }
    name
}

/// Turns the profile to Deny and waits until the webhook answers in that mode: until a dry run of a workload with
/// `refused` (an image with a definite problem) in `ns` is rejected.
async fn deny(h: &Harness, registry: &Registry, ns: &str, refused: &str) {
    profile(h, &registry.addr, &registry.ca_pem, "Deny").await;
    let manifest = deployment("probe", &[refused.to_owned()]);
    wait_for("the webhook to deny", WAIT, || async {
        let (admitted, _) = kubectl(&["apply", "--dry-run=server", "-n", ns, "-f", "-"], &manifest).await;
        (!admitted).then_some(())
    })
    .await;
}

fn deployment(name: &str, images: &[String]) -> String {
    let containers: Vec<Value> =
        images.iter().enumerate().map(|(i, image)| json!({"name": format!("c{i}"), "image": image})).collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    })
    .to_string()
}

async fn apply(ns: &str, manifest: &str) -> (bool, String) {
    kubectl(&["apply", "-n", ns, "-f", "-"], manifest).await
}

/// The warnings of `kubectl`'s output that name `image`.
fn warnings_about<'a>(output: &'a str, image: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.starts_with("Warning:") && l.contains(&format!("image {image} "))).collect()
}

/// An existing image gives no warning; a missing tag, a too-large image, a refused manifest type and a missing
/// platform each give theirs in `kubectl apply`'s output; a second identical admission asks the registry nothing;
/// in Deny mode the same problems reject the workload with the reason, and a good one is admitted.
async fn apply_shows_each_problem_and_deny_rejects_on_a_definite_answer(auth: Auth) {
    TestEnv::new("image-checks")
        .await
        .run(|env| async move {
            let registry = registry(auth).await;
            let h = start_operator(&env, &[]).await;
            profile(&h, &registry.addr, &registry.ca_pem, "Warn").await;
            let ns = env.namespace("apps", &[("pull", "yes")]).await;
            let r = |path: &str| format!("{}/{path}", registry.addr);
            let (good, index) = (r("team/oci:1"), r("team/multi:1"));
            let problems = [
                (r("team/oci:2"), "ImageNotFound"),
                (r("team/big:1"), "ImageTooLarge"),
                (r("team/docker:1"), "UnsupportedManifestType"),
                (r("team/armonly:1"), "ImageNotFound"),
            ];
            // What each warning tells a person, beside its reason: what is wrong and what to do.
            let said = [
                format!("tag \"2\" does not exist in repository {}; check the tag", r("team/oci")),
                "spec.validation.maxImageSize".to_owned(),
                "spec.validation.manifestTypes".to_owned(),
                "has no variant for platform linux/amd64".to_owned(),
            ];
            let mut images = vec![good.clone(), index.clone()];
            images.extend(problems.iter().map(|(i, _)| i.clone()));

            let started = Instant::now();
            let (ok, out) = apply(&ns, &deployment("web", &images)).await;
            let cold = started.elapsed();
            assert!(ok, "{out}");
            assert!(warnings_about(&out, &good).is_empty() && warnings_about(&out, &index).is_empty(), "{out}");
            for ((image, reason), said) in problems.iter().zip(&said) {
                let lines = warnings_about(&out, image);
                assert_eq!(lines.len(), 1, "one warning for {image}: {out}");
                assert!(lines[0].contains(reason) && lines[0].contains("RegistryProfile"), "{reason}: {out}");
                assert!(lines[0].contains(said.as_str()), "{reason}: {}", lines[0]);
            }
            println!("{}", warnings_about(&out, &problems[0].0)[0]);
            assert!(warnings_about(&out, &r("team/armonly:1"))[0].contains("linux/amd64"), "{out}");

            // The same verdicts from `regcred check --manifest`, before an apply (as a CI pipeline runs it).
            let args = ["--manifest", "-", "--namespace", &h.op_ns, "--manifest-namespace", &ns];
            let (code, text) = support::regcred_check(&args, &deployment("web", &images), &[]).await;
            assert_eq!(code, 6, "the first problem is ImageNotFound: {text}");
            assert!(
                text.contains(&format!("ok    Deployment/web  {good}"))
                    && text.contains(&format!("ok    Deployment/web  {index}")),
                "{text}"
            );
            for (image, reason) in &problems {
                let line = text
                    .lines()
                    .find(|l| l.starts_with("WARN  Deployment/web  ") && l.contains(&format!("image {image} ")));
                assert!(line.is_some_and(|l| l.contains(reason)), "{image} {reason}: {text}");
            }

            let after_first = registry.settled_requests().await;

            // The same images again, in another workload: all from the cache, not one request.
            let (ok, again) = apply(&ns, &deployment("web2", &images)).await;
            assert!(ok, "{again}");
            assert_eq!(again.lines().filter(|l| l.starts_with("Warning:")).count(), problems.len(), "{again}");
            assert_eq!(registry.settled_requests().await, after_first, "a repeated admission asked the registry");
            println!(
                "{auth:?}: first apply of 6 images in {:.0} ms; {after_first:?} (registry, token) requests",
                cold.as_secs_f64() * 1000.0
            );

            // Deny: each definite problem rejects, naming the image and the reason; nothing is created.
            deny(&h, &registry, &ns, &problems[0].0).await;
            for (i, (image, reason)) in problems.iter().enumerate() {
                let name = format!("strict{i}");
                let (ok, out) = apply(&ns, &deployment(&name, &[good.clone(), image.clone()])).await;
                assert!(!ok, "{image} was admitted in Deny mode: {out}");
                assert!(out.contains("denied the request") && out.contains(image) && out.contains(reason), "{out}");
                let (exists, _) = kubectl(&["get", "deployment", "-n", &ns, &name], "").await;
                assert!(!exists, "a rejected Deployment exists");
            }
            let (ok, out) = apply(&ns, &deployment("fine", &[good.clone(), index.clone()])).await;
            assert!(ok && !out.contains("Warning:"), "{out}");
        })
        .await;
}

/// A registry that never answers admits the workload at once, with a "not checked" warning: never a rejection,
/// even in Deny mode, and never the webhook's timeout.
async fn a_hanging_registry_admits_with_a_not_checked_warning(_auth: Auth) {
    TestEnv::new("image-checks-hang")
        .await
        .run(|env| async move {
            let (addr, _silent) = regcred::fixtures::silent_registry().await;
            let h = start_operator(&env, &["--image-check-budget", "1s"]).await;
            let server = addr.to_string();
            profile(&h, &server, "", "Deny").await;
            let ns = env.namespace("apps", &[("pull", "yes")]).await;
            let image = format!("{server}/team/app:1");
            let started = Instant::now();
            let (ok, out) = apply(&ns, &deployment("web", std::slice::from_ref(&image))).await;
            let took = started.elapsed();
            assert!(ok, "{out}");
            let lines = warnings_about(&out, &image);
            assert!(lines.len() == 1 && lines[0].contains("not checked"), "{out}");
            assert!(took < Duration::from_secs(4), "the admission took {took:?}");
        })
        .await;
}

/// Each case once per authentication mode, each a test of its own.
macro_rules! both_modes {
    ($($case:ident;)*) => {
        mod basic {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Auth::Basic).await;
            })*
        }
        mod token {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Auth::Token).await;
            })*
        }
    };
}

both_modes! {
    apply_shows_each_problem_and_deny_rejects_on_a_definite_answer;
    a_hanging_registry_admits_with_a_not_checked_warning;
}

/// Rotated credentials are a new cache key: the next admission asks the registry again, and a password the
/// registry no longer takes is reported at once rather than a cached pass.
#[tokio::test]
async fn rotated_credentials_invalidate_the_cache() {
    TestEnv::new("image-checks-rotate")
        .await
        .run(|env| async move {
            let mut registry = registry(Auth::Basic).await;
            let h = start_operator(&env, &[]).await;
            let name = profile(&h, &registry.addr, &registry.ca_pem, "Warn").await;
            let ns = env.namespace("apps", &[("pull", "yes")]).await;
            let image = format!("{}/team/oci:1", registry.addr);
            let (ok, out) = apply(&ns, &deployment("web", std::slice::from_ref(&image))).await;
            assert!(ok && !out.contains("Warning:"), "{out}");
            let before = registry.settled_requests().await;
            let (_, out) = apply(&ns, &deployment("web2", std::slice::from_ref(&image))).await;
            assert!(!out.contains("Warning:"), "{out}");
            assert_eq!(registry.settled_requests().await, before);

            // The registry's password and the profile's source change together: the new credentials are checked.
            registry.set_password("rotated").await;
            h.source("creds", &[("username", USER), ("password", "rotated")]).await;
            let server = registry.addr.clone();
            h.wait_credentials(&ns, &format!("regcred-{name}"), &server, "rotated").await;
            let (_, out) = apply(&ns, &deployment("web3", std::slice::from_ref(&image))).await;
            assert!(!out.contains("Warning:"), "{out}");
            let after = registry.settled_requests().await;
            assert!(after.0 > before.0, "rotated credentials were answered from the cache: {before:?} -> {after:?}");

            // A password the registry refuses: reported now, not the pass cached for the old one.
            h.source("creds", &[("username", USER), ("password", "stale")]).await;
            h.wait_credentials(&ns, &format!("regcred-{name}"), &server, "stale").await;
            let out = wait_for("the refused password to be reported", WAIT, || async {
                let (_, out) = apply(&ns, &deployment("web4", std::slice::from_ref(&image))).await;
                out.contains("AuthenticationFailed").then_some(out)
            })
            .await;
            assert_eq!(warnings_about(&out, &image).len(), 1, "{out}");
        })
        .await;
}

/// An image from a profile's registry in a namespace the profile does not select, and a pull Secret that does
/// not exist, each get their warning; a Pod whose image changes is checked again.
#[tokio::test]
async fn unselected_namespaces_missing_pull_secrets_and_pod_updates_are_warned_about() {
    TestEnv::new("image-checks-other")
        .await
        .run(|env| async move {
            let registry = registry(Auth::Basic).await;
            let h = start_operator(&env, &[]).await;
            let name = profile(&h, &registry.addr, &registry.ca_pem, "Warn").await;
            let elsewhere = env.namespace("elsewhere", &[]).await;
            let image = format!("{}/team/oci:1", registry.addr);
            let (ok, out) = apply(&elsewhere, &deployment("web", std::slice::from_ref(&image))).await;
            assert!(ok, "{out}");
            let lines: Vec<&str> = out.lines().filter(|l| l.contains("does not select namespace")).collect();
            assert!(lines.len() == 1 && lines[0].contains(&name) && lines[0].contains(&elsewhere), "{out}");

            let ns = env.namespace("apps", &[("pull", "yes")]).await;
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one"},
                "spec": {"containers": [{"name": "c", "image": image}], "imagePullSecrets": [{"name": "forgotten"}]},
            });
            let (ok, out) = apply(&ns, &pod.to_string()).await;
            assert!(ok, "{out}");
            assert!(out.contains("Secret forgotten, which does not exist"), "{out}");
            assert!(warnings_about(&out, &image).is_empty(), "{out}");
            // The Pod's image changes to one that does not exist: the update is checked.
            let missing = format!("{}/team/oci:404", registry.addr);
            let (ok, out) = kubectl(&["set", "image", "-n", &ns, "pod/one", &format!("c={missing}")], "").await;
            assert!(ok, "{out}");
            assert!(warnings_about(&out, &missing).iter().any(|l| l.contains("ImageNotFound")), "{out}");
        })
        .await;
}
