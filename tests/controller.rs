//! The RegistryProfile controller against the real local control plane. Every test runs the real `regcred`
//! binary as a ServiceAccount bound to exactly the chart's RBAC rules.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use regcred::api::{RegistryProfile, conditions};
use serde_json::json;
use support::harness::{Harness, SERVER, WAIT, basic_spec, password_in};
use support::{TestEnv, wait_for};

#[tokio::test]
async fn secrets_appear_in_selected_namespaces_and_nowhere_else() {
    TestEnv::new("selected")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "yes")]).await;
            let c = env.namespace("c", &[("pull", "no")]).await;
            h.source("creds", &[("username", "bot"), ("password", "pw-1")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            for ns in [&a, &b] {
                let s = h.wait_credentials(ns, "pull", SERVER, "pw-1").await;
                assert_eq!(s.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("regcred"));
                assert_eq!(s.labels().get("regcred.dev/profile"), Some(&profile));
                assert_eq!(s.owner_references()[0].name, profile);
            }
            let p = h.ready(&profile).await;
            let status = p.status.unwrap();
            assert_eq!(status.sync_summary.as_deref(), Some("2/2"));
            assert_eq!(status.registry.as_deref(), Some(SERVER));
            assert!(h.secret(&c, "pull").await.is_none(), "unselected namespace got a Secret");
            // The operator's own namespace carries the test label too, but is never selected by a selector.
            assert!(h.secret(&h.op_ns, "pull").await.is_none(), "the operator's namespace got a Secret");
        })
        .await;
}

#[tokio::test]
async fn new_namespaces_are_served_and_relabelled_ones_cleaned_up() {
    TestEnv::new("newns")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            h.ready(&profile).await;
            // New namespaces one after another: each gets its Secret, the status ends counting every one, and it is
            // written at most once per settle window (a count alone waits), not once per namespace.
            let writes = ObjectWrites::watch(h.client(), &profile).await;
            let started = std::time::Instant::now();
            const N: usize = 30;
            for i in 0..N {
                let ns = env.namespace_nowait(&format!("new{i:02}"), &[("pull", "yes")]).await;
                h.wait_credentials(&ns, "pull", SERVER, "pw").await;
            }
            let counted = format!("{N}/{N}");
            let profiles = Api::<RegistryProfile>::all(h.client());
            wait_for("the status to count every new namespace", WAIT, || async {
                let status = profiles.get(&profile).await.ok()?.status?;
                let ready = status.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == conditions::TRUE);
                (ready && status.sync_summary.as_deref() == Some(&counted) && status.selected_namespaces == N as i32)
                    .then_some(())
            })
            .await;
            let (elapsed, writes) = (started.elapsed(), writes.count());
            let windows = elapsed.as_secs_f64() / regcred::controller::STATUS_SETTLE.as_secs_f64();
            eprintln!("{N} new namespaces in {elapsed:.1?}: {writes} status writes");
            assert!(
                writes as f64 <= windows.ceil() + 1.0,
                "{writes} status writes for {N} new namespaces in {elapsed:.1?}: more than one per settle window"
            );
            // A namespace created after the profile.
            let late = env.namespace_nowait("late", &[("pull", "yes")]).await;
            h.wait_credentials(&late, "pull", SERVER, "pw").await;
            // Relabelled out: the Secret goes.
            h.set_labels(&late, json!({"pull": "no"})).await;
            h.wait_gone(&late, "pull").await;
            // And back in.
            h.set_labels(&late, json!({"pull": "yes"})).await;
            h.wait_credentials(&late, "pull", SERVER, "pw").await;
            // Excluded by name.
            let spec = json!({"server": SERVER, "credentials": {"secretRef": {"name": "creds"}}, "secretName": "pull",
                "namespaces": {"selector": {"matchLabels": {"regcred-test": env.id, "pull": "yes"}}, "exclude": ["*-late"]}});
            h.profile("p", spec).await;
            h.wait_gone(&late, "pull").await;
        })
        .await;
}

