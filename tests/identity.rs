//! Credentials from workload identity, with no static secret: ACR (Entra ID through Azure Workload Identity or a
//! service principal, then ACR's exchange), GCP without keys (the metadata server; Workload Identity Federation
//! through STS and IAM Credentials) and Quay robot federation. Against local endpoints that speak each protocol
//! and verify what regcred sends (ServiceAccount tokens by TokenReview on the real apiserver), and a registry that
//! accepts only the tokens those endpoints issued. The real `regcred` binary runs with the chart's RBAC, which
//! lets it request tokens for its own ServiceAccount only.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use regcred::fixtures::{self, Login, login};
use serde_json::{Value, json};
use support::cloud::{ACR_USER, AppCredential, CloudRegistry, Entra, Gcp, allow, ca_file};
use support::harness::{Harness, WAIT};
use support::{TestEnv, wait_for};

const IMAGE: &str = "team/app:1.0";

/// Waits (twice [`WAIT`]: tokens come through several endpoints) until `ns/pull` holds a login for `server` that
/// `accept` takes; returns the Secret and the password.
async fn wait_login(h: &Harness, ns: &str, server: &str, accept: impl Fn(&Login) -> bool) -> (Secret, String) {
    let (secret, login) = fixtures::wait_login(&h.client(), ns, "pull", server, WAIT * 2, accept).await;
    (secret, login.password)
}

fn subject(h: &Harness) -> String {
    format!("system:serviceaccount:{}:{}", h.op_ns, support::webhook_configuration_name(&h.env))
}

/// The profile's spec for `provider` at the cloud registry, with the registry's CA, a probe image and `creds`.
fn spec(h: &Harness, provider: &str, registry: &CloudRegistry, creds: Value) -> Value {
    json!({
        "provider": provider,
        "server": registry.addr,
        "credentials": creds,
        "namespaces": h.select("yes"),
        "secretName": "pull",
        "tls": {"caBundle": registry.ca_pem},
        "validation": {"images": [IMAGE], "interval": "1m"},
    })
}

/// Waits until the profile is Ready with its checks Passed: the registry accepted the minted token.
async fn passed(h: &Harness, profile: &str) -> regcred::api::RegistryProfile {
    let api = Api::<regcred::api::RegistryProfile>::all(h.client());
    h.ready(profile).await;
    wait_for(&format!("{profile}: checks Passed"), WAIT * 2, || async {
        let p = api.get(profile).await.ok()?;
        (p.status.as_ref()?.checks.as_deref() == Some("Passed")).then_some(p)
    })
    .await
}

fn expires_annotation(s: &Secret) -> i64 {
    let at: jiff::Timestamp = s.annotations()["regcred.dev/expires-at"].parse().unwrap();
    at.as_second()
}

