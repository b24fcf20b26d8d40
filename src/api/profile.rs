//! `RegistryProfile` (`regcred.dev/v1alpha1`): one registry, where its credentials come from, and which
//! namespaces receive them.
//!
//! Everything that can be checked without looking at the cluster is checked by the apiserver itself
//! (structural schema, patterns and CEL rules), so `kubectl apply` of a bad profile fails with a message that says
//! what to fix. What needs the cluster (a missing source Secret, a name conflict) is reported in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// CEL: `spec.server` in the kubelet's host grammar, in lower case, without a scheme.
const SERVER_RULE: &str = r"!has(self.server) || self.server.matches('^(\\*\\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?(/[a-z0-9]+([._/-][a-z0-9]+)*)?$')";
/// CEL: a port in `spec.server`, when there is one, is 1-65535.
const PORT_RULE: &str = r"!has(self.server) || !self.server.matches('^[^/]*:') || self.server.matches('^[^/:]*:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/.*)?$')";
/// CEL: probe images are references (distribution's grammar) whose repository path is lower case.
const IMAGES_RULE: &str = r"!has(self.images) || self.images.all(i, i.matches('^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$'))";

/// CEL: a probe image that names its registry (a first component with `.` or `:`, or `localhost`) is on
/// `spec.server` (host, port and path prefix, as the kubelet matches them): its credentials are never sent
/// elsewhere. Decided here when `spec.server` is a plain host (no `*.` wildcard, not Docker Hub, whose key also
/// serves other hosts); otherwise at reconcile time (`ImageNotServed`), by the same rule as `registry::serves`.
const PROBE_HOST_RULE: &str = r"!has(self.server) || self.server.contains('*') || self.server.matches('^(docker\\.io|index\\.docker\\.io|registry-1\\.docker\\.io|registry\\.hub\\.docker\\.com)(/|$)') || !has(self.validation) || !has(self.validation.images) || self.validation.images.all(i, !i.matches('^([^/]*[.:][^/]*|localhost)/') || i.lowerAscii().startsWith(self.server.contains('/') ? self.server : self.server + '/'))";

/// A container registry and the namespaces that receive a `kubernetes.io/dockerconfigjson` Secret for it.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "regcred.dev",
    version = "v1alpha1",
    kind = "RegistryProfile",
    plural = "registryprofiles",
    shortname = "rp",
    category = "regcred",
    status = "RegistryProfileStatus",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Registry", type_ = "string", json_path = ".status.registry"),
    printcolumn(name = "Delivery", type_ = "string", json_path = ".spec.delivery", description = "how the credentials reach the kubelet: Secret, CredentialProvider, Both"),
    printcolumn(name = "Synced", type_ = "string", json_path = ".status.syncSummary", description = "selected namespaces served / selected ('provider': by the kubelet's credential provider, no Secret; '+provider': by both)"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Checks", type_ = "string", json_path = ".status.checks", description = "registry preflight: Passed, Failed, Checking (empty: no spec.validation)"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("metadata.name: a RegistryProfile name must be at most 63 characters: it is used as a label value"),
    validation = Rule::new("has(self.spec.secretName) || size(self.metadata.name) <= 55")
        .message("the default secretName 'regcred-<name>' would exceed 63 characters: set spec.secretName or use a shorter name")
        .field_path(".spec.secretName")
)]
#[x_kube(validation = Rule::new("!(self.provider in ['generic', 'acr', 'artifactRegistry', 'ecr']) || has(self.server)")
    .message("server is required for providers generic, acr, artifactRegistry and ecr: they have no default registry host")
    .field_path(".server"))]
#[x_kube(validation = Rule::new("!has(self.credentials.ecr) || self.provider in ['ecr', 'ecrPublic']")
    .message("credentials.ecr needs provider ecr or ecrPublic")
    .field_path(".credentials.ecr"))]
#[x_kube(validation = Rule::new("!has(self.credentials.gcp) || self.provider in ['gcr', 'artifactRegistry']")
    .message("credentials.gcp needs provider gcr or artifactRegistry")
    .field_path(".credentials.gcp"))]
#[x_kube(validation = Rule::new("!has(self.credentials.acr) || self.provider == 'acr'")
    .message("credentials.acr needs provider acr")
    .field_path(".credentials.acr"))]
