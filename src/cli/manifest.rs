//! `regcred check --manifest`: the admission image checks before `kubectl apply`, for CI pipelines. Each workload
//! of the manifest is checked as the webhook would check it: its images planned against the profiles in the
//! cluster ([`images::plan`]), resolved with the credentials each profile's Secrets hold now, and answered in
//! the same words ([`images::answer`]).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::api::RegistryProfile;
use crate::config::CheckArgs;
use crate::images::{self, Checker, Finding, Outcome};
use crate::registry::preflight::Reason;
use crate::resolve::Meaning;
use crate::resolve::selection::NamespaceInfo;

use super::check::{BAD_INPUT, sources_of};

/// A workload of the manifest: its kind, name, namespace and Pod spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub spec: Value,
}

/// The workloads of a manifest (YAML or JSON, several documents, `List`s), in order; other kinds are skipped.
pub fn workloads(text: &str, default_namespace: &str) -> Result<Vec<Workload>, String> {
    use serde::Deserialize as _;
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("document {}: not YAML or JSON: {e}", i + 1))?;
        collect(value, &mut objects);
    }
    let mut out = Vec::new();
    for object in objects {
        let field = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (api_version, kind) = (field("/apiVersion"), field("/kind"));
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let Some(spec) = images::pod_spec(group, &kind, &object) else { continue };
        let name =
            Some(field("/metadata/name")).filter(|n| !n.is_empty()).unwrap_or_else(|| field("/metadata/generateName"));
        let namespace = Some(field("/metadata/namespace")).filter(|n| !n.is_empty());
        let namespace = namespace.unwrap_or_else(|| default_namespace.to_owned());
        out.push(Workload { kind, name, namespace, spec: spec.clone() });
    }
    Ok(out)
}

fn collect(value: Value, into: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Object(ref o) if o.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) => {
            if let Some(Value::Array(items)) = o.get("items").cloned() {
                for item in items {
                    collect(item, into);
                }
            }
        }
        other => into.push(other),
    }
}

/// The exit status of a manifest's outcomes: the first refusal's reason, 4 when an image could not be checked,
/// else 0.
pub fn exit_status(outcomes: &[Outcome]) -> u8 {
    let refused = outcomes.iter().find_map(|o| match o {
        Outcome::Refused(f) => Some(f.reason.exit_code()),
        _ => None,
    });
    let unchecked = outcomes.iter().any(|o| matches!(o, Outcome::NotChecked(_)));
    refused.unwrap_or(if unchecked { Reason::RegistryUnreachable.exit_code() } else { 0 })
}

