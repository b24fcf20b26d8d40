//! Command-line and environment configuration. Every flag has a `long` name and an `env` variable; its doc
//! comment is its help text.

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Logging options shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, in tracing's EnvFilter syntax (`info`, `regcred=debug,kube=warn`).
    #[arg(long = "log-level", env = "REGCRED_LOG", default_value = "info", global = true)]
    pub level: String,

    /// Log format.
    #[arg(long = "log-format", env = "REGCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub format: LogFormat,
}

/// `--worker-threads` by default (the benchmarks' baselines run with as many, on equal terms).
pub const DEFAULT_WORKER_THREADS: u16 = 1;

/// Options of `regcred run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// regcred's own namespace: source Secrets are read from here and nowhere else.
    #[arg(long, env = "REGCRED_NAMESPACE", default_value = "regcred-system")]
    pub namespace: String,

    /// regcred's own ServiceAccount (in its namespace): federations that start from a ServiceAccount token
    /// (Azure Workload Identity without its webhook, GCP Workload Identity Federation, Quay robot federation) get
    /// one requested for this account, and only this one.
    #[arg(long, env = "REGCRED_SERVICE_ACCOUNT", default_value = "regcred")]
    pub service_account: String,

    /// Threads running regcred's work. regcred waits on the apiserver and registries far more than it computes:
    /// one thread serves thousands of namespaces and admissions at once, where tokio's default (a thread per core
    /// of the node) ignores the CPU the Pod requests. Raise it only for a profile planning hundreds of thousands of
    /// namespaces beside a busy webhook.
    #[arg(long, env = "REGCRED_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,

    /// Secret and ServiceAccount writes in flight at once, across all profiles: the most load regcred's syncs put
    /// on the apiserver. One large profile may use all of it; several share it first come, first served.
    #[arg(long, env = "REGCRED_WRITE_CONCURRENCY", default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub write_concurrency: u16,

    /// Handle only the RegistryProfiles matching this label selector (for sharding or tests); all by default.
    #[arg(long, env = "REGCRED_PROFILE_SELECTOR")]
    pub profile_selector: Option<String>,

    /// Short-lived tokens are replaced after this share of their remaining lifetime (with up to 10% jitter).
    #[arg(long, env = "REGCRED_TOKEN_REFRESH_FRACTION", default_value_t = 2.0 / 3.0, value_parser = parse_fraction)]
    pub token_refresh_fraction: f64,

    /// Plain-HTTP address of `/metrics`, `/healthz` and `/readyz`; `off` disables it.
    #[arg(long, env = "REGCRED_METRICS_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_optional_addr)]
    pub metrics_addr: OptionalAddr,

    /// Name reported as the source of Events.
    #[arg(long, env = "REGCRED_REPORTER", default_value = "regcred")]
    pub reporter: String,

    /// Self-healing of Pods admitted without their profile's Secret, for every profile (a profile's
    /// `spec.healing.mode` can only lower it): `Evict` (Pods a controller re-creates are evicted, needs
    /// `pods/eviction`), `Notify` (Events only) or `Off`.
    #[arg(long, env = "REGCRED_HEALING", default_value = "Evict", value_parser = parse_healing)]
    pub healing: crate::api::HealingMode,

    #[command(flatten)]
    pub webhook: WebhookArgs,

    #[command(flatten)]
    pub credential_provider: CredentialProviderArgs,

    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,

    #[command(flatten)]
    pub endpoints: EndpointArgs,
}
/// The hosts credentials may go to by default: the identity and registry endpoints the clouds document, public
/// and sovereign. Entra ID: `login.microsoftonline.com` (global), `login.microsoftonline.us` (US Government),
/// `login.partner.microsoftonline.cn` and `login.chinacloudapi.cn` (China, 21Vianet); ACR: `*.azurecr.io`,
/// `*.azurecr.us`, `*.azurecr.cn`; Google: `sts.googleapis.com`, `iamcredentials.googleapis.com`,
/// `oauth2.googleapis.com` (a key's `token_uri`); Quay: `quay.io`.
pub const DEFAULT_ENDPOINTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.chinacloudapi.cn",
    "*.azurecr.io",
    "*.azurecr.us",
    "*.azurecr.cn",
    "sts.googleapis.com",
    "iamcredentials.googleapis.com",
    "oauth2.googleapis.com",
    "quay.io",
];

