//! The kubelet's pull failures, as its Events tell them: which image, and the registry's reason. The reading is
//! pure; [`PullFailures`] keeps the recent ones per profile, within a fixed bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::PullFailure;

/// Failures kept (and shown in status) per profile.
pub const PER_PROFILE: usize = 10;
/// How long a failure counts as recent.
pub const RECENT: Duration = Duration::from_secs(60 * 60);
/// The longest kubelet message kept.
const MESSAGE_LIMIT: usize = 256;

/// The image and the reason of a kubelet Event `Failed to pull image "<image>": <detail>`; `None` for any other
/// message.
pub fn parse(message: &str) -> Option<(String, &'static str)> {
    let rest = message.strip_prefix("Failed to pull image \"")?;
    let (image, detail) = rest.split_once('"')?;
    Some((image.to_owned(), reason(detail)))
}

/// The registry's reason, from the container runtime's words (containerd and CRI-O phrase them alike).
pub fn reason(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if any(&["x509:", "certificate signed by unknown authority", "tls: failed to verify"]) {
        "TLSUntrusted"
    } else if any(&[
        "401 unauthorized",
        "403 forbidden",
        "unauthorized",
        "authorization failed",
        "access denied",
        "denied:",
    ]) {
        "AuthenticationFailed"
    } else if any(&["code = notfound", ": not found", "404 not found", "manifest unknown", "no match for platform"]) {
        "ImageNotFound"
    } else if any(&[
        "dial tcp",
        "connection refused",
        "i/o timeout",
        "no such host",
        "context deadline exceeded",
        "tls handshake timeout",
        "connection reset",
        "no route to host",
    ]) {
        "RegistryUnreachable"
    } else {
        "PullFailed"
    }
}

/// The kubelet's message, shortened to what status holds.
pub fn shorten(message: &str) -> String {
    if message.chars().count() <= MESSAGE_LIMIT {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(MESSAGE_LIMIT - 1).collect();
    cut.push('…');
    cut
}

/// Adds `seen` to `list` (newest first, at most [`PER_PROFILE`]): an entry for the same Pod and image is
/// replaced, keeping the higher count. Returns the count the list had for that Pod and image (`None`: new). Pure.
pub fn merge(list: &mut Vec<PullFailure>, seen: PullFailure) -> Option<i32> {
    let same = |f: &PullFailure| f.namespace == seen.namespace && f.pod == seen.pod && f.image == seen.image;
    let previous = list.iter().position(same).map(|i| list.remove(i)).map(|p| p.count);
    let count = previous.map_or(seen.count, |p| p.max(seen.count));
    list.insert(0, PullFailure { count, ..seen });
    list.sort_by_key(|f| std::cmp::Reverse(f.last_seen.0));
    list.truncate(PER_PROFILE);
    previous
}

/// The profiles a failed pull of `image` in `ns` is reported to: those whose registry serves the image and that
/// select the namespace, or failing that, every profile whose registry serves it.
pub fn profiles_for(
    image: &str,
    profiles: &[(std::sync::Arc<crate::api::RegistryProfile>, std::sync::Arc<crate::resolve::Meaning>)],
    ns: &crate::resolve::selection::NamespaceInfo,
) -> Vec<String> {
    let Some(parsed) = crate::registry::reference::parse_memo(image) else { return Vec::new() };
    let serving: Vec<&crate::resolve::Meaning> =
        profiles.iter().map(|(_, m)| &**m).filter(|m| m.keys.iter().any(|(_, k)| k.matches(&parsed))).collect();
    let selecting: Vec<String> = serving.iter().filter(|m| m.selects(ns)).map(|m| m.name.clone()).collect();
    if selecting.is_empty() { serving.iter().map(|m| m.name.clone()).collect() } else { selecting }
}

/// The failures of `list` seen within [`RECENT`] of `now`.
pub fn recent(list: &[PullFailure], now: jiff::Timestamp) -> Vec<PullFailure> {
    list.iter().filter(|f| now.duration_since(f.last_seen.0).unsigned_abs() < RECENT).cloned().collect()
}

/// When the oldest of `list` stops being recent (a status without it is due then).
pub fn next_expiry(list: &[PullFailure], now: jiff::Timestamp) -> Option<Duration> {
    list.iter().map(|f| RECENT.saturating_sub(now.duration_since(f.last_seen.0).unsigned_abs())).min()
}

/// The recent pull failures of every profile. Bounded: [`PER_PROFILE`] per profile.
#[derive(Default)]
pub struct PullFailures {
    by_profile: Mutex<HashMap<String, Vec<PullFailure>>>,
}

impl PullFailures {
    /// Records a failure for `profile`; the count it had for the Pod and image (`None`: new).
    pub fn record(&self, profile: &str, seen: PullFailure) -> Option<i32> {
        let mut all = self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        merge(all.entry(profile.to_owned()).or_default(), seen)
    }

    /// The recent failures of `profile`, dropping the others.
    pub fn recent(&self, profile: &str, now: jiff::Timestamp) -> Vec<PullFailure> {
        let mut all = self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(list) = all.get_mut(profile) else { return Vec::new() };
        *list = recent(list, now);
        let out = list.clone();
        if out.is_empty() {
            all.remove(profile);
        }
        out
    }

    /// Forgets profiles `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_profile.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|p, _| keep(p));
    }
}

