//! The mutating admission webhook: gives each new Pod exactly the pull secrets its images need.
//!
//! The decision ([`decide`]) is a pure function of the Pod's images, its namespace and the profiles. The handler
//! answers from the state layer's shared view; it calls the API only when a Pod lands in a namespace whose Secret
//! does not exist yet (a namespace created a moment ago), and then creates that Secret before answering, so no Pod
//! ever references a missing Secret. The webhook never blocks a Pod for its own sake: anything unexpected
//! means "allowed, unchanged".

pub mod certs;
mod server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::{Client, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::{Instrument, debug, warn};

use crate::api::RegistryProfile;
use crate::registry::reference::{self as image, CredentialKey};
use crate::resolve::Meaning;
use crate::resolve::selection::NamespaceInfo;
use crate::state::View;
pub use server::{Error as ServeError, TlsSource, answer, serve};

/// Label that opts a namespace or a Pod out of injection.
pub const OPT_OUT_LABEL: &str = "regcred.dev/inject";
/// The value of [`OPT_OUT_LABEL`] that opts out.
pub const OPT_OUT_VALUE: &str = "disabled";
/// How long the handler may spend creating a missing Secret: well inside the webhook's timeout.
const ENSURE_TIMEOUT: Duration = Duration::from_secs(3);

/// A profile as the decision sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub profile: String,
    pub secret_name: String,
    pub key: CredentialKey,
    /// Whether the profile selects the Pod's namespace.
    pub selects_namespace: bool,
}

/// Every image of a Pod: containers, init containers and ephemeral containers.
pub fn pod_images(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let containers = spec.containers.iter().map(|c| c.image.clone());
    let init = spec.init_containers.iter().flatten().map(|c| c.image.clone());
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| c.image.clone());
    containers.chain(init).chain(ephemeral).flatten().collect()
}

/// The Secret names to add, in the candidates' order: those of profiles that select the namespace and whose
/// registry serves at least one of the images, minus what the Pod already has. Unparsable images match nothing.
pub fn decide(images: &[String], existing: &[String], candidates: &[Candidate]) -> Vec<String> {
    let parsed: Vec<_> = images.iter().filter_map(|i| image::parse_memo(i)).collect();
    let mut seen: BTreeSet<&str> = existing.iter().map(String::as_str).collect();
    let mut add = Vec::new();
    for c in candidates.iter().filter(|c| c.selects_namespace) {
        if parsed.iter().any(|i| c.key.matches(i)) && seen.insert(c.secret_name.as_str()) {
            add.push(c.secret_name.clone());
        }
    }
    add
}

/// The JSON patch adding `names` to a Pod's `imagePullSecrets`, keeping what is there.
pub fn patch(has_pull_secrets: bool, names: &[String]) -> json_patch::Patch {
    use json_patch::{AddOperation, PatchOperation};
    let entry = |n: &String| serde_json::json!({ "name": n });
    let ops = if has_pull_secrets {
        names
            .iter()
            .map(|n| {
                PatchOperation::Add(AddOperation {
                    path: jsonptr::PointerBuf::from_tokens(["spec", "imagePullSecrets", "-"]),
                    value: entry(n),
                })
            })
            .collect()
    } else {
        vec![PatchOperation::Add(AddOperation {
            path: jsonptr::PointerBuf::from_tokens(["spec", "imagePullSecrets"]),
            value: serde_json::Value::Array(names.iter().map(entry).collect()),
        })]
    };
    json_patch::Patch(ops)
}

/// The profiles that could serve a Pod in `ns`: every profile that writes a Secret (not anonymous, not being
/// deleted), once per registry key its Secret holds. Pure: the meanings are compiled once per profile generation.
pub fn candidates<'a>(meanings: impl IntoIterator<Item = &'a Meaning>, ns: &NamespaceInfo) -> Vec<Candidate> {
    meanings
        .into_iter()
        .filter(|m| m.writes_secret)
        .flat_map(|m| {
            let selects = m.selects(ns);
            m.keys.iter().map(move |(_, key)| Candidate {
                profile: m.name.clone(),
                secret_name: m.secret_name.clone(),
                key: key.clone(),
                selects_namespace: selects,
            })
        })
        .collect()
}

/// Counters and latency of the webhook, registered as metrics (clones share their values).
#[derive(Debug, Clone)]
pub struct Stats {
    pub requests: Counter,
    pub patched: Counter,
    pub malformed: Counter,
    pub secrets_created: Counter,
    pub errors: Counter,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// The listener is bound with its certificate: until then the replica is not ready (`/readyz`), so the
    /// Service never routes an admission to a replica that would refuse the connection.
    pub serving: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: Counter::default(),
            patched: Counter::default(),
            malformed: Counter::default(),
            secrets_created: Counter::default(),
            errors: Counter::default(),
            // 25 µs to ~3.3 s: the handler's microseconds, and the seconds of a new namespace's Secret.
            latency: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
            serving: std::sync::Arc::default(),
        }
    }
}