/// Where regcred may send credentials: every token endpoint a profile can name (GCP `tokenUrl` and
/// `serviceAccountImpersonationUrl`, ACR `authorityHost`, the ACR exchange and Quay's federation on `server`, a
/// key's `token_uri`) must be one of these hosts, or the profile is refused with `EndpointNotAllowed` and nothing
/// is sent. Checked at start (`credentials::egress::HostPattern`).
#[derive(Args, Clone, Debug)]
pub struct EndpointArgs {
    /// Hosts credentials may be sent to, comma-separated: `HOST` (port 443) or `HOST:PORT`; `*` matches within
    /// one DNS label (`*.azurecr.io`). Default: the public and sovereign clouds' documented endpoints. Setting it
    /// replaces the default; to add hosts, use --extra-allowed-endpoints.
    #[arg(long = "allowed-endpoints", env = "REGCRED_ALLOWED_ENDPOINTS", value_delimiter = ',',
        default_values_t = DEFAULT_ENDPOINTS.iter().map(|h| (*h).to_owned()))]
    pub allowed: Vec<String>,

    /// More hosts credentials may be sent to, added to --allowed-endpoints (a private Quay, a proxy of the
    /// cloud's endpoints), in the same form.
    #[arg(long = "extra-allowed-endpoints", env = "REGCRED_EXTRA_ALLOWED_ENDPOINTS", value_delimiter = ',')]
    pub extra: Vec<String>,
}

/// Options of the leader election between replicas.
#[derive(Args, Clone, Debug)]
pub struct LeaderElectionArgs {
    /// Elect one replica (through a Lease in regcred's namespace) to reconcile and mint tokens; every replica
    /// serves the webhook. `false` only for a single replica.
    #[arg(long = "leader-election", env = "REGCRED_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Name of the Lease.
    #[arg(long = "leader-election-lease", env = "REGCRED_LEADER_ELECTION_LEASE", default_value = "regcred")]
    pub lease: String,

    /// This replica's identity in the Lease (the chart passes the Pod name). Default: host name and process id.
    #[arg(long = "leader-election-identity", env = "REGCRED_LEADER_ELECTION_IDENTITY")]
    pub identity: Option<String>,

    /// How long the Lease holds without renewal, which bounds failover after a crash. Units: s, m.
    #[arg(long = "leader-election-lease-duration", env = "REGCRED_LEADER_ELECTION_LEASE_DURATION", default_value = "10s", value_parser = parse_lease_duration)]
    pub duration: std::time::Duration,
}

/// A Lease duration: whole seconds, between 2 s and 5 min.
fn parse_lease_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s) {
        Ok(d) if (2..=300).contains(&d.as_secs()) => Ok(d),
        Ok(_) => Err(format!("`{s}` is outside 2s..5m")),
        Err(e) => Err(e),
    }
}

/// Parses a healing mode: `Evict`, `Notify` or `Off`, in any case (`false`, as a YAML 1.1 reader turns a bare
/// `Off` in a values file into, is `Off`).
fn parse_healing(s: &str) -> Result<crate::api::HealingMode, String> {
    use crate::api::HealingMode;
    match s.to_ascii_lowercase().as_str() {
        "evict" => Ok(HealingMode::Evict),
        "notify" => Ok(HealingMode::Notify),
        "off" | "false" => Ok(HealingMode::Off),
        _ => Err(format!("`{s}` is not a healing mode: Evict, Notify or Off")),
    }
}

