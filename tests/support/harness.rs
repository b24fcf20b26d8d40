//! The test harness shared by the controller and webhook tests: a test's operator, its namespace, and helpers.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use regcred::api::RegistryProfile;
pub use regcred::fixtures::WAIT;
use regcred::fixtures::{self, wait_for};
use serde_json::{Value, json};

use super::{Operator, TestEnv};

pub const SERVER: &str = "registry.example.com:5000";

/// A test's operator, its namespace, and helpers around them.
pub struct Harness {
    pub env: TestEnv,
    pub op_ns: String,
    pub operator: Option<Operator>,
    pub kubeconfig: std::path::PathBuf,
}

impl Harness {
    pub async fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[]).await
    }

    /// Starts the operator with `extra` arguments.
    pub async fn start_with(env: &TestEnv, extra: &[&str]) -> Self {
        Self::start_env(env, extra, &[]).await
    }

    /// Starts the operator with `extra` arguments and environment variables.
    pub async fn start_env(env: &TestEnv, extra: &[&str], envs: &[(&str, String)]) -> Self {
        Self::start_chart(env, &[], extra, envs).await
    }

    /// Starts the operator with the RBAC of the chart installed with `sets` (`key=value`), `extra` arguments and
    /// environment variables. `extra` may name regcred's namespace as `{ns}`.
    pub async fn start_chart(env: &TestEnv, sets: &[&str], extra: &[&str], envs: &[(&str, String)]) -> Self {
        super::install_crd(&env.client).await;
        let op_ns = env.namespace("system", &[]).await;
        let kubeconfig = super::operator_identity_with(env, &op_ns, sets).await;
        let extra: Vec<String> = extra.iter().map(|a| a.replace("{ns}", &op_ns)).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let operator = Some(Operator::start_env(&kubeconfig, &op_ns, &env.id, &extra, envs));
        Self { env: env.clone(), op_ns, operator, kubeconfig }
    }

    pub fn client(&self) -> Client {
        self.env.client.clone()
    }

    pub fn restart(&mut self) {
        self.restart_env(&[]);
    }

    /// Replaces the operator by one with environment variables `envs`.
    pub fn restart_env(&mut self, envs: &[(&str, String)]) {
        self.operator = Some(Operator::start_env(&self.kubeconfig, &self.op_ns, &self.env.id, &[], envs));
    }

    pub fn logs(&self) -> String {
        self.operator.as_ref().map(Operator::logs).unwrap_or_default()
    }

    /// Writes the source Secret `name` in the operator's namespace.
    pub async fn source(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data.iter().map(|(k, v)| ((*k).into(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Default::default()
        };
        super::apply(&Api::<Secret>::namespaced(self.client(), &self.op_ns), &secret).await;
    }

    /// Creates (or replaces the spec of) profile `<id>-<name>` and returns its full name.
    pub async fn profile(&self, name: &str, spec: Value) -> String {
        let full = format!("{}-{name}", self.env.id);
        let profile = fixtures::manifest(&full, &[("regcred-test", &self.env.id)], spec);
        super::apply(&Api::<RegistryProfile>::all(self.client()), &profile).await;
        self.env.cleanup::<RegistryProfile>(&full);
        full
    }

    /// The profile's selector for namespaces labelled `pull=<value>` in this test.
    pub fn select(&self, value: &str) -> Value {
        json!({"selector": {"matchLabels": {"regcred-test": self.env.id, "pull": value}}})
    }

    pub async fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client(), ns).get_opt(name).await.unwrap()
    }

    /// Waits until the profile's condition `type_` has `status` and `reason`; returns the profile.
    pub async fn condition(&self, profile: &str, type_: &str, status: &str, reason: &str) -> RegistryProfile {
        fixtures::wait_condition(&self.env.client, profile, type_, status, reason, WAIT).await
    }

    pub async fn ready(&self, profile: &str) -> RegistryProfile {
        self.condition(profile, "Ready", "True", "Ready").await
    }

    /// Waits until `ns` holds Secret `name` whose dockerconfigjson carries `password` for `server`.
    pub async fn wait_credentials(&self, ns: &str, name: &str, server: &str, password: &str) -> Secret {
        fixtures::wait_login(&self.env.client, ns, name, server, WAIT, |l| l.password == password).await.0
    }

    /// Waits until a Secret is gone. Longer than [`WAIT`]: after a profile is deleted it is Kubernetes' garbage
    /// collector that removes the Secrets, and on a fresh cluster the collector learns about a CRD installed a
    /// moment ago only at its next discovery resync (every 30 s, fixed in kube-controller-manager).
    pub async fn wait_gone(&self, ns: &str, name: &str) {
        wait_for(&format!("{ns}/{name} to be deleted"), WAIT * 3, || async {
            self.secret(ns, name).await.is_none().then_some(())
        })
        .await;
    }

    pub async fn set_labels(&self, ns: &str, labels: Value) {
        let patch = json!({"metadata": {"labels": labels}});
        Api::<Namespace>::all(self.client()).patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
}

/// The password a managed Secret holds for `server` ([`fixtures::login`]).
pub fn password_in(secret: &Secret, server: &str) -> Option<String> {
    fixtures::login(secret, server).map(|l| l.password)
}

pub fn basic_spec(selector: Value) -> Value {
    json!({"server": SERVER, "credentials": {"secretRef": {"name": "creds"}}, "namespaces": selector, "secretName": "pull"})
}
