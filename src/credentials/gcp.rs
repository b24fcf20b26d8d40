//! GCP access tokens from a service-account key, through gcp_auth, which signs a JWT-bearer grant and posts it
//! to the key's own `token_uri`. The registry user for an access token is `oauth2accesstoken`.

use gcp_auth::{CustomServiceAccount, TokenProvider};
use jiff::Timestamp;

use super::render;
use super::tokens::{GcpSource, MintError, Minted};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Mints an access token. A fresh provider per mint: gcp_auth caches tokens until shortly before expiry, and a
/// rotation must yield a new token, not the cached one.
pub async fn mint(source: &GcpSource) -> Result<Minted, MintError> {
    let key = std::str::from_utf8(source.key.expose())
        .map_err(|_| MintError::new("InvalidServiceAccountKey", "key.json is not UTF-8"))?;
    let account = CustomServiceAccount::from_json(key)
        .map_err(|e| MintError::new("InvalidServiceAccountKey", format!("key.json: {e}")))?;
    let token = account.token(&[SCOPE]).await.map_err(classify)?;
    let expires_at = Timestamp::from_second(token.expires_at().timestamp())
        .map_err(|_| MintError::new("InvalidResponse", "the token endpoint returned an impossible expiry"))?;
    Ok(Minted { config: render(&source.registry_key, "oauth2accesstoken", token.as_str()), expires_at })
}

fn classify(err: gcp_auth::Error) -> MintError {
    // gcp_auth's error is opaque: its chain says what happened.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let lower = message.to_lowercase();
    let reason =
        if ["connect", "dns", "timed out", "timeout", "unreachable", "refused"].iter().any(|w| lower.contains(w)) {
            "EndpointUnreachable"
        } else if ["401", "403", "invalid_grant", "unauthorized", "denied"].iter().any(|w| lower.contains(w)) {
            "AccessDenied"
        } else if lower.contains("token request failed") {
            // gcp_auth reports any non-success answer this way, without the status: a revoked or disabled key
            // and a failing endpoint look alike.
            message.push_str(" (the token endpoint refused the grant or failed; check that the key is active)");
            "TokenRequestFailed"
        } else {
            "MintFailed"
        };
    MintError::new(reason, format!("GCP token exchange: {message}"))
}
