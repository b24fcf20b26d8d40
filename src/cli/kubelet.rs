//! `regcred check --credential-provider NAMESPACE/SERVICEACCOUNT --pod POD IMAGE...`: regcred's credential
//! endpoint asked as the kubelet's provider asks it for that Pod: a token of the ServiceAccount for regcred's
//! audience, bound to the Pod (TokenRequest, as the kubelet makes it), sent over TLS trusting only regcred's CA
//! bundle. Prints, per image, the registry keys the kubelet would get (never a password), or why none.
//!
//! Exit status: 0 every image gets credentials; 3 the token was refused; 4 the endpoint is unreachable; 5 its
//! certificate is not trusted; 2 bad input; 1 anything else (an image gets none).

use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, PostParams};

use super::BAD_INPUT;
use crate::api::kubelet::{API_VERSION, CredentialProviderResponse, ENDPOINT_PATH, REQUEST_KIND};
use crate::config::CheckArgs;

/// The Service port of the endpoint (the chart's `credentials` port).
const PORT: u16 = 8444;

/// What one image got.
enum Got {
    Keys(CredentialProviderResponse),
    Refused(String),
    Failed(u8, String),
}

/// Runs the check for ServiceAccount `who` (`NAMESPACE/NAME`).
pub async fn run(args: &CheckArgs, who: &str) -> ExitCode {
    match ask_all(args, who).await {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("regcred check: {message}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

async fn ask_all(args: &CheckArgs, who: &str) -> Result<u8, String> {
    let k = &args.kubelet;
    let (namespace, account) = who
        .split_once('/')
        .filter(|(n, a)| !n.is_empty() && !a.is_empty())
        .ok_or("--credential-provider takes NAMESPACE/SERVICEACCOUNT")?;
    if args.images.is_empty() {
        return Err("name at least one image (host[:port]/path)".into());
    }
    let pod_name = k.pod.as_deref().ok_or("--pod: the endpoint answers only tokens bound to a Pod")?;
    let client = crate::client::infer().await.map_err(|e| format!("no usable Kubernetes configuration: {e}"))?;
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod_name)
        .await
        .map_err(|e| format!("reading Pod {namespace}/{pod_name}: {e}"))?;
    let pods_account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    if pods_account != account {
        return Err(format!("Pod {namespace}/{pod_name} runs as ServiceAccount {pods_account}, not {account}"));
    }
    let token = token(&client, namespace, account, &pod, &k.audience).await?;
    let ca = match &args.ca_file {
        Some(path) => std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
        None => ca_bundle(&client, &args.namespace, &k.ca_config_map).await?,
    };
    let server_name = k.server_name.clone().unwrap_or_else(|| format!("regcred.{}.svc", args.namespace));
    let url = k.url.clone().unwrap_or_else(|| format!("https://{server_name}:{PORT}"));
    let (http, url) = http(&url, &server_name, &ca)?;
    let mut code = 0;
    for image in &args.images {
        let got = ask(&http, &url, &token, image).await;
        println!("{}", line(image, &got));
        let this = match got {
            Got::Keys(r) if !r.auth.is_empty() => 0,
            Got::Keys(_) => 1,
            Got::Refused(_) => 3,
            Got::Failed(c, _) => c,
        };
        code = code.max(this);
    }
    Ok(code)
}

/// A token of `account` for `audience`, bound to `pod`.
async fn token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    pod: &Pod,
    audience: &str,
) -> Result<String, String> {
    let request = crate::api::kubelet::pod_token_request(pod, audience);
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("requesting a token of ServiceAccount {namespace}/{account}: {e}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the TokenRequest returned no token".into())
}

/// The CA bundle regcred publishes for the nodes.
async fn ca_bundle(client: &kube::Client, namespace: &str, name: &str) -> Result<Vec<u8>, String> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("reading ConfigMap {namespace}/{name} (regcred's CA bundle; or pass --ca-file): {e}"))?;
    map.data
        .and_then(|d| d.get(crate::webhook::CA_KEY).cloned())
        .map(String::into_bytes)
        .ok_or_else(|| format!("ConfigMap {namespace}/{name} holds no {}", crate::webhook::CA_KEY))
}

