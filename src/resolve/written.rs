//! What is written for a profile in a namespace now: the one answer the reconcile, the new-namespace path, the
//! webhook and the Secret writer all take. Pure: the profile, its [`Meaning`], the Secrets of regcred's own
//! namespace ([`Sources`]), the refresher's state of its token on this replica, what the registry preflight said, and
//! the time go in; three answers come out:
//!
//! - the credentials in force ([`in_force`]): what the profile's Secrets hold now, and how its
//!   `CredentialsResolved` condition reports them;
//! - whether the profile withholds its Secrets ([`withheld`]): credentials that do not resolve, a preflight that
//!   failed or has not answered under `onFailure: Withhold`, a selector that does not compile;
//! - whether a namespace receives them ([`Written::in_namespace`]): the one rule of [`Meaning::may_write`], by any
//!   delivery;
//! - whether a Secret of the profile is written in a namespace ([`Written::secret_in`]; [`Written::secret`] for
//!   every namespace at once): what the namespace receives, when the profile's `spec.delivery` writes Secrets
//!   (`Secret`, `Both`; not `CredentialProvider`) and it is not anonymous.
//!
//! Credentials are read only from regcred's own namespace ([`Sources`]); a token regcred minted is read from the
//! refresher, or from the copy the leader keeps in regcred's own namespace ([`super::token_copy`]), never from a
//! tenant's namespace.

use jiff::Timestamp;

use super::credentials::{Source, Sources, Unresolved, source, token_copy, unresolved};
use super::selection::NamespaceInfo;
use super::{Meaning, Refusal};
use crate::api::conditions::{
    AWAITING_PREFLIGHT, CREDENTIALS_UNAVAILABLE, CREDENTIALS_VALID, IMAGES_VERIFIED, INVALID_SELECTOR, MINTING,
    SECRETS_SYNCED, TRUE, WITHHELD_BY_PREFLIGHT, WITHHELD_REASONS,
};
use crate::api::{OnFailure, RegistryProfile};
use crate::credentials::DockerConfig;
use crate::credentials::refresher::Snapshot;

/// What a profile's Secrets hold: its dockerconfigjson, and when it expires (short-lived tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub config: DockerConfig,
    pub expires_at: Option<Timestamp>,
}

/// How a profile's credentials resolved, as its `CredentialsResolved` condition tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Resolved from the named source.
    Resolved { source: String },
    /// Anonymous access: no Secret is written.
    Anonymous,
    /// Not resolved, or minting fails: `reason` is the condition's reason.
    Failed { reason: String, message: String },
}

impl Report {
    fn failed(u: &Unresolved) -> Self {
        Self::Failed { reason: u.reason.clone(), message: u.message.clone() }
    }
}

/// The credentials in force for a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    /// What its Secrets hold now: `Ok(None)` for anonymous access (no Secret), `Err` when there is nothing to
    /// write.
    pub content: Result<Option<Content>, Unresolved>,
    /// How status reports them.
    pub report: Report,
}

/// The credentials in force for `profile`, its registry as `meaning` says, reading `sources` (regcred's own
/// namespace) and this replica's refresher state of its token (`token`: `None` where nothing mints for it here).
pub fn in_force(
    profile: &RegistryProfile,
    meaning: &Meaning,
    sources: &impl Sources,
    token: Option<&Snapshot>,
    now: Timestamp,
) -> InForce {
    in_force_from(profile, &source(profile, meaning.registry.as_deref(), sources), sources, token, now)
}