/// Counts the writes to one object from now on: each new resourceVersion its watch delivers (a write that changes
/// nothing makes none).
struct ObjectWrites {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ObjectWrites {
    async fn watch(client: kube::Client, name: &str) -> Self {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (listed, ready) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = Box::pin(watcher(Api::<RegistryProfile>::all(client), config));
        let counting = count.clone();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => drop(listed.take().map(|l| l.send(()))),
                    Ok(watcher::Event::Apply(_)) => drop(counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
                    _ => {}
                }
            }
        });
        ready.await.unwrap();
        Self { count, task }
    }

    fn count(self) -> usize {
        self.task.abort();
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn deleted_and_edited_secrets_are_restored() {
    TestEnv::new("drift")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            let original = h.wait_credentials(&a, "pull", SERVER, "pw").await;
            h.ready(&profile).await;
            let api = Api::<Secret>::namespaced(h.client(), &a);

            api.delete("pull", &DeleteParams::default()).await.unwrap();
            let restored = h.wait_credentials(&a, "pull", SERVER, "pw").await;
            assert_ne!(restored.uid(), original.uid(), "a deleted Secret is recreated");

            let tampered = json!({"data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(
                format!(r#"{{"auths":{{"{SERVER}":{{"auth":"{}"}}}}}}"#, base64::engine::general_purpose::STANDARD.encode("evil:stolen")))}});
            api.patch("pull", &PatchParams::default(), &Patch::Merge(&tampered)).await.unwrap();
            h.wait_credentials(&a, "pull", SERVER, "pw").await;

            // Our labels removed: still ours by its ownerReference, so the labels come back.
            let unlabel = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
            api.patch("pull", &PatchParams::default(), &Patch::Merge(&unlabel)).await.unwrap();
            wait_for("the managed-by label to be restored", WAIT, || async {
                let s = api.get("pull").await.ok()?;
                (s.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some("regcred")).then_some(())
            })
            .await;
        })
        .await;
}

#[tokio::test]
async fn rotating_the_source_secret_propagates_everywhere() {
    TestEnv::new("rotate")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let namespaces = [
                env.namespace("a", &[("pull", "yes")]).await,
                env.namespace("b", &[("pull", "yes")]).await,
                env.namespace("c", &[("pull", "yes")]).await,
            ];
            h.source("creds", &[("username", "bot"), ("password", "old")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            for ns in &namespaces {
                h.wait_credentials(ns, "pull", SERVER, "old").await;
            }
            h.source("creds", &[("username", "bot"), ("password", "new")]).await;
            for ns in &namespaces {
                h.wait_credentials(ns, "pull", SERVER, "new").await;
            }
            h.ready(&profile).await;
        })
        .await;
}

#[tokio::test]
async fn deleting_the_profile_removes_exactly_its_secrets() {
    TestEnv::new("delete")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let first = h.profile("one", basic_spec(h.select("yes"))).await;
            let mut second_spec = basic_spec(h.select("yes"));
            second_spec["secretName"] = json!("pull-two");
            let second = h.profile("two", second_spec).await;
            // Several profiles in one namespace: each has its own Secret.
            h.wait_credentials(&a, "pull", SERVER, "pw").await;
            h.wait_credentials(&a, "pull-two", SERVER, "pw").await;
            let unrelated = Secret {
                metadata: ObjectMeta { name: Some("unrelated".into()), ..Default::default() },
                string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
                ..Default::default()
            };
            Api::<Secret>::namespaced(h.client(), &a).create(&PostParams::default(), &unrelated).await.unwrap();

            Api::<RegistryProfile>::all(h.client()).delete(&first, &DeleteParams::default()).await.unwrap();
            h.wait_gone(&a, "pull").await;
            h.ready(&second).await;
            assert!(h.secret(&a, "pull-two").await.is_some(), "the other profile's Secret stays");
            assert!(h.secret(&a, "unrelated").await.is_some(), "an unrelated Secret stays");
        })
        .await;
}

/// The names in a ServiceAccount's imagePullSecrets, once it exists.
async fn pull_secrets(api: &Api<ServiceAccount>, name: &str) -> Option<Vec<String>> {
    let sa = api.get_opt(name).await.ok()??;
    Some(sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect())
}

