//! The sync plan: which Secret writes bring the cluster to the desired state, and over which namespaces. Pure.
//!
//! - [`secrets`] compares the desired Secret with what the controller's cache shows and names the writes, nothing
//!   more. The deletions it finds are not writes yet: the deletion guard ([`crate::secrets::guard`]) decides which
//!   of them run.
//! - [`reach`] says which namespaces one reconcile plans: every one the profile may concern (a full plan), or only
//!   those that changed since, when nothing else did. What a full plan left (the namespaces selected, the failures)
//!   is kept in a [`Ledger`], so a new namespace costs one namespace's work, whatever the number of namespaces.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::api::{NamespaceFailure, RegistryProfile};
use crate::state::dirty::Changed;

pub use crate::secrets::Action;
pub use crate::secrets::guard::{Cause, Deletion};
pub use crate::state::compact::NameSet;
pub use crate::state::managed::{ObservedSecret, content_hash};

/// What a profile wants written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Desired {
    /// A Secret named `name` with content hashing to `content_hash` in every selected namespace.
    Write { name: String, content_hash: u64 },
    /// No Secret at all (anonymous access, or `spec.delivery: CredentialProvider`): whatever the profile wrote
    /// before goes.
    Nothing,
}

/// The writes to make, how many namespaces are already in sync, and the deletions for the guard to decide on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretPlan {
    pub actions: Vec<Action>,
    pub in_sync: usize,
    /// Secrets of ours no longer wanted, each with why.
    pub deletions: Vec<Deletion>,
    /// The namespaces where the profile has a Secret of its own now (those about to lose it included).
    pub holding: usize,
}

/// Plans the Secret writes for one profile over the namespaces in `selected` and `observed` (all of them, or
/// those [`reach`] names). `observed` holds the cached Secrets labelled with the profile's name (in any order);
/// only those whose ownerReferences name `profile_uid` are ever deleted, so a Secret someone else labelled is
/// never removed. Namespaces in `held` (where another profile writes a Secret of the same name) are left exactly
/// as they are: no write, and nothing of ours removed. `gone` says whether a namespace is being deleted or is no
/// longer there.
///
/// What it holds beyond its answer is `observed`, sorted in place: the namespaces to create the Secret in are
/// `selected` less those where it is (a merge of the two in order), and those holding one of ours are counted
/// as they pass. Its actions carry the names of `selected` and `observed`, not copies, in a buffer sized once,
/// with room for the deletions the guard releases.
pub fn secrets(
    target: &Desired,
    selected: &NameSet,
    held: &BTreeSet<&str>,
    mut observed: Vec<ObservedSecret>,
    profile_uid: &str,
    gone: impl Fn(&str) -> bool,
) -> SecretPlan {
    observed.sort_unstable_by(|a, b| a.namespace.cmp(&b.namespace));
    let wanted = match target {
        Desired::Write { name, content_hash } => Some((name.as_str(), *content_hash)),
        Desired::Nothing => None,
    };
    let ours = |o: &ObservedSecret| !held.contains(&*o.namespace);
    let mut plan = SecretPlan::default();
    let mut present = 0;
    let mut last_holding: Option<&str> = None;
    for o in observed.iter().filter(|o| ours(o)) {
        let owned = o.owner_uids.iter().any(|u| &**u == profile_uid);
        if owned && last_holding != Some(&*o.namespace) {
            plan.holding += 1;
            last_holding = Some(&*o.namespace);
        }
        match wanted {
            Some((name, content_hash)) if &*o.name == name && selected.contains(&o.namespace) => {
                present += 1;
                if !o.type_ok {
                    plan.actions.push(Action::Replace { namespace: o.namespace.clone(), uid: o.uid.to_string() });
                } else if o.content_hash != content_hash || !o.labels_ok || !owned {
                    plan.actions.push(Action::Update { namespace: o.namespace.clone() });
                } else {
                    plan.in_sync += 1;
                }
            }
            _ if owned => plan.deletions.push(deletion(o, cause(target, selected, &gone, o))),
            _ => {}
        }
    }
    if let Some((name, _)) = wanted {
        let held_here = held.iter().filter(|ns| selected.contains(ns)).count();
        let creates = selected.len().saturating_sub(present + held_here);
        plan.actions.reserve_exact(creates + plan.deletions.len());
        let mut there = observed.iter().filter(|o| ours(o) && &*o.name == name).map(|o| &*o.namespace).peekable();
        for ns in selected {
            while there.next_if(|there| *there < &**ns).is_some() {}
            if there.next_if(|there| *there == &**ns).is_none() && !held.contains(&**ns) {
                plan.actions.push(Action::Create { namespace: ns.clone() });
            }
        }
    }
    plan.actions.sort_unstable();
    plan.deletions.sort_unstable();
    plan
}