#[x_kube(validation = Rule::new("!has(self.credentials.quay) || self.provider == 'quay'")
    .message("credentials.quay needs provider quay (with server for a self-hosted Quay)")
    .field_path(".credentials.quay"))]
// The host grammar the kubelet matches (labels, `*.` wildcard, port, path prefix), in lower case: refused when
// applied, so a GitOps sync shows the error rather than a profile that matches nothing.
#[x_kube(validation = Rule::new(SERVER_RULE)
    .message("spec.server must be host[:port][/path] in lower case, without a scheme (for example registry.example.com:5000/team)")
    .field_path(".server"))]
#[x_kube(validation = Rule::new(PROBE_HOST_RULE)
    .message("spec.validation.images: an image naming its registry must be on spec.server, the only registry the profile's credentials are sent to; write it relative to the registry (team/app:1)")
    .field_path(".validation.images"))]
#[x_kube(validation = Rule::new(PORT_RULE)
    .message("spec.server: the port must be between 1 and 65535")
    .field_path(".server"))]
#[serde(rename_all = "camelCase")]
pub struct RegistryProfileSpec {
    /// Registry preset. It fills the default registry host and the key written into the dockerconfigjson
    /// (Docker Hub's key is `https://index.docker.io/v1/`, which the kubelet matches `nginx` or `docker.io/...`
    /// images against).
    #[serde(default)]
    pub provider: Provider,

    /// Registry host, with optional port and path prefix, without scheme: `registry.example.com:5000/team`.
    /// A leading `*.` matches any subdomain, as in the kubelet. Required where the preset has no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server: Option<String>,

    /// Where the credentials come from.
    pub credentials: CredentialSource,

    /// Which namespaces receive the Secret.
    pub namespaces: NamespaceSelection,

    /// Name of the Secret written into every selected namespace. Defaults to `regcred-<profile name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// ServiceAccount mode: ServiceAccounts that also list the Secret in their `imagePullSecrets`, in every
    /// selected namespace, so Pods get it from their ServiceAccount even while the admission webhook is down.
    /// regcred adds and removes only its own entries. With `delivery: CredentialProvider` no ServiceAccount is
    /// patched (there is no Secret to list; entries regcred added before are removed): the names are a filter
    /// instead, and the credential provider answers only Pods running as a ServiceAccount they match. With
    /// `Both`, the named accounts list the Secret and the provider answers only them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountSelection>,

    /// Registry preflight: regcred checks the credentials and probe images against the registry itself (through
    /// the OCI distribution API) on every change, after every token refresh, and every `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,

    /// TLS towards the registry, for the preflight and the image checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,

    /// Image checks at admission: every image from this registry in a Pod or a workload's Pod template
    /// (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) of a selected namespace is resolved with
    /// the profile's credentials when it is created or its images change, against `validation`'s manifest
    /// types, platform and `maxImageSize`. Default: `mode: Warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_checks: Option<ImageChecks>,

    /// Self-healing: what regcred does about a Pod of a selected namespace that the kubelet cannot pull from this
    /// registry (401/403) because it was admitted without the profile's Secret (created while regcred was down,
    /// or before the profile selected its namespace). Default: `mode: Evict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<Healing>,

    /// How the credentials reach the kubelet. `Secret` (default): a dockerconfigjson Secret in every selected
    /// namespace, which the webhook (or ServiceAccount mode) puts in Pods' `imagePullSecrets`.
    /// `CredentialProvider`: no Secret anywhere; the kubelet asks regcred at pull time through its image credential
    /// provider (`regcred-credential-provider` on the node), presenting the Pod's ServiceAccount token, and regcred
    /// answers only for namespaces (and ServiceAccounts) the profile selects. `Both`: the two at once, for migrating
    /// from Secrets to the provider.
    #[serde(default)]
    pub delivery: Delivery,
}

/// How a profile's credentials reach the kubelet.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Delivery {
    /// A dockerconfigjson Secret in every selected namespace.
    #[default]
    Secret,
    /// The kubelet's image credential provider, authorised per ServiceAccount at pull time; no Secret.
    CredentialProvider,
    /// Both, for migration.
    Both,
}

impl Delivery {
    /// Whether Secrets are written (and the webhook and ServiceAccount mode put them in Pods).
    pub fn writes_secrets(self) -> bool {
        matches!(self, Self::Secret | Self::Both)
    }

    /// Whether regcred answers the kubelet's credential provider for the profile.
    pub fn serves_kubelet(self) -> bool {
        matches!(self, Self::CredentialProvider | Self::Both)
    }
}

