//! Test support for integration tests against the real local control plane (`make cluster-up`): what runs
//! things. The objects, registries and waits every level of test shares are regcred's own fixtures
//! ([`regcred::fixtures`]).
//!
//! - [`client`] finds the cluster through `KUBECONFIG` or `.local/kubeconfig`.
//! - [`TestEnv`] gives a test its own uniquely named namespaces and cluster-scoped objects, and deletes them
//!   afterwards, even when the test fails (kept when `REGCRED_TEST_KEEP=1`).
//! - [`wait_for`] polls a condition until a deadline; no test sleeps for a fixed time to let something happen.
//! - [`Operator`] runs the real `regcred` binary as a ServiceAccount bound to exactly the chart's RBAC rules.
// Test-support code: a failed set-up step must fail the test loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

pub mod cloud;
pub mod credential_provider;
pub mod harness;
pub mod node;
pub mod registry;
pub mod tokens;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
pub use regcred::fixtures::wait_for;
use serde::de::DeserializeOwned;
use tokio::process::{Child, Command};

pub const MANAGER: &str = "regcred-tests";

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubeconfig of the cluster under test.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".local/kubeconfig"))
}

/// An admin client for the cluster under test.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!("no cluster to test against ({}: {e}); start one with `make cluster-up`", path.display())
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// A loopback port nothing listens on yet, and never handed out before in this process. The kernel may give the
/// same port to two binds in a row once the first has let go of it, so a test that asks for two ports (a registry
/// and its token server) could get one port twice, or a port another test's stopped registry is about to take
/// back; the first server to bind it would then answer for both.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A short random suffix for unique names.
pub fn suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect()
}

/// Server-side applies `obj` as the test manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> K
where
    K: Resource + Clone + serde::Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.patch(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj)).await.unwrap()
}

type Deleter = Box<dyn Fn(Client) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// One test's world: namespaces and cluster-scoped objects that are deleted when the test ends. Clones share
/// the same records, so the test body gets its own handle.
#[derive(Clone)]
pub struct TestEnv {
    pub client: Client,
    /// A unique id, used in every name the test creates.
    pub id: String,
    namespaces: Arc<Mutex<Vec<String>>>,
    cluster_objects: Arc<Mutex<Vec<Deleter>>>,
}

impl TestEnv {
    /// A new environment for the test `name`.
    pub async fn new(name: &str) -> Self {
        let short: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect::<String>().to_lowercase();
        Self {
            client: client().await,
            id: format!("{short}-{}", suffix()),
            namespaces: Arc::default(),
            cluster_objects: Arc::default(),
        }
    }

