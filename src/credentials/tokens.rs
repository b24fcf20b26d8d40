//! Short-lived credentials: what a token source is, what minting yields, and when to mint again. Pure.

use std::time::Duration;

use jiff::Timestamp;

use super::{DockerConfig, SecretBytes};

/// A token source with everything needed to mint, resolved from a profile and its source Secret. Two equal
/// sources mint the same kind of token: a change (a rotated key, another role) restarts minting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Ecr(EcrSource),
    Gcp(GcpSource),
    Acr(AcrSource),
    Quay(QuaySource),
}

impl TokenSource {
    /// What the token is, for status ("Resolved from ...").
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Ecr(_) => "an ECR token",
            Self::Gcp(g) => match g.auth {
                GcpAuth::Key(_) => "a GCP access token",
                GcpAuth::MetadataServer { .. } => "a GCP access token from GKE Workload Identity",
                GcpAuth::External(_) => "a GCP access token from Workload Identity Federation",
            },
            Self::Acr(a) => match a.credential {
                AzureCredential::WorkloadIdentity => "an ACR token from Azure Workload Identity",
                AzureCredential::ClientSecret(_) | AzureCredential::Certificate { .. } => {
                    "an ACR token from a service principal"
                }
            },
            Self::Quay(_) => "a Quay robot token from robot federation",
        }
    }
}

