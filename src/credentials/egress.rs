//! Where regcred may send a credential, and for which audience: the operator's rules, never the profile
//! author's. Pure.
//!
//! A profile names hosts that receive credentials (GCP `tokenUrl` and `serviceAccountImpersonationUrl`, ACR
//! `authorityHost`, the ACR exchange and Quay's federation on `server`, the `token_uri` of a key) and audiences of
//! regcred's own ServiceAccount token (Quay `audience`, GCP `audience` and `tokenAudience`). Writing a profile must
//! not be a way to borrow regcred's identity, so:
//! - every credential request goes to a host on the operator's allow-list ([`Endpoints`], flags
//!   `--allowed-endpoints` and `--extra-allowed-endpoints`), over HTTPS; [`super::oauth::Http::send`] checks each
//!   request, so no code path can forget it;
//! - each provider's audience has the one form its federation documents ([`quay_audience`], [`gcp_provider`],
//!   [`gcp_token_audience`], [`azure_scope`], [`AZURE_FEDERATION_AUDIENCES`]);
//! - no ServiceAccount token is ever requested for an audience the apiserver accepts ([`not_the_apiservers`],
//!   enforced by [`super::identity::Identity::service_account_token`]).

use super::tokens::MintError;
use crate::config::DEFAULT_ENDPOINTS;
use crate::glob::glob_match;

/// The condition reason of a host outside the allow-list.
pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
/// The condition reason of an audience outside its provider's form.
pub const AUDIENCE_NOT_ALLOWED: &str = "AudienceNotAllowed";

/// The flag (and chart value) that adds a host.
const HOW_TO_ALLOW: &str = "--extra-allowed-endpoints (chart value credentials.extraAllowedEndpoints)";

/// One allowed host: `HOST` (port 443) or `HOST:PORT`, where `*` in a label matches any run of characters
/// within that label, never a dot (`*.azurecr.io` allows `shop.azurecr.io`, not `a.b.azurecr.io`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    labels: Vec<String>,
    port: u16,
}

impl HostPattern {
    /// Parses `HOST[:PORT]`; the last label may not hold a `*` (no wildcard top-level domains).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let bad = |why: &str| {
            format!(
                "`{text}` is not an endpoint host such as login.microsoftonline.com, *.azurecr.io or 10.0.0.5:8443: {why}"
            )
        };
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("bad port"))?),
            None => (text.as_str(), 443),
        };
        let labels: Vec<String> = host.split('.').map(str::to_owned).collect();
        let label_ok = |l: &String| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        };
        if host.is_empty() || !labels.iter().all(label_ok) {
            return Err(bad("labels are letters, digits, `-` and `*`"));
        }
        if labels.last().is_some_and(|l| l.contains('*')) {
            return Err(bad("the last label cannot hold a wildcard"));
        }
        Ok(Self { labels, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        self.port == port
            && labels.len() == self.labels.len()
            && self.labels.iter().zip(&labels).all(|(p, l)| glob_match(p, l))
    }
}

/// The hosts regcred may send credentials to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    patterns: Vec<HostPattern>,
    /// Plain HTTP is allowed (only the metadata server, which the operator's environment names).
    plain_http: bool,
}

impl Default for Endpoints {
    /// [`DEFAULT_ENDPOINTS`].
    fn default() -> Self {
        Self::parse(DEFAULT_ENDPOINTS.iter().copied()).unwrap_or_else(|_| Self { patterns: vec![], plain_http: false })
    }
}

impl Endpoints {
    /// The allow-list `--allowed-endpoints` and `--extra-allowed-endpoints` make.
    pub fn from_args(args: &crate::config::EndpointArgs) -> Result<Self, String> {
        Self::parse(args.allowed.iter().chain(&args.extra).map(String::as_str))
    }

