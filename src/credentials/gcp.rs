//! GCP access tokens, for GCR and Artifact Registry (registry user `oauth2accesstoken`), three ways:
//! - a service-account key: a JWT-bearer grant signed with the key, posted to its `token_uri`;
//! - GKE Workload Identity: the metadata server's token for the Pod's Google service account;
//! - Workload Identity Federation: regcred's own ServiceAccount token exchanged at Google STS, then optionally
//!   for a service account's token at IAM Credentials (`generateAccessToken`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::egress;
use super::identity::Identity;
use super::oauth::{self, Http, Step};
use super::render;
use super::tokens::{GcpAuth, GcpExternal, GcpSource, MintError, Minted};

pub const USER: &str = "oauth2accesstoken";
/// The scope of the tokens regcred writes: read-only Cloud Storage, the narrowest scope that pulls from both
/// Container Registry and Artifact Registry. It is the scope GKE nodes pull with (`storage-ro`, which Google's
/// "Access scopes in GKE" documents as "read-only access to all Cloud Storage resources, including private images
/// stored in Artifact Registry or Container Registry"). `cloud-platform` would hand every selected namespace
/// every permission of the service account; with this scope the token can do nothing but read storage, whatever
/// IAM roles the account holds (pulls still need `roles/artifactregistry.reader`).
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// The scope of a federated token that is only used to impersonate: IAM Credentials' `generateAccessToken`
/// requires `cloud-platform` (as Google's auth libraries ask STS for when impersonating). That token never
/// leaves regcred: the impersonated token, with [`SCOPE`], is what is written.
const IMPERSONATION_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google allows a JWT-bearer grant to live an hour at most.
const KEY_GRANT_SECONDS: i64 = 3600;
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Where GKE serves the metadata server (`metadata.google.internal`).
const DEFAULT_METADATA_HOST: &str = "169.254.169.254";
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";

const KEY_GRANT: Step =
    Step { name: "the key's token endpoint", refused: "AccessDenied", unreachable: "EndpointUnreachable" };
const METADATA: Step =
    Step { name: "the metadata server", refused: "MetadataServerRefused", unreachable: "MetadataServerUnreachable" };
const STS: Step = Step { name: "Google STS", refused: "StsRefused", unreachable: "StsUnreachable" };
const IMPERSONATION: Step =
    Step { name: "IAM Credentials", refused: "ImpersonationDenied", unreachable: "ImpersonationUnreachable" };

/// The impersonation URL for a service account, as `gcloud` writes it into a credential configuration.
pub fn impersonation_url(service_account: &str) -> String {
    format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken")
}

/// The default audience of a provider's ServiceAccount token: its allowed audience when none is configured.
pub fn default_token_audience(audience: &str) -> String {
    format!("https:{audience}")
}

/// Whether the audiences and endpoints of a Workload Identity Federation are allowed, before anything is sent.
pub fn allowed(external: &GcpExternal, identity: &Identity) -> Result<(), MintError> {
    egress::gcp_provider(&external.audience)?;
    egress::gcp_token_audience(&external.token_audience, &external.audience)?;
    identity.endpoints.check_str(&external.token_url, "Google STS (credentials.gcp.externalAccount.tokenUrl)")?;
    if let Some(url) = &external.impersonation_url {
        identity
            .endpoints
            .check_str(url, "IAM Credentials (credentials.gcp.externalAccount.serviceAccountImpersonationUrl)")?;
    }
    Ok(())
}

pub async fn mint(source: &GcpSource, identity: &Identity) -> Result<Minted, MintError> {
    let now = Timestamp::now();
    let (token, expires_at) = match &source.auth {
        GcpAuth::Key(key) => key_grant(&oauth::client(None, &identity.endpoints)?, key.expose(), now).await?,
        GcpAuth::MetadataServer { service_account } => {
            // An email address or `default`, nothing that could change the request's path or query.
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_');
            if service_account.is_empty() || service_account.contains("..") || !service_account.chars().all(plain) {
                return Err(MintError::new(
                    "InvalidServiceAccount",
                    format!(
                        "credentials.gcp.workloadIdentity.serviceAccount {service_account:?} is not an account name"
                    ),
                ));
            }
            let host = identity.ambient.gce_metadata_host.as_deref().unwrap_or(DEFAULT_METADATA_HOST);
            let http = oauth::metadata_client(host)?;
            // The narrowest scope that pulls (see [`SCOPE`]); without it, GKE gives the account's own scopes,
            // typically cloud-platform.
            let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/{service_account}/token");
            let request = http.get(&url).query(&[("scopes", SCOPE)]).header("Metadata-Flavor", "Google");
            let answer = http.send(METADATA, request).await?;
            (oauth::field(METADATA, &answer, "access_token")?.to_owned(), oauth::expires_in(METADATA, &answer, now)?)
        }
        GcpAuth::External(external) => {
            allowed(external, identity)?;
            federate(&oauth::client(None, &identity.endpoints)?, external, identity, now).await?
        }
    };
    Ok(Minted { config: render(&source.registry_key, USER, &token), expires_at })
}

