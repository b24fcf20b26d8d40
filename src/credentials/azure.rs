//! Azure Container Registry tokens: an Entra ID access token (client credentials: the federated ServiceAccount
//! token of Azure Workload Identity, a client secret, or a certificate's signed assertion), exchanged at the
//! registry's `/oauth2/exchange` for an ACR refresh token, optionally narrowed at `/oauth2/token` to pull access
//! on some repositories. The registry user is the null GUID.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::identity::Identity;
use super::oauth::{self, Step};
use super::render;
use super::tokens::{AcrSource, AzureCredential, MintError, Minted};
use crate::registry::config_key;

/// The registry user for ACR tokens.
pub const USER: &str = "00000000-0000-0000-0000-000000000000";
const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const ENTRA: Step = Step { name: "Entra ID", refused: "EntraIdRefused", unreachable: "EntraIdUnreachable" };
const EXCHANGE: Step =
    Step { name: "the registry's /oauth2/exchange", refused: "ExchangeRefused", unreachable: "ExchangeUnreachable" };
const SCOPED: Step =
    Step { name: "the registry's /oauth2/token", refused: "ExchangeRefused", unreachable: "ExchangeUnreachable" };

/// The Entra ID token scope for an authority: Azure Resource Manager of that cloud, which ACR accepts.
pub fn default_scope(authority: &str) -> &'static str {
    let host = authority.trim_start_matches("https://").trim_end_matches('/');
    match host {
        "login.microsoftonline.us" => "https://management.usgovcloudapi.net/.default",
        "login.chinacloudapi.cn" => "https://management.chinacloudapi.cn/.default",
        _ => "https://management.azure.com/.default",
    }
}

/// What a mint resolves to before any request: tenant, client, authority and scope, from the profile, else the
/// environment (what the Azure Workload Identity webhook sets), else the public cloud.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub tenant: String,
    pub client_id: String,
    pub token_url: String,
    pub scope: String,
}

pub fn plan(source: &AcrSource, identity: &Identity) -> Result<Plan, MintError> {
    let ambient = &identity.ambient;
    let incomplete = |what: &str, field: &str, env: &str| {
        MintError::new(
            "AzureIdentityIncomplete",
            format!("no {what}: set credentials.acr.{field}, or {env} (the Azure Workload Identity webhook sets it)"),
        )
    };
    let tenant = source
        .tenant_id
        .clone()
        .or_else(|| ambient.azure_tenant_id.clone())
        .ok_or_else(|| incomplete("tenant", "tenantId", "AZURE_TENANT_ID"))?;
    let client_id = source
        .client_id
        .clone()
        .or_else(|| ambient.azure_client_id.clone())
        .ok_or_else(|| incomplete("client ID", "clientId", "AZURE_CLIENT_ID"))?;
    let authority = source
        .authority_host
        .clone()
        .or_else(|| ambient.azure_authority_host.clone())
        .unwrap_or_else(|| PUBLIC_AUTHORITY.to_owned());
    let authority = authority.trim_end_matches('/');
    let scope = source.scope.clone().unwrap_or_else(|| default_scope(authority).to_owned());
    Ok(Plan { token_url: format!("{authority}/{tenant}/oauth2/v2.0/token"), tenant, client_id, scope })
}

