//! What a failure to mint a registry token says to a person: the one place where a [`MintError`]'s reason becomes
//! a sentence that names the token, the identity regcred asked as, what that identity lacked or what failed, and
//! what to do; the step's own text (the endpoint's explanation, never what was sent) follows as a detail. The
//! reason stays as it was: it is the condition's reason and the metrics' label.

use super::identity::Identity;
use super::tokens::{AzureCredential, GcpAuth, MintError, TokenSource};

/// The identity regcred asks as for `source`, for a person (names and IDs, never a secret).
pub fn identity(source: &TokenSource, who: &Identity) -> String {
    let sa = who.subject();
    match source {
        TokenSource::Ecr(e) => match (&e.role_arn, &e.keys) {
            (Some(role), _) => format!("AWS role {role}"),
            (None, Some(_)) => "the AWS access keys of the profile's Secret".into(),
            (None, None) => format!("regcred's own AWS identity (IRSA role of {sa}, or the node's role)"),
        },
        TokenSource::Gcp(g) => match &g.auth {
            GcpAuth::Key(_) => "the GCP service-account key of the profile's Secret".into(),
            GcpAuth::MetadataServer { service_account } => {
                format!("{sa}, bound to Google service account {service_account}")
            }
            GcpAuth::External(x) => match &x.impersonation_url {
                Some(url) => format!("{sa} through provider {}, impersonating {}", x.audience, impersonated(url)),
                None => format!("{sa} through provider {}", x.audience),
            },
        },
        TokenSource::Acr(a) => {
            let client = a.client_id.as_deref().or(who.ambient.azure_client_id.as_deref()).unwrap_or("(none set)");
            let tenant = a.tenant_id.as_deref().or(who.ambient.azure_tenant_id.as_deref()).unwrap_or("(none set)");
            match a.credential {
                AzureCredential::WorkloadIdentity => format!("{sa}, for app {client} in tenant {tenant}"),
                AzureCredential::ClientSecret(_) | AzureCredential::Certificate { .. } => {
                    format!("app {client} in tenant {tenant}")
                }
            }
        }
        TokenSource::Quay(q) => format!("{sa}, for robot {}", q.robot),
    }
}

/// The service account an IAM Credentials URL impersonates.
fn impersonated(url: &str) -> &str {
    url.rsplit_once("/serviceAccounts/")
        .map_or(url, |(_, rest)| rest.split_once(':').map_or(rest, |(account, _)| account))
}

/// What each mint failure's reason means and what to do: `(reasons, what failed or was lacking, what to do)`.
const ADVICE: &[(&[&str], &str, &str)] = &[
    (
        &["AccessDenied"],
        "the identity was refused, or lacks the permission to get a registry token",
        "for ECR grant it ecr:GetAuthorizationToken (and sts:AssumeRole on the role), for a GCP key the \
         Artifact Registry Reader role; check that its keys are current",
    ),
    (
        &["NoCredentials"],
        "no AWS credentials were found",
        "annotate regcred's ServiceAccount with eks.amazonaws.com/role-arn (chart: serviceAccount.annotations) \
         or give the profile a Secret with AWS keys",
    ),
    (&["RegionInvalid"], "the AWS region is not one AWS knows", "fix credentials.ecr.region or the registry host"),
    (&["InvalidParameter"], "AWS refused a parameter", "check credentials.ecr.registryIds (12-digit account IDs)"),
    (
        &["EntraIdRefused"],
        "Entra ID refused to issue a token",
        "check the app's federated identity credential (issuer: the cluster's, subject: regcred's \
         ServiceAccount, audience api://AzureADTokenExchange) or its secret or certificate",
    ),
    (
        &["ExchangeRefused"],
        "the registry refused the Entra ID token",
        "grant the identity the AcrPull role on the registry (or on the repositories named)",
    ),
    (
        &["StsRefused"],
        "Google STS refused regcred's ServiceAccount token",
        "check the workload identity pool provider: its issuer, allowed audience and attribute conditions \
         must accept regcred's ServiceAccount",
    ),
    (
        &["ImpersonationDenied"],
        "the federated identity may not impersonate the Google service account",
        "grant it roles/iam.workloadIdentityUser (iam.serviceAccounts.getAccessToken) on that service account",
    ),
    (
        &["MetadataServerRefused"],
        "the GKE metadata server refused",
        "bind regcred's ServiceAccount to the Google service account (iam.gke.io/gcp-service-account \
         annotation and roles/iam.workloadIdentityUser)",
    ),
    (
        &["FederationRefused"],
        "Quay refused regcred's ServiceAccount token",
        "add a federation configuration to the robot that trusts the cluster's issuer and regcred's \
         ServiceAccount as subject",
    ),
    (
        &[
            "EndpointUnreachable",
            "EntraIdUnreachable",
            "ExchangeUnreachable",
            "StsUnreachable",
            "ImpersonationUnreachable",
            "MetadataServerUnreachable",
            "FederationUnreachable",
        ],
        "the token endpoint could not be reached, or failed",
        "check DNS, the NetworkPolicy (egress) and HTTPS_PROXY of regcred's Pods; a 5xx clears by itself",
    ),
    (
        &["TLSUntrusted"],
        "the token endpoint's TLS certificate is not trusted",
        "for a private registry put its CA in spec.tls.caBundle; for a cloud endpoint check the proxy or \
         SSL_CERT_FILE",
    ),
    (
        &["EndpointNotAllowed"],
        "the token endpoint is not on the operator's allow-list, so nothing was sent",
        "use the cloud's documented endpoint, or ask the operator to allow it",
    ),
    (
        &["AudienceNotAllowed"],
        "the token audience is not one regcred may request, so nothing was sent",
        "use the documented audience of the cloud's federation",
    ),
    (
        &["FederatedTokenMissing"],
        "regcred could not get a token of its own ServiceAccount to federate with",
        "check that regcred's RBAC allows serviceaccounts/token on its own ServiceAccount (the chart's does), \
         or the file AZURE_FEDERATED_TOKEN_FILE names",
    ),
    (
        &["AzureIdentityIncomplete"],
        "the Azure identity is not fully named",
        "set credentials.acr.tenantId and clientId, or label regcred's Pods for the Azure Workload Identity \
         webhook",
    ),
    (
        &["InvalidServiceAccount"],
        "the Google service account name is not valid",
        "write it as an email address (name@project.iam.gserviceaccount.com) or default",
    ),
    (
        &["InvalidServiceAccountKey"],
        "the GCP service-account key cannot be used",
        "put the JSON key file as downloaded from Google in key key.json of the Secret",
    ),
    (
        &["InvalidClientCertificate"],
        "the service principal's certificate or private key cannot be used",
        "put the PEM certificate and its unencrypted private key in the Secret",
    ),
    (
        &["InvalidResponse"],
        "the token endpoint answered something regcred cannot read",
        "check that the endpoint is the cloud's own (not a proxy's page); report it if it persists",
    ),
    (&["MintFailed"], "minting failed", "see the detail; it is retried with backoff"),
];