/// Self-healing of Pods admitted without the profile's Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Healing {
    /// `Evict` (default): a Pod owned by a ReplicaSet, StatefulSet, DaemonSet or Job is evicted through the
    /// Eviction API (PodDisruptionBudgets respected), so its controller re-creates it and the webhook (or its
    /// ServiceAccount) gives the new Pod the Secret; any other Pod gets an Event saying what to do. `Notify`:
    /// Events only. `Off`: nothing. regcred's `--healing` flag (chart `healing.mode`) caps it for every profile.
    #[serde(default)]
    pub mode: HealingMode,
}

/// What self-healing may do.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema,
)]
pub enum HealingMode {
    /// Nothing.
    Off,
    /// Events on the Pod and the profile.
    Notify,
    /// Evict Pods a controller re-creates; Events for the others.
    #[default]
    Evict,
}

/// Image checks at admission.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageChecks {
    /// `Warn` (default): each problem is an admission warning (`kubectl` prints it). `Deny`: a workload whose
    /// image the registry definitely refuses (not found, too large, wrong manifest type, no such platform,
    /// credentials refused) is rejected with the reason; an unreachable or slow registry never rejects, it
    /// only warns. `Off`: no checks.
    #[serde(default)]
    pub mode: ImageCheckMode,
}

/// What an image check does with a problem.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ImageCheckMode {
    #[default]
    Warn,
    Deny,
    Off,
}

/// What the registry preflight checks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.interval) || duration(self.interval) >= duration('60s')")
    .message("spec.validation.interval must be at least 1m: checks do not run more often")
    .field_path(".interval"))]
#[x_kube(validation = Rule::new(IMAGES_RULE)
    .message("spec.validation.images must be image references with a lower-case repository path: team/app:1.0, host/team/app@sha256:...")
    .field_path(".images"))]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// Probe images: relative to the profile's registry (`team/app:1.0`) or full (`host/team/app@sha256:...`).
    /// Without images only the credentials are checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub images: Vec<String>,

    /// Largest accepted image (config plus layers, as the manifest declares), as a quantity: `20Gi`, `500M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"))]
    pub max_image_size: Option<String>,

    /// Accepted image manifest formats: `docker` (Docker v2 schema 2), `oci`; empty accepts both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub manifest_types: Vec<ManifestType>,

    /// Platform an image index (manifest list) is resolved to: `os/arch[/variant]`. Default `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$"))]
    pub platform: Option<String>,

    /// How often the checks run again without a change: `30m`, `1h` (default), at least `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(s|m|h)$"))]
    pub interval: Option<String>,

    /// `Report` (default): a failed check is reported, Secrets are written anyway. `Withhold`: while a check
    /// fails, Secrets are neither created nor updated (existing ones are left as they are).
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Image manifest formats.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ManifestType {
    /// Docker image manifest v2 schema 2.
    Docker,
    /// OCI image manifest.
    Oci,
}

/// What a failed preflight does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum OnFailure {
    #[default]
    Report,
    Withhold,
}

/// TLS towards a private registry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryTls {
    /// CA certificates (PEM) that sign the registry's certificate, trusted in addition to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,

    /// Do not verify the registry's certificate at all. Visible in status; prefer `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Which ServiceAccounts list the Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelection {
    /// ServiceAccount names; `*` matches any run of characters, so `["*"]` means every ServiceAccount.
    #[schemars(
        length(min = 1, max = 64),
        inner(length(min = 1, max = 253), pattern(r"^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$"))
    )]
    pub names: Vec<String>,
}

/// Registry presets.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// Any Docker-compatible registry (Harbor, Nexus, Artifactory, distribution, ...): `server` is required.
    #[default]
    Generic,
    /// Docker Hub (`docker.io`, `index.docker.io`).
    DockerHub,
    /// GitHub Container Registry (`ghcr.io`).
    Ghcr,
    /// Quay (`quay.io`).
    Quay,
    /// Google Container Registry (`gcr.io`, or `us.gcr.io`, `eu.gcr.io`, `asia.gcr.io` as `server`).
    Gcr,
    /// Google Artifact Registry (`LOCATION-docker.pkg.dev`): `server` is required.
    ArtifactRegistry,
    /// AWS Elastic Container Registry (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`): `server` is required.
    Ecr,
    /// AWS ECR Public (`public.ecr.aws`).
    EcrPublic,
    /// Azure Container Registry (`NAME.azurecr.io`): `server` is required.
    Acr,
    /// Microsoft Container Registry (`mcr.microsoft.com`), usually anonymous.
    Mcr,
}