async fn wait_pull_secrets(api: &Api<ServiceAccount>, name: &str, want: &[&str]) {
    wait_for(&format!("ServiceAccount {name} to list {want:?}"), WAIT, || async {
        (pull_secrets(api, name).await? == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_account_mode_adds_and_removes_only_its_own_entries() {
    TestEnv::new("samode")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "no")]).await;
            let (in_a, in_b) =
                (Api::<ServiceAccount>::namespaced(h.client(), &a), Api::<ServiceAccount>::namespaced(h.client(), &b));
            for (api, name, pulls) in
                [(&in_a, "ci-runner", vec!["theirs"]), (&in_a, "builder", vec![]), (&in_b, "ci-runner", vec![])]
            {
                let sa: ServiceAccount = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "imagePullSecrets": pulls.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
                }))
                .unwrap();
                api.create(&PostParams::default(), &sa).await.unwrap();
            }
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let mut spec = basic_spec(h.select("yes"));
            spec["serviceAccounts"] = json!({"names": ["default", "ci-*"]});
            let profile = h.profile("p", spec.clone()).await;
            wait_pull_secrets(&in_a, "default", &["pull"]).await;
            wait_pull_secrets(&in_a, "ci-runner", &["theirs", "pull"]).await;
            let status = wait_for("status.serviceAccounts = 2", WAIT, || async {
                let p = h.ready(&profile).await;
                p.status.filter(|s| s.service_accounts == Some(2))
            })
            .await;
            assert!(status.failed_namespaces.is_empty(), "{status:?}");
            assert_eq!(pull_secrets(&in_a, "builder").await.unwrap(), Vec::<String>::new(), "not named");
            assert_eq!(pull_secrets(&in_b, "ci-runner").await.unwrap(), Vec::<String>::new(), "not selected");

            // An entry removed by hand is restored.
            let clear = json!({"imagePullSecrets": [{"name": "theirs"}]});
            in_a.patch("ci-runner", &PatchParams::default(), &Patch::Merge(&clear)).await.unwrap();
            wait_pull_secrets(&in_a, "ci-runner", &["theirs", "pull"]).await;

            // Mode off: regcred's entries go, everyone else's stay.
            h.profile("p", basic_spec(h.select("yes"))).await;
            wait_pull_secrets(&in_a, "default", &[]).await;
            wait_pull_secrets(&in_a, "ci-runner", &["theirs"]).await;
            let sa = in_a.get("ci-runner").await.unwrap();
            assert!(!sa.annotations().contains_key("regcred.dev/image-pull-secrets"), "{:?}", sa.annotations());

            // Back on, then the profile deleted: its entries go with it.
            h.profile("p", spec).await;
            wait_pull_secrets(&in_a, "ci-runner", &["theirs", "pull"]).await;
            Api::<RegistryProfile>::all(h.client()).delete(&profile, &DeleteParams::default()).await.unwrap();
            wait_pull_secrets(&in_a, "ci-runner", &["theirs"]).await;
            wait_pull_secrets(&in_a, "default", &[]).await;
        })
        .await;
}

#[tokio::test]
async fn every_bad_input_has_its_reason_and_heals_when_fixed() {
    TestEnv::new("badinput")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;

            // Missing source Secret.
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            h.condition(&profile, "CredentialsResolved", "False", "SecretNotFound").await;
            h.condition(&profile, "Ready", "False", "SecretNotFound").await;
            assert!(h.secret(&a, "pull").await.is_none());

            // Fixed: heals without a restart.
            h.source("creds", &[("username", "bot"), ("password", "good")]).await;
            h.wait_credentials(&a, "pull", SERVER, "good").await;
            h.ready(&profile).await;

            // Malformed keys: reported, and the last good Secret stays in place.
            h.source("creds", &[("user", "bot")]).await;
            h.condition(&profile, "CredentialsResolved", "False", "MissingKey").await;
            h.condition(&profile, "SecretsSynced", "False", "CredentialsUnavailable").await;
            assert_eq!(password_in(&h.secret(&a, "pull").await.unwrap(), SERVER).as_deref(), Some("good"));

            h.source("creds", &[(".dockerconfigjson", r#"{"auths":{}}"#)]).await;
            h.condition(&profile, "CredentialsResolved", "False", "InvalidDockerConfig").await;

            h.source("creds", &[("token", "t"), ("password", "p"), ("username", "u")]).await;
            h.condition(&profile, "CredentialsResolved", "False", "AmbiguousKeys").await;

            h.source("creds", &[("username", "bot"), ("password", "good")]).await;
            h.ready(&profile).await;

            // A name conflict with a Secret regcred does not manage: reported, never touched.
            // The foreign Secret exists before the namespace is selected.
            let b = env.namespace("b", &[("pull", "later")]).await;
            let foreign = Secret {
                metadata: ObjectMeta { name: Some("pull".into()), ..Default::default() },
                string_data: Some(BTreeMap::from([("owner".into(), "someone-else".into())])),
                ..Default::default()
            };
            let b_api = Api::<Secret>::namespaced(h.client(), &b);
            b_api.create(&PostParams::default(), &foreign).await.unwrap();
            h.set_labels(&b, json!({"pull": "yes"})).await;
            let p = h.condition(&profile, "SecretsSynced", "False", "Conflict").await;
            let status = p.status.unwrap();
            assert_eq!(status.failed_namespaces.len(), 1);
            assert_eq!(status.failed_namespaces[0].namespace, b);
            assert_eq!(status.sync_summary.as_deref(), Some("1/2"));
            let untouched = b_api.get("pull").await.unwrap();
            assert_eq!(untouched.type_.as_deref(), Some("Opaque"));
            assert!(untouched.labels().is_empty());
            b_api.delete("pull", &DeleteParams::default()).await.unwrap();
            h.wait_credentials(&b, "pull", SERVER, "good").await;
            h.ready(&profile).await;
        })
        .await;
}

#[tokio::test]
async fn anonymous_profiles_write_nothing_and_say_why() {
    TestEnv::new("anon")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            h.wait_credentials(&a, "pull", SERVER, "pw").await;
            // Switching to anonymous removes what the profile wrote.
            h.profile("p", json!({"provider": "mcr", "credentials": {"anonymous": true}, "namespaces": h.select("yes"), "secretName": "pull"})).await;
            h.wait_gone(&a, "pull").await;
            let p = h.condition(&profile, "CredentialsResolved", "True", "Anonymous").await;
            assert_eq!(p.status.unwrap().registry.as_deref(), Some("mcr.microsoft.com"));
            h.ready(&profile).await;
        })
        .await;
}

