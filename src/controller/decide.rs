//! The reconcile's decisions, pure: what the resolved credentials mean for the profile's Secrets and status, and
//! whether its Secrets may be synced at all. The writes themselves are planned by [`super::plan`].

use crate::credentials::DockerConfig;
use crate::credentials::refresher::Snapshot;
use crate::resolve::selection::InvalidSelector;
use crate::resolve::{self, Source, Unresolved};

use super::preflight;
use super::status::{CredentialsOutcome, SyncOutcome};

/// What a profile writes: its dockerconfigjson, and when it expires (short-lived tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub config: DockerConfig,
    pub expires_at: Option<jiff::Timestamp>,
}

/// The credentials of one reconcile: what to write (`Ok(None)`: nothing, anonymous) and how status reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub write: Result<Option<Written>, Unresolved>,
    pub outcome: CredentialsOutcome,
}

/// Decides what the profile writes from where its credentials come from and, for token sources, the
/// refresher's state (`token`).
pub fn credentials(source: &Result<Source, Unresolved>, token: Option<&Snapshot>, now: jiff::Timestamp) -> Credentials {
    let failed = |u: &Unresolved| CredentialsOutcome::Failed { reason: u.reason.clone(), message: u.message.clone() };
    match source {
        Err(u) => Credentials { write: Err(u.clone()), outcome: failed(u) },
        Ok(Source::Anonymous) => Credentials { write: Ok(None), outcome: CredentialsOutcome::Anonymous },
        Ok(Source::Static { config, from }) => Credentials {
            write: Ok(Some(Written { config: config.clone(), expires_at: None })),
            outcome: CredentialsOutcome::Resolved { source: from.clone() },
        },
        Ok(Source::Token(t)) => match resolve::current(&token.cloned().unwrap_or_default(), now) {
            Err(u) => Credentials { write: Err(u.clone()), outcome: failed(&u) },
            Ok((config, expires_at)) => {
                // A token is in place: say whether minting still works.
                let outcome = match token.and_then(|t| t.error.as_ref()) {
                    Some(e) => CredentialsOutcome::Failed {
                        reason: e.reason.into(),
                        message: format!("{}; the last good token stays in place until it expires", e.message),
                    },
                    None => CredentialsOutcome::Resolved { source: t.describe().into() },
                };
                Credentials { write: Ok(Some(Written { config, expires_at: Some(expires_at) })), outcome }
            }
        },
    }
}