/// Where a profile's credentials come from: exactly one of the fields.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.anonymous) && self.anonymous ? 1 : 0) + (has(self.ecr) ? 1 : 0) + (has(self.gcp) ? 1 : 0) + (has(self.acr) ? 1 : 0) + (has(self.quay) ? 1 : 0) == 1")
    .message("set exactly one credential source: secretRef, ecr, gcp, acr, quay, or anonymous: true"))]
pub struct CredentialSource {
    /// A Secret in regcred's own namespace. Its keys say the credential type: `username` + `password`;
    /// `token` (an OAuth2 or identity token, with an optional `username`); `key.json` (a GCP service-account
    /// key, used as `_json_key`); or `.dockerconfigjson` (imported as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// The registry is used without credentials: no Secret is written, and status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,

    /// Short-lived AWS ECR tokens (12 h), minted once per profile and refreshed before they expire. For
    /// providers `ecr` and `ecrPublic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<EcrTokenSource>,

    /// Short-lived GCP access tokens (1 h), minted once per profile and refreshed before they expire; the
    /// registry user is `oauth2accesstoken`. From a service-account key, GKE Workload Identity (the metadata
    /// server) or Workload Identity Federation (Google STS, optionally impersonating a service account). For
    /// providers `gcr` and `artifactRegistry`. (A key in `secretRef` is instead used directly as the long-lived
    /// `_json_key`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpTokenSource>,

    /// Azure Container Registry refresh tokens (about 3 h), exchanged at the registry's `/oauth2/exchange` for an
    /// Entra ID token from Azure Workload Identity or a service principal; the registry user is
    /// `00000000-0000-0000-0000-000000000000`. For provider `acr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<AcrTokenSource>,

    /// Quay robot tokens (1 h) through robot federation: regcred's own ServiceAccount token, exchanged at the
    /// registry's `/oauth2/federation/robot/token`. For provider `quay` (quay.io, or a self-hosted Quay as
    /// `server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quay: Option<QuayTokenSource>,
}

/// A Secret in regcred's own namespace. There is deliberately no namespace field: a profile can never make
/// regcred read a Secret from anywhere else.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret in regcred's namespace.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// AWS ECR token minting.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.externalId) || has(self.roleArn)")
    .message("externalId is only used with roleArn"))]
pub struct EcrTokenSource {
    /// AWS region to mint in. Defaults to the region in the profile's ECR host; ECR Public always mints in
    /// `us-east-1` (this field is ignored there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// Registry IDs (AWS account numbers) whose registries (in the same region) the token is written for, each
    /// getting its own entry in the Secret; one token serves them all. Defaults to the caller's own registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(pattern(r"^[0-9]{12}$")))]
    pub registry_ids: Vec<String>,

    /// An IAM role to assume before minting (cross-account pulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 20, max = 2048), pattern(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,

    /// The external ID the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,

    /// A Secret in regcred's own namespace with `aws_access_key_id`, `aws_secret_access_key` and optionally
    /// `aws_session_token`. Without it, regcred's own AWS identity is used (environment, web identity / IRSA,
    /// instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// GCP access-token minting: exactly one of `secretRef`, `workloadIdentity` and `externalAccount`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.externalAccount) ? 1 : 0) == 1")
    .message("credentials.gcp: set exactly one of secretRef, workloadIdentity and externalAccount"))]
pub struct GcpTokenSource {
    /// A Secret in regcred's own namespace whose key `key.json` is a service-account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// GKE Workload Identity: tokens of the Google service account regcred's ServiceAccount is bound to
    /// (`iam.gke.io/gcp-service-account`), from the GKE metadata server. No key anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<GkeWorkloadIdentity>,

    /// Workload Identity Federation from any cluster: regcred's own ServiceAccount token is exchanged at Google
    /// STS, then optionally for a service account's token. The fields are those of the credential
    /// configuration `gcloud iam workload-identity-pools create-cred-config` writes; its `credential_source` is
    /// always regcred's own ServiceAccount token (TokenRequest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account: Option<GcpExternalAccount>,
}