    /// Creates a namespace named `<id>-<name>` with `labels` plus `regcred-test=<id>`, waits for its default
    /// ServiceAccount, and remembers it for cleanup.
    pub async fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let ns = self.namespace_nowait(name, labels).await;
        let sa: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        wait_for("the default ServiceAccount", Duration::from_secs(30), || async {
            sa.get_opt("default").await.ok().flatten()
        })
        .await;
        ns
    }

    /// As [`TestEnv::namespace`], without waiting for the ServiceAccount.
    pub async fn namespace_nowait(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let full = format!("{}-{name}", self.id);
        let mut all: BTreeMap<&str, &str> = labels.iter().copied().collect();
        all.insert("regcred-test", &self.id);
        let ns = regcred::fixtures::namespace(&full, &all.into_iter().collect::<Vec<_>>());
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        self.namespaces.lock().unwrap().push(full.clone());
        full
    }

    /// Remembers a namespace created by other means for deletion at the end.
    pub fn cleanup_namespace(&self, name: &str) {
        self.namespaces.lock().unwrap().push(name.to_owned());
    }

    /// Remembers a cluster-scoped object for deletion at the end.
    pub fn cleanup<K>(&self, name: &str)
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let owned = name.to_owned();
        self.cluster_objects.lock().unwrap().push(Box::new(move |client| {
            let owned = owned.clone();
            Box::pin(async move {
                let _ = Api::<K>::all(client).delete(&owned, &DeleteParams::default()).await;
            })
        }));
    }

    /// Remembers a deletion of anything else to run at the end.
    pub fn cleanup_with(
        &self,
        delete: impl Fn(Client) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        self.cluster_objects.lock().unwrap().push(Box::new(delete));
    }

    /// Runs the test body, then deletes everything the test created (unless `REGCRED_TEST_KEEP=1`), and
    /// re-raises the body's panic, if any.
    pub async fn run<F, Fut, T>(self, body: F) -> T
    where
        F: FnOnce(TestEnv) -> Fut,
        Fut: Future<Output = T>,
    {
        use futures::FutureExt;
        let result = std::panic::AssertUnwindSafe(body(self.clone())).catch_unwind().await;
        let namespaces = self.namespaces.lock().unwrap().clone();
        if std::env::var("REGCRED_TEST_KEEP").as_deref() == Ok("1") {
            eprintln!("REGCRED_TEST_KEEP=1: keeping namespaces {namespaces:?}");
        } else {
            let deleters: Vec<Deleter> = self.cluster_objects.lock().unwrap().drain(..).rev().collect();
            for delete in deleters {
                delete(self.client.clone()).await;
            }
            let api = Api::<Namespace>::all(self.client.clone());
            for ns in &namespaces {
                let _ = api.delete(ns, &DeleteParams::background()).await;
            }
        }
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The install docs' command for the CRD on its own (README.md, docs/install.md), word for word after `kubectl`
/// (tests/chart.rs holds them to it). Run from the repository's root, so `crds/` is the directory users apply.
pub const CRD_INSTALL: [&str; 4] = ["apply", "--server-side", "-f", "crds/"];

/// The chart, as the install docs name it.
pub const CHART: &str = "charts/regcred";

/// The install docs' `helm install` (README.md, docs/install.md) of release `release` into `namespace`, word for
/// word after `helm` (tests/chart.rs holds them to it). Tests add their `--set` values and flags such as `--wait`
/// after it.
pub fn helm_install_args(release: &str, namespace: &str) -> Vec<String> {
    ["install", release, CHART, "--namespace", namespace, "--create-namespace"].map(str::to_owned).to_vec()
}

/// Installs (or updates) the regcred CRD as the install docs tell users to, [`CRD_INSTALL`], and waits until every
/// CRD kubectl applied is established.
pub async fn install_crd(client: &Client) {
    // Through kubectl's own YAML reader (YAML 1.1, where a bare `Off` is a boolean), from the directory users
    // apply: never through a reader or a path of the tests' own that could hide a difference.
    let mut kubectl = Command::new(kubectl_program());
    kubectl.args(CRD_INSTALL).args(["-o", "name"]).env("KUBECONFIG", kubeconfig_path()).current_dir(repo_root());
    let (status, out) = run_with_input(kubectl, "").await;
    assert!(status == 0, "kubectl {}: {out}", CRD_INSTALL.join(" "));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<&str> =
        out.lines().filter_map(|l| l.strip_prefix("customresourcedefinition.apiextensions.k8s.io/")).collect();
    assert!(!names.is_empty(), "kubectl {} applied no CRD: {out}", CRD_INSTALL.join(" "));
    for name in names {
        wait_for(&format!("the CRD {name} to be established"), Duration::from_secs(30), || async {
            let crd = api.get(name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await;
    }
}

/// The kubectl built with the local control plane (matching the server), else the one on PATH.
pub fn kubectl_program() -> PathBuf {
    let local = repo_root().join(".local/bin/kubectl");
    if local.exists() { local } else { "kubectl".into() }
}

/// Whether Helm release `release` exists in `namespace`.
pub fn helm_release_exists(release: &str, namespace: &str) -> bool {
    std::process::Command::new(repo_root().join(".local/bin/helm"))
        .args(["status", release, "--namespace", namespace])
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The name of the test's MutatingWebhookConfiguration: the only one its operator may touch. It is the chart's
/// full name for the test's release, which the chart's RBAC names.
pub fn webhook_configuration_name(env: &TestEnv) -> String {
    release_name(&env.id)
}

/// The chart's release (and full name, ServiceAccount, webhook configuration) for test `test_id`.
pub fn release_name(test_id: &str) -> String {
    format!("regcred-{test_id}")
}

/// Runs the helm built with the local control plane; panics with its output when it fails.
pub fn helm(args: &[&str]) -> String {
    let helm = repo_root().join(".local/bin/helm");
    let out = std::process::Command::new(&helm)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Installs the chart as release `regcred-<id>` into `namespace` (without the CRD, which tests share, without
/// the webhook configuration, which tests register by URL when they need one, and with no replicas: there is no
/// kubelet here) and returns a kubeconfig that authenticates as the chart's ServiceAccount. The operator then
/// runs with exactly the permissions the chart grants.
pub async fn operator_identity(env: &TestEnv, namespace: &str) -> PathBuf {
    operator_identity_with(env, namespace, &[]).await
}

/// As [`operator_identity`], the chart installed with more values (`key=value`), such as
/// `credentialProvider.enabled=true` for the rules that come with it.
pub async fn operator_identity_with(env: &TestEnv, namespace: &str, sets: &[&str]) -> PathBuf {
    let release = webhook_configuration_name(env);
    let mut install = helm_install_args(&release, namespace);
    install.extend(["--set".to_owned(), "crds.install=false,webhook.enabled=false,replicaCount=0".to_owned()]);
    for set in sets {
        install.extend(["--set".to_owned(), (*set).to_owned()]);
    }
    helm(&install.iter().map(String::as_str).collect::<Vec<_>>());
    // Cluster-scoped objects of the release, and its Event rights in `default`; the rest goes with the namespace.
    env.cleanup::<ClusterRole>(&release);
    env.cleanup::<ClusterRoleBinding>(&release);
    for role in ["profile-editor", "profile-editor-rules", "healing", "credential-provider"] {
        env.cleanup::<ClusterRole>(&format!("{release}-{role}"));
    }
    env.cleanup::<ClusterRoleBinding>(&format!("{release}-healing"));
    env.cleanup::<ClusterRoleBinding>(&format!("{release}-credential-provider"));
    let events = format!("{release}-events");
    env.cleanup_with(move |client| {
        let events = events.clone();
        Box::pin(async move {
            let _ = Api::<Role>::namespaced(client.clone(), "default").delete(&events, &DeleteParams::default()).await;
            let _ = Api::<RoleBinding>::namespaced(client, "default").delete(&events, &DeleteParams::default()).await;
        })
    });
    service_account_kubeconfig(&env.client, namespace, &release).await
}

/// A profile author: the ServiceAccount `author` of a namespace of its own, bound (cluster-wide) to the chart's
/// `<release>-profile-editor` role, as the docs tell administrators to do: it writes RegistryProfiles and
/// reads no Secret. The chart must be installed ([`operator_identity`]); returns once the ClusterRole aggregation
/// controller has filled the role in.
pub async fn profile_author(env: &TestEnv) -> Client {
    let release = release_name(&env.id);
    let authors = env.namespace("authors", &[]).await;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{release}-author")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{release}-profile-editor")},
        "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": authors}],
    }))
    .unwrap();
    apply(&Api::<ClusterRoleBinding>::all(env.client.clone()), &binding).await;
    env.cleanup::<ClusterRoleBinding>(&format!("{release}-author"));
    let author = client_from(&service_account_kubeconfig(&env.client, &authors, "author").await).await;
    let profiles = Api::<regcred::api::RegistryProfile>::all(author.clone());
    wait_for("the profile-editor role to be aggregated", Duration::from_secs(30), || async {
        profiles.list(&kube::api::ListParams::default().limit(1)).await.ok()
    })
    .await;
    author
}

