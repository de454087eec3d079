//! Tidy test: every workspace crate sits in a layer of SPEC.md §1 and depends only downward.
//!
//! Normal (and build) dependencies must be in the crate's allowed list. Dev-dependencies may in
//! addition reach sideways or down (a crate of the same layer or a lower one, e.g. `queue-inline`
//! testing against `lane-store`), but never up, and never into `xtask` or `laneway-tests`. `app`
//! is the exception: it may use only `app-core`, for tests as well, so that everything it needs is
//! re-exported by `app-core`.
//!
//! Dev-only test support (`redis-harness`) depends on none of our crates and is never a normal
//! dependency: only the crates listed in [`DEV_ONLY`] may use it, and only as a dev-dependency.
//! That rule comes first, so it binds tooling too. The one exception is dev-only tooling that is
//! itself never a dependency of anything, listed with it (`laneway-bench`, which starts its own
//! Redis): it may use the support as a normal dependency.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What a crate may depend on among the workspace members.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// Exactly these members (plus, for dev-dependencies, see [`Placement::dev_sideways`]).
    Only(&'static [&'static str]),
    /// Tooling (`xtask`, `laneway-tests`): anything in the workspace.
    Anything,
}

/// Where a workspace member sits, and the rule for its dependencies on other members.
#[derive(Debug)]
struct Placement {
    name: &'static str,
    /// 0 is the bottom; tooling sits above every library layer.
    layer: u8,
    allowed: Allowed,
    /// Whether dev-dependencies may also reach any library crate of the same or a lower layer.
    dev_sideways: bool,
}

const TOOLING: u8 = u8::MAX;

/// SPEC.md §1. A new crate must be added here, in a layer, before the tests pass.
const LAYERS: &[Placement] = &[
    Placement { name: "queue-core", layer: 0, allowed: Allowed::Only(&[]), dev_sideways: true },
    // Depends on nothing of ours, so it sits at the bottom; who may use it is in DEV_ONLY.
    Placement { name: "redis-harness", layer: 0, allowed: Allowed::Only(&[]), dev_sideways: false },
    Placement { name: "lane-store", layer: 1, allowed: Allowed::Only(&["queue-core"]), dev_sideways: true },
    Placement { name: "queue-inline", layer: 1, allowed: Allowed::Only(&["queue-core"]), dev_sideways: true },
    Placement {
        name: "queue-redis",
        layer: 2,
        allowed: Allowed::Only(&["queue-core", "lane-store"]),
        dev_sideways: true,
    },
    Placement {
        name: "runtime-manager",
        layer: 3,
        allowed: Allowed::Only(&["queue-core", "lane-store", "queue-inline", "queue-redis"]),
        dev_sideways: true,
    },
    Placement {
        name: "app-core",
        layer: 4,
        allowed: Allowed::Only(&[
            "queue-core",
            "lane-store",
            "queue-inline",
            "queue-redis",
            "runtime-manager",
        ]),
        dev_sideways: true,
    },
    Placement { name: "app", layer: 5, allowed: Allowed::Only(&["app-core"]), dev_sideways: false },
    Placement { name: "xtask", layer: TOOLING, allowed: Allowed::Anything, dev_sideways: true },
    Placement { name: "laneway-tests", layer: TOOLING, allowed: Allowed::Anything, dev_sideways: true },
    // The benchmark runner: dev-only tooling like xtask; nothing may depend on it.
    Placement { name: "laneway-bench", layer: TOOLING, allowed: Allowed::Anything, dev_sideways: true },
];

/// Dev-only test support, each with the only members that may use it, as a dev-dependency.
const DEV_ONLY: &[(&str, &[&str])] = &[(
    "redis-harness",
    &["lane-store", "queue-redis", "runtime-manager", "app-core", "app", "laneway-tests"],
)];

/// Dev-only tooling that may use dev-only support as a normal dependency: binaries nothing
/// depends on (the benchmark runner starts its own `redis-server`).
const DEV_TOOLS: &[(&str, &[&str])] = &[("redis-harness", &["laneway-bench"])];

/// Crates that would tie `queue-core` to a runtime, to Redis or to SQLite.
const RUNTIME_CRATES: &[&str] = &["tokio", "redis", "deadpool-redis", "rusqlite"];

fn placement(name: &str) -> Option<&'static Placement> {
    LAYERS.iter().find(|p| p.name == name)
}

/// The members that may use `name` as a dev-dependency, if it is dev-only test support.
fn dev_only_users(name: &str) -> Option<&'static [&'static str]> {
    DEV_ONLY.iter().find(|(support, _)| *support == name).map(|(_, users)| *users)
}

fn packages(metadata: &Value) -> &[Value] {
    metadata["packages"].as_array().map_or(&[], Vec::as_slice)
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("")
}

fn member_names(metadata: &Value) -> BTreeSet<&str> {
    packages(metadata).iter().map(|p| str_field(p, "name")).collect()
}

/// The kind of a dependency as `cargo metadata` spells it: `null` is a normal dependency.
fn dep_kind(dep: &Value) -> &str {
    dep["kind"].as_str().unwrap_or("normal")
}