/// Whether the profile's Secrets may be synced now (with what, and where), or why they are left as they are. In
/// order: credentials that do not resolve, a preflight that failed (or has not answered yet) when `withhold` is
/// set, a selector that does not compile.
pub fn gate<'a, S>(
    credentials: &'a Credentials,
    selection: Result<&'a S, &InvalidSelector>,
    preflight: Option<&preflight::State>,
    withhold: bool,
) -> Result<(Option<&'a Written>, &'a S), SyncOutcome> {
    let skip = |reason: &str, message: String| Err(SyncOutcome::Skipped { reason: reason.into(), message });
    let Ok(written) = &credentials.write else {
        return skip(
            "CredentialsUnavailable",
            "existing Secrets are left as they are until the credentials resolve".into(),
        );
    };
    if withhold {
        match preflight {
            Some(preflight::State::Current(v)) if let Some(failure) = v.failure() => {
                return skip(
                    "WithheldByPreflight",
                    format!(
                        "spec.validation.onFailure is Withhold and the registry preflight failed ({}): existing Secrets are left as they are",
                        failure.reason
                    ),
                );
            }
            Some(preflight::State::Pending { .. }) => {
                return skip(
                    "AwaitingPreflight",
                    "spec.validation.onFailure is Withhold and the registry preflight of the current settings has not answered yet: existing Secrets are left as they are".into(),
                );
            }
            _ => {}
        }
    }
    match selection {
        Err(invalid) => skip("InvalidSelector", invalid.to_string()),
        Ok(selection) => Ok((written.as_ref(), selection)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::checks::{Outcome, Verdict};
    use crate::credentials::render;
    use crate::credentials::tokens::{EcrSource, MintError, Minted};

    type CredentialCase = (Result<Source, Unresolved>, Option<Snapshot>, (&'static str, bool));
    type GateCase<'a> =
        (&'a Credentials, Result<&'a (), &'a InvalidSelector>, Option<&'a preflight::State>, bool, &'a str);

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_900_000_000).unwrap()
    }

    fn ecr() -> Source {
        Source::Token(crate::credentials::tokens::TokenSource::Ecr(EcrSource {
            public: false,
            region: "eu-west-1".into(),
            registry_ids: vec![],
            role_arn: None,
            external_id: None,
            keys: None,
        }))
    }

    fn snapshot(expires_in: Option<i64>, error: Option<&'static str>) -> Snapshot {
        Snapshot {
            token: expires_in.map(|s| Minted {
                config: render("r", "AWS", "tok"),
                expires_at: now().checked_add(jiff::SignedDuration::from_secs(s)).unwrap(),
            }),
            error: error.map(|r| MintError::new(r, "refused")),
            ..Default::default()
        }
    }

    fn reason(c: &Credentials) -> (&str, bool) {
        let r = match &c.outcome {
            CredentialsOutcome::Resolved { .. } => "Resolved",
            CredentialsOutcome::Anonymous => "Anonymous",
            CredentialsOutcome::Failed { reason, .. } => reason,
        };
        (r, matches!(c.write, Ok(Some(_))))
    }

    #[test]
    fn credentials_follow_the_source_and_the_token_state() {
        let unresolved = Err(Unresolved { reason: "SecretNotFound".into(), message: "gone".into() });
        let static_ = Ok(Source::Static { config: render("r", "u", "p"), from: "Secret ns/creds".into() });
        let cases: Vec<CredentialCase> = vec![
            (unresolved, None, ("SecretNotFound", false)),
            (Ok(Source::Anonymous), None, ("Anonymous", false)),
            (static_, None, ("Resolved", true)),
            // Minting the first token: nothing to write yet.
            (Ok(ecr()), None, ("Minting", false)),
            (Ok(ecr()), Some(snapshot(Some(3600), None)), ("Resolved", true)),
            // A failing refresh keeps writing the last good token, and says minting fails.
            (Ok(ecr()), Some(snapshot(Some(3600), Some("AccessDenied"))), ("AccessDenied", true)),
            // ... until it expires.
            (Ok(ecr()), Some(snapshot(Some(-5), Some("AccessDenied"))), ("AccessDenied", false)),
            (Ok(ecr()), Some(snapshot(None, Some("EndpointUnreachable"))), ("EndpointUnreachable", false)),
        ];
        for (source, token, want) in cases {
            let c = credentials(&source, token.as_ref(), now());
            assert_eq!(reason(&c), want, "{source:?} {token:?}");
        }
        let c = credentials(&Ok(ecr()), Some(&snapshot(Some(60), None)), now());
        let expires = c.write.unwrap().unwrap().expires_at;
        assert_eq!(expires, now().checked_add(jiff::SignedDuration::from_secs(60)).ok());
    }

    #[test]
    fn the_gate_says_why_secrets_are_left_alone() {
        let ok = credentials(&Ok(Source::Static { config: render("r", "u", "p"), from: "x".into() }), None, now());
        let bad = credentials(&Err(Unresolved { reason: "MissingKey".into(), message: "m".into() }), None, now());
        let outcome = |ok| Outcome {
            ok,
            reason: if ok { "Valid" } else { "AuthenticationFailed" }.into(),
            message: String::new(),
        };
        let verdict =
            |ok| Verdict { credentials: outcome(ok), images: outcome(true), images_status: vec![], at: now() };
        let passed = preflight::State::Current(verdict(true));
        let failed = preflight::State::Current(verdict(false));
        let pending = preflight::State::Pending { previous: Some(verdict(true)) };
        let invalid = InvalidSelector("unknown operator".into());
        let skipped = |o: Result<(Option<&Written>, &()), SyncOutcome>| match o {
            Err(SyncOutcome::Skipped { reason, .. }) => reason,
            Err(other) => panic!("{other:?}"),
            Ok(_) => "sync".into(),
        };
        let all = ();
        let cases: Vec<GateCase> = vec![
            (&ok, Ok(&all), None, false, "sync"),
            (&bad, Ok(&all), None, false, "CredentialsUnavailable"),
            (&bad, Err(&invalid), Some(&failed), true, "CredentialsUnavailable"),
            (&ok, Ok(&all), Some(&failed), false, "sync"),
            (&ok, Ok(&all), Some(&failed), true, "WithheldByPreflight"),
            (&ok, Ok(&all), Some(&passed), true, "sync"),
            (&ok, Ok(&all), Some(&pending), true, "AwaitingPreflight"),
            (&ok, Ok(&all), Some(&pending), false, "sync"),
            (&ok, Err(&invalid), None, false, "InvalidSelector"),
            (&ok, Err(&invalid), Some(&failed), true, "WithheldByPreflight"),
        ];
        for (creds, selection, preflight, withhold, want) in cases {
            assert_eq!(skipped(gate(creds, selection, preflight, withhold)), want, "{preflight:?} {withhold}");
        }
    }
}
