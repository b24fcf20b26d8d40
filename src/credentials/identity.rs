//! regcred's own identity, for the federations that start from a Kubernetes ServiceAccount token: a token is
//! requested (TokenRequest) for regcred's own ServiceAccount with the audience the federation expects, never
//! read from another identity. The chart grants `create` on `serviceaccounts/token` for that one account only.
//! Also the ambient settings the cloud tooling documents (`AZURE_*`, `GCE_METADATA_HOST`), read once at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::SecretBytes;
use super::egress::{self, Endpoints};
use super::tokens::MintError;

/// How long a requested ServiceAccount token lives: it is used at once, for one exchange.
const TOKEN_SECONDS: i64 = 600;
/// How long the apiserver's audiences, once learnt, are trusted before they are asked again.
const AUDIENCES_FOR: Duration = Duration::from_secs(600);

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

/// Audiences, and when they were learnt.
type Learnt = (Vec<String>, Instant);

/// regcred's identity: the API client, its namespace and ServiceAccount, the ambient settings, and the hosts the
/// operator allows credentials to go to.
#[derive(Clone)]
pub struct Identity {
    client: Option<kube::Client>,
    namespace: String,
    service_account: String,
    pub ambient: Ambient,
    /// Where credentials may be sent (`--allowed-endpoints`, `--extra-allowed-endpoints`).
    pub endpoints: Endpoints,
    /// The apiserver's own audiences, and when they were learnt.
    audiences: Arc<tokio::sync::Mutex<Option<Learnt>>>,
    /// The audiences of regcred's credential endpoint, never requested (see [`egress::not_the_kubelets`]).
    kubelet_audiences: Vec<String>,
}

impl Identity {
    pub fn new(
        client: Option<kube::Client>,
        namespace: &str,
        service_account: &str,
        ambient: Ambient,
        endpoints: Endpoints,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            ambient,
            endpoints,
            audiences: Arc::default(),
            kubelet_audiences: vec![crate::api::kubelet::DEFAULT_AUDIENCE.to_owned()],
        }
    }

    /// This identity, never requesting its token for `audience` either: the one regcred's credential endpoint
    /// accepts (`--credential-provider-audience`), beside the default one, refused always.
    #[must_use]
    pub fn refusing(mut self, audience: &str) -> Self {
        if !self.kubelet_audiences.iter().any(|a| a == audience) {
            self.kubelet_audiences.push(audience.to_owned());
        }
        self
    }

    /// An identity without an API client or ambient settings (tests, benches), with the default allow-list:
    /// federations fail with FederatedTokenMissing.
    pub fn detached(namespace: &str) -> Arc<Self> {
        Arc::new(Self::new(None, namespace, "regcred", Ambient::default(), Endpoints::default()))
    }

    /// `system:serviceaccount:NAMESPACE:NAME`, the subject federations trust.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }

    /// A token of regcred's own ServiceAccount for `audience`, never for one the apiserver accepts (see
    /// [`Identity::apiserver_audiences`]) nor for regcred's credential endpoint's ([`Identity::refusing`]): this is
    /// where the token is made, so no caller can skip the check.
    pub async fn service_account_token(&self, audience: &str) -> Result<SecretBytes, MintError> {
        egress::not_the_kubelets(audience, &self.kubelet_audiences)?;
        let accepted = self.apiserver_audiences().await?;
        egress::not_the_apiservers(audience, &accepted)?;
        self.token_request(Some(audience)).await
    }

    /// The audiences the apiserver accepts (its `--api-audiences`, which default to its ServiceAccount issuer),
    /// learnt from the apiserver itself: a TokenRequest without audiences gets a token for exactly those, and its
    /// `aud` claim lists them. More robust than the issuer from `/.well-known/openid-configuration`, which is
    /// only the default of `--api-audiences` and misses audiences added to it. That token is read and dropped at
    /// once. Learnt again every 10 minutes; when they cannot be learnt, no token is requested at all.
    pub async fn apiserver_audiences(&self) -> Result<Vec<String>, MintError> {
        let mut known = self.audiences.lock().await;
        if let Some((audiences, at)) = known.as_ref()
            && at.elapsed() < AUDIENCES_FOR
        {
            return Ok(audiences.clone());
        }
        let token = self.token_request(None).await?;
        let claims = super::oauth::claims(&String::from_utf8_lossy(token.expose()));
        let audiences: Vec<String> = match claims.as_ref().and_then(|c| c.get("aud")) {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => vec![],
        };
        if audiences.is_empty() {
            return Err(MintError::new(
                "FederatedTokenMissing",
                "the apiserver's audiences could not be read from a TokenRequest without audiences: no token is \
                 requested for a federation until they can",
            ));
        }
        *known = Some((audiences.clone(), Instant::now()));
        Ok(audiences)
    }

    async fn token_request(&self, audience: Option<&str>) -> Result<SecretBytes, MintError> {
        let missing = |why: String| MintError::new("FederatedTokenMissing", why);
        let client = self.client.clone().ok_or_else(|| missing("no API client to request a token with".into()))?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_owned()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api = Api::<ServiceAccount>::namespaced(client, &self.namespace);
        let answer =
            api.create_token_request(&self.service_account, &PostParams::default(), &request).await.map_err(|e| {
                missing(format!(
                    "requesting a token for ServiceAccount {}/{} (audience {}): {}",
                    self.namespace,
                    self.service_account,
                    audience.unwrap_or("the apiserver's"),
                    e
                ))
            })?;
        let token = answer.status.and_then(|s| s.token).filter(|t| !t.is_empty());
        token
            .map(|t| SecretBytes::new(t.into_bytes()))
            .ok_or_else(|| missing("the TokenRequest returned no token".into()))
    }

    /// The federated token Azure Workload Identity uses: the file its webhook projects when set, otherwise a
    /// token regcred requests for itself with Entra ID's audience (`api://AzureADTokenExchange`, the default of
    /// the Azure Workload Identity webhook and of federated credentials in every cloud).
    pub async fn azure_federated_token(&self) -> Result<SecretBytes, MintError> {
        const AUDIENCE: &str = egress::AZURE_FEDERATION_AUDIENCES[0];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_credential_endpoints_audiences_are_refused_before_anything_is_asked() {
        let identity = Identity::new(None, "regcred-system", "regcred", Ambient::default(), Endpoints::default())
            .refusing("nodes.example.com");
        for (audience, reason) in [
            (crate::api::kubelet::DEFAULT_AUDIENCE, "AudienceNotAllowed"),
            ("nodes.example.com", "AudienceNotAllowed"),
            ("NODES.example.com/", "AudienceNotAllowed"),
            // Any other audience goes on to the TokenRequest, which this identity has no client for.
            ("quay.io", "FederatedTokenMissing"),
        ] {
            let Err(e) = identity.service_account_token(audience).await else { panic!("{audience}: a token") };
            assert_eq!(e.reason, reason, "{audience}: {e}");
        }
    }
}
