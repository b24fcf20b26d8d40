//! A profile's status and the Events its changes deserve. Pure: the outcome of a reconcile goes in, the status
//! and Events come out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use std::collections::BTreeSet;

use crate::api::conditions::{
    ANONYMOUS, CONFLICT, CREDENTIAL_PROVIDER, CREDENTIALS_RESOLVED, CREDENTIALS_VALID, DELETIONS_HELD, FALSE,
    IMAGES_VERIFIED, NOT_REQUIRED, READY, REASON_READY, RESOLVED, SECRETS_SYNCED, SYNCED, TRUE, WRITE_FAILED,
};
use crate::api::{Delivery, NamespaceFailure, RegistryProfileStatus};
use crate::resolve::Report;

/// At most this many failed namespaces are listed in status.
pub const MAX_FAILURES_LISTED: usize = 20;

/// How the namespaces were synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The selected namespaces served as `delivery` says: Secrets written there (`Secret`, `Both`), or none left
    /// (`CredentialProvider`); `failures` lists the namespaces where that failed; `held` says which deletions the
    /// guard holds, if any. `selected` is 0 for a profile with nothing to deliver (anonymous access).
    Synced { selected: i32, synced: i32, failures: Vec<NamespaceFailure>, held: Option<Held>, delivery: Delivery },
    /// Nothing was touched, for the given reason (credentials unavailable, invalid selector).
    Skipped { reason: String, message: String },
}

/// Deletions the guard holds: how many Secrets, and the message that says where, why and how to confirm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub secrets: usize,
    pub message: String,
}

/// An Event to publish on the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { TRUE } else { FALSE }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The `SecretsSynced` condition: skipped (and why), not required (anonymous), not written (the kubelet's
/// credential provider alone serves the profile), or how many selected namespaces hold the Secret (`failures`: the
/// first of `failed_count` that do not).
fn synced_condition(
    sync: &SyncOutcome,
    credentials: &Report,
    selected: i32,
    failures: &[NamespaceFailure],
    failed_count: usize,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    match (sync, credentials) {
        (SyncOutcome::Skipped { reason, message }, _) => {
            condition(SECRETS_SYNCED, false, reason, message.clone(), generation, now)
        }
        (_, Report::Anonymous) => condition(
            SECRETS_SYNCED,
            true,
            NOT_REQUIRED,
            "anonymous access: no Secret is needed".into(),
            generation,
            now,
        ),
        (SyncOutcome::Synced { delivery, .. }, _) if failed_count == 0 => {
            let reason = if *delivery == Delivery::CredentialProvider { CREDENTIAL_PROVIDER } else { SYNCED };
            condition(SECRETS_SYNCED, true, reason, served(*delivery, selected), generation, now)
        }
        _ => {
            let reason = if failures.iter().all(|f| f.reason == CONFLICT) { CONFLICT } else { WRITE_FAILED };
            let names: Vec<&str> = failures.iter().take(5).map(|f| f.namespace.as_str()).collect();
            condition(
                SECRETS_SYNCED,
                false,
                reason,
                format!(
                    "{failed_count} of {selected} selected namespaces are not synced ({}{}); see status.failedNamespaces",
                    names.join(", "),
                    if failed_count > names.len() { ", ..." } else { "" }
                ),
                generation,
                now,
            )
        }
    }
}

/// The `CredentialsResolved` condition.
fn credentials_condition(credentials: &Report, generation: Option<i64>, now: &Time) -> Condition {
    match credentials {
        Report::Resolved { source } => {
            condition(CREDENTIALS_RESOLVED, true, RESOLVED, format!("credentials read from {source}"), generation, now)
        }
        Report::Anonymous => {
            let message = "anonymous access: no Secret is written".into();
            condition(CREDENTIALS_RESOLVED, true, ANONYMOUS, message, generation, now)
        }
        Report::Failed { reason, message } => {
            condition(CREDENTIALS_RESOLVED, false, reason, message.clone(), generation, now)
        }
    }
}

