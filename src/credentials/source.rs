//! Source Secrets: which of their keys hold which kind of credential, and the dockerconfigjson each becomes
//! ([`super::dockerconfig`] renders it). Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SecretBytes;
use super::dockerconfig::{self, DockerConfig, render};
use crate::api::Provider;

/// Why a source Secret could not be turned into credentials. Each variant is a condition reason; each message says
/// what is wrong with which Secret, then what to do, then any detail (never the Secret's values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "Secret {namespace}/{name} does not exist; create it in namespace {namespace}, or fix \
         spec.credentials.secretRef.name"
    )]
    SecretNotFound { namespace: String, name: String },
    #[error(
        "Secret {0} has none of the keys username+password, token, key.json or .dockerconfigjson; add one of them \
         (kubectl create secret generic ... --from-literal=username=... --from-literal=password=...)"
    )]
    MissingKey(String),
    #[error("Secret {secret} has key {key} without its companion {missing}; add key {missing} to it")]
    IncompleteKeys { secret: String, key: &'static str, missing: &'static str },
    #[error("Secret {secret} has more than one credential type ({keys}); keep exactly one")]
    AmbiguousKeys { secret: String, keys: String },
    #[error("key {key} of Secret {secret} is empty or not UTF-8 text; put the value in as text")]
    InvalidEncoding { secret: String, key: String },
    #[error(
        "key .dockerconfigjson of Secret {secret} is not a valid Docker config; create it with kubectl create \
         secret docker-registry, or from a config.json that works with docker login ({reason})"
    )]
    InvalidDockerConfig { secret: String, reason: String },
    #[error(
        "key key.json of Secret {secret} is not a GCP service-account key; put the JSON key file as Google \
         issued it ({reason})"
    )]
    InvalidServiceAccountKey { secret: String, reason: String },
}

impl CredentialError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::MissingKey(_) | Self::IncompleteKeys { .. } => "MissingKey",
            Self::AmbiguousKeys { .. } => "AmbiguousKeys",
            Self::InvalidEncoding { .. } => "InvalidEncoding",
            Self::InvalidDockerConfig { .. } => "InvalidDockerConfig",
            Self::InvalidServiceAccountKey { .. } => "InvalidServiceAccountKey",
        }
    }
}

const USERNAME: &str = "username";
const PASSWORD: &str = "password";
const TOKEN: &str = "token";
const GCP_KEY: &str = "key.json";
const DOCKER_CONFIG: &str = ".dockerconfigjson";

/// The username registries expect with a bare token, by provider.
fn token_username(provider: Provider) -> &'static str {
    match provider {
        Provider::Gcr | Provider::ArtifactRegistry => "oauth2accesstoken",
        // ACR refresh tokens are presented with the null GUID.
        Provider::Acr => "00000000-0000-0000-0000-000000000000",
        _ => "regcred",
    }
}

/// Builds the dockerconfigjson for `key` (see [`crate::registry::config_key`]) from a source Secret's data.
///
/// Exactly one credential type must be present: `username` + `password`; `token` (with an optional
/// `username`); `key.json` (a GCP service-account key, presented as `_json_key`); or `.dockerconfigjson`,
/// validated and imported unchanged.
pub fn dockerconfig_from_source(
    secret: &str,
    data: &BTreeMap<String, Vec<u8>>,
    provider: Provider,
    key: &str,
) -> Result<DockerConfig, CredentialError> {
    let present: Vec<&str> =
        [PASSWORD, TOKEN, GCP_KEY, DOCKER_CONFIG].into_iter().filter(|k| data.contains_key(*k)).collect();
    let text = |k: &str| -> Result<&str, CredentialError> {
        data.get(k)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim_end)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CredentialError::InvalidEncoding { secret: secret.to_owned(), key: k.to_owned() })
    };
    match present.as_slice() {
        [] if data.contains_key(USERNAME) => {
            Err(CredentialError::IncompleteKeys { secret: secret.to_owned(), key: USERNAME, missing: PASSWORD })
        }
        [] => Err(CredentialError::MissingKey(secret.to_owned())),
        [PASSWORD] => {
            if !data.contains_key(USERNAME) {
                return Err(CredentialError::IncompleteKeys {
                    secret: secret.to_owned(),
                    key: PASSWORD,
                    missing: USERNAME,
                });
            }
            Ok(render(key, text(USERNAME)?, text(PASSWORD)?))
        }
        [TOKEN] => {
            let user = if data.contains_key(USERNAME) { text(USERNAME)? } else { token_username(provider) };
            Ok(render(key, user, text(TOKEN)?))
        }
        [GCP_KEY] => {
            let json_key = text(GCP_KEY)?;
            validate_service_account_key(secret, json_key)?;
            Ok(render(key, "_json_key", json_key))
        }
        [DOCKER_CONFIG] => {
            let raw = data.get(DOCKER_CONFIG).map(Vec::as_slice).unwrap_or_default();
            dockerconfig::validate(secret, raw)?;
            Ok(DockerConfig(SecretBytes::new(raw.to_vec())))
        }
        many => Err(CredentialError::AmbiguousKeys { secret: secret.to_owned(), keys: many.join(", ") }),
    }
}

