//! The mutating admission webhook: gives each new Pod exactly the pull secrets its images need.
//!
//! The decision ([`decide`]) is a pure function of the Pod's images, its namespace and the profiles. The handler
//! answers from the state layer's shared view; it calls the API only when a Pod lands in a namespace whose Secret
//! does not exist yet (a namespace created a moment ago), and then creates that Secret before answering, so no Pod
//! ever references a missing Secret. The webhook never blocks a Pod for its own sake: anything unexpected
//! means "allowed, unchanged".
//!
//! Every admission is answered by its deadline ([`deadline`]), a margin under the apiserver's `timeoutSeconds`:
//! the injection never waits for the image checks, the checks and pull Secret lookups that have not finished by
//! then become "not checked" warnings, and a Secret still being created is not referenced.

pub mod certs;
pub mod deadline;
pub mod review;
mod server;
mod stats;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use kube::core::admission::Operation;
use tokio::sync::watch;
use tracing::{Instrument, debug, warn};

use crate::api::RegistryProfile;
use crate::images::{self, Checker};
use crate::registry::reference::{self as image, CredentialKey};
use crate::resolve::Meaning;
use crate::resolve::selection::NamespaceInfo;
use crate::state::View;
pub use deadline::admission_deadline;
pub use review::{Request, Response};
pub use server::{CA_KEY, Error as ServeError, Tls, TlsSource, answer, serve, tls};
pub use stats::Stats;

pub use crate::api::{OPT_OUT_LABEL, OPT_OUT_VALUE};
/// Images (and pull Secret names) of one object checked by default (`--image-check-max-images`).
pub const MAX_IMAGES: usize = 50;
/// Pull Secret lookups of one admission in flight at once.
const SECRET_LOOKUPS: usize = 8;
/// The admission deadline of a webhook configured with the chart's default `timeoutSeconds` (5 s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(4);

/// A profile as the decision sees it, borrowed from its compiled meaning (read once per admission).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub profile: &'a str,
    pub secret_name: &'a str,
    pub key: &'a CredentialKey,
    /// Whether the profile selects the Pod's namespace.
    pub selects_namespace: bool,
}

/// The Secret names to add, in the candidates' order: those of profiles that select the namespace and whose
/// registry serves at least one of the images, minus what the Pod already has. Unparsable images match nothing.
pub fn decide(images: &[String], existing: &[String], candidates: &[Candidate<'_>]) -> Vec<String> {
    let serving = serving(images, candidates);
    let mut seen: BTreeSet<&str> = existing.iter().map(String::as_str).collect();
    serving.into_iter().filter(|c| seen.insert(c.secret_name)).map(|c| c.secret_name.to_owned()).collect()
}

/// The candidates that select the namespace and serve at least one of `images`: the only profiles whose Secret a
/// Pod with these images in this namespace may be given.
pub fn serving<'c, 'a>(images: &[String], candidates: &'c [Candidate<'a>]) -> Vec<&'c Candidate<'a>> {
    let parsed: Vec<_> = images.iter().filter_map(|i| image::parse_memo(i)).collect();
    candidates.iter().filter(|c| c.selects_namespace && parsed.iter().any(|i| c.key.matches(i))).collect()
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

/// The profiles that could serve a Pod in `ns`: every profile that writes a Secret (see
/// [`crate::resolve::writes_secret`]: its `spec.delivery` is not `CredentialProvider`, it is not anonymous nor being
/// deleted), once per registry key its Secret holds. A profile delivered by the kubelet's credential provider alone
/// gets nothing injected: its images are still checked at admission. Pure: the meanings are compiled once per profile generation.
pub fn candidates<'a>(meanings: impl IntoIterator<Item = &'a Meaning>, ns: &NamespaceInfo) -> Vec<Candidate<'a>> {
    meanings
        .into_iter()
        .filter(|m| m.writes_secret)
        .flat_map(|m| {
            let selects = m.selects(ns);
            m.keys.iter().map(move |(_, key)| Candidate {
                profile: &m.name,
                secret_name: &m.secret_name,
                key,
                selects_namespace: selects,
            })
        })
        .collect()
}

