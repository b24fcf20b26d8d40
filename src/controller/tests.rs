//! The reconcile without a cluster: a view fed by hand and a mocked apiserver that records every request and
//! answers as the apiserver would. Beside the tests on the real control plane (tests/controller.rs), these pin
//! down exactly which requests one reconcile makes.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::events::{Recorder, Reporter};
use super::{Context, Settings, preflight, reconcile};
use crate::api::RegistryProfile;
use crate::api::conditions::{
    AWAITING_PREFLIGHT, CHECKS_CHECKING, CREDENTIALS_RESOLVED, CREDENTIALS_UNAVAILABLE, DELETIONS_HELD, FALSE,
    SECRETS_SYNCED,
};
use crate::secrets::WriteBudget;
use crate::state::View;
use crate::state::managed::WatchedSecret;

const OP_NS: &str = "regcred-system";

/// One request the reconcile made.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// A mocked apiserver: records each request and answers with what the apiserver would send back (a created or
/// applied object with a uid and resourceVersion; a status patch with the profile).
#[derive(Clone, Default)]
struct Apiserver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Apiserver {
    fn client(&self) -> Client {
        let seen = self.seen.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                let mut answer = body.clone();
                if answer.is_object() {
                    let n = seen.lock().unwrap().len();
                    answer["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{n:012}"));
                    answer["metadata"]["resourceVersion"] = json!((1000 + n).to_string());
                    if let Some(name) = path.rsplit('/').next().filter(|_| parts.method == Method::PATCH) {
                        answer["metadata"]["name"] = json!(name.to_owned());
                    }
                    if path.ends_with("/status") {
                        answer["spec"] = json!({"namespaces": {}, "credentials": {}});
                    }
                    if let Some(ns) = path.split("/namespaces/").nth(1).and_then(|r| r.split('/').next()) {
                        answer["metadata"]["namespace"] = json!(ns);
                    }
                }
                let status = if parts.method == Method::POST { StatusCode::CREATED } else { StatusCode::OK };
                seen.lock().unwrap().push(Seen { method: parts.method, path, body });
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(status).body(Body::from(answer.to_string().into_bytes())).unwrap(),
                )
            }
        });
        Client::new(service, "default")
    }

    /// The requests made since the last call, events aside (their number depends on the status change only).
    fn take(&self) -> Vec<Seen> {
        let all = std::mem::take(&mut *self.seen.lock().unwrap());
        all.into_iter().filter(|s| !s.path.contains("/events")).collect()
    }
}

fn profile(spec: Value) -> RegistryProfile {
    let mut p = crate::fixtures::profile("p", spec);
    p.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
    p.metadata.resource_version = Some("1".into());
    p
}

