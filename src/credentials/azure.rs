//! Azure Container Registry tokens: an Entra ID access token (client credentials: the federated ServiceAccount
//! token of Azure Workload Identity, a client secret, or a certificate's signed assertion), exchanged at the
//! registry's `/oauth2/exchange` for an ACR refresh token, optionally narrowed at `/oauth2/token` to pull access
//! on some repositories. The registry user is the null GUID.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::egress;
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

/// The Entra ID token scope: ACR's own audience in the registry's cloud, as Azure's own credential provider and
/// SDKs ask for (`https://containerregistry.azure.net/.default`; `.azure.us` for `*.azurecr.us` or the US
/// Government authority, `.azure.cn` for `*.azurecr.cn` or the China authorities). Not Azure Resource Manager: an
/// ARM token is good for far more than a pull, and registries that disable ARM-audience authentication (a
/// built-in Azure Policy) refuse it.
pub fn default_scope(registry: &str, authority: &str) -> &'static str {
    let host = crate::registry::host_of(registry).split(':').next().unwrap_or_default().to_ascii_lowercase();
    let authority = authority.trim_start_matches("https://").trim_end_matches('/');
    if host.ends_with(".azurecr.us") || authority == "login.microsoftonline.us" {
        "https://containerregistry.azure.us/.default"
    } else if host.ends_with(".azurecr.cn")
        || authority == "login.partner.microsoftonline.cn"
        || authority == "login.chinacloudapi.cn"
    {
        "https://containerregistry.azure.cn/.default"
    } else {
        "https://containerregistry.azure.net/.default"
    }
}

/// What a mint resolves to before any request: tenant, client, authority and scope, from the profile, else the
/// environment (what the Azure Workload Identity webhook sets), else the public cloud.
#[derive(Debug, PartialEq, Eq)]
pub struct EntraApp {
    pub tenant: String,
    pub client_id: String,
    pub token_url: String,
    pub scope: String,
}

pub fn entra_app(source: &AcrSource, identity: &Identity) -> Result<EntraApp, MintError> {
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
    let scope = source.scope.clone().unwrap_or_else(|| default_scope(&source.registry, authority).to_owned());
    Ok(EntraApp { token_url: format!("{authority}/{tenant}/oauth2/v2.0/token"), tenant, client_id, scope })
}

/// The registry's URL for `path` (`/oauth2/exchange`, `/oauth2/token`).
fn registry_url(source: &AcrSource, path: &str) -> String {
    format!("https://{}{path}", crate::registry::host_of(&source.registry))
}

/// Whether the app's scope and every endpoint it sends to are allowed, before anything is sent.
pub fn allowed(app: &EntraApp, source: &AcrSource, identity: &Identity) -> Result<(), MintError> {
    egress::azure_scope(&app.scope)?;
    identity.endpoints.check_str(&app.token_url, "Entra ID (credentials.acr.authorityHost or AZURE_AUTHORITY_HOST)")?;
    identity
        .endpoints
        .check_str(&registry_url(source, "/oauth2/exchange"), "the registry's /oauth2/exchange (spec.server)")
}

/// The form of the Entra ID token request: the client, the registry's scope and the credential (a federated
/// token from regcred's own ServiceAccount, a client secret, or an assertion signed with a client certificate).
async fn entra_form(
    source: &AcrSource,
    identity: &Identity,
    app: &EntraApp,
    now: Timestamp,
) -> Result<Vec<(&'static str, String)>, MintError> {
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", app.client_id.clone()),
        ("scope", app.scope.clone()),
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
            // PS256 with the certificate's SHA-256 thumbprint, as Entra ID's current documentation of certificate
            // credentials asks (RS256 with the SHA-1 `x5t` is the legacy form).
            let header = json!({ "x5t#S256": oauth::x5t_s256(certificate.as_bytes()).map_err(invalid)? });
            let claims = json!({
                "aud": app.token_url, "iss": app.client_id, "sub": app.client_id, "jti": oauth::random_id(),
                "nbf": now.as_second(), "iat": now.as_second(), "exp": now.as_second() + 600,
            });
            form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
            let assertion = oauth::sign(oauth::Alg::Ps256, header, &claims, key.expose()).map_err(invalid)?;
            form.push(("client_assertion", assertion));
        }
    }
    Ok(form)
}

