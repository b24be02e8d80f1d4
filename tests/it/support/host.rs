//! The host most areas test against, in this process: one sandbox runtime, the guests as
//! published modules, and the API with a worker on a loopback port.

use std::sync::{Arc, LazyLock};

use taskbox::api::{ApiConfig, router, serve_router};
use taskbox_core::model::manifest::Manifest;
use taskbox_core::queue::Queue;
use taskbox_core::registry::Registry;
use taskbox_core::worker::{Worker, WorkerConfig};
use taskbox_runtime::{Runtime, RuntimeConfig};

use super::guests;

/// The sandbox runtime of every in-process registry and worker: one engine and one pool for
/// the whole test binary, as in a `taskbox` process.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: LazyLock<Arc<Runtime>> =
        LazyLock::new(|| Arc::new(Runtime::new(&RuntimeConfig::default()).unwrap()));
    Arc::clone(&RUNTIME)
}

/// The manifest of guest `name` (`guests/NAME/taskbox.toml`), as text.
pub fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(manifest_path(name)).unwrap()
}

fn manifest_path(name: &str) -> String {
    format!(
        "{}/../../guests/{name}/taskbox.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Publishes guest `name` (`hello`, `fixtures-http`, ...) for `tenant` with its own manifest.
pub async fn publish(registry: &Registry, tenant: &str, name: &str) {
    let bytes = std::fs::read(guests::wasm(&name.replace('-', "_"))).unwrap();
    let manifest = Manifest::parse(&manifest_path(name), &manifest_text(name)).unwrap();
    registry.publish(tenant, manifest, bytes).await.unwrap();
}

/// The API and a worker, served until this drops.
pub struct Serving {
    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves the API of `queue` and `registry` on a free loopback port, and runs a worker with
/// `worker`, both in this process.
pub async fn serve(
    queue: &Queue,
    registry: Registry,
    api: ApiConfig,
    worker: WorkerConfig,
) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(queue.clone(), registry, api);
    let worker = Worker::new(queue.clone(), runtime(), worker);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = serve_router(listener, app, std::future::pending()) => {}
            _ = worker.run(std::future::pending()) => {}
            _ = stopped => {}
        }
    });
    Serving { url, _stop: stop }
}