/// Runs `regcred check --manifest`.
pub async fn run(args: &CheckArgs, path: &std::path::Path) -> ExitCode {
    match check(args, path).await {
        Ok((text, status)) => {
            print!("{text}");
            ExitCode::from(status)
        }
        Err(message) => {
            eprintln!("regcred check: {message}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

async fn check(args: &CheckArgs, path: &std::path::Path) -> Result<(String, u8), String> {
    use std::fmt::Write as _;
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading the manifest from stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    let workloads = workloads(&text, &args.manifest_namespace)?;
    let client = crate::client::infer().await.map_err(|e| format!("no usable kubeconfig for --manifest: {e}"))?;
    let listed = Api::<RegistryProfile>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list RegistryProfiles: {e}"))?;
    let profiles: Vec<(Arc<RegistryProfile>, Arc<Meaning>)> = listed
        .items
        .into_iter()
        .map(|p| {
            let meaning = Arc::new(Meaning::of(&p, &args.namespace));
            (Arc::new(p), meaning)
        })
        .collect();
    // Generous: nothing waits on a CI check but the pipeline.
    let checker = Checker::new(Duration::from_secs(30), 1024, 16, images::CheckStats::default());
    let now = jiff::Timestamp::now();
    let mut sources = BTreeMap::new();
    let mut out = String::new();
    let mut all = Vec::new();
    for w in &workloads {
        let ns = namespace(&client, &w.namespace).await?;
        let findings = images::plan(&images::images_of(&w.spec), &profiles, &ns);
        let mut answered = Vec::new();
        for finding in findings {
            let outcome = match &finding {
                Finding::Check { image, profile, key, .. } => {
                    let (p, m) = profiles.iter().find(|(_, m)| &m.name == profile).ok_or("a profile vanished")?;
                    if !sources.contains_key(profile) {
                        sources.insert(profile.clone(), sources_of(&client, &args.namespace, p).await?);
                    }
                    let target = images::target(p, m, &sources[profile], None, key, image, now);
                    let outcome = match target {
                        Ok(t) => checker.check(vec![t]).await.pop().unwrap_or(Outcome::NotChecked("no answer".into())),
                        Err(why) => Outcome::NotChecked(why),
                    };
                    if outcome.passed() {
                        let _ = writeln!(out, "ok    {}/{}  {image}  (RegistryProfile {profile})", w.kind, w.name);
                    }
                    all.push(outcome.clone());
                    Some(outcome)
                }
                Finding::NotSelected { .. } => None,
            };
            answered.push((finding, outcome));
        }
        let missing = missing_secrets(&client, &w.namespace, &images::pull_secrets_of(&w.spec)).await;
        for line in images::answer(&answered, &missing, &w.namespace).warnings {
            let _ = writeln!(out, "WARN  {}/{}  {line}", w.kind, w.name);
        }
    }
    let status = exit_status(&all);
    let _ = writeln!(
        out,
        "{} workloads, {} images checked: {}",
        workloads.len(),
        all.len(),
        if status == 0 { "passed" } else { "failed" }
    );
    Ok((out, status))
}

/// The namespace as the profiles' selection sees it; one that does not exist yet has no labels.
async fn namespace(client: &kube::Client, name: &str) -> Result<NamespaceInfo, String> {
    match Api::<Namespace>::all(client.clone()).get_metadata_opt(name).await {
        Ok(Some(ns)) => Ok(crate::state::namespace_info(&ns)),
        Ok(None) => Ok(NamespaceInfo { name: name.to_owned(), labels: BTreeMap::default(), terminating: false }),
        Err(e) => Err(format!("cannot read namespace {name}: {e}")),
    }
}

/// The pull Secrets of `names` that do not exist in `namespace` (none when they cannot be looked up).
async fn missing_secrets(client: &kube::Client, namespace: &str, names: &[String]) -> Vec<String> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut missing = Vec::new();
    for name in names {
        if let Ok(None) = api.get_metadata_opt(name).await {
            missing.push(name.clone());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::preflight::Failure;

    #[test]
    fn workloads_come_from_every_document_and_list() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {template: {spec: {containers: [{name: a, image: r/web:1}]}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "job-"}, "spec": {"containers": [{"name": "a", "image": "r/pod:1"}]}},
  {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
   "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "r/cron:1"}]}}}}}}
]}
---
"#;
        let got = workloads(text, "default").unwrap();
        let summary: Vec<(&str, &str, &str, Vec<String>)> = got
            .iter()
            .map(|w| (w.kind.as_str(), w.name.as_str(), w.namespace.as_str(), images::images_of(&w.spec)))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Deployment", "web", "shop", vec!["r/web:1".to_owned()]),
                ("Pod", "job-", "default", vec!["r/pod:1".to_owned()]),
                ("CronJob", "nightly", "default", vec!["r/cron:1".to_owned()]),
            ]
        );
        let err = workloads("kind: [unclosed", "default").unwrap_err();
        assert!(err.contains("document 1"), "{err}");
    }

    #[test]
    fn the_exit_status_is_the_first_refusals_then_unchecked_then_zero() {
        let refused = |reason| Outcome::Refused(Failure { reason, message: String::new() });
        assert_eq!(exit_status(&[]), 0);
        assert_eq!(exit_status(&[Outcome::Passed]), 0);
        assert_eq!(exit_status(&[Outcome::Passed, Outcome::NotChecked(String::new())]), 4);
        let mixed =
            [Outcome::NotChecked(String::new()), refused(Reason::ImageTooLarge), refused(Reason::ImageNotFound)];
        assert_eq!(exit_status(&mixed), 7);
    }
}
