//! The AdmissionReview as the handler reads and answers it: only the fields the decision reads are decoded, the
//! rest of the object (its managedFields, status, annotations, volumes, and every container field but `image`) is
//! skipped as it is read, never built into a tree; the answer is written straight from its few fields.
//!
//! An admission arrives after the apiserver has run, its caches cold: decoding a whole Pod (as a
//! `DynamicObject`) cost more than anything the decision does (`make bench`, `benches/webhook.rs`).

use std::fmt;

use base64::Engine as _;
use kube::core::admission::Operation;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// An AdmissionReview as the apiserver sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub api_version: String,
    pub kind: String,
    pub request: Option<Request>,
}

/// An admission request: what the handler reads of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: Kind,
    pub operation: Operation,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub object: Option<Object>,
    #[serde(default)]
    pub old_object: Option<Object>,
    /// The review's `apiVersion` and `kind`, which the answer repeats.
    #[serde(skip)]
    pub types: (String, String),
}

impl Review {
    /// The request, with the review's type to answer with; `None` when the review has none.
    pub fn into_request(self) -> Option<Request> {
        let mut request = self.request?;
        request.types = (self.api_version, self.kind);
        Some(request)
    }
}

/// The kind of the object (its version is not read).
#[derive(Debug, Deserialize)]
pub struct Kind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

/// An object of the review: its metadata's names and labels, and what is read of its `spec` (see [`Spec`]).
#[derive(Debug, Default, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub metadata: Metadata,
    /// `{"spec": ...}` with what was read of the `spec`, laid out as in the object (`/spec/containers`,
    /// `/spec/template/spec/...`, `/spec/jobTemplate/spec/template/spec/...`), for `images::pod_spec`; null
    /// without a `spec`.
    #[serde(default, rename = "spec", deserialize_with = "lean_spec")]
    pub data: Value,
}

impl Object {
    /// The object's label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }
}

/// The object's metadata as the handler reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

fn lean_spec<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    let spec = Spec::deserialize(deserializer)?;
    Ok(Value::Object(Map::from_iter([("spec".to_owned(), spec.into_value())])))
}

/// What is read of a `spec`, whatever the kind: a Pod spec's containers' images and its `imagePullSecrets`, and a
/// workload's Pod template (`template`, and a CronJob's `jobTemplate`), read the same way. As lenient as reading a
/// JSON tree with `get`: a field of another type than expected is taken as absent, never an error.
#[derive(Debug, Default)]
struct Spec {
    /// `containers`, `initContainers`, `ephemeralContainers`: each container as `{"image": ...}` (as sent), `{}`
    /// without one, null when not an object.
    containers: [Option<Vec<Value>>; 3],
    image_pull_secrets: Option<Value>,
    template: Option<Box<Spec>>,
    job_template: Option<Box<Spec>>,
}

impl Spec {
    fn into_value(self) -> Value {
        let mut map = Map::new();
        let fields = ["containers", "initContainers", "ephemeralContainers"];
        for (field, containers) in fields.into_iter().zip(self.containers) {
            if let Some(containers) = containers {
                map.insert(field.into(), Value::Array(containers));
            }
        }
        if let Some(secrets) = self.image_pull_secrets {
            map.insert("imagePullSecrets".into(), secrets);
        }
        for (field, template) in [("template", self.template), ("jobTemplate", self.job_template)] {
            if let Some(spec) = template {
                let spec = Value::Object(Map::from_iter([("spec".to_owned(), spec.into_value())]));
                map.insert(field.into(), spec);
            }
        }
        Value::Object(map)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum SpecField {
    Containers,
    InitContainers,
    EphemeralContainers,
    ImagePullSecrets,
    Template,
    JobTemplate,
    #[serde(other)]
    Other,
}

/// A value of any type but a JSON object (or for [`Containers`], an array) reads as `Default`, whatever it holds.
macro_rules! anything_else_is_default {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Self::Value::default())
        }
    };
}