/// The Secrets labelled as `profile`'s in any namespace, as `namespace/name`.
async fn secrets_of(h: &Harness, profile: &str) -> Vec<String> {
    let lp = ListParams::default().labels(&format!("regcred.dev/profile={profile}"));
    let list = Api::<Secret>::all(h.client()).list_metadata(&lp).await.unwrap();
    list.items.iter().map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())).collect()
}

/// Waits until the profile's status, at its current generation, says `summary` and `provider` (the namespaces the
/// kubelet's credential provider is answered for) and SecretsSynced is True with `reason`.
async fn wait_served(
    h: &Harness,
    profile: &str,
    summary: &str,
    provider: Option<i32>,
    reason: &str,
) -> RegistryProfile {
    let profiles = Api::<RegistryProfile>::all(h.client());
    wait_for(&format!("{profile}: {summary}, provider {provider:?}, {reason}"), WAIT, || async {
        let p = profiles.get(profile).await.ok()?;
        let status = p.status.as_ref()?;
        let synced = status.conditions.iter().find(|c| c.type_ == conditions::SECRETS_SYNCED)?;
        (status.observed_generation == p.metadata.generation
            && status.sync_summary.as_deref() == Some(summary)
            && status.credential_provider_namespaces == provider
            && synced.status == conditions::TRUE
            && synced.reason == reason)
            .then_some(p)
    })
    .await
}