/// The `DeletionsHeld` condition: said while held; a sync that was skipped leaves the previous word on them
/// standing.
fn held_condition(
    sync: &SyncOutcome,
    previous: Option<&RegistryProfileStatus>,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    match sync {
        SyncOutcome::Synced { held, .. } => {
            held.as_ref().map(|h| condition(DELETIONS_HELD, true, DELETIONS_HELD, h.message.clone(), generation, now))
        }
        SyncOutcome::Skipped { .. } => {
            previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == DELETIONS_HELD)).cloned()
        }
    }
}

/// The registry preflight's conditions: `CredentialsValid`, `ImagesVerified`.
fn checked_conditions(verdict: &super::checks::Verdict, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    [(CREDENTIALS_VALID, &verdict.credentials), (IMAGES_VERIFIED, &verdict.images)]
        .map(|(type_, o)| condition(type_, o.ok, &o.reason, o.message.clone(), generation, now))
        .into()
}

/// What `SecretsSynced` says when every one of the `selected` namespaces is served as `delivery` says.
fn served(delivery: Delivery, selected: i32) -> String {
    match (delivery, selected) {
        (Delivery::CredentialProvider, _) => format!(
            "spec.delivery is CredentialProvider: no Secret is written; the kubelet's credential provider gets the \
             credentials from regcred at pull time in the {selected} selected namespaces"
        ),
        (_, 0) => "no namespace is selected".into(),
        (Delivery::Both, _) => format!(
            "the Secret is current in all {selected} selected namespaces, and the kubelet's credential provider is \
             answered there too"
        ),
        (Delivery::Secret, _) => format!("the Secret is current in all {selected} selected namespaces"),
    }
}

/// How many of the `selected` namespaces regcred answers the kubelet's credential provider for, by `delivery`
/// (`None`: it does not serve the profile, `Secret`): every one but those a rival holds (a `Conflict` among
/// `failures`), as [`crate::resolve::Written::in_namespace`] tells the endpoint.
pub fn provider_namespaces(delivery: Delivery, selected: i32, failures: &[NamespaceFailure]) -> Option<i32> {
    let conflicts: BTreeSet<&str> =
        failures.iter().filter(|f| f.reason == CONFLICT).map(|f| f.namespace.as_str()).collect();
    let held = i32::try_from(conflicts.len()).unwrap_or(i32::MAX);
    delivery.serves_kubelet().then(|| selected.saturating_sub(held).max(0))
}

/// `status.syncSummary`: the selected namespaces served, of those selected, and by what besides the Secret.
pub fn summary(delivery: Delivery, synced: i32, selected: i32) -> String {
    match delivery {
        Delivery::Secret => format!("{synced}/{selected}"),
        Delivery::CredentialProvider => format!("{synced}/{selected} provider"),
        Delivery::Both => format!("{synced}/{selected} +provider"),
    }
}

