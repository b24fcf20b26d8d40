//! GCP access tokens, for GCR and Artifact Registry (registry user `oauth2accesstoken`), three ways:
//! - a service-account key: a JWT-bearer grant signed with the key, posted to its `token_uri`;
//! - GKE Workload Identity: the metadata server's token for the Pod's Google service account;
//! - Workload Identity Federation: regcred's own ServiceAccount token exchanged at Google STS, then optionally
//!   for a service account's token at IAM Credentials (`generateAccessToken`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::identity::Identity;
use super::oauth::{self, Step};
use super::render;
use super::tokens::{GcpAuth, GcpExternal, GcpSource, MintError, Minted};

pub const USER: &str = "oauth2accesstoken";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
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

pub async fn mint(source: &GcpSource, identity: &Identity) -> Result<Minted, MintError> {
    let http = oauth::client(None)?;
    let now = Timestamp::now();
    let (token, expires_at) = match &source.auth {
        GcpAuth::Key(key) => key_grant(&http, key.expose(), now).await?,
        GcpAuth::MetadataServer { service_account } => {
            let host = identity.ambient.gce_metadata_host.as_deref().unwrap_or(DEFAULT_METADATA_HOST);
            let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/{service_account}/token");
            let answer = oauth::send(METADATA, http.get(url).header("Metadata-Flavor", "Google")).await?;
            (oauth::field(METADATA, &answer, "access_token")?.to_owned(), oauth::expires_in(METADATA, &answer, now)?)
        }
        GcpAuth::External(external) => federate(&http, external, identity, now).await?,
    };
    Ok(Minted { config: render(&source.registry_key, USER, &token), expires_at })
}

async fn key_grant(http: &reqwest::Client, key: &[u8], now: Timestamp) -> Result<(String, Timestamp), MintError> {
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
        "iss": email, "scope": SCOPE, "aud": token_uri, "iat": now.as_second(), "exp": now.as_second() + 3600,
    });
    let assertion = oauth::sign_rs256(header, &claims, pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
    let answer = oauth::send(KEY_GRANT, http.post(token_uri).form(&form)).await?;
    Ok((oauth::field(KEY_GRANT, &answer, "access_token")?.to_owned(), oauth::expires_in(KEY_GRANT, &answer, now)?))
}

async fn federate(
    http: &reqwest::Client,
    external: &GcpExternal,
    identity: &Identity,
    now: Timestamp,
) -> Result<(String, Timestamp), MintError> {
    let subject = identity.service_account_token(&external.token_audience).await?;
    let subject = String::from_utf8_lossy(subject.expose()).into_owned();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("audience", external.audience.as_str()),
        ("scope", SCOPE),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token", subject.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ];
    let answer = oauth::send(STS, http.post(&external.token_url).form(&form)).await?;
    let federated = oauth::field(STS, &answer, "access_token")?;
    let federated_expiry = oauth::expires_in(STS, &answer, now)?;
    let Some(url) = &external.impersonation_url else {
        return Ok((federated.to_owned(), federated_expiry));
    };
    let body = json!({"scope": [SCOPE], "lifetime": "3600s"});
    let answer = oauth::send(IMPERSONATION, http.post(url).bearer_auth(federated).json(&body)).await?;
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
        let wif = GcpSource {
            auth: GcpAuth::External(GcpExternal {
                audience: "//iam.googleapis.com/x".into(),
                token_audience: "https://iam.googleapis.com/x".into(),
                token_url: DEFAULT_STS_URL.into(),
                impersonation_url: None,
            }),
            registry_key: "gcr.io".into(),
        };
        assert_eq!(mint(&wif, &identity).await.unwrap_err().reason, "FederatedTokenMissing");
    }
}
