//! regcred's own identity, for the federations that start from a Kubernetes ServiceAccount token: a token is
//! requested (TokenRequest) for regcred's own ServiceAccount with the audience the federation expects, never
//! read from another identity. The chart grants `create` on `serviceaccounts/token` for that one account only.
//! Also the ambient settings the cloud tooling documents (`AZURE_*`, `GCE_METADATA_HOST`), read once at start.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::SecretBytes;
use super::tokens::MintError;

/// How long a requested ServiceAccount token lives: it is used at once, for one exchange.
const TOKEN_SECONDS: i64 = 600;

/// What the environment says, as the Azure and Google SDKs read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ambient {
    pub azure_tenant_id: Option<String>,
    pub azure_client_id: Option<String>,
    pub azure_authority_host: Option<String>,
    /// The ServiceAccount token the Azure Workload Identity webhook projects into the Pod.
    pub azure_federated_token_file: Option<PathBuf>,
    /// The metadata server, `host[:port]` (default `169.254.169.254`, where GKE serves it).
    pub gce_metadata_host: Option<String>,
}

impl Ambient {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self {
            azure_tenant_id: var("AZURE_TENANT_ID"),
            azure_client_id: var("AZURE_CLIENT_ID"),
            azure_authority_host: var("AZURE_AUTHORITY_HOST"),
            azure_federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            gce_metadata_host: var("GCE_METADATA_HOST"),
        }
    }
}

/// regcred's identity: the API client, its namespace and ServiceAccount, and the ambient settings.
#[derive(Clone)]
pub struct Identity {
    client: Option<kube::Client>,
    namespace: String,
    service_account: String,
    pub ambient: Ambient,
}

impl Identity {
    pub fn new(client: Option<kube::Client>, namespace: &str, service_account: &str, ambient: Ambient) -> Self {
        Self { client, namespace: namespace.to_owned(), service_account: service_account.to_owned(), ambient }
    }

    /// An identity without an API client or ambient settings (tests, benches): federations fail with
    /// FederatedTokenMissing.
    pub fn detached(namespace: &str) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::new(None, namespace, "regcred", Ambient::default()))
    }

    /// `system:serviceaccount:NAMESPACE:NAME`, the subject federations trust.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }

    /// A token of regcred's own ServiceAccount for `audience`.
    pub async fn service_account_token(&self, audience: &str) -> Result<SecretBytes, MintError> {
        let missing = |why: String| MintError::new("FederatedTokenMissing", why);
        let client = self.client.clone().ok_or_else(|| missing("no API client to request a token with".into()))?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api = Api::<ServiceAccount>::namespaced(client, &self.namespace);
        let answer =
            api.create_token_request(&self.service_account, &PostParams::default(), &request).await.map_err(|e| {
                missing(format!(
                    "requesting a token for ServiceAccount {}/{} (audience {audience}): {}",
                    self.namespace, self.service_account, e
                ))
            })?;
        let token = answer.status.and_then(|s| s.token).filter(|t| !t.is_empty());
        token
            .map(|t| SecretBytes::new(t.into_bytes()))
            .ok_or_else(|| missing("the TokenRequest returned no token".into()))
    }

    /// The federated token Azure Workload Identity uses: the file its webhook projects when set, otherwise a
    /// token regcred requests for itself with Entra ID's audience.
    pub async fn azure_federated_token(&self) -> Result<SecretBytes, MintError> {
        const AUDIENCE: &str = "api://AzureADTokenExchange";
        let Some(path) = &self.ambient.azure_federated_token_file else {
            return self.service_account_token(AUDIENCE).await;
        };
        match tokio::fs::read(path).await {
            Ok(bytes) if !bytes.trim_ascii().is_empty() => Ok(SecretBytes::new(bytes.trim_ascii().to_vec())),
            Ok(_) => Err(MintError::new(
                "FederatedTokenMissing",
                format!("AZURE_FEDERATED_TOKEN_FILE {} is empty", path.display()),
            )),
            Err(e) => Err(MintError::new(
                "FederatedTokenMissing",
                format!("AZURE_FEDERATED_TOKEN_FILE {}: {e}", path.display()),
            )),
        }
    }
}
