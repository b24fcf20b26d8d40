//! regcred's credential endpoint, asked as the kubelet's image credential provider asks it: Pod-bound
//! ServiceAccount tokens for regcred's audience (TokenRequest, as the kubelet requests them), over TLS trusting
//! only the CA regcred publishes for the nodes, with the real `regcred` binary running as the chart's RBAC (the
//! chart installed with `credentialProvider.enabled=true`). The Pods never run: a token only needs its Pod to
//! exist. One operator for every case, so the suite stays a few seconds.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::credential_provider::{AUDIENCE, Endpoint, endpoint_args, pod, pod_token, unsigned_jwt};
use support::harness::{Harness, SERVER, WAIT, basic_spec};
use support::tokens::GcpTokenEndpoint;
use support::{TestEnv, free_port, wait_for};

/// The kubelet's cache bound the operator runs with.
const CACHE_MAX: u64 = 20;

/// A tenant with the `admin`-like rights of its own namespace only (Pods, ServiceAccounts and their tokens).
async fn tenant(env: &TestEnv, namespace: &str) -> kube::Client {
    let resources = ["pods", "serviceaccounts", "serviceaccounts/token"];
    support::grant_tenant(env, namespace, &resources, &["get", "list", "create", "delete"]).await;
    support::client_from(&support::service_account_kubeconfig(&env.client, namespace, "tenant").await).await
}

