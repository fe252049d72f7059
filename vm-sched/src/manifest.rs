//! The manifest of `vm up`: a JSON file describing the containers of one VM.
//!
//! ```json
//! {"containers": [
//!   {"name": "front", "module": "front.vasm", "args": ["7000"],
//!    "allow_net": ["127.0.0.1:7000"], "allow_lookup": ["store"], "restart": "permanent"},
//!   {"name": "store", "module": "store.vasm", "restart": "transient",
//!    "limits": {"max_actors": 100, "max_mailbox": 10000}, "env": {"MODE": "fast"}}
//! ]}
//! ```
//!
//! The rules [`parse`] checks (docs/containers.md is the reference for users):
//! 1. The text is JSON with exactly the fields above and `allow_read`, `allow_write`,
//!    `allow_env`, `max_restarts`, `restart_period_ms`, `priority`, `limits.max_heap`; an unknown field, a wrong
//!    type or a syntax error is reported at its line and column.
//! 2. Each `allow_*` is `true` (everything, as the bare flag) or a non-empty list of entries in
//!    the flag's syntax (`HOST[:PORT]`, paths, variable names); absent means denied. A bad entry
//!    is reported with its path in the manifest (`containers[1].allow_net[0]`).
//! 3. Names are unique, non-empty, without `/`, and not `main` (the default container's);
//!    `allow_lookup` names containers of the same manifest (or `"*"`, every container).
//! 4. `module` is relative to the manifest's directory. `restart` is `permanent`, `transient`
//!    or `temporary` (the default); `priority` is `high`, `normal` (the default) or `low`.
//!
//! Grants are never stored anywhere else: a container has exactly the grants its entry lists.

use crate::container::{ContainerSpec, Intensity, Limits, Restart};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use vm_io::{Grants, Permissions};

/// One container as the manifest describes it: its module is the file to load, resolved
/// against the manifest's directory (`source` says the same, for people).
pub type Entry = ContainerSpec<PathBuf>;