fn jwt_exp(token: &str) -> i64 {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    claims["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn acr_tokens_from_workload_identity_are_minted_once_written_everywhere_and_rotated() {
    TestEnv::new("acrwi")
        .await
        .run(|env| async move {
            let registry = CloudRegistry::start(&env.client, "127.0.0.1").await;
            registry.push_image(IMAGE).await;
            let mut h = Harness::start(&env).await;
            let entra = Entra::start(&env.client, "127.0.0.1", AppCredential::Federated { subject: subject(&h) }).await;
            *registry.entra.lock().unwrap() = Some(entra.clone());
            // Refresh tokens living 40 s: rotations within the test.
            registry.lifetime_secs.store(40, Ordering::SeqCst);
            h.restart_env(&[
                ("SSL_CERT_FILE", ca_file(&env, &[&entra.ca_pem])),
                allow(&[&entra.authority, &registry.addr]),
            ]);
            let a = env.namespace("a", &[("pull", "yes")]).await;
            let b = env.namespace("b", &[("pull", "yes")]).await;
            let creds = json!({"acr": {"tenantId": entra.tenant, "clientId": entra.client_id, "authorityHost": entra.authority}});
            let profile = h.profile("p", spec(&h, "acr", &registry, creds)).await;
            let (sa, first) = wait_login(&h, &a, &registry.addr, |l| l.username == ACR_USER).await;
            let (sb, same) = wait_login(&h, &b, &registry.addr, |l| l.username == ACR_USER).await;
            assert_eq!(first, same, "one token for every namespace");
            assert!(first.contains('.'), "an ACR refresh token, as the exchange issued it");
            assert_eq!(expires_annotation(&sa), jwt_exp(&first), "expiry from the token itself");
            assert_eq!(expires_annotation(&sb), jwt_exp(&first));
            let p = passed(&h, &profile).await;
            let status = p.status.unwrap();
            assert_eq!(status.expires_at.map(|t| t.0.as_second()), Some(jwt_exp(&first)));
            let creds = status.conditions.iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
            assert!(creds.message.contains("Azure Workload Identity"), "{}", creds.message);
            assert_eq!(registry.mints.load(Ordering::SeqCst), 1, "one exchange for two namespaces");

            // Rotation at two thirds of the real lifetime: a new token everywhere, one exchange for it.
            let (_, second) = wait_login(&h, &a, &registry.addr, |l| l.password != first).await;
            wait_login(&h, &b, &registry.addr, |l| l.password == second).await;
            let mints = registry.mints.load(Ordering::SeqCst);
            assert!((2..=3).contains(&mints), "{mints} exchanges for two tokens");

            // Entra ID refuses: said in status; the last good token stays until it expires.
            entra.refusing.store(true, Ordering::SeqCst);
            let p = h.condition(&profile, "CredentialsResolved", "False", "EntraIdRefused").await;
            let message = &p.status.unwrap().conditions.iter().find(|c| c.type_ == "CredentialsResolved").unwrap().message.clone();
            assert!(message.contains("AADSTS700213") && message.contains("last good token"), "{message}");
            let held = login(&h.secret(&a, "pull").await.unwrap(), &registry.addr).unwrap().password;
            assert!(jwt_exp(&held) > jiff::Timestamp::now().as_second(), "the Secret still holds a live token");
            entra.refusing.store(false, Ordering::SeqCst);
            h.condition(&profile, "CredentialsResolved", "True", "Resolved").await;

            // The exchange refuses.
            registry.refusing.store(true, Ordering::SeqCst);
            h.condition(&profile, "CredentialsResolved", "False", "ExchangeRefused").await;
            registry.refusing.store(false, Ordering::SeqCst);
            h.condition(&profile, "CredentialsResolved", "True", "Resolved").await;
        })
        .await;
}

/// An RSA certificate for an app registration: (certificate PEM, key PEM, RSA public key DER, x5t#S256).
fn app_certificate() -> (String, String, Vec<u8>, String) {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(support::repo_root().join("tests/fixtures/gcp-test-key.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "regcred-app");
    let cert = params.self_signed(&key).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8) = der else { unreachable!() };
    let pair = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()).unwrap();
    let public = ring::signature::KeyPair::public_key(&pair).as_ref().to_vec();
    let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, cert.der()));
    (cert.pem(), pem, public, x5t_s256)
}