/// What the handler needs.
pub struct Webhook {
    pub client: Client,
    pub view: View,
    pub operator_namespace: String,
    pub stats: Stats,
    /// Image checks at admission; `None` turns them off for every profile.
    pub checker: Option<Arc<Checker>>,
    /// Whether a pull Secret a workload names exists, by namespace and name, for a short while.
    pub known_secrets: moka::future::Cache<(String, String), bool>,
    /// Images and pull Secret names of one object that are checked (see [`images::capped`]).
    pub max_images: usize,
    /// Every admission is answered this long after its request arrived ([`deadline`]).
    pub deadline: Duration,
}

/// How long the webhook trusts what it learnt of a pull Secret's existence.
const KNOWN_SECRET_LIFETIME: Duration = Duration::from_secs(30);

/// The cache of [`Webhook::known_secrets`].
pub fn known_secrets() -> moka::future::Cache<(String, String), bool> {
    moka::future::Cache::builder().max_capacity(4096).time_to_live(KNOWN_SECRET_LIFETIME).build()
}

impl Webhook {
    /// The handler as `args` configure it; `Err` when the deadline is not under the timeout.
    pub fn new(
        client: Client,
        view: View,
        operator_namespace: &str,
        args: &crate::config::WebhookArgs,
    ) -> Result<Self, String> {
        let deadline = admission_deadline(args.timeout_seconds, args.deadline)?;
        if args.image_checks && args.image_check_budget + deadline::ANSWER_RESERVE >= deadline {
            warn!(
                budget_ms = args.image_check_budget.as_millis(),
                deadline_ms = deadline.as_millis(),
                "the image-check budget does not end before the admission deadline: checks are cut at the deadline"
            );
        }
        let stats = Stats::default();
        let checker = args.image_checks.then(|| {
            Arc::new(Checker::new(
                args.image_check_budget,
                args.image_check_cache,
                usize::from(args.image_check_concurrency),
                stats.image_checks.clone(),
            ))
        });
        Ok(Self {
            client,
            view,
            operator_namespace: operator_namespace.to_owned(),
            stats,
            checker,
            known_secrets: known_secrets(),
            max_images: usize::from(args.image_check_max_images),
            deadline,
        })
    }