/// [`in_force`] from a source already resolved (the reconcile resolves it first to start minting).
///
/// A token is the refresher's newest one (even if it claims to be expired already), or while minting fails its
/// last good one until it expires. Where this replica has no token yet (it does not lead, or its first mint is on
/// its way), the copy the leader keeps in regcred's own namespace serves; while minting fails here, only until it
/// expires, as the last good token would.
pub fn in_force_from(
    profile: &RegistryProfile,
    source: &Result<Source, Unresolved>,
    sources: &impl Sources,
    token: Option<&Snapshot>,
    now: Timestamp,
) -> InForce {
    let source = match source {
        Err(u) => return InForce { content: Err(u.clone()), report: Report::failed(u) },
        Ok(Source::Anonymous) => return InForce { content: Ok(None), report: Report::Anonymous },
        Ok(Source::Static { config, from }) => {
            let content = Content { config: config.clone(), expires_at: None };
            return InForce { content: Ok(Some(content)), report: Report::Resolved { source: from.clone() } };
        }
        Ok(Source::Token(t)) => t,
    };
    let failing = token.and_then(|t| t.error.as_ref());
    match token.map(|t| minted(t, now)) {
        Some(Ok(content)) => {
            // A token is in place: say whether minting still works.
            let report = match failing {
                Some(e) => Report::Failed {
                    reason: e.reason.into(),
                    message: format!("{}; the last good token stays in place until it expires", e.message),
                },
                None => Report::Resolved { source: source.describe().into() },
            };
            InForce { content: Ok(Some(content)), report }
        }
        other => {
            let why = match other {
                Some(Err(u)) => u,
                _ => unresolved(MINTING, "minting the first token"),
            };
            let copy = token_copy(profile, sources)
                .filter(|(_, expires_at)| failing.is_none() || expires_at.is_none_or(|e| e > now))
                .map(|(config, expires_at)| Content { config, expires_at });
            let report = Report::failed(&why);
            InForce { content: copy.map(Some).ok_or(why), report }
        }
    }
}

/// What a token-source profile writes now, from its refresher's state: the newest token (written even if it
/// claims to be expired already: the refresher then mints again at its minimum interval), or while minting fails
/// the last good one until it expires.
fn minted(snapshot: &Snapshot, now: Timestamp) -> Result<Content, Unresolved> {
    match (&snapshot.token, &snapshot.error) {
        (Some(t), None) => Ok(Content { config: t.config.clone(), expires_at: Some(t.expires_at) }),
        (Some(t), Some(_)) if t.expires_at > now => {
            Ok(Content { config: t.config.clone(), expires_at: Some(t.expires_at) })
        }
        (_, Some(e)) => Err(unresolved(e.reason, e.message.clone())),
        (None, None) => Err(unresolved(MINTING, "minting the first token")),
    }
}

/// What the registry preflight said of the profile as it is now: what a profile with `onFailure: Withhold` waits
/// for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// It passed, or there is nothing to wait for.
    Passed,
    /// It failed, for `reason`.
    Failed { reason: String },
    /// It has not answered yet (or nothing says it has).
    Pending,
}

impl Preflight {
    /// What the profile's status says of it: the word of the leader's last reconcile at the profile's current
    /// generation. The paths that do not run the preflight themselves (a new namespace's Secret, the webhook on any
    /// replica) go by this: passed once a sync at this generation got past the gate, even if it left some
    /// namespace unsynced (a `Conflict`, a failed write); a verdict about an earlier generation says nothing.
    pub fn from_status(profile: &RegistryProfile) -> Self {
        let conditions = profile.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let current = |type_: &str| {
            conditions.iter().find(|c| c.type_ == type_ && c.observed_generation == profile.metadata.generation)
        };
        let Some(synced) = current(SECRETS_SYNCED) else { return Self::Pending };
        if synced.status == TRUE || !WITHHELD_REASONS.contains(&synced.reason.as_str()) {
            return Self::Passed;
        }
        if synced.reason != WITHHELD_BY_PREFLIGHT {
            return Self::Pending;
        }
        let failed = [CREDENTIALS_VALID, IMAGES_VERIFIED].into_iter().filter_map(current).find(|c| c.status != TRUE);
        Self::Failed { reason: failed.map_or_else(|| synced.reason.clone(), |c| c.reason.clone()) }
    }
}

/// Why a profile's Secrets are left as they are now: the `SecretsSynced` reason, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withheld {
    pub reason: &'static str,
    pub message: String,
}