#[tokio::test]
async fn delivery_decides_whether_secrets_are_written_and_switching_it_writes_or_removes_them() {
    TestEnv::new("delivery")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "yes")]).await;
            let c = env.namespace("c", &[("pull", "no")]).await;
            let accounts = Api::<ServiceAccount>::namespaced(h.client(), &a);
            let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "ci-runner"}})).unwrap();
            accounts.create(&PostParams::default(), &sa).await.unwrap();
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let spec = |delivery: &str| {
                let mut spec = basic_spec(h.select("yes"));
                spec["delivery"] = json!(delivery);
                spec["serviceAccounts"] = json!({"names": ["ci-*"]});
                spec
            };

            // The kubelet's credential provider alone: no Secret in any namespace, no ServiceAccount patched.
            let profile = h.profile("p", spec("CredentialProvider")).await;
            let p = wait_served(&h, &profile, "2/2 provider", Some(2), conditions::CREDENTIAL_PROVIDER).await;
            h.ready(&profile).await;
            let status = p.status.unwrap();
            assert_eq!((status.selected_namespaces, status.synced_namespaces), (2, 2), "{status:?}");
            let message = &status.conditions.iter().find(|c| c.type_ == conditions::SECRETS_SYNCED).unwrap().message;
            assert!(message.contains("credential provider"), "{message}");
            assert_eq!(secrets_of(&h, &profile).await, Vec::<String>::new());
            for ns in [&a, &b, &c] {
                assert!(h.secret(ns, "pull").await.is_none(), "{ns} got a Secret");
            }
            let sa = accounts.get("ci-runner").await.unwrap();
            assert!(sa.image_pull_secrets.is_none() && sa.annotations().is_empty(), "patched: {sa:?}");

            // Switched to Secrets: written, and listed by the named account.
            h.profile("p", spec("Secret")).await;
            for ns in [&a, &b] {
                h.wait_credentials(ns, "pull", SERVER, "pw").await;
            }
            wait_pull_secrets(&accounts, "ci-runner", &["pull"]).await;
            wait_served(&h, &profile, "2/2", None, conditions::SYNCED).await;

            // Back to the provider: the Secrets it wrote go (two namespaces: the deletion guard lets them), the
            // account's entry too, and the status follows.
            h.profile("p", spec("CredentialProvider")).await;
            for ns in [&a, &b] {
                h.wait_gone(ns, "pull").await;
            }
            wait_pull_secrets(&accounts, "ci-runner", &[]).await;
            wait_served(&h, &profile, "2/2 provider", Some(2), conditions::CREDENTIAL_PROVIDER).await;
            assert_eq!(secrets_of(&h, &profile).await, Vec::<String>::new());

            // Both, for migrating: the Secrets are written again, and the provider is answered too.
            h.profile("p", spec("Both")).await;
            for ns in [&a, &b] {
                h.wait_credentials(ns, "pull", SERVER, "pw").await;
            }
            wait_served(&h, &profile, "2/2 +provider", Some(2), conditions::SYNCED).await;
            assert!(h.secret(&c, "pull").await.is_none(), "an unselected namespace got a Secret");
        })
        .await;
}

#[tokio::test]
async fn credentials_never_reach_logs_events_or_status() {
    TestEnv::new("canary")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let canary = format!("CANARY-{}", support::suffix());
            // A bad source first (its error path logs and emits Events), then a good one.
            h.source("creds", &[("token", &canary), ("password", &canary), ("username", "u")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            h.condition(&profile, "CredentialsResolved", "False", "AmbiguousKeys").await;
            h.source("creds", &[("username", "bot"), ("password", &canary)]).await;
            h.wait_credentials(&a, "pull", SERVER, &canary).await;
            let p = h.ready(&profile).await;

            assert!(!serde_json::to_string(&p.status).unwrap().contains(&canary), "status leaks the credential");
            let events = Api::<Event>::all(h.client()).list(&ListParams::default()).await.unwrap();
            let ours: Vec<_> = events
                .items
                .iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(profile.as_str()))
                .collect();
            assert!(!ours.is_empty(), "the profile has Events");
            assert!(!serde_json::to_string(&ours).unwrap().contains(&canary), "an Event leaks the credential");
            let logs = h.logs();
            assert!(logs.contains("syncing Secrets"), "the operator logged its work");
            assert!(!logs.contains('\u{1b}'), "plain logs written to a file carry terminal colour codes");
            assert!(!logs.contains(&canary), "the logs leak the credential");
        })
        .await;
}

#[tokio::test]
async fn a_controller_killed_mid_sync_converges_after_restart_without_loss_or_duplicates() {
    TestEnv::new("restart")
        .await
        .run(|env| async move {
            // One write at a time, so that the kill lands mid-sync.
            let mut h = Harness::start_with(&env, &["--write-concurrency", "1"]).await;
            const N: usize = 200;
            let mut namespaces = Vec::new();
            for i in 0..N {
                namespaces.push(env.namespace_nowait(&format!("n{i:03}"), &[("pull", "yes")]).await);
            }
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            let secrets = Api::<Secret>::all(h.client());
            let ours = ListParams::default().labels(&format!("regcred.dev/profile={profile}"));
            // Kill the operator once part of the sync is done.
            let partial = wait_for("part of the sync", Duration::from_secs(60), || async {
                let n = secrets.list_metadata(&ours).await.ok()?.items.len();
                (n >= 20).then_some(n)
            })
            .await;
            h.operator.take().unwrap().kill().await;
            let at_kill = secrets.list_metadata(&ours).await.unwrap().items.len();
            assert!(
                (partial..N).contains(&at_kill),
                "the kill did not interrupt the sync: {at_kill} of {N} Secrets (at least {partial} seen before it)"
            );
            h.restart();
            let p = h.ready(&profile).await;
            assert_eq!(p.status.unwrap().sync_summary.as_deref(), Some(&*format!("{N}/{N}")));
            let all = secrets.list(&ours).await.unwrap();
            assert_eq!(all.items.len(), N, "exactly one Secret per namespace");
            for s in &all.items {
                assert_eq!(password_in(s, SERVER).as_deref(), Some("pw"));
                assert!(namespaces.contains(&s.namespace().unwrap()));
            }
            eprintln!("killed after {at_kill} of {N} Secrets; converged after restart");
        })
        .await;
}