/// An HTTPS client trusting only `ca`, checking `server_name` whatever address `url` names; the URL to post to.
fn http(url: &str, server_name: &str, ca: &[u8]) -> Result<(reqwest::Client, String), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("--credential-provider-url {url}: {e}"))?;
    let port = parsed.port_or_known_default().unwrap_or(PORT);
    let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(|e| format!("the CA bundle: {e}"))?;
    let mut builder = reqwest::Client::builder().tls_certs_only(certs).timeout(Duration::from_secs(10)).no_proxy();
    let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        builder = builder.resolve(server_name, std::net::SocketAddr::new(ip, port));
    } else if host != server_name {
        return Err(format!("--credential-provider-url names {host}: use an IP address, or the server name itself"));
    }
    let client = builder.build().map_err(|e| format!("building the HTTPS client: {e}"))?;
    Ok((client, format!("https://{server_name}:{port}{ENDPOINT_PATH}")))
}

async fn ask(http: &reqwest::Client, url: &str, token: &str, image: &str) -> Got {
    let body = serde_json::json!({"apiVersion": API_VERSION, "kind": REQUEST_KIND, "image": image});
    let response = match http.post(url).bearer_auth(token).json(&body).send().await {
        Ok(r) => r,
        Err(e) => {
            let chain = crate::registry::preflight::error_chain(&e);
            let code = if chain.contains("certificate") || chain.contains("UnknownIssuer") { 5 } else { 4 };
            return Got::Failed(code, format!("{url}: {chain}"));
        }
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let first = text.lines().next().unwrap_or_default().to_owned();
    match status.as_u16() {
        200 => serde_json::from_str(&text)
            .map_or_else(|e| Got::Failed(1, format!("not a CredentialProviderResponse: {e}")), Got::Keys),
        401 => Got::Refused(first),
        code => Got::Failed(1, format!("{code}: {first}")),
    }
}

/// What is printed for one image: the keys and how long the kubelet keeps them, never a password.
fn line(image: &str, got: &Got) -> String {
    match got {
        Got::Keys(r) if r.auth.is_empty() => {
            format!("{image}: no credentials (no profile delivering to the kubelet selects this ServiceAccount for it)")
        }
        Got::Keys(r) => format!(
            "{image}: credentials for {} (cacheKeyType {:?}, cacheDuration {})",
            r.auth.keys().cloned().collect::<Vec<_>>().join(", "),
            r.cache_key_type,
            r.cache_duration.as_deref().unwrap_or("-"),
        ),
        Got::Refused(why) => format!("{image}: refused (401): {why}"),
        Got::Failed(_, why) => format!("{image}: no answer: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::kubelet::{AuthConfig, CacheKeyType};

    #[test]
    fn a_line_names_the_keys_and_never_the_password() {
        let auth = BTreeMap::from([(
            "r.example.com".to_owned(),
            AuthConfig { username: "u".into(), password: "hunter2".into() },
        )]);
        let got = Got::Keys(CredentialProviderResponse::new(CacheKeyType::Registry, Duration::from_secs(30), auth));
        let text = line("r.example.com/app", &got);
        assert_eq!(text, "r.example.com/app: credentials for r.example.com (cacheKeyType Registry, cacheDuration 30s)");
        assert!(!text.contains("hunter2"));
        let none =
            Got::Keys(CredentialProviderResponse::new(CacheKeyType::Image, Duration::from_secs(30), BTreeMap::new()));
        assert!(line("x/y", &none).contains("no credentials"));
    }

    #[test]
    fn an_ip_address_is_reached_under_the_server_name_and_any_other_name_refused() {
        crate::install_crypto_provider();
        let (_, url) = http("https://10.0.0.1:8444", "regcred.ns.svc", b"").unwrap();
        assert_eq!(url, "https://regcred.ns.svc:8444/credential-provider/v1");
        let e = http("https://other.example:8444", "regcred.ns.svc", b"").unwrap_err();
        assert!(e.contains("other.example"), "{e}");
    }
}