/// What a benchmark needs of its operator: regcred's namespace, holding the source Secret `creds` (user `bench`,
/// password `pw`), a kubeconfig and a client acting as the chart's ServiceAccount, and that account's name as the
/// apiserver's audit log records it.
pub struct BenchOperator {
    pub namespace: String,
    pub kubeconfig: PathBuf,
    pub client: Client,
    pub user: String,
}

pub async fn bench_operator(env: &TestEnv) -> BenchOperator {
    let namespace = env.namespace("system", &[]).await;
    let kubeconfig = operator_identity(env, &namespace).await;
    let client = client_from(&kubeconfig).await;
    let user = format!("system:serviceaccount:{namespace}:{}", webhook_configuration_name(env));
    let source = Secret {
        metadata: ObjectMeta { name: Some("creds".into()), ..Default::default() },
        data: Some(BTreeMap::from([
            ("username".into(), ByteString(b"bench".to_vec())),
            ("password".into(), ByteString(b"pw".to_vec())),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), &namespace).create(&PostParams::default(), &source).await.unwrap();
    BenchOperator { namespace, kubeconfig, client, user }
}

/// A tenant's rights: Role and RoleBinding `tenant` in `namespace`, granting ServiceAccount `tenant` there `verbs`
/// on the core `resources`, and nothing elsewhere.
pub async fn grant_tenant(env: &TestEnv, namespace: &str, resources: &[&str], verbs: &[&str]) {
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tenant"},
        "rules": [{"apiGroups": [""], "resources": resources, "verbs": verbs}],
    }))
    .unwrap();
    apply(&Api::<Role>::namespaced(env.client.clone(), namespace), &role).await;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
    }))
    .unwrap();
    apply(&Api::<RoleBinding>::namespaced(env.client.clone(), namespace), &binding).await;
}

