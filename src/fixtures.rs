//! Test fixtures: one set for every level of test, in the spirit of kube-rs controller-rs's `fixtures.rs`. The
//! unit tests in `src/` have them through `cfg(test)`; the integration and node tests in `tests/` and the
//! benchmarks through the `fixtures` feature, which the crate's dev-dependency on itself turns on.
//!
//! - objects from JSON: a [`profile`] as the apiserver holds it and its [`manifest`] as a test applies it; a
//!   [`namespace`] and its [`namespace_info`] as the selection sees it;
//! - registries that misbehave: [`silent_registry`] (accepts connections, never answers) and [`closed_registry`]
//!   (refuses them);
//! - a ServiceAccount's pull Secret references ([`refs`]) and regcred's record on it ([`record`]);
//! - what a managed Secret holds, read as the kubelet reads it: its [`auths`] and the [`login`] for one registry;
//! - waits on a condition, never a fixed sleep: [`wait_for`] for anything, and on the cluster [`wait_secret`],
//!   [`wait_login`] and [`wait_condition`].
//!
//! A module of the library rather than a file each test crate includes by `#[path]`: compiled once, under the
//! library's lints, with `crate::` naming regcred (in an include, compiled again into every test crate, it names
//! the test). Being test code, it is set aside by the layering test (`src/layers.rs`): no layer's own code can
//! use it, since a build without tests has no such module.
// Test code: a fixture that cannot be built, or a wait that times out, must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::{LocalObjectReference, Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta};
use serde_json::{Value, json};

use crate::api::RegistryProfile;
use crate::names::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE};
use crate::resolve::selection::NamespaceInfo;

/// How long a test waits for something regcred does on a local cluster.
pub const WAIT: Duration = Duration::from_secs(30);

/// The RegistryProfile `name` with `spec` and `labels`, as a test applies it (no uid, no generation). A spec
/// without `namespaces` selects none.
pub fn manifest(name: &str, labels: &[(&str, &str)], mut spec: Value) -> RegistryProfile {
    if spec.get("namespaces").is_none() {
        spec["namespaces"] = json!({});
    }
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
        "metadata": {"name": name, "labels": labels}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("profile {name}: {e}"))
}

/// The RegistryProfile `name` with `spec` as the apiserver holds it: uid `uid-<name>`, generation 1.
pub fn profile(name: &str, spec: Value) -> RegistryProfile {
    let mut p = manifest(name, &[], spec);
    p.metadata.labels = None;
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    p
}

/// The Namespace `name` with `labels`.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Namespace {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        ..Default::default()
    }
}

/// What the selection knows of the namespace `name` with `labels` (not being deleted).
pub fn namespace_info(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo {
        name: name.into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        terminating: false,
    }
}

/// A registry that accepts TCP connections, holds them and never answers: its address (`127.0.0.1:PORT`), and the
/// task holding them (abort it when done).
pub async fn silent_registry() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// The address of a registry that refuses connections at once: a loopback port nothing listens on any more.
pub fn closed_registry() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// A username and password, as a managed Secret holds them for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl Login {
    pub fn new(username: &str, password: &str) -> Self {
        Self { username: username.to_owned(), password: password.to_owned() }
    }
}

/// The `auths` of a `kubernetes.io/dockerconfigjson` Secret, by registry key; none for a Secret of another type
/// or whose document does not parse.
pub fn auths(secret: &Secret) -> BTreeMap<String, Value> {
    if secret.type_.as_deref() != Some(DOCKER_CONFIG_TYPE) {
        return BTreeMap::new();
    }
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_KEY)) else { return BTreeMap::new() };
    let doc: Value = serde_json::from_slice(&raw.0).unwrap_or_default();
    doc.get("auths").and_then(Value::as_object).into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The login a dockerconfigjson Secret holds for `server`, read as the kubelet reads it: from the entry's `auth`