/// Skips a sequence whole.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips a map whole.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = Spec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a spec")
    }

    anything_else_is_default!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Spec, A::Error> {
        skip_seq(seq).map(|()| Spec::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spec, A::Error> {
        let mut spec = Spec::default();
        while let Some(field) = map.next_key::<SpecField>()? {
            match field {
                SpecField::Containers => spec.containers[0] = map.next_value::<Containers>()?.0,
                SpecField::InitContainers => spec.containers[1] = map.next_value::<Containers>()?.0,
                SpecField::EphemeralContainers => spec.containers[2] = map.next_value::<Containers>()?.0,
                SpecField::ImagePullSecrets => spec.image_pull_secrets = Some(map.next_value()?),
                SpecField::Template => spec.template = map.next_value::<Template>()?.0.map(Box::new),
                SpecField::JobTemplate => spec.job_template = map.next_value::<Template>()?.0.map(Box::new),
                SpecField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(spec)
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

/// A template's `spec`: `None` when the template is not an object or has no `spec`.
#[derive(Default)]
struct Template(Option<Spec>);

struct TemplateVisitor;

impl<'de> Visitor<'de> for TemplateVisitor {
    type Value = Template;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a template")
    }

    anything_else_is_default!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Template, A::Error> {
        skip_seq(seq).map(|()| Template(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Template, A::Error> {
        let mut template = Template(None);
        while let Some(key) = map.next_key::<TemplateField>()? {
            match key {
                TemplateField::Spec => template.0 = Some(map.next_value()?),
                TemplateField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(template)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TemplateVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum TemplateField {
    Spec,
    #[serde(other)]
    Other,
}

/// A list of containers, each read as `{"image": ...}`; `None` when not an array.
#[derive(Default)]
struct Containers(Option<Vec<Value>>);

struct ContainersVisitor;

impl<'de> Visitor<'de> for ContainersVisitor {
    type Value = Containers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of containers")
    }

    anything_else_is_default!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Containers, A::Error> {
        skip_map(map).map(|()| Containers(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Containers, A::Error> {
        let mut containers = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
        while let Some(container) = seq.next_element::<Container>()? {
            containers.push(container.0);
        }
        Ok(Containers(Some(containers)))
    }
}

impl<'de> Deserialize<'de> for Containers {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContainersVisitor)
    }
}

/// One container as `{"image": ...}`, `{}` without an image, null when not an object.
#[derive(Default)]
struct Container(Value);

struct ContainerVisitor;

impl<'de> Visitor<'de> for ContainerVisitor {
    type Value = Container;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a container")
    }

    anything_else_is_default!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Container, A::Error> {
        skip_seq(seq).map(|()| Container(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Container, A::Error> {
        let mut container = Map::new();
        while let Some(key) = map.next_key::<ContainerField>()? {
            match key {
                ContainerField::Image => {
                    container.insert("image".into(), map.next_value()?);
                }
                ContainerField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Container(Value::Object(container)))
    }
}

impl<'de> Deserialize<'de> for Container {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContainerVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ContainerField {
    Image,
    #[serde(other)]
    Other,
}

/// The answer to one admission request.
#[derive(Clone, Debug)]
pub struct Response {
    /// The review's `apiVersion` and `kind`.
    types: (String, String),
    uid: String,
    /// Why the object is refused; `None`: allowed.
    pub denied: Option<String>,
    /// The JSON patch, as JSON.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

impl Response {
    /// The answer to `request` that allows it unchanged.
    pub fn allow(request: &Request) -> Self {
        Self { types: request.types.clone(), uid: request.uid.clone(), denied: None, patch: None, warnings: Vec::new() }
    }

    /// This answer, refusing the object with `reason` (and without a patch).
    #[must_use]
    pub fn deny(mut self, reason: String) -> Self {
        self.denied = Some(reason);
        self.patch = None;
        self
    }

    /// This answer, with `patch`.
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        self.patch = Some(serde_json::to_vec(patch)?);
        Ok(self)
    }

    pub fn allowed(&self) -> bool {
        self.denied.is_none()
    }

    /// The AdmissionReview that carries this answer, as JSON: the patch a base64 string, as the API defines a
    /// `[]byte` (kube-core serializes its `AdmissionResponse::patch` as an array of numbers, kube-rs/kube#1781,
    /// which the apiserver's decoder happens to accept: 3.7 times the bytes, read one number at a time, about
    /// 0.1 ms more of the apiserver's time per admission on the local control plane).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut<'a> {
            api_version: &'a str,
            kind: &'a str,
            response: ResponseOut<'a>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ResponseOut<'a> {
            uid: &'a str,
            allowed: bool,
            status: StatusOut<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'a str>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            warnings: &'a [String],
        }
        #[derive(serde::Serialize)]
        struct StatusOut<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
        }
        let patch = self.patch.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        serde_json::to_vec(&ReviewOut {
            api_version: &self.types.0,
            kind: &self.types.1,
            response: ResponseOut {
                uid: &self.uid,
                allowed: self.allowed(),
                status: StatusOut { message: self.denied.as_deref() },
                patch_type: patch.is_some().then_some("JSONPatch"),
                patch,
                warnings: &self.warnings,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the handler reads of `object`, decoded whole (as it was before) and leanly: the Pod spec's images and
    /// pull Secret names, per kind.
    /// A Pod spec's images and pull Secret names, `None` without a Pod spec.
    type Read = (Option<Vec<String>>, Option<Vec<String>>);

    fn both(kind: &str, group: &str, object: &Value) -> [Read; 2] {
        let read = |data: &Value| {
            let spec = crate::images::pod_spec(group, kind, data);
            (spec.map(crate::images::images_of), spec.map(crate::images::pull_secrets_of))
        };
        let lean: Object = serde_json::from_value(object.clone()).unwrap();
        [read(object), read(&lean.data)]
    }

    #[test]
    fn the_lean_object_reads_as_the_whole_one() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
            "containers": [
                {"name": "a", "image": "nginx", "env": [{"name": "X", "value": "1"}]},
                {"name": "b"},
                {"name": "c", "image": 7},
                "not a container",
                {"name": "d", "image": "ghcr.io/org/app:1", "image": "ghcr.io/org/app:2"},
            ],
            "initContainers": [{"name": "i", "image": "busybox"}],
            "ephemeralContainers": {"not": "a list"},
            "imagePullSecrets": [{"name": "mine"}, {"other": 1}],
        }, "status": {"phase": "Pending"}});
        let template = |spec: &Value| json!({"metadata": {"labels": {"a": "b"}}, "spec": spec});
        let deployment = json!({"spec": {"replicas": 2, "template": template(&pod["spec"])}});
        let cronjob =
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template(&pod["spec"])}}}});
        let cases = [
            ("Pod", "", pod.clone()),
            ("Pod", "", json!({"metadata": {}})),
            ("Pod", "", json!({"spec": null})),
            ("Pod", "", json!({"spec": "odd"})),
            ("Pod", "", json!({"spec": [1, 2]})),
            ("Pod", "", json!({"spec": {"containers": "odd", "imagePullSecrets": "odd"}})),
            ("Deployment", "apps", deployment.clone()),
            ("Deployment", "apps", json!({"spec": {"template": "odd"}})),
            ("Deployment", "apps", json!({"spec": {"template": {"metadata": {}}}})),
            ("Deployment", "apps", pod.clone()),
            ("CronJob", "batch", cronjob),
            ("CronJob", "batch", deployment),
            ("Job", "batch", json!({"spec": {"template": template(&pod["spec"])}})),
        ];
        for (kind, group, object) in cases {
            let [whole, lean] = both(kind, group, &object);
            assert_eq!(lean, whole, "{kind} {object}");
        }
        let [(images, secrets), _] = both("Pod", "", &pod);
        assert_eq!(images.unwrap(), ["nginx", "ghcr.io/org/app:2", "busybox"]);
        assert_eq!(secrets.unwrap(), ["mine"]);
    }

    #[test]
    fn the_review_the_apiserver_sends_is_read_and_answered_as_the_api_defines() {
        let body = include_str!("../../benches/data/admission-review.json");
        let request = serde_json::from_str::<Review>(body).unwrap().into_request().unwrap();
        let whole: Value = serde_json::from_str(body).unwrap();
        let object = request.object.as_ref().unwrap();
        assert_eq!(request.uid, whole["request"]["uid"].as_str().unwrap());
        assert_eq!((request.kind.group.as_str(), request.kind.kind.as_str()), ("", "Pod"));
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(object.metadata.name.as_deref(), whole["request"]["object"]["metadata"]["name"].as_str());
        let spec = crate::images::pod_spec("", "Pod", &object.data).unwrap();
        let whole_spec = &whole["request"]["object"]["spec"];
        assert_eq!(crate::images::images_of(spec), crate::images::images_of(whole_spec));
        assert_eq!(crate::images::pull_secrets_of(spec), crate::images::pull_secrets_of(whole_spec));

        let mut answer = Response::allow(&request);
        let plain: Value = serde_json::from_slice(&answer.to_json().unwrap()).unwrap();
        assert_eq!(
            plain,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": request.uid, "allowed": true, "status": {}}})
        );
        answer.warnings.push("w".into());
        let denied: Value = serde_json::from_slice(&answer.deny("no".into()).to_json().unwrap()).unwrap();
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"], json!({"message": "no"}));
        assert_eq!(denied["response"]["warnings"], json!(["w"]));
    }
}
