//! The kubelet's image credential provider API (`credentialprovider.kubelet.k8s.io/v1`, KEP-2133 and KEP-4412),
//! and the one request regcred's provider makes of regcred.
//!
//! The kubelet runs `regcred-credential-provider` for every image its CredentialProviderConfig matches, writes a
//! [`CredentialProviderRequest`] on its stdin (with the Pod's ServiceAccount token, bound to the Pod, for
//! regcred's audience) and reads a [`CredentialProviderResponse`] from its stdout. The provider sends the request
//! on to regcred's credential endpoint ([`ENDPOINT_PATH`]) with the token in the `Authorization` header
//! (`Bearer TOKEN`) instead of the body, and passes regcred's answer, a [`CredentialProviderResponse`], back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API version of the kubelet's request and response.
pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// The request's kind.
pub const REQUEST_KIND: &str = "CredentialProviderRequest";
/// The response's kind.
pub const RESPONSE_KIND: &str = "CredentialProviderResponse";
/// The path of regcred's credential endpoint (POST).
pub const ENDPOINT_PATH: &str = "/credential-provider/v1";
/// The default audience of the ServiceAccount tokens the kubelet sends regcred (its CredentialProviderConfig's
/// `tokenAttributes.serviceAccountTokenAudience`); regcred refuses tokens for any other. No `/`: NodeRestriction
/// authorises it as an RBAC resource name (`request-serviceaccounts-token-audience`), where `/` would split it.
pub const DEFAULT_AUDIENCE: &str = "credential-provider.regcred.dev";

/// What the kubelet asks: credentials to pull `image` (without tag or digest: `host[:port]/path`).
#[derive(Deserialize, Serialize, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialProviderRequest {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub image: String,
    /// The Pod's ServiceAccount token (KEP-4412); only from the kubelet to the provider, never to regcred's
    /// endpoint (there it is the `Authorization` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<String>,
    /// The ServiceAccount's annotations the CredentialProviderConfig asks for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for CredentialProviderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialProviderRequest")
            .field("image", &self.image)
            .field("service_account_token", &self.service_account_token.as_ref().map(|_| "<redacted>"))
            .field("service_account_annotations", &self.service_account_annotations)
            .finish_non_exhaustive()
    }
}

/// How the kubelet caches an answer: per image, per registry, or for every image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheKeyType {
    Image,
    #[default]
    Registry,
    Global,
}

/// Credentials for one registry key of the answer.
#[derive(Deserialize, Serialize, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// The answer: credentials per registry key (the kubelet's image matching: `host[:port][/path]`, `*.` globs),
/// how long the kubelet may keep them (a Go duration such as `30s`), and per what. An empty `auth` means "no
/// credentials" (the pull goes on without any).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialProviderResponse {
    pub api_version: String,
    pub kind: String,
    pub cache_key_type: CacheKeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    #[serde(default)]
    pub auth: BTreeMap<String, AuthConfig>,
}

impl CredentialProviderResponse {
    /// An answer with `auth`, kept by the kubelet per `cache_key_type` for `cache_duration`.
    pub fn new(
        cache_key_type: CacheKeyType,
        cache_duration: std::time::Duration,
        auth: BTreeMap<String, AuthConfig>,
    ) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: RESPONSE_KIND.into(),
            cache_key_type,
            cache_duration: Some(format!("{}s", cache_duration.as_secs())),
            auth,
        }
    }
}

/// The TokenRequest the kubelet makes for a provider: a token of the Pod's ServiceAccount for `audience`, bound to
/// `pod` (its name and uid), living ten minutes, the shortest the apiserver allows. `regcred check` and the tests
/// ask regcred's endpoint with one, as the kubelet's provider does.
pub fn pod_token_request(
    pod: &k8s_openapi::api::core::v1::Pod,
    audience: &str,
) -> k8s_openapi::api::authentication::v1::TokenRequest {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_request_reads_and_the_token_never_prints() {
        let request: CredentialProviderRequest = serde_json::from_str(
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest",
                "image":"10.250.0.1:5000/team/app","serviceAccountToken":"secret-token"}"#,
        )
        .unwrap();
        assert_eq!(request.image, "10.250.0.1:5000/team/app");
        assert_eq!(request.service_account_token.as_deref(), Some("secret-token"));
        assert!(!format!("{request:?}").contains("secret-token"));
    }

    #[test]
    fn an_answer_is_what_the_kubelet_reads() {
        let auth = BTreeMap::from([(
            "10.250.0.1:5000".to_owned(),
            AuthConfig { username: "u".into(), password: "hunter2".into() },
        )]);
        let answer = CredentialProviderResponse::new(CacheKeyType::Registry, std::time::Duration::from_secs(30), auth);
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"apiVersion": API_VERSION, "kind": RESPONSE_KIND, "cacheKeyType": "Registry",
                "cacheDuration": "30s", "auth": {"10.250.0.1:5000": {"username": "u", "password": "hunter2"}}})
        );
        assert!(!format!("{answer:?}").contains("hunter2"));
    }
}