/// Parses a non-negative duration such as `10s`, `15m` or `2160h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration =
        s.parse().map_err(|e| format!("`{s}` is not a duration such as 10s or 2160h: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("`{s}` is negative"))
}

/// Options of the admission webhook.
#[derive(Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Serve the Pod admission webhook over HTTPS on this address (for example 0.0.0.0:9443); off when unset.
    #[arg(long = "webhook-addr", env = "REGCRED_WEBHOOK_ADDR")]
    pub addr: Option<std::net::SocketAddr>,

    /// Serving certificate (PEM) from a file, e.g. mounted from cert-manager; reloaded when it changes. Without
    /// it, regcred creates and rotates its own CA and certificate.
    #[arg(long = "webhook-cert-file", env = "REGCRED_WEBHOOK_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,

    /// Private key (PEM) of --webhook-cert-file.
    #[arg(long = "webhook-key-file", env = "REGCRED_WEBHOOK_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,

    /// Self-managed certificates: the Secret in regcred's namespace that holds them for every replica.
    #[arg(long = "webhook-secret", env = "REGCRED_WEBHOOK_SECRET", default_value = "regcred-webhook-tls")]
    pub secret: String,

    /// Self-managed certificates: the MutatingWebhookConfiguration whose caBundle regcred keeps current.
    #[arg(long = "webhook-configuration", env = "REGCRED_WEBHOOK_CONFIGURATION", default_value = "regcred")]
    pub configuration: String,

    /// Self-managed certificates: host names (or IPs) of the serving certificate, comma-separated. Default:
    /// the Service `regcred` in regcred's namespace.
    #[arg(long = "webhook-dns-names", env = "REGCRED_WEBHOOK_DNS_NAMES", value_delimiter = ',')]
    pub dns_names: Vec<String>,

    /// Self-managed certificates: lifetime of the serving certificate (the CA lives 8 times as long); each is
    /// replaced at two thirds of its life. Units: s, m, h.
    #[arg(long = "webhook-cert-lifetime", env = "REGCRED_WEBHOOK_CERT_LIFETIME", default_value = "2160h", value_parser = parse_lifetime)]
    pub cert_lifetime: std::time::Duration,

    /// How long the apiserver waits for the webhook: the `timeoutSeconds` of the MutatingWebhookConfiguration
    /// (the chart passes its `webhook.timeoutSeconds`). regcred answers a margin before it (--webhook-deadline).
    #[arg(long = "webhook-timeout-seconds", env = "REGCRED_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=30))]
    pub timeout_seconds: u8,

    /// The admission deadline: every admission is answered this long after its request arrived, with the pull
    /// Secrets due and a "not checked" warning for what had not finished. Must be under --webhook-timeout-seconds.
    /// Default: the timeout less 1 s (less half of it under 2 s), the apiserver's own time to call, TLS and
    /// decoding. Units: ms, s.
    #[arg(long = "webhook-deadline", env = "REGCRED_WEBHOOK_DEADLINE", value_parser = parse_deadline)]
    pub deadline: Option<std::time::Duration>,

    /// Image checks at admission (each profile's `imageChecks.mode` applies); `false` turns them off for all.
    #[arg(long = "image-checks", env = "REGCRED_IMAGE_CHECKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub image_checks: bool,

    /// The longest an admission waits for the registry (well inside the webhook's timeout); a check that takes
    /// longer finishes in the background, and the next admission gets its answer. Units: ms, s.
    #[arg(long = "image-check-budget", env = "REGCRED_IMAGE_CHECK_BUDGET", default_value = "2s", value_parser = parse_budget)]
    pub image_check_budget: std::time::Duration,

    /// Images (per credentials) whose check result is kept.
    #[arg(long = "image-check-cache", env = "REGCRED_IMAGE_CHECK_CACHE", default_value_t = 4096)]
    pub image_check_cache: u64,

    /// Registry checks in flight at once, across all admissions; an image that finds no room within its
    /// admission's budget is admitted with a "not checked" warning.
    #[arg(long = "image-check-concurrency", env = "REGCRED_IMAGE_CHECK_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub image_check_concurrency: u16,

    /// Images (and pull Secret names) of one object that are checked; beyond it the object is admitted with a
    /// warning, its pull Secrets still injected, and only the first ones checked.
    #[arg(long = "image-check-max-images", env = "REGCRED_IMAGE_CHECK_MAX_IMAGES", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub image_check_max_images: u16,

    /// Require a client certificate signed by this CA (PEM file) on every connection to the webhook: the
    /// apiserver presents one when its AdmissionConfiguration (`WebhookAdmissionConfiguration`, kubeConfigFile)
    /// gives it one. Anything else, such as a forged AdmissionReview sent straight to the Pod's port, is refused
    /// in the TLS handshake. Reloaded when the file changes.
    #[arg(long = "webhook-client-ca-file", env = "REGCRED_WEBHOOK_CLIENT_CA_FILE")]
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// Options of the credential endpoint the kubelet's image credential provider (`regcred-credential-provider` on
/// the nodes) asks at pull time.
#[derive(Args, Clone, Debug)]
pub struct CredentialProviderArgs {
    /// Serve the credential endpoint over HTTPS on this address (for example 0.0.0.0:8444), with the webhook's
    /// serving certificate and no client certificate; off when unset.
    #[arg(
        id = "credential_provider_addr",
        long = "credential-provider-addr",
        env = "REGCRED_CREDENTIAL_PROVIDER_ADDR"
    )]
    pub addr: Option<std::net::SocketAddr>,

    /// The audience of the ServiceAccount tokens the kubelet sends (its CredentialProviderConfig's
    /// `tokenAttributes.serviceAccountTokenAudience`): tokens for any other are refused, and regcred never mints
    /// its own token for it.
    #[arg(id = "credential_provider_audience", long = "credential-provider-audience", env = "REGCRED_CREDENTIAL_PROVIDER_AUDIENCE", default_value = crate::api::kubelet::DEFAULT_AUDIENCE)]
    pub audience: String,

    /// The longest the kubelet may keep an answer (its `cacheDuration`; shorter for a token near its end): a
    /// deselection or a credential rotation reaches every node within it, plus regcred's watch lag. Units: s, m.
    #[arg(id = "credential_provider_cache_max", long = "credential-provider-cache-max", env = "REGCRED_CREDENTIAL_PROVIDER_CACHE_MAX", default_value = "60s", value_parser = parse_cache_max)]
    pub cache_max: std::time::Duration,

    /// Self-managed certificates: the ConfigMap in regcred's namespace where regcred publishes its CA bundle
    /// (public certificates only, key `ca.crt`) for the nodes' provider to trust. Written only while the endpoint
    /// is on.
    #[arg(
        id = "credential_provider_ca_configmap",
        long = "credential-provider-ca-configmap",
        env = "REGCRED_CREDENTIAL_PROVIDER_CA_CONFIGMAP",
        default_value = "regcred-ca"
    )]
    pub ca_config_map: String,
}

