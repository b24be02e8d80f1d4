//! taskbox on a Redis Cluster of three primaries with a replica each, when a primary dies
//! while jobs flow.

use std::time::Duration;

use serde_json::json;
use taskbox_core::model::job::JobStatus;
use taskbox_core::queue::{EnqueueOptions, NewJob};
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::{Worker, WorkerConfig};

use crate::support::cluster::RedisCluster;
use crate::support::{host, wait};

const TENANT: &str = "default";

/// How many jobs the enqueuer sends in all, and how many it sends before the kill.
const JOBS: usize = 200;
const BEFORE_KILL: usize = 60;

/// The size of the batches enqueued without `durable` meanwhile.
const PLAIN_BATCH: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_durably_enqueued_job_is_lost_when_its_primary_dies() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("starting a Redis Cluster with replicas");
    let queue = taskbox_core::connect(&cluster.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
    host::publish(&registry, TENANT, "hello").await;
    let mut config = WorkerConfig::new("failover-worker");
    config.concurrency = 4;
    let worker = Worker::new(queue.clone(), host::runtime(), config);
    tokio::spawn(worker.run(std::future::pending()));

    let (kill, killed) = tokio::sync::oneshot::channel();
    let enqueuer = tokio::spawn({
        let queue = queue.clone();
        async move {
            let mut kill = Some(kill);
            let (mut acknowledged, mut after_kill, mut unconfirmed, mut refused) =
                (Vec::new(), 0, 0, 0);
            for index in 0..JOBS {
                if index == BEFORE_KILL
                    && let Some(kill) = kill.take()
                {
                    let _ = kill.send(());
                }
                let job = NewJob {
                    module: "hello".into(),
                    task: "greet".into(),
                    input: serde_json::to_vec(&json!({"name": index.to_string()})).unwrap(),
                    options: EnqueueOptions {
                        durable: true,
                        ..EnqueueOptions::default()
                    },
                };
                match queue.enqueue(TENANT, job).await {
                    Ok(enqueued) if enqueued.replicated == Some(true) => {
                        acknowledged.push(enqueued.id);
                        after_kill += usize::from(index >= BEFORE_KILL);
                    }
                    Ok(_) => unconfirmed += 1,
                    Err(_) => refused += 1,
                }
            }
            (acknowledged, after_kill, unconfirmed, refused)
        }
    });

    // Beside it, batches of jobs without `durable`: what asynchronous replication loses
    // of them is counted, not asserted (see docs/operations.md).
    let (stop_plain, mut plain_stopped) = tokio::sync::oneshot::channel::<()>();
    let plain = tokio::spawn({
        let queue = queue.clone();
        async move {
            let mut acknowledged = Vec::new();
            while plain_stopped.try_recv().is_err() {
                let batch = (0..PLAIN_BATCH)
                    .map(|index| NewJob {
                        module: "hello".into(),
                        task: "greet".into(),
                        input: serde_json::to_vec(&json!({"name": index.to_string()})).unwrap(),
                        options: EnqueueOptions::default(),
                    })
                    .collect();
                if let Ok(enqueued) = queue.enqueue_batch(TENANT, batch).await {
                    acknowledged.extend(enqueued.into_iter().map(|job| job.id));
                }
            }
            acknowledged
        }
    });

    killed.await.unwrap();
    // Until the killed node is back as a replica, the new primary has none, and durable
    // enqueues answer unconfirmed.
    tokio::task::block_in_place(|| {
        let killed = cluster.kill_primary_of("tb:{default}:s:normal");
        cluster.restart(killed)
    })
    .unwrap();
    let (acknowledged, after_kill, unconfirmed, refused) = enqueuer.await.unwrap();
    let _ = stop_plain.send(());
    let plain = plain.await.unwrap();
    let mut lost = 0;
    for id in &plain {
        lost += usize::from(matches!(queue.job(id).await, Ok(None)));
    }
    eprintln!(
        "without durable: {lost} of {} acknowledged jobs lost in the failover",
        plain.len()
    );
    eprintln!(
        "{} jobs acknowledged by a replica ({after_kill} after the kill), {unconfirmed} \
         enqueued without a replica's acknowledgement, {refused} refused",
        acknowledged.len()
    );
    assert!(
        after_kill > 0,
        "no job was acknowledged after the kill: the client did not find the new primary"
    );

    // Every acknowledged job ends completed: the worker found the new primary too.
    wait::until(
        "every acknowledged job completed",
        Duration::from_secs(120),
        || {
            let (queue, ids) = (queue.clone(), acknowledged.clone());
            async move {
                for id in &ids {
                    match queue.job(id).await {
                        Ok(Some(job)) if job.status == JobStatus::Completed => {}
                        Ok(Some(job)) => {
                            assert!(!job.status.is_finished(), "job {id} ended {:?}", job.status);
                            return None;
                        }
                        Ok(None) => panic!("job {id} was acknowledged and is gone"),
                        Err(_) => return None,
                    }
                }
                Some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_serve_every_slot_is_named_and_waited_for() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("starting a Redis Cluster");
    // `redis-cli --cluster create` gives the first node the first slots: without slot 0 it
    // says the cluster fails.
    assert!(cluster.cli(0, &["CLUSTER", "DELSLOTS", "0"]).contains("OK"));
    let refused = taskbox_core::connect(&cluster.url(), Duration::ZERO)
        .await
        .expect_err("a failing cluster was accepted");
    let message = format!("{refused:#}");
    assert!(
        message.contains("cluster_state:fail") && message.contains("127.0.0.1:"),
        "{message}"
    );

    // A process that starts meanwhile waits, and goes on once the slot is served again.
    let url = cluster.url();
    let waiting =
        tokio::spawn(async move { taskbox_core::connect(&url, Duration::from_secs(60)).await });
    assert!(cluster.cli(0, &["CLUSTER", "ADDSLOTS", "0"]).contains("OK"));
    let queue = waiting
        .await
        .unwrap()
        .expect("connecting once the cluster is whole");
    assert!(queue.store().server_usage().await.is_ok());
}