/// Whether `profile`'s Secrets are left as they are now, and why; `None`: they are written. In order: credentials
/// that do not resolve, a preflight that failed or has not answered when `spec.validation.onFailure` is
/// `Withhold`, a selector that does not compile.
pub fn withheld(
    profile: &RegistryProfile,
    meaning: &Meaning,
    in_force: &InForce,
    preflight: &Preflight,
) -> Option<Withheld> {
    let left = |reason, message: String| Some(Withheld { reason, message });
    if in_force.content.is_err() {
        let message = "existing Secrets are left as they are until the credentials resolve";
        return left(CREDENTIALS_UNAVAILABLE, message.into());
    }
    if profile.spec.validation.as_ref().is_some_and(|v| v.on_failure == OnFailure::Withhold) {
        match preflight {
            Preflight::Failed { reason } => {
                return left(
                    WITHHELD_BY_PREFLIGHT,
                    format!(
                        "spec.validation.onFailure is Withhold and the registry preflight failed ({reason}): existing \
                         Secrets are left as they are"
                    ),
                );
            }
            Preflight::Pending => {
                return left(
                    AWAITING_PREFLIGHT,
                    "spec.validation.onFailure is Withhold and the registry preflight of the current settings has not \
                     answered yet: existing Secrets are left as they are"
                        .into(),
                );
            }
            Preflight::Passed => {}
        }
    }
    match &meaning.selection {
        Err(invalid) => left(INVALID_SELECTOR, invalid.to_string()),
        Ok(_) => None,
    }
}

/// What is written for a profile now: the credentials in force, and whether they are withheld.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub in_force: InForce,
    pub withheld: Option<Withheld>,
}

/// Why a namespace does not receive a profile's Secret now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotWritten {
    /// The profile may not write there (see [`Meaning::may_write`]).
    Refused(Refusal),
    /// The profile's Secrets are left as they are everywhere.
    Withheld(Withheld),
}

/// What is written for `profile` now: [`in_force`], then [`withheld`].
pub fn written(
    profile: &RegistryProfile,
    meaning: &Meaning,
    sources: &impl Sources,
    token: Option<&Snapshot>,
    preflight: &Preflight,
    now: Timestamp,
) -> Written {
    let in_force = in_force(profile, meaning, sources, token, now);
    let withheld = withheld(profile, meaning, &in_force, preflight);
    Written { in_force, withheld }
}

impl Written {
    /// What the profile writes wherever it writes (`Ok(None)`: no Secret, anonymous access), or why its Secrets are
    /// left as they are.
    pub fn content(&self) -> Result<Option<&Content>, &Withheld> {
        match (&self.withheld, &self.in_force.content) {
            (Some(withheld), _) => Err(withheld),
            (None, Ok(content)) => Ok(content.as_ref()),
            // Unreachable: credentials that do not resolve are withheld.
            (None, Err(_)) => Ok(None),
        }
    }