#[tokio::test]
async fn acr_service_principals_a_projected_token_file_and_repository_scopes_each_mint_and_no_secret_leaks() {
    TestEnv::new("acrsp")
        .await
        .run(|env| async move {
            let registry = CloudRegistry::start(&env.client, "127.0.0.1").await;
            registry.push_image(IMAGE).await;
            registry.push_image("other/app:1.0").await;
            let canary = format!("CANARY-{}", support::suffix());
            let (cert, key, public_key, x5t_s256) = app_certificate();
            let secret_entra = Entra::start(&env.client, "127.0.0.1", AppCredential::Secret(canary.clone())).await;
            let issued = Some(secret_entra.issued.clone());
            let cert_entra = Entra::start_sharing(
                &env.client,
                "127.0.0.1",
                AppCredential::Certificate { public_key, x5t_s256 },
                issued.clone(),
            )
            .await;
            let mut h = Harness::start(&env).await;
            let file_entra = Entra::start_sharing(
                &env.client,
                "127.0.0.1",
                AppCredential::Federated { subject: subject(&h) },
                issued,
            )
            .await;
            // The file the Azure Workload Identity webhook would project: a token of regcred's ServiceAccount for
            // Entra ID's audience.
            let token = support::service_account_token(
                &env.client,
                &h.op_ns,
                &support::webhook_configuration_name(&env),
                Some("api://AzureADTokenExchange"),
            )
            .await;
            let token_file = std::env::temp_dir().join("regcred-tests").join(format!("azure-token-{}", env.id));
            std::fs::write(&token_file, token).unwrap();
            // The three endpoints share one tenant and one record of issued tokens, which the exchange accepts.
            *registry.entra.lock().unwrap() = Some(secret_entra.clone());
            let ca = ca_file(&env, &[&secret_entra.ca_pem, &cert_entra.ca_pem, &file_entra.ca_pem]);
            h.restart_env(&[
                ("SSL_CERT_FILE", ca),
                ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
                ("AZURE_TENANT_ID", file_entra.tenant.clone()),
                ("AZURE_CLIENT_ID", file_entra.client_id.clone()),
                ("AZURE_AUTHORITY_HOST", file_entra.authority.clone()),
                allow(&[&secret_entra.authority, &cert_entra.authority, &file_entra.authority, &registry.addr]),
            ]);
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            h.source("sp-secret", &[("client_secret", &canary)]).await;
            h.source("sp-cert", &[("tls.crt", &cert), ("tls.key", &key)]).await;
            h.source("sp-both", &[("client_secret", "x"), ("tls.crt", &cert)]).await;
            let acr = |entra: &Entra, extra: Value| {
                let mut acr =
                    json!({"tenantId": entra.tenant, "clientId": entra.client_id, "authorityHost": entra.authority});
                acr.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                json!({"acr": acr})
            };
            let mut profiles = Vec::new();
            for (name, entra, extra) in [
                ("secret", &secret_entra, json!({"secretRef": {"name": "sp-secret"}})),
                ("cert", &cert_entra, json!({"secretRef": {"name": "sp-cert"}})),
            ] {
                let mut s = spec(&h, "acr", &registry, acr(entra, extra));
                s["secretName"] = json!(format!("pull-{name}"));
                profiles.push(h.profile(name, s).await);
            }
            // Workload identity from the environment (AZURE_* and the token file), scoped to one repository.
            let mut scoped = spec(&h, "acr", &registry, json!({"acr": {"repositories": ["team/app"]}}));
            scoped["secretName"] = json!("pull-scoped");
            let scoped = h.profile("scoped", scoped).await;
            for p in profiles.iter().chain([&scoped]) {
                passed(&h, p).await;
            }
            for name in ["pull-secret", "pull-cert", "pull-scoped"] {
                let s = wait_for(name, WAIT, || async { h.secret(&ns, name).await }).await;
                let Login { username: user, password } = login(&s, &registry.addr).unwrap();
                assert_eq!(user, ACR_USER);
                assert_eq!(expires_annotation(&s), jwt_exp(&password), "{name}");
            }
            // The scoped token pulls team/app and nothing else.
            let scoped_token = login(&h.secret(&ns, "pull-scoped").await.unwrap(), &registry.addr).unwrap().password;
            let (ok, _) = regcred_check(&registry, &scoped_token, "team/app:1.0").await;
            let (refused, out) = regcred_check(&registry, &scoped_token, "other/app:1.0").await;
            assert_eq!((ok, refused != 0), (0, true), "{out}");

            // A Secret with both kinds of service-principal credential is refused with a reason.
            let bad = h
                .profile(
                    "both",
                    spec(&h, "acr", &registry, acr(&secret_entra, json!({"secretRef": {"name": "sp-both"}}))),
                )
                .await;
            h.condition(&bad, "CredentialsResolved", "False", "AmbiguousKeys").await;
            // The projected token file disappears: the next mint (a new spec) says which step failed.
            std::fs::remove_file(&token_file).unwrap();
            let mut rescoped = spec(&h, "acr", &registry, json!({"acr": {"repositories": ["team/app", "other/app"]}}));
            rescoped["secretName"] = json!("pull-scoped");
            h.profile("scoped", rescoped).await;
            h.condition(&scoped, "CredentialsResolved", "False", "FederatedTokenMissing").await;

            // The canary (the client secret) never leaves regcred.
            let events = Api::<Event>::all(h.client()).list(&ListParams::default()).await.unwrap();
            assert!(!serde_json::to_string(&events.items).unwrap().contains(&canary), "an Event leaks the secret");
            for p in &profiles {
                let p = Api::<regcred::api::RegistryProfile>::all(h.client()).get(p).await.unwrap();
                assert!(!serde_json::to_string(&p.status).unwrap().contains(&canary), "status leaks the secret");
            }
            let addr = h.operator.as_ref().unwrap().metrics_addr().await;
            assert!(!support::http_get(&addr, "/metrics").await.1.contains(&canary), "metrics leak the secret");
            let logs = h.logs();
            assert!(logs.contains("token minted") && !logs.contains(&canary), "the logs leak the secret");
        })
        .await;
}

