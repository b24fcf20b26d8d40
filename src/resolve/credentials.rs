//! Where a profile's credentials come from, resolved against the Secrets of regcred's own namespace. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::api::{Provider, RegistryProfile};
use crate::credentials::ecr::{PUBLIC_REGION, known_region, region_of_host};
use crate::credentials::gcp::{DEFAULT_STS_URL, default_token_audience, impersonation_url};
use crate::credentials::tokens::{
    AcrSource, AwsKeys, AzureCredential, EcrSource, EndpointTls, GcpAuth, GcpExternal, GcpSource, QuaySource,
    TokenSource,
};
use crate::credentials::{CredentialError, DockerConfig, SecretBytes, dockerconfig_from_source};
use crate::glob::glob_match;
use crate::names::{
    DOCKER_CONFIG_KEY, EXPIRES_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PART_OF_LABEL, token_copy_name,
};
use crate::registry::{config_key, host_of};

/// The Secrets of regcred's own namespace: the only place credentials are read from.
pub trait Sources {
    /// regcred's namespace.
    fn namespace(&self) -> &str;
    /// The Secret `name` in it.
    fn secret(&self, name: &str) -> Option<Arc<Secret>>;
}

/// Secrets already at hand (`regcred check --profile`, tests).
impl Sources for (String, BTreeMap<String, Arc<Secret>>) {
    fn namespace(&self) -> &str {
        &self.0
    }
    fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.1.get(name).cloned()
    }
}

/// Why a profile's credentials do not resolve: a reason for its `CredentialsResolved` condition and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: String,
    pub message: String,
}

pub(super) fn unresolved(reason: &str, message: impl Into<String>) -> Unresolved {
    Unresolved { reason: reason.into(), message: message.into() }
}

impl From<CredentialError> for Unresolved {
    fn from(e: CredentialError) -> Self {
        unresolved(e.reason(), e.to_string())
    }
}

/// Where a profile's credentials come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A dockerconfigjson built from a Secret in regcred's namespace (`from` names it, for status).
    Static { config: DockerConfig, from: String },
    /// Short-lived tokens, minted by the refresher.
    Token(TokenSource),
    /// Anonymous access: no Secret at all.
    Anonymous,
}

/// Whether a profile's credentials are short-lived tokens regcred mints.
pub fn mints_tokens(profile: &RegistryProfile) -> bool {
    let c = &profile.spec.credentials;
    c.ecr.is_some() || c.gcp.is_some() || c.acr.is_some() || c.quay.is_some()
}

/// The Secrets of regcred's namespace a profile reads: a change to one of them re-resolves the profile.
pub fn source_secrets(profile: &RegistryProfile) -> Vec<&str> {
    let c = &profile.spec.credentials;
    [
        c.secret_ref.as_ref(),
        c.ecr.as_ref().and_then(|e| e.secret_ref.as_ref()),
        c.gcp.as_ref().and_then(|g| g.secret_ref.as_ref()),
        c.acr.as_ref().and_then(|a| a.secret_ref.as_ref()),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.as_str())
    .collect()
}