    /// What the namespace `ns` receives from the profile of `meaning` now (`Ok(None)`: nothing, anonymous access),
    /// or why nothing; `others` are every profile's meanings (the profile's own among them or not).
    pub fn in_namespace<'a>(
        &self,
        meaning: &Meaning,
        ns: &NamespaceInfo,
        others: impl IntoIterator<Item = &'a Meaning>,
    ) -> Result<Option<&Content>, NotWritten> {
        meaning.may_write(ns, others).map_err(NotWritten::Refused)?;
        self.content().map_err(|w| NotWritten::Withheld(w.clone()))
    }

    /// What the profile's Secrets hold wherever they are written: [`Written::content`], but nothing (`Ok(None)`:
    /// whatever it wrote before goes) for a profile that writes no Secret ([`super::writes_secret`]: anonymous
    /// access, or `spec.delivery: CredentialProvider`). While withheld, its Secrets are left as they are, whatever
    /// its delivery: a switch to `CredentialProvider` removes them once the credentials resolve (and the preflight
    /// lets them through), never while they might be all that works. The reconcile plans by it.
    pub fn secret(&self, meaning: &Meaning) -> Result<Option<&Content>, &Withheld> {
        Ok(self.content()?.filter(|_| meaning.writes_secret))
    }

    /// The one rule of whether a Secret of the profile of `meaning` is written in `ns` now, and what it holds
    /// ([`Meaning::may_write_secret`], then [`Written::secret`]). The new-namespace path writes by it; the writer
    /// enforces its first half on every write.
    pub fn secret_in<'a>(
        &self,
        meaning: &Meaning,
        ns: &NamespaceInfo,
        others: impl IntoIterator<Item = &'a Meaning>,
    ) -> Result<Option<&Content>, NotWritten> {
        meaning.may_write_secret(ns, others).map_err(NotWritten::Refused)?;
        self.secret(meaning).map_err(|w| NotWritten::Withheld(w.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::api::conditions::{
        ANONYMOUS, CONFLICT, FALSE, NOT_SELECTED, NOT_WRITTEN, RESOLVED, SYNCED, WRITE_FAILED,
    };
    use crate::credentials::render;
    use crate::credentials::tokens::{MintError, Minted};
    use crate::fixtures::profile;
    use crate::names::{DOCKER_CONFIG_KEY, EXPIRES_AT_ANNOTATION, token_copy_name};

    fn now() -> Timestamp {
        Timestamp::from_second(1_900_000_000).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        now().checked_add(jiff::SignedDuration::from_secs(secs)).unwrap()
    }

    /// regcred's namespace: a static source, and (`copy`) the leader's copy of `p`'s token expiring at that time.
    fn sources(copy: Option<i64>) -> (String, BTreeMap<String, Arc<Secret>>) {
        let data = |pairs: &[(&str, &[u8])]| {
            Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec()))).collect())
        };
        let creds = Secret { data: data(&[("username", b"u"), ("password", b"pw")]), ..Default::default() };
        let mut map = BTreeMap::from([("creds".to_owned(), Arc::new(creds))]);
        if let Some(expires) = copy {
            let mut secret = Secret { data: data(&[(DOCKER_CONFIG_KEY, b"{\"copy\":1}")]), ..Default::default() };
            secret.metadata.owner_references = Some(vec![OwnerReference { uid: "uid-p".into(), ..Default::default() }]);
            secret.metadata.annotations = Some([(EXPIRES_AT_ANNOTATION.to_owned(), at(expires).to_string())].into());
            map.insert(token_copy_name("uid-p"), Arc::new(secret));
        }
        ("regcred-system".into(), map)
    }

    fn snapshot(expires_in: Option<i64>, error: Option<&'static str>) -> Snapshot {
        Snapshot {
            token: expires_in.map(|s| Minted { config: render("r", "AWS", "minted"), expires_at: at(s) }),
            error: error.map(|r| MintError::new(r, "refused")),
            ..Default::default()
        }
    }

    fn spec(credentials: serde_json::Value, withhold: bool, selector: bool) -> serde_json::Value {
        let provider = if credentials.get("ecr").is_some() { "ecr" } else { "generic" };
        let mut spec = serde_json::json!({
            "provider": provider, "server": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "credentials": credentials, "secretName": "pull",
            "namespaces": {"names": ["team-*"], "exclude": ["team-out"]},
        });
        if withhold {
            spec["validation"] = serde_json::json!({"onFailure": "Withhold"});
        }
        if !selector {
            spec["namespaces"] =
                serde_json::json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}});
        }
        spec
    }

    fn ns(name: &str) -> NamespaceInfo {
        NamespaceInfo { name: name.into(), labels: BTreeMap::default(), terminating: false }
    }

    /// One case: the profile, the replica's token state, the preflight, the namespace, and what comes out: the
    /// Secret's content (a password, "none" for no Secret) or why nothing, and the report's reason.
    struct Case {
        what: &'static str,
        credentials: serde_json::Value,
        withhold: bool,
        selector: bool,
        copy: Option<i64>,
        token: Option<Snapshot>,
        preflight: Preflight,
        namespace: &'static str,
        want: &'static str,
        report: &'static str,
    }

    fn case(what: &'static str, credentials: serde_json::Value, want: &'static str, report: &'static str) -> Case {
        Case {
            what,
            credentials,
            withhold: false,
            selector: true,
            copy: None,
            token: None,
            preflight: Preflight::Passed,
            namespace: "team-a",
            want,
            report,
        }
    }

    fn outcome(result: Result<Option<&Content>, NotWritten>) -> String {
        match result {
            Ok(None) => "none".into(),
            Ok(Some(c)) if c.config.0.expose() == b"{\"copy\":1}" => "copy".into(),
            Ok(Some(c)) => {
                let json: serde_json::Value = serde_json::from_slice(c.config.0.expose()).unwrap();
                let entry = json["auths"].as_object().unwrap().values().next().unwrap();
                entry["password"].as_str().unwrap().to_owned()
            }
            Err(NotWritten::Refused(r)) => r.reason().into(),
            Err(NotWritten::Withheld(w)) => w.reason.into(),
        }
    }

    fn report_reason(r: &Report) -> &str {
        match r {
            Report::Resolved { .. } => RESOLVED,
            Report::Anonymous => ANONYMOUS,
            Report::Failed { reason, .. } => reason,
        }
    }

    #[test]
    fn what_is_written_for_a_profile_in_a_namespace_now() {
        let static_ = serde_json::json!({"secretRef": {"name": "creds"}});
        let anonymous = serde_json::json!({"anonymous": true});
        let token = serde_json::json!({"ecr": {"region": "eu-west-1"}});
        let missing = serde_json::json!({"secretRef": {"name": "gone"}});
        let failed = Preflight::Failed { reason: "AuthenticationFailed".into() };
        let cases = [
            case("static", static_.clone(), "pw", RESOLVED),
            case("anonymous: no Secret", anonymous, "none", ANONYMOUS),
            case("a source that does not resolve", missing, CREDENTIALS_UNAVAILABLE, "SecretNotFound"),
            Case { token: Some(snapshot(Some(3600), None)), ..case("token minted", token.clone(), "minted", RESOLVED) },
            Case {
                token: Some(snapshot(Some(60), Some("AccessDenied"))),
                copy: Some(60),
                ..case("minting fails, the last good token serves", token.clone(), "minted", "AccessDenied")
            },
            Case {
                token: Some(snapshot(Some(-5), Some("AccessDenied"))),
                copy: Some(-5),
                ..case("... until it expires, its copy too", token.clone(), CREDENTIALS_UNAVAILABLE, "AccessDenied")
            },
            Case {
                token: Some(snapshot(None, Some("EndpointUnreachable"))),
                copy: Some(600),
                ..case("a new leader whose first mint fails: the copy", token.clone(), "copy", "EndpointUnreachable")
            },
            Case {
                token: Some(snapshot(Some(-5), None)),
                ..case("a fresh token that claims to be expired", token.clone(), "minted", RESOLVED)
            },
            Case {
                token: Some(Snapshot::default()),
                ..case("the first mint, no copy", token.clone(), CREDENTIALS_UNAVAILABLE, MINTING)
            },
            Case { copy: Some(600), ..case("a token copy on a non-leader", token.clone(), "copy", MINTING) },
            Case { copy: Some(-600), ..case("however old, on a non-leader", token.clone(), "copy", MINTING) },
            case("no copy on a non-leader", token.clone(), CREDENTIALS_UNAVAILABLE, MINTING),
            Case {
                withhold: true,
                preflight: failed.clone(),
                ..case("withheld: the preflight failed", static_.clone(), WITHHELD_BY_PREFLIGHT, RESOLVED)
            },
            Case {
                withhold: true,
                preflight: Preflight::Pending,
                ..case("withheld: the preflight has not answered", static_.clone(), AWAITING_PREFLIGHT, RESOLVED)
            },
            Case { withhold: true, ..case("withheld, and it passed", static_.clone(), "pw", RESOLVED) },
            Case { preflight: failed, ..case("a failed preflight without Withhold", static_.clone(), "pw", RESOLVED) },
            Case { namespace: "shop", ..case("an unselected namespace", static_.clone(), NOT_SELECTED, RESOLVED) },
            Case { namespace: "team-out", ..case("an excluded namespace", static_.clone(), NOT_SELECTED, RESOLVED) },
            Case { namespace: "team-b", ..case("refused by may_write: a rival", static_.clone(), CONFLICT, RESOLVED) },
            Case {
                selector: false,
                ..case("a selector that does not compile", static_.clone(), NOT_SELECTED, RESOLVED)
            },
        ];
        let rival = Meaning::of(
            &profile(
                "rival",
                serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "x"}},
                "secretName": "pull", "namespaces": {"names": ["team-b"]}}),
            ),
            "regcred-system",
        );
        for c in cases {
            let p = profile("p", spec(c.credentials, c.withhold, c.selector));
            let meaning = Meaning::of(&p, "regcred-system");
            let w = written(&p, &meaning, &sources(c.copy), c.token.as_ref(), &c.preflight, now());
            let got = outcome(w.in_namespace(&meaning, &ns(c.namespace), [&meaning, &rival]));
            assert_eq!((got.as_str(), report_reason(&w.in_force.report)), (c.want, c.report), "{}", c.what);
        }
    }

    #[test]
    fn a_secret_is_written_only_where_the_namespace_receives_the_credentials_and_the_delivery_writes_secrets() {
        let static_ = serde_json::json!({"secretRef": {"name": "creds"}});
        let anonymous = serde_json::json!({"anonymous": true});
        let missing = serde_json::json!({"secretRef": {"name": "gone"}});
        // The credentials, the delivery, the namespace; what the namespace receives (in_namespace), and the Secret
        // written there (secret_in); "none": nothing, by either.
        let cases = [
            (&static_, "Secret", "team-a", "pw", "pw"),
            (&static_, "Both", "team-a", "pw", "pw"),
            (&static_, "CredentialProvider", "team-a", "pw", NOT_WRITTEN),
            (&static_, "CredentialProvider", "shop", NOT_SELECTED, NOT_WRITTEN),
            (&static_, "Secret", "shop", NOT_SELECTED, NOT_SELECTED),
            // A rival writing a Secret of the same name holds the namespace for Secrets and the provider alike;
            // a profile writing no Secret is nobody's rival and has none.
            (&static_, "Both", "team-b", CONFLICT, CONFLICT),
            (&static_, "CredentialProvider", "team-b", "pw", NOT_WRITTEN),
            (&anonymous, "Secret", "team-a", "none", NOT_WRITTEN),
            (&anonymous, "CredentialProvider", "team-a", "none", NOT_WRITTEN),
            (&missing, "Secret", "team-a", CREDENTIALS_UNAVAILABLE, CREDENTIALS_UNAVAILABLE),
            (&missing, "CredentialProvider", "team-a", CREDENTIALS_UNAVAILABLE, NOT_WRITTEN),
        ];
        let rival = Meaning::of(
            &profile(
                "rival",
                serde_json::json!({"server": "r.example.com", "credentials": {"secretRef": {"name": "x"}},
                "secretName": "pull", "namespaces": {"names": ["team-b"]}}),
            ),
            "regcred-system",
        );
        for (credentials, delivery, namespace, receives, secret) in cases {
            let mut spec = spec(credentials.clone(), false, true);
            spec["delivery"] = delivery.into();
            let p = profile("p", spec);
            let meaning = Meaning::of(&p, "regcred-system");
            assert_eq!(meaning.writes_secret, delivery != "CredentialProvider" && credentials != &anonymous);
            let w = written(&p, &meaning, &sources(None), None, &Preflight::Passed, now());
            let others = [&meaning, &rival];
            let got = (
                outcome(w.in_namespace(&meaning, &ns(namespace), others)),
                outcome(w.secret_in(&meaning, &ns(namespace), others)),
            );
            assert_eq!((got.0.as_str(), got.1.as_str()), (receives, secret), "{credentials} {delivery} in {namespace}");
            // Every namespace at once: what the reconcile plans by.
            let everywhere = w.secret(&meaning).map(|c| c.is_some()).map_err(|w| w.reason);
            // Withheld, the Secrets it wrote before are left as they are, whatever its delivery now.
            let want = match secret {
                _ if credentials == &missing => Err(CREDENTIALS_UNAVAILABLE),
                NOT_WRITTEN => Ok(false),
                // Selected or not, a rival or not: the plan decides where.
                _ => Ok(true),
            };
            assert_eq!(everywhere, want, "{credentials} {delivery}");
        }
    }

    #[test]
    fn a_withheld_profile_says_why_with_credentials_first_and_the_selector_last() {
        let p = profile("p", spec(serde_json::json!({"secretRef": {"name": "gone"}}), true, false));
        let meaning = Meaning::of(&p, "regcred-system");
        let w = written(&p, &meaning, &sources(None), None, &Preflight::Pending, now());
        assert_eq!(w.content().unwrap_err().reason, CREDENTIALS_UNAVAILABLE);
        let p = profile("p", spec(serde_json::json!({"secretRef": {"name": "creds"}}), false, false));
        let meaning = Meaning::of(&p, "regcred-system");
        let w = written(&p, &meaning, &sources(None), None, &Preflight::Passed, now());
        assert_eq!(w.content().unwrap_err().reason, INVALID_SELECTOR);
        let p = profile("p", spec(serde_json::json!({"secretRef": {"name": "creds"}}), true, true));
        let meaning = Meaning::of(&p, "regcred-system");
        let failed = Preflight::Failed { reason: "ImageNotFound".into() };
        let w = written(&p, &meaning, &sources(None), None, &failed, now());
        assert!(w.content().unwrap_err().message.contains("(ImageNotFound)"));
        let expires = in_force(&p, &meaning, &sources(None), None, now()).content.unwrap().unwrap().expires_at;
        assert_eq!(expires, None, "a static source does not expire");
    }

    #[test]
    fn the_preflight_as_status_tells_it_counts_only_for_the_current_generation() {
        let with = |condition: Option<(&str, &str, i64)>, valid: Option<&str>| -> RegistryProfile {
            let mut p = profile("p", spec(serde_json::json!({"secretRef": {"name": "creds"}}), true, true));
            p.metadata.generation = Some(2);
            let mut conditions = Vec::new();
            if let Some((status, reason, generation)) = condition {
                conditions.push(serde_json::json!({"type": SECRETS_SYNCED, "status": status, "reason": reason,
                    "message": "", "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}));
            }
            if let Some(reason) = valid {
                conditions.push(serde_json::json!({"type": CREDENTIALS_VALID, "status": FALSE, "reason": reason,
                    "message": "", "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}));
            }
            p.status = serde_json::from_value(serde_json::json!({"conditions": conditions})).unwrap();
            p
        };
        let failed = |r: &str| Preflight::Failed { reason: r.into() };
        let cases = [
            (with(None, None), Preflight::Pending),
            (with(Some((TRUE, SYNCED, 2)), None), Preflight::Passed),
            // Past the preflight, some namespace unsynced: passed.
            (with(Some((FALSE, CONFLICT, 2)), None), Preflight::Passed),
            (with(Some((FALSE, WRITE_FAILED, 2)), None), Preflight::Passed),
            (
                with(Some((FALSE, WITHHELD_BY_PREFLIGHT, 2)), Some("AuthenticationFailed")),
                failed("AuthenticationFailed"),
            ),
            (with(Some((FALSE, WITHHELD_BY_PREFLIGHT, 2)), None), failed(WITHHELD_BY_PREFLIGHT)),
            (with(Some((FALSE, AWAITING_PREFLIGHT, 2)), None), Preflight::Pending),
            (with(Some((FALSE, CREDENTIALS_UNAVAILABLE, 2)), None), Preflight::Pending),
            // A verdict about an earlier generation says nothing about this one.
            (with(Some((TRUE, SYNCED, 1)), None), Preflight::Pending),
        ];
        for (p, want) in cases {
            assert_eq!(Preflight::from_status(&p), want, "{:?}", p.status);
        }
    }
}
