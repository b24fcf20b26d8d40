//! The heap a full plan costs at scale, measured with a counting allocator (this test binary's only): 50,000
//! namespaces, two profiles selecting every one, as `make bench` runs them. Ignored by default (it builds the
//! index first, a few seconds); run it alone:
//! `cargo test --lib full_plan_heap -- --ignored --nocapture --test-threads=1`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::{FullPlan, Target, plan_all};
use crate::api::RegistryProfile;
use crate::controller::plan::Ledger;
use crate::names::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL};
use crate::resolve::{self, Meaning, Preflight};
use crate::state::View;
use crate::state::managed::{ObservedSecret, WatchedSecret};

/// Counts the bytes the measuring thread allocates and frees, and their peak, while it measures.
struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(bytes: usize, sign: isize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX) * sign;
    let _ = MEASURING.try_with(|on| {
        if on.get() {
            let now = LIVE.get() + bytes;
            LIVE.set(now);
            PEAK.set(PEAK.get().max(now));
        }
    });
}

#[expect(unsafe_code, reason = "a global allocator is an unsafe trait; this one forwards to System and counts")]
// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        note(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block beside the old one, the peak of a move (an upper bound: glibc often grows in place).
        note(new_size, 1);
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        note(if p.is_null() { new_size } else { layout.size() }, -1);
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// What `f` returns, with the peak of the bytes held above those held on entry while it ran, and those still
/// held when it returned (what it returns included).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    LIVE.set(0);
    PEAK.set(0);
    MEASURING.set(true);
    let out = f();
    MEASURING.set(false);
    let bytes = |n: isize| usize::try_from(n).unwrap_or(0);
    (out, bytes(PEAK.get()), bytes(LIVE.get()))
}

const NAMESPACES: usize = 50_000;
const OP_NS: &str = "regcred-system";

fn profile(k: usize) -> Arc<RegistryProfile> {
    let mut p = crate::fixtures::profile(
        &format!("wide-{k}"),
        json!({
            "server": "registry.example.com",
            "credentials": {"secretRef": {"name": "creds"}},
            "namespaces": {"selector": {"matchLabels": {"bench": "yes"}}},
            "secretName": format!("pull-{k}"),
        }),
    );
    p.metadata.uid = Some(format!("00000000-0000-0000-0000-{k:012}"));
    Arc::new(p)
}

fn namespace(name: &str) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.labels =
        Some([("bench".to_owned(), "yes".to_owned()), ("kubernetes.io/metadata.name".to_owned(), name.into())].into());
    ns
}

/// The Secret `profile` writes into `namespace` as its watch shows it, in sync with `config`.
fn in_sync(profile: &RegistryProfile, meaning: &Meaning, namespace: &str, config: &[u8], n: usize) -> WatchedSecret {
    let secret = Secret {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(meaning.secret_name.clone()),
            uid: Some(format!("10000000-0000-0000-0000-{n:012}")),
            resource_version: Some("1".into()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
                (PROFILE_LABEL.into(), profile.name_any()),
            ])),
            owner_references: Some(vec![OwnerReference { uid: profile.uid().unwrap(), ..Default::default() }]),
            ..Default::default()
        },
        type_: Some(DOCKER_CONFIG_TYPE.into()),
        data: Some(BTreeMap::from([(DOCKER_CONFIG_KEY.into(), ByteString(config.to_vec()))])),
        ..Default::default()
    };
    serde_json::from_value(serde_json::to_value(secret).unwrap()).unwrap()
}

/// 50,000 namespaces and two profiles selecting every one; with `synced`, every Secret of both in place.
fn scene(synced: bool) -> (View, crate::state::Feeds, Vec<Arc<RegistryProfile>>) {
    let (view, mut feeds) = View::detached(OP_NS, 2.0 / 3.0);
    let mut source = Secret::default();
    source.metadata.name = Some("creds".into());
    source.metadata.namespace = Some(OP_NS.into());
    source.data = Some(BTreeMap::from([
        ("username".to_owned(), ByteString(b"bot".to_vec())),
        ("password".to_owned(), ByteString(b"pw".to_vec())),
    ]));
    feeds.sources.apply_watcher_event(&Event::Apply(source));
    let profiles: Vec<_> = (1..=2).map(profile).collect();
    for p in &profiles {
        feeds.profiles.apply_watcher_event(&Event::Apply((**p).clone()));
    }
    let names: Vec<String> = (0..NAMESPACES).map(|i| format!("bench-{i:05}")).collect();
    view.namespaces().apply(&Event::Init);
    for name in &names {
        view.namespaces().apply(&Event::InitApply(namespace(name)));
    }
    view.namespaces().apply(&Event::InitDone);
    view.managed().apply(&Event::Init);
    if synced {
        for p in &profiles {
            let meaning = view.meaning(p);
            let written = resolve::written(p, &meaning, &view, None, &Preflight::Passed, jiff::Timestamp::now());
            let config = written.content().unwrap().unwrap().config.0.expose().to_vec();
            for (n, name) in names.iter().enumerate() {
                view.managed().apply(&Event::InitApply(in_sync(p, &meaning, name, &config, n)));
            }
        }
    }
    view.managed().apply(&Event::InitDone);
    (view, feeds, profiles)
}

/// One full plan of `profile` as [`super::sync_all`] makes it, its writes aside: the plan, the writes handed to
/// the writer (which consumes them), then the ledger. Returns the writes planned and the peak heap.
fn full_plan(view: &View, profile: &Arc<RegistryProfile>) -> (usize, usize) {
    let meaning = view.meaning(profile);
    let written = resolve::written(profile, &meaning, view, None, &Preflight::Passed, jiff::Timestamp::now());
    let all = view.profiles_and_meanings();
    let rivals: Vec<&Meaning> = all.iter().map(|(_, m)| &**m).filter(|m| meaning.rivals(m)).collect();
    let uid = profile.uid().unwrap();
    let target = Target {
        meaning: &meaning,
        content: written.secret(&meaning).unwrap(),
        delivers: true,
        selection: meaning.selection.as_ref().unwrap(),
        rivals: &rivals,
        uid: &uid,
    };
    let ((writes, ledger), peak, _) = measure(|| {
        let FullPlan { selected, writes, conflicts, held, holding } = plan_all(view, profile, &target, false);
        let planned = writes.len();
        drop(writes);
        assert!(conflicts.is_empty() && held.is_empty() && holding <= NAMESPACES);
        let ledger = Ledger::new(0, Instant::now(), &selected, [], None, true);
        (planned, ledger)
    });
    assert_eq!(ledger.selected(), NAMESPACES);
    (writes, peak)
}

#[test]
#[ignore = "a measurement at scale: run alone, see the module's doc"]
fn full_plan_heap_at_50000_namespaces() {
    // What a plan holds per namespace at its peak: the selection's name, then a write or an observed Secret.
    let sizes = (size_of::<Arc<str>>(), size_of::<crate::secrets::Action>(), size_of::<ObservedSecret>());
    println!("bytes each: a selected name {}, a write {}, an observed Secret {}", sizes.0, sizes.1, sizes.2);
    for (what, synced, want) in [("first sync (every Secret missing)", false, NAMESPACES), ("in sync", true, 0)] {
        let (view, _feeds, profiles) = scene(synced);
        let (writes, peak) = full_plan(&view, &profiles[0]);
        assert_eq!(writes, want, "{what}");
        println!(
            "full plan of one profile, {NAMESPACES} namespaces, {what}: {writes} writes, peak heap {} KiB",
            peak / 1024
        );
    }
}
