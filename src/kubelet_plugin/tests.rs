use super::*;

fn parse(args: &[&str]) -> Result<Args, String> {
    Args::try_parse_from(std::iter::once(BINARY).chain(args.iter().copied())).map_err(|e| e.to_string())
}

const GOOD: &[&str] =
    &["--server", "https://10.96.0.10:8444", "--server-name", "regcred.regcred.svc", "--ca-file", "/etc/ca.crt"];

#[test]
fn the_flags_the_config_passes_parse_and_the_timeout_defaults_to_five_seconds() {
    let args = parse(GOOD).unwrap();
    assert_eq!(args.server, "10.96.0.10:8444".parse().unwrap());
    assert_eq!(args.server_name, "regcred.regcred.svc");
    assert_eq!(args.ca_file, PathBuf::from("/etc/ca.crt"));
    assert_eq!(args.timeout, Duration::from_secs(5));
    let args = parse(&[GOOD, &["--timeout", "1500ms"]].concat()).unwrap();
    assert_eq!(args.timeout, Duration::from_millis(1500));
    assert_eq!(parse_server("https://[fd00::10]:8444/").unwrap(), "[fd00::10]:8444".parse().unwrap());
}

#[test]
fn flags_that_cannot_work_are_refused_with_what_is_expected() {
    for (flag, value, expected) in [
        ("--server", "http://10.96.0.10:8444", "https://IP:PORT"),
        ("--server", "https://regcred.regcred.svc:8444", "an IP address and a port"),
        ("--server", "https://10.96.0.10", "an IP address and a port"),
        ("--server-name", "10.96.0.10", "not a DNS name"),
        ("--server-name", "regcred..svc", "not a DNS name"),
        ("--server-name", "x-.svc", "not a DNS name"),
        ("--timeout", "0s", "above 0"),
        ("--timeout", "2m", "at most 50s"),
        ("--timeout", "soon", "not a duration"),
    ] {
        let mut args: Vec<&str> = GOOD.to_vec();
        if let Some(i) = args.iter().position(|a| *a == flag) {
            args[i + 1] = value;
        } else {
            args.extend([flag, value]);
        }
        let err = parse(&args).unwrap_err();
        assert!(err.contains(expected), "{flag} {value}: {err}");
    }
    assert!(parse(&GOOD[2..]).unwrap_err().contains("--server"), "--server is required");
}

fn request(token: Option<&str>) -> String {
    let mut request = serde_json::json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest",
        "image": "10.250.0.1:5000/team/app", "serviceAccountAnnotations": {"a.example/b": "c"}});
    if let Some(token) = token {
        request["serviceAccountToken"] = token.into();
    }
    request.to_string()
}

#[test]
fn the_token_moves_from_the_body_to_the_authorization_header() {
    let read = read_request(request(Some("eyJ.secret.token")).as_bytes()).unwrap();
    let (token, sent) = split_token(read).unwrap();
    assert_eq!(token, "eyJ.secret.token");
    let body = serde_json::to_value(&sent).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest",
            "image": "10.250.0.1:5000/team/app", "serviceAccountAnnotations": {"a.example/b": "c"}})
    );
}

#[test]
fn a_request_the_plugin_cannot_send_on_is_refused_without_repeating_the_token() {
    let no_token = split_token(read_request(request(None).as_bytes()).unwrap()).unwrap_err();
    assert!(no_token.to_string().contains("no ServiceAccount token"), "{no_token}");
    let blank = split_token(read_request(request(Some(" ")).as_bytes()).unwrap()).unwrap_err();
    assert!(blank.to_string().contains("no ServiceAccount token"), "{blank}");
    let old = request(Some("tok")).replace(API_VERSION, "credentialprovider.kubelet.k8s.io/v1beta1");
    let old = split_token(read_request(old.as_bytes()).unwrap()).unwrap_err();
    assert!(old.to_string().contains("v1beta1"), "{old}");
    let garbage = read_request(r#"{"serviceAccountToken":"eyJ.secret.token", "image": 5}"#.as_bytes()).unwrap_err();
    assert!(garbage.to_string().contains("not a CredentialProviderRequest"), "{garbage}");
    assert!(!garbage.to_string().contains("secret"), "{garbage}");
    let huge = vec![b' '; REQUEST_LIMIT + 1];
    assert!(read_request(&huge[..]).unwrap_err().to_string().contains("larger than 256 KiB"));
}

#[test]
fn only_a_credential_provider_response_of_the_kubelets_version_is_passed_on() {
    let good = serde_json::json!({"apiVersion": API_VERSION, "kind": RESPONSE_KIND, "cacheKeyType": "Registry",
        "cacheDuration": "30s", "auth": {"10.250.0.1:5000": {"username": "u", "password": "hunter2"}}});
    let answer = judge_answer(200, good.to_string().as_bytes()).unwrap();
    assert_eq!(serde_json::to_value(&answer).unwrap(), good);
    let empty = serde_json::json!({"apiVersion": API_VERSION, "kind": RESPONSE_KIND, "cacheKeyType": "Registry"});
    assert!(judge_answer(200, empty.to_string().as_bytes()).unwrap().auth.is_empty(), "no credentials is an answer");

    let cases: [(u16, Vec<u8>, &str); 7] = [
        (
            401,
            b"token refused: expired\nmore".to_vec(),
            "refused the Pod's ServiceAccount token (401): token refused: expired",
        ),
        (503, b"".to_vec(), "regcred answered 503: no reason given"),
        (400, b"bad\x1b[31m request".to_vec(), "regcred answered 400: bad[31m request"),
        (200, b"<html>".to_vec(), "not a CredentialProviderResponse"),
        (200, br#"{"password":"hunter2"}"#.to_vec(), "not a CredentialProviderResponse"),
        (
            200,
            good.to_string().replace(RESPONSE_KIND, "CredentialProviderRequest").into_bytes(),
            "kind `CredentialProviderRequest`",
        ),
        (200, vec![b' '; ANSWER_LIMIT + 1], "larger than 1024 KiB"),
    ];
    for (status, body, expected) in cases {
        let err = judge_answer(status, &body).unwrap_err().to_string();
        assert!(err.contains(expected), "{status}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let long = judge_answer(500, "x".repeat(1000).as_bytes()).unwrap_err().to_string();
    assert!(long.len() < 400 && long.ends_with("..."), "{long}");
}
