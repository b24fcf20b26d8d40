//! Short-lived credentials against endpoints that speak the real protocols: moto (AWS STS and ECR) and a local
//! OAuth token endpoint (GCP), with the real `regcred` binary running as the chart's RBAC.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use regcred::fixtures::{auths, wait_secret};
use serde_json::{Value, json};
use support::harness::{Harness, WAIT};
use support::tokens::{EcrPublicEndpoint, GcpTokenEndpoint, Moto, gcp_spec, rotate_through_outage};
use support::{TestEnv, wait_for};

const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// Waits until Secret `name` exists in `ns` and returns it with its auths.
async fn wait_auths(h: &Harness, ns: &str, name: &str) -> (Secret, BTreeMap<String, Value>) {
    let secret = wait_secret(&h.client(), ns, name, WAIT, |_| true).await;
    let auths = auths(&secret);
    (secret, auths)
}

fn ecr_spec(h: &Harness, ecr: Value) -> Value {
    json!({
        "provider": "ecr",
        "server": ECR_HOST,
        "credentials": {"ecr": ecr},
        "namespaces": h.select("yes"),
        "secretName": "pull",
    })
}

async fn with_moto(env: &TestEnv, extra_env: &[(&'static str, String)]) -> (Moto, Harness) {
    let moto = Moto::start().await;
    let mut envs = moto.env();
    envs.extend_from_slice(extra_env);
    let h = Harness::start_env(env, &[], &envs).await;
    h.source("aws", &[("aws_access_key_id", "AKIDTESTTESTTEST"), ("aws_secret_access_key", "secret-test")]).await;
    (moto, h)
}

#[tokio::test]
async fn ecr_tokens_are_minted_once_and_written_everywhere_with_their_expiry() {
    TestEnv::new("ecr")
        .await
        .run(|env| async move {
            let (_moto, h) = with_moto(&env, &[]).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "yes")]).await;
            let profile = h.profile("p", ecr_spec(&h, json!({"secretRef": {"name": "aws"}}))).await;
            for ns in [&a, &b] {
                let (secret, auths) = wait_auths(&h, ns, "pull").await;
                let entry = &auths[ECR_HOST];
                assert_eq!(entry["username"], "AWS");
                assert_eq!(entry["password"], "123456789012-auth-token");
                assert!(secret.annotations().contains_key("regcred.dev/expires-at"), "{:?}", secret.annotations());
            }
            let p = h.ready(&profile).await;
            let status = p.status.unwrap();
            assert!(
                status.expires_at.is_some() && status.last_refresh_time.is_some() && status.next_refresh_time.is_some()
            );
            let creds = status.conditions.iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
            assert_eq!((creds.status.as_str(), creds.reason.as_str()), ("True", "Resolved"));
            // The metrics say how minting goes, and carry no secret.
            let addr = h.operator.as_ref().unwrap().metrics_addr().await;
            assert_eq!(support::http_get(&addr, "/readyz").await.0, 200);
            let (status, metrics) = support::http_get(&addr, "/metrics").await;
            assert_eq!(status, 200);
            let mints = format!("regcred_token_mints_total{{profile=\"{profile}\",result=\"ok\"}}");
            assert!(metrics.contains(&mints), "{metrics}");
            assert!(metrics.contains(&format!("regcred_token_expiry_seconds{{profile=\"{profile}\"}}")), "{metrics}");
            assert!(metrics.contains("regcred_managed_secrets "), "{metrics}");
            assert!(!metrics.contains("auth-token") && !metrics.contains("secret-test"), "a secret in the metrics");
            // moto's tokens claim to have expired in 2015: the refresher clamps instead of spinning.
            let logs = h.logs();
            let mints = logs.matches("token minted").count();
            assert!(mints <= 3, "{mints} mints within seconds: the refresher spins");
        })
        .await;
}