pub async fn mint(source: &AcrSource, identity: &Identity) -> Result<Minted, MintError> {
    let plan = plan(source, identity)?;
    let now = Timestamp::now();
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", plan.client_id.clone()),
        ("scope", plan.scope.clone()),
    ];
    match &source.credential {
        AzureCredential::WorkloadIdentity => {
            let token = identity.azure_federated_token().await?;
            form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
            form.push(("client_assertion", String::from_utf8_lossy(token.expose()).into_owned()));
        }
        AzureCredential::ClientSecret(secret) => {
            form.push(("client_secret", String::from_utf8_lossy(secret.expose()).trim().to_owned()));
        }
        AzureCredential::Certificate { certificate, key } => {
            let invalid =
                |e: oauth::KeyError| MintError::new("InvalidClientCertificate", format!("tls.crt/tls.key: {e}"));
            let header = json!({ "x5t": oauth::x5t(certificate.as_bytes()).map_err(invalid)? });
            let claims = json!({
                "aud": plan.token_url, "iss": plan.client_id, "sub": plan.client_id, "jti": oauth::random_id(),
                "nbf": now.as_second(), "iat": now.as_second(), "exp": now.as_second() + 600,
            });
            form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
            form.push(("client_assertion", oauth::sign_rs256(header, &claims, key.expose()).map_err(invalid)?));
        }
    }
    let entra = oauth::client(None)?;
    let answer = oauth::send(ENTRA, entra.post(&plan.token_url).form(&form)).await?;
    let access_token = oauth::field(ENTRA, &answer, "access_token")?;

    let registry = crate::registry::host_of(&source.registry);
    let acr = oauth::client(Some(&source.tls))?;
    let exchange = [
        ("grant_type", "access_token"),
        ("service", registry),
        ("tenant", plan.tenant.as_str()),
        ("access_token", access_token),
    ];
    let answer = oauth::send(EXCHANGE, acr.post(format!("https://{registry}/oauth2/exchange")).form(&exchange)).await?;
    let refresh_token = oauth::field(EXCHANGE, &answer, "refresh_token")?.to_owned();
    let password = if source.repositories.is_empty() {
        refresh_token
    } else {
        let scope: Vec<String> = source.repositories.iter().map(|r| format!("repository:{r}:pull")).collect();
        let scope = scope.join(" ");
        let form = [
            ("grant_type", "refresh_token"),
            ("service", registry),
            ("scope", scope.as_str()),
            ("refresh_token", refresh_token.as_str()),
        ];
        let answer = oauth::send(SCOPED, acr.post(format!("https://{registry}/oauth2/token")).form(&form)).await?;
        oauth::field(SCOPED, &answer, "access_token")?.to_owned()
    };
    // ACR's tokens are JWTs that carry their expiry; one that does not is taken to last an hour, shorter than
    // either ACR token is documented to live.
    let expires_at = oauth::expiry(&password).unwrap_or_else(|| now + SignedDuration::from_hours(1));
    Ok(Minted { config: render(&config_key(&source.registry), USER, &password), expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::identity::Ambient;
    use crate::credentials::tokens::EndpointTls;

    fn source(tenant: Option<&str>, client: Option<&str>, authority: Option<&str>) -> AcrSource {
        AcrSource {
            registry: "shop.azurecr.io".into(),
            tenant_id: tenant.map(Into::into),
            client_id: client.map(Into::into),
            authority_host: authority.map(Into::into),
            scope: None,
            credential: AzureCredential::WorkloadIdentity,
            repositories: vec![],
            tls: EndpointTls::default(),
        }
    }

    fn identity(ambient: Ambient) -> Identity {
        Identity::new(None, "regcred-system", "regcred", ambient)
    }

    #[test]
    fn the_profile_wins_over_the_environment_and_the_public_cloud_is_the_default() {
        let env = Ambient {
            azure_tenant_id: Some("env-tenant".into()),
            azure_client_id: Some("env-client".into()),
            azure_authority_host: Some("https://login.microsoftonline.us/".into()),
            ..Ambient::default()
        };
        let p = plan(&source(None, None, None), &identity(env.clone())).unwrap();
        assert_eq!(p.token_url, "https://login.microsoftonline.us/env-tenant/oauth2/v2.0/token");
        assert_eq!(
            (p.client_id.as_str(), p.scope.as_str()),
            ("env-client", "https://management.usgovcloudapi.net/.default")
        );
        let p = plan(&source(Some("t"), Some("c"), Some("https://login.chinacloudapi.cn")), &identity(env)).unwrap();
        assert_eq!(p.token_url, "https://login.chinacloudapi.cn/t/oauth2/v2.0/token");
        assert_eq!(p.scope, "https://management.chinacloudapi.cn/.default");
        let p = plan(&source(Some("t"), Some("c"), None), &identity(Ambient::default())).unwrap();
        assert_eq!(p.token_url, "https://login.microsoftonline.com/t/oauth2/v2.0/token");
        assert_eq!(p.scope, "https://management.azure.com/.default");
    }

    #[test]
    fn a_missing_tenant_or_client_says_where_to_set_it() {
        let e = plan(&source(None, Some("c"), None), &identity(Ambient::default())).unwrap_err();
        assert_eq!(e.reason, "AzureIdentityIncomplete");
        assert!(e.message.contains("tenantId") && e.message.contains("AZURE_TENANT_ID"), "{e}");
        let e = plan(&source(Some("t"), None, None), &identity(Ambient::default())).unwrap_err();
        assert!(e.message.contains("clientId"), "{e}");
    }

    #[tokio::test]
    async fn workload_identity_without_a_token_file_or_an_api_client_is_federated_token_missing() {
        let e = mint(&source(Some("t"), Some("c"), None), &identity(Ambient::default())).await.unwrap_err();
        assert_eq!(e.reason, "FederatedTokenMissing");
        let env = Ambient { azure_federated_token_file: Some("/nonexistent/azure-token".into()), ..Ambient::default() };
        let e = mint(&source(Some("t"), Some("c"), None), &identity(env)).await.unwrap_err();
        assert_eq!(e.reason, "FederatedTokenMissing");
        assert!(e.message.contains("/nonexistent/azure-token"), "{e}");
    }
}
