//! Pod start on the local node with a private image (`make bench`, on a cluster with a node): creation to Running,
//! for Pods whose pull Secret regcred wrote and injected, beside the same image pulled with a Secret created by
//! hand, and pulled with no Secret through regcred's kubelet credential provider, measured in the same run and
//! interleaved. The image is removed from the node before every Pod, so each start includes a real pull from the
//! registry. The provider's Pods pull from a second registry of the same kind: the kubelet runs the provider for
//! every image of a registry its configuration matches, so one registry for all would charge the Secret series
//! for the provider too.
//!
//! Then, from the apiserver's audit log: the TokenReviews regcred makes for 100 Pods of one ServiceAccount, and the
//! kubelet's requests for a pull's credentials (ServiceAccount tokens, pull Secrets) per Pod of each series.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row, write_report};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use support::TestEnv;
use support::node::{Node, Pull, Scene, dockerconfigjson, pod, pull_outcome, scene_with, selection};
use support::registry::{Auth, PASSWORD, USER};

const PODS: usize = 20;
/// Pods of one ServiceAccount for the TokenReview count.
const BURST: usize = 100;

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn start(client: &kube::Client, node: &Node, ns: &str, name: &str, mut spec: Pod, image: &str) -> Duration {
    node.forget_image(image);
    spec.metadata.name = Some(name.into());
    let started = Instant::now();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &spec).await.unwrap();
    assert_eq!(pull_outcome(client, ns, name).await, Pull::Running, "{ns}/{name} did not run");
    started.elapsed()
}

/// The audit log's requests by `user` within [from, to] that `keep` keeps.
fn audited(user: &str, from: jiff::Timestamp, to: jiff::Timestamp, keep: impl Fn(&str) -> bool) -> usize {
    common::audited_requests(user, from, to).iter().filter(|r| keep(r)).count()
}

struct Series {
    times: Vec<Duration>,
    windows: Vec<(jiff::Timestamp, jiff::Timestamp)>,
}

impl Series {
    fn new() -> Self {
        Self { times: Vec::new(), windows: Vec::new() }
    }

    async fn push(&mut self, run: impl std::future::Future<Output = Duration>) {
        let from = jiff::Timestamp::now();
        self.times.push(run.await);
        self.windows.push((from, jiff::Timestamp::now()));
    }

    fn p50_ms(&mut self) -> f64 {
        self.times.sort();
        percentile(&self.times, 0.5).as_secs_f64() * 1000.0
    }

    fn max_ms(&mut self) -> f64 {
        self.times.sort();
        self.times.last().unwrap().as_secs_f64() * 1000.0
    }

    /// The kubelet's requests for credentials per Pod of this series (tokens for its providers, pull Secrets).
    fn kubelet_requests(&self, node: &Node) -> f64 {
        let user = format!("system:node:{}", node.name);
        let n: usize = self
            .windows
            .iter()
            .map(|(from, to)| audited(&user, *from, *to, |r| r.contains("/token") || r.contains("/secrets")))
            .sum();
        n as f64 / self.windows.len() as f64
    }
}

