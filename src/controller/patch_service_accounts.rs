//! ServiceAccount mode: a profile can also list its Secret in the `imagePullSecrets` of named ServiceAccounts,
//! so Pods get credentials from the ServiceAccount admission plugin even while the webhook is down.
//!
//! regcred adds and removes only its own entries. Which entries are its own is recorded on the ServiceAccount in
//! the [`RECORD_ANNOTATION`] (`profile=secret` pairs): an entry someone else put there is never recorded, so it is
//! never removed. `imagePullSecrets` is an atomic list for server-side apply, so changes are merge patches of the
//! whole list guarded by the `resourceVersion` they were computed from; a conflict recomputes from a fresh read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::state::service_accounts::{RECORD_ANNOTATION, names_match, record_of, render_record};

/// What a profile wants of one ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// The ServiceAccount lists this Secret (the Secret is in place in its namespace).
    Listed(String),
    /// Whatever this profile added goes (the profile is gone, or no longer selects the namespace or the account).
    Removed,
    /// Leave it as it is (the Secret is not in place yet, or the profile's credentials do not resolve).
    Unchanged,
}

/// A ServiceAccount's new `imagePullSecrets` and record annotation (`None`: remove the annotation).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub record: Option<String>,
}

/// The change `profile` makes to a ServiceAccount whose list is `current` and whose record is `record`, or `None`
/// when there is nothing to do. Pure.
///
/// - `Listed(s)`: `s` is added when missing and recorded as this profile's; an `s` already listed that regcred did
///   not add stays unrecorded (so it is never removed). If the profile's Secret name changed, its old entry goes.
/// - `Removed`: the entry this profile recorded goes, unless another recorded profile uses the same Secret name.
pub fn change(
    current: &[LocalObjectReference],
    record: &BTreeMap<String, String>,
    profile: &str,
    want: &Want,
) -> Option<Change> {
    let mine = record.get(profile);
    let mut list = current.to_vec();
    let mut record = record.clone();
    let shared =
        |record: &BTreeMap<String, String>, secret: &str| record.iter().any(|(p, s)| p != profile && s == secret);
    let remove_mine = |list: &mut Vec<LocalObjectReference>, record: &mut BTreeMap<String, String>| {
        if let Some(old) = record.remove(profile)
            && !shared(record, &old)
        {
            list.retain(|r| r.name != old);
        }
    };
    match want {
        Want::Unchanged => return None,
        Want::Removed => {
            mine?;
            remove_mine(&mut list, &mut record);
        }
        Want::Listed(secret) => {
            let listed = current.iter().any(|r| &r.name == secret);
            match mine {
                Some(s) if s == secret && listed => return None,
                // Listed by someone else: theirs, left alone and not recorded.
                None if listed => return None,
                Some(s) if s != secret => remove_mine(&mut list, &mut record),
                _ => {}
            }
            // Added (and recorded) only when missing: an entry someone else listed is never recorded as ours.
            if !list.iter().any(|r| &r.name == secret) {
                list.push(LocalObjectReference { name: secret.clone() });
                record.insert(profile.to_owned(), secret.clone());
            }
        }
    }
    Some(Change { image_pull_secrets: list, record: render_record(&record) })
}

/// What a profile wants of the ServiceAccount `account` in `namespace`. Pure.
///
/// `patterns` are the profile's `serviceAccounts.names` (`None`: ServiceAccount mode is off); `secret` the
/// Secret it writes (`None`: it writes none, as with anonymous access or `spec.delivery: CredentialProvider`);
/// `in_place` whether that Secret is in place in the namespace. An account is only ever pointed at a Secret that
/// exists.
pub fn want(patterns: Option<&[String]>, account: &str, selected: bool, secret: Option<&str>, in_place: bool) -> Want {
    let named = patterns.is_some_and(|p| names_match(p, account));
    match secret {
        Some(s) if named && selected && in_place => Want::Listed(s.to_owned()),
        Some(_) if named && selected => Want::Unchanged,
        _ => Want::Removed,
    }
}

