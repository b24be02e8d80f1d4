//! Workers on separate hosts (network namespaces joined by a bridge) against a Redis Cluster
//! of three primaries with a replica each: a host cut off from Redis past the visibility
//! timeout loses its jobs to the others, and what it finishes meanwhile is refused when it
//! is back.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;
use taskbox_core::model::job::JobStatus;
use taskbox_core::queue::{EnqueueOptions, NewJob, Queue};
use taskbox_core::registry::{Registry, RegistryConfig};

use crate::support::cluster::RedisCluster;
use crate::support::netns::Network;
use crate::support::{host, wait};

const TENANT: &str = "default";

/// A `taskbox serve --roles worker` process on one host, killed on drop.
struct HostWorker(Child);

impl Drop for HostWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The worker of process `pid`, as it last reported itself.
async fn report(queue: &Queue, pid: u32) -> Option<taskbox_core::queue::WorkerInfo> {
    let workers = queue.workers().await.ok()?;
    workers.into_iter().find(|worker| worker.pid == pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_redis_loses_its_jobs_to_the_others_and_its_late_outcomes_are_refused()
{
    if !Network::available() {
        eprintln!("skipped: making network namespaces needs root (CI runs as root)");
        return;
    }
    let network = Network::create(2).expect("making two hosts");
    let address = network.address();
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start_on(3, 1, &address))
        .await
        .unwrap()
        .expect("starting a Redis Cluster on the bridge's address");
    let queue = taskbox_core::connect(&cluster.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
    host::publish(&registry, TENANT, "fixtures").await;

    let workers: Vec<HostWorker> = (0..2)
        .map(|on| {
            let child = network
                .command(on, env!("CARGO_BIN_EXE_taskbox"))
                .args(["serve", "--redis", &cluster.url(), "--roles", "worker"])
                .args(["--visibility-timeout", "3s", "--concurrency", "4"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting a worker on a host");
            HostWorker(child)
        })
        .collect();
    let cut = workers[0].0.id();
    wait::until("both workers report", Duration::from_secs(30), || {
        let queue = queue.clone();
        async move { (queue.workers().await.ok()?.len() == 2).then_some(()) }
    })
    .await;

    let mut ids = Vec::new();
    for _ in 0..8 {
        let job = NewJob {
            module: "fixtures".into(),
            task: "sleep".into(),
            input: json!({"ms": 2000}).to_string().into_bytes(),
            options: EnqueueOptions::default(),
        };
        ids.push(queue.enqueue(TENANT, job).await.unwrap().id);
    }
    let on_cut_host = |job: &taskbox_core::model::job::JobRecord| {
        job.worker
            .as_deref()
            .is_some_and(|worker| worker.contains(&format!("-{cut}-")))
    };
    // Cut the first host off while it runs some of them.
    let taken = wait::until("the first host runs jobs", Duration::from_secs(30), || {
        let (queue, ids) = (queue.clone(), ids.clone());
        async move {
            let mut running = Vec::new();
            for id in &ids {
                let job = queue.job(id).await.ok()??;
                if job.status == JobStatus::Running && on_cut_host(&job) {
                    running.push(id.clone());
                }
            }
            (!running.is_empty()).then_some(running)
        }
    })
    .await;
    network.connect(0, false).unwrap();

    // The other host takes them over once they are idle past the visibility timeout.
    for id in &ids {
        let job = queue
            .wait(id, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        if taken.contains(id) {
            assert!(!on_cut_host(&job), "{job:?}");
            assert!(job.attempt >= 2, "{job:?}");
        }
    }

    // Back on the network, the first host stores what it finished meanwhile: refused, and
    // counted in its report.
    network.connect(0, true).unwrap();
    let refused = wait::until(
        "the first host's late outcomes refused",
        Duration::from_secs(60),
        || {
            let queue = queue.clone();
            async move {
                let worker = report(&queue, cut).await?;
                (worker.stale_outcomes > 0).then_some(worker.stale_outcomes)
            }
        },
    )
    .await;
    assert!(
        refused as usize <= taken.len(),
        "{refused} refused of {taken:?}"
    );
    // Every job ended once: still completed, by the attempt that took it over.
    for id in &ids {
        let job = queue.job(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        if taken.contains(id) {
            assert!(!on_cut_host(&job), "{job:?}");
        }
    }
    drop(workers);
}
