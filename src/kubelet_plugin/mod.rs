//! `regcred-credential-provider`, the program the kubelet runs for every image its CredentialProviderConfig
//! matches (KEP-2133 exec plugins, with KEP-4412's ServiceAccount tokens): it reads the kubelet's
//! [`CredentialProviderRequest`] on stdin, sends it on to regcred's credential endpoint with the Pod's
//! ServiceAccount token as its `Authorization` header, and writes regcred's answer, a
//! [`CredentialProviderResponse`], on stdout.
//!
//! It fails closed: whatever goes wrong (no token, an unreadable CA, regcred unreachable, refusing, slow or
//! answering something else), it writes nothing on stdout, one line on stderr (the kubelet logs it with the
//! image) and exits 1; the kubelet then pulls without credentials and caches nothing. The token and the
//! credentials are never written anywhere but to regcred and to the kubelet.
//!
//! A second binary of the crate rather than a `regcred` subcommand: the kubelet runs it for every pull, on every
//! node, from the node's own filesystem, so it must start fast and run on any node's libc (a static executable),
//! and be small to copy; regcred's own binary carries the Kubernetes client, the cloud SDKs and the controller
//! (docs/credential-provider.md has the sizes).
//!
//! [`config`] is the CredentialProviderConfig the node installer writes for it, checked as the kubelet checks it.

pub mod config;
pub mod node;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::api::kubelet::{
    API_VERSION, CredentialProviderRequest, CredentialProviderResponse, ENDPOINT_PATH, RESPONSE_KIND,
};
use crate::registry::preflight::error_chain;

/// The binary's name: the kubelet runs `<bin dir>/<provider name>`, so it is also the provider's name in the
/// CredentialProviderConfig.
pub const BINARY: &str = "regcred-credential-provider";
/// The largest request the kubelet's stdin may carry (an image name, a token of a few KiB and the
/// ServiceAccount annotations the config asks for).
pub const REQUEST_LIMIT: usize = 256 * 1024;
/// The largest answer regcred's endpoint may give (credentials for a few registries are a few KiB).
pub const ANSWER_LIMIT: usize = 1024 * 1024;
/// The longest `--timeout`: under the kubelet's own one minute for an exec plugin, so the plugin's own line, not
/// the kubelet's kill, says what happened.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(50);
/// The longest part of regcred's error text a line of the plugin repeats.
const REASON_LIMIT: usize = 300;

/// regcred-credential-provider: asks regcred for the registry credentials of the Pod whose ServiceAccount token
/// the kubelet hands it (the kubelet's image credential provider API, credentialprovider.kubelet.k8s.io/v1).
/// The kubelet passes the flags from its CredentialProviderConfig's `args`; no flag is read from the environment,
/// which is the kubelet's.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = BINARY, version)]
pub struct Args {
    /// regcred's credential endpoint, `https://IP:PORT`: the address of regcred's Service (its ClusterIP; a
    /// node has no cluster DNS).
    #[arg(long, value_parser = parse_server)]
    pub server: SocketAddr,

    /// The name regcred's serving certificate is verified for, `<fullname>.<namespace>.svc`.
    #[arg(long = "server-name", value_parser = parse_server_name)]
    pub server_name: String,

    /// The CA bundle (PEM) that signed regcred's serving certificate: the only roots trusted.
    #[arg(long = "ca-file")]
    pub ca_file: PathBuf,

    /// The longest the whole exchange with regcred may take (connect, TLS, request, answer), at most 50s: the
    /// kubelet waits this long at worst before it pulls without credentials.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Why the plugin gave the kubelet no credentials. Its text is the one line the kubelet logs: never a token or a
/// password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the kubelet's request: {0}")]
    Request(String),
    #[error("the CA file {path}: {why}")]
    Ca { path: String, why: String },
    #[error("regcred refused the Pod's ServiceAccount token (401): {0}")]
    Refused(String),
    #[error("regcred answered {status}: {reason}")]
    Status { status: u16, reason: String },
    #[error("could not reach regcred at {server} as {name}: {why}")]
    Unreachable { server: String, name: String, why: String },
    #[error("regcred did not answer within {0:?} (--timeout)")]
    Timeout(Duration),
    #[error("regcred's answer is not a CredentialProviderResponse: {0}")]
    Answer(String),
}

/// `https://IP:PORT`: an IP address (IPv6 in brackets) and a port, nothing else.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let rest = s.strip_prefix("https://").ok_or_else(|| format!("`{s}` is not https://IP:PORT"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>().map_err(|_| format!("`{s}` is not https://IP:PORT (an IP address and a port)"))
}

/// A DNS name (the certificate's), not an IP address: the Service's name is what its certificate holds.
pub fn parse_server_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid { Ok(s.to_ascii_lowercase()) } else { Err(format!("`{s}` is not a DNS name such as regcred.regcred.svc")) }
}

/// A duration such as `5s` or `1500ms`, above zero and at most [`MAX_TIMEOUT`].
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("`{s}` is not above 0 and at most {}s", MAX_TIMEOUT.as_secs()));
    }
    Ok(d)
}

/// The kubelet's request, read from `input`, at most [`REQUEST_LIMIT`] bytes.
pub fn read_request(input: impl Read) -> Result<CredentialProviderRequest, Error> {
    let mut bytes = Vec::new();
    input
        .take(REQUEST_LIMIT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Request(format!("cannot read stdin: {e}")))?;
    if bytes.len() > REQUEST_LIMIT {
        return Err(Error::Request(format!("larger than {} KiB", REQUEST_LIMIT / 1024)));
    }
    // serde_json's error names a line and column, never the text it read (which holds the token).
    serde_json::from_slice(&bytes).map_err(|e| Error::Request(format!("not a CredentialProviderRequest: {e}")))
}