async fn run() {
    let node = Node::get();
    TestEnv::new("bench-node")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            // The provider's registry first: the installation that serves it is the scene's.
            let provided = node.registry(Auth::Basic).await;
            let provided_image = support::node::push(&provided, &support::node::workload_archive(), "team/app:1.0");
            let values = node.provider_values(&[&provided.addr], 60);
            support::node::install_with(&client, &node, &values.iter().map(String::as_str).collect::<Vec<_>>()).await;
            node.load_provider(&[&provided.addr]).await;
            let more = json!({"delivery": "CredentialProvider"});
            support::node::profile_with(&env, &provided, "cp", more).await;
            let (key, value) = selection(&env);
            let through_provider = env.namespace("provided", &[(&key, &value)]).await;

            let Scene { registry, image, chosen: with_regcred, other: by_hand, .. } =
                scene_keeping(&env, &node, &values).await;
            let secret = Secret {
                metadata: ObjectMeta { name: Some("by-hand".into()), ..Default::default() },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(BTreeMap::from([(
                    ".dockerconfigjson".into(),
                    dockerconfigjson(&registry.addr, USER, PASSWORD),
                )])),
                ..Default::default()
            };
            Api::<Secret>::namespaced(client.clone(), &by_hand).create(&PostParams::default(), &secret).await.unwrap();
            let mut manual = pod("x", &image, "Always");
            manual.spec.as_mut().unwrap().image_pull_secrets =
                Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "by-hand".into() }]);
            let injected = pod("x", &image, "Always");
            let bare = pod("x", &provided_image, "Always");

            let (mut a, mut b, mut c) = (Series::new(), Series::new(), Series::new());
            for i in 0..PODS {
                let name = format!("p{i}");
                a.push(start(&client, &node, &with_regcred, &name, injected.clone(), &image)).await;
                b.push(start(&client, &node, &by_hand, &name, manual.clone(), &image)).await;
                c.push(start(&client, &node, &through_provider, &name, bare.clone(), &provided_image)).await;
            }
            let (a50, b50, c50) = (a.p50_ms(), b.p50_ms(), c.p50_ms());
            let (amax, bmax, cmax) = (a.max_ms(), b.max_ms(), c.max_ms());
            let (ak, bk, ck) = (a.kubelet_requests(&node), b.kubelet_requests(&node), c.kubelet_requests(&node));

            // 100 Pods of one ServiceAccount, the image on the node: the TokenReviews regcred makes for them. The
            // series' Pods go first: the node holds 110 Pods.
            for ns in [&with_regcred, &by_hand, &through_provider] {
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                pods.delete_collection(&Default::default(), &Default::default()).await.unwrap();
                support::wait_for("the series' Pods to go", Duration::from_secs(180), || async {
                    pods.list(&Default::default()).await.ok()?.items.is_empty().then_some(())
                })
                .await;
            }
            let from = jiff::Timestamp::now();
            let pods: Api<Pod> = Api::namespaced(client.clone(), &through_provider);
            let mut burst = pod("x", &provided_image, "IfNotPresent");
            for i in 0..BURST {
                burst.metadata.name = Some(format!("burst{i}"));
                pods.create(&PostParams::default(), &burst).await.unwrap();
            }
            for i in 0..BURST {
                assert_eq!(pull_outcome(&client, &through_provider, &format!("burst{i}")).await, Pull::Running);
            }
            let operator = format!("system:serviceaccount:{}:{}", support::node::NS, support::node::RELEASE);
            let reviews = audited(&operator, from, jiff::Timestamp::now(), |r| r.contains("/tokenreviews"));

            println!("\nPod start with a private image, creation to Running ({PODS} Pods each, a fresh pull each)");
            row("figure", "measured", "target");
            row("regcred's Secret, injected by the webhook: p50", &format!("{a50:.0} ms"), "");
            row("a Secret created by hand: p50", &format!("{b50:.0} ms"), "");
            row("regcred's credential provider, no Secret: p50", &format!("{c50:.0} ms"), "");
            row("ratio p50 (regcred's Secret / by hand)", &format!("{:.2}x", a50 / b50), "");
            row("ratio p50 (provider / regcred's Secret)", &format!("{:.2}x", c50 / a50), "<= 1.05x");
            row("regcred's Secret: max", &format!("{amax:.0} ms"), "");
            row("a Secret created by hand: max", &format!("{bmax:.0} ms"), "");
            row("regcred's credential provider: max", &format!("{cmax:.0} ms"), "");
            row("kubelet requests per pull: regcred's Secret", &format!("{ak:.2}"), "");
            row("kubelet requests per pull: by hand", &format!("{bk:.2}"), "");
            row("kubelet requests per pull: provider", &format!("{ck:.2}"), "");
            row(&format!("TokenReviews for {BURST} Pods of one ServiceAccount"), &reviews.to_string(), "");
            write_report(
                "node",
                &json!({
                    "pods": PODS, "regcred_p50_ms": a50, "by_hand_p50_ms": b50, "provider_p50_ms": c50,
                    "ratio_p50": a50 / b50, "provider_ratio_p50": c50 / a50,
                    "regcred_max_ms": amax, "by_hand_max_ms": bmax, "provider_max_ms": cmax,
                    "kubelet_requests_per_pull": {"regcred_secret": ak, "by_hand": bk, "provider": ck},
                    "token_reviews_per_burst": reviews, "burst": BURST,
                }),
            );
        })
        .await;
}

/// [`scene`] on the installation that serves the provider (its values kept).
async fn scene_keeping(env: &TestEnv, node: &Node, values: &[String]) -> Scene {
    scene_with(env, node, Auth::Basic, false, &values.iter().map(String::as_str).collect::<Vec<_>>()).await
}
