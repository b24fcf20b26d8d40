//! The sync plan: which Secret writes bring the cluster to the desired state. Pure: it compares the desired
//! Secret with what the controller's cache shows and names the writes, nothing more.

use std::collections::BTreeSet;

pub use crate::secrets::Action;
pub use crate::state::managed::{ObservedSecret, content_hash};

/// What a profile wants written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Secret named `name` with content hashing to `content_hash` in every selected namespace.
    Write { name: String, content_hash: u64 },
    /// No Secret at all (anonymous access): whatever the profile wrote before goes.
    Nothing,
}

/// The writes to make, and the namespaces already in sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub in_sync: BTreeSet<String>,
}

/// Plans the writes for one profile. `observed` holds the cached Secrets labelled with the profile's name;
/// only those whose ownerReferences name `profile_uid` are ever deleted, so a Secret someone else labelled is
/// never removed. Namespaces in `held` (where another profile writes a Secret of the same name) are left exactly
/// as they are: no write, and nothing of ours removed.
pub fn plan(
    target: &Target,
    selected: &BTreeSet<String>,
    held: &BTreeSet<&str>,
    observed: &[ObservedSecret],
    profile_uid: &str,
) -> Plan {
    let mut plan = Plan::default();
    let mut seen: BTreeSet<&str> = held.clone();
    for o in observed.iter().filter(|o| !held.contains(&*o.namespace)) {
        let owned = o.owner_uids.iter().any(|u| &**u == profile_uid);
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
            _ if owned => plan.actions.push(Action::Delete {
                namespace: o.namespace.to_string(),
                name: o.name.to_string(),
                uid: o.uid.clone(),
            }),
            _ => {}
        }
    }
    if matches!(target, Target::Write { .. }) {
        for ns in selected.iter().filter(|ns| !seen.contains(ns.as_str())) {
            plan.actions.push(Action::Create { namespace: ns.clone() });
        }
    }
    plan.actions.sort();
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
        let p = plan(&target(1), &set(&["a", "b"]), &BTreeSet::new(), &[observed("a", 1)], UID);
        assert_eq!(p.actions, vec![Action::Create { namespace: "b".into() }]);
        assert_eq!(p.in_sync, set(&["a"]));
    }

    #[test]
    fn nothing_changes_means_no_writes() {
        let obs: Vec<_> = ["a", "b", "c"].iter().map(|n| observed(n, 7)).collect();
        let p = plan(&target(7), &set(&["a", "b", "c"]), &BTreeSet::new(), &obs, UID);
        assert!(p.actions.is_empty());
        assert_eq!(p.in_sync.len(), 3);
    }

    #[test]
    fn drift_in_content_labels_or_owner_is_repaired() {
        let mut labels = observed("b", 1);
        labels.labels_ok = false;
        let mut owner = observed("c", 1);
        owner.owner_uids = vec!["old-incarnation".into()];
        let p = plan(&target(1), &set(&["a", "b", "c"]), &BTreeSet::new(), &[observed("a", 2), labels, owner], UID);
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
        let p = plan(&target(1), &set(&["a", "both", "new"]), &held, &[drifted.clone(), observed("a", 1)], UID);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.in_sync, set(&["a"]));
        let p = plan(&Target::Nothing, &set(&["both"]), &held, &[drifted], UID);
        assert!(p.actions.is_empty(), "nothing of ours is removed where the conflict holds");
    }

    #[test]
    fn a_wrong_type_is_replaced() {
        let mut o = observed("a", 1);
        o.type_ok = false;
        let p = plan(&target(1), &set(&["a"]), &BTreeSet::new(), &[o], UID);
        assert_eq!(p.actions, vec![Action::Replace { namespace: "a".into(), uid: "uid-a".into() }]);
    }

    #[test]
    fn deselected_and_renamed_secrets_of_ours_are_deleted_by_uid() {
        let mut renamed = observed("a", 1);
        renamed.name = "old-name".into();
        renamed.uid = "uid-old".into();
        let p =
            plan(&target(1), &set(&["a"]), &BTreeSet::new(), &[observed("a", 1), renamed, observed("gone", 1)], UID);
        assert_eq!(
            p.actions,
            vec![
                Action::Delete { namespace: "a".into(), name: "old-name".into(), uid: "uid-old".into() },
                Action::Delete { namespace: "gone".into(), name: "regcred-x".into(), uid: "uid-gone".into() },
            ]
        );
    }

    #[test]
    fn secrets_not_owned_by_this_profile_are_never_deleted() {
        let mut forged = observed("elsewhere", 1);
        forged.owner_uids = vec![];
        let p = plan(&target(1), &set(&[]), &BTreeSet::new(), &[forged.clone()], UID);
        assert!(p.actions.is_empty());
        let p = plan(&Target::Nothing, &set(&[]), &BTreeSet::new(), &[forged], UID);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn anonymous_profiles_remove_what_they_wrote_and_create_nothing() {
        let p = plan(&Target::Nothing, &set(&["a", "b"]), &BTreeSet::new(), &[observed("a", 1)], UID);
        assert_eq!(
            p.actions,
            vec![Action::Delete { namespace: "a".into(), name: "regcred-x".into(), uid: "uid-a".into() }]
        );
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