/// The deletion guard (issue 27): one namespace relabelled out loses its Secret at once; a selector typo that would
/// take the Secret out of every namespace holds those deletions and says so, the rest of the sync goes on, and a
/// confirmation for the profile's generation releases them.
#[tokio::test]
async fn a_selector_typo_holds_deletions_until_confirmed_and_ordinary_deselection_is_not_held() {
    TestEnv::new("guard")
        .await
        .run(|env| async move {
            let h = Harness::start(&env).await;
            let mut namespaces = Vec::new();
            for i in 0..5 {
                namespaces.push(env.namespace_nowait(&format!("n{i}"), &[("pull", "yes")]).await);
            }
            h.source("creds", &[("username", "bot"), ("password", "pw")]).await;
            let profile = h.profile("p", basic_spec(h.select("yes"))).await;
            for ns in &namespaces {
                h.wait_credentials(ns, "pull", SERVER, "pw").await;
            }
            h.ready(&profile).await;

            // Ordinary work: one namespace relabelled out loses its Secret at once.
            let out = namespaces.pop().unwrap();
            h.set_labels(&out, json!({"pull": "no"})).await;
            h.wait_gone(&out, "pull").await;
            h.ready(&profile).await;

            // A typo in the selector would delete the Secret from all four namespaces left: held, and said.
            h.profile("p", basic_spec(h.select("yse"))).await;
            let p = h.condition(&profile, "DeletionsHeld", "True", "DeletionsHeld").await;
            let generation = p.metadata.generation.unwrap();
            let status = p.status.unwrap();
            let held = status.conditions.iter().find(|c| c.type_ == "DeletionsHeld").unwrap();
            let confirm =
                format!("kubectl annotate registryprofile {profile} regcred.dev/confirm-deletions={generation}");
            assert!(held.message.starts_with("4 Secrets would be deleted at once"), "{}", held.message);
            assert!(held.message.contains(&confirm), "{}", held.message);
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DeletionsHeld"));
            for ns in &namespaces {
                assert!(h.secret(ns, "pull").await.is_some(), "{ns}: a held Secret was deleted");
            }
            let operator = h.operator.as_ref().unwrap();
            assert_eq!(operator.metric("regcred_deletions_held").await, 4.0);
            let events = Api::<Event>::all(h.client());
            let warnings = || async {
                let all = events.list(&ListParams::default()).await.unwrap().items;
                all.into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(profile.as_str())
                            && e.reason.as_deref() == Some("DeletionsHeld")
                    })
                    .collect::<Vec<_>>()
            };
            let event = wait_for("a DeletionsHeld Event", WAIT, || async { warnings().await.pop() }).await;
            assert_eq!(event.type_.as_deref(), Some("Warning"));
            assert!(event.note.as_deref().unwrap_or_default().contains(&confirm), "{event:?}");

            // The rest of the sync goes on: a namespace the new selector selects gets its Secret.
            let new = env.namespace_nowait("new", &[("pull", "yse")]).await;
            h.wait_credentials(&new, "pull", SERVER, "pw").await;

            // Confirmed for this generation: the held Secrets go, the condition clears.
            let annotate =
                json!({"metadata": {"annotations": {"regcred.dev/confirm-deletions": generation.to_string()}}});
            Api::<RegistryProfile>::all(h.client())
                .patch(&profile, &PatchParams::default(), &Patch::Merge(&annotate))
                .await
                .unwrap();
            for ns in &namespaces {
                h.wait_gone(ns, "pull").await;
            }
            let p = h.ready(&profile).await;
            assert!(p.status.unwrap().conditions.iter().all(|c| c.type_ != "DeletionsHeld"));
            assert!(h.secret(&new, "pull").await.is_some());
            assert_eq!(operator.metric("regcred_deletions_held").await, 0.0);
            assert_eq!(warnings().await.len(), 1, "one Event for the hold, not one per reconcile");
        })
        .await;
}
