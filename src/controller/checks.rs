//! When the registry preflight runs for a profile, and what its report means for the profile's status. Pure: the
//! check itself is [`crate::registry::preflight::check`], run by the reconcile.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::api::conditions::{CHECKS_FAILED, CHECKS_PASSED};
use crate::api::{ImageStatus, RegistryTls, Validation};
use crate::credentials::DockerConfig;
use crate::registry::preflight::Report;

/// The last preflight of a profile.
#[derive(Clone, Debug)]
pub struct Record {
    /// What it checked: a new fingerprint means the profile, its credentials or its TLS changed.
    pub fingerprint: u64,
    pub at: jiff::Timestamp,
    pub report: Report,
}

/// Identifies what a check depends on: the validation and TLS settings, the registry, and the credentials.
pub fn fingerprint(
    validation: &Validation,
    tls: Option<&RegistryTls>,
    registry: &str,
    config: Option<&DockerConfig>,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(validation).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&tls).unwrap_or_default().hash(&mut h);
    registry.hash(&mut h);
    config.map(|c| c.0.expose().to_vec()).hash(&mut h);
    h.finish()
}

/// How often checks run again: `spec.validation.interval`, default one hour, at least one minute.
pub fn interval(validation: &Validation) -> Duration {
    let parsed = validation.interval.as_deref().and_then(|s| crate::config::parse_duration(s).ok());
    parsed.unwrap_or(Duration::from_secs(3600)).max(Duration::from_secs(60))
}

/// Whether a check is due now: none yet, something it depends on changed, or the interval has passed.
pub fn due(record: Option<&Record>, fingerprint: u64, now: jiff::Timestamp, every: Duration) -> bool {
    match record {
        None => true,
        Some(r) if r.fingerprint != fingerprint => true,
        Some(r) => now.duration_since(r.at).as_secs_f64() >= every.as_secs_f64(),
    }
}

/// How long until the next periodic check.
pub fn until_due(record: &Record, now: jiff::Timestamp, every: Duration) -> Duration {
    let elapsed = now.duration_since(record.at).as_secs_f64().max(0.0);
    Duration::from_secs_f64((every.as_secs_f64() - elapsed).max(1.0))
}

/// One condition's worth of a check (`CredentialsValid` or `ImagesVerified`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

/// What a preflight report means for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub credentials: Judgement,
    pub images: Judgement,
    pub images_status: Vec<ImageStatus>,
    pub at: jiff::Timestamp,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.credentials.ok && self.images.ok
    }

    /// The failing judgement, credentials first.
    pub fn failure(&self) -> Option<&Judgement> {
        [&self.credentials, &self.images].into_iter().find(|o| !o.ok)
    }

    pub fn summary(&self) -> &'static str {
        if self.passed() { CHECKS_PASSED } else { CHECKS_FAILED }
    }
}

