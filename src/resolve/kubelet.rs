//! What regcred answers the kubelet's image credential provider: the credentials a Pod's ServiceAccount may pull
//! an image with, now. Pure: every profile (with its [`Meaning`] and what [`super::written`] says it writes now),
//! the requester (the namespace and ServiceAccount its token proves), the image and the time go in; the kubelet's
//! answer comes out.
//!
//! A profile answers when all of these hold, and only then:
//! - its `spec.delivery` serves the kubelet ([`crate::api::Delivery::serves_kubelet`]);
//! - it may write into the requester's namespace ([`Written::in_namespace`], the rule its Secrets follow: it
//!   selects the namespace, no rival does, its credentials are not withheld);
//! - its `spec.serviceAccounts.names`, when set, name the ServiceAccount ([`names_match`], the rule of
//!   ServiceAccount mode);
//! - its registry serves the image, as the kubelet matches images against dockerconfigjson keys.
//!
//! The answer holds, for each such profile, the keys of its dockerconfigjson that serve the image, with their
//! credentials. How long the kubelet may keep it ([`cache_duration`]) is bounded by `max` (so a deselection or a
//! rotation reaches every node within `max` plus regcred's watch lag) and by half the remaining life of the
//! soonest-expiring minted token in it.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::Meaning;
use super::selection::{NamespaceInfo, names_match};
use super::written::Written;
use crate::api::RegistryProfile;
use crate::api::kubelet::{AuthConfig, CacheKeyType, CredentialProviderResponse};
use crate::registry::reference::{self, CredentialKey};

/// The share of a minted token's remaining life the kubelet may keep it for. A half: the kubelet may start a
/// pull with the credentials until the end of its cache, and that pull (layers of gigabytes, retries) must still
/// find the token valid; the other half of its life is that margin. regcred replaces a token at two thirds of its
/// life (`--token-refresh-fraction`), so a token served here has at least a third of its life left, and the
/// kubelet keeps it for at most a sixth.
pub const TOKEN_LIFE_SHARE: u32 = 2;

/// The shortest `cacheDuration` of an answer with credentials. The kubelet does not cache an answer whose
/// `cacheDuration` is 0: it would run the provider, and so ask regcred, for every pull of every Pod.
pub const MIN_CACHE: Duration = Duration::from_secs(1);

/// A profile as the decision sees it: the object, its compiled meaning, and what it writes now.
#[derive(Clone, Copy, Debug)]
pub struct Offer<'a> {
    pub profile: &'a RegistryProfile,
    pub meaning: &'a Meaning,
    pub written: &'a Written,
}

/// Who asks: the namespace and ServiceAccount the Pod's token proves.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub namespace: &'a NamespaceInfo,
    pub service_account: &'a str,
}

/// The answer to the kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Credentials per dockerconfigjson key; empty: none.
    pub auth: BTreeMap<String, AuthConfig>,
    pub cache_key_type: CacheKeyType,
    pub cache_duration: Duration,
    /// The profiles whose credentials are in `auth`, by name.
    pub profiles: Vec<String>,
}

impl Answer {
    /// The kubelet's CredentialProviderResponse.
    pub fn response(&self) -> CredentialProviderResponse {
        CredentialProviderResponse::new(self.cache_key_type, self.cache_duration, self.auth.clone())
    }
}