    /// Whether this replica's webhook listens (its listener bound with its certificate), as it changes.
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.stats.serving.subscribe()
    }

    /// Answers one admission request that arrived now: see [`Webhook::admit_by`].
    pub async fn admit(&self, req: &Request) -> Response {
        self.admit_by(req, deadline::work_until(tokio::time::Instant::now(), self.deadline)).await
    }

    /// Answers one admission request, waiting for nothing past `until` (its deadline less the time to answer):
    /// Pods get their pull Secrets at creation, and Pods and workloads have their new images checked on creation
    /// and update. The object is read as it was decoded with the review, once.
    pub async fn admit_by(&self, req: &Request, until: tokio::time::Instant) -> Response {
        self.stats.requests.inc();
        let allowed = Response::allow(req);
        let (group, kind) = (req.kind.group.as_str(), req.kind.kind.as_str());
        if !images::is_checked_kind(group, kind) || !matches!(req.operation, Operation::Create | Operation::Update) {
            return allowed;
        }
        let Some(object) = req.object.as_ref() else { return allowed };
        if object.label(OPT_OUT_LABEL) == Some(OPT_OUT_VALUE) {
            return allowed;
        }
        let Some(namespace) = req.namespace.clone().or_else(|| object.metadata.namespace.clone()) else {
            return allowed;
        };
        // A Pod created from a template has no name yet: its generateName says whose it is.
        let name = object.metadata.name.as_deref().or(object.metadata.generate_name.as_deref()).unwrap_or_default();
        // At debug only: a span per admission at info cost more than the decision (its fields formatted as JSON
        // into the registry for every request, logged or not), and the few events of an admission name its
        // namespace themselves.
        let span = tracing::debug_span!("admission", namespace = %namespace, kind, name = %name);
        async {
            let Some(ns) = self.namespace(&namespace, until).await else { return allowed };
            if ns.labels.get(OPT_OUT_LABEL).is_some_and(|v| v == OPT_OUT_VALUE) {
                return allowed;
            }
            let Some(spec) = images::pod_spec(group, kind, &object.data) else { return allowed };
            let admission = Admission {
                update: req.operation == Operation::Update,
                spec,
                old_spec: req.old_object.as_ref().and_then(|o| images::pod_spec(group, kind, &o.data)),
                ns: &ns,
                profiles: self.view.profiles_and_meanings(),
                dry_run: req.dry_run,
                until,
            };
            let pod_created = kind == "Pod" && req.operation == Operation::Create;
            self.answer(&admission, pod_created, allowed).await
        }
        .instrument(span)
        .await
    }

    /// The injection (for a Pod being created) and the image checks of one admission, side by side, neither
    /// waiting past its deadline: the injection is decided from the cached view, and only a Secret being created
    /// for a brand-new namespace takes time. The outer limit on the checks is a backstop; each of their waits has
    /// the deadline already.
    async fn answer(&self, a: &Admission<'_>, pod_created: bool, allowed: Response) -> Response {
        let inject = async { if pod_created { self.admit_pod(a, allowed.clone()).await } else { allowed.clone() } };
        let checks = async {
            let checked = tokio::time::timeout_at(a.until, self.check_images(a)).await;
            checked.unwrap_or_else(|_| {
                self.stats.checks_cut.inc();
                let why = "regcred's image checks did not finish by the admission's deadline; not checked";
                images::Answer { warnings: vec![why.to_owned()], denied: None }
            })
        };
        let (response, answer) = futures::join!(inject, checks);
        self.with_answer(response, allowed, answer)
    }

    /// `response` with the image checks' warnings, or their rejection (from `allowed`, without a patch).
    fn with_answer(&self, response: Response, allowed: Response, answer: images::Answer) -> Response {
        self.stats.image_warnings.inc_by(answer.warnings.len() as u64);
        let mut response = match answer.denied {
            Some(reason) => {
                self.stats.image_denials.inc();
                allowed.deny(reason)
            }
            None => response,
        };
        response.warnings.extend(answer.warnings);
        response
    }

    /// The image checks of one admission: the images new to the object, checked with the profiles that serve
    /// them, and the pull Secrets it names that do not exist.
    async fn check_images(&self, a: &Admission<'_>) -> images::Answer {
        let Some(checker) = &self.checker else { return images::Answer::default() };
        let Some((wanted, named, warnings)) = self.to_check(a) else { return images::Answer::default() };
        let (mut resolved, targets) = self.findings(a, &wanted);
        let started = tokio::time::Instant::now();
        let lookups = self.missing_secrets(&named, a);
        let ((outcomes, cut), (missing, unchecked)) =
            futures::join!(checker.check_until(targets, Some(a.until)), lookups);
        let mut outcomes = outcomes.into_iter();
        for (finding, outcome) in &mut resolved {
            if matches!(finding, images::Finding::Check { .. }) && outcome.is_none() {
                *outcome = outcomes.next();
            }
        }
        let mut answer = images::answer(&resolved, &missing, &a.ns.name);
        self.not_checked(&mut answer, cut, &unchecked, a.until.saturating_duration_since(started));
        // First: the apiserver may cut a long list of warnings short.
        answer.warnings.splice(0..0, warnings);
        answer
    }

    /// The images to check (on an update, only those the object did not have) and the pull Secret names it
    /// lists, each up to [`Webhook::max_images`], with the warnings that say what the cap left out. `None`: an
    /// update that adds no image, nothing to check.
    fn to_check(&self, a: &Admission<'_>) -> Option<(Vec<String>, Vec<String>, Vec<String>)> {
        let mut wanted = images::images_of(a.spec);
        if a.update {
            wanted = images::added(wanted, &a.old_spec.map(images::images_of).unwrap_or_default());
            if wanted.is_empty() {
                return None;
            }
        }
        // Only the first images and pull Secret names are checked: the rest costs no request, and says so.
        let mut warnings = Vec::new();
        let (wanted, over) = images::capped(wanted, self.max_images);
        if over > 0 {
            warnings.push(images::over_cap_warning("images", self.max_images, over));
        }
        let (named, over_named) = images::capped(images::pull_secrets_of(a.spec), self.max_images);
        if over_named > 0 {
            warnings.push(images::over_cap_warning("pull Secret names", self.max_images, over_named));
        }
        if !warnings.is_empty() {
            self.stats.over_cap.inc();
        }
        Some((wanted, named, warnings))
    }

    /// What each of `wanted` calls for (see [`images::findings`]), with an outcome already for those that cannot be
    /// checked; and the targets to resolve for the others, in their order.
    fn findings(
        &self,
        a: &Admission<'_>,
        wanted: &[String],
    ) -> (Vec<(images::Finding, Option<images::Outcome>)>, Vec<images::Lookup>) {
        let now = jiff::Timestamp::now();
        let mut targets = Vec::new();
        let resolved = images::findings(wanted, &a.profiles, a.ns)
            .into_iter()
            .map(|finding| {
                let outcome = match &finding {
                    images::Finding::Check { image, profile, key, .. } => {
                        match self.target(&a.profiles, profile, key, image, now) {
                            Ok(target) => {
                                targets.push(target);
                                None
                            }
                            Err(why) => Some(images::Outcome::NotChecked(why)),
                        }
                    }
                    images::Finding::NotSelected { .. } => None,
                };
                (finding, outcome)
            })
            .collect();
        (resolved, targets)
    }

    /// Says in `answer` what the deadline cut (`cut` images, the pull Secrets `unchecked` after `waited`), and
    /// counts it.
    fn not_checked(&self, answer: &mut images::Answer, cut: usize, unchecked: &[String], waited: Duration) {
        if !unchecked.is_empty() {
            let why = format!(
                "the apiserver did not answer regcred's lookup within {} ms, when the admission's deadline came",
                waited.as_millis()
            );
            answer.warnings.extend(unchecked.iter().map(|name| images::secret_not_checked(name, &why)));
        }
        if cut > 0 || !unchecked.is_empty() {
            self.stats.checks_cut.inc();
            debug!(images = cut, secrets = unchecked.len(), "checks cut by the admission deadline: not checked");
        }
    }

    /// What to resolve `image` with, for `profile` (see [`images::target`]). `Err`: why it cannot be checked.
    fn target(
        &self,
        profiles: &[(Arc<RegistryProfile>, Arc<Meaning>)],
        profile: &str,
        key: &str,
        image: &str,
        now: jiff::Timestamp,
    ) -> Result<images::Lookup, String> {
        let Some((p, m)) = profiles.iter().find(|(_, m)| m.name == profile) else {
            return Err("the profile is gone".into());
        };
        let snapshot = self.view.refresher().peek(&m.name);
        images::target(p, m, &self.view, snapshot.as_ref(), key, image, now)
    }

    /// The pull Secrets of `names` that do not exist in the admission's namespace, and those whose lookup had not
    /// answered by its deadline. regcred's own (those of profiles that may write into the namespace, see
    /// [`Meaning::may_write`]) are never missing: the webhook creates them before a Pod references them. Others
    /// are looked up (metadata only), and what is learnt is kept for a short while.
    async fn missing_secrets(&self, names: &[String], a: &Admission<'_>) -> (Vec<String>, Vec<String>) {
        let namespace = a.ns.name.as_str();
        let meanings = || a.profiles.iter().map(|(_, m)| &**m);
        let ours =
            |name: &str| meanings().any(|m| m.secret_name == name && m.may_write_secret(a.ns, meanings()).is_ok());
        let unknown: Vec<String> = names
            .iter()
            .filter(|name| !self.view.managed().contains(namespace, name) && !ours(name))
            .cloned()
            .collect();
        // A few lookups at once, none past the admission's deadline: what has not answered by then is "not
        // checked", never silently taken to exist or not.
        let found: Vec<(String, Option<bool>)> = futures::stream::iter(unknown)
            .map(|name| async move {
                let exists = tokio::time::timeout_at(a.until, self.secret_exists(namespace, &name)).await.ok();
                (name, exists)
            })
            .buffered(SECRET_LOOKUPS)
            .collect()
            .await;
        let mut missing = Vec::new();
        let mut unchecked = Vec::new();
        for (name, exists) in found {
            match exists {
                Some(true) => {}
                Some(false) => missing.push(name),
                None => unchecked.push(name),
            }
        }
        (missing, unchecked)
    }

    /// The pull Secrets for one new Pod (`allowed`: the answer that changes nothing).
    async fn admit_pod(&self, a: &Admission<'_>, allowed: Response) -> Response {
        let candidates = candidates(a.profiles.iter().map(|(_, m)| &**m), a.ns);
        let existing = images::pull_secrets_of(a.spec);
        let images = images::images_of(a.spec);
        let wanted = decide(&images, &existing, &candidates);
        let serving = serving(&images, &candidates);
        // Each Secret at the same time: those the cached view holds at once, one being created by the deadline.
        let ready = futures::future::join_all(wanted.iter().map(|name| self.secret_ready(a, name, &serving))).await;
        let add: Vec<String> = wanted.into_iter().zip(ready).filter(|(_, ready)| *ready).map(|(n, _)| n).collect();
        if add.is_empty() {
            return allowed;
        }
        match allowed.clone().with_patch(&patch(!existing.is_empty(), &add)) {
            Ok(patched) => {
                self.stats.patched.inc();
                debug!(namespace = %a.ns.name, secrets = ?add, "adding imagePullSecrets");
                patched
            }
            Err(e) => {
                self.stats.errors.inc();
                warn!(namespace = %a.ns.name, error = %e, "could not serialise the patch; Pod allowed unchanged");
                allowed
            }
        }
    }

    /// The Pod's namespace, from the cache, or from the API (by `until`) when it is too new to be there yet.
    async fn namespace(&self, name: &str, until: tokio::time::Instant) -> Option<NamespaceInfo> {
        if let Some(ns) = self.view.namespace(name) {
            return Some(ns);
        }
        let api = Api::<Namespace>::all(self.client.clone());
        match tokio::time::timeout_at(until, api.get_metadata_opt(name)).await {
            Ok(Ok(Some(ns))) => Some(crate::state::namespace_info(&ns)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                self.stats.errors.inc();
                warn!(namespace = name, error = %e, "could not read the Pod's namespace; Pod allowed unchanged");
                None
            }
            Err(_) => {
                self.stats.injections_cut.inc();
                warn!(
                    namespace = name,
                    "the Pod's namespace lookup did not answer by the admission deadline; allowed unchanged"
                );
                None
            }
        }
    }

    /// Whether the Secret `name` exists in `namespace`, as last learnt or looked up now (metadata only). When the
    /// API answers with an error, it is taken to exist: no warning rather than a wrong one. The caller bounds the
    /// wait.
    async fn secret_exists(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(known) = self.known_secrets.get(&key).await {
            return known;
        }
        let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), namespace);
        match api.get_metadata_opt(name).await {
            Ok(found) => {
                self.known_secrets.insert(key, found.is_some()).await;
                found.is_some()
            }
            Err(e) => {
                debug!(namespace, secret = name, error = %e, "could not look up a pull Secret");
                true
            }
        }
    }

    /// Whether the Secret `name` is (or has just been made) present in the admission's namespace. Only a profile
    /// that selects the namespace, serves one of the Pod's images (`serving`) and writes under `name` may make it;
    /// the writer checks the same rule again. On a dry run nothing is created: the answer is what the real request
    /// would get. A Secret not made by the deadline is not referenced (the controller's new-namespace path goes
    /// on).
    async fn secret_ready(&self, a: &Admission<'_>, name: &str, serving: &[&Candidate<'_>]) -> bool {
        let namespace = a.ns.name.as_str();
        if self.view.managed().contains(namespace, name) || a.dry_run {
            return true;
        }
        let Some(profile) = serving
            .iter()
            .find(|c| c.secret_name == name && c.selects_namespace)
            .and_then(|c| a.profiles.iter().find(|(_, m)| m.name == c.profile))
        else {
            return false;
        };
        // `ensure` also returns when another writer (the controller's new-namespace path) is making the Secret:
        // the Pod must not name it before that write has landed, and that writer says when it is done.
        let ensure = async {
            crate::secrets::ensure(&self.client, &self.view, profile.0.clone(), a.ns).await?;
            Ok::<bool, crate::secrets::EnsureError>(self.view.managed().settled(namespace, name).await)
        };
        match tokio::time::timeout_at(a.until, ensure).await {
            Ok(Ok(true)) => {
                self.stats.secrets_created.inc();
                tracing::info!(namespace, secret = name, "Secret created at admission, before the Pod references it");
                true
            }
            Ok(Ok(false)) => {
                warn!(namespace, secret = name, "the Secret's write did not land; not referenced");
                false
            }
            Ok(Err(e)) => {
                warn!(namespace, secret = name, error = %e, "Secret missing and not creatable; not referenced");
                false
            }
            Err(_) => {
                self.stats.injections_cut.inc();
                warn!(
                    namespace,
                    secret = name,
                    "the missing Secret was not made by the admission deadline; not referenced"
                );
                false
            }
        }
    }
}