#[tokio::test]
async fn an_assumed_role_and_several_registry_ids_mint_for_their_accounts() {
    TestEnv::new("ecrrole")
        .await
        .run(|env| async move {
            let (_moto, h) = with_moto(&env, &[]).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let ecr = json!({
                "secretRef": {"name": "aws"},
                "roleArn": "arn:aws:iam::111111111111:role/puller",
                "externalId": "regcred-test",
            });
            h.profile("role", ecr_spec(&h, ecr)).await;
            let (_, auths) = wait_auths(&h, &a, "pull").await;
            let hosts: Vec<&String> = auths.keys().collect();
            assert_eq!(hosts, ["111111111111.dkr.ecr.us-east-1.amazonaws.com"], "the assumed role's account");

            let mut ids =
                ecr_spec(&h, json!({"secretRef": {"name": "aws"}, "registryIds": ["111111111111", "222222222222"]}));
            ids["secretName"] = json!("pull-ids");
            h.profile("ids", ids).await;
            let (_, auths) = wait_auths(&h, &a, "pull-ids").await;
            let hosts: BTreeSet<&str> = auths.keys().map(String::as_str).collect();
            assert_eq!(
                hosts,
                BTreeSet::from([
                    "111111111111.dkr.ecr.us-east-1.amazonaws.com",
                    "222222222222.dkr.ecr.us-east-1.amazonaws.com"
                ])
            );
        })
        .await;
}

