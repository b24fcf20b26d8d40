//! The deletion guard: which of the deletions a reconcile planned may run now, and which are held until someone
//! confirms them. Pure: the planned deletions, why each would happen, and how many namespaces hold the profile's
//! Secret go in; the released deletions and the held ones come out.
//!
//! One profile edit (a selector typo, a `secretName` rename, an `anonymous: true`, a `delivery:
//! CredentialProvider`) or one GitOps sync that relabels many namespaces would otherwise delete every Secret the
//! profile wrote in one reconcile. Running Pods keep running, but every new replica, rollout or restart on another
//! node then fails to pull (until the nodes run the credential provider). So a change that would take the
//! profile's Secret out of more than [`MAX_UNHELD`] namespaces *and* out of more than half of the namespaces that
//! hold it is held: those Secrets stay in place until the change is confirmed (the
//! [`crate::names::CONFIRM_DELETIONS_ANNOTATION`] annotation set to the profile's `metadata.generation`) or
//! reverted. Everything else in the reconcile goes on: new namespaces get their Secret, a renamed Secret is written
//! under its new name beside the held old one.
//!
//! Why these bounds, so that ordinary work is never held:
//! - at most [`MAX_UNHELD`] namespaces at once are never held, whatever the profile's size: a namespace relabelled
//!   out, or a GitOps sync that removes a label from three namespaces, goes through at once, and a profile of one
//!   to three namespaces is never held at all (its whole footprint is that small);
//! - more than half: a deliberate change rarely takes a profile out of most of the namespaces it serves, while
//!   every accident the guard is for takes it out of all of them (a typo in a selector matches nothing, a rename
//!   replaces every Secret's name). A profile of 10,000 namespaces that stops serving a team's 40 namespaces, or
//!   even 4,000 of them, is not held; one of 5 namespaces whose selector stops matching is.
//! - a hold, once begun, lasts while more than [`MAX_UNHELD`] namespaces would still lose the Secret, whatever
//!   their share: a mistaken selector that matches other namespaces gets Secrets written there by the very
//!   reconcile that holds the deletions, and the share would otherwise fall below half and release them.
//!
//! Never held: deletions in a namespace that is being deleted or is gone (its Secrets go with it anyway), and a
//! deleted profile's Secrets (the garbage collector removes them through their ownerReferences; regcred does not
//! delete them itself). Replacing a Secret whose type is wrong (delete and create at once) is not a deletion here.
//!
//! Enforced where the effect happens: the writer ([`super::Writer`]) deletes only a [`Released`] deletion, which
//! only [`decide`] makes, so no path can delete a Secret the guard did not release.

use std::collections::BTreeSet;
use std::sync::Arc;

/// At most this many namespaces may lose the profile's Secret at once without a hold.
pub const MAX_UNHELD: usize = 3;

/// Why a Secret of a profile would be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The namespace is no longer selected (a selector, `names` or `exclude` change, or the namespace's labels).
    Deselected,
    /// The namespace is still selected, but the Secret has a name the profile no longer writes (after a
    /// `secretName` change).
    Renamed,
    /// The profile writes no Secret any more (it turned anonymous, or its `spec.delivery` to `CredentialProvider`).
    NotWanted,
    /// The namespace is being deleted, or is gone.
    NamespaceGone,
    /// The profile is being deleted.
    ProfileDeleted,
}

impl Cause {
    /// Whether deletions for this cause may be held.
    pub fn guarded(self) -> bool {
        matches!(self, Self::Deselected | Self::Renamed | Self::NotWanted)
    }
}

/// One Secret a reconcile would delete: exactly the object with `uid`. The namespace and name are the state
/// index's shared copies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deletion {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: String,
    pub cause: Cause,
}

/// A deletion the guard let through. Only [`decide`] makes one, and the writer deletes nothing else.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Released(Deletion);

impl Released {
    pub fn deletion(&self) -> &Deletion {
        &self.0
    }
}

/// What may be deleted now, and what is held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub released: Vec<Released>,
    pub held: Vec<Deletion>,
}

