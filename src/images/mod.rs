//! Image checks at admission, and the kubelet's pull failures: no surprise `ImagePullBackOff`.
//!
//! When a Pod or a workload's Pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) is
//! created, or its images change, every new image from a profile's registry in a namespace the profile selects
//! is resolved with that profile's credentials through the OCI distribution API (the preflight's client), against
//! the profile's `validation` (manifest types, platform, `maxImageSize`). What users see is one admission warning
//! per problem; a profile in `Deny` mode rejects on the registry's definite answer.
//!
//! The parts: which images to check and with whom ([`plan`]), what an answer means ([`Outcome`]) and how it is
//! phrased ([`answer`]): all pure. The registry is asked by the [`Checker`], through a bounded cache keyed by the
//! credentials and the image, within a time budget per admission. [`pulls`] reads the kubelet's pull failures, trusting only what the Pods' own
//! status confirms, within the bounds of a [`limit::Limiter`] per namespace; [`heal`] decides what a confirmed failure of a Pod admitted
//! without the Secret calls for (an eviction, or an Event), and keeps it from looping.

mod checker;
pub mod heal;
pub mod limit;
pub mod pulls;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

pub use checker::{CheckStats, Checker, Lookup, lifetime};

use crate::api::{ImageCheckMode, RegistryProfile};
use crate::registry::preflight::{Failure, ImageResult, Reason};
use crate::registry::reference as image;
use crate::resolve::Meaning;
use crate::resolve::selection::NamespaceInfo;

/// The longest text regcred passes on in characters: a warning line (the apiserver may truncate longer ones), a
/// kubelet's message in status or an Event. See [`shorten`].
pub const MAX_MESSAGE: usize = 256;

/// The workload kinds whose Pod template is checked, by API group, with where the Pod spec sits in each.
const TEMPLATES: [(&str, &str, &str); 7] = [
    ("", "Pod", "/spec"),
    ("apps", "Deployment", "/spec/template/spec"),
    ("apps", "StatefulSet", "/spec/template/spec"),
    ("apps", "DaemonSet", "/spec/template/spec"),
    ("apps", "ReplicaSet", "/spec/template/spec"),
    ("batch", "Job", "/spec/template/spec"),
    ("batch", "CronJob", "/spec/jobTemplate/spec/template/spec"),
];

/// The Pod spec of a checked kind's object: a Pod's `spec`, a workload's Pod template's. `None` for any other
/// kind.
pub fn pod_spec<'a>(group: &str, kind: &str, object: &'a Value) -> Option<&'a Value> {
    let (_, _, pointer) = TEMPLATES.iter().find(|(g, k, _)| *g == group && *k == kind)?;
    object.pointer(pointer)
}

/// Whether objects of this group and kind are checked.
pub fn is_checked_kind(group: &str, kind: &str) -> bool {
    TEMPLATES.iter().any(|(g, k, _)| *g == group && *k == kind)
}

/// Every image of a Pod spec (containers, init containers, ephemeral containers), each once, in order.
pub fn images_of(spec: &Value) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec.get(field)?.as_array())
        .flatten()
        .filter_map(|c| c.get("image")?.as_str())
        .filter(|i| !i.is_empty() && seen.insert(*i))
        .map(str::to_owned)
        .collect()
}

/// The Secret names a Pod spec's `imagePullSecrets` lists.
pub fn pull_secrets_of(spec: &Value) -> Vec<String> {
    let entries = spec.get("imagePullSecrets").and_then(Value::as_array);
    entries.into_iter().flatten().filter_map(|r| r.get("name")?.as_str()).map(str::to_owned).collect()
}

/// The images of `new` that `old` (the object before an UPDATE) did not have: only those are checked again.
pub fn added(new: Vec<String>, old: &[String]) -> Vec<String> {
    let old: BTreeSet<&str> = old.iter().map(String::as_str).collect();
    new.into_iter().filter(|i| !old.contains(i.as_str())).collect()
}

/// The first `max` of `items` and how many were left out: an object's images and pull Secret names are checked up
/// to a cap, so one object cannot make regcred do unbounded work.
pub fn capped<T>(mut items: Vec<T>, max: usize) -> (Vec<T>, usize) {
    let over = items.len().saturating_sub(max);
    items.truncate(max);
    (items, over)
}