/// A condition keeps its `lastTransitionTime` while its status stays the same.
fn keep_transition_times(conditions: &mut [Condition], previous: Option<&RegistryProfileStatus>) {
    let Some(prev) = previous else { return };
    for c in conditions {
        if let Some(old) = prev.conditions.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

/// The counts status shows after a sync.
struct Counts {
    selected: i32,
    synced: i32,
    failures: Vec<NamespaceFailure>,
    provider: Option<i32>,
    summary: String,
}

impl Counts {
    /// The counts of `sync`; a skipped sync touched nothing: the counts stay as the last sync left them.
    fn of(sync: &SyncOutcome, previous: Option<&RegistryProfileStatus>) -> Self {
        match sync {
            SyncOutcome::Synced { selected, synced, failures, delivery, .. } => Self {
                selected: *selected,
                synced: *synced,
                failures: failures.clone(),
                provider: provider_namespaces(*delivery, *selected, failures),
                summary: summary(*delivery, *synced, *selected),
            },
            SyncOutcome::Skipped { .. } => {
                let prev = previous.cloned().unwrap_or_default();
                let (selected, synced) = (prev.selected_namespaces, prev.synced_namespaces);
                Self {
                    selected,
                    synced,
                    failures: prev.failed_namespaces,
                    provider: prev.credential_provider_namespaces,
                    summary: prev.sync_summary.unwrap_or_else(|| summary(Delivery::Secret, synced, selected)),
                }
            }
        }
    }
}

/// Computes the status. A condition keeps its `lastTransitionTime` while its status stays the same, so a
/// reconcile that changes nothing produces a status equal to the previous one (and no write).
pub fn compute(
    previous: Option<&RegistryProfileStatus>,
    generation: Option<i64>,
    registry: Option<String>,
    credentials: &Report,
    sync: &SyncOutcome,
    checks: Option<&super::checks::Verdict>,
    now: Time,
) -> RegistryProfileStatus {
    let creds = credentials_condition(credentials, generation, &now);
    let Counts { selected, synced, mut failures, provider, summary } = Counts::of(sync, previous);
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let failed_count = failures.len();
    failures.truncate(MAX_FAILURES_LISTED);
    let synced_cond = synced_condition(sync, credentials, selected, &failures, failed_count, generation, &now);
    let checked = checks.map(|v| checked_conditions(v, generation, &now)).unwrap_or_default();
    let held = held_condition(sync, previous, generation, &now);
    let failed = [&creds, &synced_cond].into_iter().chain(checked.iter()).find(|c| c.status != TRUE);
    // The profile is not at its desired state while deletions are held: Ready says so (after any failure).
    let ready = match failed.or(held.as_ref()) {
        None => condition(READY, true, REASON_READY, "credentials are in place".into(), generation, &now),
        Some(c) => condition(READY, false, &c.reason, c.message.clone(), generation, &now),
    };
    let mut conditions = vec![ready, creds, synced_cond];
    conditions.extend(checked);
    conditions.extend(held);
    keep_transition_times(&mut conditions, previous);
    RegistryProfileStatus {
        observed_generation: generation,
        conditions,
        sync_summary: Some(summary),
        registry,
        selected_namespaces: selected,
        synced_namespaces: synced,
        credential_provider_namespaces: provider,
        failed_namespaces: failures,
        // Filled in by the caller, which knows the ServiceAccount pass.
        service_accounts: previous.and_then(|p| p.service_accounts),
        expires_at: None,
        last_refresh_time: None,
        next_refresh_time: None,
        checks: checks.map(|v| v.summary().to_owned()),
        last_check_time: checks.map(|v| Time(v.at)),
        images: checks.map(|v| v.images_status.clone()).unwrap_or_default(),
        // Filled in by the caller, which holds the pull failures seen.
        pull_failures: Vec::new(),
        unselected_pull_failures: Vec::new(),
        healing: None,
    }
}

/// Whether `next` differs from `previous` in its counts alone: the namespaces selected, synced, served by the
/// credential provider and failed, the
/// ServiceAccounts listing the Secret, and the condition messages that give them. Such a change may wait a moment before it is written; any other (a
/// condition's status or reason, the generation, the preflight's verdict, a token's times) may not.
pub fn counts_only(previous: &RegistryProfileStatus, next: &RegistryProfileStatus) -> bool {
    let without_counts = |s: &RegistryProfileStatus| {
        let mut s = s.clone();
        s.selected_namespaces = 0;
        s.synced_namespaces = 0;
        s.credential_provider_namespaces = s.credential_provider_namespaces.map(|_| 0);
        s.sync_summary = None;
        s.failed_namespaces.clear();
        s.service_accounts = s.service_accounts.map(|_| 0);
        for c in &mut s.conditions {
            if c.type_ == SECRETS_SYNCED || c.type_ == READY {
                c.message.clear();
            }
        }
        s
    };
    previous != next && without_counts(previous) == without_counts(next)
}

/// Events for every condition whose status or reason changed, and for held deletions whenever the profile's
/// generation changed (the confirmation their message asks for names it).
pub fn events(previous: Option<&RegistryProfileStatus>, next: &RegistryProfileStatus) -> Vec<StatusEvent> {
    next.conditions
        .iter()
        .filter(|c| {
            let old = previous.and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_));
            old.is_none_or(|o| {
                o.status != c.status
                    || o.reason != c.reason
                    || (c.type_ == DELETIONS_HELD && o.observed_generation != c.observed_generation)
            })
        })
        // Ready repeats the reason of the condition that failed; one Event per cause is enough.
        .filter(|c| c.type_ != READY || c.status == TRUE)
        .map(|c| StatusEvent {
            warning: c.status != TRUE || c.type_ == DELETIONS_HELD,
            reason: c.reason.clone(),
            note: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::CREDENTIALS_UNAVAILABLE;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn resolved() -> Report {
        Report::Resolved { source: "Secret regcred/creds".into() }
    }

    fn synced(selected: i32, failures: Vec<NamespaceFailure>) -> SyncOutcome {
        SyncOutcome::Synced {
            selected,
            synced: selected - i32::try_from(failures.len()).unwrap(),
            failures,
            held: None,
            delivery: Delivery::Secret,
        }
    }

    fn cond<'a>(s: &'a RegistryProfileStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn all_good_is_ready() {
        let s = compute(None, Some(2), Some("r.io".into()), &resolved(), &synced(3, vec![]), None, at(10));
        assert_eq!(cond(&s, READY).status, TRUE);
        assert_eq!(s.sync_summary.as_deref(), Some("3/3"));
        assert_eq!(s.observed_generation, Some(2));
        let ev = events(None, &s);
        assert!(ev.iter().all(|e| !e.warning));
    }

    #[test]
    fn a_status_that_did_not_change_is_equal_to_the_previous_one() {
        let first = compute(None, Some(1), None, &resolved(), &synced(3, vec![]), None, at(10));
        let again = compute(Some(&first), Some(1), None, &resolved(), &synced(3, vec![]), None, at(99));
        assert_eq!(first, again);
        assert!(events(Some(&first), &again).is_empty());
    }

    #[test]
    fn a_credential_failure_names_its_reason_everywhere_and_keeps_the_counts() {
        let first = compute(None, Some(1), None, &resolved(), &synced(3, vec![]), None, at(10));
        let failed = Report::Failed { reason: "SecretNotFound".into(), message: "gone".into() };
        let skipped = SyncOutcome::Skipped { reason: CREDENTIALS_UNAVAILABLE.into(), message: "kept".into() };
        let s = compute(Some(&first), Some(1), None, &failed, &skipped, None, at(20));
        assert_eq!(cond(&s, READY).reason, "SecretNotFound");
        assert_eq!(cond(&s, READY).last_transition_time, at(20));
        assert_eq!(cond(&s, SECRETS_SYNCED).reason, CREDENTIALS_UNAVAILABLE);
        assert_eq!(s.selected_namespaces, 3);
        let ev = events(Some(&first), &s);
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| e.warning));
    }

    #[test]
    fn conflicts_are_listed_and_bounded() {
        let failures: Vec<_> = (0..30)
            .map(|i| NamespaceFailure { namespace: format!("ns-{i:02}"), reason: CONFLICT.into(), message: "m".into() })
            .collect();
        let s = compute(None, None, None, &resolved(), &synced(40, failures), None, at(1));
        assert_eq!(cond(&s, SECRETS_SYNCED).reason, CONFLICT);
        assert_eq!(cond(&s, READY).status, FALSE);
        assert_eq!(s.failed_namespaces.len(), MAX_FAILURES_LISTED);
        assert_eq!(s.sync_summary.as_deref(), Some("10/40"));
        assert!(cond(&s, SECRETS_SYNCED).message.starts_with("30 of 40"));
    }

    #[test]
    fn anonymous_is_ready_without_secrets() {
        let s =
            compute(None, None, Some("mcr.microsoft.com".into()), &Report::Anonymous, &synced(0, vec![]), None, at(1));
        assert_eq!(cond(&s, READY).status, TRUE);
        assert_eq!(cond(&s, CREDENTIALS_RESOLVED).reason, ANONYMOUS);
        assert_eq!(cond(&s, SECRETS_SYNCED).reason, NOT_REQUIRED);
    }

    #[test]
    fn status_says_which_namespaces_are_served_how_for_each_delivery() {
        let conflict =
            |ns: &str| NamespaceFailure { namespace: ns.into(), reason: CONFLICT.into(), message: "m".into() };
        let failed =
            |ns: &str| NamespaceFailure { namespace: ns.into(), reason: WRITE_FAILED.into(), message: "m".into() };
        let by = |delivery, selected: i32, failures: Vec<NamespaceFailure>| SyncOutcome::Synced {
            selected,
            synced: selected - i32::try_from(failures.len()).unwrap(),
            failures,
            held: None,
            delivery,
        };
        // The outcome; the summary, the namespaces the provider is answered for, SecretsSynced's status and reason.
        let cases = [
            (by(Delivery::Secret, 5, vec![]), "5/5", None, TRUE, SYNCED),
            (by(Delivery::Secret, 5, vec![failed("a")]), "4/5", None, FALSE, WRITE_FAILED),
            (by(Delivery::CredentialProvider, 5, vec![]), "5/5 provider", Some(5), TRUE, CREDENTIAL_PROVIDER),
            // A Secret it wrote before that could not be removed: said as a failure, the provider answers anyway.
            (by(Delivery::CredentialProvider, 5, vec![failed("a")]), "4/5 provider", Some(5), FALSE, WRITE_FAILED),
            (by(Delivery::CredentialProvider, 0, vec![]), "0/0 provider", Some(0), TRUE, CREDENTIAL_PROVIDER),
            (by(Delivery::Both, 5, vec![]), "5/5 +provider", Some(5), TRUE, SYNCED),
            // A rival's Secret of the same name holds a namespace: neither the Secret nor the provider serves it.
            (by(Delivery::Both, 5, vec![conflict("a"), failed("b")]), "3/5 +provider", Some(4), FALSE, WRITE_FAILED),
        ];
        for (outcome, summary, provider, status, reason) in cases {
            let s = compute(None, Some(1), None, &resolved(), &outcome, None, at(1));
            let c = cond(&s, SECRETS_SYNCED);
            let got =
                (s.sync_summary.as_deref(), s.credential_provider_namespaces, c.status.as_str(), c.reason.as_str());
            assert_eq!(got, (Some(summary), provider, status, reason), "{outcome:?}");
        }
        let s = compute(None, Some(1), None, &resolved(), &by(Delivery::CredentialProvider, 3, vec![]), None, at(1));
        assert_eq!(cond(&s, READY).status, TRUE);
        assert!(cond(&s, SECRETS_SYNCED).message.contains("no Secret is written"), "{:?}", s.conditions);
        assert_eq!((s.selected_namespaces, s.synced_namespaces), (3, 3));
        // Anonymous access delivers nothing, by Secret or provider.
        let anonymous = by(Delivery::CredentialProvider, 0, vec![]);
        let s = compute(None, Some(1), None, &Report::Anonymous, &anonymous, None, at(1));
        assert_eq!(cond(&s, SECRETS_SYNCED).reason, NOT_REQUIRED);
        // A skipped sync keeps what the last one said, and a change of the provider's count alone may wait.
        let before =
            compute(None, Some(1), None, &resolved(), &by(Delivery::CredentialProvider, 3, vec![]), None, at(1));
        let skipped = SyncOutcome::Skipped { reason: CREDENTIALS_UNAVAILABLE.into(), message: "kept".into() };
        let failed = Report::Failed { reason: "SecretNotFound".into(), message: "gone".into() };
        let s = compute(Some(&before), Some(1), None, &failed, &skipped, None, at(2));
        assert_eq!((s.sync_summary.as_deref(), s.credential_provider_namespaces), (Some("3/3 provider"), Some(3)));
        let more = compute(
            Some(&before),
            Some(1),
            None,
            &resolved(),
            &by(Delivery::CredentialProvider, 4, vec![]),
            None,
            at(3),
        );
        assert!(counts_only(&before, &more));
    }

    #[test]
    fn held_deletions_are_said_once_per_change_and_clear_when_released() {
        let held = |message: &str| SyncOutcome::Synced {
            selected: 0,
            synced: 0,
            failures: vec![],
            held: Some(Held { secrets: 5, message: message.into() }),
            delivery: Delivery::Secret,
        };
        let before = compute(None, Some(1), None, &resolved(), &synced(5, vec![]), None, at(1));
        let s = compute(Some(&before), Some(2), None, &resolved(), &held("5 Secrets ..."), None, at(2));
        assert_eq!(cond(&s, DELETIONS_HELD).status, TRUE);
        assert_eq!((cond(&s, READY).status.as_str(), cond(&s, READY).reason.as_str()), (FALSE, DELETIONS_HELD));
        assert_eq!(cond(&s, SECRETS_SYNCED).status, TRUE, "what is selected is synced");
        let ev = events(Some(&before), &s);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].warning && ev[0].reason == DELETIONS_HELD && ev[0].note == "5 Secrets ...");

        // Every reconcile while held: no new Event, even as the count moves.
        let again = compute(Some(&s), Some(2), None, &resolved(), &held("6 Secrets ..."), None, at(3));
        assert!(events(Some(&s), &again).is_empty());
        // A skipped sync keeps the word on them.
        let skipped = SyncOutcome::Skipped { reason: CREDENTIALS_UNAVAILABLE.into(), message: "m".into() };
        let failed = Report::Failed { reason: "SecretNotFound".into(), message: "m".into() };
        let kept = compute(Some(&again), Some(2), None, &failed, &skipped, None, at(4));
        assert_eq!(cond(&kept, DELETIONS_HELD).message, "6 Secrets ...");
        assert_eq!(cond(&kept, READY).reason, "SecretNotFound", "a failure comes first");
        // The profile edited while held: said again, with the generation to confirm.
        let edited = compute(Some(&again), Some(3), None, &resolved(), &held("7 Secrets ..."), None, at(5));
        assert_eq!(events(Some(&again), &edited).len(), 1);
        // Released (confirmed, or reverted): the condition goes and the profile is Ready.
        let released = compute(Some(&edited), Some(3), None, &resolved(), &synced(5, vec![]), None, at(6));
        assert!(released.conditions.iter().all(|c| c.type_ != DELETIONS_HELD));
        assert_eq!(cond(&released, READY).status, TRUE);
    }

    #[test]
    fn failing_profiles_are_retried_sooner_than_healthy_ones_and_back_off() {
        use crate::controller::requeue_after;
        let healthy = compute(None, None, None, &resolved(), &synced(1, vec![]), None, at(0));
        assert_eq!(requeue_after(&healthy, jiff::Timestamp::from_second(1000).unwrap()).as_secs(), 600);
        let failed = Report::Failed { reason: "SecretNotFound".into(), message: "m".into() };
        let skipped = SyncOutcome::Skipped { reason: CREDENTIALS_UNAVAILABLE.into(), message: "m".into() };
        let failing = compute(None, None, None, &failed, &skipped, None, at(0));
        let after = |secs| requeue_after(&failing, jiff::Timestamp::from_second(secs).unwrap()).as_secs();
        assert_eq!(after(1), 5);
        assert_eq!(after(60), 30);
        assert_eq!(after(100_000), 300);
    }

    #[test]
    fn a_change_of_counts_alone_is_told_from_any_other() {
        let three = compute(None, Some(1), None, &resolved(), &synced(3, vec![]), None, at(10));
        let four = compute(Some(&three), Some(1), None, &resolved(), &synced(4, vec![]), None, at(20));
        assert!(counts_only(&three, &four), "a new namespace");
        assert!(!counts_only(&three, &three), "no change at all");
        let conflict = NamespaceFailure { namespace: "n".into(), reason: CONFLICT.into(), message: "m".into() };
        let failing = compute(Some(&four), Some(1), None, &resolved(), &synced(4, vec![conflict]), None, at(30));
        assert!(!counts_only(&four, &failing), "SecretsSynced and Ready turned False");
        let edited = compute(Some(&four), Some(2), None, &resolved(), &synced(4, vec![]), None, at(30));
        assert!(!counts_only(&four, &edited), "a new generation");
        let mut refreshed = four.clone();
        refreshed.expires_at = Some(at(99));
        assert!(!counts_only(&four, &refreshed), "a token's expiry");
    }
}
