//! AWS ECR tokens through aws-config and aws-sdk-ecr. Endpoints come from the standard AWS configuration
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECR`, ...), credentials from a Secret or the ambient chain, which
//! includes web identity (IRSA: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`).

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;

use super::tokens::{EcrSource, MintError, Minted};
use super::{DockerConfig, SecretBytes};

/// The AWS region in an ECR host (`123456789012.dkr.ecr.eu-west-1.amazonaws.com`, also with `*.` or
/// `dkr-ecr`/`ecr-fips` forms).
pub fn region_of_host(host: &str) -> Option<String> {
    let host = host.split(['/', ':']).next().unwrap_or(host);
    let labels: Vec<&str> = host.split('.').collect();
    let at = (0..labels.len()).find(|&i| match labels[i] {
        "ecr" | "ecr-fips" => i > 0 && labels[i - 1] == "dkr",
        "dkr-ecr" | "dkr-ecr-fips" => true,
        _ => false,
    })?;
    labels.get(at + 1).filter(|r| !r.is_empty() && !r.contains('*')).map(|r| (*r).to_owned())
}

/// Whether `region` has the shape of a region in one of AWS's partitions (the prefixes the SDK's partition
/// table knows: `us-`, `eu-`, `ap-`, `cn-`, `us-gov-`, ...). A typo such as `eu-wset-1` passes (it is only shown
/// as unreachable when minting); `xx-nowhere-9` does not.
pub fn known_region(region: &str) -> bool {
    const PREFIXES: [&str; 16] = [
        "us-gov-", "us-iso-", "us-isob-", "us-isof-", "eu-isoe-", "eusc-", "cn-", "us-", "eu-", "ap-", "sa-", "ca-",
        "me-", "af-", "il-", "mx-",
    ];
    PREFIXES.iter().any(|p| {
        region.strip_prefix(p).and_then(|rest| rest.rsplit_once('-')).is_some_and(|(name, number)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
        })
    })
}

/// The AWS SDK's HTTPS client, on rustls with ring like the rest of regcred; shared by every mint.
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{Builder, tls};
    static CLIENT: std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https()
        })
        .clone()
}

/// Mints one authorization token per registry ID and renders them into one dockerconfigjson keyed by each
/// registry's host. Expiry is the earliest of the tokens'.
pub async fn mint(source: &EcrSource) -> Result<Minted, MintError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(source.region.clone()))
        .http_client(http_client());
    if let Some(keys) = &source.keys {
        let text = |b: &SecretBytes| String::from_utf8_lossy(b.expose()).trim().to_owned();
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.trim(),
            text(&keys.secret_access_key),
            keys.session_token.as_ref().map(text),
            None,
            "regcred-source-secret",
        ));
    }
    let mut config = loader.load().await;
    if let Some(role) = &source.role_arn {
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role).session_name("regcred").configure(&config);
        if let Some(external_id) = &source.external_id {
            assume = assume.external_id(external_id);
        }
        let provider = assume.build().await;
        config = config.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
    }
    if source.public {
        return mint_public(&config).await;
    }
    let client = aws_sdk_ecr::Client::new(&config);
    // One token serves every registry the identity may pull from (AWS deprecated asking per registry ID), so
    // several registry IDs are several hosts carrying the same token.
    let out = client.get_authorization_token().send().await.map_err(classify)?;
    let mut auths = serde_json::Map::new();
    let mut expires_at: Option<Timestamp> = None;
    for data in out.authorization_data() {
        let (Some(token), Some(endpoint)) = (data.authorization_token(), data.proxy_endpoint()) else {
            return Err(MintError::new("InvalidResponse", "ECR returned authorization data without a token"));
        };
        let (user, password) = decode_token(token)?;
        let host = endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
        let entry = serde_json::json!({"username": user, "password": password, "auth": token});
        for host in hosts_for(host, &source.registry_ids) {
            auths.insert(host, entry.clone());
        }
        if let Some(at) = data.expires_at().and_then(|t| Timestamp::new(t.secs(), 0).ok()) {
            expires_at = Some(expires_at.map_or(at, |e| e.min(at)));
        }
    }
    if auths.is_empty() {
        return Err(MintError::new("InvalidResponse", "ECR returned no authorization data"));
    }
    let doc = serde_json::json!({ "auths": auths });
    Ok(Minted {
        config: DockerConfig(SecretBytes::new(doc.to_string().into_bytes())),
        // ECR tokens last 12 hours; a response without an expiry is taken at that.
        expires_at: expires_at.unwrap_or_else(|| Timestamp::now() + jiff::SignedDuration::from_hours(12)),
    })
}