/// The admission warning for an object with `over` more `what` (images, pull Secret names) than the `max` checked.
pub fn over_cap_warning(what: &str, max: usize, over: usize) -> String {
    format!("regcred checked only the first {max} {what} of this object ({over} more not checked)")
}

/// A profile's image-check mode (`Warn` unless it says otherwise).
pub fn mode(profile: &RegistryProfile) -> ImageCheckMode {
    profile.spec.image_checks.as_ref().map(|c| c.mode).unwrap_or_default()
}

/// What to do about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Resolve `image` with the credentials `profile` holds under its dockerconfigjson `key` (the one that matches
    /// the image); the profile selects the namespace.
    Check { image: String, profile: String, key: String, mode: ImageCheckMode },
    /// `image` is from `profile`'s registry, but the profile does not select the namespace: no pull Secret.
    NotSelected { image: String, profile: String },
}

/// Which images to check, with which profile: for each image, the profile (not being deleted) that selects `ns`
/// and whose registry key matches the image most specifically (the kubelet tries the most specific key first),
/// unless its checks are `Off`; failing that, a matching profile that does not select `ns` (and is not `Off`). Images of no profile's registry, and
/// unparsable ones, are none of regcred's business.
pub fn findings(
    images: &[String],
    profiles: &[(Arc<RegistryProfile>, Arc<Meaning>)],
    ns: &NamespaceInfo,
) -> Vec<Finding> {
    // `Off` profiles stay in: one that selects `ns` serves the image (regcred gives the Pod its Secret), so no
    // other profile's "not selected" may be said of it; it is only not checked.
    let live: Vec<_> = profiles.iter().filter(|(p, _)| p.metadata.deletion_timestamp.is_none()).collect();
    let mut findings = Vec::new();
    for written in images {
        let Some(parsed) = image::parse_memo(written) else { continue };
        // The longest matching key of each profile whose registry serves the image.
        let matching = live.iter().filter_map(|(p, m)| {
            let key = m.keys.iter().filter(|(_, k)| k.matches(&parsed)).map(|(k, _)| k).max_by_key(|k| k.len())?;
            Some((key, mode(p), &**m))
        });
        let (selecting, other): (Vec<_>, Vec<_>) = matching.partition(|(_, _, m)| m.selects(ns));
        if let Some((key, mode, m)) = most_specific(selecting) {
            if mode != ImageCheckMode::Off {
                let (image, profile, key) = (written.clone(), m.name.clone(), key.clone());
                findings.push(Finding::Check { image, profile, key, mode });
            }
        } else if let Some((_, _, m)) =
            most_specific(other.into_iter().filter(|(_, mode, _)| *mode != ImageCheckMode::Off).collect())
        {
            findings.push(Finding::NotSelected { image: written.clone(), profile: m.name.clone() });
        }
    }
    findings
}

/// The entry with the longest key; on a tie, the profile first by name.
fn most_specific<'a>(
    list: Vec<(&'a String, ImageCheckMode, &'a Meaning)>,
) -> Option<(&'a String, ImageCheckMode, &'a Meaning)> {
    list.into_iter().max_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| b.2.name.cmp(&a.2.name)))
}

/// What to resolve `image` with: the credentials `profile`'s Secrets hold now under its dockerconfigjson `key`
/// (resolved from `sources`, and for tokens the refresher's `snapshot` or the leader's copy), and the profile's
/// validation and TLS options. `Err`: why it cannot be checked.
pub fn target(
    profile: &RegistryProfile,
    meaning: &Meaning,
    sources: &impl crate::resolve::Sources,
    snapshot: Option<&crate::credentials::refresher::Snapshot>,
    key: &str,
    image: &str,
    now: jiff::Timestamp,
) -> Result<Lookup, String> {
    let credentials = match crate::resolve::in_force(profile, meaning, sources, snapshot, now).content {
        Ok(Some(content)) => Some(
            content.config.login(key).ok_or_else(|| format!("the profile's credentials have no entry for {key}"))?,
        ),
        Ok(None) => None,
        Err(u) => return Err(format!("the profile's credentials do not resolve ({}): {}", u.reason, u.message)),
    };
    let validation = profile.spec.validation.clone().unwrap_or_default();
    let options = crate::registry::preflight::Options::for_profile(&validation, profile.spec.tls.as_ref());
    Ok(Lookup { image: image.to_owned(), credentials, options })
}