/// A manifest error: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// Line and column (from 1) for syntax and type errors.
    pub at: Option<(usize, usize)>,
    /// The entry's path in the manifest (`containers[0].allow_net[1]`) for the others.
    pub path: Option<String>,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.at, &self.path) {
            (Some((l, c)), _) => write!(f, "{l}:{c}: {}", self.msg),
            (None, Some(p)) => write!(f, "{p}: {}", self.msg),
            (None, None) => f.write_str(&self.msg),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    containers: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    module: String,
    #[serde(default)]
    args: Vec<String>,
    allow_net: Option<RawGrant>,
    allow_read: Option<RawGrant>,
    allow_write: Option<RawGrant>,
    allow_env: Option<RawGrant>,
    #[serde(default)]
    allow_lookup: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    restart: Option<String>,
    max_restarts: Option<u32>,
    restart_period_ms: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    priority: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawGrant {
    All(bool),
    Only(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_actors: Option<usize>,
    max_mailbox: Option<usize>,
    max_heap: Option<u64>,
}

fn at_path(path: String, msg: impl Into<String>) -> ManifestError {
    ManifestError { at: None, path: Some(path), msg: msg.into() }
}

/// A grant as the flag parser sees it: `None` denied, `Some(None)` everything, `Some(Some(list))`.
fn grant<T>(
    raw: &Option<RawGrant>,
    path: impl Fn() -> String,
    parse: impl Fn(Option<&str>) -> Result<vm_io::perms::Grant<T>, String>,
) -> Result<vm_io::perms::Grant<T>, ManifestError> {
    match raw {
        None | Some(RawGrant::All(false)) => Ok(vm_io::perms::Grant::Denied),
        Some(RawGrant::All(true)) => parse(None).map_err(|e| at_path(path(), e)),
        Some(RawGrant::Only(items)) => {
            if items.is_empty() {
                return Err(at_path(path(), "an empty list grants nothing: leave the field out"));
            }
            if let Some(i) = items.iter().position(|x| x.is_empty() || x.contains(',')) {
                return Err(at_path(format!("{}[{i}]", path()), format!("bad entry {:?}", items[i])));
            }
            parse(Some(&items.join(","))).map_err(|e| at_path(path(), e))
        }
    }
}

/// Parses and checks a manifest (see the module docs); `dir` is the manifest's directory.
pub fn parse(text: &str, dir: &Path) -> Result<Vec<Entry>, ManifestError> {
    let raw: RawManifest = serde_json::from_str(text).map_err(|e| ManifestError {
        at: Some((e.line(), e.column())),
        path: None,
        msg: e.to_string(),
    })?;
    let mut out: Vec<Entry> = Vec::with_capacity(raw.containers.len());
    for (i, r) in raw.containers.into_iter().enumerate() {
        let here = |field: &str| format!("containers[{i}].{field}");
        if r.name.is_empty() || r.name.contains('/') || r.name == "main" {
            return Err(at_path(
                here("name"),
                format!("{:?} cannot name a container (non-empty, no '/', not \"main\")", r.name),
            ));
        }
        if out.iter().any(|e| e.name == r.name) {
            return Err(at_path(here("name"), format!("a second container named {:?}", r.name)));
        }
        if r.module.is_empty() {
            return Err(at_path(here("module"), "the module file is missing"));
        }
        let perms = Permissions {
            net: grant(&r.allow_net, || here("allow_net"), Permissions::parse_net)?,
            read: grant(
                &r.allow_read,
                || here("allow_read"),
                |v| Permissions::parse_paths(v, "--allow-read"),
            )?,
            write: grant(
                &r.allow_write,
                || here("allow_write"),
                |v| Permissions::parse_paths(v, "--allow-write"),
            )?,
            env: grant(&r.allow_env, || here("allow_env"), Permissions::parse_env)?,
        };
        let restart = match r.restart.as_deref() {
            None => Restart::Temporary,
            Some(s) => Restart::parse(s).ok_or_else(|| {
                at_path(
                    here("restart"),
                    format!("{s:?} is not a restart type (permanent, transient, temporary)"),
                )
            })?,
        };
        let priority = match r.priority.as_deref() {
            None => vm_core::Priority::Normal,
            Some(p) => vm_core::Priority::parse(p).ok_or_else(|| {
                at_path(here("priority"), format!("{p:?} is not a priority (high, normal, low)"))
            })?,
        };
        if r.limits.max_actors == Some(0) {
            return Err(at_path(
                here("limits.max_actors"),
                "a container needs at least one actor (its root)",
            ));
        }
        if r.limits.max_heap == Some(0) {
            return Err(at_path(here("limits.max_heap"), "an actor needs some memory: at least 1 byte"));
        }
        let defaults = Intensity::default();
        let module = dir.join(&r.module);
        out.push(Entry {
            name: r.name,
            source: module.display().to_string(),
            module,
            args: r.args,
            grants: Grants { perms, env: r.env.into_iter().collect() },
            allow_lookup: r.allow_lookup,
            limits: Limits {
                max_actors: r.limits.max_actors,
                max_mailbox: r.limits.max_mailbox,
                max_heap: r.limits.max_heap,
            },
            restart,
            intensity: Intensity {
                max_restarts: r.max_restarts.unwrap_or(defaults.max_restarts),
                period_ms: r.restart_period_ms.unwrap_or(defaults.period_ms),
            },
            priority,
        });
    }
    if out.is_empty() {
        return Err(at_path("containers".into(), "the manifest lists no container"));
    }
    for (i, e) in out.iter().enumerate() {
        for (j, l) in e.allow_lookup.iter().enumerate() {
            if l != "*" && !out.iter().any(|o| o.name == *l) {
                return Err(at_path(
                    format!("containers[{i}].allow_lookup[{j}]"),
                    format!("no container named {l:?} in this manifest"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("/m")).unwrap_err().to_string()
    }

    #[test]
    fn a_manifest_parses_with_its_defaults() {
        let text = r#"{"containers": [
            {"name": "front", "module": "front.vasm", "args": ["7000"], "allow_net": ["127.0.0.1:7000"],
             "allow_lookup": ["store"], "restart": "permanent"},
            {"name": "store", "module": "/abs/store.vasm", "env": {"A": "1"}, "limits": {"max_actors": 5}}
        ]}"#;
        let m = parse(text, Path::new("/m")).unwrap();
        assert_eq!(m[0].module, PathBuf::from("/m/front.vasm"));
        assert_eq!(m[1].module, PathBuf::from("/abs/store.vasm"));
        assert_eq!(m[0].source, "/m/front.vasm", "what `containers` shows");
        assert_eq!(m[0].restart, Restart::Permanent);
        assert_eq!(m[1].restart, Restart::Temporary);
        assert!(m[0].grants.perms.check_net("127.0.0.1:7000").is_ok());
        assert!(m[0].grants.perms.check_net("127.0.0.1:7001").is_err());
        assert_eq!(m[1].grants.perms, Permissions::default());
        assert_eq!(m[1].grants.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(m[1].limits.max_actors, Some(5));
        assert_eq!(m[1].intensity, Intensity::default());
        assert_eq!(m[1].priority, vm_core::Priority::Normal);
    }

    /// The fuzz target's seeds (`fuzz/seeds/manifest`) hold to its contract here too, so a
    /// regression a fuzzer found and a seed now keeps shows up in an ordinary test run.
    #[test]
    fn the_fuzz_seeds_load_or_fail_with_a_location() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/manifest");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed directory") {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            match parse(&text, Path::new("/m")) {
                Ok(entries) => assert!(!entries.is_empty(), "{path:?}"),
                Err(e) => assert!(e.at.is_some() || e.path.is_some(), "{path:?}: {e}"),
            }
            seen += 1;
        }
        assert!(seen >= 4, "only {seen} seeds in {dir:?}");
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            err("{\"containers\": [\n  {\"name\": \"a\", \"modul\": 1}]}").split(':').next(),
            Some("2")
        );
        assert!(err("{\"containers\": [{\"name\": \"a\"}]}").starts_with("1:"), "missing module");
        assert!(err("{\"containers\": [").starts_with("1:"));
        assert_eq!(
            err(r#"{"containers": [{"name": "a", "module": "a", "allow_net": ["x y"]}]}"#).split(':').next(),
            Some("containers[0].allow_net")
        );
        assert!(
            err(r#"{"containers": [{"name": "a", "module": "a", "allow_read": []}]}"#).contains("empty list")
        );
        assert!(err(r#"{"containers": [{"name": "a/b", "module": "a"}]}"#).starts_with("containers[0].name"));
        let dup = r#"{"containers": [{"name": "a", "module": "a"}, {"name": "a", "module": "b"}]}"#;
        assert!(err(dup).starts_with("containers[1].name"));
        let lookup = r#"{"containers": [{"name": "a", "module": "a", "allow_lookup": ["b"]}]}"#;
        assert!(err(lookup).starts_with("containers[0].allow_lookup[0]"));
        let restart = r#"{"containers": [{"name": "a", "module": "a", "restart": "always"}]}"#;
        assert!(err(restart).contains("not a restart type"));
        assert!(err(r#"{"containers": []}"#).contains("no container"));
    }
}