/// `regcred check` of `image` at the registry with the ACR user and `password`: its exit status and output.
async fn regcred_check(registry: &CloudRegistry, password: &str, image: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join("regcred-tests");
    let ca = dir.join(format!("check-ca-{}.pem", support::suffix()));
    std::fs::write(&ca, &registry.ca_pem).unwrap();
    let image = format!("{}/{image}", registry.addr);
    support::regcred_check(
        &["--username", ACR_USER, "--password-stdin", "--ca-file", ca.to_str().unwrap(), &image],
        password,
        &[],
    )
    .await
}

#[tokio::test]
async fn gcp_tokens_without_keys_from_the_metadata_server_and_workload_identity_federation() {
    TestEnv::new("gcpwi")
        .await
        .run(|env| async move {
            let registry = CloudRegistry::start(&env.client, "127.0.0.1").await;
            registry.push_image(IMAGE).await;
            let gcp = Gcp::start(&env.client, "127.0.0.1").await;
            *registry.gcp_tokens.lock().unwrap() = Some(gcp.tokens.clone());
            gcp.lifetime_secs.store(45, Ordering::SeqCst);
            let mut h = Harness::start(&env).await;
            *gcp.subject.lock().unwrap() = subject(&h);
            h.restart_env(&[
                ("SSL_CERT_FILE", ca_file(&env, &[&gcp.ca_pem])),
                ("GCE_METADATA_HOST", gcp.metadata_host.clone()),
                allow(&[&gcp.sts_url]),
            ]);
            let ns = env.namespace("a", &[("pull", "yes")]).await;
            let external = |impersonate: bool| {
                let mut e = json!({"audience": gcp.audience, "tokenUrl": gcp.sts_url});
                if impersonate {
                    e["serviceAccount"] = json!(gcp.service_account);
                    e["serviceAccountImpersonationUrl"] = json!(gcp.impersonation_url());
                }
                json!({"gcp": {"externalAccount": e}})
            };
            let mut names = Vec::new();
            for (name, creds) in [
                ("mds", json!({"gcp": {"workloadIdentity": {}}})),
                ("wif", external(true)),
                ("direct", external(false)),
            ] {
                let mut s = spec(&h, "artifactRegistry", &registry, creds);
                s["secretName"] = json!(format!("pull-{name}"));
                names.push((name, h.profile(name, s).await));
            }
            for (name, profile) in &names {
                passed(&h, profile).await;
                let s = h.secret(&ns, &format!("pull-{name}")).await.unwrap();
                let Login { username: user, password } = login(&s, &registry.addr).unwrap();
                assert_eq!(user, "oauth2accesstoken");
                let kind = match *name {
                    "mds" => ".mds-",
                    "wif" => ".iam-",
                    _ => ".sts-",
                };
                assert!(password.contains(kind), "{name}: {password}");
                let issued = gcp.tokens.lock().unwrap()[&password];
                assert!((expires_annotation(&s) - issued).abs() <= 2, "{name}: expiry from the endpoint's answer");
            }
            // The metadata server is asked for the read-only storage scope: the token in every selected namespace
            // can pull, and nothing else, whatever the Google service account may do.
            let asked = gcp.metadata_scopes.lock().unwrap().clone();
            assert!(!asked.is_empty() && asked.iter().all(|s| s == support::cloud::READ_ONLY), "{asked:?}");
            let wif = &names[1].1;
            let direct = &names[2].1;
            gcp.denying_impersonation.store(true, Ordering::SeqCst);
            let p = h.condition(wif, "CredentialsResolved", "False", "ImpersonationDenied").await;
            let c = p.status.unwrap().conditions.into_iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
            assert!(c.message.contains("iam.serviceAccounts.getAccessToken"), "{}", c.message);
            gcp.denying_impersonation.store(false, Ordering::SeqCst);
            h.condition(wif, "CredentialsResolved", "True", "Resolved").await;
            gcp.refusing_sts.store(true, Ordering::SeqCst);
            h.condition(direct, "CredentialsResolved", "False", "StsRefused").await;
            gcp.refusing_sts.store(false, Ordering::SeqCst);
            h.condition(direct, "CredentialsResolved", "True", "Resolved").await;

            // A service account the metadata server does not have for this workload is refused.
            let mut stranger = spec(
                &h,
                "artifactRegistry",
                &registry,
                json!({"gcp": {"workloadIdentity": {"serviceAccount": "stranger"}}}),
            );
            stranger["secretName"] = json!("pull-stranger");
            let stranger = h.profile("stranger", stranger).await;
            h.condition(&stranger, "CredentialsResolved", "False", "MetadataServerRefused").await;
            // The metadata server cannot be reached (a port nobody listens on): said in status, and the Secrets
            // regcred wrote before stay as they are.
            let mds = &names[0].1;
            let held = login(&h.secret(&ns, "pull-mds").await.unwrap(), &registry.addr).unwrap().password;
            let closed = fixtures::closed_registry();
            h.restart_env(&[
                ("SSL_CERT_FILE", ca_file(&env, &[&gcp.ca_pem])),
                ("GCE_METADATA_HOST", closed),
                allow(&[&gcp.sts_url]),
            ]);
            let p = h.condition(mds, "CredentialsResolved", "False", "MetadataServerUnreachable").await;
            let c = p.status.unwrap().conditions.into_iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
            assert!(c.message.contains("metadata server"), "{}", c.message);
            let kept = login(&h.secret(&ns, "pull-mds").await.unwrap(), &registry.addr).unwrap().password;
            assert_eq!(kept, held, "the Secret keeps the last token regcred wrote");
        })
        .await;
}

