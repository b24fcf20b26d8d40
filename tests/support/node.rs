//! The local cluster's node (`make node-up`): where it is, how its container runtime trusts a test registry, how
//! images get into a registry, and what the kubelet made of a Pod.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use std::time::Instant;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, ObjectMeta};
use kube::{Client, ResourceExt};
use regcred::api::RegistryProfile;
use regcred::fixtures::{self, Login};
use serde_json::json;

use super::registry::{Auth, PASSWORD, Registry, USER};
use super::{TestEnv, apply, helm, helm_release_exists, repo_root, wait_for};

/// The node, as `tools/node-up.sh` recorded it in `$REGCRED_LOCAL/node/node.env`.
pub struct Node {
    pub name: String,
    /// The host's end of the link to the node: test registries listen here.
    pub host_ip: String,
    certs_d: PathBuf,
    pub containerd: String,
    /// The node's network namespace (where its kubelet, and so its credential providers, run).
    pub netns: String,
    /// The kubelet's image credential provider folders (binaries, configs).
    pub provider_bin_dir: PathBuf,
    pub provider_config_dir: PathBuf,
}

impl Node {
    pub fn get() -> Self {
        let local = std::env::var_os("REGCRED_LOCAL").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".local"));
        let path = local.join("node/node.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no local node ({}: {e}); start one with `make node-up`", path.display()));
        let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| env.get(k).unwrap_or_else(|| panic!("{k} missing in {}", path.display())).to_string();
        Self {
            name: get("NODE_NAME"),
            host_ip: get("HOST_IP"),
            certs_d: PathBuf::from(get("NODE_CERTS_D")),
            containerd: get("CONTAINERD_ADDRESS"),
            netns: get("NODE_NETNS"),
            provider_bin_dir: PathBuf::from(get("CREDENTIAL_PROVIDER_BIN_DIR")),
            provider_config_dir: PathBuf::from(get("CREDENTIAL_PROVIDER_CONFIG_DIR")),
        }
    }

    /// The chart's values that serve regcred's credential endpoint and install its kubelet credential provider on
    /// this node for `registries` (`HOST:PORT`, as the kubelet's `matchImages` takes them), the kubelet keeping
    /// an answer at most `cache_seconds`.
    pub fn provider_values(&self, registries: &[&str], cache_seconds: u64) -> Vec<String> {
        let mut values = vec![
            "credentialProvider.enabled=true".to_owned(),
            format!("credentialProvider.cacheMaxSeconds={cache_seconds}"),
            "credentialProvider.nodeInstaller.enabled=true".to_owned(),
            format!("credentialProvider.nodeInstaller.binDir={}", self.provider_bin_dir.display()),
            format!("credentialProvider.nodeInstaller.configDir={}", self.provider_config_dir.display()),
        ];
        for (i, registry) in registries.iter().enumerate() {
            values.push(format!("credentialProvider.nodeInstaller.matchImages[{i}]={registry}"));
        }
        values
    }

    /// After an installation with [`Node::provider_values`]: waits until the chart's installer has placed the
    /// provider and its configuration on the node, then restarts the kubelet as an administrator does
    /// (`tools/node-restart-kubelet.sh`: it reads its providers only when it starts). Returns the configuration.
    pub async fn load_provider(&self, registries: &[&str]) -> serde_yaml::Value {
        let config = wait_for("the installer to place regcred's provider on the node", WAIT, || async {
            let binary = self.provider_bin_dir.join("regcred-credential-provider");
            std::fs::metadata(&binary).ok()?;
            let file = self.provider_config_dir.join("regcred-credential-provider.yaml");
            let config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
            let text = serde_yaml::to_string(&config["providers"][0]["matchImages"]).ok()?;
            registries.iter().all(|r| text.contains(r)).then_some(config)
        })
        .await;
        let out = std::process::Command::new(repo_root().join("tools/node-restart-kubelet.sh")).output().unwrap();
        assert!(out.status.success(), "tools/node-restart-kubelet.sh: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        config
    }

    /// Runs the provider the kubelet runs, as the kubelet runs it (in the node, with the configuration's
    /// arguments), on `request`; returns its exit status, stdout and stderr.
    pub fn run_provider(&self, config: &serde_yaml::Value, request: &serde_json::Value) -> (bool, String, String) {
        use std::io::Write as _;
        let args: Vec<String> = config["providers"][0]["args"]
            .as_sequence()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(self.provider_bin_dir.join("regcred-credential-provider"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a registry where the node reaches it, and makes the node's containerd trust its CA.
    pub async fn registry(&self, auth: super::registry::Auth) -> Registry {
        let registry = Registry::start_at(auth, &self.host_ip).await;
        self.trust(&registry.addr, &registry.ca_pem);
        registry
    }

    /// Makes the node's containerd trust `ca_pem` for the registry at `addr`.
    pub fn trust(&self, addr: &str, ca_pem: &str) {
        let dir = self.certs_d.join(addr);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        // containerd 1.6 needs the [host] table; with `server` and `ca` alone it falls back to plain HTTP. The
        // top-level `ca` too: after a 404 from the [host], containerd tries `server`, and would report its
        // untrusted certificate instead of the 404.
        let hosts = format!(
            "server = \"https://{addr}\"\nca = \"{ca}\"\n\n[host.\"https://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            ca = dir.join("ca.crt").display()
        );
        std::fs::write(dir.join("hosts.toml"), hosts).unwrap();
    }

    /// Removes `image` from the node's image store (the next Pod that uses it pulls it again).
    pub fn forget_image(&self, image: &str) {
        let _ = std::process::Command::new("ctr")
            .args(["--address", &self.containerd, "-n", "k8s.io", "images", "rm", image])
            .output();
    }

    /// Whether the node holds `image`.
    pub fn has_image(&self, image: &str) -> bool {
        let out = std::process::Command::new("ctr")
            .args(["--address", &self.containerd, "-n", "k8s.io", "images", "ls", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l == image)
    }
}

/// Copies an image archive (`docker-archive:PATH` or `oci-archive:PATH`) into `registry` as `repo_tag`, with the
/// registry's credentials; returns the image reference.
pub fn push(registry: &Registry, archive: &str, repo_tag: &str) -> String {
    let certs = registry.dir.join("push-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), registry.trusted_pem()).unwrap();
    let image = format!("{}/{repo_tag}", registry.addr);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-creds", &format!("{USER}:{PASSWORD}")])
        .arg("--dest-cert-dir")
        .arg(&certs)
        .arg(archive)
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo copy {archive} {image}: {}", String::from_utf8_lossy(&out.stderr));
    image
}

/// The archive of the node's pause image: a static binary that runs until stopped, the tests' private workload.
pub fn workload_archive() -> String {
    let out = std::process::Command::new(repo_root().join("tools/node/build.sh")).arg("--archive").output().unwrap();
    assert!(out.status.success(), "tools/node/build.sh: {}", String::from_utf8_lossy(&out.stderr));
    format!("docker-archive:{}", String::from_utf8(out.stdout).unwrap().trim())
}

/// Where .github/workflows/release.yml publishes releases, as the README names it: the image `<it>/regcred`, the
/// chart `oci://<it>/charts/regcred` (what `make release REGISTRY=<it>` pushes).
pub const RELEASES: &str = "ghcr.io/regcred";

/// The chart of the releases published to `registry` (`make release REGISTRY=<registry>`).
pub fn oci_chart(registry: &str) -> String {
    format!("oci://{registry}/charts/regcred")
}

/// The chart's version (charts/regcred/Chart.yaml): the release the README installs, and the one the tests publish.
pub fn chart_version() -> String {
    let text = std::fs::read_to_string(repo_root().join("charts/regcred/Chart.yaml")).unwrap();
    let chart: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    chart["version"].as_str().expect("Chart.yaml has a version").to_owned()
}

/// The README's `helm install` of release `version` as published to `registry`, word for word after `helm`
/// (tests/chart.rs holds the README to it with [`RELEASES`]). Tests add their flags and `--set` values after it.
pub fn helm_install_release_args(release: &str, namespace: &str, registry: &str, version: &str) -> Vec<String> {
    let chart = oci_chart(registry);
    ["install", release, &chart, "--version", version, "--namespace", namespace, "--create-namespace"]
        .map(str::to_owned)
        .to_vec()
}

/// What the tests run for a documented `helm install` of `chart` as release `release`, word for word after `helm`:
/// for a published release (an `oci://` chart), what the node's tests run on the release they publish
/// ([`helm_install_release_args`] at [`RELEASES`] and the chart's version); else the install from the clone's chart
/// that every integration test starts with ([`super::helm_install_args`]). tests/chart.rs holds the docs to it.
pub fn documented_install_args(chart: &str, release: &str, namespace: &str) -> Vec<String> {
    if chart.starts_with("oci://") {
        helm_install_release_args(release, namespace, RELEASES, &chart_version())
    } else {
        super::helm_install_args(release, namespace)
    }
}

/// A release of regcred published by `make release` (tools/release.sh) into a test registry.
pub struct Release {
    /// The `REGISTRY` it was published to: `<registry address>/regcred`.
    pub registry: String,
    pub version: String,
    /// The image pushed, `REPOSITORY@DIGEST`.
    pub image: String,
    /// The file of the CA Helm trusts for the registry.
    ca_file: PathBuf,
}

impl Release {
    /// What Helm needs to read the chart from the test registry: its CA and the registry's credentials (a user of a
    /// private registry logs in with `helm registry login` instead).
    pub fn helm_flags(&self) -> Vec<String> {
        let ca = self.ca_file.display().to_string();
        ["--ca-file", &ca, "--username", USER, "--password", PASSWORD].map(str::to_owned).to_vec()
    }

    /// `helm upgrade` of `release` in `namespace` to this release's chart.
    pub fn upgrade_args(&self, release: &str, namespace: &str) -> Vec<String> {
        let chart = oci_chart(&self.registry);
        let mut args = ["upgrade", release, &chart, "--version", &self.version, "--namespace", namespace]
            .map(str::to_owned)
            .to_vec();
        args.extend(self.helm_flags());
        args
    }
}

/// Publishes regcred as its maintainers do, `make release REGISTRY=<registry>/regcred VERSION=<the chart's
/// version>` (tools/release.sh), into `registry` (the registry's CA and credentials given as its environment): regcred's image (built from the Dockerfile by
/// `tools/image/build.sh`, or the archive the Makefile passes as `REGCRED_IMAGE_ARCHIVE`) and the chart, whose
/// default image is that one.
pub fn release(registry: &Registry) -> Release {
    let ca_file = registry.dir.join("release-ca.crt");
    std::fs::write(&ca_file, registry.trusted_pem()).unwrap();
    let published = format!("{}/regcred", registry.addr);
    let version = chart_version();
    let mut command = std::process::Command::new("make");
    command
        .args(["--no-print-directory", "release", &format!("REGISTRY={published}"), &format!("VERSION={version}")])
        .env("REGISTRY_USER", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .env("REGISTRY_CA", &ca_file)
        .current_dir(repo_root());
    if let Some(archive) = std::env::var_os("REGCRED_IMAGE_ARCHIVE") {
        command.env("IMAGE_ARCHIVE", archive);
    }
    let started = Instant::now();
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "make release REGISTRY={published} VERSION={version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pushed = |what: &str| {
        let line = stdout.lines().find_map(|l| l.strip_prefix(what)?.strip_prefix('='));
        line.unwrap_or_else(|| panic!("make release printed no {what}=: {stdout}")).to_owned()
    };
    let image = pushed("image");
    let chart = pushed("chart");
    assert!(chart.starts_with(&oci_chart(&published)), "the chart went to {chart}");
    eprintln!("released {version} into {published} in {:.1}s", started.elapsed().as_secs_f64());
    Release { registry: published, version, image, ca_file }
}

/// What became of a Pod's image pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    /// The Pod runs, and the kubelet reported `Pulled` (or found the image present) for its container.
    Running,
    /// The kubelet could not pull: its `Failed` event's message.
    Refused(String),
}

/// The kubelet's events for a Pod, oldest first, as "Reason: message".
pub async fn kubelet_events(client: &Client, ns: &str, pod: &str) -> Vec<String> {
    events_from(client, ns, pod, "kubelet").await
}

/// The events `component` reported about a Pod (by `source.component` or `reportingComponent`), oldest first, as
/// "Reason: message".
pub async fn events_from(client: &Client, ns: &str, pod: &str, component: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default().fields(&format!("involvedObject.name={pod}"))).await.unwrap();
    let mut items: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
                || e.reporting_component.as_deref() == Some(component)
        })
        .collect();
    items.sort_by_key(|e| e.first_timestamp.clone().map(|t| t.0));
    items.into_iter().map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect()
}

/// Waits until the Pod runs or its pull definitively failed (ErrImagePull / ImagePullBackOff with the kubelet's
/// Failed event), and says which.
pub async fn pull_outcome(client: &Client, ns: &str, pod: &str) -> Pull {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("pod {ns}/{pod} to run or to fail its pull"), Duration::from_secs(90), || async {
        let p = pods.get(pod).await.ok()?;
        let status = p.status.as_ref()?;
        let container = status.container_statuses.as_ref()?.first()?.clone();
        let state = container.state?;
        if state.running.is_some() {
            return Some(Pull::Running);
        }
        let waiting = state.waiting?;
        let reason = waiting.reason.unwrap_or_default();
        if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
            let events = kubelet_events(client, ns, pod).await;
            let failed = events.iter().find(|e| e.starts_with("Failed: Failed to pull image"))?.clone();
            return Some(Pull::Refused(failed));
        }
        None
    })
    .await
}