pub fn verdict(report: &Report, at: jiff::Timestamp) -> Verdict {
    let credentials = match &report.credentials {
        None => Judgement {
            ok: true,
            reason: "Valid".into(),
            message: format!("registry {} accepted the credentials", report.registry),
        },
        Some(f) => Judgement { ok: false, reason: f.reason.as_str().into(), message: f.message.clone() },
    };
    let failed: Vec<_> = report.images.iter().filter_map(|i| Some((i.image.as_str(), i.failure.as_ref()?))).collect();
    let images = if report.credentials.is_some() {
        Judgement {
            ok: false,
            reason: "NotChecked".into(),
            message: "no probe image was checked, because the credentials failed (see CredentialsValid)".into(),
        }
    } else if let Some((image, first)) = failed.first() {
        Judgement {
            ok: false,
            reason: first.reason.as_str().into(),
            message: format!(
                "{} of {} probe images failed (see status.images); {image}: {}",
                failed.len(),
                report.images.len(),
                first.message
            ),
        }
    } else if report.images.is_empty() {
        Judgement {
            ok: true,
            reason: "NoImages".into(),
            message: "no probe image is configured (spec.validation.images); only the credentials were checked".into(),
        }
    } else {
        Judgement {
            ok: true,
            reason: "Verified".into(),
            message: format!("all {} probe images exist and pass the profile's validation", report.images.len()),
        }
    };
    let images_status = report
        .images
        .iter()
        .map(|i| ImageStatus {
            image: i.image.clone(),
            digest: i.digest.clone(),
            media_type: i.media_type.clone(),
            size: i.size.and_then(|s| i64::try_from(s).ok()),
            platform: i.platform.clone(),
            reason: i.failure.as_ref().map(|f| f.reason.as_str().to_owned()),
            message: i.failure.as_ref().map(|f| f.message.clone()),
        })
        .collect();
    Verdict { credentials, images, images_status, at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::SecretBytes;
    use crate::registry::preflight::{Failure, ImageResult, Reason};

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn checks_are_due_on_change_and_after_the_interval() {
        let report = Report { registry: "r".into(), credentials: None, images: vec![], duration_ms: 1 };
        let record = Record { fingerprint: 1, at: at(1000), report };
        let hour = Duration::from_secs(3600);
        assert!(due(None, 1, at(1000), hour));
        assert!(!due(Some(&record), 1, at(1000 + 3599), hour));
        assert!(due(Some(&record), 1, at(1000 + 3600), hour));
        assert!(due(Some(&record), 2, at(1001), hour));
        assert_eq!(until_due(&record, at(1000 + 600), hour), Duration::from_secs(3000));
    }

    #[test]
    fn intervals_default_to_an_hour_and_never_go_below_a_minute() {
        let v = |s: Option<&str>| Validation { interval: s.map(String::from), ..Default::default() };
        assert_eq!(interval(&v(None)), Duration::from_secs(3600));
        assert_eq!(interval(&v(Some("30m"))), Duration::from_secs(1800));
        assert_eq!(interval(&v(Some("2h"))), Duration::from_secs(7200));
        assert_eq!(interval(&v(Some("5s"))), Duration::from_secs(60));
    }

    #[test]
    fn fingerprints_follow_credentials_and_settings() {
        let v = Validation::default();
        let a = DockerConfig(SecretBytes::new(b"a".to_vec()));
        let b = DockerConfig(SecretBytes::new(b"b".to_vec()));
        assert_eq!(fingerprint(&v, None, "r", Some(&a)), fingerprint(&v, None, "r", Some(&a)));
        assert_ne!(fingerprint(&v, None, "r", Some(&a)), fingerprint(&v, None, "r", Some(&b)));
        let tls = RegistryTls { insecure_skip_verify: Some(true), ..Default::default() };
        assert_ne!(fingerprint(&v, None, "r", Some(&a)), fingerprint(&v, Some(&tls), "r", Some(&a)));
    }

    #[test]
    fn verdicts_name_the_first_failure() {
        let image = |name: &str, failure: Option<Failure>| ImageResult {
            image: name.into(),
            digest: Some("sha256:x".into()),
            size: Some(10),
            failure,
            ..Default::default()
        };
        let ok = Report { registry: "r".into(), credentials: None, images: vec![image("a", None)], duration_ms: 1 };
        let v = verdict(&ok, at(0));
        assert!(v.passed());
        assert_eq!((v.credentials.reason.as_str(), v.images.reason.as_str()), ("Valid", "Verified"));
        assert_eq!(v.images_status[0].size, Some(10));

        let too_large = Failure { reason: Reason::ImageTooLarge, message: "big".into() };
        let bad = Report { images: vec![image("a", None), image("b", Some(too_large))], ..ok.clone() };
        let v = verdict(&bad, at(0));
        assert_eq!(v.failure().map(|o| o.reason.as_str()), Some("ImageTooLarge"));
        assert!(v.images.message.starts_with("1 of 2 probe images failed"), "{}", v.images.message);
        assert_eq!(v.images_status[1].reason.as_deref(), Some("ImageTooLarge"));

        let denied = Failure { reason: Reason::AuthenticationFailed, message: "no".into() };
        let v = verdict(&Report { credentials: Some(denied), images: vec![], ..ok }, at(0));
        assert_eq!(v.failure().map(|o| o.reason.as_str()), Some("AuthenticationFailed"));
        assert_eq!(v.images.reason, "NotChecked");
    }
}