/// Resolves where `profile`'s credentials come from, for its `registry` (see [`super::Meaning::registry`]).
/// Token sources come first: a profile with `credentials.ecr`, `gcp`, `acr` or `quay` mints, whatever else it
/// sets.
pub fn source(profile: &RegistryProfile, registry: Option<&str>, sources: &impl Sources) -> Result<Source, Unresolved> {
    let creds = &profile.spec.credentials;
    if let Some(ecr) = &creds.ecr {
        return ecr_source(profile, ecr, registry, sources).map(Source::Token);
    }
    if let Some(gcp) = &creds.gcp {
        return gcp_source(profile, gcp, registry, sources).map(Source::Token);
    }
    if let Some(acr) = &creds.acr {
        return acr_source(profile, acr, registry, sources).map(Source::Token);
    }
    if let Some(quay) = &creds.quay {
        let registry = registry.ok_or_else(missing_server)?;
        return Ok(Source::Token(TokenSource::Quay(QuaySource {
            registry: registry.to_owned(),
            registry_key: config_key(registry),
            robot: quay.robot.clone(),
            audience: quay.audience.clone().unwrap_or_else(|| host_of(registry).to_owned()),
            tls: endpoint_tls(profile),
        })));
    }
    let Some(secret_ref) = creds.secret_ref.as_ref() else {
        return if creds.anonymous == Some(true) {
            Ok(Source::Anonymous)
        } else {
            Err(unresolved("NoCredentialSource", "set spec.credentials.secretRef or spec.credentials.anonymous: true"))
        };
    };
    let registry = registry.ok_or_else(missing_server)?;
    let data = source_data(sources, &secret_ref.name, &profile.name_any())?;
    let from = format!("{}/{}", sources.namespace(), secret_ref.name);
    let config = dockerconfig_from_source(&from, &data, profile.spec.provider, &config_key(registry))?;
    Ok(Source::Static { config, from: format!("Secret {from}") })
}

/// The current token of `profile` as the leader keeps it in regcred's own namespace. Never read from the
/// tenants' namespaces: a Secret there could be forged (labels, ownerReferences, even managedFields are written by
/// whoever creates the object), and copying it would plant one tenant's content in another's namespace.
pub fn token_copy(
    profile: &RegistryProfile,
    sources: &impl Sources,
) -> Option<(DockerConfig, Option<jiff::Timestamp>)> {
    let uid = profile.uid()?;
    let copy = sources.secret(&token_copy_name(&uid))?;
    if !copy.owner_references().iter().any(|o| o.uid == uid) {
        return None;
    }
    let expires_at = copy.annotations().get(EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok());
    Some((docker_config_of(&copy)?, expires_at))
}

/// The `.dockerconfigjson` a Secret holds.
pub fn docker_config_of(secret: &Secret) -> Option<DockerConfig> {
    let bytes = secret.data.as_ref()?.get(DOCKER_CONFIG_KEY)?;
    Some(DockerConfig(SecretBytes::new(bytes.0.clone())))
}

/// The annotation by which a source Secret names the profiles that may use it: comma-separated profile names or
/// globs (`team-a-*`). A Secret without it may be used by any profile.
pub const PROFILES_ANNOTATION: &str = "regcred.dev/profiles";