/// What a mint failure's `reason` means and what to do: `(what failed or was lacking, what to do)`. `None`: a
/// reason with no phrasing yet (the table test forbids it).
pub fn advice(reason: &str) -> Option<(&'static str, &'static str)> {
    ADVICE.iter().find(|(reasons, _, _)| reasons.contains(&reason)).map(|&(_, what, todo)| (what, todo))
}

/// `err` from minting `source` as `who`, phrased for a person; its reason is kept.
pub fn mint_failure(source: &TokenSource, who: &Identity, err: MintError) -> MintError {
    let (what, todo) = advice(err.reason).unwrap_or(("minting failed", "see the detail"));
    let message = format!(
        "cannot mint {} as {}: {what}; {todo} (detail: {})",
        source.describe(),
        identity(source, who),
        err.message
    );
    MintError { reason: err.reason, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason a mint can fail with, found in the credentials' source itself: a reason written there
    /// without phrasing here fails the test.
    fn reasons_in_source() -> std::collections::BTreeSet<String> {
        let files = [
            include_str!("azure.rs"),
            include_str!("ecr.rs"),
            include_str!("egress.rs"),
            include_str!("gcp.rs"),
            include_str!("identity.rs"),
            include_str!("oauth.rs"),
            include_str!("quay.rs"),
            include_str!("refresher.rs"),
            include_str!("tokens.rs"),
        ];
        let mut found = std::collections::BTreeSet::new();
        for text in files {
            // `MintError::new("Reason"`, `refused: "Reason"`, `=> "Reason"` (ECR's classification), constants.
            for marker in ["MintError::new(", "refused: ", "unreachable: ", "=> ", "&str = "] {
                for (i, _) in text.match_indices(marker) {
                    let rest = text[i + marker.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else { continue };
                    let word: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
                    let closed = rest[word.len()..].starts_with('"');
                    if closed && word.len() > 3 && word.starts_with(|c: char| c.is_ascii_uppercase()) {
                        found.insert(word);
                    }
                }
            }
        }
        // Not reasons: AWS error codes matched in ECR's classification, and texts.
        for not_a_reason in ["AccessDeniedException", "InvalidParameterException"] {
            found.remove(not_a_reason);
        }
        found
    }

    #[test]
    fn every_mint_reason_is_phrased_for_a_person() {
        let reasons = reasons_in_source();
        assert!(reasons.len() >= 25, "the scan found too few reasons: {reasons:?}");
        for reason in &reasons {
            let (what, todo) = advice(reason).unwrap_or_else(|| panic!("{reason} has no phrasing in advice()"));
            assert!(what.len() > 10 && todo.len() > 10, "{reason}: {what:?} / {todo:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_token_the_identity_and_what_to_do_then_the_detail() {
        use crate::credentials::tokens::{AcrSource, EndpointTls};
        let source = TokenSource::Acr(AcrSource {
            registry: "team.azurecr.io".into(),
            tenant_id: Some("tenant-1".into()),
            client_id: Some("app-1".into()),
            authority_host: None,
            scope: None,
            credential: AzureCredential::WorkloadIdentity,
            repositories: vec![],
            tls: EndpointTls::default(),
        });
        let who = Identity::detached("regcred-system");
        let err =
            MintError::new("EntraIdRefused", "Entra ID refused (401): AADSTS700213: No matching federated identity");
        let phrased = mint_failure(&source, &who, err);
        assert_eq!(phrased.reason, "EntraIdRefused");
        let m = &phrased.message;
        assert!(
            m.starts_with(
                "cannot mint an ACR token from Azure Workload Identity as system:serviceaccount:regcred-system:regcred, \
                 for app app-1 in tenant tenant-1: Entra ID refused"
            ),
            "{m}"
        );
        assert!(m.contains("federated identity credential"), "{m}");
        assert!(m.ends_with("(detail: Entra ID refused (401): AADSTS700213: No matching federated identity)"), "{m}");
    }

    #[test]
    fn impersonation_urls_name_their_service_account() {
        let url = crate::credentials::gcp::impersonation_url("puller@proj.iam.gserviceaccount.com");
        assert_eq!(impersonated(&url), "puller@proj.iam.gserviceaccount.com");
    }
}
