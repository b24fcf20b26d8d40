//! `regcred check --manifest`: the admission image checks before `kubectl apply`, for CI pipelines. Each workload
//! of the manifest is checked as the webhook would check it: its images planned against the profiles in the
//! cluster ([`images::findings`]), resolved with the credentials each profile's Secrets hold now, and answered in
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

use super::{BAD_INPUT, sources_of};

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

/// The manifest's text, from the file or standard input (`-`).
fn read(path: &std::path::Path) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading the manifest from stdin: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// Every profile in the cluster, with its meaning.
async fn profiles(client: &kube::Client, namespace: &str) -> Result<Vec<(Arc<RegistryProfile>, Arc<Meaning>)>, String> {
    let listed = Api::<RegistryProfile>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list RegistryProfiles: {e}"))?;
    Ok(listed
        .items
        .into_iter()
        .map(|p| {
            let meaning = Arc::new(Meaning::of(&p, namespace));
            (Arc::new(p), meaning)
        })
        .collect())
}

/// What one run of `check --manifest` keeps between workloads.
struct Run<'a> {
    args: &'a CheckArgs,
    client: kube::Client,
    profiles: Vec<(Arc<RegistryProfile>, Arc<Meaning>)>,
    checker: Checker,
    now: jiff::Timestamp,
    /// Each profile's Secrets, read once.
    sources: BTreeMap<String, (String, BTreeMap<String, Arc<Secret>>)>,
    /// The report's lines.
    out: String,
    /// Every image's outcome.
    outcomes: Vec<Outcome>,
}

async fn check(args: &CheckArgs, path: &std::path::Path) -> Result<(String, u8), String> {
    use std::fmt::Write as _;
    let workloads = workloads(&read(path)?, &args.manifest_namespace)?;
    let client = crate::client::infer().await.map_err(|e| format!("no usable kubeconfig for --manifest: {e}"))?;
    let mut run = Run {
        args,
        profiles: profiles(&client, &args.namespace).await?,
        client,
        // Generous: nothing waits on a CI check but the pipeline.
        checker: Checker::new(Duration::from_secs(30), 1024, 16, images::CheckStats::default()),
        now: jiff::Timestamp::now(),
        sources: BTreeMap::new(),
        out: String::new(),
        outcomes: Vec::new(),
    };
    for w in &workloads {
        run.workload(w).await?;
    }
    let status = exit_status(&run.outcomes);
    let verdict = if status == 0 { "passed" } else { "failed" };
    let (checked, mut out) = (run.outcomes.len(), run.out);
    let _ = writeln!(out, "{} workloads, {checked} images checked: {verdict}", workloads.len());
    Ok((out, status))
}

impl Run<'_> {
    /// Checks one workload as admission would, and writes its lines.
    async fn workload(&mut self, w: &Workload) -> Result<(), String> {
        use std::fmt::Write as _;
        let ns = namespace(&self.client, &w.namespace).await?;
        let findings = images::findings(&images::images_of(&w.spec), &self.profiles, &ns);
        let mut answered = Vec::new();
        for finding in findings {
            let outcome = match &finding {
                Finding::Check { image, profile, key, .. } => {
                    let outcome = self.image(image, profile, key).await?;
                    if outcome.passed() {
                        let _ = writeln!(self.out, "ok    {}/{}  {image}  (RegistryProfile {profile})", w.kind, w.name);
                    }
                    self.outcomes.push(outcome.clone());
                    Some(outcome)
                }
                Finding::NotSelected { .. } => None,
            };
            answered.push((finding, outcome));
        }
        let missing = missing_secrets(&self.client, &w.namespace, &images::pull_secrets_of(&w.spec)).await;
        for line in images::answer(&answered, &missing, &w.namespace).warnings {
            let _ = writeln!(self.out, "WARN  {}/{}  {line}", w.kind, w.name);
        }
        Ok(())
    }

    /// Resolves `image` with what `profile`'s Secrets hold now (for its key `key`).
    async fn image(&mut self, image: &str, profile: &str, key: &str) -> Result<Outcome, String> {
        let (p, m) = self.profiles.iter().find(|(_, m)| m.name == profile).ok_or("a profile vanished")?;
        if !self.sources.contains_key(profile) {
            self.sources.insert(profile.to_owned(), sources_of(&self.client, &self.args.namespace, p).await?);
        }
        let target = images::target(p, m, &self.sources[profile], None, key, image, self.now);
        Ok(match target {
            Ok(t) => self.checker.check(vec![t]).await.pop().unwrap_or(Outcome::NotChecked("no answer".into())),
            Err(why) => Outcome::NotChecked(why),
        })
    }
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