fn source(name: &str, password: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(OP_NS.into()),
            ..Default::default()
        },
        data: Some(
            [("username", "bot"), ("password", password)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn namespace(name: &str) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.labels = Some([("pull".to_owned(), "yes".to_owned())].into());
    ns
}

struct Scene {
    api: Apiserver,
    view: View,
    feeds: crate::state::Feeds,
    ctx: Arc<Context>,
}

fn scene(namespaces: &[&str]) -> Scene {
    let api = Apiserver::default();
    let client = api.client();
    let (view, feeds) = View::detached(OP_NS, 2.0 / 3.0);
    for ns in namespaces {
        view.namespaces().apply(&Event::Apply(namespace(ns)));
    }
    let settings = Settings {
        operator_namespace: OP_NS.into(),
        write_concurrency: 8,
        profile_selector: None,
        reporter: "regcred".into(),
        healing: crate::api::HealingMode::Evict,
        webhook: Some(tokio::sync::watch::Sender::new(true).subscribe()),
    };
    let recorder = Recorder::new(client.clone(), Reporter { controller: "regcred".into(), instance: None });
    let ctx = Arc::new(Context {
        evictions: client.clone(),
        client,
        settings,
        recorder,
        view: view.clone(),
        metrics: Arc::new(super::Metrics::default()),
        written: std::sync::Mutex::default(),
        checks: preflight::Checks::new(1, view.dirty().clone()),
        healer: std::sync::Mutex::default(),
        writes: WriteBudget::new(8),
        pulls: crate::images::pulls::PullFailures::default(),
        ledgers: super::plan::Ledgers::default(),
    });
    Scene { api, view, feeds, ctx }
}

impl Scene {
    fn put_profile(&mut self, p: &RegistryProfile) -> Arc<RegistryProfile> {
        self.feeds.profiles.apply_watcher_event(&Event::Apply(p.clone()));
        self.view.profile(&p.name_any()).unwrap()
    }

    fn put_source(&mut self, s: Secret) {
        self.feeds.sources.apply_watcher_event(&Event::Apply(s));
    }

    async fn reconcile(&self, p: &Arc<RegistryProfile>) -> Vec<Seen> {
        reconcile::reconcile(p.clone(), self.ctx.clone()).await.unwrap();
        self.api.take()
    }
}

fn spec() -> Value {
    json!({
        "server": "registry.example.com",
        "credentials": {"secretRef": {"name": "creds"}},
        "namespaces": {"selector": {"matchLabels": {"pull": "yes"}}},
        "secretName": "pull",
    })
}

fn summary(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect()
}

#[tokio::test]
async fn a_first_reconcile_creates_each_secret_once_then_writes_its_status_and_a_second_makes_no_request() {
    let mut s = scene(&["a", "b"]);
    s.put_source(source("creds", "pw1"));
    let p = s.put_profile(&profile(spec()));
    let mut seen = summary(&s.reconcile(&p).await);
    seen.sort();
    assert_eq!(
        seen,
        [
            "PATCH /apis/regcred.dev/v1alpha1/registryprofiles/p/status",
            "POST /api/v1/namespaces/a/secrets",
            "POST /api/v1/namespaces/b/secrets",
        ]
    );
    // The writer recorded its writes in the view before any watch event: nothing is written twice.
    assert!(s.view.managed().contains("a", "pull") && s.view.managed().contains("b", "pull"));
    assert_eq!(summary(&s.reconcile(&p).await), Vec::<String>::new(), "a reconcile with nothing to do wrote");
}

#[tokio::test]
async fn a_rotated_source_makes_exactly_one_write_per_secret_even_when_the_watch_lags() {
    let mut s = scene(&["a", "b", "c"]);
    s.put_source(source("creds", "pw1"));
    let p = s.put_profile(&profile(spec()));
    s.reconcile(&p).await;
    s.put_source(source("creds", "pw2"));
    let rotation = s.reconcile(&p).await;
    let writes: Vec<&Seen> = rotation.iter().filter(|r| r.path.contains("/secrets/pull")).collect();
    assert_eq!(writes.len(), 3, "{:?}", summary(&rotation));
    assert!(writes.iter().all(|w| w.method == Method::PATCH), "rotation is a server-side apply");
    let data = writes[0].body["data"][".dockerconfigjson"].as_str().unwrap();
    assert!(!data.is_empty());
    // The watch now delivers the first sync's events, older than the rotation: they change nothing.
    let stale: WatchedSecret = serde_json::from_value(json!({
        "metadata": {"name": "pull", "namespace": "a", "uid": "00000000-0000-0000-0000-000000000000",
                     "resourceVersion": "1", "labels": {"app.kubernetes.io/managed-by": "regcred", "regcred.dev/profile": "p"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "e30="},
    }))
    .unwrap();
    s.view.managed().apply(&Event::Apply(stale));
    assert_eq!(summary(&s.reconcile(&p).await), Vec::<String>::new(), "a stale watch event caused a rewrite");
}

#[tokio::test]
async fn unresolved_credentials_write_no_secret_and_say_why_in_status() {
    let s = &mut scene(&["a"]);
    let p = s.put_profile(&profile(spec()));
    let seen = s.reconcile(&p).await;
    assert_eq!(summary(&seen), ["PATCH /apis/regcred.dev/v1alpha1/registryprofiles/p/status"]);
    let conditions = seen[0].body["status"]["conditions"].as_array().unwrap();
    let resolved = conditions.iter().find(|c| c["type"] == CREDENTIALS_RESOLVED).unwrap();
    assert_eq!((resolved["status"].as_str(), resolved["reason"].as_str()), (Some(FALSE), Some("SecretNotFound")));
    let synced = conditions.iter().find(|c| c["type"] == SECRETS_SYNCED).unwrap();
    assert_eq!(synced["reason"], CREDENTIALS_UNAVAILABLE);
}

#[tokio::test]
async fn a_deselected_namespace_loses_only_the_secret_the_profile_owns() {
    let mut s = scene(&["a", "b"]);
    s.put_source(source("creds", "pw1"));
    let p = s.put_profile(&profile(spec()));
    s.reconcile(&p).await;
    let mut b = namespace("b");
    b.metadata.labels = None;
    s.view.namespaces().apply(&Event::Apply(b));
    // As the namespace watch does: the profile is marked for that namespace.
    s.view.dirty().note(&["p".to_owned()], "b");
    let seen = s.reconcile(&p).await;
    let deletes: Vec<String> = summary(&seen).into_iter().filter(|r| r.starts_with("DELETE")).collect();
    assert_eq!(deletes, ["DELETE /api/v1/namespaces/b/secrets/pull"]);
    let delete = seen.iter().find(|r| r.method == Method::DELETE).unwrap();
    assert!(delete.body["preconditions"]["uid"].is_string(), "deletes are by uid: {}", delete.body);
    assert!(!s.view.managed().contains("b", "pull") && s.view.managed().contains("a", "pull"));
}

#[tokio::test]
async fn a_pending_preflight_never_holds_up_the_secrets_unless_withheld() {
    // A registry that accepts connections and never answers.
    let (addr, _silent) = crate::fixtures::silent_registry().await;
    // The process's TLS provider, as `main` installs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = scene(&["a"]);
    s.put_source(source("creds", "pw1"));
    let mut report = spec();
    report["server"] = json!(addr);
    report["validation"] = json!({"images": ["team/app:1"]});
    let p = s.put_profile(&profile(report.clone()));
    let seen = s.reconcile(&p).await;
    assert!(summary(&seen).contains(&"POST /api/v1/namespaces/a/secrets".to_owned()), "{:?}", summary(&seen));
    let status = &seen.iter().find(|r| r.path.ends_with("/status")).unwrap().body["status"];
    assert_eq!(status["checks"], CHECKS_CHECKING);

    let mut withheld = report;
    withheld["validation"]["onFailure"] = json!("Withhold");
    withheld["secretName"] = json!("held");
    let mut p = profile(withheld);
    p.metadata.name = Some("q".into());
    p.metadata.uid = Some("22222222-2222-3333-4444-555555555555".into());
    let q = s.put_profile(&p);
    let seen = s.reconcile(&q).await;
    assert_eq!(summary(&seen), ["PATCH /apis/regcred.dev/v1alpha1/registryprofiles/q/status"]);
    let conditions = seen[0].body["status"]["conditions"].as_array().unwrap();
    let synced = conditions.iter().find(|c| c["type"] == SECRETS_SYNCED).unwrap();
    assert_eq!(synced["reason"], AWAITING_PREFLIGHT);
}

#[tokio::test]
async fn a_renamed_secret_name_writes_the_new_secrets_and_holds_the_old_ones_until_confirmed() {
    let namespaces = ["a", "b", "c", "d"];
    let mut s = scene(&namespaces);
    s.put_source(source("creds", "pw1"));
    let p = s.put_profile(&profile(spec()));
    s.reconcile(&p).await;
    let mut renamed = spec();
    renamed["secretName"] = json!("pull-new");
    let mut edited = profile(renamed);
    edited.metadata.generation = Some(2);
    let p = s.put_profile(&edited);
    let seen = s.reconcile(&p).await;
    let mut writes: Vec<String> = summary(&seen).into_iter().filter(|r| !r.ends_with("/status")).collect();
    writes.sort();
    let created: Vec<String> = namespaces.iter().map(|ns| format!("POST /api/v1/namespaces/{ns}/secrets")).collect();
    assert_eq!(writes, created, "the new names are written, the old ones kept");
    let status = &seen.iter().find(|r| r.path.ends_with("/status")).unwrap().body["status"];
    let held = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == DELETIONS_HELD).unwrap();
    assert!(held["message"].as_str().unwrap().contains("4 under a former secretName"), "{held}");
    assert!(
        namespaces.iter().all(|ns| s.view.managed().contains(ns, "pull") && s.view.managed().contains(ns, "pull-new"))
    );
    // Still held once the new Secrets are in place (the guard counts namespaces, not Secrets); nothing is written.
    assert_eq!(summary(&s.reconcile(&p).await), Vec::<String>::new());

    // A confirmation for another generation releases nothing; one for this generation, every old Secret.
    edited.metadata.annotations = Some([("regcred.dev/confirm-deletions".to_owned(), "1".to_owned())].into());
    let p = s.put_profile(&edited);
    assert!(summary(&s.reconcile(&p).await).iter().all(|r| !r.starts_with("DELETE")));
    edited.metadata.annotations = Some([("regcred.dev/confirm-deletions".to_owned(), "2".to_owned())].into());
    let p = s.put_profile(&edited);
    let seen = s.reconcile(&p).await;
    let mut deletes: Vec<String> = summary(&seen).into_iter().filter(|r| r.starts_with("DELETE")).collect();
    deletes.sort();
    let old: Vec<String> = namespaces.iter().map(|ns| format!("DELETE /api/v1/namespaces/{ns}/secrets/pull")).collect();
    assert_eq!(deletes, old);
    let status = &seen.iter().find(|r| r.path.ends_with("/status")).unwrap().body["status"];
    assert!(status["conditions"].as_array().unwrap().iter().all(|c| c["type"] != DELETIONS_HELD), "{status}");
}

#[tokio::test]
async fn a_new_namespace_is_planned_alone_and_its_count_waits_for_the_settle_window() {
    let mut s = scene(&["a", "b"]);
    s.put_source(source("creds", "pw1"));
    let p = s.put_profile(&profile(spec()));
    s.reconcile(&p).await;
    // Behind the reconcile's back (no watch event marks it), a's Secret leaves the view: a plan of what changed
    // does not look at a, so nothing is written there.
    let gone: WatchedSecret = serde_json::from_value(json!({"metadata": {"name": "pull", "namespace": "a"}})).unwrap();
    s.view.managed().apply(&Event::Delete(gone));
    s.view.namespaces().apply(&Event::Apply(namespace("c")));
    s.view.dirty().note(&["p".to_owned()], "c");
    let seen = s.reconcile(&p).await;
    assert_eq!(summary(&seen), ["POST /api/v1/namespaces/c/secrets"], "the count waits: no status write yet");
    assert_eq!(summary(&s.reconcile(&p).await), Vec::<String>::new(), "still within the window");

    // Once the window has passed since the last status write, the count is written, and only then.
    for (_, at) in s.ctx.written.lock().unwrap().values_mut() {
        *at = at.checked_sub(super::reconcile::STATUS_SETTLE).unwrap();
    }
    let seen = s.reconcile(&p).await;
    assert_eq!(summary(&seen), ["PATCH /apis/regcred.dev/v1alpha1/registryprofiles/p/status"]);
    assert_eq!(seen[0].body["status"]["syncSummary"], "3/3");

    // A relist: every namespace is planned again, and a's Secret comes back.
    s.view.dirty().mark_everything(["p".to_owned()]);
    let seen = s.reconcile(&p).await;
    assert_eq!(summary(&seen), ["POST /api/v1/namespaces/a/secrets"]);
}

#[tokio::test]
async fn in_service_account_mode_a_new_namespace_and_its_account_are_planned_alone_too() {
    let account = |ns: &str| -> k8s_openapi::api::core::v1::ServiceAccount {
        serde_json::from_value(json!({"metadata": {"name": "default", "namespace": ns, "resourceVersion": "1"}}))
            .unwrap()
    };
    let mut s = scene(&["a"]);
    s.put_source(source("creds", "pw1"));
    let mut with_accounts = spec();
    with_accounts["serviceAccounts"] = json!({"names": ["default"]});
    let p = s.put_profile(&profile(with_accounts));
    s.view.service_accounts().apply(&Event::Apply(account("a")));
    let mut seen = summary(&s.reconcile(&p).await);
    seen.sort();
    assert_eq!(
        seen,
        [
            "PATCH /api/v1/namespaces/a/serviceaccounts/default",
            "PATCH /apis/regcred.dev/v1alpha1/registryprofiles/p/status",
            "POST /api/v1/namespaces/a/secrets",
        ]
    );
    // The account's watch would show the patch; here the cache is told.
    let mut listed = account("a");
    listed.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "pull".into() }]);
    listed.metadata.annotations =
        Some([(crate::state::service_accounts::RECORD_ANNOTATION.to_owned(), "p=pull".to_owned())].into());
    s.view.service_accounts().apply(&Event::Apply(listed));

    s.view.namespaces().apply(&Event::Apply(namespace("b")));
    s.view.service_accounts().apply(&Event::Apply(account("b")));
    s.view.dirty().note(&["p".to_owned()], "b");
    let mut seen = summary(&s.reconcile(&p).await);
    seen.sort();
    assert_eq!(
        seen,
        ["PATCH /api/v1/namespaces/b/serviceaccounts/default", "POST /api/v1/namespaces/b/secrets"],
        "b alone; the count of accounts waits with the rest"
    );
    for (_, at) in s.ctx.written.lock().unwrap().values_mut() {
        *at = at.checked_sub(super::reconcile::STATUS_SETTLE).unwrap();
    }
    let seen = s.reconcile(&p).await;
    assert_eq!(seen[0].body["status"]["serviceAccounts"], 2, "{:?}", summary(&seen));
}