/// Applies what `profile` wants of the ServiceAccount `name` in `namespace`, starting from `cached` (the
/// controller's view, possibly stale). A conflict re-reads the account and recomputes, a few times.
pub async fn converge(
    client: &Client,
    cached: &ServiceAccount,
    profile: &str,
    want: &Want,
) -> Result<bool, kube::Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let mut current = cached.clone();
    for attempt in 0.. {
        let record = record_of(&current);
        let pulls = current.image_pull_secrets.clone().unwrap_or_default();
        let Some(change) = change(&pulls, &record, profile, want) else {
            return Ok(false);
        };
        let patch = serde_json::json!({
            "metadata": {
                // Merge patches that carry a resourceVersion fail with 409 if the object moved on.
                "resourceVersion": current.resource_version(),
                "annotations": { RECORD_ANNOTATION: change.record },
            },
            "imagePullSecrets": if change.image_pull_secrets.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!(change.image_pull_secrets)
            },
        });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(false),
            Err(kube::Error::Api(s)) if s.is_conflict() && attempt < 4 => match api.get_opt(&name).await? {
                Some(fresh) => current = fresh,
                None => return Ok(false),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::{record as rec, refs};

    fn listed(s: &str) -> Want {
        Want::Listed(s.into())
    }

    #[test]
    fn adds_and_records_a_missing_entry_after_the_existing_ones() {
        let c = change(&refs(&["theirs"]), &rec(&[]), "p", &listed("pull")).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["theirs", "pull"]));
        assert_eq!(c.record.as_deref(), Some("p=pull"));
    }

    #[test]
    fn in_place_and_recorded_is_a_no_op() {
        assert_eq!(change(&refs(&["theirs", "pull"]), &rec(&[("p", "pull")]), "p", &listed("pull")), None);
    }

    #[test]
    fn an_entry_someone_else_listed_is_neither_recorded_nor_ever_removed() {
        assert_eq!(change(&refs(&["pull"]), &rec(&[]), "p", &listed("pull")), None);
        assert_eq!(change(&refs(&["pull"]), &rec(&[]), "p", &Want::Removed), None);
    }

    #[test]
    fn a_recorded_entry_removed_by_hand_is_restored() {
        let c = change(&refs(&["theirs"]), &rec(&[("p", "pull")]), "p", &listed("pull")).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["theirs", "pull"]));
        assert_eq!(c.record.as_deref(), Some("p=pull"));
    }

    #[test]
    fn removal_takes_only_this_profiles_entry_and_drops_the_annotation_when_empty() {
        let c = change(&refs(&["a", "pull", "b"]), &rec(&[("p", "pull")]), "p", &Want::Removed).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["a", "b"]));
        assert_eq!(c.record, None);
        let c = change(&refs(&["pull", "other"]), &rec(&[("p", "pull"), ("q", "other")]), "p", &Want::Removed);
        assert_eq!(c.unwrap().record.as_deref(), Some("q=other"));
        assert_eq!(change(&refs(&["a"]), &rec(&[("q", "other")]), "p", &Want::Removed), None);
    }

    #[test]
    fn a_secret_name_two_profiles_recorded_stays_until_both_are_gone() {
        let c = change(&refs(&["pull"]), &rec(&[("p", "pull"), ("q", "pull")]), "p", &Want::Removed).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["pull"]));
        assert_eq!(c.record.as_deref(), Some("q=pull"));
    }

    #[test]
    fn a_renamed_secret_replaces_the_old_entry() {
        let c = change(&refs(&["old", "x"]), &rec(&[("p", "old")]), "p", &listed("new")).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["x", "new"]));
        assert_eq!(c.record.as_deref(), Some("p=new"));
    }

    #[test]
    fn a_rename_onto_a_name_someone_else_listed_does_not_claim_it() {
        let c = change(&refs(&["old", "new"]), &rec(&[("p", "old")]), "p", &listed("new")).unwrap();
        assert_eq!(c.image_pull_secrets, refs(&["new"]));
        assert_eq!(c.record, None);
    }

    #[test]
    fn unchanged_never_writes() {
        assert_eq!(change(&refs(&[]), &rec(&[("p", "pull")]), "p", &Want::Unchanged), None);
    }

    #[test]
    fn only_named_accounts_of_selected_namespaces_with_the_secret_in_place_list_it() {
        let names = vec!["default".to_owned()];
        let pats = Some(names.as_slice());
        assert_eq!(want(pats, "default", true, Some("pull"), true), listed("pull"));
        assert_eq!(want(pats, "default", true, Some("pull"), false), Want::Unchanged);
        assert_eq!(want(pats, "builder", true, Some("pull"), true), Want::Removed);
        assert_eq!(want(pats, "default", false, Some("pull"), true), Want::Removed);
        assert_eq!(want(pats, "default", true, None, true), Want::Removed);
        assert_eq!(want(None, "default", true, Some("pull"), true), Want::Removed);
    }
}
