//! The dockerconfigjson document regcred writes (`{"auths": {key: {username, password, auth}}}`): rendering it,
//! reading a login back out of it, and validating one imported as it is. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{CredentialError, SecretBytes};
use crate::registry::preflight::Credentials;

/// A rendered `.dockerconfigjson` document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig(pub SecretBytes);

impl DockerConfig {
    /// The keys of its `auths`, in the document's order (sorted: serde_json's map).
    pub fn keys(&self) -> Vec<String> {
        let doc: Option<serde_json::Value> = serde_json::from_slice(self.0.expose()).ok();
        doc.as_ref()
            .and_then(|d| d.get("auths"))
            .and_then(Value::as_object)
            .map(|auths| auths.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The username and password it holds for `key` (its `auth`, or `username` and `password`).
    pub fn login(&self, key: &str) -> Option<Credentials> {
        let doc: serde_json::Value = serde_json::from_slice(self.0.expose()).ok()?;
        let entry = doc.get("auths")?.get(key)?;
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = B64.decode(auth).ok()?;
            let (username, password) =
                String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
            return Some(Credentials { username, password });
        }
        Some(Credentials {
            username: entry.get("username")?.as_str()?.to_owned(),
            password: entry.get("password")?.as_str()?.to_owned(),
        })
    }
}

/// Renders `{"auths": {key: {username, password, auth}}}`.
pub fn render(key: &str, username: &str, password: &str) -> DockerConfig {
    let auth = B64.encode(format!("{username}:{password}"));
    let doc = json!({ "auths": { key: { "username": username, "password": password, "auth": auth } } });
    DockerConfig(SecretBytes::new(doc.to_string().into_bytes()))
}

/// Checks a dockerconfigjson imported from source Secret `secret` as it is: at least one entry, each with a
/// valid `auth` or a `username` and `password`.
pub(super) fn validate(secret: &str, raw: &[u8]) -> Result<(), CredentialError> {
    let invalid =
        |reason: &str| CredentialError::InvalidDockerConfig { secret: secret.to_owned(), reason: reason.into() };
    let doc: Value = serde_json::from_slice(raw).map_err(|_| invalid("not JSON"))?;
    let auths = doc.get("auths").and_then(Value::as_object).ok_or_else(|| invalid("no \"auths\" object"))?;
    if auths.is_empty() {
        return Err(invalid("\"auths\" is empty"));
    }
    for (registry, entry) in auths {
        let has = |f: &str| entry.get(f).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let auth_ok = match entry.get("auth").and_then(Value::as_str) {
            Some(a) => B64.decode(a).ok().and_then(|d| String::from_utf8(d).ok()).is_some_and(|d| d.contains(':')),
            None => false,
        };
        if !(auth_ok || (has("username") && has("password"))) {
            return Err(invalid(&format!(
                "entry {registry:?} has neither a valid \"auth\" nor \"username\" and \"password\""
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_the_rendered_config() {
        let config = render("reg.example.com", "bot", "pa:ss");
        let c = config.login("reg.example.com").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bot", "pa:ss"));
        assert!(config.login("other.example.com").is_none());
        assert_eq!(config.keys(), ["reg.example.com"]);
        assert!(DockerConfig(SecretBytes::new(b"not json".to_vec())).keys().is_empty());
    }
}