/// GKE Workload Identity through the metadata server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GkeWorkloadIdentity {
    /// The metadata server's name for the service account: `default` (the one bound to regcred's
    /// ServiceAccount) unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9@._-]+$"))]
    pub service_account: Option<String>,
}

/// Workload Identity Federation: an external-account credential configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpExternalAccount {
    /// The workload identity provider:
    /// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`
    /// (`AudienceNotAllowed` in any other form).
    #[schemars(length(min = 1, max = 512), pattern(r"^//iam\.googleapis\.com/.+$"))]
    pub audience: String,

    /// The audience of regcred's ServiceAccount token, which the provider's allowed audiences must contain:
    /// `https:` followed by `audience` (the default, the provider's default allowed audience) or `audience`
    /// itself; any other is refused (`AudienceNotAllowed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub token_audience: Option<String>,

    /// A service account to impersonate (`NAME@PROJECT.iam.gserviceaccount.com`). Without it the federated
    /// token itself is used (direct resource access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 253), pattern(r"^[^@\s]+@[^@\s]+$"))]
    pub service_account: Option<String>,

    /// Google STS (`token_url`). Default `https://sts.googleapis.com/v1/token`. Its host must be on the operator's
    /// allow-list of credential endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 512), pattern(r"^https://.+$"))]
    pub token_url: Option<String>,

    /// Where impersonation is asked (`service_account_impersonation_url`). Default:
    /// `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/SERVICE_ACCOUNT:generateAccessToken`.
    /// Its host must be on the operator's allow-list of credential endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 1024), pattern(r"^https://.+$"))]
    pub service_account_impersonation_url: Option<String>,
}

/// Azure Container Registry token minting. Entra ID is asked for a token with Azure Workload Identity (the
/// federated ServiceAccount token) unless `secretRef` names a service principal's secret or certificate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcrTokenSource {
    /// The Entra ID tenant (directory) ID. Default: `AZURE_TENANT_ID` (set by the Azure Workload Identity
    /// webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9][A-Za-z0-9.-]*$"))]
    pub tenant_id: Option<String>,

    /// The application (client) ID of the managed identity or app registration. Default: `AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9][A-Za-z0-9.-]*$"))]
    pub client_id: Option<String>,

    /// The Entra ID authority for sovereign clouds: `https://login.microsoftonline.us/` (US Government),
    /// `https://login.partner.microsoftonline.cn/` (China). Default: `AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com/`. Its host must be on the operator's allow-list of credential
    /// endpoints (`EndpointNotAllowed` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 512), pattern(r"^https://[^/?#]+/?$"))]
    pub authority_host: Option<String>,

    /// The scope of the Entra ID token exchanged at the registry. Default: ACR's own audience in the registry's
    /// cloud (`https://containerregistry.azure.net/.default`; `.azure.us`, `.azure.cn` for the sovereign clouds).
    /// Only these and Azure Resource Manager's (`https://management.azure.com/.default` and its sovereign forms)
    /// are allowed (`AudienceNotAllowed` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(r"^https://.+/\.default$"))]
    pub scope: Option<String>,

    /// A service principal instead of workload identity: a Secret in regcred's own namespace with
    /// `client_secret`, or with `tls.crt` and `tls.key` (a certificate registered on the app and its private
    /// key, RSA, PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// A repository-scoped token: pull access to these repositories only (an ACR access token, about 75 min),
    /// instead of the refresh token's full access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256), pattern(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")))]
    pub repositories: Vec<String>,
}

/// Quay robot federation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuayTokenSource {
    /// The robot account, `ORGANIZATION+NAME`, whose federation trusts regcred's ServiceAccount (issuer: the
    /// cluster's ServiceAccount issuer; subject: `system:serviceaccount:NAMESPACE:NAME`).
    #[schemars(length(min = 3, max = 255), pattern(r"^[a-z0-9_.-]+\+[a-z0-9_]+$"))]
    pub robot: String,

    /// The audience of regcred's ServiceAccount token: the registry host (`quay.io`), the default and the only
    /// value allowed (`AudienceNotAllowed` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub audience: Option<String>,
}

/// Which namespaces receive the Secret. A namespace is selected when the label selector matches it or one of
/// `names` does, and none of `exclude` does. `kube-system`, `kube-public`, `kube-node-lease` and regcred's own
/// namespace are selected only when listed by their exact name in `names`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.selector) || (has(self.names) && size(self.names) > 0)")
    .message("select namespaces with selector (use {} for all) or names"))]