/// Decides which of `deletions` run now. `holding`: the namespaces where the profile has a Secret now (the ones
/// about to lose it included); `was_holding`: the profile's last status said deletions were held; `confirmed`: the
/// profile carries a confirmation for its current generation ([`confirmed`]).
pub fn decide(deletions: Vec<Deletion>, holding: usize, was_holding: bool, confirmed: bool) -> Decision {
    let losing = deletions.iter().filter(|d| d.cause.guarded()).map(|d| &*d.namespace).collect::<BTreeSet<_>>();
    let hold = !confirmed && losing.len() > MAX_UNHELD && (was_holding || losing.len() * 2 > holding);
    let mut decision = Decision::default();
    for d in deletions {
        if hold && d.cause.guarded() {
            decision.held.push(d);
        } else {
            decision.released.push(Released(d));
        }
    }
    decision
}

/// Whether `annotation` (the profile's [`crate::names::CONFIRM_DELETIONS_ANNOTATION`]) confirms the deletions of
/// the profile at `generation`. A confirmation names the generation it was given for: a later edit of the spec (a
/// new typo) needs a new one, so a confirmation left on the profile never releases a later mistake.
pub fn confirmed(annotation: Option<&str>, generation: Option<i64>) -> bool {
    match (annotation.map(str::trim), generation) {
        (Some(value), Some(generation)) => value.parse::<i64>().ok() == Some(generation),
        _ => false,
    }
}