async fn key_grant(http: &Http, key: &[u8], now: Timestamp) -> Result<(String, Timestamp), MintError> {
    let invalid = |why: String| MintError::new("InvalidServiceAccountKey", format!("key.json: {why}"));
    let key: Value = serde_json::from_slice(key).map_err(|_| invalid("not JSON".into()))?;
    let text = |f: &str| key.get(f).and_then(Value::as_str).filter(|s| !s.is_empty());
    let email = text("client_email").ok_or_else(|| invalid("no client_email".into()))?;
    let pem = text("private_key").ok_or_else(|| invalid("no private_key".into()))?;
    let token_uri = text("token_uri").unwrap_or(DEFAULT_TOKEN_URI);
    let mut header = json!({});
    if let Some(kid) = text("private_key_id") {
        header["kid"] = kid.into();
    }
    let claims = json!({
        "iss": email, "scope": SCOPE, "aud": token_uri, "iat": now.as_second(),
        "exp": now.as_second() + KEY_GRANT_SECONDS,
    });
    let assertion =
        oauth::sign(oauth::Alg::Rs256, header, &claims, pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
    let answer = http.send(KEY_GRANT, http.post(token_uri).form(&form)).await?;
    Ok((oauth::field(KEY_GRANT, &answer, "access_token")?.to_owned(), oauth::expires_in(KEY_GRANT, &answer, now)?))
}

async fn federate(
    http: &Http,
    external: &GcpExternal,
    identity: &Identity,
    now: Timestamp,
) -> Result<(String, Timestamp), MintError> {
    let subject = identity.service_account_token(&external.token_audience).await?;
    let subject = String::from_utf8_lossy(subject.expose()).into_owned();
    // The federated token is written itself without impersonation (the narrow scope), or only used to ask IAM
    // Credentials for one (the scope that API requires).
    let sts_scope = if external.impersonation_url.is_some() { IMPERSONATION_SCOPE } else { SCOPE };
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("audience", external.audience.as_str()),
        ("scope", sts_scope),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token", subject.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ];
    let answer = http.send(STS, http.post(&external.token_url).form(&form)).await?;
    let federated = oauth::field(STS, &answer, "access_token")?;
    let federated_expiry = oauth::expires_in(STS, &answer, now)?;
    let Some(url) = &external.impersonation_url else {
        return Ok((federated.to_owned(), federated_expiry));
    };
    let body = json!({"scope": [SCOPE], "lifetime": "3600s"});
    let answer = http.send(IMPERSONATION, http.post(url).bearer_auth(federated).json(&body)).await?;
    let token = oauth::field(IMPERSONATION, &answer, "accessToken")?.to_owned();
    let expires_at = oauth::field(IMPERSONATION, &answer, "expireTime")?
        .parse::<Timestamp>()
        .map_err(|_| MintError::new("InvalidResponse", "IAM Credentials answered an expireTime that is not a time"))?;
    Ok((token, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::SecretBytes;
    use crate::credentials::identity::Ambient;

    #[test]
    fn the_defaults_are_those_gcloud_writes() {
        assert_eq!(
            impersonation_url("puller@p.iam.gserviceaccount.com"),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/puller@p.iam.gserviceaccount.com:generateAccessToken"
        );
        assert_eq!(
            default_token_audience(
                "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k"
            ),
            "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k"
        );
    }

    #[tokio::test]
    async fn a_bad_key_or_an_unreachable_metadata_server_says_so() {
        let identity = Identity::new(
            None,
            "regcred-system",
            "regcred",
            Ambient {
                // Nothing listens on port 9 of loopback.
                gce_metadata_host: Some("127.0.0.1:9".into()),
                ..Ambient::default()
            },
            crate::credentials::egress::Endpoints::default(),
        );
        let key = |k: &str| GcpSource { auth: GcpAuth::Key(SecretBytes::new(k.into())), registry_key: "gcr.io".into() };
        let e = mint(&key("{"), &identity).await.unwrap_err();
        assert_eq!(e.reason, "InvalidServiceAccountKey");
        let e = mint(&key(r#"{"client_email":"a@b","private_key":"nope"}"#), &identity).await.unwrap_err();
        assert_eq!(e.reason, "InvalidServiceAccountKey");
        let mds = GcpSource {
            auth: GcpAuth::MetadataServer { service_account: "default".into() },
            registry_key: "gcr.io".into(),
        };
        let e = mint(&mds, &identity).await.unwrap_err();
        assert_eq!(e.reason, "MetadataServerUnreachable", "{e}");
        let provider = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k";
        let wif = |token_audience: &str, token_url: &str| GcpSource {
            auth: GcpAuth::External(GcpExternal {
                audience: provider.into(),
                token_audience: token_audience.into(),
                token_url: token_url.into(),
                impersonation_url: None,
            }),
            registry_key: "gcr.io".into(),
        };
        let default_audience = default_token_audience(provider);
        let e = mint(&wif(&default_audience, DEFAULT_STS_URL), &identity).await.unwrap_err();
        assert_eq!(e.reason, "FederatedTokenMissing");
        // A foreign audience or STS host is refused before anything is asked.
        let e = mint(&wif("https://kubernetes.default.svc", DEFAULT_STS_URL), &identity).await.unwrap_err();
        assert_eq!(e.reason, "AudienceNotAllowed");
        let e = mint(&wif(&default_audience, "https://sts.evil.example/v1/token"), &identity).await.unwrap_err();
        assert_eq!(e.reason, "EndpointNotAllowed");
        assert!(e.message.contains("sts.evil.example") && e.message.contains("tokenUrl"), "{e}");
    }
}