/// What the registry said about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The image resolves, and passes the profile's validation.
    Passed,
    /// A definite answer: the image is not there (or not for the platform), too large, of a refused manifest
    /// type, or the credentials are refused. `Deny` rejects on it.
    Refused(Failure),
    /// No answer to go by (unreachable, slow, untrusted TLS, credentials not resolved): never a rejection.
    NotChecked(String),
}

impl Outcome {
    /// The outcome of one resolved image.
    pub fn of(result: &ImageResult) -> Self {
        match &result.failure {
            None => Self::Passed,
            Some(f) if matches!(f.reason, Reason::RegistryUnreachable | Reason::TlsUntrusted) => {
                Self::NotChecked(format!("{}: {}", f.reason.as_str(), f.message))
            }
            Some(f) => Self::Refused(f.clone()),
        }
    }

    /// Whether the cache may keep it for an image's full lifetime (see [`lifetime`]).
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed)
    }
}

/// What an admission answers: its warnings, one per problem, and the rejection when a `Deny` profile's image was
/// refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub warnings: Vec<String>,
    pub denied: Option<String>,
}

/// The answer for `findings`, each `Check` with its outcome (`None`: nothing asked, for a `NotSelected`), and the
/// pull Secrets the object names that do not exist in `namespace`.
pub fn answer(findings: &[(Finding, Option<Outcome>)], missing_secrets: &[String], namespace: &str) -> Answer {
    let mut out = Answer::default();
    let mut denials = Vec::new();
    for (finding, outcome) in findings {
        match (finding, outcome) {
            (Finding::Check { image, profile, mode, .. }, Some(Outcome::Refused(f))) => {
                // The preflight's message may start with the reference again.
                let message = f.message.strip_prefix(&format!("{image}: ")).unwrap_or(&f.message);
                let reason = f.reason.as_str();
                let line = shorten(&format!("image {image} (RegistryProfile {profile}): {reason}: {message}"));
                if *mode == ImageCheckMode::Deny {
                    denials.push(line.clone());
                }
                out.warnings.push(line);
            }
            (Finding::Check { image, profile, .. }, Some(Outcome::NotChecked(why))) => {
                out.warnings.push(shorten(&format!("image {image} (RegistryProfile {profile}): not checked: {why}")));
            }
            (Finding::NotSelected { image, profile }, _) => out.warnings.push(shorten(&format!(
                "image {image} is from the registry of RegistryProfile {profile}, which does not select namespace \
                 {namespace}: regcred gives it no pull Secret"
            ))),
            (Finding::Check { .. }, Some(Outcome::Passed) | None) => {}
        }
    }
    for name in missing_secrets {
        out.warnings.push(shorten(&format!(
            "imagePullSecrets names Secret {name}, which does not exist in namespace {namespace}"
        )));
    }
    if !denials.is_empty() {
        out.denied = Some(format!("regcred: {}", denials.join("; ")));
    }
    out
}

/// The warning for a pull Secret the object names whose existence regcred could not learn in time (`why`).
pub fn secret_not_checked(name: &str, why: &str) -> String {
    shorten(&format!("imagePullSecrets names Secret {name}: not checked: {why}"))
}

