//! Every example in examples/ is a valid RegistryProfile: it parses into regcred's types, and the real apiserver
//! accepts it against the CRD (OpenAPI schema and CEL rules) when applied.
#![allow(clippy::unwrap_used, clippy::panic)]

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
            // A profile per provider family the README promises.
            for provider in
                ["dockerHub", "ecr", "ecrPublic", "gcr", "artifactRegistry", "ghcr", "quay", "generic", "mcr"]
            {
                assert!(providers.contains(&format!("\"{provider}\"")), "no example for {provider}: {providers:?}");
            }
        })
        .await;
}