/// What the handler needs.
pub struct Webhook {
    pub client: Client,
    pub view: View,
    pub operator_namespace: String,
    pub stats: Stats,
}

impl Webhook {
    /// Answers one admission request.
    pub async fn admit(&self, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        self.stats.requests.inc();
        let allowed = AdmissionResponse::from(req);
        if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != Operation::Create {
            return allowed;
        }
        let Some(pod) = req.object.as_ref().and_then(|o| serde_json::to_value(o).ok()) else { return allowed };
        let pod: Pod = match serde_json::from_value(pod) {
            Ok(pod) => pod,
            Err(e) => {
                debug!(error = %e, "not a decodable Pod; allowed unchanged");
                return allowed;
            }
        };
        if pod.labels().get(OPT_OUT_LABEL).is_some_and(|v| v == OPT_OUT_VALUE) {
            return allowed;
        }
        let Some(namespace) = req.namespace.clone().or_else(|| pod.namespace()) else { return allowed };
        // A Pod created from a template has no name yet: its generateName says whose it is.
        let name = pod.metadata.name.as_deref().or(pod.metadata.generate_name.as_deref()).unwrap_or_default();
        let span = tracing::info_span!("admission", namespace = %namespace, pod = %name);
        self.admit_pod(&pod, namespace, allowed, req.dry_run).instrument(span).await
    }

    /// The decision for one Pod in `namespace` (`allowed`: the answer that changes nothing).
    async fn admit_pod(
        &self,
        pod: &Pod,
        namespace: String,
        allowed: AdmissionResponse,
        dry_run: bool,
    ) -> AdmissionResponse {
        let Some(ns) = self.namespace(&namespace).await else { return allowed };
        if ns.labels.get(OPT_OUT_LABEL).is_some_and(|v| v == OPT_OUT_VALUE) {
            return allowed;
        }
        let profiles = self.view.profiles_and_meanings();
        let candidates = candidates(profiles.iter().map(|(_, m)| &**m), &ns);
        let existing: Vec<String> =
            pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect();
        let wanted = decide(&pod_images(pod), &existing, &candidates);
        let mut add = Vec::with_capacity(wanted.len());
        for name in wanted {
            if self.secret_ready(&namespace, &name, &candidates, &profiles, dry_run).await {
                add.push(name);
            }
        }
        if add.is_empty() {
            return allowed;
        }
        match allowed.clone().with_patch(patch(!existing.is_empty(), &add)) {
            Ok(patched) => {
                self.stats.patched.inc();
                debug!(namespace = %namespace, secrets = ?add, "adding imagePullSecrets");
                patched
            }
            Err(e) => {
                self.stats.errors.inc();
                warn!(error = %e, "could not serialise the patch; Pod allowed unchanged");
                allowed
            }
        }
    }