/// The Pod's imagePullSecrets, by name.
pub async fn pull_secrets(client: &Client, ns: &str, pod: &str) -> Vec<String> {
    let p = Api::<Pod>::namespaced(client.clone(), ns).get(pod).await.unwrap();
    p.spec.and_then(|s| s.image_pull_secrets).unwrap_or_default().into_iter().map(|r| r.name).collect()
}

/// A Pod running `image` once, with the given pull policy.
pub fn pod(name: &str, image: &str, policy: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": image, "imagePullPolicy": policy}],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
        },
    }))
    .unwrap()
}

/// The names of the Pods of `namespace` matching `selector` that are Ready.
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await.unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect()
}

pub const NS: &str = "regcred-system";
pub const RELEASE: &str = "regcred";
pub const SELECTOR: &str = "app.kubernetes.io/name=regcred,app.kubernetes.io/instance=regcred";
pub const WAIT: Duration = Duration::from_secs(120);

/// The registry that holds regcred's release, and the installation from it. Each test that needs regcred
/// publishes a release into a registry of its own; the first installs the chart, later ones upgrade it to theirs.
pub struct Install {
    pub registry: Registry,
    pub release: Release,
}

pub fn dockerconfigjson(server: &str, user: &str, password: &str) -> ByteString {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ByteString(serde_json::to_vec(&json!({"auths": {server: {"auth": auth}}})).unwrap())
}

