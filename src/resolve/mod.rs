//! The one resolver: what a RegistryProfile means. Pure: plain data in, plain data out.
//!
//! Two halves, because they change at different times:
//! - [`Meaning`]: what the spec alone says (registry, Secret name, the dockerconfigjson keys and how the kubelet
//!   matches them, the compiled namespace selection). The state layer compiles it once per profile generation;
//!   the controller, the webhook and the metrics all read that one copy.
//! - [`source`]: where the credentials come from, given the Secrets of regcred's own namespace ([`Sources`]): a
//!   static dockerconfigjson, a token source to mint from, anonymous access, or the reason it cannot resolve.
//!
//! From both, [`written`] says what is written for a profile in a namespace now: the credentials in force, whether
//! the profile withholds them, whether the namespace receives them, and whether a Secret carries them there (not
//! for `spec.delivery: CredentialProvider`, see [`writes_secret`]). The reconcile, the new-namespace path, the
//! webhook, the Secret writer and `regcred check --profile` all go by it.

mod credentials;
pub mod kubelet;
pub mod selection;
pub mod written;

pub use credentials::{
    Source, Sources, Unresolved, docker_config_of, mints_tokens, source, source_secrets, token_copy,
};
pub use written::{
    Content, InForce, NotWritten, Preflight, Report, Withheld, Written, in_force, in_force_from, withheld, written,
};

use crate::api::{Delivery, RegistryProfile};
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
    /// How its credentials reach the kubelet (`spec.delivery`).
    pub delivery: Delivery,
    /// Whether it writes a Secret Pods could reference: its delivery writes Secrets, it is not anonymous and not
    /// being deleted (see [`writes_secret`]).
    pub writes_secret: bool,
}

/// Whether `profile` writes Secrets at all: its `spec.delivery` writes them (`Secret`, `Both`), it has credentials
/// to put in them (not anonymous), and it is not being deleted. The one place the delivery's effect on Secrets is
/// decided: a profile that writes none is no rival of any ([`Meaning::rivals`]), may write its Secret nowhere
/// ([`Meaning::may_write_secret`]), and what it writes is nothing ([`Written::secret`]), so the reconcile removes
/// what it wrote before, the new-namespace path and the writer write nothing for it, the webhook injects nothing
/// for it and self-healing evicts nothing for it.
pub fn writes_secret(profile: &RegistryProfile) -> bool {
    profile.spec.delivery.writes_secrets()
        && profile.spec.credentials.anonymous != Some(true)
        && profile.meta().deletion_timestamp.is_none()
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
            delivery: profile.spec.delivery,
            writes_secret: writes_secret(profile),
        }
    }

    /// Whether this meaning was compiled from `profile` as it is now.
    pub fn is_of(&self, profile: &RegistryProfile) -> bool {
        self.uid == profile.uid()
            && self.generation == profile.meta().generation
            && self.name == profile.name_any()
            && self.delivery == profile.spec.delivery
            && self.writes_secret == writes_secret(profile)
    }

    /// Whether the selection takes `ns` (an invalid selector takes nothing).
    pub fn selects(&self, ns: &selection::NamespaceInfo) -> bool {
        self.selection.as_ref().is_ok_and(|s| s.selects(ns))
    }

    /// Whether `other` is a different profile that writes a Secret under the same name: wherever both select a
    /// namespace, they would overwrite each other's credentials there.
    pub fn rivals(&self, other: &Meaning) -> bool {
        self.writes_secret && other.writes_secret && other.name != self.name && other.secret_name == self.secret_name
    }

    /// The one rule for where this profile's credentials may go: a namespace it selects that no rival (see
    /// [`Meaning::rivals`]) also selects. `Err` says why not, naming the rivals. What a namespace may receive from
    /// the profile, by any delivery; for its Secret, see [`Meaning::may_write_secret`].
    pub fn may_write<'a>(
        &self,
        ns: &selection::NamespaceInfo,
        others: impl IntoIterator<Item = &'a Meaning>,
    ) -> Result<(), Refusal> {
        if !self.selects(ns) {
            return Err(Refusal::NotSelected);
        }
        let rivals: Vec<String> =
            others.into_iter().filter(|o| self.rivals(o) && o.selects(ns)).map(|o| o.name.clone()).collect();
        if rivals.is_empty() { Ok(()) } else { Err(Refusal::Conflict(rivals)) }
    }

    /// The one rule for where this profile's Secret may be written: nowhere when it writes none (see
    /// [`writes_secret`]: anonymous access, or `spec.delivery: CredentialProvider`), else as [`Meaning::may_write`]
    /// says. The writer enforces it on every write; the webhook and self-healing ask it of a namespace.
    pub fn may_write_secret<'a>(
        &self,
        ns: &selection::NamespaceInfo,
        others: impl IntoIterator<Item = &'a Meaning>,
    ) -> Result<(), Refusal> {
        if !self.writes_secret {
            return Err(Refusal::NoSecret);
        }
        self.may_write(ns, others)
    }
}