pub async fn mint(source: &AcrSource, identity: &Identity) -> Result<Minted, MintError> {
    let app = entra_app(source, identity)?;
    allowed(&app, source, identity)?;
    let now = Timestamp::now();
    let form = entra_form(source, identity, &app, now).await?;
    let entra = oauth::client(None, &identity.endpoints)?;
    let answer = entra.send(ENTRA, entra.post(&app.token_url).form(&form)).await?;
    let access_token = oauth::field(ENTRA, &answer, "access_token")?;

    let registry = crate::registry::host_of(&source.registry);
    let acr = oauth::registry_client(&registry_url(source, "/oauth2/exchange"), &source.tls, &identity.endpoints)?;
    let exchange = [
        ("grant_type", "access_token"),
        ("service", registry),
        ("tenant", app.tenant.as_str()),
        ("access_token", access_token),
    ];
    let answer = acr.send(EXCHANGE, acr.post(&registry_url(source, "/oauth2/exchange")).form(&exchange)).await?;
    let refresh_token = oauth::field(EXCHANGE, &answer, "refresh_token")?.to_owned();
    let password = if source.repositories.is_empty() {
        refresh_token
    } else {
        // One `scope` parameter per repository, as ACR's documentation sends them.
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("service", registry.to_owned()),
            ("refresh_token", refresh_token.clone()),
        ];
        form.extend(source.repositories.iter().map(|r| ("scope", format!("repository:{r}:pull"))));
        let answer = acr.send(SCOPED, acr.post(&registry_url(source, "/oauth2/token")).form(&form)).await?;
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
        Identity::new(None, "regcred-system", "regcred", ambient, crate::credentials::egress::Endpoints::default())
    }

    #[test]
    fn the_profile_wins_over_the_environment_and_the_public_cloud_is_the_default() {
        let env = Ambient {
            azure_tenant_id: Some("env-tenant".into()),
            azure_client_id: Some("env-client".into()),
            azure_authority_host: Some("https://login.microsoftonline.us/".into()),
            ..Ambient::default()
        };
        let p = entra_app(&source(None, None, None), &identity(env.clone())).unwrap();
        assert_eq!(p.token_url, "https://login.microsoftonline.us/env-tenant/oauth2/v2.0/token");
        assert_eq!(
            (p.client_id.as_str(), p.scope.as_str()),
            ("env-client", "https://containerregistry.azure.us/.default")
        );
        let china = Some("https://login.partner.microsoftonline.cn");
        let p = entra_app(&source(Some("t"), Some("c"), china), &identity(env)).unwrap();
        assert_eq!(p.token_url, "https://login.partner.microsoftonline.cn/t/oauth2/v2.0/token");
        assert_eq!(p.scope, "https://containerregistry.azure.cn/.default");
        let p = entra_app(&source(Some("t"), Some("c"), None), &identity(Ambient::default())).unwrap();
        assert_eq!(p.token_url, "https://login.microsoftonline.com/t/oauth2/v2.0/token");
        assert_eq!(p.scope, "https://containerregistry.azure.net/.default");
        assert_eq!(
            default_scope("shop.azurecr.us", "https://login.microsoftonline.com"),
            "https://containerregistry.azure.us/.default"
        );
        assert_eq!(default_scope("shop.azurecr.cn", ""), "https://containerregistry.azure.cn/.default");
    }

    #[test]
    fn a_missing_tenant_or_client_says_where_to_set_it() {
        let e = entra_app(&source(None, Some("c"), None), &identity(Ambient::default())).unwrap_err();
        assert_eq!(e.reason, "AzureIdentityIncomplete");
        assert!(e.message.contains("tenantId") && e.message.contains("AZURE_TENANT_ID"), "{e}");
        let e = entra_app(&source(Some("t"), None, None), &identity(Ambient::default())).unwrap_err();
        assert!(e.message.contains("clientId"), "{e}");
    }

    #[tokio::test]
    async fn a_foreign_scope_or_authority_is_refused_before_anything_is_sent() {
        let mut s = source(Some("t"), Some("c"), None);
        s.scope = Some("https://graph.microsoft.com/.default".into());
        let e = mint(&s, &identity(Ambient::default())).await.unwrap_err();
        assert_eq!(e.reason, "AudienceNotAllowed");
        let s = source(Some("t"), Some("c"), Some("https://login.evil.example"));
        let e = mint(&s, &identity(Ambient::default())).await.unwrap_err();
        assert_eq!(e.reason, "EndpointNotAllowed");
        assert!(e.message.contains("login.evil.example") && e.message.contains("authorityHost"), "{e}");
        let mut s = source(Some("t"), Some("c"), None);
        s.registry = "registry.evil.example".into();
        let e = mint(&s, &identity(Ambient::default())).await.unwrap_err();
        assert_eq!(e.reason, "EndpointNotAllowed");
        assert!(e.message.contains("registry.evil.example") && e.message.contains("spec.server"), "{e}");
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