/// A listener that counts the connections it receives: where an attacker would collect what regcred sends.
async fn attacker_listener() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicU64::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, connections)
}

/// The apiserver's own audience: the `aud` of a ServiceAccount token requested without audiences.
async fn apiserver_audience(env: &TestEnv, ns: &str) -> String {
    let token = support::service_account_token(&env.client, ns, "default", None).await;
    use base64::Engine as _;
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    match &claims["aud"] {
        Value::Array(a) => a[0].as_str().unwrap().to_owned(),
        a => a.as_str().unwrap().to_owned(),
    }
}

/// A Quay registry, the operator, a selected namespace, a profile for the registry, and what it wrote there.
struct Quay {
    registry: CloudRegistry,
    h: Harness,
    ns: String,
    profile: String,
    secret: Secret,
    token: String,
}

/// A Quay registry whose robot `team+puller` trusts regcred's ServiceAccount, allowed by the operator as a
/// credential endpoint (as a user of a private Quay would), and profile `name` for it, once its robot token is
/// written into a selected namespace.
async fn quay_federation(env: &TestEnv, name: &str) -> Quay {
    let registry = CloudRegistry::start(&env.client, "127.0.0.1").await;
    registry.push_image(IMAGE).await;
    let h = Harness::start_env(env, &[], &[allow(&[&registry.addr])]).await;
    *registry.quay.lock().unwrap() = Some(("team+puller".into(), subject(&h)));
    let ns = env.namespace("a", &[("pull", "yes")]).await;
    let profile = h.profile(name, spec(&h, "quay", &registry, json!({"quay": {"robot": "team+puller"}}))).await;
    let (s, token) = wait_login(&h, &ns, &registry.addr, |l| l.username == "team+puller").await;
    Quay { registry, h, ns, profile, secret: s, token }
}

#[tokio::test]
async fn quay_robot_tokens_through_federation_with_regcreds_own_service_account() {
    TestEnv::new("quayfed")
        .await
        .run(|env| async move {
            let Quay { registry, h, ns: _, profile, secret: s, token } = quay_federation(&env, "q").await;
            // The chart lets regcred request tokens for its own ServiceAccount, and for no other.
            let me = subject(&h);
            let sa = support::webhook_configuration_name(&env);
            for (name, allowed) in [(sa.as_str(), "yes"), ("default", "no")] {
                let resource = format!("serviceaccounts/{name}");
                let args = ["auth", "can-i", "create", &resource, "--subresource=token", "-n", &h.op_ns, "--as", &me];
                let (_, out) = support::webhook::kubectl(&args, "").await;
                assert_eq!(out.trim(), allowed, "create a token for {name}");
            }
            assert_eq!(expires_annotation(&s), jwt_exp(&token));
            passed(&h, &profile).await;
            // A robot the federation does not know is refused, and says so.
            let other = h
                .profile("other", {
                    let mut s = spec(&h, "quay", &registry, json!({"quay": {"robot": "team+stranger"}}));
                    s["secretName"] = json!("pull-other");
                    s
                })
                .await;
            h.condition(&other, "CredentialsResolved", "False", "FederationRefused").await;
            assert_eq!(registry.mints.load(Ordering::SeqCst), 1);
        })
        .await;
}