/// Why `crate_` may not depend on `dep` (of `kind`), or `None` when the table allows it.
fn rule_broken(crate_: &Placement, dep: &str, kind: &str) -> Option<String> {
    let tool_may_use =
        DEV_TOOLS.iter().any(|(support, tools)| *support == dep && tools.contains(&crate_.name));
    if let Some(users) = dev_only_users(dep).filter(|_| !tool_may_use) {
        let rule =
            format!("`{dep}` is dev-only test support, a dev-dependency of: {} only", users.join(", "));
        return if kind != "dev" {
            Some(format!("{rule}; never a {kind} dependency"))
        } else if users.contains(&crate_.name) {
            None
        } else {
            Some(format!("{rule}; not of `{}`", crate_.name))
        };
    }
    let Allowed::Only(allowed) = crate_.allowed else { return None };
    if allowed.contains(&dep) {
        return None;
    }
    let listed = if allowed.is_empty() { "none of ours".to_owned() } else { allowed.join(", ") };
    let rule = format!("`{}` (layer {}) may depend on: {listed}", crate_.name, crate_.layer);
    let Some(target) = placement(dep) else {
        return Some(format!("{rule}; `{dep}` is in no layer"));
    };
    if kind == "dev" && crate_.dev_sideways && target.layer <= crate_.layer {
        return None;
    }
    let why = if target.layer == TOOLING {
        format!("`{dep}` is dev-only tooling")
    } else if target.layer > crate_.layer {
        format!("`{dep}` is in layer {}, above it", target.layer)
    } else if kind == "dev" {
        format!("`{dep}` is not in that list (and `{}` may not reach sideways in tests)", crate_.name)
    } else {
        format!("`{dep}` is not in that list (dev-dependencies may reach sideways or down, normal ones not)")
    };
    Some(format!("{rule}; {why}"))
}

/// Every dependency of a member on another member that the layer table does not allow.
fn layering_violations(metadata: &Value) -> Vec<String> {
    let members = member_names(metadata);
    let mut violations = Vec::new();
    for package in packages(metadata) {
        let name = str_field(package, "name");
        let Some(crate_) = placement(name) else { continue };
        for dep in package["dependencies"].as_array().map_or(&[][..], Vec::as_slice) {
            let dep_name = str_field(dep, "name");
            if !members.contains(dep_name) {
                continue;
            }
            let kind = dep_kind(dep);
            if let Some(rule) = rule_broken(crate_, dep_name, kind) {
                violations.push(format!("`{name}` has a {kind} dependency on `{dep_name}`: {rule}"));
            }
        }
    }
    violations
}

/// Members missing from [`LAYERS`].
fn unplaced_members(metadata: &Value) -> Vec<String> {
    member_names(metadata)
        .into_iter()
        .filter(|name| placement(name).is_none())
        .map(|name| {
            format!(
                "workspace member `{name}` is in no layer: add it to LAYERS in tests/scenarios/layering.rs \
                 (and to SPEC.md §1) with what it may depend on"
            )
        })
        .collect()
}

/// Non-optional runtime, Redis or SQLite dependencies of `queue-core`.
fn queue_core_runtime_deps(metadata: &Value) -> Vec<String> {
    let Some(queue_core) = packages(metadata).iter().find(|p| str_field(p, "name") == "queue-core") else {
        return vec!["workspace member `queue-core` not found in cargo metadata".to_owned()];
    };
    queue_core["dependencies"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|dep| dep_kind(dep) != "dev" && dep["optional"] != Value::Bool(true))
        .map(|dep| str_field(dep, "name"))
        .filter(|name| RUNTIME_CRATES.contains(name))
        .map(|name| {
            format!(
                "`queue-core` has a non-optional dependency on `{name}`: queue-core may pull in no runtime, \
                 Redis or SQLite (make it optional behind a feature such as `test-util`)"
            )
        })
        .collect()
}

/// `cargo metadata` of this workspace, without resolving third-party crates.
fn workspace_metadata() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|err| panic!("could not run {} metadata: {err}", cargo.to_string_lossy()));
    assert!(
        output.status.success(),
        "cargo metadata failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn assert_none(violations: &[String]) {
    assert!(violations.is_empty(), "layering broken:\n  {}", violations.join("\n  "));
}

#[test]
fn no_crate_depends_on_a_layer_above_it() {
    assert_none(&layering_violations(&workspace_metadata()));
}

#[test]
fn every_member_is_placed_in_a_layer() {
    assert_none(&unplaced_members(&workspace_metadata()));
}

#[test]
fn queue_core_pulls_in_no_runtime() {
    assert_none(&queue_core_runtime_deps(&workspace_metadata()));
}

/// A synthetic `cargo metadata` package; each dependency is `(name, kind, optional)`.
fn package(name: &str, deps: &[(&str, Option<&str>, bool)]) -> Value {
    let deps: Vec<Value> = deps
        .iter()
        .map(|(dep, kind, optional)| serde_json::json!({ "name": dep, "kind": kind, "optional": optional }))
        .collect();
    serde_json::json!({ "name": name, "dependencies": deps })
}

