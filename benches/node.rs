//! Pod start on the local node with a private image (`make bench`, on a cluster with a node): creation to Running,
//! for Pods whose pull Secret regcred wrote and injected, beside the same image pulled with a Secret created by
//! hand, measured in the same run and interleaved. The image is removed from the node before every Pod, so each
//! start includes a real pull from the registry.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::{percentile, row, write_report};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use support::TestEnv;
use support::node::{Node, Pull, Scene, dockerconfigjson, pod, pull_outcome, scene};
use support::registry::{Auth, PASSWORD, USER};

const PODS: usize = 20;

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

async fn run() {
    let node = Node::get();
    TestEnv::new("bench-node")
        .await
        .run(|env| async move {
            let client = env.client.clone();
            let Scene { registry, image, chosen: with_regcred, other: by_hand, .. } =
                scene(&env, &node, Auth::Basic, false).await;
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

            let (mut a, mut b) = (Vec::new(), Vec::new());
            for i in 0..PODS {
                a.push(start(&client, &node, &with_regcred, &format!("p{i}"), injected.clone(), &image).await);
                b.push(start(&client, &node, &by_hand, &format!("p{i}"), manual.clone(), &image).await);
            }
            a.sort();
            b.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let (a50, b50) = (ms(percentile(&a, 0.5)), ms(percentile(&b, 0.5)));
            let (a99, b99) = (ms(percentile(&a, 0.99)), ms(percentile(&b, 0.99)));
            println!("\nPod start with a private image, creation to Running ({PODS} Pods each, a fresh pull each)");
            row("figure", "measured", "target");
            row("regcred's Secret, injected by the webhook: p50", &format!("{a50:.0} ms"), "");
            row("a Secret created by hand: p50", &format!("{b50:.0} ms"), "");
            row("ratio p50 (regcred / by hand)", &format!("{:.2}x", a50 / b50), "");
            row("regcred's Secret: max", &format!("{a99:.0} ms"), "");
            row("a Secret created by hand: max", &format!("{b99:.0} ms"), "");
            write_report(
                "node",
                &serde_json::json!({
                    "pods": PODS, "regcred_p50_ms": a50, "by_hand_p50_ms": b50, "ratio_p50": a50 / b50,
                    "regcred_max_ms": a99, "by_hand_max_ms": b99,
                }),
            );
        })
        .await;
}