/// The kubelet's answer for `requester` pulling `image` (`host[:port]/path`, no tag) at `now`, from `offers` (every
/// profile; `all` their meanings, for the rival rule), kept at most `max`.
///
/// Profiles are taken in name order; where two give the same key, the first keeps it (the kubelet takes one
/// credential per key). `cacheKeyType` is `Image` where a key holds a path prefix, or where nothing is given (a
/// profile with a path prefix may serve another image of the same registry: a registry-wide "nothing" would hide
/// it), else `Registry`.
pub fn answer<'a>(
    offers: &[Offer<'_>],
    all: impl IntoIterator<Item = &'a Meaning> + Clone,
    requester: Requester<'_>,
    image: &str,
    now: Timestamp,
    max: Duration,
) -> Answer {
    let mut answer = Answer {
        auth: BTreeMap::new(),
        cache_key_type: CacheKeyType::Image,
        cache_duration: max.max(MIN_CACHE),
        profiles: Vec::new(),
    };
    let Some(parsed) = reference::parse_memo(image) else { return answer };
    let mut offers: Vec<&Offer<'_>> = offers.iter().collect();
    offers.sort_by(|a, b| a.meaning.name.cmp(&b.meaning.name));
    let mut soonest: Option<Timestamp> = None;
    // A profile with a path prefix on the image's registry, answered or not: an answer kept for the whole registry
    // would stand for its images too.
    let mut path_keys = offers.iter().any(|o| {
        o.profile.spec.delivery.serves_kubelet()
            && o.meaning.keys.iter().any(|(_, key)| key.has_path() && key.matches_registry(&parsed))
    });
    for offer in offers {
        if !offer.profile.spec.delivery.serves_kubelet()
            || offer
                .profile
                .spec
                .service_accounts
                .as_ref()
                .is_some_and(|s| !names_match(&s.names, requester.service_account))
            || !offer.meaning.keys.iter().any(|(_, key)| key.matches(&parsed))
        {
            continue;
        }
        let Ok(Some(content)) = offer.written.in_namespace(offer.meaning, requester.namespace, all.clone()) else {
            continue;
        };
        let (gave, paths) = give(&mut answer.auth, content, &parsed);
        path_keys |= paths;
        if gave {
            answer.profiles.push(offer.meaning.name.clone());
            soonest = match (soonest, content.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    if !answer.auth.is_empty() && !path_keys {
        answer.cache_key_type = CacheKeyType::Registry;
    }
    if !answer.auth.is_empty() {
        answer.cache_duration = cache_duration(soonest, now, max);
    }
    answer
}

/// Adds to `auth` the keys of `content` that serve `image` and no profile before gave; whether it added any, and
/// whether one of them holds a path prefix.
fn give(
    auth: &mut BTreeMap<String, AuthConfig>,
    content: &super::Content,
    image: &reference::ImageRef,
) -> (bool, bool) {
    let (mut gave, mut paths) = (false, false);
    for key in content.config.keys() {
        let parsed = CredentialKey::parse(&key);
        if !parsed.matches(image) || auth.contains_key(&key) {
            continue;
        }
        let Some(login) = content.config.login(&key) else { continue };
        paths |= parsed.has_path();
        auth.insert(key, AuthConfig { username: login.username, password: login.password });
        gave = true;
    }
    (gave, paths)
}

/// How long the kubelet may keep credentials the soonest of which expires at `expires_at` (`None`: none expires):
/// `max`, or [`TOKEN_LIFE_SHARE`]'s share of that remaining life if shorter; whole seconds, never under
/// [`MIN_CACHE`] (a token that expired already: the refresher is replacing it).
pub fn cache_duration(expires_at: Option<Timestamp>, now: Timestamp, max: Duration) -> Duration {
    let share = expires_at.map(|e| {
        let left = e.duration_since(now).as_secs().max(0);
        Duration::from_secs(left.unsigned_abs() / u64::from(TOKEN_LIFE_SHARE))
    });
    let d = share.map_or(max, |s| s.min(max));
    Duration::from_secs(d.as_secs()).max(MIN_CACHE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::render;
    use crate::fixtures::profile;
    use crate::resolve::written::{Content, InForce, Report, Withheld};

    const MAX: Duration = Duration::from_secs(60);

    fn now() -> Timestamp {
        Timestamp::from_second(1_900_000_000).unwrap()
    }

    fn ns(name: &str) -> NamespaceInfo {
        NamespaceInfo { name: name.into(), labels: BTreeMap::default(), terminating: false }
    }

    /// A profile `name` for `server`, delivered by `delivery`, selecting `team-*`, naming `accounts` when given.
    fn spec(server: &str, delivery: &str, accounts: Option<&[&str]>) -> serde_json::Value {
        let mut spec = serde_json::json!({"server": server, "credentials": {"secretRef": {"name": "c"}},
            "namespaces": {"names": ["team-*"], "exclude": ["team-out"]}, "delivery": delivery});
        if let Some(names) = accounts {
            spec["serviceAccounts"] = serde_json::json!({"names": names});
        }
        spec
    }

    fn written(key: &str, password: &str, expires_in: Option<i64>, withheld: bool) -> Written {
        let expires_at = expires_in.map(|s| now().checked_add(jiff::SignedDuration::from_secs(s)).unwrap());
        Written {
            in_force: InForce {
                content: Ok(Some(Content { config: render(key, "u", password), expires_at })),
                report: Report::Resolved { source: "Secret c".into() },
            },
            withheld: withheld.then(|| Withheld { reason: "CredentialsUnavailable", message: String::new() }),
        }
    }

    /// What is asked (namespace, ServiceAccount, image), the keys answered with their passwords, the cache key
    /// type and seconds.
    type Case = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)], CacheKeyType, u64);

    #[test]
    fn the_kubelet_gets_exactly_the_profiles_that_select_the_requester_and_serve_the_image() {
        let profiles = [
            profile("static", spec("r.example.com", "CredentialProvider", None)),
            profile("secret-only", spec("s.example.com", "Secret", None)),
            profile("both", spec("b.example.com:5000", "Both", None)),
            profile("named", spec("n.example.com", "CredentialProvider", Some(&["builder", "ci-*"]))),
            profile("team", spec("p.example.com/team", "CredentialProvider", None)),
            // The whole registry of `team`, for another namespace: its answers are kept per image.
            profile("p-all", spec("p.example.com", "CredentialProvider", None)),
            profile("minted", spec("m.example.com", "CredentialProvider", None)),
            profile("withheld", spec("w.example.com", "CredentialProvider", None)),
            // Same key as `static`, later in name order: `static` keeps it.
            profile("zz-same", spec("r.example.com", "CredentialProvider", None)),
        ];
        let writtens = [
            written("r.example.com", "pw-static", None, false),
            written("s.example.com", "pw-secret", None, false),
            written("b.example.com:5000", "pw-both", None, false),
            written("n.example.com", "pw-named", None, false),
            written("p.example.com/team", "pw-team", None, false),
            written("p.example.com", "pw-p-all", None, false),
            written("m.example.com", "pw-minted", Some(100), false),
            written("w.example.com", "pw-withheld", None, true),
            written("r.example.com", "pw-zz", None, false),
        ];
        let meanings: Vec<Meaning> = profiles.iter().map(|p| Meaning::of(p, "regcred-system")).collect();
        let offers: Vec<Offer<'_>> = (0..profiles.len())
            .map(|i| Offer { profile: &profiles[i], meaning: &meanings[i], written: &writtens[i] })
            .collect();
        let (registry, image) = (CacheKeyType::Registry, CacheKeyType::Image);
        let cases: [(&str, Case); 13] = [
            ("static", ("team-a", "default", "r.example.com/app", &[("r.example.com", "pw-static")], registry, 60)),
            ("unselected namespace", ("shop", "default", "r.example.com/app", &[], image, 60)),
            ("excluded namespace", ("team-out", "default", "r.example.com/app", &[], image, 60)),
            ("Secret delivery only", ("team-a", "default", "s.example.com/app", &[], image, 60)),
            (
                "Both",
                ("team-a", "default", "b.example.com:5000/x/y", &[("b.example.com:5000", "pw-both")], registry, 60),
            ),
            ("another port", ("team-a", "default", "b.example.com/x", &[], image, 60)),
            (
                "named account",
                ("team-a", "ci-runner", "n.example.com/app", &[("n.example.com", "pw-named")], registry, 60),
            ),
            ("unnamed account", ("team-a", "default", "n.example.com/app", &[], image, 60)),
            (
                "path prefix",
                (
                    "team-a",
                    "default",
                    "p.example.com/team/app",
                    &[("p.example.com", "pw-p-all"), ("p.example.com/team", "pw-team")],
                    image,
                    60,
                ),
            ),
            // Host-only credentials, but kept per image: `team`'s path on the same registry serves other images.
            (
                "outside the path",
                ("team-a", "default", "p.example.com/other/app", &[("p.example.com", "pw-p-all")], image, 60),
            ),
            (
                "minted: half its life",
                ("team-a", "default", "m.example.com/a", &[("m.example.com", "pw-minted")], registry, 50),
            ),
            ("withheld", ("team-a", "default", "w.example.com/a", &[], image, 60)),
            ("not an image", ("team-a", "default", "Not An Image", &[], image, 60)),
        ];
        for (what, (namespace, account, img, want, key_type, seconds)) in cases {
            let requester = Requester { namespace: &ns(namespace), service_account: account };
            let got = answer(&offers, &meanings, requester, img, now(), MAX);
            let keys: Vec<(&str, &str)> = got.auth.iter().map(|(k, a)| (k.as_str(), a.password.as_str())).collect();
            assert_eq!(keys, want, "{what}");
            assert_eq!(got.cache_key_type, key_type, "{what}");
            assert_eq!(got.cache_duration, Duration::from_secs(seconds), "{what}");
        }
    }

    #[test]
    fn a_rival_writing_the_same_secret_name_stops_both_as_it_stops_their_secrets() {
        // Two profiles that both write the Secret `shared` (delivery Both) are rivals: neither serves the
        // namespace, by Secret or by the kubelet. A profile that writes no Secret (CredentialProvider) rivals none.
        let with = |delivery: &str| {
            let mut s = spec("r.example.com", delivery, None);
            s["secretName"] = "shared".into();
            s
        };
        let profiles =
            [profile("a", with("Both")), profile("b", with("Both")), profile("c", with("CredentialProvider"))];
        let meanings: Vec<Meaning> = profiles.iter().map(|p| Meaning::of(p, "regcred-system")).collect();
        let w = written("r.example.com", "pw", None, false);
        let requester = Requester { namespace: &ns("team-a"), service_account: "default" };
        let offer = |i: usize| [Offer { profile: &profiles[i], meaning: &meanings[i], written: &w }];
        let alone = answer(&offer(0), &meanings[..1], requester, "r.example.com/app", now(), MAX);
        assert_eq!(alone.profiles, ["a"]);
        let rivalled = answer(&offer(0), &meanings, requester, "r.example.com/app", now(), MAX);
        assert!(rivalled.auth.is_empty(), "{rivalled:?}");
        let beside = answer(
            &offer(2),
            &[&meanings[0], &meanings[2]].map(Clone::clone),
            requester,
            "r.example.com/app",
            now(),
            MAX,
        );
        assert_eq!(beside.profiles, ["c"], "a profile writing no Secret has no rival");
    }

    #[test]
    fn the_cache_never_outlives_the_bound_nor_half_a_tokens_life_and_is_never_zero() {
        let at = |s: i64| Some(now().checked_add(jiff::SignedDuration::from_secs(s)).unwrap());
        let cases = [
            (None, 60),
            (at(43_200), 60),
            (at(100), 50),
            (at(61), 30),
            (at(3), 1),
            (at(1), 1),
            (at(0), 1),
            (at(-30), 1),
        ];
        for (expires, want) in cases {
            assert_eq!(cache_duration(expires, now(), MAX), Duration::from_secs(want), "{expires:?}");
        }
        assert_eq!(cache_duration(None, now(), Duration::from_millis(1500)), Duration::from_secs(1));
    }

    #[test]
    fn the_soonest_token_sets_the_cache_of_an_answer_with_two() {
        let profiles = [
            profile("a", spec("r.example.com", "CredentialProvider", None)),
            profile("b", spec("r.example.com/team", "CredentialProvider", None)),
        ];
        let meanings: Vec<Meaning> = profiles.iter().map(|p| Meaning::of(p, "regcred-system")).collect();
        let writtens = [
            written("r.example.com", "hunter-a", Some(1000), false),
            written("r.example.com/team", "hunter-b", Some(40), false),
        ];
        let offers: Vec<Offer<'_>> =
            (0..2).map(|i| Offer { profile: &profiles[i], meaning: &meanings[i], written: &writtens[i] }).collect();
        let requester = Requester { namespace: &ns("team-a"), service_account: "default" };
        let got = answer(&offers, &meanings, requester, "r.example.com/team/app", now(), MAX);
        assert_eq!(got.profiles, ["a", "b"]);
        assert_eq!(got.cache_duration, Duration::from_secs(20));
        assert_eq!(got.cache_key_type, CacheKeyType::Image, "a path key keeps the answer to this image");
        assert!(!format!("{got:?}").contains("hunter"), "passwords never print");
    }
}