/// One admission, as its answer is worked out: the object's Pod spec (as decoded with the review), the
/// namespace, the profiles (read once), and the deadline.
struct Admission<'a> {
    /// An UPDATE: only images the old object did not have are checked.
    update: bool,
    spec: &'a serde_json::Value,
    /// The Pod spec of the object before an UPDATE.
    old_spec: Option<&'a serde_json::Value>,
    ns: &'a NamespaceInfo,
    profiles: Vec<(Arc<RegistryProfile>, Arc<Meaning>)>,
    dry_run: bool,
    /// Nothing is waited for past this: the deadline less the time to answer.
    until: tokio::time::Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate's profile, Secret name, key and whether it selects the namespace, owned by the test.
    struct Owned(String, String, CredentialKey, bool);

    fn candidate(profile: &str, key: &str, selects: bool) -> Owned {
        Owned(profile.into(), format!("regcred-{profile}"), CredentialKey::parse(key), selects)
    }

    fn borrowed(owned: &[Owned]) -> Vec<Candidate<'_>> {
        owned
            .iter()
            .map(|o| Candidate { profile: &o.0, secret_name: &o.1, key: &o.2, selects_namespace: o.3 })
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn profile(name: &str, spec: serde_json::Value) -> Arc<RegistryProfile> {
        Arc::new(crate::fixtures::profile(name, spec))
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
            // Delivered by the kubelet's credential provider alone: nothing to inject; alongside Secrets: injected.
            profile(
                "provider",
                serde_json::json!({"server": "p.example.com", "credentials": {"secretRef": {"name": "c"}},
                    "namespaces": all, "delivery": "CredentialProvider"}),
            ),
            profile(
                "both",
                serde_json::json!({"server": "b.example.com", "credentials": {"secretRef": {"name": "c"}},
                    "namespaces": all, "delivery": "Both"}),
            ),
        ];
        let ns =
            NamespaceInfo { name: "shop".into(), labels: std::collections::BTreeMap::default(), terminating: false };
        let meanings: Vec<Meaning> = profiles.iter().map(|p| Meaning::of(p, "regcred-system")).collect();
        let got: Vec<(String, String)> =
            candidates(&meanings, &ns).into_iter().map(|c| (c.profile.to_owned(), c.secret_name.to_owned())).collect();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["static", "gcp", "ecr", "ecr", "both"]);
        let images = s(&[
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com/team/app:1",
            "gcr.io/proj/img",
            "mcr.microsoft.com/x",
            "p.example.com/app:1",
            "b.example.com/app:1",
        ]);
        let add = decide(&images, &[], &candidates(&meanings, &ns));
        assert_eq!(add, s(&["regcred-gcp", "regcred-ecr", "regcred-both"]));
    }

    #[test]
    fn the_decision_adds_exactly_the_matching_selected_profiles() {
        let owned = [
            candidate("hub", "https://index.docker.io/v1/", true),
            candidate("ghcr", "ghcr.io/org", true),
            candidate("quay", "quay.io", false),
            candidate("local", "localhost:5000", true),
        ];
        let candidates = borrowed(&owned);
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
}
