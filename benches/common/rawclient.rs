//! The scale benchmark's raw-client baseline: a hand-written kube-rs program that lists the namespaces and creates
//! the Secrets, nothing more. It is placed as regcred is: a process of its own (this benchmark's binary started
//! again with [`FLAG`], built with the same profile as regcred), acting as regcred's ServiceAccount, with the same
//! runtime (multi-threaded tokio, one glibc arena), regcred's logger set up from the same environment
//! ([`crate::common::LOG_ENV`]), and as many writes in flight as regcred may have (its `--write-concurrency`).
//!
//! It lists first (pages of 500, as a watch's initial list does) and says so on its standard output, then waits
//! for a line on its standard input before it writes: the clock starts as regcred's does, with the namespaces
//! already known. It ends by printing what it wrote and its peak RSS.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// The first argument that makes this binary the raw client.
pub const FLAG: &str = "--raw-client";

/// What the raw client writes: for every namespace matching `selector`, one Secret per entry of `secrets`.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct Job {
    /// Who it acts as (regcred's ServiceAccount).
    pub kubeconfig: PathBuf,
    /// The namespaces' label selector.
    pub selector: String,
    /// Per Secret: its name and its labels.
    pub secrets: Vec<Labelled>,
    pub owner: OwnerReference,
    /// The `.dockerconfigjson` every Secret holds.
    pub payload: ByteString,
    pub concurrency: usize,
}

/// A Secret's name and labels.
pub type Labelled = (String, BTreeMap<String, String>);

/// What the raw client reported when it had written everything.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub writes: u64,
    pub errors: u64,
    pub peak_kib: u64,
}

/// When this process was started as the raw client ([`RawClient::start`]), runs its job and exits.
pub fn run_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(FLAG) {
        return;
    }
    let job: Job = serde_json::from_slice(&std::fs::read(&args[2]).unwrap()).unwrap();
    crate::common::child_logging();
    regcred::memory::one_arena();
    let runtime = crate::common::runtime();
    runtime.block_on(run(job));
    std::process::exit(0);
}

async fn run(job: Job) {
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&job.kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut names = Vec::new();
    let mut params = ListParams::default().labels(&job.selector).limit(500);
    loop {
        let page = namespaces.list_metadata(&params).await.unwrap();
        names.extend(page.items.into_iter().filter_map(|ns| ns.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    tracing::info!(namespaces = names.len(), "raw client: namespaces listed");
    say(&format!("listed {}", names.len()));
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await.unwrap().unwrap();

    let writes: Vec<(&str, &Labelled)> =
        names.iter().flat_map(|ns| job.secrets.iter().map(move |s| (ns.as_str(), s))).collect();
    let total = writes.len() as u64;
    let errors: u64 = futures::stream::iter(writes)
        .map(|(ns, (name, labels))| {
            let api = Api::<Secret>::namespaced(client.clone(), ns);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![job.owner.clone()]),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(BTreeMap::from([(".dockerconfigjson".into(), job.payload.clone())])),
                ..Default::default()
            };
            async move {
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::warn!(namespace = ns, error = %e, "raw client: a write failed");
                        1
                    }
                }
            }
        })
        .buffer_unordered(job.concurrency)
        .fold(0, |sum, e| async move { sum + e })
        .await;
    let peak = crate::common::memory_kib(std::process::id()).map_or(0, |(peak, _)| peak);
    tracing::info!(writes = total, errors, "raw client: done");
    say(&format!("done {total} {errors} {peak}"));
}

/// One line to the benchmark, on standard output.
fn say(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}

/// The raw client's process: started, its namespaces listed, waiting for [`RawClient::go`].
pub struct RawClient {
    helper: crate::common::Helper,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl RawClient {
    /// Starts the raw client on `job`; returns once it has listed the namespaces, with how many it found.
    pub async fn start(job: &Job) -> (Self, usize) {
        let dir = std::env::temp_dir().join("regcred-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("raw-client-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(job).unwrap()).unwrap();
        let mut helper = crate::common::Helper::spawn("raw-client", &[FLAG, path.to_str().unwrap()]);
        let mut lines = BufReader::new(helper.child.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap().unwrap_or_else(|| panic!("the raw client: {}", helper.logs()));
        let listed = line.strip_prefix("listed ").and_then(|n| n.parse().ok()).unwrap();
        (Self { helper, lines }, listed)
    }

    /// Lets it write.
    pub async fn go(&mut self) {
        let stdin = self.helper.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits until it has written everything.
    pub async fn done(mut self) -> Done {
        let line =
            self.lines.next_line().await.unwrap().unwrap_or_else(|| panic!("the raw client: {}", self.helper.logs()));
        let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
        let _ = self.helper.child.wait().await;
        Done { writes: fields[0], errors: fields[1], peak_kib: fields[2] }
    }
}