/// The registry host of ECR Public, and the only region that mints its tokens.
pub const PUBLIC_HOST: &str = "public.ecr.aws";
pub const PUBLIC_REGION: &str = "us-east-1";

/// ECR Public: authenticated pulls get higher rate limits than anonymous ones.
async fn mint_public(config: &aws_config::SdkConfig) -> Result<Minted, MintError> {
    let client = aws_sdk_ecrpublic::Client::new(config);
    let out = client.get_authorization_token().send().await.map_err(classify)?;
    let data = out
        .authorization_data()
        .ok_or_else(|| MintError::new("InvalidResponse", "ECR Public returned no authorization data"))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| MintError::new("InvalidResponse", "ECR Public returned authorization data without a token"))?;
    let (user, password) = decode_token(token)?;
    let doc = serde_json::json!({ "auths": { PUBLIC_HOST: {"username": user, "password": password, "auth": token} } });
    Ok(Minted {
        config: DockerConfig(SecretBytes::new(doc.to_string().into_bytes())),
        expires_at: data
            .expires_at()
            .and_then(|t| Timestamp::new(t.secs(), 0).ok())
            .unwrap_or_else(|| Timestamp::now() + jiff::SignedDuration::from_hours(12)),
    })
}

/// An authorization token is base64 of `user:password`.
fn decode_token(token: &str) -> Result<(String, String), MintError> {
    let decoded = B64
        .decode(token)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| MintError::new("InvalidResponse", "the registry token is not base64"))?;
    decoded
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .ok_or_else(|| MintError::new("InvalidResponse", "the registry token has no user:password"))
}

/// The hosts a token is written under: the caller's own registry, or each of `registry_ids` in the same region
/// and partition (`<id>.dkr.ecr.<region>.amazonaws.com`).
fn hosts_for(endpoint_host: &str, registry_ids: &[String]) -> Vec<String> {
    match endpoint_host.split_once('.') {
        Some((_, suffix)) if !registry_ids.is_empty() => {
            registry_ids.iter().map(|id| format!("{id}.{suffix}")).collect()
        }
        _ => vec![endpoint_host.to_owned()],
    }
}

fn classify<E, R>(err: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> MintError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let message = DisplayErrorContext(&err).to_string();
    let reason = match &err {
        SdkError::ServiceError(e) => match e.err().code() {
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch",
            ) => "AccessDenied",
            Some("InvalidParameterException") => "InvalidParameter",
            _ => "MintFailed",
        },
        SdkError::TimeoutError(_) => "EndpointUnreachable",
        _ if message.contains("AccessDenied") || message.contains("not authorized") => "AccessDenied",
        _ if message.contains("the credential provider was not enabled")
            || message.contains("no providers in chain provided credentials") =>
        {
            "NoCredentials"
        }
        _ if message.contains("invalid region") || message.contains("Invalid region") => "RegionInvalid",
        SdkError::DispatchFailure(_) => "EndpointUnreachable",
        _ => "MintFailed",
    };
    MintError::new(reason, format!("ECR GetAuthorizationToken: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ids_become_hosts_in_the_same_region_and_partition() {
        let own = "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn";
        assert_eq!(hosts_for(own, &[]), vec![own.to_owned()]);
        assert_eq!(
            hosts_for(own, &["111111111111".into(), "222222222222".into()]),
            vec![
                "111111111111.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn"
            ]
        );
    }

    #[test]
    fn regions_are_checked_against_the_partitions() {
        for ok in [
            "us-east-1",
            "eu-west-3",
            "ap-southeast-5",
            "cn-north-1",
            "us-gov-west-1",
            "us-isob-east-1",
            "il-central-1",
        ] {
            assert!(known_region(ok), "{ok}");
        }
        for bad in ["xx-nowhere-9", "us-east", "east-1", "us--1", "US-EAST-1", ""] {
            assert!(!known_region(bad), "{bad}");
        }
    }

    #[test]
    fn the_region_comes_from_the_ecr_host() {
        for (host, region) in [
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", Some("eu-west-1")),
            ("*.dkr.ecr.us-east-2.amazonaws.com", Some("us-east-2")),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
            ("123456789012.dkr-ecr.eu-central-1.on.aws", Some("eu-central-1")),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/team", Some("cn-north-1")),
            ("registry.example.com", None),
            ("public.ecr.aws", None),
        ] {
            assert_eq!(region_of_host(host).as_deref(), region, "{host}");
        }
    }
}