/// Why the Secret `o` of ours, which is not the one wanted in its namespace, would go.
fn cause(target: &Desired, selected: &NameSet, gone: impl Fn(&str) -> bool, o: &ObservedSecret) -> Cause {
    if gone(&o.namespace) {
        Cause::NamespaceGone
    } else if matches!(target, Desired::Nothing) {
        Cause::NotWanted
    } else if !selected.contains(&o.namespace) {
        Cause::Deselected
    } else {
        Cause::Renamed
    }
}

fn deletion(o: &ObservedSecret, cause: Cause) -> Deletion {
    Deletion { namespace: o.namespace.clone(), name: o.name.clone(), uid: o.uid.to_string(), cause }
}

/// A full plan is made at least this often, whatever else happens: the safety net under the plans of what
/// changed. (A healthy profile is requeued as often, see [`super::requeue_after`].)
pub const FULL_PLAN_EVERY: Duration = Duration::from_secs(600);

/// What the last full plan of a profile left, kept between its reconciles and brought up to date by each plan of
/// what changed since.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// What the plan depended on besides the namespaces (see [`basis`]).
    pub basis: u64,
    /// When the last full plan was made.
    pub at: Instant,
    /// The namespaces selected, each by the [`key`] of its name.
    selected: HashSet<u64>,
    /// The namespaces where something is not in place, with why (a failed write, a conflict, a ServiceAccount that
    /// could not be patched).
    failures: BTreeMap<String, Vec<NamespaceFailure>>,
    /// In ServiceAccount mode, how many accounts list the Secret, per namespace (by [`key`]) and in all.
    listed: Option<(HashMap<u64, i32>, i32)>,
    /// Whether the last full plan left nothing that only a full plan settles: no deletion held by the guard.
    pub settled: bool,
}

impl Ledger {
    /// What a full plan found: the namespaces it selected, the failures, and in ServiceAccount mode the accounts
    /// that list the Secret per namespace.
    pub fn new(
        basis: u64,
        at: Instant,
        selected: &NameSet,
        failures: impl IntoIterator<Item = NamespaceFailure>,
        listed: Option<BTreeMap<String, i32>>,
        settled: bool,
    ) -> Self {
        let selected = selected.iter().map(|ns| key(ns)).collect();
        let mut ledger = Self { basis, at, selected, failures: BTreeMap::new(), listed: None, settled };
        ledger.add_failures(failures);
        ledger.listed = listed.map(|per| {
            let total = per.values().sum();
            (per.iter().map(|(ns, n)| (key(ns), *n)).collect(), total)
        });
        ledger
    }

    fn add_failures(&mut self, failures: impl IntoIterator<Item = NamespaceFailure>) {
        for f in failures {
            self.failures.entry(f.namespace.clone()).or_default().push(f);
        }
    }

    /// Brings the ledger up to date with a plan over `planned` alone: which of them are `selected` now, their
    /// `failures`, and in ServiceAccount mode the accounts listing the Secret there (`listed`; a namespace not in
    /// it has none).
    pub fn update(
        &mut self,
        planned: &BTreeSet<String>,
        selected: &NameSet,
        failures: impl IntoIterator<Item = NamespaceFailure>,
        listed: &BTreeMap<String, i32>,
    ) {
        for ns in planned {
            if selected.contains(ns) {
                self.selected.insert(key(ns));
            } else {
                self.selected.remove(&key(ns));
            }
            self.failures.remove(ns);
            if let Some((per, total)) = &mut self.listed {
                let now = listed.get(ns).copied().unwrap_or(0);
                *total += now - per.insert(key(ns), now).unwrap_or(0);
            }
        }
        self.add_failures(failures);
    }

    /// How many namespaces are selected.
    pub fn selected(&self) -> usize {
        self.selected.len()
    }

    /// Where something is not in place.
    pub fn failures(&self) -> Vec<NamespaceFailure> {
        self.failures.values().flatten().cloned().collect()
    }

    /// In ServiceAccount mode, how many accounts list the Secret.
    pub fn listed(&self) -> Option<i32> {
        self.listed.as_ref().map(|(_, total)| *total)
    }
}

/// Each profile's [`Ledger`], by uid, shared by the reconciles (kube-runtime never runs two of one profile at once).
#[derive(Default)]
pub struct Ledgers(Mutex<HashMap<String, Ledger>>);

