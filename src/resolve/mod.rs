//! The one resolver: what a RegistryProfile means. Pure: plain data in, plain data out.
//!
//! Two halves, because they change at different times:
//! - [`Meaning`]: what the spec alone says (registry, Secret name, the dockerconfigjson keys and how the kubelet
//!   matches them, the compiled namespace selection). The state layer compiles it once per profile generation;
//!   the controller, the webhook and the metrics all read that one copy.
//! - [`source`]: where the credentials come from, given the Secrets of regcred's own namespace ([`Sources`]): a
//!   static dockerconfigjson, a token source to mint from, anonymous access, or the reason it cannot resolve.
//!   [`current`] turns a minted token's state into what is written. `regcred check --profile` resolves through
//!   the same functions, over Secrets it reads from the API.

mod credentials;
pub mod selection;

pub use credentials::{
    Source, Sources, Unresolved, current, docker_config_of, in_force, mints_tokens, source, source_secrets, token_copy,
};

use crate::api::RegistryProfile;
use crate::names::secret_name;
use crate::registry::reference::CredentialKey;
use crate::registry::{config_key, resolve_server};
use kube::{Resource, ResourceExt};
use selection::{CompiledSelection, InvalidSelector};

/// What a profile's spec means, whatever the cluster holds. Compiled once per generation.
#[derive(Debug, Clone)]
pub struct Meaning {
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// The registry host (and path), `None` when the provider has no default and `spec.server` is unset.
    pub registry: Option<String>,
    pub secret_name: String,
    /// The dockerconfigjson keys its Secret holds, each with the kubelet's matching of images against it.
    pub keys: Vec<(String, CredentialKey)>,
    pub selection: Result<CompiledSelection, InvalidSelector>,
    /// Whether it writes a Secret Pods could reference: not anonymous, not being deleted.
    pub writes_secret: bool,
}

impl Meaning {
    /// Compiles `profile`; `operator_namespace` is never selected unless named.
    pub fn of(profile: &RegistryProfile, operator_namespace: &str) -> Self {
        let registry = resolve_server(profile.spec.provider, profile.spec.server.as_deref());
        let keys = registry_keys(profile, registry.as_deref())
            .into_iter()
            .map(|k| {
                let parsed = CredentialKey::parse(&k);
                (k, parsed)
            })
            .collect();
        Self {
            name: profile.name_any(),
            uid: profile.uid(),
            generation: profile.meta().generation,
            registry,
            secret_name: secret_name(profile),
            keys,
            selection: CompiledSelection::new(&profile.spec.namespaces, operator_namespace),
            writes_secret: profile.spec.credentials.anonymous != Some(true)
                && profile.meta().deletion_timestamp.is_none(),
        }
    }

    /// Whether this meaning was compiled from `profile` as it is now.
    pub fn is_of(&self, profile: &RegistryProfile) -> bool {
        self.uid == profile.uid()
            && self.generation == profile.meta().generation
            && self.name == profile.name_any()
            && self.writes_secret
                == (profile.spec.credentials.anonymous != Some(true) && profile.meta().deletion_timestamp.is_none())
    }

    /// Whether the selection takes `ns` (an invalid selector takes nothing).
    pub fn selects(&self, ns: &selection::NamespaceInfo) -> bool {
        self.selection.as_ref().is_ok_and(|s| s.selects(ns))
    }
}

/// The dockerconfigjson keys a profile's Secret holds: its registry's, and for ECR with `registryIds` the same
/// registry host in each of those accounts.
fn registry_keys(p: &RegistryProfile, registry: Option<&str>) -> Vec<String> {
    let Some(registry) = registry else { return Vec::new() };
    let ids = p.spec.credentials.ecr.as_ref().map(|e| e.registry_ids.as_slice()).unwrap_or_default();
    match registry.split_once('.') {
        Some((_, rest)) if !ids.is_empty() => ids.iter().map(|id| config_key(&format!("{id}.{rest}"))).collect(),
        _ => vec![config_key(registry)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn profile(name: &str, mut spec: serde_json::Value) -> RegistryProfile {
        if spec.get("namespaces").is_none() {
            spec["namespaces"] = serde_json::json!({});
        }
        let mut p: RegistryProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
            "metadata": {"name": name, "generation": 1}, "spec": spec,
        }))
        .unwrap();
        p.metadata.uid = Some(format!("uid-{name}"));
        p
    }

    #[test]
    fn a_meaning_holds_the_registry_its_keys_and_the_secret_name() {
        let ecr = profile(
            "ecr",
            serde_json::json!({
                "provider": "ecr", "server": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "credentials": {"ecr": {"registryIds": ["111111111111", "222222222222"]}},
                "namespaces": {"names": ["*"]},
            }),
        );
        let m = Meaning::of(&ecr, "regcred-system");
        assert_eq!(m.registry.as_deref(), Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        let keys: Vec<&str> = m.keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["111111111111.dkr.ecr.eu-west-1.amazonaws.com", "222222222222.dkr.ecr.eu-west-1.amazonaws.com"]
        );
        assert_eq!(m.secret_name, "regcred-ecr");
        assert!(m.writes_secret && m.is_of(&ecr));

        let hub = profile("hub", serde_json::json!({"provider": "dockerHub", "credentials": {"anonymous": true}}));
        let m = Meaning::of(&hub, "regcred-system");
        assert_eq!(m.keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["https://index.docker.io/v1/"]);
        assert!(!m.writes_secret, "anonymous profiles write no Secret");
    }

    #[test]
    fn a_new_generation_needs_a_new_meaning() {
        let mut p = profile("p", serde_json::json!({"server": "r.example.com", "credentials": {"anonymous": true}}));
        let m = Meaning::of(&p, "regcred-system");
        assert!(m.is_of(&p));
        p.metadata.generation = Some(2);
        assert!(!m.is_of(&p));
    }

    #[test]
    fn an_invalid_selector_selects_nothing_and_says_why() {
        let p = profile(
            "p",
            serde_json::json!({"server": "r.example.com", "credentials": {"anonymous": true},
                "namespaces": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}}}),
        );
        let m = Meaning::of(&p, "regcred-system");
        assert!(m.selection.is_err());
        let ns = selection::NamespaceInfo {
            name: "shop".into(),
            labels: std::collections::BTreeMap::default(),
            terminating: false,
        };
        assert!(!m.selects(&ns));
    }
}