/// TLS towards an endpoint regcred mints at that is the registry itself (ACR's exchange, Quay's federation):
/// the profile's `spec.tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointTls {
    pub ca_pem: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrSource {
    /// ECR Public (`public.ecr.aws`): one token for the public gallery, always minted in us-east-1.
    pub public: bool,
    pub region: String,
    pub registry_ids: Vec<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Static keys from a Secret; `None`: the ambient AWS chain (environment, web identity, instance profile).
    pub keys: Option<AwsKeys>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretBytes,
    pub session_token: Option<SecretBytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpSource {
    pub auth: GcpAuth,
    /// The dockerconfigjson key the token is written under.
    pub registry_key: String,
}

/// How a GCP access token is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcpAuth {
    /// A service-account key (JSON): a signed JWT-bearer grant posted to its `token_uri`.
    Key(SecretBytes),
    /// GKE Workload Identity: the metadata server's token for `service_account` (`default`).
    MetadataServer { service_account: String },
    /// Workload Identity Federation.
    External(GcpExternal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpExternal {
    /// The workload identity provider (`//iam.googleapis.com/...`).
    pub audience: String,
    /// The audience regcred's ServiceAccount token is requested for.
    pub token_audience: String,
    pub token_url: String,
    /// The generateAccessToken URL of the service account to impersonate, if any.
    pub impersonation_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcrSource {
    /// The registry host (`NAME.azurecr.io`), where the exchange happens; also the dockerconfigjson key.
    pub registry: String,
    /// From the profile, else the environment at mint time (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_AUTHORITY_HOST`).
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub authority_host: Option<String>,
    pub scope: Option<String>,
    pub credential: AzureCredential,
    /// Pull-scoped repositories; empty: the refresh token itself.
    pub repositories: Vec<String>,
    pub tls: EndpointTls,
}

/// What proves the application's identity to Entra ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureCredential {
    /// The federated ServiceAccount token (Azure Workload Identity).
    WorkloadIdentity,
    ClientSecret(SecretBytes),
    /// A certificate (PEM) and its RSA private key (PEM): a signed client assertion.
    Certificate {
        certificate: String,
        key: SecretBytes,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuaySource {
    /// The registry host, where the federation endpoint is; also the dockerconfigjson key's host.
    pub registry: String,
    pub registry_key: String,
    pub robot: String,
    pub audience: String,
    pub tls: EndpointTls,
}

/// A minted credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub config: DockerConfig,
    pub expires_at: Timestamp,
}

/// Why minting failed; `reason` is a condition reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MintError {
    pub reason: &'static str,
    pub message: String,
}

impl MintError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// Never mint again sooner than this after a success, whatever the token claims (a token that says it has
/// already expired must not make the refresher spin).
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// The first retry after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When to mint again after a success: at `fraction` of the token's real remaining lifetime, shortened by up to
/// 10% of jitter (`jitter` in [0, 1)) so profiles minted together spread out, and never sooner than
/// [`MIN_REFRESH`].
pub fn refresh_after(now: Timestamp, expires_at: Timestamp, fraction: f64, jitter: f64) -> Duration {
    let remaining = expires_at.duration_since(now).as_secs_f64().max(0.0);
    let delay = remaining * fraction.clamp(0.05, 0.95) * (1.0 - 0.1 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(delay).max(MIN_REFRESH)
}

/// Retries never come sooner than this apart.
pub const MIN_RETRY: Duration = Duration::from_secs(1);

/// When to try again after `failures` consecutive failures: exponential backoff, capped, and never later than a
/// quarter of what is left of the last good token (`expires_at`), so retries come closer together as its expiry
/// nears and the first success after an outage lands before the Secrets go stale.
pub fn retry_after(failures: u32, now: Timestamp, expires_at: Option<Timestamp>) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let backoff = FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
    let Some(expires_at) = expires_at.filter(|e| *e > now) else { return backoff };
    let remaining = Duration::try_from(expires_at.duration_since(now)).unwrap_or_default();
    backoff.min(remaining / 4).max(MIN_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn refresh_follows_the_real_remaining_lifetime() {
        // An ECR token: 12 h left, refreshed at two thirds (8 h), jitter shortening it by at most 10%.
        assert_eq!(refresh_after(at(0), at(12 * 3600), 2.0 / 3.0, 0.0), Duration::from_secs(8 * 3600));
        let jittered = refresh_after(at(0), at(12 * 3600), 2.0 / 3.0, 0.999);
        assert!(jittered < Duration::from_secs(8 * 3600) && jittered > Duration::from_secs(7 * 3600), "{jittered:?}");
        // A GCP token minted 10 minutes into its hour (cached upstream): two thirds of what is left.
        assert_eq!(refresh_after(at(600), at(3600), 2.0 / 3.0, 0.0), Duration::from_secs(2000));
    }

    #[test]
    fn a_token_that_claims_to_be_expired_cannot_make_the_refresher_spin() {
        // moto's ECR tokens say they expired in 2015.
        assert_eq!(refresh_after(at(0), at(-400_000_000), 2.0 / 3.0, 0.5), MIN_REFRESH);
        assert_eq!(refresh_after(at(0), at(1), 2.0 / 3.0, 0.0), MIN_REFRESH);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap() {
        // No good token (or one long expired): plain backoff.
        let delays: Vec<u64> = (1..=9).map(|n| retry_after(n, at(0), None).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_after(u32::MAX, at(0), Some(at(-100))), MAX_BACKOFF);
        // A good token with hours left does not change that.
        assert_eq!(retry_after(3, at(0), Some(at(4 * 3600))), Duration::from_secs(20));
    }

    #[test]
    fn retries_close_in_as_the_last_good_token_nears_expiry() {
        // Found by `make soak`: a 40 s token, the endpoint down for 10 s from its refresh at 26 s. Backoff alone
        // retried at 31 s and 41 s, after the token had expired. Capped at a quarter of what is left, the
        // retries come ever closer and one lands within a few seconds of the outage's end.
        let expires = at(40);
        let mut t = 26.0;
        let mut retries = Vec::new();
        for failures in 1..=6 {
            let now = Timestamp::from_second(1_800_000_000).unwrap() + jiff::SignedDuration::from_secs_f64(t);
            t += retry_after(failures, now, Some(expires)).as_secs_f64();
            retries.push(t);
        }
        assert!(retries.iter().any(|r| (36.0..=38.0).contains(r)), "{retries:?}");
        assert!(retries.windows(2).all(|w| w[1] - w[0] >= 1.0), "{retries:?}");
        // Never a spin, even in the last second.
        assert_eq!(retry_after(1, at(0), Some(at(1))), MIN_RETRY);
    }
}