/// Publishes a release into a private registry on the node's network ([`release`]) and installs it as the README
/// says, `helm install` of the OCI chart with the chart's defaults but for the pull secret of regcred's image; the
/// kubelet pulls that image from the registry. Waits until both replicas are Ready.
pub async fn install(client: &Client, node: &Node) -> Install {
    install_with(client, node, &[]).await
}

/// As [`install`], with more `--set` values.
pub async fn install_with(client: &Client, node: &Node, values: &[&str]) -> Install {
    let registry = node.registry(Auth::Basic).await;
    let published = release(&registry);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace { metadata: ObjectMeta { name: Some(NS.into()), ..Default::default() }, ..Default::default() };
    apply(&namespaces, &ns).await;
    let pull = Secret {
        metadata: ObjectMeta { name: Some("regcred-image".into()), ..Default::default() },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(".dockerconfigjson".into(), dockerconfigjson(&registry.addr, USER, PASSWORD))])),
        ..Default::default()
    };
    apply(&Api::<Secret>::namespaced(client.clone(), NS), &pull).await;
    let started = Instant::now();
    // As the install docs say: `helm install` the first time, `helm upgrade` (with this test's values) after.
    let mut command = if helm_release_exists(RELEASE, NS) {
        published.upgrade_args(RELEASE, NS)
    } else {
        let mut install = helm_install_release_args(RELEASE, NS, &published.registry, &published.version);
        install.extend(published.helm_flags());
        install
    };
    let sets = ["imagePullSecrets[0].name=regcred-image".to_owned()]
        .into_iter()
        .chain(values.iter().map(|v| (*v).to_owned()))
        .collect::<Vec<_>>()
        .join(",");
    command.extend(["--set".to_owned(), sets, "--wait".to_owned(), "--timeout".to_owned(), "180s".to_owned()]);
    helm(&command.iter().map(String::as_str).collect::<Vec<_>>());
    let ready = wait_for("both replicas Ready", WAIT, || async {
        let ready = ready_pods(client, NS, SELECTOR).await;
        (ready.len() == 2).then_some(ready)
    })
    .await;
    eprintln!("regcred installed, {ready:?} Ready {:.1}s after helm install", started.elapsed().as_secs_f64());
    // An upgrade's old Pods may still lead while they stop: the test starts once one of the new ones does, so
    // what it sees (a token minted once per profile, say) is the new installation's doing.
    wait_for("one of the new replicas to lead", WAIT, || async { leader(client).await.filter(|h| ready.contains(h)) })
        .await;
    wait_for_ca_bundle(client).await;
    Install { registry, release: published }
}

