//! The module cache: each module is compiled once however many of its jobs start at once.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use taskbox_runtime::{JobError, ModuleDigest, TaskModule};
use tokio::sync::OnceCell;

use super::Worker;
use crate::metrics::metrics;

impl Worker {
    /// The module with this digest: from the runtime's cache, else loaded once however many
    /// jobs ask for it at the same time.
    pub(super) async fn module(&self, digest: &str) -> Result<Arc<TaskModule>, JobError> {
        if let Ok(parsed) = digest.parse::<ModuleDigest>()
            && let Some(module) = self.runtime.cached(parsed)
        {
            metrics().module_lookup(true);
            return Ok(module);
        }
        metrics().module_lookup(false);
        let cell = Arc::clone(self.loading().entry(digest.to_owned()).or_default());
        let loaded = cell
            .get_or_try_init(|| async {
                let bytes = crate::registry::module_bytes(self.queue.store(), digest)
                    .await
                    .map_err(|err| JobError::Internal {
                        message: format!("{err:#}"),
                    })?;
                let runtime = Arc::clone(&self.runtime);
                tokio::task::spawn_blocking(move || runtime.load(&bytes))
                    .await
                    .map_err(|err| JobError::Internal {
                        message: format!("compiling the module panicked: {err}"),
                    })?
            })
            .await
            .cloned();
        let mut loading = self.loading();
        if loading
            .get(digest)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            loading.remove(digest);
        }
        loaded
    }

    pub(super) fn loading(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Arc<TaskModule>>>>> {
        self.loading.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