#[test]
fn the_checks_report_a_synthetic_workspace_that_breaks_every_rule() {
    let metadata = serde_json::json!({ "packages": [
        package("queue-core", &[("lane-store", None, false), ("tokio", None, false), ("serde", None, false)]),
        package("lane-store", &[("queue-core", None, false), ("queue-redis", Some("dev"), false)]),
        package(
            "queue-inline",
            &[("queue-core", None, false), ("lane-store", None, false), ("redis-harness", Some("dev"), false)],
        ),
        package(
            "queue-redis",
            &[("queue-core", None, false), ("laneway-tests", Some("dev"), false), ("redis-harness", None, true)],
        ),
        package("app", &[("app-core", None, false), ("queue-core", Some("dev"), false)]),
        package("app-core", &[("redis-harness", Some("build"), false)]),
        package("xtask", &[("redis-harness", Some("dev"), false)]),
        package("redis-harness", &[("queue-core", Some("dev"), false)]),
        package("laneway-tests", &[]),
        package("queue-sqlite", &[("queue-core", None, false)]),
    ]});

    let violations = layering_violations(&metadata);
    let expected = [
        "`queue-core` has a normal dependency on `lane-store`: `queue-core` (layer 0) may depend on: none of ours; `lane-store` is in layer 1, above it",
        "`lane-store` has a dev dependency on `queue-redis`: `lane-store` (layer 1) may depend on: queue-core; `queue-redis` is in layer 2, above it",
        "`queue-inline` has a normal dependency on `lane-store`: `queue-inline` (layer 1) may depend on: queue-core; `lane-store` is not in that list (dev-dependencies may reach sideways or down, normal ones not)",
        "`queue-inline` has a dev dependency on `redis-harness`: `redis-harness` is dev-only test support, a dev-dependency of: lane-store, queue-redis, runtime-manager, app-core, app, laneway-tests only; not of `queue-inline`",
        "`queue-redis` has a dev dependency on `laneway-tests`: `queue-redis` (layer 2) may depend on: queue-core, lane-store; `laneway-tests` is dev-only tooling",
        "`queue-redis` has a normal dependency on `redis-harness`: `redis-harness` is dev-only test support, a dev-dependency of: lane-store, queue-redis, runtime-manager, app-core, app, laneway-tests only; never a normal dependency",
        "`app` has a dev dependency on `queue-core`: `app` (layer 5) may depend on: app-core; `queue-core` is not in that list (and `app` may not reach sideways in tests)",
        "`app-core` has a build dependency on `redis-harness`: `redis-harness` is dev-only test support, a dev-dependency of: lane-store, queue-redis, runtime-manager, app-core, app, laneway-tests only; never a build dependency",
        "`xtask` has a dev dependency on `redis-harness`: `redis-harness` is dev-only test support, a dev-dependency of: lane-store, queue-redis, runtime-manager, app-core, app, laneway-tests only; not of `xtask`",
        "`redis-harness` has a dev dependency on `queue-core`: `redis-harness` (layer 0) may depend on: none of ours; `queue-core` is not in that list (and `redis-harness` may not reach sideways in tests)",
    ];
    assert_eq!(violations, expected);

    assert_eq!(unplaced_members(&metadata).len(), 1);
    assert!(unplaced_members(&metadata)[0].contains("`queue-sqlite` is in no layer"));

    let runtime = queue_core_runtime_deps(&metadata);
    assert_eq!(runtime.len(), 1);
    assert!(runtime[0].contains("non-optional dependency on `tokio`"), "{runtime:?}");
}

#[test]
fn the_checks_accept_sideways_dev_dependencies_dev_only_support_and_optional_runtimes() {
    let metadata = serde_json::json!({ "packages": [
        package("queue-core", &[("tokio", None, true), ("tokio", Some("dev"), false), ("mockall", None, true)]),
        package("lane-store", &[("queue-core", None, false), ("redis-harness", Some("dev"), false)]),
        package("queue-inline", &[("queue-core", None, false), ("lane-store", Some("dev"), false)]),
        package("queue-redis", &[("lane-store", None, false), ("redis-harness", Some("dev"), false)]),
        package(
            "app-core",
            &[("runtime-manager", None, false), ("queue-core", Some("dev"), false), ("redis-harness", Some("dev"), false)],
        ),
        package("runtime-manager", &[("queue-inline", None, false), ("redis-harness", Some("dev"), false)]),
        package("app", &[("app-core", None, false), ("app-core", Some("dev"), false), ("redis-harness", Some("dev"), false)]),
        package("xtask", &[("app", None, false)]),
        package("laneway-tests", &[("app", None, false), ("redis-harness", Some("dev"), false)]),
        package("laneway-bench", &[("queue-redis", None, false), ("redis-harness", None, false)]),
        package("redis-harness", &[("tempfile", None, false)]),
    ]});

    assert_none(&layering_violations(&metadata));
    assert_none(&unplaced_members(&metadata));
    assert_none(&queue_core_runtime_deps(&metadata));
}
