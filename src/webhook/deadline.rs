//! The admission deadline: the webhook answers a margin under the apiserver's `timeoutSeconds`, always.
//!
//! Past `timeoutSeconds` the apiserver stops waiting and, with `failurePolicy: Ignore`, admits the Pod unchanged:
//! without its pull Secrets. So regcred keeps its own clock, started when a request's body has arrived, and
//! answers by the deadline with what it knows then: the injection (decided from the cached view) always, and a
//! "not checked" warning for every image check and pull Secret lookup that had not finished.
//!
//! The margin between the deadline and the timeout is time the apiserver spends on the call outside regcred's
//! clock: dialling the Service and the TLS handshake (a new connection on a loaded control plane), encoding the
//! AdmissionReview (up to a few MiB of JSON for a large object's UPDATE) and sending it, and after regcred's answer,
//! its transfer, decoding and the patch's application. One second covers that with room on a busy control plane;
//! under a 2 s timeout the margin is half of it, so a 1 s timeout still leaves regcred half a second.
//! Within the deadline, regcred stops waiting [`ANSWER_RESERVE`] early: the time to build, encode and write the
//! answer once the work is cut, on a runtime that may be busy with other admissions.

use std::time::Duration;

/// The most of `timeoutSeconds` that is left to the apiserver's side of the call (see the module's doc).
pub const MARGIN: Duration = Duration::from_secs(1);
/// Stop waiting this long before the deadline: what answering itself takes.
pub const ANSWER_RESERVE: Duration = Duration::from_millis(100);
/// The shortest deadline accepted: below it nothing but the cache could ever answer.
pub const MIN_DEADLINE: Duration = Duration::from_millis(200);

/// The admission deadline for a webhook configured with `timeout_seconds`: `explicit` when given (it must be
/// under the timeout), else the timeout less [`MARGIN`] (half the timeout under 2 s).
pub fn admission_deadline(timeout_seconds: u8, explicit: Option<Duration>) -> Result<Duration, String> {
    let timeout = Duration::from_secs(u64::from(timeout_seconds));
    if timeout.is_zero() {
        return Err("the webhook's timeoutSeconds must be at least 1".into());
    }
    let deadline = explicit.unwrap_or_else(|| timeout.saturating_sub(MARGIN.min(timeout / 2)));
    if deadline >= timeout {
        return Err(format!(
            "the webhook deadline ({} ms) must be under the webhook's timeoutSeconds ({timeout_seconds} s): past the \
             timeout the apiserver stops waiting and admits Pods without their pull Secrets",
            deadline.as_millis()
        ));
    }
    if deadline < MIN_DEADLINE {
        return Err(format!(
            "the webhook deadline ({} ms) must be at least {} ms",
            deadline.as_millis(),
            MIN_DEADLINE.as_millis()
        ));
    }
    Ok(deadline)
}

/// When an admission that arrived at `arrived` stops waiting for anything: its deadline less [`ANSWER_RESERVE`].
pub fn work_until(arrived: tokio::time::Instant, deadline: Duration) -> tokio::time::Instant {
    arrived + deadline.saturating_sub(ANSWER_RESERVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_a_margin_under_the_timeout_and_an_explicit_one_must_be_under_it() {
        let ms = Duration::from_millis;
        let cases: Vec<(u8, Option<Duration>, Result<Duration, &str>)> = vec![
            // The chart's default: 5 s, answered by 4 s.
            (5, None, Ok(ms(4000))),
            (30, None, Ok(ms(29_000))),
            (2, None, Ok(ms(1000))),
            // Under 2 s, half the timeout.
            (1, None, Ok(ms(500))),
            (5, Some(ms(2500)), Ok(ms(2500))),
            (5, Some(ms(4999)), Ok(ms(4999))),
            (5, Some(ms(5000)), Err("must be under the webhook's timeoutSeconds (5 s)")),
            (5, Some(ms(9000)), Err("must be under the webhook's timeoutSeconds (5 s)")),
            (1, Some(ms(100)), Err("must be at least 200 ms")),
            (0, None, Err("at least 1")),
        ];
        for (timeout, explicit, want) in cases {
            let got = admission_deadline(timeout, explicit);
            match (&got, want) {
                (Ok(d), Ok(w)) => assert_eq!(*d, w, "{timeout} {explicit:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{timeout} {explicit:?}: {e}"),
                _ => panic!("{timeout} {explicit:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_work_stops_a_reserve_before_the_deadline() {
        let now = tokio::time::Instant::now();
        assert_eq!(work_until(now, Duration::from_secs(4)), now + Duration::from_millis(3900));
        assert!(work_until(now, Duration::from_millis(50)) >= now);
    }
}