/// A failure as status shows it.
pub fn failure(
    namespace: &str,
    pod: &str,
    image: &str,
    reason: &str,
    message: &str,
    count: i32,
    at: jiff::Timestamp,
) -> PullFailure {
    PullFailure {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        image: image.to_owned(),
        reason: reason.to_owned(),
        message: shorten(message),
        count,
        last_seen: Time(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_messages_give_the_image_and_the_registrys_reason() {
        let cases = [
            (
                r#"Failed to pull image "127.0.0.1:5000/team/app:1": failed to pull and unpack image "127.0.0.1:5000/team/app:1": failed to resolve reference "127.0.0.1:5000/team/app:1": unexpected status from HEAD request to https://127.0.0.1:5000/v2/team/app/manifests/1: 401 Unauthorized"#,
                "AuthenticationFailed",
            ),
            (
                r#"Failed to pull image "r.example.com/app:2": rpc error: code = NotFound desc = failed to pull and unpack image "r.example.com/app:2": failed to resolve reference "r.example.com/app:2": r.example.com/app:2: not found"#,
                "ImageNotFound",
            ),
            (
                r#"Failed to pull image "r.example.com/app:2": failed to resolve reference "r.example.com/app:2": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"#,
                "AuthenticationFailed",
            ),
            (
                r#"Failed to pull image "10.0.0.1:5000/app:1": failed to do request: Head "https://10.0.0.1:5000/v2/app/manifests/1": dial tcp 10.0.0.1:5000: connect: connection refused"#,
                "RegistryUnreachable",
            ),
            (
                r#"Failed to pull image "r.example.com/app:1": failed to do request: Head "https://r.example.com/v2/app/manifests/1": tls: failed to verify certificate: x509: certificate signed by unknown authority"#,
                "TLSUntrusted",
            ),
            (r#"Failed to pull image "r.example.com/app:1": something else entirely"#, "PullFailed"),
        ];
        for (message, want) in cases {
            let (image, reason) = parse(message).unwrap();
            assert!(message.contains(&format!("\"{image}\"")));
            assert_eq!(reason, want, "{message}");
        }
        for other in ["Error: ErrImagePull", "Back-off pulling image \"x\"", "Failed to pull image x", ""] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    fn at(minutes_ago: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 - minutes_ago * 60).unwrap()
    }

    #[test]
    fn failures_are_kept_newest_first_once_per_pod_and_image_within_a_bound() {
        let mut list = Vec::new();
        assert_eq!(merge(&mut list, failure("a", "p", "img", "ImageNotFound", "m", 1, at(5))), None);
        // The same Pod and image again: not new, the count grows, the time moves.
        assert_eq!(merge(&mut list, failure("a", "p", "img", "ImageNotFound", "m", 3, at(1))), Some(1));
        assert_eq!((list.len(), list[0].count, list[0].last_seen.0), (1, 3, at(1)));
        for i in 0..20 {
            merge(&mut list, failure("a", &format!("p{i}"), "img", "AuthenticationFailed", "m", 1, at(2)));
        }
        assert_eq!(list.len(), PER_PROFILE);
        assert_eq!(list[0].pod, "p");
        // Older than an hour: no longer recent, and due to leave status when it turns so.
        let now = at(0);
        let old = vec![
            failure("a", "old", "img", "PullFailed", "m", 1, at(61)),
            failure("a", "new", "img", "PullFailed", "m", 1, at(50)),
        ];
        assert_eq!(recent(&old, now).iter().map(|f| f.pod.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(next_expiry(&recent(&old, now), now), Some(Duration::from_secs(10 * 60)));
        assert_eq!(shorten(&"x".repeat(1000)).chars().count(), MESSAGE_LIMIT);
    }
}