    /// The hosts `patterns` name (see [`HostPattern`]).
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let patterns = patterns
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns, plain_http: false })
    }

    /// Exactly `host[:port]` over plain HTTP: the GCE metadata server, named by the operator's environment
    /// (`GCE_METADATA_HOST`), never by a profile. It receives no credential.
    pub fn metadata_server(host: &str) -> Self {
        let (name, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(80)),
            None => (host, 80),
        };
        let labels = name.to_ascii_lowercase().split('.').map(str::to_owned).collect();
        Self { patterns: vec![HostPattern { labels, port }], plain_http: true }
    }

    /// Whether a request to `url` may carry a credential; `what` names the endpoint in the refusal.
    pub fn check(&self, url: &reqwest::Url, what: &str) -> Result<(), MintError> {
        let host = url.host_str().unwrap_or_default();
        let scheme_ok = url.scheme() == "https" || (self.plain_http && url.scheme() == "http");
        if !scheme_ok {
            return Err(MintError::new(
                ENDPOINT_NOT_ALLOWED,
                format!("{what} must be reached over https, not {}://{host}: nothing was sent", url.scheme()),
            ));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        if self.patterns.iter().any(|p| p.matches(host, port)) {
            return Ok(());
        }
        let named = if port == 443 { host.to_owned() } else { format!("{host}:{port}") };
        Err(MintError::new(
            ENDPOINT_NOT_ALLOWED,
            format!(
                "{what} is at {named}, which is not on the operator's allow-list of credential endpoints: nothing \
                 was sent. Use a documented endpoint of the cloud, or ask the operator to add {named} with {HOW_TO_ALLOW}"
            ),
        ))
    }

    /// [`Endpoints::check`] of a URL given as text.
    pub fn check_str(&self, url: &str, what: &str) -> Result<(), MintError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| {
            MintError::new(ENDPOINT_NOT_ALLOWED, format!("{what} ({url}) is not a URL: nothing was sent"))
        })?;
        self.check(&parsed, what)
    }
}

fn refuse(message: String) -> MintError {
    MintError::new(AUDIENCE_NOT_ALLOWED, message)
}

/// Quay's robot federation: regcred's token is for the registry host itself (`quay.io`, or the profile's
/// `server` host, with or without its port).
pub fn quay_audience(audience: &str, registry: &str) -> Result<(), MintError> {
    let host = crate::registry::host_of(registry);
    let bare = host.split(':').next().unwrap_or(host);
    if audience.eq_ignore_ascii_case(host) || audience.eq_ignore_ascii_case(bare) {
        return Ok(());
    }
    Err(refuse(format!(
        "credentials.quay.audience {audience:?} is not allowed: Quay's robot federation takes the registry host as \
         audience; remove the field (default {host}) or set it to {host}"
    )))
}

/// GCP Workload Identity Federation: the provider is
/// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
pub fn gcp_provider(audience: &str) -> Result<(), MintError> {
    let id = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let parts: Vec<&str> = audience.split('/').collect();
    let ok = matches!(
        parts.as_slice(),
        ["", "", "iam.googleapis.com", "projects", number, "locations", "global", "workloadIdentityPools", pool, "providers", provider]
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && id(pool) && id(provider)
    );
    if ok {
        return Ok(());
    }
    Err(refuse(format!(
        "credentials.gcp.externalAccount.audience {audience:?} is not a workload identity provider: use \
         //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"
    )))
}

/// The audience of regcred's token for GCP: the provider itself (`//iam.googleapis.com/...`) or its default
/// allowed audience (`https://iam.googleapis.com/...`), nothing else.
pub fn gcp_token_audience(token_audience: &str, provider: &str) -> Result<(), MintError> {
    if token_audience == provider || token_audience.strip_prefix("https:") == Some(provider) {
        return Ok(());
    }
    Err(refuse(format!(
        "credentials.gcp.externalAccount.tokenAudience {token_audience:?} is not allowed: it must name the \
         provider, https:{provider} (the default; remove the field) or {provider}"
    )))
}

/// The audiences Entra ID documents for federated credentials: global, US Government, China (21Vianet).
pub const AZURE_FEDERATION_AUDIENCES: &[&str] =
    &["api://AzureADTokenExchange", "api://AzureADTokenExchangeUSGov", "api://AzureADTokenExchangeChina"];

/// Entra ID scopes the ACR exchange is sent a token for: ACR's own audience per cloud (the default, what Azure's
/// credential provider asks for) or Azure Resource Manager's, which ACR also accepts unless a registry disables
/// it. Any other scope would hand the registry a token for another service.
pub const AZURE_SCOPES: &[&str] = &[
    "https://containerregistry.azure.net/.default",
    "https://containerregistry.azure.us/.default",
    "https://containerregistry.azure.cn/.default",
    "https://management.azure.com/.default",
    "https://management.usgovcloudapi.net/.default",
    "https://management.chinacloudapi.cn/.default",
];

