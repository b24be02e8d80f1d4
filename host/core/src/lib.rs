//! taskbox's core: everything around the sandbox that is not HTTP or a command line.
//!
//! The sandbox is the `taskbox-runtime` crate; this crate keeps modules and jobs in Redis
//! and runs them: the module registry, the job queue and its workers, the cron scheduler,
//! events, progress and API tokens. The `taskbox` crate puts the HTTP API and the CLI on top.

pub mod audit;
pub mod auth;
pub mod events;
pub mod grants;
pub mod job_writes;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod queue;
pub mod redis_server;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

/// Connects to Redis at `url` (retrying for up to `patience`) and returns the queue there,
/// which finds the modules jobs name in the registry kept in the same Redis.
pub async fn connect(url: &str, patience: Duration) -> anyhow::Result<queue::Queue> {
    let store = store::Store::connect(url, patience).await?;
    let modules = registry::Modules::new(store.clone());
    Ok(queue::Queue::new(store, Arc::new(modules)))
}

/// The crate's modules, each above all it may use: a module uses only modules listed
/// before it. The test below holds the code to this order.
#[cfg(test)]
const LAYERS: &[&str] = &[
    "model",
    "metrics",
    "store",
    "redis_server",
    "events",
    "queue",
    "registry",
    "auth",
    "audit",
    "scheduler",
    "job_writes",
    "progress",
    "grants",
    "worker",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::LAYERS;

    /// The top-level modules that `crate::` paths in the files under `path` name.
    fn used_by(path: &Path, found: &mut BTreeSet<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                used_by(&entry.unwrap().path(), found);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(path).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
    }

    #[test]
    fn modules_depend_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut listed = BTreeSet::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let name = name.trim_end_matches(".rs");
            if name != "lib" {
                listed.insert(name.to_owned());
            }
        }
        let layered: BTreeSet<String> = LAYERS.iter().map(|m| m.to_string()).collect();
        assert_eq!(listed, layered, "every module has its place in LAYERS");
        for (level, module) in LAYERS.iter().enumerate() {
            let path = match src.join(module).is_dir() {
                true => src.join(module),
                false => src.join(format!("{module}.rs")),
            };
            let mut used = BTreeSet::new();
            used_by(&path, &mut used);
            for name in used.iter().filter(|name| *name != module) {
                let below = LAYERS[..level].contains(&name.as_str());
                assert!(below, "`{module}` uses `{name}`, which is not below it");
            }
        }
    }
}