/// Whether `profile` may read the source Secret `secret`: never one of regcred's own (a token copy, the webhook's
/// certificate), and, when the Secret names the profiles that may use it ([`PROFILES_ANNOTATION`]), only those.
/// `Err`: the refusal, saying what to change.
pub fn source_allowed(secret: &Secret, profile: &str) -> Result<(), Unresolved> {
    let name = secret.name_any();
    let labels = secret.labels();
    let own = labels.get(PART_OF_LABEL).is_some_and(|v| v == MANAGED_BY_VALUE)
        || labels.get(MANAGED_BY_LABEL).is_some_and(|v| v.starts_with(MANAGED_BY_VALUE));
    if own {
        return Err(unresolved(
            "SourceNotAllowed",
            format!(
                "Secret {name} is one regcred writes itself (a token copy or the webhook's certificate), never a credential source"
            ),
        ));
    }
    match secret.annotations().get(PROFILES_ANNOTATION) {
        Some(allowed) if !allowed.split(',').map(str::trim).any(|g| !g.is_empty() && glob_match(g, profile)) => {
            Err(unresolved(
                "SourceNotAllowed",
                format!(
                    "Secret {name} may be used only by the profiles its annotation {PROFILES_ANNOTATION} names ({allowed}); add {profile} there to allow it"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The keys of a source Secret in regcred's namespace, when `profile` may read it (see [`source_allowed`]).
fn source_data(sources: &impl Sources, name: &str, profile: &str) -> Result<BTreeMap<String, Vec<u8>>, Unresolved> {
    let namespace = sources.namespace();
    let source = sources
        .secret(name)
        .ok_or_else(|| CredentialError::SecretNotFound { namespace: namespace.into(), name: name.into() })?;
    source_allowed(&source, profile)?;
    Ok(source.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect())
}

fn ecr_source(
    profile: &RegistryProfile,
    ecr: &crate::api::EcrTokenSource,
    registry: Option<&str>,
    sources: &impl Sources,
) -> Result<TokenSource, Unresolved> {
    let public = profile.spec.provider == Provider::EcrPublic;
    let region = if public {
        Some(PUBLIC_REGION.to_owned())
    } else {
        ecr.region.clone().or_else(|| registry.and_then(region_of_host))
    };
    let region = region.ok_or_else(|| {
        unresolved("RegionInvalid", "no AWS region: set credentials.ecr.region, or use an ECR host as server")
    })?;
    if !known_region(&region) {
        return Err(unresolved("RegionInvalid", format!("{region} is not a region of any AWS partition")));
    }
    let keys = match &ecr.secret_ref {
        None => None,
        Some(r) => {
            let data = source_data(sources, &r.name, &profile.name_any())?;
            let get = |k: &str| data.get(k).filter(|v| !v.is_empty()).cloned();
            let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) else {
                return Err(unresolved(
                    "MissingKey",
                    format!(
                        "Secret {}/{} needs the keys aws_access_key_id and aws_secret_access_key",
                        sources.namespace(),
                        r.name
                    ),
                ));
            };
            Some(AwsKeys {
                access_key_id: String::from_utf8_lossy(&id).trim().to_owned(),
                secret_access_key: SecretBytes::new(secret),
                session_token: get("aws_session_token").map(SecretBytes::new),
            })
        }
    };
    Ok(TokenSource::Ecr(EcrSource {
        public,
        region,
        registry_ids: ecr.registry_ids.clone(),
        role_arn: ecr.role_arn.clone(),
        external_id: ecr.external_id.clone(),
        keys,
    }))
}

fn missing_server() -> Unresolved {
    unresolved("MissingServer", "spec.server is required for this provider")
}

/// The profile's `spec.tls`, for endpoints that are the registry itself.
fn endpoint_tls(profile: &RegistryProfile) -> EndpointTls {
    let tls = profile.spec.tls.as_ref();
    EndpointTls {
        ca_pem: tls.and_then(|t| t.ca_bundle.clone()),
        insecure_skip_verify: tls.and_then(|t| t.insecure_skip_verify).unwrap_or(false),
    }
}

fn gcp_source(
    profile: &RegistryProfile,
    gcp: &crate::api::GcpTokenSource,
    registry: Option<&str>,
    sources: &impl Sources,
) -> Result<TokenSource, Unresolved> {
    let registry = registry.ok_or_else(missing_server)?;
    let auth = if let Some(secret_ref) = &gcp.secret_ref {
        let data = source_data(sources, &secret_ref.name, &profile.name_any())?;
        let key = data.get("key.json").filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
            unresolved(
                "MissingKey",
                format!("Secret {}/{} needs the key key.json", sources.namespace(), secret_ref.name),
            )
        })?;
        GcpAuth::Key(SecretBytes::new(key))
    } else if let Some(external) = &gcp.external_account {
        GcpAuth::External(GcpExternal {
            audience: external.audience.clone(),
            token_audience: external
                .token_audience
                .clone()
                .unwrap_or_else(|| default_token_audience(&external.audience)),
            token_url: external.token_url.clone().unwrap_or_else(|| DEFAULT_STS_URL.to_owned()),
            impersonation_url: external
                .service_account_impersonation_url
                .clone()
                .or_else(|| external.service_account.as_deref().map(impersonation_url)),
        })
    } else if let Some(wi) = &gcp.workload_identity {
        GcpAuth::MetadataServer { service_account: wi.service_account.clone().unwrap_or_else(|| "default".into()) }
    } else {
        return Err(unresolved(
            "NoCredentialSource",
            "credentials.gcp needs one of secretRef, workloadIdentity and externalAccount",
        ));
    };
    Ok(TokenSource::Gcp(GcpSource { auth, registry_key: config_key(registry) }))
}

fn acr_source(
    profile: &RegistryProfile,
    acr: &crate::api::AcrTokenSource,
    registry: Option<&str>,
    sources: &impl Sources,
) -> Result<TokenSource, Unresolved> {
    let registry = registry.ok_or_else(missing_server)?;
    let credential = match &acr.secret_ref {
        None => AzureCredential::WorkloadIdentity,
        Some(r) => {
            let data = source_data(sources, &r.name, &profile.name_any())?;
            let get = |k: &str| data.get(k).filter(|v| !v.trim_ascii().is_empty());
            let from = format!("Secret {}/{}", sources.namespace(), r.name);
            match (get("client_secret"), get("tls.crt"), get("tls.key")) {
                (Some(secret), None, None) => AzureCredential::ClientSecret(SecretBytes::new(secret.clone())),
                (None, Some(cert), Some(key)) => AzureCredential::Certificate {
                    certificate: String::from_utf8(cert.clone()).map_err(|_| {
                        unresolved("InvalidEncoding", format!("key tls.crt of {from} is not UTF-8 PEM"))
                    })?,
                    key: SecretBytes::new(key.clone()),
                },
                (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                    return Err(unresolved(
                        "AmbiguousKeys",
                        format!("{from} has both client_secret and a certificate; keep exactly one"),
                    ));
                }
                (None, Some(_), None) | (None, None, Some(_)) => {
                    return Err(unresolved("MissingKey", format!("{from} needs both tls.crt and tls.key")));
                }
                (None, None, None) => {
                    return Err(unresolved(
                        "MissingKey",
                        format!("{from} needs client_secret, or tls.crt and tls.key (a service principal)"),
                    ));
                }
            }
        }
    };
    Ok(TokenSource::Acr(AcrSource {
        registry: registry.to_owned(),
        tenant_id: acr.tenant_id.clone(),
        client_id: acr.client_id.clone(),
        authority_host: acr.authority_host.clone(),
        scope: acr.scope.clone(),
        credential,
        repositories: acr.repositories.clone(),
        tls: endpoint_tls(profile),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::tests::profile;
    use k8s_openapi::ByteString;

    #[test]
    fn a_source_secret_serves_the_profiles_it_names_and_never_is_one_of_regcreds_own() {
        let secret = |labels: &[(&str, &str)], profiles: Option<&str>| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("creds".into()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
                annotations: profiles.map(|p| BTreeMap::from([(PROFILES_ANNOTATION.to_owned(), p.to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let cases = [
            (secret(&[], None), "anyone", true),
            (secret(&[], Some("team-a")), "team-a", true),
            (secret(&[], Some("team-a")), "team-b", false),
            (secret(&[], Some("team-a-*, shared")), "team-a-web", true),
            (secret(&[], Some("team-a-*, shared")), "shared", true),
            (secret(&[], Some("")), "team-a", false),
            // A token copy, the webhook's certificate: regcred's own, whatever they say.
            (secret(&[(PART_OF_LABEL, MANAGED_BY_VALUE)], None), "anyone", false),
            (secret(&[(MANAGED_BY_LABEL, "regcred-webhook")], Some("*")), "anyone", false),
        ];
        for (s, profile, want) in cases {
            let got = source_allowed(&s, profile);
            assert_eq!(got.is_ok(), want, "{profile} {:?} {:?}", s.metadata.labels, s.metadata.annotations);
            if let Err(u) = got {
                assert_eq!(u.reason, "SourceNotAllowed");
            }
        }
    }

    fn secrets(entries: &[(&str, &[(&str, &str)])]) -> (String, BTreeMap<String, Arc<Secret>>) {
        let map = entries
            .iter()
            .map(|(name, data)| {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta { name: Some((*name).into()), ..Default::default() },
                    data: Some(data.iter().map(|(k, v)| ((*k).into(), ByteString(v.as_bytes().to_vec()))).collect()),
                    ..Default::default()
                };
                ((*name).to_owned(), Arc::new(secret))
            })
            .collect();
        ("regcred-system".into(), map)
    }

    fn reason(r: Result<Source, Unresolved>) -> String {
        r.err().map(|u| u.reason).unwrap_or_default()
    }

    #[test]
    fn each_source_resolves_or_says_which_step_failed() {
        let srcs = secrets(&[
            ("creds", &[("username", "u"), ("password", "p")]),
            ("aws", &[("aws_access_key_id", "AKIA")]),
            ("gcp", &[("other", "x")]),
        ]);
        let static_ = profile(
            "s",
            serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "creds"}}}),
        );
        match source(&static_, Some("r.example.com"), &srcs) {
            Ok(Source::Static { from, .. }) => assert_eq!(from, "Secret regcred-system/creds"),
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                serde_json::json!({"server": "r.example.com", "credentials": {}}),
                Some("r.example.com"),
                "NoCredentialSource",
            ),
            (serde_json::json!({"credentials": {"secretRef": {"name": "creds"}}}), None, "MissingServer"),
            (
                serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "nope"}}}),
                Some("r.example.com"),
                "SecretNotFound",
            ),
            (
                serde_json::json!({"provider": "ecr", "credentials": {"ecr": {}}}),
                Some("registry.example.com"),
                "RegionInvalid",
            ),
            (
                serde_json::json!({"provider": "ecr", "credentials": {"ecr": {"region": "mars-1"}}}),
                None,
                "RegionInvalid",
            ),
            (
                serde_json::json!({"provider": "ecr", "credentials": {"ecr": {"region": "eu-west-1", "secretRef": {"name": "aws"}}}}),
                None,
                "MissingKey",
            ),
            (
                serde_json::json!({"provider": "gcr", "credentials": {"gcp": {"secretRef": {"name": "gcp"}}}}),
                Some("gcr.io"),
                "MissingKey",
            ),
            (
                serde_json::json!({"provider": "gcr", "credentials": {"gcp": {"secretRef": {"name": "gcp"}}}}),
                None,
                "MissingServer",
            ),
        ];
        for (spec, registry, want) in cases {
            assert_eq!(reason(source(&profile("p", spec.clone()), registry, &srcs)), want, "{spec}");
        }
        // Token sources come first, whatever else the profile sets (regcred check used another order).
        let both = profile(
            "b",
            serde_json::json!({"provider": "ecr", "credentials": {"secretRef": {"name": "creds"}, "ecr": {"region": "eu-west-1"}}}),
        );
        assert!(matches!(source(&both, None, &srcs), Ok(Source::Token(TokenSource::Ecr(_)))));
        let anon = profile("a", serde_json::json!({"provider": "mcr", "credentials": {"anonymous": true}}));
        assert_eq!(source(&anon, Some("mcr.microsoft.com"), &srcs), Ok(Source::Anonymous));
    }

    #[test]
    fn a_token_copy_counts_only_when_it_names_the_profile_as_owner() {
        let p = profile("p", serde_json::json!({"provider": "ecr", "credentials": {"ecr": {"region": "eu-west-1"}}}));
        let mut srcs = secrets(&[]);
        let mut copy = Secret {
            data: Some([(DOCKER_CONFIG_KEY.to_owned(), ByteString(b"{}".to_vec()))].into()),
            ..Default::default()
        };
        copy.metadata.annotations =
            Some([(EXPIRES_AT_ANNOTATION.to_owned(), "2030-01-01T00:00:00Z".to_owned())].into());
        srcs.1.insert(token_copy_name("uid-p"), Arc::new(copy.clone()));
        assert_eq!(token_copy(&p, &srcs), None, "no ownerReference: not ours");
        copy.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            uid: "uid-p".into(),
            ..Default::default()
        }]);
        srcs.1.insert(token_copy_name("uid-p"), Arc::new(copy));
        let (_, expires) = token_copy(&p, &srcs).unwrap();
        assert_eq!(expires, "2030-01-01T00:00:00Z".parse().ok());
    }
}