/// A profile author (RegistryProfiles, no Secrets) tries to borrow regcred's identity: its ServiceAccount token
/// for the apiserver's own audience or for a malformed one, and credentials sent to a host of the author's
/// (Quay's federation on `server`, GCP's `tokenUrl`, ACR's `authorityHost`). Each is refused in status with
/// the reason and what to change, nothing reaches the author's listener, and the legitimate profile keeps its
/// tokens.
#[tokio::test]
async fn a_profile_author_cannot_get_regcreds_token_or_send_credentials_outside_the_allow_list() {
    TestEnv::new("egress")
        .await
        .run(|env| async move {
            let Quay { registry, h, ns, profile: legit, secret: _, token } = quay_federation(&env, "legit").await;

            let author = support::profile_author(&env).await;
            let forbidden = Api::<Secret>::namespaced(author.clone(), &h.op_ns).list(&ListParams::default()).await;
            assert!(matches!(forbidden, Err(kube::Error::Api(ref e)) if e.code == 403), "the author reads Secrets");
            let (attacker, connections) = attacker_listener().await;
            let apiserver = apiserver_audience(&env, &ns).await;
            let provider = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k";
            let profiles = Api::<regcred::api::RegistryProfile>::all(author);
            let mut attacks = Vec::new();
            for (name, provider_name, server, creds, reason) in [
                ("aud-apiserver", "quay", registry.addr.clone(),
                 json!({"quay": {"robot": "team+puller", "audience": apiserver}}), "AudienceNotAllowed"),
                ("aud-gcp", "artifactRegistry", registry.addr.clone(),
                 json!({"gcp": {"externalAccount": {"audience": provider, "tokenAudience": apiserver}}}), "AudienceNotAllowed"),
                ("aud-form", "artifactRegistry", registry.addr.clone(),
                 json!({"gcp": {"externalAccount": {"audience": "//iam.googleapis.com/x"}}}), "AudienceNotAllowed"),
                ("quay-host", "quay", attacker.clone(), json!({"quay": {"robot": "team+puller"}}), "EndpointNotAllowed"),
                ("gcp-sts", "artifactRegistry", registry.addr.clone(),
                 json!({"gcp": {"externalAccount": {"audience": provider, "tokenUrl": format!("https://{attacker}/v1/token")}}}),
                 "EndpointNotAllowed"),
                ("acr-authority", "acr", registry.addr.clone(),
                 json!({"acr": {"tenantId": "t", "clientId": "c", "authorityHost": format!("https://{attacker}/")}}),
                 "EndpointNotAllowed"),
            ] {
                let full = format!("{}-{name}", env.id);
                let mut s = spec(&h, provider_name, &registry, creds);
                s["server"] = json!(server);
                s["secretName"] = json!(format!("pull-{name}"));
                support::apply(&profiles, &fixtures::manifest(&full, &[("regcred-test", &env.id)], s)).await;
                env.cleanup::<regcred::api::RegistryProfile>(&full);
                attacks.push((full, name, reason));
            }
            for (full, name, reason) in &attacks {
                let p = h.condition(full, "CredentialsResolved", "False", reason).await;
                let c = p.status.unwrap().conditions.into_iter().find(|c| c.type_ == "CredentialsResolved").unwrap();
                if *reason == "EndpointNotAllowed" {
                    assert!(c.message.contains(&attacker) && c.message.contains("--extra-allowed-endpoints"), "{name}: {}", c.message);
                    assert!(c.message.contains("credentials.extraAllowedEndpoints"), "{name}: {}", c.message);
                } else {
                    assert!(c.message.contains("audience") || c.message.contains("Audience"), "{name}: {}", c.message);
                }
                assert!(!c.message.contains(&token), "{name}: a token in status");
                assert!(h.secret(&ns, &format!("pull-{name}")).await.is_none(), "{name} wrote a Secret");
            }
            assert_eq!(connections.load(Ordering::SeqCst), 0, "a request reached the author's listener");
            // The legitimate profile kept its token and kept working.
            h.condition(&legit, "CredentialsResolved", "True", "Resolved").await;
            assert_eq!(login(&h.secret(&ns, "pull").await.unwrap(), &registry.addr).unwrap().password, token);
            assert_eq!(registry.mints.load(Ordering::SeqCst), 1, "only the legitimate profile minted");
        })
        .await;
}
