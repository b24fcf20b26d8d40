//! Who presents a token: the Pod's ServiceAccount token, reviewed by the apiserver (TokenReview,
//! `authentication.k8s.io/v1`) for regcred's audience, and the review remembered for a short while.
//!
//! A token is accepted only when the apiserver authenticates it for regcred's audience, its user is a
//! ServiceAccount (`system:serviceaccount:NS:SA`), and it is bound to a Pod (the `pod-name` and `pod-uid` extras
//! the apiserver adds for Pod-bound tokens, which are what the kubelet sends). Before the apiserver is asked,
//! the token's own claims (read, never trusted) weed out what cannot pass: not a JWT, expired, for another
//! audience. That costs no request, so garbage cannot make regcred do work for the apiserver; what remains is
//! bounded by the TokenReviews in flight ([`REVIEWS_IN_FLIGHT`]).
//!
//! Accepted reviews are kept by the token's SHA-256 until the token's `exp` or [`REMEMBERED_FOR`], whichever
//! comes first. The apiserver refuses the token of a Pod deleted since, but a review kept from before the
//! deletion still answers: a deleted Pod's token keeps getting answers for at most [`REMEMBERED_FOR`] after its
//! review. That is the bound: a token is bound to its Pod's node and ServiceAccount, and the kubelet of that node
//! stops asking once the Pod is gone, so the window only matters for a token copied out of the Pod, and it gives
//! no more than that Pod had a minute before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// How long an accepted review is kept at most: how long a token of a Pod deleted since may still be answered.
/// A minute: the kubelet asks once per `cacheDuration` per ServiceAccount, so Pods started together share one
/// review, and a Pod's containers and retries share theirs.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(60);
/// Reviews kept at most (about 200 bytes each).
pub const REMEMBERED: u64 = 16_384;
/// TokenReviews in flight at once: beyond it, requests wait (within their deadline).
pub const REVIEWS_IN_FLIGHT: usize = 16;
/// The longest token looked at: ServiceAccount tokens are about 1 KiB.
pub const MAX_TOKEN: usize = 16 * 1024;

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Who a token proves the caller is: a Pod's ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub pod_uid: String,
    /// The node the Pod runs on, when the token says so.
    pub node: Option<String>,
}

/// Why a token is refused (401): one line each, never the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no bearer token: the request needs Authorization: Bearer <the Pod's ServiceAccount token>")]
    NoToken,
    #[error("not a ServiceAccount token (not a JWT with exp and aud)")]
    NotAJwt,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not for audience {0}")]
    OtherAudience(String),
    #[error("the apiserver did not authenticate the token for audience {0}")]
    NotAuthenticated(String),
    #[error("the token is not a ServiceAccount's")]
    NotAServiceAccount,
    #[error("the token is not bound to a Pod")]
    NotBoundToAPod,
}

/// Why a token could not be reviewed (503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What the claims of a token say before anyone checks them: `Ok(exp)` when it may pass.
pub fn precheck(token: &str, audience: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, Refused> {
    if token.is_empty() {
        return Err(Refused::NoToken);
    }
    if token.len() > MAX_TOKEN {
        return Err(Refused::NotAJwt);
    }
    let claims = crate::credentials::oauth::claims(token).ok_or(Refused::NotAJwt)?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .ok_or(Refused::NotAJwt)?;
    let ours = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => return Err(Refused::NotAJwt),
    };
    if exp <= now {
        return Err(Refused::Expired);
    }
    if !ours {
        return Err(Refused::OtherAudience(audience.to_owned()));
    }
    Ok(exp)
}

/// What the apiserver said of a token (its TokenReview's status), as who it proves, or why not.
pub fn requester_of(review: &TokenReview, audience: &str) -> Result<Requester, Refused> {
    let status = review.status.as_ref();
    let authenticated = status.and_then(|s| s.authenticated) == Some(true)
        && status.and_then(|s| s.audiences.as_ref()).is_some_and(|a| a.iter().any(|a| a == audience));
    if !authenticated {
        return Err(Refused::NotAuthenticated(audience.to_owned()));
    }
    let user = status.and_then(|s| s.user.as_ref()).ok_or(Refused::NotAServiceAccount)?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or(Refused::NotAServiceAccount)?;
    let empty = BTreeMap::new();
    let extra = user.extra.as_ref().unwrap_or(&empty);
    let one = |key: &str| extra.get(key).and_then(|v| v.first()).filter(|v| !v.is_empty()).cloned();
    let (Some(pod), Some(pod_uid)) = (one(POD_NAME), one(POD_UID)) else { return Err(Refused::NotBoundToAPod) };
    Ok(Requester {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
        pod_uid,
        node: one(NODE_NAME),
    })
}

/// How a token's review went, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looked {
    /// Kept from an earlier review.
    Remembered,
    /// Reviewed now: accepted, refused, or the apiserver did not answer.
    Accepted,
    Refused,
    Failed,
    /// Refused on its claims, without asking.
    Prechecked,
}