    /// The Pod's namespace, from the cache, or from the API when it is too new to be there yet.
    async fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        if let Some(ns) = self.view.namespace(name) {
            return Some(ns);
        }
        match Api::<Namespace>::all(self.client.clone()).get_metadata_opt(name).await {
            Ok(Some(ns)) => Some(crate::state::namespace_info(&ns)),
            Ok(None) => None,
            Err(e) => {
                self.stats.errors.inc();
                warn!(namespace = name, error = %e, "could not read the Pod's namespace; Pod allowed unchanged");
                None
            }
        }
    }

    /// Whether the Secret `name` is (or has just been made) present in `namespace`. On a dry run nothing is
    /// created: the answer is what the real request would get.
    async fn secret_ready(
        &self,
        namespace: &str,
        name: &str,
        candidates: &[Candidate],
        profiles: &[(Arc<RegistryProfile>, Arc<Meaning>)],
        dry_run: bool,
    ) -> bool {
        if self.view.managed.contains(namespace, name) || dry_run {
            return true;
        }
        let Some(profile) = candidates
            .iter()
            .find(|c| c.secret_name == name)
            .and_then(|c| profiles.iter().find(|(_, m)| m.name == c.profile))
        else {
            return false;
        };
        let ensure = crate::secrets::ensure(&self.client, &self.view, profile.0.clone(), namespace);
        match tokio::time::timeout(ENSURE_TIMEOUT, ensure).await {
            Ok(Ok(())) => {
                self.stats.secrets_created.inc();
                tracing::info!(namespace, secret = name, "Secret created at admission, before the Pod references it");
                true
            }
            Ok(Err(e)) => {
                warn!(namespace, secret = name, error = %e, "Secret missing and not creatable; not referenced");
                false
            }
            Err(_) => {
                warn!(namespace, secret = name, "creating the missing Secret timed out; not referenced");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(profile: &str, key: &str, selects: bool) -> Candidate {
        Candidate {
            profile: profile.into(),
            secret_name: format!("regcred-{profile}"),
            key: CredentialKey::parse(key),
            selects_namespace: selects,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn profile(name: &str, spec: serde_json::Value) -> Arc<RegistryProfile> {
        let mut p: RegistryProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "regcred.dev/v1alpha1", "kind": "RegistryProfile",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        p.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(p)
    }

    #[test]
    fn every_profile_that_writes_a_secret_is_a_candidate_under_each_of_its_keys() {
        let all = serde_json::json!({"names": ["*"]});
        let profiles = [
            profile(
                "static",
                serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "c"}}, "namespaces": all}),
            ),
            profile(
                "anon",
                serde_json::json!({"provider": "mcr", "credentials": {"anonymous": true}, "namespaces": all}),
            ),
            profile(
                "gcp",
                serde_json::json!({"provider": "gcr", "credentials": {"gcp": {"secretRef": {"name": "k"}}}, "namespaces": all}),
            ),
            profile(
                "ecr",
                serde_json::json!({
                    "provider": "ecr", "server": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                    "credentials": {"ecr": {"registryIds": ["111111111111", "222222222222"]}}, "namespaces": all,
                }),
            ),
        ];
        let ns =
            NamespaceInfo { name: "shop".into(), labels: std::collections::BTreeMap::default(), terminating: false };
        let meanings: Vec<Meaning> = profiles.iter().map(|p| Meaning::of(p, "regcred-system")).collect();
        let got: Vec<(String, String)> =
            candidates(&meanings, &ns).into_iter().map(|c| (c.profile, c.secret_name)).collect();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["static", "gcp", "ecr", "ecr"]);
        let images =
            s(&["222222222222.dkr.ecr.eu-west-1.amazonaws.com/team/app:1", "gcr.io/proj/img", "mcr.microsoft.com/x"]);
        let add = decide(&images, &[], &candidates(&meanings, &ns));
        assert_eq!(add, s(&["regcred-gcp", "regcred-ecr"]));
    }

    #[test]
    fn the_decision_adds_exactly_the_matching_selected_profiles() {
        let candidates = [
            candidate("hub", "https://index.docker.io/v1/", true),
            candidate("ghcr", "ghcr.io/org", true),
            candidate("quay", "quay.io", false),
            candidate("local", "localhost:5000", true),
        ];
        let cases: Vec<(Vec<String>, Vec<String>, Vec<String>)> = vec![
            (s(&["nginx"]), vec![], s(&["regcred-hub"])),
            (s(&["ghcr.io/org/app", "nginx:1"]), vec![], s(&["regcred-hub", "regcred-ghcr"])),
            (s(&["ghcr.io/other/app"]), vec![], vec![]),
            // Not selected: nothing, even though the registry matches.
            (s(&["quay.io/a/b"]), vec![], vec![]),
            // Existing secrets stay, and are never duplicated.
            (s(&["nginx"]), s(&["regcred-hub"]), vec![]),
            (s(&["nginx"]), s(&["mine"]), s(&["regcred-hub"])),
            // Unparsable images neither match nor fail.
            (s(&["Not A Valid Image", "localhost:5000/x"]), vec![], s(&["regcred-local"])),
            (vec![], vec![], vec![]),
        ];
        for (images, existing, want) in cases {
            assert_eq!(decide(&images, &existing, &candidates), want, "{images:?} {existing:?}");
        }
    }

    #[test]
    fn patches_create_or_append() {
        let fresh = serde_json::to_value(patch(false, &s(&["a", "b"]))).unwrap();
        assert_eq!(
            fresh,
            serde_json::json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "a"}, {"name": "b"}]}])
        );
        let append = serde_json::to_value(patch(true, &s(&["a"]))).unwrap();
        assert_eq!(
            append,
            serde_json::json!([{"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "a"}}])
        );
    }

    #[test]
    fn every_image_of_a_pod_counts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [{"name": "a", "image": "nginx"}, {"name": "b"}],
                "initContainers": [{"name": "i", "image": "ghcr.io/org/init"}],
                "ephemeralContainers": [{"name": "e", "image": "busybox"}],
            }
        }))
        .unwrap();
        assert_eq!(pod_images(&pod), s(&["nginx", "ghcr.io/org/init", "busybox"]));
    }
}