/// `text`, cut at [`MAX_MESSAGE`] characters (on a character boundary, with an ellipsis).
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(name: &str, spec: Value) -> (Arc<RegistryProfile>, Arc<Meaning>) {
        let p = crate::fixtures::profile(name, spec);
        let meaning = Arc::new(Meaning::of(&p, "regcred-system"));
        (Arc::new(p), meaning)
    }

    fn ns(name: &str) -> NamespaceInfo {
        crate::fixtures::namespace_info(name, &[])
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn every_checked_kind_has_its_pod_spec_found() {
        let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"] {
            assert!(pod_spec("apps", kind, &template).and_then(|s| s.get("containers")).is_some(), "{kind}");
        }
        assert!(pod_spec("batch", "Job", &template).is_some());
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        assert!(pod_spec("batch", "CronJob", &cron).is_some());
        assert!(pod_spec("", "Pod", &json!({"spec": {}})).is_some());
        // Other kinds, or the right kind in another group, are not checked.
        assert_eq!(pod_spec("", "Deployment", &template), None);
        assert_eq!(pod_spec("apps", "Service", &template), None);
        assert!(!is_checked_kind("", "ConfigMap") && is_checked_kind("batch", "CronJob"));
    }

    #[test]
    fn an_objects_images_are_checked_up_to_the_cap() {
        let many: Vec<String> = (0..1000).map(|i| format!("r/app{i}")).collect();
        let cases: [(usize, usize, usize, usize); 5] =
            [(0, 50, 0, 0), (3, 50, 3, 0), (50, 50, 50, 0), (51, 50, 50, 1), (1000, 50, 50, 950)];
        for (len, max, kept, over) in cases {
            let (got, left) = capped(many[..len].to_vec(), max);
            assert_eq!((got.len(), left), (kept, over), "{len} images, cap {max}");
            assert_eq!(got, many[..kept], "the first ones are kept, in order");
        }
        assert_eq!(
            over_cap_warning("images", 50, 950),
            "regcred checked only the first 50 images of this object (950 more not checked)"
        );
    }

    #[test]
    fn images_and_pull_secrets_are_read_from_a_spec() {
        let spec = json!({
            "containers": [{"name": "a", "image": "r/a:1"}, {"name": "b", "image": "r/a:1"}, {"name": "c"}],
            "initContainers": [{"name": "i", "image": "r/init"}],
            "ephemeralContainers": [{"name": "e", "image": "r/debug"}],
            "imagePullSecrets": [{"name": "one"}, {}, {"name": "two"}],
        });
        assert_eq!(images_of(&spec), s(&["r/a:1", "r/init", "r/debug"]));
        assert_eq!(pull_secrets_of(&spec), s(&["one", "two"]));
        assert_eq!(images_of(&json!({})), Vec::<String>::new());
        assert_eq!(added(s(&["a", "b", "c"]), &s(&["b"])), s(&["a", "c"]));
    }

    #[test]
    fn each_image_is_checked_with_the_most_specific_selecting_profile() {
        let all = json!({"names": ["*"]});
        let none = json!({"names": ["elsewhere"]});
        let creds = json!({"secretRef": {"name": "c"}});
        let profiles = [
            profile("host", json!({"server": "r.example.com", "credentials": creds, "namespaces": all})),
            profile("team", json!({"server": "r.example.com/team", "credentials": creds, "namespaces": all})),
            profile(
                "quiet",
                json!({"server": "q.example.com", "credentials": creds, "namespaces": all, "imageChecks": {"mode": "Off"}}),
            ),
            profile(
                "strict",
                json!({"server": "d.example.com", "credentials": creds, "namespaces": all, "imageChecks": {"mode": "Deny"}}),
            ),
            profile("other", json!({"server": "o.example.com", "credentials": creds, "namespaces": none})),
            // Serves q.example.com elsewhere: "quiet" (checks Off) selects the namespace and serves the image, so
            // no "not selected" warning may come from this one.
            profile("quiet-other", json!({"server": "q.example.com", "credentials": creds, "namespaces": none})),
            profile("anon", json!({"provider": "mcr", "credentials": {"anonymous": true}, "namespaces": all})),
        ];
        let images = s(&[
            "r.example.com/team/app:1",
            "r.example.com/other/app:1",
            "q.example.com/app",
            "d.example.com/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            "o.example.com/app",
            "mcr.microsoft.com/dotnet/runtime:8.0",
            "nginx",
            "Not An Image",
        ]);
        let check = |image: &str, profile: &str, key: &str, mode: ImageCheckMode| Finding::Check {
            image: image.into(),
            profile: profile.into(),
            key: key.into(),
            mode,
        };
        assert_eq!(
            findings(&images, &profiles, &ns("shop")),
            vec![
                check("r.example.com/team/app:1", "team", "r.example.com/team", ImageCheckMode::Warn),
                check("r.example.com/other/app:1", "host", "r.example.com", ImageCheckMode::Warn),
                check(&images[3], "strict", "d.example.com", ImageCheckMode::Deny),
                Finding::NotSelected { image: "o.example.com/app".into(), profile: "other".into() },
                check("mcr.microsoft.com/dotnet/runtime:8.0", "anon", "mcr.microsoft.com", ImageCheckMode::Warn),
            ]
        );
    }

    #[test]
    fn answers_name_the_image_the_profile_and_the_reason_and_deny_only_on_a_definite_answer() {
        let check =
            |image: &str, mode| Finding::Check { image: image.into(), profile: "p".into(), key: "r".into(), mode };
        let refused = |reason, message: &str| Some(Outcome::Refused(Failure { reason, message: message.into() }));
        let findings = vec![
            (check("r/ok:1", ImageCheckMode::Deny), Some(Outcome::Passed)),
            (check("r/gone:1", ImageCheckMode::Deny), refused(Reason::ImageNotFound, "r/gone:1: manifest unknown")),
            (check("r/big:1", ImageCheckMode::Warn), refused(Reason::ImageTooLarge, "70 kB > 32 kB")),
            (check("r/slow:1", ImageCheckMode::Deny), Some(Outcome::NotChecked("no answer within 2 s".into()))),
            (Finding::NotSelected { image: "o/app".into(), profile: "o".into() }, None),
        ];
        let got = answer(&findings, &s(&["forgotten"]), "shop");
        assert_eq!(
            got.warnings,
            s(&[
                "image r/gone:1 (RegistryProfile p): ImageNotFound: manifest unknown",
                "image r/big:1 (RegistryProfile p): ImageTooLarge: 70 kB > 32 kB",
                "image r/slow:1 (RegistryProfile p): not checked: no answer within 2 s",
                "image o/app is from the registry of RegistryProfile o, which does not select namespace shop: regcred \
                 gives it no pull Secret",
                "imagePullSecrets names Secret forgotten, which does not exist in namespace shop",
            ])
        );
        // Only the Deny profile's definite answer rejects: not the Warn one, not the one that did not answer.
        assert_eq!(
            got.denied.as_deref(),
            Some("regcred: image r/gone:1 (RegistryProfile p): ImageNotFound: manifest unknown")
        );
        let lenient = answer(&findings[2..], &[], "shop");
        assert_eq!(lenient.denied, None);
        assert_eq!(answer(&findings[..1], &[], "shop"), Answer::default());
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let findings = [(
            Finding::Check {
                image: "r/é".repeat(100),
                profile: "p".into(),
                key: "r".into(),
                mode: ImageCheckMode::Warn,
            },
            Some(Outcome::NotChecked("x".into())),
        )];
        let line = &answer(&findings, &[], "ns").warnings[0];
        assert_eq!(line.chars().count(), MAX_MESSAGE);
        assert!(line.ends_with('…'));
        let line = secret_not_checked(&"é".repeat(1000), "slow");
        assert_eq!(line.chars().count(), MAX_MESSAGE);
    }

    #[test]
    fn unreachable_and_untrusted_registries_are_not_checked_and_the_rest_is_definite() {
        let result =
            |reason| ImageResult { failure: Some(Failure { reason, message: "m".into() }), ..ImageResult::default() };
        assert_eq!(Outcome::of(&ImageResult::default()), Outcome::Passed);
        for reason in [Reason::RegistryUnreachable, Reason::TlsUntrusted] {
            assert!(matches!(Outcome::of(&result(reason)), Outcome::NotChecked(_)), "{reason:?}");
        }
        for reason in [
            Reason::AuthenticationFailed,
            Reason::ImageNotFound,
            Reason::ImageTooLarge,
            Reason::UnsupportedManifestType,
            Reason::InvalidReference,
        ] {
            assert!(matches!(Outcome::of(&result(reason)), Outcome::Refused(_)), "{reason:?}");
        }
    }
}