/// What goes to regcred: the request without its token, and the token for the `Authorization` header. A request
/// without a token is refused here: the kubelet sends one only when its config has `tokenAttributes`.
pub fn split_token(mut request: CredentialProviderRequest) -> Result<(String, CredentialProviderRequest), Error> {
    if request.api_version != API_VERSION {
        return Err(Error::Request(format!(
            "apiVersion is `{}`, not {API_VERSION} (the CredentialProviderConfig's provider apiVersion)",
            request.api_version
        )));
    }
    if request.image.is_empty() {
        return Err(Error::Request("it names no image".into()));
    }
    match request.service_account_token.take() {
        Some(token) if !token.trim().is_empty() => Ok((token, request)),
        _ => Err(Error::Request(
            "it carries no ServiceAccount token: the CredentialProviderConfig's provider needs tokenAttributes \
             (serviceAccountTokenAudience, requireServiceAccount: true)"
                .into(),
        )),
    }
}

/// regcred's answer, checked: 200 with a CredentialProviderResponse of the kubelet's API version, at most
/// [`ANSWER_LIMIT`] bytes; 401 is a refused token; anything else an error with regcred's one-line reason.
pub fn judge_answer(status: u16, body: &[u8]) -> Result<CredentialProviderResponse, Error> {
    if body.len() > ANSWER_LIMIT {
        return Err(Error::Answer(format!("larger than {} KiB", ANSWER_LIMIT / 1024)));
    }
    match status {
        200 => {}
        401 => return Err(Error::Refused(reason(body))),
        _ => return Err(Error::Status { status, reason: reason(body) }),
    }
    // serde_json's error names a line and column, never the text (which holds passwords).
    let answer: CredentialProviderResponse = serde_json::from_slice(body).map_err(|e| Error::Answer(e.to_string()))?;
    if answer.api_version != API_VERSION || answer.kind != RESPONSE_KIND {
        return Err(Error::Answer(format!(
            "apiVersion `{}` and kind `{}`, not {API_VERSION} {RESPONSE_KIND}",
            answer.api_version, answer.kind
        )));
    }
    Ok(answer)
}

/// The first line of an error answer's text, printable characters only, cut at [`REASON_LIMIT`].
fn reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.lines().next().unwrap_or_default().chars().filter(|c| !c.is_control()).collect();
    let line = line.trim();
    if line.is_empty() {
        return "no reason given".into();
    }
    match line.char_indices().nth(REASON_LIMIT) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

/// Asks regcred for `request`'s credentials: the whole exchange within `args.timeout`.
pub async fn exchange(args: &Args, request: CredentialProviderRequest) -> Result<CredentialProviderResponse, Error> {
    let (token, request) = split_token(request)?;
    let pem = std::fs::read(&args.ca_file)
        .map_err(|e| Error::Ca { path: args.ca_file.display().to_string(), why: e.to_string() })?;
    match tokio::time::timeout(args.timeout, send(args, &pem, &token, &request)).await {
        Ok(answer) => answer,
        Err(_) => Err(Error::Timeout(args.timeout)),
    }
}

async fn send(
    args: &Args,
    ca_pem: &[u8],
    token: &str,
    request: &CredentialProviderRequest,
) -> Result<CredentialProviderResponse, Error> {
    let ca = |why: String| Error::Ca { path: args.ca_file.display().to_string(), why };
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(|e| ca(format!("not PEM certificates: {e}")))?;
    if roots.is_empty() {
        return Err(ca("holds no certificate".into()));
    }
    let unreachable = |e: &reqwest::Error| Error::Unreachable {
        server: args.server.to_string(),
        name: args.server_name.clone(),
        why: error_chain(e),
    };
    let client = reqwest::Client::builder()
        .tls_certs_only(roots)
        .https_only(true)
        // A ClusterIP is never reached through a proxy, and the token must not cross one.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&args.server_name, args.server)
        .timeout(args.timeout)
        .user_agent(concat!("regcred-credential-provider/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| unreachable(&e))?;
    let url = format!("https://{}:{}{ENDPOINT_PATH}", args.server_name, args.server.port());
    let mut response = client.post(url).bearer_auth(token).json(request).send().await.map_err(|e| unreachable(&e))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > ANSWER_LIMIT {
            break;
        }
    }
    judge_answer(status, &body)
}

/// The program: the request from stdin, the answer on stdout, or one line on stderr and exit status 1.
pub fn run(args: &Args) -> ExitCode {
    match answer(args) {
        Ok(json) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(json.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("cannot write the answer on stdout: {e}")),
            }
        }
        Err(e) => fail(&e),
    }
}

fn answer(args: &Args) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let timeout = args.timeout;
    // stdin is read on the blocking pool, so that --timeout bounds it too; a runtime shut down in the background
    // does not wait for a read that never ends.
    let result = runtime.block_on(async {
        let read = tokio::task::spawn_blocking(|| read_request(std::io::stdin().lock()));
        let request = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(request)) => request?,
            Ok(Err(e)) => return Err(Error::Request(format!("cannot read stdin: {e}"))),
            Err(_) => return Err(Error::Request(format!("stdin was not closed within {timeout:?}"))),
        };
        exchange(args, request).await
    });
    runtime.shutdown_background();
    let answer = result.map_err(|e| e.to_string())?;
    serde_json::to_string(&answer).map_err(|e| format!("cannot write the answer: {e}"))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{BINARY}: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests;