/// A cache bound: whole seconds, between 1 s and 1 h.
fn parse_cache_max(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s) {
        Ok(d) if (1..=3600).contains(&d.as_secs()) && d.subsec_nanos() == 0 => Ok(d),
        Ok(_) => Err(format!("`{s}` is not whole seconds within 1s..1h")),
        Err(e) => Err(e),
    }
}

/// Parses an admission budget such as `500ms` or `2s`: between 10 ms and 25 s (the apiserver allows a webhook 30 s
/// at most).
pub fn parse_budget(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_millis(s)?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(25) {
        return Err(format!("`{s}` is outside 10ms..25s"));
    }
    Ok(d)
}

/// Parses an admission deadline such as `4s` or `3500ms`: under 30 s, the longest `timeoutSeconds`; whether it
/// is under the configured timeout is checked at startup ([`crate::webhook::admission_deadline`]).
pub fn parse_deadline(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_millis(s)?;
    if d >= std::time::Duration::from_secs(30) {
        return Err(format!("`{s}` is not under 30s, the longest webhook timeout"));
    }
    Ok(d)
}

/// A duration in milliseconds (`500ms`) or as [`parse_duration`] reads it (`2s`).
fn parse_millis(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix("ms") {
        Some(ms) => ms
            .parse()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{s}` is not a duration such as 500ms or 2s")),
        None => parse_duration(s),
    }
}

/// Parses a lifetime such as `90s`, `15m` or `2160h`; at least 15 seconds.
pub fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(15) {
        return Err(format!("`{s}` is shorter than 15s"));
    }
    Ok(d)
}

/// A fraction strictly between 0 and 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1 (exclusive), such as 0.66")),
    }
}

/// A socket address, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<std::net::SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not an address such as 0.0.0.0:8080 (or off): {e}"))
}

/// Output format of `regcred check`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A readable report.
    #[default]
    Text,
    /// The report as one JSON document.
    Json,
}

/// Manifest formats `regcred check` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ManifestTypeArg {
    /// Docker image manifest v2 schema 2.
    Docker,
    /// OCI image manifest.
    Oci,
}

/// Options of `regcred check`. Exit status: 0 every check passed; 3 authentication failed; 4 registry
/// unreachable; 5 TLS untrusted; 6 image not found; 7 image too large; 8 unsupported manifest type; 2 bad input;
/// 1 any other error.
#[derive(Args, Clone, Debug)]
pub struct CheckArgs {
    /// Images to check: full references, or relative to --registry / the profile's registry. With --profile and
    /// no image, the profile's probe images.
    pub images: Vec<String>,

    /// Registry host (`host[:port][/path]`); default: the first image's registry, or the profile's.
    #[arg(long)]
    pub registry: Option<String>,

    /// Username; the password is read from standard input (--password-stdin).
    #[arg(long, requires = "password_stdin", conflicts_with_all = ["docker_config", "profile"])]
    pub username: Option<String>,

    /// Read the password (or token) from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Credentials from a Docker config file (`~/.docker/config.json`, or a `.dockerconfigjson`).
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    pub docker_config: Option<std::path::PathBuf>,

    /// Registry, credentials, probe images, validation settings and TLS of this RegistryProfile in the cluster
    /// (kubeconfig as for kubectl).
    #[arg(long)]
    pub profile: Option<String>,

    /// Check the images of the workloads in this manifest (`-`: standard input; Pods, Deployments, StatefulSets,
    /// DaemonSets, ReplicaSets, Jobs, CronJobs, and Lists of them) as admission would: each with the profile in
    /// the cluster that serves it, and the same verdicts.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = ["profile", "username", "docker_config", "registry"])]
    pub manifest: Option<std::path::PathBuf>,

    /// --manifest: the namespace of objects that name none.
    #[arg(long = "manifest-namespace", default_value = "default")]
    pub manifest_namespace: String,

    /// regcred's namespace, where --profile's source Secret lives.
    #[arg(long, env = "REGCRED_NAMESPACE", default_value = "regcred-system")]
    pub namespace: String,

    /// CA certificates (PEM) to trust for the registry, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    pub insecure_skip_verify: bool,

    /// Largest accepted image (config plus layers), as a quantity: 20Gi, 500M.
    #[arg(long, value_parser = parse_quantity)]
    pub max_image_size: Option<u64>,

    /// Accepted manifest formats (repeatable); default both.
    #[arg(long = "manifest-type", value_enum)]
    pub manifest_types: Vec<ManifestTypeArg>,

    /// Platform an image index is resolved to.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub kubelet: KubeletCheckArgs,
}

/// `regcred check --credential-provider NS/SA IMAGE...`: ask regcred's credential endpoint as the kubelet's
/// provider would for a Pod of that ServiceAccount, and say which registry keys it would get (never a password).
#[derive(Args, Clone, Debug)]
pub struct KubeletCheckArgs {
    /// Ask regcred's credential endpoint as this ServiceAccount (`NAMESPACE/NAME`) would, with a token regcred's
    /// audience bound to --pod (the endpoint answers only Pod-bound tokens, as the kubelet sends); needs `create`
    /// on `serviceaccounts/token` there.
    #[arg(long = "credential-provider", value_name = "NAMESPACE/SERVICEACCOUNT", requires = "pod",
        conflicts_with_all = ["profile", "manifest", "username", "docker_config"])]
    pub service_account: Option<String>,

    /// --credential-provider: the Pod (of that ServiceAccount, in that namespace) the token is bound to.
    #[arg(long, requires = "service_account")]
    pub pod: Option<String>,

    /// --credential-provider: regcred's endpoint. The apiserver's service proxy cannot carry the token (the
    /// apiserver consumes the Authorization header), so this is a direct address: the Service's name from inside
    /// the cluster (the default, `https://regcred.NAMESPACE.svc:8444`), a node's or Pod's IP, or a local port
    /// forward.
    #[arg(long = "credential-provider-url", value_name = "URL")]
    pub url: Option<String>,

    /// --credential-provider: the name regcred's serving certificate holds (default `regcred.NAMESPACE.svc`,
    /// NAMESPACE being --namespace), checked whatever address --credential-provider-url names.
    #[arg(long = "credential-provider-server-name", value_name = "NAME")]
    pub server_name: Option<String>,

    /// --credential-provider: the ConfigMap in --namespace holding the CA bundle (`ca.crt`) regcred publishes for
    /// the nodes; --ca-file instead, when given.
    #[arg(long = "credential-provider-ca-configmap", value_name = "NAME", default_value = "regcred-ca")]
    pub ca_config_map: String,

    /// --credential-provider: the audience of the token (the chart's `credentialProvider.audience`).
    #[arg(long = "credential-provider-audience", default_value = crate::api::kubelet::DEFAULT_AUDIENCE)]
    pub audience: String,
}

fn parse_quantity(s: &str) -> Result<u64, String> {
    crate::quantity::parse_size(s).ok_or_else(|| format!("`{s}` is not a size such as 20Gi or 500M"))
}