/// The Pod that holds regcred's leader Lease, if one does.
pub async fn leader(client: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), NS);
    leases.get_opt(RELEASE).await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until regcred has filled in its webhook configuration's caBundle (self-managed certificates).
pub async fn wait_for_ca_bundle(client: &Client) {
    super::webhook::wait_ca_bundle(client, RELEASE, WAIT).await;
}

/// The namespace label a test's profiles select: `pull-<id>=yes`.
pub fn selection(env: &TestEnv) -> (String, String) {
    (format!("pull-{}", env.id), "yes".into())
}

/// The source Secret (in regcred's namespace) and a profile for `registry`, selecting namespaces labelled
/// `pull-<id>=yes`; returns the profile's name. The profile trusts the registry's CA (spec.tls).
pub async fn profile(env: &TestEnv, registry: &Registry, service_accounts: bool) -> String {
    let more = if service_accounts { json!({"serviceAccounts": {"names": ["default"]}}) } else { json!({}) };
    profile_with(env, registry, "node", more).await
}

/// As [`profile`], named `<id>-<suffix>`, with the fields of `more` added to its spec.
pub async fn profile_with(env: &TestEnv, registry: &Registry, suffix: &str, more: serde_json::Value) -> String {
    let name = format!("{}-{suffix}", env.id);
    let source = Secret {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        string_data: Some(BTreeMap::from([("username".into(), USER.into()), ("password".into(), PASSWORD.into())])),
        ..Default::default()
    };
    apply(&Api::<Secret>::namespaced(env.client.clone(), NS), &source).await;
    let mut spec = json!({
        "server": registry.addr,
        "credentials": {"secretRef": {"name": name}},
        "namespaces": {"selector": {"matchLabels": {selection(env).0: "yes"}}},
        "tls": {"caBundle": registry.ca_pem},
    });
    for (key, value) in more.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    apply(&Api::<RegistryProfile>::all(env.client.clone()), &fixtures::manifest(&name, &[], spec)).await;
    env.cleanup::<RegistryProfile>(&name);
    fixtures::wait_condition(&env.client, &name, "Ready", "True", "Ready", WAIT).await;
    name
}

