//! The sync plan: which Secret writes bring the cluster to the desired state. Pure: it compares the desired
//! Secret with what the controller's cache shows and names the writes, nothing more. The deletions it finds are
//! not writes yet: the deletion guard ([`crate::secrets::guard`]) decides which of them run.

use std::collections::BTreeSet;

pub use crate::secrets::Action;
pub use crate::secrets::guard::{Cause, Deletion};
pub use crate::state::managed::{ObservedSecret, content_hash};

/// What a profile wants written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Secret named `name` with content hashing to `content_hash` in every selected namespace.
    Write { name: String, content_hash: u64 },
    /// No Secret at all (anonymous access): whatever the profile wrote before goes.
    Nothing,
}

/// The writes to make, the namespaces already in sync, and the deletions for the guard to decide on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub in_sync: BTreeSet<String>,
    /// Secrets of ours no longer wanted, each with why.
    pub deletions: Vec<Deletion>,
    /// The namespaces where the profile has a Secret of its own now (those about to lose it included).
    pub holding: usize,
}

/// Plans the writes for one profile. `observed` holds the cached Secrets labelled with the profile's name;
/// only those whose ownerReferences name `profile_uid` are ever deleted, so a Secret someone else labelled is
/// never removed. Namespaces in `held` (where another profile writes a Secret of the same name) are left exactly
/// as they are: no write, and nothing of ours removed. `gone` says whether a namespace is being deleted or is no
/// longer there.
pub fn plan(
    target: &Target,
    selected: &BTreeSet<String>,
    held: &BTreeSet<&str>,
    observed: &[ObservedSecret],
    profile_uid: &str,
    gone: impl Fn(&str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut seen: BTreeSet<&str> = held.clone();
    let mut holding: BTreeSet<&str> = BTreeSet::new();
    for o in observed.iter().filter(|o| !held.contains(&*o.namespace)) {
        let owned = o.owner_uids.iter().any(|u| &**u == profile_uid);
        if owned {
            holding.insert(&o.namespace);
        }
        match target {
            Target::Write { name, content_hash } if &*o.name == name && selected.contains(&*o.namespace) => {
                seen.insert(&*o.namespace);
                if !o.type_ok {
                    plan.actions.push(Action::Replace { namespace: o.namespace.to_string(), uid: o.uid.clone() });
                } else if o.content_hash != *content_hash || !o.labels_ok || !owned {
                    plan.actions.push(Action::Update { namespace: o.namespace.to_string() });
                } else {
                    plan.in_sync.insert(o.namespace.to_string());
                }
            }
            _ if owned => {
                let cause = if gone(&o.namespace) {
                    Cause::NamespaceGone
                } else if matches!(target, Target::Nothing) {
                    Cause::NotWanted
                } else if !selected.contains(&*o.namespace) {
                    Cause::Deselected
                } else {
                    Cause::Renamed
                };
                plan.deletions.push(Deletion {
                    namespace: o.namespace.to_string(),
                    name: o.name.to_string(),
                    uid: o.uid.clone(),
                    cause,
                });
            }
            _ => {}
        }
    }
    if matches!(target, Target::Write { .. }) {
        for ns in selected.iter().filter(|ns| !seen.contains(ns.as_str())) {
            plan.actions.push(Action::Create { namespace: ns.clone() });
        }
    }
    plan.holding = holding.len();
    plan.actions.sort();
    plan.deletions.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "profile-uid";

    fn target(hash: u64) -> Target {
        Target::Write { name: "regcred-x".into(), content_hash: hash }
    }

    fn observed(ns: &str, hash: u64) -> ObservedSecret {
        ObservedSecret {
            namespace: ns.into(),
            name: "regcred-x".into(),
            uid: format!("uid-{ns}"),
            content_hash: hash,
            type_ok: true,
            labels_ok: true,
            owner_uids: vec![UID.into()],
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn missing_secrets_are_created_and_current_ones_left_alone() {
        let p = plan(&target(1), &set(&["a", "b"]), &BTreeSet::new(), &[observed("a", 1)], UID, |_| false);
        assert_eq!(p.actions, vec![Action::Create { namespace: "b".into() }]);
        assert_eq!(p.in_sync, set(&["a"]));
    }

    #[test]
    fn nothing_changes_means_no_writes() {
        let obs: Vec<_> = ["a", "b", "c"].iter().map(|n| observed(n, 7)).collect();
        let p = plan(&target(7), &set(&["a", "b", "c"]), &BTreeSet::new(), &obs, UID, |_| false);
        assert!(p.actions.is_empty());
        assert_eq!(p.in_sync.len(), 3);
    }

    #[test]
    fn drift_in_content_labels_or_owner_is_repaired() {
        let mut labels = observed("b", 1);
        labels.labels_ok = false;
        let mut owner = observed("c", 1);
        owner.owner_uids = vec!["old-incarnation".into()];
        let p =
            plan(&target(1), &set(&["a", "b", "c"]), &BTreeSet::new(), &[observed("a", 2), labels, owner], UID, |_| {
                false
            });
        assert_eq!(
            p.actions,
            vec![
                Action::Update { namespace: "a".into() },
                Action::Update { namespace: "b".into() },
                Action::Update { namespace: "c".into() }
            ]
        );
    }

    #[test]
    fn namespaces_held_by_a_conflict_are_left_exactly_as_they_are() {
        let mut drifted = observed("both", 2);
        drifted.type_ok = false;
        let held = BTreeSet::from(["both", "new"]);
        let p =
            plan(&target(1), &set(&["a", "both", "new"]), &held, &[drifted.clone(), observed("a", 1)], UID, |_| false);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.in_sync, set(&["a"]));
        let p = plan(&Target::Nothing, &set(&["both"]), &held, &[drifted], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty(), "nothing of ours is removed where the conflict holds");
    }

    #[test]
    fn a_wrong_type_is_replaced() {
        let mut o = observed("a", 1);
        o.type_ok = false;
        let p = plan(&target(1), &set(&["a"]), &BTreeSet::new(), &[o], UID, |_| false);
        assert_eq!(p.actions, vec![Action::Replace { namespace: "a".into(), uid: "uid-a".into() }]);
    }

    fn deletion(ns: &str, name: &str, uid: &str, cause: Cause) -> Deletion {
        Deletion { namespace: ns.into(), name: name.into(), uid: uid.into(), cause }
    }

    #[test]
    fn deselected_renamed_and_gone_secrets_of_ours_are_deletions_by_uid_with_their_cause() {
        let mut renamed = observed("a", 1);
        renamed.name = "old-name".into();
        renamed.uid = "uid-old".into();
        let obs = [observed("a", 1), renamed, observed("gone", 1), observed("terminating", 1)];
        let p = plan(&target(1), &set(&["a"]), &BTreeSet::new(), &obs, UID, |ns| ns == "terminating");
        assert!(p.actions.is_empty(), "deletions are the guard's to release: {:?}", p.actions);
        assert_eq!(
            p.deletions,
            vec![
                deletion("a", "old-name", "uid-old", Cause::Renamed),
                deletion("gone", "regcred-x", "uid-gone", Cause::Deselected),
                deletion("terminating", "regcred-x", "uid-terminating", Cause::NamespaceGone),
            ]
        );
        assert_eq!(p.holding, 3, "namespaces, not Secrets");
    }

    #[test]
    fn secrets_not_owned_by_this_profile_are_never_deleted() {
        let mut forged = observed("elsewhere", 1);
        forged.owner_uids = vec![];
        let p = plan(&target(1), &set(&[]), &BTreeSet::new(), &[forged.clone()], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty());
        let p = plan(&Target::Nothing, &set(&[]), &BTreeSet::new(), &[forged], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty());
        assert_eq!(p.holding, 0);
    }

    #[test]
    fn anonymous_profiles_remove_what_they_wrote_and_create_nothing() {
        let p = plan(&Target::Nothing, &set(&["a", "b"]), &BTreeSet::new(), &[observed("a", 1)], UID, |_| false);
        assert!(p.actions.is_empty());
        assert_eq!(p.deletions, vec![deletion("a", "regcred-x", "uid-a", Cause::NotWanted)]);
    }

    #[test]
    fn content_hash_depends_on_type_keys_and_values() {
        let base = content_hash("t", [("k", b"v".as_slice())]);
        assert_eq!(base, content_hash("t", [("k", b"v".as_slice())]));
        assert_ne!(base, content_hash("u", [("k", b"v".as_slice())]));
        assert_ne!(base, content_hash("t", [("j", b"v".as_slice())]));
        assert_ne!(base, content_hash("t", [("k", b"w".as_slice())]));
    }
}