#[tokio::test]
async fn web_identity_irsa_is_used_when_no_secret_is_given() {
    TestEnv::new("irsa")
        .await
        .run(|env| async move {
            let dir = std::env::temp_dir().join("regcred-tests").join(format!("irsa-{}", env.id));
            std::fs::create_dir_all(&dir).unwrap();
            let token_file = dir.join("token");
            std::fs::write(
                &token_file,
                "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVnY3JlZCJ9.c2ln",
            )
            .unwrap();
            let irsa = [
                ("AWS_ROLE_ARN", "arn:aws:iam::333333333333:role/irsa".to_owned()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
                ("AWS_ROLE_SESSION_NAME", "regcred".to_owned()),
            ];
            let (_moto, h) = with_moto(&env, &irsa).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            h.profile("p", ecr_spec(&h, json!({}))).await;
            let (_, auths) = wait_auths(&h, &a, "pull").await;
            let hosts: Vec<&String> = auths.keys().collect();
            assert_eq!(hosts, ["333333333333.dkr.ecr.us-east-1.amazonaws.com"], "the web identity role's account");
        })
        .await;
}

#[tokio::test]
async fn ecr_public_tokens_are_minted_in_us_east_1() {
    TestEnv::new("ecrpub")
        .await
        .run(|env| async move {
            let public = EcrPublicEndpoint::start().await;
            let envs = [("AWS_ENDPOINT_URL_ECR_PUBLIC", public.endpoint.clone())];
            let h = Harness::start_env(&env, &[], &envs).await;
            h.source("aws", &[("aws_access_key_id", "AKIDTESTTESTTEST"), ("aws_secret_access_key", "secret-test")])
                .await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            // The region field does not matter: ECR Public mints in us-east-1 only.
            let spec = json!({
                "provider": "ecrPublic",
                "credentials": {"ecr": {"secretRef": {"name": "aws"}, "region": "eu-west-1"}},
                "namespaces": h.select("yes"),
                "secretName": "pull",
            });
            let profile = h.profile("p", spec).await;
            let (_, auths) = wait_auths(&h, &a, "pull").await;
            assert_eq!(auths["public.ecr.aws"]["username"], "AWS");
            assert_eq!(auths["public.ecr.aws"]["password"], "public-token-1");
            h.ready(&profile).await;
        })
        .await;
}

#[tokio::test]
async fn minting_failures_have_reasons_and_never_write_a_secret() {
    TestEnv::new("ecrbad")
        .await
        .run(|env| async move {
            let (moto, h) = with_moto(&env, &[]).await;
            let a = env.namespace("a", &[("pull", "yes")]).await;
            // A region no endpoint serves: the apiserver accepts its shape, the mint cannot succeed.
            let bad_region = h
                .profile("region", ecr_spec(&h, json!({"secretRef": {"name": "aws"}, "region": "xx-nowhere-9"})))
                .await;
            // No key in the Secret.
            h.source("empty", &[("unrelated", "x")]).await;
            let mut missing = ecr_spec(&h, json!({"secretRef": {"name": "empty"}}));
            missing["secretName"] = json!("pull-missing");
            let missing = h.profile("missing", missing).await;
            h.condition(&missing, "CredentialsResolved", "False", "MissingKey").await;
            h.condition(&bad_region, "CredentialsResolved", "False", "RegionInvalid").await;
            assert!(h.secret(&a, "pull").await.is_none() && h.secret(&a, "pull-missing").await.is_none());
            drop(moto);
        })
        .await;
}

#[tokio::test]
async fn gcp_minting_failures_say_why() {
    TestEnv::new("gcpbad")
        .await
        .run(|env| async move {
            let gcp = GcpTokenEndpoint::start(3600).await;
            gcp.denying.store(true, Ordering::SeqCst);
            let dead_uri = format!("https://127.0.0.1:{}/token", support::free_port());
            let h = Harness::start_env(&env, &[], &gcp.operator_env(&env, &[&dead_uri])).await;
            let (denied_key, dead_key) = (gcp.key_json(), gcp.key_json_for(&dead_uri));
            h.source("denied", &[("key.json", denied_key.as_str())]).await;
            h.source("dead", &[("key.json", dead_key.as_str())]).await;
            h.source("junk", &[("key.json", "{\"type\": \"service_account\"}")]).await;
            let denied = h.profile("denied", gcp_spec(&h, "denied", "a")).await;
            let dead = h.profile("dead", gcp_spec(&h, "dead", "b")).await;
            let junk = h.profile("junk", gcp_spec(&h, "junk", "c")).await;
            // A refusal (401 invalid_grant) and an endpoint that is not there are told apart.
            h.condition(&denied, "CredentialsResolved", "False", "AccessDenied").await;
            h.condition(&dead, "CredentialsResolved", "False", "EndpointUnreachable").await;
            h.condition(&junk, "CredentialsResolved", "False", "InvalidServiceAccountKey").await;
            // Fixed at the source: the retry (5 s, doubling) heals it without any change to the profile.
            gcp.denying.store(false, Ordering::SeqCst);
            h.condition(&denied, "CredentialsResolved", "True", "Resolved").await;
        })
        .await;
}

/// Reads every managed Secret of `profile` the way a kubelet would, and returns the access tokens seen.
#[tokio::test]
async fn gcp_tokens_rotate_before_expiry_with_one_mint_per_rotation_for_any_number_of_namespaces() {
    TestEnv::new("gcp")
        .await
        .run(|env| async move {
            let lifetime = 30;
            let gcp = GcpTokenEndpoint::start(lifetime).await;
            let h = Harness::start_env(&env, &[], &gcp.operator_env(&env, &[])).await;
            let key = gcp.key_json();
            h.source("gcp", &[("key.json", key.as_str())]).await;
            let namespaces = 8;
            for i in 0..namespaces {
                env.namespace_nowait(&format!("n{i}"), &[("pull", "yes")]).await;
            }
            let profile = h.profile("p", gcp_spec(&h, "gcp", "pull")).await;
            wait_for("every namespace's Secret", WAIT, || async {
                let n = Api::<Secret>::all(h.client())
                    .list_metadata(&ListParams::default().labels(&format!("regcred.dev/profile={profile}")))
                    .await
                    .ok()?
                    .items
                    .len();
                (n == namespaces).then_some(())
            })
            .await;

            // Watch like kubelets for 3 minutes (six lifetimes), through an outage of a quarter of a lifetime
            // that starts just before a refresh is due.
            let run = rotate_through_outage(&h, &gcp, &profile, lifetime, Duration::from_secs(180)).await;
            assert!(run.expired.is_empty(), "expired tokens observed: {:?}", run.expired);
            assert!(h.logs().contains("minting failed"), "the outage never met a refresh");
            let mints = run.mints;
            // Rotations at about two thirds of 30 s (20 s, minus up to 10% jitter) over 180 s: 9 to 10.
            assert!(mints <= 12, "{mints} mints in 180 s: one per namespace, or spinning");
            assert!(mints >= 8, "only {mints} mints in 180 s: tokens were not rotated");
            // One mint per rotation, fanned out: every token minted shows up in the Secrets (the last one may not
            // have been read yet), and no namespace got a token of its own.
            let seen = run.tokens_seen;
            assert!(seen + 1 >= mints && seen <= mints, "{seen} tokens seen for {mints} mints");
            eprintln!("gcp soak: {mints} mints, {seen} tokens observed over {namespaces} namespaces");
            let p = h.ready(&profile).await;
            assert!(p.status.unwrap().expires_at.is_some());
        })
        .await;
}
