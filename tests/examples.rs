//! Every example in examples/ is a valid RegistryProfile: it parses into regcred's types, and the real apiserver
//! accepts it against the CRD (OpenAPI schema and CEL rules) when applied.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic)]

mod support;

use kube::api::{Api, PostParams};
use regcred::api::RegistryProfile;
use serde::Deserialize;
use support::TestEnv;

#[tokio::test]
async fn every_example_profile_is_accepted_by_the_crd() {
    TestEnv::new("examples")
        .await
        .run(|env| async move {
            support::install_crd(&env.client).await;
            let api = Api::<RegistryProfile>::all(env.client.clone());
            let dir = support::repo_root().join("examples");
            let mut providers = std::collections::BTreeSet::new();
            let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
                let text = std::fs::read_to_string(path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value = serde_json::Value::deserialize(doc).unwrap();
                    if value["kind"] != "RegistryProfile" {
                        continue;
                    }
                    let mut profile: RegistryProfile = serde_json::from_value(value)
                        .unwrap_or_else(|e| panic!("{}: not a RegistryProfile: {e}", path.display()));
                    providers.insert(serde_json::to_value(profile.spec.provider).unwrap().to_string());
                    // Applied under a name of the test's own, labelled so that no operator handles it.
                    let name = format!("{}-{}", env.id, profile.metadata.name.as_deref().unwrap());
                    profile.metadata.name = Some(name.clone());
                    profile.metadata.labels = Some([("regcred-test".to_owned(), env.id.clone())].into());
                    api.create(&PostParams::default(), &profile)
                        .await
                        .unwrap_or_else(|e| panic!("{}: rejected by the CRD: {e}", path.display()));
                    env.cleanup::<RegistryProfile>(&name);
                }
            }
            // A profile per provider family the docs promise (docs/registries/: one page per preset, with its example).
            for provider in
                ["dockerHub", "ecr", "ecrPublic", "gcr", "artifactRegistry", "ghcr", "quay", "generic", "mcr", "acr"]
            {
                assert!(providers.contains(&format!("\"{provider}\"")), "no example for {provider}: {providers:?}");
            }
        })
        .await;
}

#[tokio::test]
async fn what_regcred_would_refuse_is_refused_when_applied_with_a_sentence() {
    TestEnv::new("refused")
        .await
        .run(|env| async move {
            support::install_crd(&env.client).await;
            let api = Api::<RegistryProfile>::all(env.client.clone());
            let profile = |name: &str, spec: serde_json::Value| -> RegistryProfile {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
                    "metadata": {"name": format!("{}-{name}", env.id), "labels": {"regcred-test": env.id}},
                    "spec": spec,
                }))
                .unwrap()
            };
            let base = |extra: serde_json::Value| {
                let mut spec = serde_json::json!({
                    "server": "registry.example.com:5000",
                    "credentials": {"anonymous": true},
                    "namespaces": {"names": ["a"]},
                });
                spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                spec
            };
            let dry_run = PostParams { dry_run: true, ..Default::default() };
            let cases = [
                ("port", base(serde_json::json!({"server": "reg.example.com:99999"})), "the port must be between 1 and 65535"),
                ("port0", base(serde_json::json!({"server": "reg.example.com:0/team"})), "the port must be between 1 and 65535"),
                ("scheme", base(serde_json::json!({"server": "https://reg.example.com"})), "spec.server must be host[:port][/path] in lower case"),
                ("upper", base(serde_json::json!({"server": "Reg.example.com"})), "spec.server must be host[:port][/path] in lower case"),
                ("interval", base(serde_json::json!({"validation": {"interval": "5s"}})), "spec.validation.interval must be at least 1m"),
                ("image", base(serde_json::json!({"validation": {"images": ["UPPER/Case:1"]}})), "spec.validation.images must be image references"),
                ("image2", base(serde_json::json!({"validation": {"images": ["team/app:1.0", "team/App"]}})), "spec.validation.images must be image references"),
                ("foreign", base(serde_json::json!({"validation": {"images": ["team/app:1", "other.host/x"]}})), "an image naming its registry must be on spec.server"),
                ("otherport", base(serde_json::json!({"validation": {"images": ["registry.example.com/x"]}})), "an image naming its registry must be on spec.server"),
                ("gcpnone", base(serde_json::json!({"provider": "gcr", "credentials": {"gcp": {}}})), "set exactly one of secretRef, workloadIdentity and externalAccount"),
                ("gcptwo", base(serde_json::json!({"provider": "gcr", "credentials": {"gcp": {"workloadIdentity": {}, "secretRef": {"name": "k"}}}})), "set exactly one of secretRef, workloadIdentity and externalAccount"),
                ("acrprov", base(serde_json::json!({"provider": "generic", "credentials": {"acr": {}}})), "credentials.acr needs provider acr"),
                ("acrhost", base(serde_json::json!({"provider": "acr", "credentials": {"acr": {"authorityHost": "http://login.example.com"}}})), "authorityHost"),
                ("quayrobot", base(serde_json::json!({"provider": "quay", "credentials": {"quay": {"robot": "no-plus"}}})), "robot"),
                ("wifaud", base(serde_json::json!({"provider": "gcr", "credentials": {"gcp": {"externalAccount": {"audience": "projects/1/pools"}}}})), "audience"),
            ];
            for (name, spec, message) in cases {
                match api.create(&dry_run, &profile(name, spec)).await {
                    Err(kube::Error::Api(s)) => {
                        assert_eq!(s.code, 422, "{name}: {}", s.message);
                        assert!(s.message.contains(message), "{name}: {}", s.message);
                    }
                    other => panic!("{name}: accepted or failed otherwise: {other:?}"),
                }
            }
            // What stays valid: wildcards, ports, path prefixes, mixed-case tags, digests, full references.
            let fine = base(serde_json::json!({
                "server": "*.example.com:65535/team",
                "validation": {"interval": "1m", "images": [
                    "team/app:V1.0_rc", "localhost:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    "Registry.Example.com/a/b-c/d__e:1",
                ]},
            }));
            api.create(&dry_run, &profile("fine", fine)).await.unwrap();
            // A full reference on the profile's own registry (host in any case, under its path prefix) is fine.
            let own = base(serde_json::json!({
                "server": "registry.example.com:5000/team",
                "validation": {"images": ["Registry.Example.com:5000/team/app:1", "app:2"]},
            }));
            api.create(&dry_run, &profile("own", own)).await.unwrap();
        })
        .await;
}