pub struct NamespaceSelection {
    /// Label selector over namespaces; `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Namespace names; `*` matches any run of characters (`team-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), pattern(r"^[a-z0-9*]([-a-z0-9*]*[a-z0-9*])?$")))]
    pub names: Vec<String>,

    /// Namespace names never selected, even when named; `*` globs as in `names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), pattern(r"^[a-z0-9*]([-a-z0-9*]*[a-z0-9*])?$")))]
    pub exclude: Vec<String>,
}

/// Observed state of a profile. Written only by regcred.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryProfileStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `CredentialsResolved` and `SecretsSynced`, in the Kubernetes convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The registry host the profile resolved to (its `server`, or the preset's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,

    /// Number of namespaces the profile selects (0 for anonymous access: nothing is delivered).
    #[serde(default)]
    pub selected_namespaces: i32,

    /// Number of selected namespaces served as `spec.delivery` says: the Secret in place and current (`Secret`,
    /// `Both`); no Secret of the profile left there (`CredentialProvider`).
    #[serde(default)]
    pub synced_namespaces: i32,

    /// Number of selected namespaces where regcred answers the kubelet's credential provider with the profile's
    /// credentials (`delivery` `CredentialProvider` or `Both`; absent for `Secret`). Namespaces another profile's
    /// Secret of the same name holds (`Conflict`) are not answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_provider_namespaces: Option<i32>,

    /// `synced/selected`, for `kubectl get`, followed by ` provider` when the kubelet's credential provider alone
    /// serves them (`CredentialProvider`), ` +provider` when it does beside the Secret (`Both`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_summary: Option<String>,

    /// When the credentials in the Secrets expire (short-lived tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,

    /// When a token was last minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,

    /// When the next token will be minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,

    /// ServiceAccounts that list the Secret because of `serviceAccounts` (ServiceAccount mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<i32>,

    /// Namespaces whose Secret could not be written, and why (at most 20 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<NamespaceFailure>,

    /// The registry preflight overall: `Passed`, `Failed`, or `Checking`; absent without `spec.validation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,

    /// When the registry preflight last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,

    /// What each probe image resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageStatus>,

    /// Recent failures of the kubelet to pull an image from this registry in a selected namespace (the last
    /// hour, newest first, at most 10, at most 3 per namespace). Only failures the Pod's own status confirms,
    /// reported by an Event in the Pod's namespace; counts are the failures regcred observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_failures: Vec<PullFailure>,

    /// Recent failures to pull an image from this registry in namespaces this profile does not select (and no
    /// other profile for the registry selects): Pods that pull without its Secret. Kept apart from
    /// `pullFailures`, which they can never crowd out (the last hour, newest first, at most 3, one per
    /// namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unselected_pull_failures: Vec<PullFailure>,

    /// What self-healing did for Pods admitted without this profile's Secret (the last hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<HealingStatus>,
}

/// Self-healing's recent work for one profile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealingStatus {
    /// Pods evicted in the last hour (their controllers re-created them with the Secret).
    pub evictions: i32,
    /// The latest actions, newest first, at most 10, at most 3 per namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<HealAction>,
}

/// One thing self-healing did about one Pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealAction {
    pub namespace: String,
    pub pod: String,
    pub image: String,
    /// `Evicted`, `Notified` (an Event on the Pod says what to do), or `Blocked` (a PodDisruptionBudget refused
    /// the eviction; tried again later, never forced).
    pub action: String,
    pub message: String,
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// A Pod whose image the kubelet could not pull.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullFailure {
    pub namespace: String,
    pub pod: String,
    pub image: String,
    /// `AuthenticationFailed` (401/403), `ImageNotFound` (404), `RegistryUnreachable`, `TLSUntrusted`, or
    /// `PullFailed`.
    pub reason: String,
    /// The kubelet's message, shortened.
    pub message: String,
    /// Failed pulls of this Pod and image that regcred observed (not the Event's own count).
    pub count: i32,
    pub last_seen: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// One probe image as the registry preflight found it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The full reference checked.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Config plus layers, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The platform an index was resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Why the image failed its check, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One namespace whose Secret could not be written.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    /// The namespace.
    pub namespace: String,
    /// A CamelCase reason, such as `Conflict`.
    pub reason: String,
    /// What happened, for humans.
    pub message: String,
}