/// The reviews: the apiserver, the audience, the reviews kept, the bound on those in flight.
#[derive(Clone)]
pub struct Reviews {
    client: kube::Client,
    audience: String,
    kept: moka::future::Cache<[u8; 32], (Requester, Instant)>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Reviews {
    pub fn new(client: kube::Client, audience: &str) -> Self {
        Self {
            client,
            audience: audience.to_owned(),
            kept: moka::future::Cache::builder().max_capacity(REMEMBERED).time_to_live(REMEMBERED_FOR).build(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(REVIEWS_IN_FLIGHT)),
        }
    }

    /// The audience tokens must be for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Who `token` proves the caller is, reviewed by the apiserver or remembered; how it went, for the metrics.
    pub async fn requester(&self, token: &str) -> (Result<Requester, Result<Refused, Unavailable>>, Looked) {
        let now = jiff::Timestamp::now();
        let exp = match precheck(token, &self.audience, now) {
            Ok(exp) => exp,
            Err(refused) => return (Err(Ok(refused)), Looked::Prechecked),
        };
        let key: [u8; 32] =
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().try_into().unwrap_or_default();
        if let Some((requester, until)) = self.kept.get(&key).await
            && until > Instant::now()
        {
            return (Ok(requester), Looked::Remembered);
        }
        let Ok(_permit) = self.in_flight.acquire().await else {
            return (Err(Err(Unavailable("the TokenReview bound is closed".into()))), Looked::Failed);
        };
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let why = format!("the apiserver did not review the token: {}", without_token(&e.to_string(), token));
                return (Err(Err(Unavailable(why))), Looked::Failed);
            }
        };
        match requester_of(&answer, &self.audience) {
            Ok(requester) => {
                // Until the token's exp, and no longer than REMEMBERED_FOR (a Pod deleted since).
                let left = exp.duration_since(now).unsigned_abs().min(REMEMBERED_FOR);
                self.kept.insert(key, (requester.clone(), Instant::now() + left)).await;
                (Ok(requester), Looked::Accepted)
            }
            Err(refused) => (Err(Ok(refused)), Looked::Refused),
        }
    }
}

/// `text` with `token` cut out, should an error ever quote the request.
fn without_token(text: &str, token: &str) -> String {
    text.replace(token, "<token>")
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    const AUD: &str = "credential-provider.regcred.dev";

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_900_000_000).unwrap()
    }

    fn jwt(claims: &serde_json::Value) -> String {
        format!("{}.{}.sig", B64URL.encode(br#"{"alg":"RS256"}"#), B64URL.encode(claims.to_string()))
    }

    #[test]
    fn the_claims_weed_out_what_cannot_pass_without_asking() {
        let exp = 1_900_000_600;
        let cases = [
            (jwt(&serde_json::json!({"aud": [AUD], "exp": exp})), Ok(exp)),
            (jwt(&serde_json::json!({"aud": AUD, "exp": exp})), Ok(exp)),
            (jwt(&serde_json::json!({"aud": ["other", AUD], "exp": exp})), Ok(exp)),
            (
                jwt(&serde_json::json!({"aud": ["https://kubernetes.default.svc"], "exp": exp})),
                Err(Refused::OtherAudience(AUD.into())),
            ),
            (jwt(&serde_json::json!({"aud": [AUD], "exp": 1_899_999_999})), Err(Refused::Expired)),
            (jwt(&serde_json::json!({"aud": [AUD], "exp": 1_900_000_000})), Err(Refused::Expired)),
            (jwt(&serde_json::json!({"aud": [AUD]})), Err(Refused::NotAJwt)),
            (jwt(&serde_json::json!({"exp": exp})), Err(Refused::NotAJwt)),
            ("opaque-static-token".into(), Err(Refused::NotAJwt)),
            (String::new(), Err(Refused::NoToken)),
            ("a".repeat(MAX_TOKEN + 1), Err(Refused::NotAJwt)),
        ];
        for (token, want) in cases {
            let got = precheck(&token, AUD, now()).map(jiff::Timestamp::as_second);
            assert_eq!(got, want, "{}", &token[..token.len().min(80)]);
        }
    }

    fn review(authenticated: bool, audiences: &[&str], username: &str, extra: &[(&str, &str)]) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                user: Some(UserInfo {
                    username: Some(username.into()),
                    extra: Some(extra.iter().map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()])).collect()),
                    ..UserInfo::default()
                }),
                error: None,
            }),
            ..TokenReview::default()
        }
    }

    #[test]
    fn only_an_authenticated_pod_bound_service_account_token_for_our_audience_passes() {
        let pod = [(POD_NAME, "app-1"), (POD_UID, "uid-1"), (NODE_NAME, "node-1")];
        let sa = "system:serviceaccount:team-a:builder";
        let ok = Requester {
            namespace: "team-a".into(),
            service_account: "builder".into(),
            pod: "app-1".into(),
            pod_uid: "uid-1".into(),
            node: Some("node-1".into()),
        };
        let cases = [
            (review(true, &[AUD], sa, &pod), Ok(ok)),
            (review(false, &[AUD], sa, &pod), Err(Refused::NotAuthenticated(AUD.into()))),
            (review(true, &["other"], sa, &pod), Err(Refused::NotAuthenticated(AUD.into()))),
            (review(true, &[AUD], "system:node:node-1", &pod), Err(Refused::NotAServiceAccount)),
            (review(true, &[AUD], "system:serviceaccount:team-a", &pod), Err(Refused::NotAServiceAccount)),
            (review(true, &[AUD], "system:serviceaccount::x", &pod), Err(Refused::NotAServiceAccount)),
            (review(true, &[AUD], sa, &[]), Err(Refused::NotBoundToAPod)),
            (review(true, &[AUD], sa, &[(POD_NAME, "app-1")]), Err(Refused::NotBoundToAPod)),
            (TokenReview::default(), Err(Refused::NotAuthenticated(AUD.into()))),
        ];
        for (review, want) in cases {
            assert_eq!(requester_of(&review, AUD), want, "{:?}", review.status);
        }
    }

    #[test]
    fn an_error_never_quotes_the_token() {
        assert_eq!(without_token("bad token abc.def.ghi here", "abc.def.ghi"), "bad token <token> here");
    }
}
