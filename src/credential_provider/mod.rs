//! The credential endpoint: what regcred answers the kubelet's image credential provider
//! (`regcred-credential-provider` on the nodes) at pull time, authorised per ServiceAccount.
//!
//! The provider sends the kubelet's request (`POST /credential-provider/v1`, a CredentialProviderRequest without
//! its token) with the Pod's ServiceAccount token as `Authorization: Bearer`. The token is reviewed by the
//! apiserver for regcred's audience ([`review`]); the namespace and ServiceAccount it proves, with the image, go
//! to the pure decision ([`crate::resolve::kubelet::answer`]) over every profile and what [`crate::resolve::written`]
//! says it writes now, read from the state layer's view (so every replica answers, the leader's minted tokens
//! read from its copy in regcred's namespace). A sibling of the controller and the webhook: it knows neither; the
//! operator gives it the webhook's serving certificate.
//!
//! Answers: 200 with a CredentialProviderResponse (empty `auth`: no credentials), 401 with one plain line when
//! the token is refused, 400 for a body that is not a request, 503 when the token could not be reviewed in time.
//! The token and the credentials are never logged.

pub mod review;
mod server;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use tracing::debug;

use crate::api::kubelet::CredentialProviderRequest;
use crate::resolve::kubelet::{self, Answer, Offer};
use crate::resolve::selection::NamespaceInfo;
use crate::resolve::{self as resolve, Preflight};
use crate::state::View;
pub use review::{Refused, Requester, Reviews};
pub use server::{BODY_LIMIT, DEADLINE, Error as ServeError, router, serve};
pub use stats::Stats;

/// What the endpoint needs.
pub struct Endpoint {
    pub client: kube::Client,
    pub view: View,
    pub reviews: Reviews,
    /// The longest `cacheDuration` (`--credential-provider-cache-max`).
    pub cache_max: Duration,
    pub stats: Stats,
}

/// How a request is answered.
#[derive(Debug)]
pub enum Reply {
    /// 200: the answer (empty `auth`: no credentials).
    Answer(Answer),
    /// 401: the token was refused.
    Refused(Refused),
    /// 400: not a CredentialProviderRequest.
    Malformed(String),
    /// 503: the token could not be reviewed.
    Unavailable(String),
}

impl Endpoint {
    pub fn new(client: kube::Client, view: View, audience: &str, cache_max: Duration) -> Self {
        let reviews = Reviews::new(client.clone(), audience);
        Self { client, view, reviews, cache_max, stats: Stats::default() }
    }

    /// Whether this replica's endpoint listens, as it changes.
    pub fn listening(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stats.serving.subscribe()
    }

    /// Answers one request: `token` from its `Authorization` header (`None`: there was none), `body` as sent.
    pub async fn ask(&self, token: Option<&str>, body: &[u8]) -> Reply {
        let Some(token) = token else { return Reply::Refused(Refused::NoToken) };
        let request: CredentialProviderRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Reply::Malformed(format!("not a CredentialProviderRequest: {e}")),
        };
        let (requester, looked) = self.reviews.requester(token).await;
        match looked {
            review::Looked::Remembered => drop(self.stats.cache_hits.inc()),
            review::Looked::Prechecked => drop(self.stats.prechecked.inc()),
            review::Looked::Accepted => self.stats.review("accepted"),
            review::Looked::Refused => self.stats.review("refused"),
            review::Looked::Failed => self.stats.review("failed"),
        }
        let requester = match requester {
            Ok(r) => r,
            Err(Ok(refused)) => return Reply::Refused(refused),
            Err(Err(unavailable)) => return Reply::Unavailable(unavailable.0),
        };
        let answer = match self.namespace(&requester.namespace).await {
            Ok(Some(ns)) => self.answer(&ns, &requester.service_account, &request.image),
            // A namespace that is gone selects nothing.
            Ok(None) => {
                let gone = NamespaceInfo {
                    name: requester.namespace.clone(),
                    labels: std::collections::BTreeMap::default(),
                    terminating: true,
                };
                self.answer(&gone, &requester.service_account, &request.image)
            }
            Err(why) => return Reply::Unavailable(why),
        };
        debug!(
            namespace = %requester.namespace,
            service_account = %requester.service_account,
            pod = %requester.pod,
            node = requester.node.as_deref().unwrap_or_default(),
            image = %request.image,
            profiles = ?answer.profiles,
            cache_seconds = answer.cache_duration.as_secs(),
            "credential provider answered"
        );
        Reply::Answer(answer)
    }

    /// The answer for `service_account` in `ns` pulling `image` now, from the view.
    pub fn answer(&self, ns: &NamespaceInfo, service_account: &str, image: &str) -> Answer {
        let profiles = self.view.profiles_and_meanings();
        let now = jiff::Timestamp::now();
        // Only the profiles that serve the kubelet and select the namespace cost a resolution.
        let written: Vec<_> = profiles
            .iter()
            .filter(|(p, m)| p.spec.delivery.serves_kubelet() && m.selects(ns))
            .map(|(p, m)| {
                let snapshot = self.view.refresher().peek(&m.name);
                let preflight = Preflight::from_status(p);
                (p, m, resolve::written(p, m, &self.view, snapshot.as_ref(), &preflight, now))
            })
            .collect();
        let offers: Vec<Offer<'_>> =
            written.iter().map(|(p, m, w)| Offer { profile: p, meaning: m, written: w }).collect();
        let requester = kubelet::Requester { namespace: ns, service_account };
        kubelet::answer(&offers, profiles.iter().map(|(_, m)| &**m), requester, image, now, self.cache_max)
    }

    /// The namespace, from the cache, or from the API when it is too new to be there yet (`None`: it does not
    /// exist).
    async fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, String> {
        if let Some(ns) = self.view.namespace(name) {
            return Ok(Some(ns));
        }
        let api = Api::<Namespace>::all(self.client.clone());
        match api.get_metadata_opt(name).await {
            Ok(found) => Ok(found.map(|ns| crate::state::namespace_info(&ns))),
            Err(e) => Err(format!("could not read namespace {name}: {e}")),
        }
    }
}

/// The endpoint behind `Arc`, as the server shares it.
pub type Shared = Arc<Endpoint>;