/// when it has one, else from its `username` and `password`.
pub fn login(secret: &Secret, server: &str) -> Option<Login> {
    let entry = auths(secret).remove(server)?;
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        let decoded = String::from_utf8(B64.decode(auth).ok()?).ok()?;
        let (username, password) = decoded.split_once(':')?;
        return Some(Login::new(username, password));
    }
    Some(Login::new(entry.get("username")?.as_str()?, entry.get("password")?.as_str()?))
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until Secret `namespace/name` exists and `accept` takes it; returns it.
pub async fn wait_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    accept: impl Fn(&Secret) -> bool,
) -> Secret {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("Secret {namespace}/{name}"), timeout, || async {
        secrets.get_opt(name).await.ok().flatten().filter(|s| accept(s))
    })
    .await
}

/// Waits until Secret `namespace/name` holds a login for `server` that `accept` takes; returns the Secret and the
/// login.
pub async fn wait_login(
    client: &Client,
    namespace: &str,
    name: &str,
    server: &str,
    timeout: Duration,
    accept: impl Fn(&Login) -> bool,
) -> (Secret, Login) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("Secret {namespace}/{name} with the expected login for {server}"), timeout, || async {
        let secret = secrets.get_opt(name).await.ok().flatten()?;
        let login = login(&secret, server).filter(|l| accept(l))?;
        Some((secret, login))
    })
    .await
}

/// Waits until profile `name` has condition `type_` with `status` and `reason` for its current generation;
/// returns the profile.
pub async fn wait_condition(
    client: &Client,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> RegistryProfile {
    let profiles: Api<RegistryProfile> = Api::all(client.clone());
    wait_for(&format!("{name}: {type_}={status} ({reason})"), timeout, || async {
        let p = profiles.get_opt(name).await.ok().flatten()?;
        let current = p.status.as_ref()?.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == status
                && c.reason == reason
                && c.observed_generation == p.metadata.generation
        });
        current.then_some(p)
    })
    .await
}

/// A ServiceAccount's `imagePullSecrets`, naming `names`.
pub fn refs(names: &[&str]) -> Vec<LocalObjectReference> {
    names.iter().map(|n| LocalObjectReference { name: (*n).into() }).collect()
}

/// regcred's record on a ServiceAccount: profile -> the Secret it listed there.
pub fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(p, s)| ((*p).into(), (*s).into())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, doc: &Value) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(DOCKER_CONFIG_KEY.to_owned(), ByteString(doc.to_string().into_bytes()))])),
            ..Default::default()
        }
    }

    #[test]
    fn a_login_is_read_from_auth_as_the_kubelet_reads_it_or_else_from_its_fields() {
        let doc = json!({"auths": {
            "a.example.com": {"auth": B64.encode("bot:pa:ss"), "username": "ignored", "password": "ignored"},
            "b.example.com": {"username": "u", "password": "p"},
        }});
        let s = secret(DOCKER_CONFIG_TYPE, &doc);
        assert_eq!(login(&s, "a.example.com"), Some(Login::new("bot", "pa:ss")));
        assert_eq!(login(&s, "b.example.com"), Some(Login::new("u", "p")));
        assert_eq!(login(&s, "c.example.com"), None);
        assert_eq!(login(&secret("Opaque", &doc), "a.example.com"), None, "only a dockerconfigjson Secret");
    }

    #[test]
    fn a_profile_is_what_the_apiserver_holds_and_its_manifest_what_a_test_applies() {
        let m = manifest(
            "p",
            &[("regcred-test", "x")],
            json!({"server": "r.example.com", "credentials": {"anonymous": true}}),
        );
        assert_eq!((m.metadata.uid.as_deref(), m.metadata.generation), (None, None));
        assert_eq!(m.metadata.labels.unwrap()["regcred-test"], "x");
        let p = profile("p", json!({"server": "r.example.com", "credentials": {"anonymous": true}}));
        assert_eq!((p.metadata.uid.as_deref(), p.metadata.generation), (Some("uid-p"), Some(1)));
    }
}