/// Why a profile's Secret may not be written into a namespace (see [`Meaning::may_write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The profile does not select the namespace.
    NotSelected,
    /// Other profiles that select the namespace write a Secret of the same name.
    Conflict(Vec<String>),
    /// The profile writes no Secret anywhere (anonymous access, or `spec.delivery: CredentialProvider`).
    NoSecret,
}

impl Refusal {
    /// The status reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotSelected => crate::api::conditions::NOT_SELECTED,
            Self::Conflict(_) => crate::api::conditions::CONFLICT,
            Self::NoSecret => crate::api::conditions::NOT_WRITTEN,
        }
    }

    /// What a person reads: what happened and what to change.
    pub fn message(&self, secret_name: &str) -> String {
        match self {
            Self::NotSelected => {
                format!("the profile does not select this namespace: its Secret {secret_name} is never written here")
            }
            Self::Conflict(rivals) => format!(
                "RegistryProfile {} also selects this namespace and writes a Secret named {secret_name}: neither \
                 profile writes or removes it here until one changes spec.secretName or its namespaces",
                rivals.join(", ")
            ),
            Self::NoSecret => format!(
                "the profile writes no Secret (anonymous access, or spec.delivery CredentialProvider): its Secret \
                 {secret_name} is written nowhere"
            ),
        }
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

    pub(crate) use crate::fixtures::profile;

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
    fn a_secret_is_written_only_where_its_profile_selects_and_no_rival_does() {
        let spec = |names: &[&str], secret: &str| {
            serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "c"}},
                "secretName": secret, "namespaces": {"names": names}})
        };
        let a = Meaning::of(&profile("a", spec(&["team-a", "both"], "shared")), "regcred-system");
        let b = Meaning::of(&profile("b", spec(&["team-b", "both"], "shared")), "regcred-system");
        let c = Meaning::of(&profile("c", spec(&["*"], "other")), "regcred-system");
        let mut anon = profile("anon", spec(&["*"], "shared"));
        anon.spec.credentials.anonymous = Some(true);
        anon.spec.credentials.secret_ref = None;
        let anon = Meaning::of(&anon, "regcred-system");
        let all = [&a, &b, &c, &anon];
        let ns = |name: &str| selection::NamespaceInfo {
            name: name.into(),
            labels: std::collections::BTreeMap::default(),
            terminating: false,
        };
        let cases: Vec<(&Meaning, &str, Result<(), Refusal>)> = vec![
            (&a, "team-a", Ok(())),
            (&a, "team-b", Err(Refusal::NotSelected)),
            (&b, "team-a", Err(Refusal::NotSelected)),
            (&a, "both", Err(Refusal::Conflict(vec!["b".into()]))),
            (&b, "both", Err(Refusal::Conflict(vec!["a".into()]))),
            // Another Secret name, or no Secret at all (anonymous), is no rival.
            (&c, "both", Ok(())),
            (&a, "regcred-system", Err(Refusal::NotSelected)),
        ];
        for (m, namespace, want) in cases {
            assert_eq!(m.may_write(&ns(namespace), all.iter().copied()), want, "{} in {namespace}", m.name);
        }
        let message = Refusal::Conflict(vec!["b".into()]).message("shared");
        assert!(message.contains("RegistryProfile b") && message.contains("spec.secretName"), "{message}");
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