fn validate_service_account_key(secret: &str, raw: &str) -> Result<(), CredentialError> {
    let invalid =
        |reason: &str| CredentialError::InvalidServiceAccountKey { secret: secret.to_owned(), reason: reason.into() };
    let doc: Value = serde_json::from_str(raw).map_err(|_| invalid("not JSON"))?;
    if doc.get("type").and_then(Value::as_str) != Some("service_account") {
        return Err(invalid("\"type\" is not \"service_account\""));
    }
    for field in ["client_email", "private_key"] {
        if doc.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid(&format!("\"{field}\" is missing")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use super::*;

    #[test]
    fn every_source_reason_names_the_secret_and_says_what_to_do() {
        let secret = "regcred-system/creds".to_owned();
        let all = [
            CredentialError::SecretNotFound { namespace: "regcred-system".into(), name: "creds".into() },
            CredentialError::MissingKey(secret.clone()),
            CredentialError::IncompleteKeys { secret: secret.clone(), key: USERNAME, missing: PASSWORD },
            CredentialError::AmbiguousKeys { secret: secret.clone(), keys: "password, token".into() },
            CredentialError::InvalidEncoding { secret: secret.clone(), key: "password".into() },
            CredentialError::InvalidDockerConfig { secret: secret.clone(), reason: "not JSON".into() },
            CredentialError::InvalidServiceAccountKey { secret: secret.clone(), reason: "not JSON".into() },
        ];
        for e in &all {
            // A new variant must be added above: this match has no wildcard.
            match e {
                CredentialError::SecretNotFound { .. }
                | CredentialError::MissingKey(_)
                | CredentialError::IncompleteKeys { .. }
                | CredentialError::AmbiguousKeys { .. }
                | CredentialError::InvalidEncoding { .. }
                | CredentialError::InvalidDockerConfig { .. }
                | CredentialError::InvalidServiceAccountKey { .. } => {}
            }
            let message = e.to_string();
            assert!(message.contains("regcred-system/creds"), "{}: {message}", e.reason());
            let (what, todo) =
                message.split_once("; ").unwrap_or_else(|| panic!("{}: no advice: {message}", e.reason()));
            assert!(what.contains("Secret") && todo.len() > 10, "{}: {message}", e.reason());
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
    }

    fn parse(cfg: &DockerConfig) -> Value {
        serde_json::from_slice(cfg.0.expose()).unwrap()
    }

    #[test]
    fn username_and_password_become_an_auth_entry() {
        let cfg = dockerconfig_from_source(
            "s",
            &data(&[("username", "bob"), ("password", "pw")]),
            Provider::Generic,
            "r.example.com",
        )
        .unwrap();
        let entry = &parse(&cfg)["auths"]["r.example.com"];
        assert_eq!(entry["username"], "bob");
        assert_eq!(entry["password"], "pw");
        assert_eq!(entry["auth"], B64.encode("bob:pw"));
    }

    #[test]
    fn a_token_gets_the_providers_username_unless_one_is_given() {
        let gcr = dockerconfig_from_source("s", &data(&[("token", "ya29")]), Provider::Gcr, "gcr.io").unwrap();
        assert_eq!(parse(&gcr)["auths"]["gcr.io"]["username"], "oauth2accesstoken");
        let ghcr =
            dockerconfig_from_source("s", &data(&[("token", "ghp"), ("username", "octo")]), Provider::Ghcr, "ghcr.io")
                .unwrap();
        assert_eq!(parse(&ghcr)["auths"]["ghcr.io"]["username"], "octo");
    }

    #[test]
    fn a_gcp_key_is_presented_as_json_key() {
        let key = r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----"}"#;
        let cfg = dockerconfig_from_source("s", &data(&[("key.json", key)]), Provider::Gcr, "gcr.io").unwrap();
        let entry = &parse(&cfg)["auths"]["gcr.io"];
        assert_eq!(entry["username"], "_json_key");
        assert_eq!(entry["password"], key);
        let bad = dockerconfig_from_source("s", &data(&[("key.json", r#"{"type":"user"}"#)]), Provider::Gcr, "gcr.io");
        assert_eq!(bad.unwrap_err().reason(), "InvalidServiceAccountKey");
    }

    #[test]
    fn an_existing_dockerconfigjson_is_imported_unchanged_when_valid() {
        let raw = format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, B64.encode("u:p"));
        let cfg = dockerconfig_from_source("s", &data(&[(".dockerconfigjson", &raw)]), Provider::Generic, "x").unwrap();
        assert_eq!(cfg.0.expose(), raw.as_bytes());
        for bad in ["not json", r#"{"auths":{}}"#, r#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#, r#"{"x":1}"#] {
            let err = dockerconfig_from_source("s", &data(&[(".dockerconfigjson", bad)]), Provider::Generic, "x")
                .unwrap_err();
            assert_eq!(err.reason(), "InvalidDockerConfig", "{bad}");
        }
    }

    #[test]
    fn every_bad_shape_has_its_reason() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "MissingKey"),
            (&[("user", "x")], "MissingKey"),
            (&[("username", "x")], "MissingKey"),
            (&[("password", "x")], "MissingKey"),
            (&[("username", "x"), ("password", "")], "InvalidEncoding"),
            (&[("token", "t"), ("password", "p"), ("username", "u")], "AmbiguousKeys"),
            (&[("token", "t"), (".dockerconfigjson", "{}")], "AmbiguousKeys"),
        ];
        for (pairs, reason) in cases {
            let err = dockerconfig_from_source("s", &data(pairs), Provider::Generic, "r").unwrap_err();
            assert_eq!(err.reason(), *reason, "{pairs:?}");
        }
        let not_utf8: BTreeMap<_, _> = [("token".to_owned(), vec![0xff, 0xfe])].into();
        assert_eq!(
            dockerconfig_from_source("s", &not_utf8, Provider::Generic, "r").unwrap_err().reason(),
            "InvalidEncoding"
        );
    }

    #[test]
    fn errors_never_contain_the_secret_material() {
        let err = dockerconfig_from_source(
            "s",
            &data(&[("token", "SUPERSECRET"), ("password", "SUPERSECRET")]),
            Provider::Generic,
            "r",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("SUPERSECRET"));
    }
}