/// Creates the ServiceAccount if needed, mints a token for it, and writes a kubeconfig that uses that token.
pub async fn service_account_kubeconfig(client: &Client, namespace: &str, name: &str) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa =
        ServiceAccount { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    apply(&sas, &sa).await;
    let token = service_account_token(client, namespace, name, None).await;

    let admin = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    let dir = std::env::temp_dir().join("regcred-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    path
}

/// A token (1 h) of ServiceAccount `namespace/name`, for the apiserver or for `audience`, as a projected volume or
/// the Azure Workload Identity webhook would give a Pod.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str, audience: Option<&str>) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let token: TokenRequest = sas.create_subresource("token", name, &PostParams::default(), &request).await.unwrap();
    token.status.unwrap().token.unwrap()
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// Waits until exactly one of `replicas` says it leads; returns its index.
pub async fn leader_of(replicas: &[&Operator]) -> usize {
    wait_for("exactly one replica to lead", Duration::from_secs(60), || async {
        let mut leading = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.metric("regcred_leader").await == 1.0 {
                leading.push(i);
            }
        }
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

/// The real `regcred run` process. Killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `regcred run` with `kubeconfig`, in operator namespace `namespace`, handling only the profiles
    /// labelled `regcred-test=<test id>`, plus `extra` arguments.
    pub fn start(kubeconfig: &Path, namespace: &str, test_id: &str, extra: &[&str]) -> Self {
        Self::start_env(kubeconfig, namespace, test_id, extra, &[])
    }

    /// As [`Operator::start`], with extra environment variables.
    pub fn start_env(
        kubeconfig: &Path,
        namespace: &str,
        test_id: &str,
        extra: &[&str],
        envs: &[(&str, String)],
    ) -> Self {
        let log = std::env::temp_dir().join("regcred-tests").join(format!("operator-{test_id}-{}.log", suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_regcred"))
            .arg("run")
            .args(["--namespace", namespace, "--profile-selector", &format!("regcred-test={test_id}")])
            // Tests run side by side: each operator's metrics endpoint on a port of its own.
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            // The chart's ServiceAccount for the test's release (see operator_identity).
            .env("REGCRED_SERVICE_ACCOUNT", release_name(test_id))
            .env("REGCRED_LOG", "info,regcred=debug")
            // No instance-metadata lookups from a test machine.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, as Kubernetes stops a Pod; returns whether the process exited successfully, and how long it took.
    pub async fn terminate(mut self) -> (bool, Duration) {
        let pid = self.pid().unwrap().to_string();
        let started = std::time::Instant::now();
        Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        (status.success(), started.elapsed())
    }

    /// The sum of a metric's series (such as `regcred_leader` or `regcred_reconciles_total`); 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(&self.metrics_addr().await, "/metrics").await;
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let rest = if rest.starts_with('{') { &rest[rest.find('}')? + 1..] } else { rest };
                rest.strip_prefix(' ')?.split_whitespace().next()?.parse::<f64>().ok()
            })
            .sum()
    }

    /// The operator's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak and current resident set size in KiB (VmHWM, VmRSS), from /proc.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches(" kB").trim().parse().ok()
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// Where the operator's memory is, for the benchmarks' logs: anonymous and file-backed resident KiB, and how
    /// many sockets it holds open (each TLS connection to the apiserver carries buffers of its own).
    pub fn memory_detail(&self) -> Option<String> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("?");
        let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count();
        Some(format!("anon {}, file {}, {sockets} sockets", field("RssAnon:"), field("RssFile:")))
    }

    /// Where the operator serves `/metrics`, `/healthz` and `/readyz`, once it says so in its log.
    pub async fn metrics_addr(&self) -> String {
        wait_for("the metrics endpoint", Duration::from_secs(30), || async {
            let logs = self.logs();
            let line = logs.lines().find(|l| l.contains("metrics and health serving"))?;
            // Plain (`addr=...`) or JSON (`"addr":"..."`) logs.
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
                return Some(json["fields"]["addr"].as_str()?.to_owned());
            }
            let plain: String = strip_ansi(line);
            let at = plain.find("addr=")? + 5;
            Some(plain[at..].split_whitespace().next()?.to_owned())
        })
        .await
    }

    /// What the operator logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test that fails while the operator runs shows the operator's last lines beside its own panic: CI keeps no
/// other trace of them.
impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = strip_ansi(&self.logs());
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(OPERATOR_LOG_TAIL)..].join("\n");
            eprintln!("--- the last {OPERATOR_LOG_TAIL} lines of {} ---\n{tail}\n---", self.log.display());
        }
    }
}

/// How many of the operator's lines a failing test prints.
const OPERATOR_LOG_TAIL: usize = 80;

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A plain HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// Runs `regcred check` with `args` (and `stdin`); returns the exit status and standard output followed by
/// standard error.
pub async fn regcred_check(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcred"));
    command.arg("check").args(args).envs(env.iter().copied());
    run_with_input(command, stdin).await
}

/// Runs `command` with `stdin` on its standard input; returns its exit status (-1 when killed by a signal) and
/// its standard output followed by its standard error.
pub async fn run_with_input(mut command: tokio::process::Command, stdin: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = command
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