impl Ledgers {
    /// Takes the profile's ledger out, to be put back once the reconcile has brought it up to date.
    pub fn take(&self, uid: &str) -> Option<Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(uid)
    }

    /// Keeps `ledger` for the profile `uid`, and forgets those of profiles no longer among `profiles`.
    pub fn put(&self, uid: &str, ledger: Ledger, profiles: &[Arc<RegistryProfile>]) {
        let mut ledgers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ledgers.insert(uid.to_owned(), ledger);
        if ledgers.len() > profiles.len() {
            let live: HashSet<String> = profiles.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            ledgers.retain(|u, _| u == uid || live.contains(u));
        }
    }
}

/// A namespace's name as a ledger keeps it: 8 bytes however long the name (a profile over 50,000 namespaces
/// keeps about 600 KB), stable within the process. Two names colliding would only miscount them in status until
/// the next full plan.
fn key(namespace: &str) -> u64 {
    let mut h = DefaultHasher::new();
    namespace.hash(&mut h);
    h.finish()
}

/// What a full plan depends on besides the namespaces, the managed Secrets and the ServiceAccounts (whose changes
/// reach the reconcile as [`Changed`] namespaces): the profile as it is (uid, generation, its deletion
/// confirmation), what it writes, and the profiles that write a Secret of the same name (`rivals`: by name, uid and
/// generation), whose selection decides where it may write.
pub fn basis<'a>(
    uid: &str,
    generation: Option<i64>,
    confirmation: Option<&str>,
    desired: &Desired,
    expires_at: Option<jiff::Timestamp>,
    rivals: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<i64>)>,
) -> u64 {
    let mut h = DefaultHasher::new();
    (uid, generation, confirmation, desired, expires_at.map(jiff::Timestamp::as_nanosecond)).hash(&mut h);
    let mut rivals: Vec<_> = rivals.into_iter().collect();
    rivals.sort_unstable();
    rivals.hash(&mut h);
    h.finish()
}

/// Which namespaces one reconcile plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every namespace: a full plan.
    Every,
    /// Only these: the namespaces that changed since the last plan, and those where it failed.
    Only(BTreeSet<String>),
}