pub fn azure_scope(scope: &str) -> Result<(), MintError> {
    if AZURE_SCOPES.contains(&scope) {
        return Ok(());
    }
    Err(refuse(format!(
        "credentials.acr.scope {scope:?} is not allowed: the token goes to the registry, so it is for ACR \
         (https://containerregistry.azure.net/.default and its sovereign forms; remove the field for the default) \
         or Azure Resource Manager"
    )))
}

/// regcred never requests its own token for an audience the apiserver accepts (`accepted`, its API audiences):
/// such a token would be regcred's API credential, handed to whoever receives it.
pub fn not_the_apiservers(audience: &str, accepted: &[String]) -> Result<(), MintError> {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    if audience.trim().is_empty() || accepted.iter().any(|a| norm(a) == norm(audience)) {
        return Err(refuse(format!(
            "regcred does not request its ServiceAccount token for audience {audience:?}: the apiserver accepts \
             it, so the token would be regcred's own Kubernetes credential. Use the audience the federation \
             documents (the registry host for Quay, the provider for GCP)"
        )));
    }
    Ok(())
}

/// regcred never requests its own token for the audience of its credential endpoint (`kubelet`, those it answers
/// the kubelet's provider for, `--credential-provider-audience` and the default): a profile author naming it (a
/// GCP `tokenAudience`, a Quay `audience`) would have regcred mint its own ServiceAccount token for that audience,
/// send it to an endpoint of the author's choosing, and the author would then ask regcred's endpoint for
/// credentials as regcred itself.
pub fn not_the_kubelets(audience: &str, kubelet: &[String]) -> Result<(), MintError> {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    if kubelet.iter().any(|a| norm(a) == norm(audience)) {
        return Err(refuse(format!(
            "regcred does not request its ServiceAccount token for audience {audience:?}: it is the audience of \
             regcred's own credential endpoint, so the token would get registry credentials as regcred. Use the \
             audience the federation documents (the registry host for Quay, the provider for GCP)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn hosts_are_matched_label_by_label_with_their_port() {
        let allowed = Endpoints::parse(["*.azurecr.io", "login.microsoftonline.com", "127.0.0.1:8443"]).unwrap();
        for (u, ok) in [
            ("https://shop.azurecr.io/oauth2/exchange", true),
            ("https://SHOP.AzureCR.io/oauth2/exchange", true),
            ("https://a.b.azurecr.io/", false),
            ("https://azurecr.io/", false),
            ("https://shop.azurecr.io.evil.com/", false),
            ("https://evilazurecr.io/", false),
            ("https://shop.azurecr.io:8443/", false),
            ("https://login.microsoftonline.com/t/oauth2/v2.0/token", true),
            ("https://login.microsoftonline.com:443/t", true),
            ("https://login.microsoftonline.com.evil.com/t", false),
            ("https://127.0.0.1:8443/token", true),
            ("https://127.0.0.1:8444/token", false),
            ("https://127.0.0.1/token", false),
            ("http://login.microsoftonline.com/t", false),
        ] {
            assert_eq!(allowed.check(&url(u), "x").is_ok(), ok, "{u}");
        }
        let e = allowed.check(&url("https://evil.example:9000/x"), "Google STS").unwrap_err();
        assert_eq!(e.reason, ENDPOINT_NOT_ALLOWED);
        assert!(e.message.contains("evil.example:9000") && e.message.contains("--extra-allowed-endpoints"), "{e}");
        assert!(e.message.contains("Google STS") && !e.message.contains("/x"), "{e}");
    }

    #[test]
    fn the_defaults_are_the_clouds_documented_hosts_and_nothing_else() {
        let d = Endpoints::default();
        for ok in [
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "https://login.microsoftonline.us/t/oauth2/v2.0/token",
            "https://login.partner.microsoftonline.cn/t/oauth2/v2.0/token",
            "https://shop.azurecr.cn/oauth2/exchange",
            "https://sts.googleapis.com/v1/token",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken",
            "https://oauth2.googleapis.com/token",
            "https://quay.io/oauth2/federation/robot/token",
        ] {
            assert!(d.check(&url(ok), "x").is_ok(), "{ok}");
        }
        for bad in [
            "https://kubernetes.default.svc/",
            "https://10.0.0.1/",
            "https://quay.example.com/",
            "https://x.googleapis.com/",
        ] {
            assert_eq!(d.check(&url(bad), "x").unwrap_err().reason, ENDPOINT_NOT_ALLOWED, "{bad}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_at_start() {
        for bad in ["", "*", "*.*", "a..b", "host:0", "host:http", "a/b", "shop.azurecr.*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Endpoints::parse(["quay.io", " ", "*.azurecr.io"]).is_ok());
    }

    #[test]
    fn only_the_metadata_server_is_reached_over_plain_http() {
        let m = Endpoints::metadata_server("169.254.169.254");
        assert!(m.check(&url("http://169.254.169.254/computeMetadata/v1/x"), "m").is_ok());
        assert!(m.check(&url("http://169.254.169.254:8080/x"), "m").is_err());
        let m = Endpoints::metadata_server("127.0.0.1:8080");
        assert!(m.check(&url("http://127.0.0.1:8080/x"), "m").is_ok());
        assert!(m.check(&url("http://10.0.0.1/x"), "m").is_err());
    }

    #[test]
    fn audiences_have_their_providers_form() {
        assert!(quay_audience("quay.io", "quay.io").is_ok());
        assert!(quay_audience("quay.example.com", "quay.example.com:8443/org").is_ok());
        assert!(quay_audience("quay.example.com:8443", "quay.example.com:8443/org").is_ok());
        for bad in ["https://kubernetes.default.svc", "quay.io", "api://AzureADTokenExchange", ""] {
            let e = quay_audience(bad, "quay.example.com").unwrap_err();
            assert_eq!(e.reason, AUDIENCE_NOT_ALLOWED, "{bad}");
        }
        let provider = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool-1/providers/k8s";
        assert!(gcp_provider(provider).is_ok());
        for bad in [
            "//iam.googleapis.com/projects/abc/locations/global/workloadIdentityPools/p/providers/k",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k/extra",
            "//iam.googleapis.com/x",
            "https://kubernetes.default.svc",
            "//iam.googleapis.com.evil/projects/1/locations/global/workloadIdentityPools/p/providers/k",
        ] {
            assert_eq!(gcp_provider(bad).unwrap_err().reason, AUDIENCE_NOT_ALLOWED, "{bad}");
        }
        assert!(gcp_token_audience(&format!("https:{provider}"), provider).is_ok());
        assert!(gcp_token_audience(provider, provider).is_ok());
        assert!(gcp_token_audience("https://kubernetes.default.svc", provider).is_err());
        assert!(azure_scope("https://containerregistry.azure.net/.default").is_ok());
        assert!(azure_scope("https://management.azure.com/.default").is_ok());
        assert!(azure_scope("https://graph.microsoft.com/.default").is_err());
    }

    #[test]
    fn the_credential_endpoints_audience_is_never_requested() {
        let ours = vec!["credential-provider.regcred.dev".to_owned(), "nodes.example.com".to_owned()];
        for (audience, ok) in [
            ("quay.io", true),
            ("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k", true),
            ("credential-provider.regcred.dev", false),
            ("Credential-Provider.Regcred.Dev/", false),
            (" credential-provider.regcred.dev ", false),
            ("nodes.example.com", false),
            ("https://credential-provider.regcred.dev", true),
        ] {
            let got = not_the_kubelets(audience, &ours);
            assert_eq!(got.is_ok(), ok, "{audience}");
            if let Err(e) = got {
                assert_eq!(e.reason, AUDIENCE_NOT_ALLOWED, "{audience}");
                assert!(e.message.contains("credential endpoint"), "{}", e.message);
            }
        }
    }

    #[test]
    fn the_apiservers_own_audiences_are_never_requested() {
        let accepted = vec!["https://kubernetes.default.svc.cluster.local".to_owned(), "k3s".to_owned()];
        assert!(not_the_apiservers("quay.io", &accepted).is_ok());
        for bad in [
            "https://kubernetes.default.svc.cluster.local",
            "https://kubernetes.default.svc.cluster.local/",
            "K3S",
            " ",
        ] {
            let e = not_the_apiservers(bad, &accepted).unwrap_err();
            assert_eq!(e.reason, AUDIENCE_NOT_ALLOWED, "{bad}");
        }
    }
}