#[tokio::test]
async fn the_kubelet_gets_exactly_what_the_pods_service_account_may_pull_and_forged_tokens_nothing() {
    TestEnv::new("credprov")
        .await
        .run(|env| async move {
            let gcp = GcpTokenEndpoint::start(3600).await;
            let port = free_port();
            let release = support::release_name(&env.id);
            let args = endpoint_args(&release, port, &format!("{CACHE_MAX}s"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let h =
                Harness::start_chart(&env, &["credentialProvider.enabled=true"], &args, &gcp.operator_env(&env, &[]))
                    .await;
            h.source("creds", &[("username", "bot"), ("password", "pw-static")]).await;
            h.source("gcp", &[("key.json", gcp.key_json().as_str())]).await;
            let selected = env.namespace("a", &[("pull", "yes")]).await;
            let other = env.namespace("b", &[("pull", "no")]).await;
            let mut stat = basic_spec(h.select("yes"));
            stat["delivery"] = json!("CredentialProvider");
            let stat = h.profile("static", stat).await;
            let mut named = basic_spec(h.select("yes"));
            named["server"] = json!("named.example.com");
            named["secretName"] = json!("named");
            named["serviceAccounts"] = json!({"names": ["builder"]});
            named["delivery"] = json!("Both");
            h.profile("named", named).await;
            let mut minted = support::tokens::gcp_spec(&h, "gcp", "minted");
            minted["delivery"] = json!("CredentialProvider");
            let minted = h.profile("minted", minted).await;
            h.ready(&stat).await;
            h.ready(&minted).await;

            let server_name = format!("regcred.{}.svc", h.op_ns);
            let endpoint = Endpoint::new(&env.client, &h.op_ns, &format!("{release}-ca"), &server_name, port).await;
            let app = pod(&env.client, &selected, "app", "default").await;
            let token = pod_token(&env.client, &app, AUDIENCE).await.unwrap();

            // Static credentials, for the registry's key, kept by registry for at most the bound.
            let started = Instant::now();
            let answer = endpoint.answer(&token, &format!("{SERVER}/team/app")).await;
            let miss = started.elapsed();
            assert_eq!(answer.auth, [(SERVER.to_owned(), "bot".to_owned(), "pw-static".to_owned())]);
            assert_eq!((answer.key_type.as_str(), answer.seconds), ("Registry", CACHE_MAX));
            // A minted token (GCP), never kept past half its remaining life nor the bound.
            let answer = endpoint.answer(&token, "gcr.io/project/app").await;
            assert_eq!(answer.auth.len(), 1, "{answer:?}");
            assert_eq!((answer.auth[0].0.as_str(), answer.auth[0].1.as_str()), ("gcr.io", "oauth2accesstoken"));
            assert!(answer.auth[0].2.starts_with("ya29.test-"), "{answer:?}");
            assert!(answer.seconds >= 1 && answer.seconds <= CACHE_MAX, "{answer:?}");
            // A second replica, which does not lead (it mints nothing), answers the same, the minted token read
            // from the leader's copy in regcred's namespace.
            let port2 = free_port();
            let args2 = endpoint_args(&release, port2, &format!("{CACHE_MAX}s"));
            let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
            let _second =
                support::Operator::start_env(&h.kubeconfig, &h.op_ns, &env.id, &args2, &gcp.operator_env(&env, &[]));
            let replica = Endpoint::new(&env.client, &h.op_ns, &format!("{release}-ca"), &server_name, port2).await;
            let leaders = answer.auth.clone();
            wait_for("the second replica to answer the minted token", WAIT, || async {
                let (status, body) = replica.ask(Some(&token), "gcr.io/project/app").await;
                (status == 200 && body.contains(&leaders[0].2)).then_some(())
            })
            .await;
            assert_eq!(h.operator.as_ref().unwrap().metric("regcred_leader").await, 1.0);

            // An image no profile serves: nothing.
            assert!(endpoint.answer(&token, "ghcr.io/org/app").await.auth.is_empty());
            let started = Instant::now();
            endpoint.answer(&token, &format!("{SERVER}/team/app")).await;
            let hit = started.elapsed();
            eprintln!("credential endpoint: first answer (TokenReview) {miss:?}, remembered token {hit:?}");

            // A profile that names ServiceAccounts answers only those.
            assert!(endpoint.answer(&token, "named.example.com/app").await.auth.is_empty());
            let builder = pod(&env.client, &selected, "builder", "builder").await;
            let builder_token = pod_token(&env.client, &builder, AUDIENCE).await.unwrap();
            let answer = endpoint.answer(&builder_token, "named.example.com/app").await;
            assert_eq!(answer.auth, [("named.example.com".to_owned(), "bot".to_owned(), "pw-static".to_owned())]);

            // A namespace nothing selects: an empty answer, not an error.
            let outsider = pod(&env.client, &other, "app", "default").await;
            let outsider_token = pod_token(&env.client, &outsider, AUDIENCE).await.unwrap();
            let answer = endpoint.answer(&outsider_token, &format!("{SERVER}/team/app")).await;
            assert!(answer.auth.is_empty(), "{answer:?}");

            // Refused, one line, no credentials: no token, a forged one, an expired one, another audience, and
            // the token of a Pod deleted before it was ever shown.
            let image = format!("{SERVER}/team/app");
            let far = jiff::Timestamp::now().as_second() + 600;
            let mut forged = token.rsplit_once('.').unwrap().0.to_owned();
            forged.push_str(".c2lnbmVkIGJ5IG5vYm9keQ");
            let past = unsigned_jwt(&json!({"aud": [AUDIENCE], "exp": 1_600_000_000,
                "sub": format!("system:serviceaccount:{selected}:default")}));
            let unsigned = unsigned_jwt(&json!({"aud": [AUDIENCE], "exp": far,
                "iss": "https://kubernetes.default.svc.cluster.local",
                "sub": format!("system:serviceaccount:{selected}:default")}));
            let other_audience = pod_token(&env.client, &app, "https://kubernetes.default.svc").await.unwrap();
            let doomed = pod(&env.client, &selected, "doomed", "default").await;
            let doomed_token = pod_token(&env.client, &doomed, AUDIENCE).await.unwrap();
            let pods: Api<Pod> = Api::namespaced(env.client.clone(), &selected);
            pods.delete("doomed", &DeleteParams::default().grace_period(0)).await.unwrap();
            wait_for("the Pod to be gone", WAIT, || async {
                pods.get_opt("doomed").await.unwrap().is_none().then_some(())
            })
            .await;
            for (what, token) in [
                ("forged signature", Some(forged.as_str())),
                ("expired", Some(past.as_str())),
                ("signed by nobody", Some(unsigned.as_str())),
                ("another audience", Some(other_audience.as_str())),
                ("deleted Pod", Some(doomed_token.as_str())),
                ("no token", None),
            ] {
                let (status, body) = endpoint.ask(token, &image).await;
                assert_eq!(status, 401, "{what}: {body}");
                assert_eq!(body.trim().lines().count(), 1, "{what}: {body}");
                assert!(!body.contains("pw-static") && !body.contains("\"auth\""), "{what}: {body}");
            }

            // A tenant of the unselected namespace can make tokens of its own Pods only, and they get nothing.
            let tenant = tenant(&env, &other).await;
            let theirs = pod(&tenant, &other, "mine", "default").await;
            let tenant_token = pod_token(&tenant, &theirs, AUDIENCE).await.unwrap();
            assert!(endpoint.answer(&tenant_token, &image).await.auth.is_empty());
            let refused = pod_token(&tenant, &app, AUDIENCE).await;
            assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403), "{refused:?}");

            // `regcred check --credential-provider` asks the same way, and prints keys, never passwords.
            let who = format!("{selected}/default");
            let url = format!("https://127.0.0.1:{port}");
            let config_map = format!("{release}-ca");
            let check = [
                "--credential-provider",
                &who,
                "--pod",
                "app",
                "--namespace",
                &h.op_ns,
                "--credential-provider-url",
                &url,
                "--credential-provider-ca-configmap",
                &config_map,
            ];
            let (code, out) =
                support::regcred_check(&[&check[..], &[&image, "ghcr.io/org/app"]].concat(), "", &[]).await;
            assert_eq!(code, 1, "{out}");
            assert!(out.contains(&format!("{image}: credentials for {SERVER} (cacheKeyType Registry")), "{out}");
            assert!(out.contains("ghcr.io/org/app: no credentials"), "{out}");
            assert!(!out.contains("pw-static"), "{out}");
            let (code, out) = support::regcred_check(&[&check[..], &[&image]].concat(), "", &[]).await;
            assert_eq!(code, 0, "{out}");

            // Deselection: the namespace's label changes, and the next answer is empty, even for a token
            // regcred remembers. The kubelet keeps the last answer at most its cacheDuration (CACHE_MAX).
            let started = Instant::now();
            h.set_labels(&selected, json!({"pull": "no"})).await;
            wait_for("the deselected namespace's answer to be empty", WAIT, || async {
                endpoint.answer(&token, &image).await.auth.is_empty().then_some(())
            })
            .await;
            eprintln!(
                "credential endpoint: deselection answered empty after {:?} (watch lag); kubelet bound {CACHE_MAX} s",
                started.elapsed()
            );

            let operator = h.operator.as_ref().unwrap();
            assert!(operator.metric("regcred_credential_provider_token_cache_hits_total").await >= 1.0);
            assert!(operator.metric("regcred_credential_provider_token_reviews_total").await >= 3.0);
            assert!(operator.metric("regcred_credential_provider_requests_total").await >= 10.0);
            let logs = h.logs();
            for secret in ["pw-static", &token, &builder_token, "ya29.test-"] {
                assert!(!logs.contains(secret), "regcred's log holds a secret");
            }
        })
        .await;
}