/// The condition message (and Event note) for `held`: how many, where, why, and exactly how to confirm or revert.
/// `holding` as for [`decide`]; `profile` and `generation` are the profile's.
pub fn message(held: &[Deletion], holding: usize, profile: &str, generation: Option<i64>) -> String {
    let namespaces: BTreeSet<&str> = held.iter().map(|d| &*d.namespace).collect();
    let shown: Vec<&str> = namespaces.iter().take(5).copied().collect();
    let count = |cause| held.iter().filter(|d| d.cause == cause).count();
    let causes: Vec<String> = [
        (Cause::Deselected, "in namespaces no longer selected"),
        (Cause::Renamed, "under a former secretName"),
        (Cause::NotWanted, "no longer wanted (anonymous access, or delivery CredentialProvider)"),
    ]
    .into_iter()
    .filter_map(|(cause, what)| Some(count(cause)).filter(|n| *n > 0).map(|n| format!("{n} {what}")))
    .collect();
    format!(
        "{} Secrets would be deleted at once, from {} of the {holding} namespaces that hold this profile's Secret \
         ({}{}): {}. They are kept until the change is confirmed. To delete them: kubectl annotate \
         registryprofile {profile} {}={} --overwrite. To keep them: revert the change (spec.namespaces, \
         spec.secretName, spec.delivery, or the namespaces' labels).",
        held.len(),
        namespaces.len(),
        shown.join(", "),
        if namespaces.len() > shown.len() { ", ..." } else { "" },
        causes.join(", "),
        crate::names::CONFIRM_DELETIONS_ANNOTATION,
        generation.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What would be deleted, the namespaces holding the Secret, was holding, confirmed; how many are held, and why.
    type Case = (Vec<Deletion>, usize, bool, bool, usize, &'static str);

    fn deletions(cause: Cause, namespaces: std::ops::Range<usize>) -> Vec<Deletion> {
        namespaces
            .map(|i| Deletion {
                namespace: format!("ns-{i:05}").into(),
                name: "pull".into(),
                uid: format!("u{i}"),
                cause,
            })
            .collect()
    }

    fn both(a: Vec<Deletion>, b: Vec<Deletion>) -> Vec<Deletion> {
        a.into_iter().chain(b).collect()
    }

    #[test]
    fn only_large_changes_to_most_of_a_profile_are_held() {
        use Cause::{Deselected, NamespaceGone, NotWanted, ProfileDeleted, Renamed};
        let cases: Vec<Case> = vec![
            (deletions(Deselected, 0..1), 1, false, false, 0, "a profile of one namespace, deselected"),
            (deletions(Deselected, 0..2), 2, false, false, 0, "a profile of two namespaces, selector typo"),
            (deletions(Deselected, 0..3), 3, false, false, 0, "three namespaces at most are never held"),
            (deletions(Deselected, 0..3), 5, false, false, 0, "a GitOps sync relabels three of five namespaces"),
            (deletions(Deselected, 0..5), 5, false, false, 5, "a profile of five namespaces, selector typo"),
            (deletions(Deselected, 0..4), 5, false, false, 4, "four of five namespaces deselected"),
            (deletions(Deselected, 0..4), 10, false, false, 0, "four of ten: not most of them"),
            (deletions(Deselected, 0..6), 10, false, false, 6, "six of ten"),
            (deletions(Deselected, 0..10_000), 10_000, false, false, 10_000, "10,000 namespaces, selector typo"),
            (deletions(Deselected, 0..40), 10_000, false, false, 0, "a team of 40 namespaces leaves"),
            (deletions(Deselected, 0..4_000), 10_000, false, false, 0, "4,000 of 10,000: fewer than half"),
            (deletions(Renamed, 0..10_000), 10_000, false, false, 10_000, "secretName renamed, 10,000 namespaces"),
            (deletions(Renamed, 0..2), 2, false, false, 0, "secretName renamed on a profile of two namespaces"),
            (deletions(NotWanted, 0..8), 8, false, false, 8, "turned anonymous by mistake"),
            (deletions(NamespaceGone, 0..500), 500, false, false, 0, "namespaces being deleted are never held"),
            (deletions(ProfileDeleted, 0..500), 500, false, false, 0, "a deleted profile is never held"),
            (deletions(Deselected, 0..10), 10, false, true, 0, "confirmed"),
            (deletions(Deselected, 0..10), 10, true, true, 0, "confirmed while held"),
            // The typo'd selector matched 1,000 other namespaces, which got their Secret: still held.
            (deletions(Deselected, 0..100), 1_100, true, false, 100, "a hold lasts while the change does"),
            (deletions(Deselected, 0..3), 1_100, true, false, 0, "reverted down to three namespaces: released"),
            (deletions(Deselected, 0..100), 1_100, false, false, 0, "the same change, never held: not most"),
            // Namespaces being deleted neither count towards a hold nor are held with one.
            (
                both(deletions(Deselected, 0..3), deletions(NamespaceGone, 3..10)),
                10,
                false,
                false,
                0,
                "mixed, 3 guarded",
            ),
            (
                both(deletions(Deselected, 0..6), deletions(NamespaceGone, 6..10)),
                10,
                false,
                false,
                6,
                "mixed, 6 guarded",
            ),
        ];
        for (planned, holding, was_holding, confirmed, held, why) in cases {
            let total = planned.len();
            let d = decide(planned, holding, was_holding, confirmed);
            assert_eq!(d.held.len(), held, "{why}");
            assert_eq!(d.released.len(), total - held, "{why}: the rest is released");
            assert!(d.held.iter().all(|h| h.cause.guarded()), "{why}");
        }
    }

    #[test]
    fn namespaces_not_secrets_are_counted() {
        // A rename in a namespace that is also deselected: two Secrets, one namespace.
        let mut two = deletions(Cause::Deselected, 0..3);
        two.extend(deletions(Cause::Renamed, 0..3));
        assert!(decide(two, 3, false, false).held.is_empty(), "three namespaces lose the profile: not held");
    }

    #[test]
    fn a_confirmation_names_the_current_generation() {
        let cases = [
            (Some("7"), Some(7), true),
            (Some(" 7 "), Some(7), true),
            (Some("6"), Some(7), false),
            (Some("8"), Some(7), false),
            (Some("yes"), Some(7), false),
            (Some(""), Some(7), false),
            (None, Some(7), false),
            (Some("7"), None, false),
        ];
        for (annotation, generation, want) in cases {
            assert_eq!(confirmed(annotation, generation), want, "{annotation:?} at {generation:?}");
        }
    }

    #[test]
    fn the_message_names_the_count_where_why_and_how_to_confirm() {
        let held = both(deletions(Cause::Deselected, 0..7), deletions(Cause::Renamed, 7..8));
        let m = message(&held, 9, "team-a", Some(4));
        assert!(m.starts_with("8 Secrets would be deleted at once, from 8 of the 9 namespaces"), "{m}");
        assert!(m.contains("(ns-00000, ns-00001, ns-00002, ns-00003, ns-00004, ...)"), "{m}");
        assert!(m.contains("7 in namespaces no longer selected, 1 under a former secretName"), "{m}");
        assert!(
            m.contains("kubectl annotate registryprofile team-a regcred.dev/confirm-deletions=4 --overwrite"),
            "{m}"
        );
        assert!(m.contains("revert the change"), "{m}");
    }
}
