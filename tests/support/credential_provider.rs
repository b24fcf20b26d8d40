//! Asking regcred's credential endpoint as the kubelet's provider does: Pod-bound ServiceAccount tokens for its
//! audience, and an HTTPS client that trusts the CA regcred publishes for the nodes.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use regcred::fixtures::wait_for;

/// regcred's audience, as the kubelet requests tokens for it.
pub const AUDIENCE: &str = regcred::api::kubelet::DEFAULT_AUDIENCE;

/// regcred's arguments for its credential endpoint on `port`, its CA published in `<release>-ca` (the name the
/// chart's Role allows), the kubelet's cache bounded by `cache_max`.
pub fn endpoint_args(release: &str, port: u16, cache_max: &str) -> Vec<String> {
    vec![
        "--credential-provider-addr".into(),
        format!("127.0.0.1:{port}"),
        "--credential-provider-ca-configmap".into(),
        format!("{release}-ca"),
        "--credential-provider-cache-max".into(),
        cache_max.into(),
    ]
}

/// A Pod of ServiceAccount `account` in `namespace` that never runs (no node): what a token is bound to.
pub async fn pod(client: &Client, namespace: &str, name: &str, account: &str) -> Pod {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if sas.get_opt(account).await.unwrap().is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta { name: Some(account.into()), ..Default::default() },
            ..Default::default()
        };
        sas.create(&PostParams::default(), &sa).await.unwrap();
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"serviceAccountName": account, "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.example.com:5000/team/app"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace).create(&PostParams::default(), &pod).await.unwrap()
}

/// A token of the Pod's ServiceAccount for `audience`, bound to the Pod, as the kubelet requests it (`client`
/// may be any identity allowed to create `serviceaccounts/token` there).
pub async fn pod_token(client: &Client, pod: &Pod, audience: &str) -> Result<String, kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap();
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap();
    let request = regcred::api::kubelet::pod_token_request(pod, audience);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer: TokenRequest = sas.create_subresource("token", &account, &PostParams::default(), &request).await?;
    Ok(answer.status.unwrap().token.unwrap())
}

/// The endpoint as the provider reaches it: `https://<server name>:<port>` resolved to loopback, trusting only
/// the CA bundle regcred published in ConfigMap `config_map` of `namespace` (waited for).
pub struct Endpoint {
    http: reqwest::Client,
    url: String,
}

impl Endpoint {
    pub async fn new(client: &Client, namespace: &str, config_map: &str, server_name: &str, port: u16) -> Self {
        regcred::install_crypto_provider();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let ca = wait_for("regcred's CA bundle for the nodes", Duration::from_secs(60), || async {
            maps.get_opt(config_map).await.ok().flatten()?.data?.get("ca.crt").cloned()
        })
        .await;
        let mut builder = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap())
            .resolve(server_name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .timeout(Duration::from_secs(10));
        builder = builder.no_proxy();
        Self { http: builder.build().unwrap(), url: format!("https://{server_name}:{port}/credential-provider/v1") }
    }

    /// The endpoint's status and body for `image` with `token` (none: no Authorization header).
    pub async fn ask(&self, token: Option<&str>, image: &str) -> (u16, String) {
        let body = serde_json::json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "kind": "CredentialProviderRequest", "image": image});
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// The answer's `auth` as (key, username, password), its cacheKeyType and cacheDuration in seconds; panics
    /// unless 200.
    pub async fn answer(&self, token: &str, image: &str) -> Answer {
        let (status, body) = self.ask(Some(token), image).await;
        assert_eq!(status, 200, "{image}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let auth = v["auth"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, a)| {
                        (
                            k.clone(),
                            a["username"].as_str().unwrap().to_owned(),
                            a["password"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let seconds = v["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
        Answer { auth, key_type: v["cacheKeyType"].as_str().unwrap().to_owned(), seconds }
    }
}

/// What the endpoint answered.
#[derive(Debug)]
pub struct Answer {
    pub auth: Vec<(String, String, String)>,
    pub key_type: String,
    pub seconds: u64,
}

/// A JWT nobody signed, with these claims.
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    format!("{}.{}.AAAA", B64URL.encode(br#"{"alg":"RS256","kid":"x"}"#), B64URL.encode(claims.to_string()))
}