/// The Secret regcred wrote into `ns` for `profile`, once it holds `password`.
pub async fn wait_secret(client: &Client, ns: &str, profile: &str, server: &str, password: &str) {
    let want = Login::new(USER, password);
    fixtures::wait_login(client, ns, &format!("regcred-{profile}"), server, WAIT, |l| *l == want).await;
}

/// What a pull test starts from: regcred installed, a registry of `auth` holding the private image `team/app:1.0`
/// (the workload), a profile for it, a namespace it selects (its Secret in place) and one it does not.
pub struct Scene {
    pub registry: Registry,
    pub image: String,
    pub profile: String,
    pub chosen: String,
    pub other: String,
}

pub async fn scene(env: &TestEnv, node: &Node, auth: Auth, service_accounts: bool) -> Scene {
    scene_with(env, node, auth, service_accounts, &[]).await
}

/// As [`scene`], regcred installed with more `--set` values.
pub async fn scene_with(env: &TestEnv, node: &Node, auth: Auth, service_accounts: bool, values: &[&str]) -> Scene {
    install_with(&env.client, node, values).await;
    let registry = node.registry(auth).await;
    let image = push(&registry, &workload_archive(), "team/app:1.0");
    let profile = profile(env, &registry, service_accounts).await;
    let (key, value) = selection(env);
    let chosen = env.namespace("chosen", &[(&key, &value)]).await;
    let other = env.namespace("other", &[]).await;
    wait_secret(&env.client, &chosen, &profile, &registry.addr, PASSWORD).await;
    Scene { registry, image, profile, chosen, other }
}