/// Which namespaces to plan now. Only those that `changed` (and those the last plans failed in, to retry them)
/// while the last full plan's `ledger` still holds: made over the same `basis`, settled, and not older than
/// [`FULL_PLAN_EVERY`]. Every namespace otherwise: on the first reconcile, when the profile, its credentials or a
/// rival changed, after a relist, and periodically.
pub fn reach(ledger: Option<&Ledger>, basis: u64, changed: Changed, now: Instant) -> Reach {
    let current = ledger.filter(|l| l.basis == basis && l.settled && now.duration_since(l.at) < FULL_PLAN_EVERY);
    match (current, changed) {
        (Some(ledger), Changed::Namespaces(mut names)) => {
            names.extend(ledger.failures.keys().cloned());
            Reach::Only(names)
        }
        _ => Reach::Every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "profile-uid";

    fn target(hash: u64) -> Desired {
        Desired::Write { name: "regcred-x".into(), content_hash: hash }
    }

    fn observed(ns: &str, hash: u64) -> ObservedSecret {
        ObservedSecret {
            namespace: ns.into(),
            name: "regcred-x".into(),
            uid: format!("uid-{ns}").as_str().into(),
            content_hash: hash,
            type_ok: true,
            labels_ok: true,
            owner_uids: Arc::from(vec![Arc::from(UID)]),
        }
    }

    fn set(items: &[&str]) -> NameSet {
        items.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn missing_secrets_are_created_and_current_ones_left_alone() {
        let p = secrets(&target(1), &set(&["a", "b"]), &BTreeSet::new(), vec![observed("a", 1)], UID, |_| false);
        assert_eq!(p.actions, vec![Action::Create { namespace: "b".into() }]);
        assert_eq!(p.in_sync, 1, "a");
    }

    #[test]
    fn nothing_changes_means_no_writes() {
        let obs: Vec<_> = ["a", "b", "c"].iter().map(|n| observed(n, 7)).collect();
        let p = secrets(&target(7), &set(&["a", "b", "c"]), &BTreeSet::new(), obs, UID, |_| false);
        assert!(p.actions.is_empty());
        assert_eq!(p.in_sync, 3);
    }

    #[test]
    fn drift_in_content_labels_or_owner_is_repaired() {
        let mut labels = observed("b", 1);
        labels.labels_ok = false;
        let mut owner = observed("c", 1);
        owner.owner_uids = Arc::from(vec![Arc::from("old-incarnation")]);
        let p = secrets(
            &target(1),
            &set(&["a", "b", "c"]),
            &BTreeSet::new(),
            vec![observed("a", 2), labels, owner],
            UID,
            |_| false,
        );
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
        let p = secrets(
            &target(1),
            &set(&["a", "both", "new"]),
            &held,
            vec![drifted.clone(), observed("a", 1)],
            UID,
            |_| false,
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.in_sync, 1, "a");
        let p = secrets(&Desired::Nothing, &set(&["both"]), &held, vec![drifted], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty(), "nothing of ours is removed where the conflict holds");
    }

    #[test]
    fn a_wrong_type_is_replaced() {
        let mut o = observed("a", 1);
        o.type_ok = false;
        let p = secrets(&target(1), &set(&["a"]), &BTreeSet::new(), vec![o], UID, |_| false);
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
        let p = secrets(&target(1), &set(&["a"]), &BTreeSet::new(), obs.to_vec(), UID, |ns| ns == "terminating");
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
        forged.owner_uids = Arc::new([]);
        let p = secrets(&target(1), &set(&[]), &BTreeSet::new(), vec![forged.clone()], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty());
        let p = secrets(&Desired::Nothing, &set(&[]), &BTreeSet::new(), vec![forged], UID, |_| false);
        assert!(p.actions.is_empty() && p.deletions.is_empty());
        assert_eq!(p.holding, 0);
    }

    #[test]
    fn anonymous_profiles_remove_what_they_wrote_and_create_nothing() {
        let p = secrets(&Desired::Nothing, &set(&["a", "b"]), &BTreeSet::new(), vec![observed("a", 1)], UID, |_| false);
        assert!(p.actions.is_empty());
        assert_eq!(p.deletions, vec![deletion("a", "regcred-x", "uid-a", Cause::NotWanted)]);
    }

    /// What, the namespaces selected, those a conflict holds, what is observed, where the Secret is created.
    type Case =
        (&'static str, &'static [&'static str], &'static [&'static str], Vec<ObservedSecret>, &'static [&'static str]);

    #[test]
    fn creates_are_the_selected_namespaces_without_the_secret_whatever_the_order_observed() {
        let renamed = |ns: &str| ObservedSecret { name: "old-name".into(), ..observed(ns, 1) };
        let cases: [Case; 8] = [
            ("none there", &["a", "b", "c"], &[], vec![], &["a", "b", "c"]),
            (
                "observed out of order",
                &["a", "b", "c", "d"],
                &[],
                vec![observed("d", 1), observed("b", 1)],
                &["a", "c"],
            ),
            ("observed outside the selection", &["b"], &[], vec![observed("c", 1), observed("a", 1)], &["b"]),
            ("another name there", &["a", "b"], &[], vec![renamed("a"), observed("b", 1)], &["a"]),
            ("both names there", &["a"], &[], vec![observed("a", 1), renamed("a")], &[]),
            ("a conflict holds", &["a", "b", "c"], &["b", "x"], vec![], &["a", "c"]),
            ("a conflict holds where it is", &["a", "b"], &["a"], vec![observed("a", 1)], &["b"]),
            ("nothing selected", &[], &[], vec![observed("a", 1)], &[]),
        ];
        for (what, selected, held, observed, want) in cases {
            let held: BTreeSet<&str> = held.iter().copied().collect();
            let p = secrets(&target(1), &set(selected), &held, observed, UID, |_| false);
            let creates: Vec<&str> = p
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Create { namespace } => Some(&**namespace),
                    _ => None,
                })
                .collect();
            assert_eq!(creates, want, "{what}");
        }
    }

    #[test]
    fn creates_come_first_then_updates_with_room_for_the_deletions_and_holding_counts_namespaces_in_any_order() {
        let renamed = |ns: &str| ObservedSecret { name: "old-name".into(), uid: "uid-old".into(), ..observed(ns, 1) };
        let obs = vec![observed("c", 1), renamed("b"), observed("gone", 2), observed("b", 1), renamed("c")];
        let p = secrets(&target(2), &set(&["a", "b", "c"]), &BTreeSet::new(), obs, UID, |_| false);
        assert_eq!(
            p.actions,
            vec![
                Action::Create { namespace: "a".into() },
                Action::Update { namespace: "b".into() },
                Action::Update { namespace: "c".into() },
            ]
        );
        assert_eq!(p.deletions.len(), 3);
        assert!(p.actions.capacity() >= p.actions.len() + p.deletions.len(), "released deletions would grow it");
        assert_eq!(p.holding, 3, "b, c and gone");
    }

    #[test]
    fn content_hash_depends_on_type_keys_and_values() {
        let base = content_hash("t", [("k", b"v".as_slice())]);
        assert_eq!(base, content_hash("t", [("k", b"v".as_slice())]));
        assert_ne!(base, content_hash("u", [("k", b"v".as_slice())]));
        assert_ne!(base, content_hash("t", [("j", b"v".as_slice())]));
        assert_ne!(base, content_hash("t", [("k", b"w".as_slice())]));
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn failure(ns: &str) -> NamespaceFailure {
        NamespaceFailure {
            namespace: ns.into(),
            reason: crate::api::conditions::CONFLICT.into(),
            message: String::new(),
        }
    }

    #[test]
    fn only_what_changed_is_planned_while_the_last_full_plan_holds() {
        let t0 = Instant::now();
        let ledger = Ledger::new(7, t0, &set(&["a", "b", "f"]), [failure("f")], None, true);
        let changed = |v: &[&str]| Changed::Namespaces(names(v));
        let later = t0 + Duration::from_secs(60);
        let cases = [
            ("nothing kept yet", None, 7, changed(&["n"]), later, Reach::Every),
            (
                "a namespace changed: it, and the failed one",
                Some(&ledger),
                7,
                changed(&["n"]),
                later,
                Reach::Only(names(&["f", "n"])),
            ),
            (
                "nothing changed: the failed one is retried",
                Some(&ledger),
                7,
                changed(&[]),
                later,
                Reach::Only(names(&["f"])),
            ),
            ("the profile or its credentials changed", Some(&ledger), 8, changed(&["n"]), later, Reach::Every),
            ("a relist", Some(&ledger), 7, Changed::Everything, later, Reach::Every),
            ("periodically", Some(&ledger), 7, changed(&["n"]), t0 + FULL_PLAN_EVERY, Reach::Every),
        ];
        for (what, ledger, basis, changed, now, want) in cases {
            assert_eq!(reach(ledger, basis, changed, now), want, "{what}");
        }
        let unsettled = Ledger { settled: false, ..ledger };
        assert_eq!(reach(Some(&unsettled), 7, changed(&["n"]), later), Reach::Every, "held deletions");
    }

    #[test]
    fn a_ledger_counts_what_each_plan_of_a_few_namespaces_found() {
        let listed = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let mut ledger = Ledger::new(1, Instant::now(), &set(&["a", "b", "c"]), [failure("c")], Some(listed), true);
        assert_eq!((ledger.selected(), ledger.failures().len(), ledger.listed()), (3, 1, Some(3)));
        // A new namespace (one account listing the Secret); c written at last; b relabelled out.
        let now_listed = BTreeMap::from([("n".to_owned(), 1)]);
        ledger.update(&names(&["n", "c", "b"]), &set(&["n", "c"]), [], &now_listed);
        assert_eq!((ledger.selected(), ledger.failures().len(), ledger.listed()), (3, 0, Some(2)));
        // Planned again, same answer: nothing counted twice; two failures in one namespace are both kept.
        ledger.update(&names(&["n"]), &set(&["n"]), [failure("n"), failure("n")], &now_listed);
        assert_eq!((ledger.selected(), ledger.failures().len(), ledger.listed()), (3, 2, Some(2)));
        let without = Ledger::new(1, Instant::now(), &set(&["a"]), [], None, true);
        assert_eq!(without.listed(), None, "ServiceAccount mode off");
    }

    #[test]
    fn the_basis_follows_what_a_full_plan_depends_on() {
        let desired = Desired::Write { name: "pull".into(), content_hash: 1 };
        let base = basis("uid", Some(1), None, &desired, None, [("b", Some("u-b"), Some(1))]);
        assert_eq!(base, basis("uid", Some(1), None, &desired, None, [("b", Some("u-b"), Some(1))]));
        let other = Desired::Write { name: "pull".into(), content_hash: 2 };
        for changed in [
            basis("uid", Some(2), None, &desired, None, [("b", Some("u-b"), Some(1))]),
            basis("uid", Some(1), Some("1"), &desired, None, [("b", Some("u-b"), Some(1))]),
            basis("uid", Some(1), None, &other, None, [("b", Some("u-b"), Some(1))]),
            basis("uid", Some(1), None, &Desired::Nothing, None, [("b", Some("u-b"), Some(1))]),
            basis("uid", Some(1), None, &desired, None, [("b", Some("u-b"), Some(2))]),
            basis("uid", Some(1), None, &desired, None, []),
        ] {
            assert_ne!(base, changed);
        }
    }
}
