//! Taking jobs: new entries read with their start in one script call, entries a blocking read
//! took beyond the free slots, and entries taken over from lost workers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands as _, AsyncConnectionConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{RETRY_FIRST, RETRY_MOST, Worker};
use crate::queue::{GROUP, Priority};

/// The most entries one call takes.
pub(super) const MAX_BATCH: usize = 256;

/// What `start_batch.lua` returns for a job that may run: attempt, max attempts, task,
/// module digest, input, timeout in ms, enqueue time, backoff as JSON, fuel, memory in
/// bytes (timeout, fuel and memory '' for the default), and tenant, module name, version and
/// chain depth ('' for 0).
pub(super) type Started = (
    u32,
    u32,
    String,
    String,
    Vec<u8>,
    String,
    u64,
    String,
    String,
    String,
    (String, String, String, String),
);

/// A stream entry: which queue and stream it came from and the job it names.
pub(super) struct Delivery {
    pub(super) queue: String,
    pub(super) priority: Priority,
    pub(super) entry: String,
    pub(super) job: String,
}

impl Worker {
    /// A connection of its own for blocking reads, which would hold up the shared one.
    pub(super) async fn fetch_connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let config =
            AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        Ok(self
            .queue
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Takes jobs and starts them, as many at a time as there are free slots, until `stop`
    /// turns true. A round under way when it does is finished, never cut short.
    pub(super) async fn fetch(
        self: Arc<Self>,
        slots: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut conn = None;
        // Entries a blocking read took beyond the free slots: held, and started first.
        let mut backlog = VecDeque::new();
        let mut retry_in = RETRY_FIRST;
        let takeover_every = self.config.visibility_timeout / 3;
        let mut next_takeover = tokio::time::Instant::now();
        let mut redis_full = self.redis_full.subscribe();
        loop {
            let permits = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                permits = free_slots(&slots) => permits,
            };
            // A job taken while Redis refuses outcomes would only add one more to keep.
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                _ = redis_full.wait_for(|full| !*full) => {}
            }
            let take_over = tokio::time::Instant::now() >= next_takeover;
            if take_over {
                next_takeover = tokio::time::Instant::now() + takeover_every;
            }
            let round = self
                .fetch_round(permits, &mut backlog, &mut conn, take_over)
                .await;
            let Err(err) = round else {
                retry_in = RETRY_FIRST;
                continue;
            };
            tracing::warn!("taking jobs failed ({err:#}); trying again in {retry_in:?}");
            if lost_group(&err) {
                // Redis lost its data (or a stream was deleted): make the groups again.
                for queue in &self.config.queues {
                    if let Err(err) = self.create_groups(queue).await {
                        tracing::warn!("{err:#}");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(RETRY_MOST);
        }
        // Not started: another worker takes them over once they are idle.
        backlog.iter().for_each(|delivery| self.unhold(delivery));
    }

    /// One round of taking jobs for the slots of `permits`: first entries read before and
    /// waiting for a slot, then, when `take_over`, entries of workers that stopped
    /// heartbeating, then new entries, read and started in one script call per queue. When
    /// there are none, blocks (a second at most) until new entries arrive and starts them.
    pub(super) async fn fetch_round(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
        backlog: &mut VecDeque<Delivery>,
        conn: &mut Option<MultiplexedConnection>,
        take_over: bool,
    ) -> anyhow::Result<()> {
        let mut started = 0;
        if !backlog.is_empty() {
            let waited = backlog.drain(..permits.len().min(backlog.len())).collect();
            started += self.start_taken(waited, &mut permits).await?;
        }
        if take_over {
            started += self.take_over(&mut permits).await?;
        }
        for queue in &self.config.queues {
            if permits.is_empty() {
                return Ok(());
            }
            let taken = self.start_batch(queue, permits.len(), &[]).await?;
            started += self.launch(taken, &mut permits);
        }
        if started > 0 || permits.is_empty() {
            return Ok(());
        }
        let connection = match conn {
            Some(connection) => connection,
            None => conn.insert(self.fetch_connection().await?),
        };
        let mut read = match self.read(connection, permits.len()).await {
            Ok(read) => read,
            Err(err) => {
                *conn = None;
                return Err(err);
            }
        };
        // Each stream may give as many entries as there are slots: the rest wait, held.
        let waiting = read.split_off(permits.len().min(read.len()));
        waiting.iter().for_each(|delivery| self.hold(delivery));
        backlog.extend(waiting);
        self.start_taken(read, &mut permits).await?;
        Ok(())
    }

    /// One blocking read (a second at most) of up to `count` new entries per stream, over
    /// every stream of every queue served, most urgent first.
    pub(super) async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let streams: Vec<(String, &String, Priority)> = self
            .config
            .queues
            .iter()
            .flat_map(|queue| {
                let keys = self.queue.keys(queue);
                Priority::ALL.map(|priority| (keys.stream(priority), queue, priority))
            })
            .collect();
        let names: Vec<&str> = streams.iter().map(|(name, ..)| name.as_str()).collect();
        let options = StreamReadOptions::default()
            .group(GROUP, &self.config.id)
            .count(count)
            .block(1000);
        let reply: Option<StreamReadReply> = conn
            .xread_options(&names, &vec![">"; names.len()], &options)
            .await?;
        let mut deliveries = Vec::new();
        for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
            let Some((_, queue, priority)) = streams.iter().find(|(name, ..)| *name == stream.key)
            else {
                continue;
            };
            for entry in stream.ids {
                deliveries.push(Delivery {
                    queue: (*queue).clone(),
                    priority: *priority,
                    job: entry.get::<String>("id").unwrap_or_default(),
                    entry: entry.id,
                });
            }
        }
        deliveries.sort_by_key(|delivery| delivery.priority.rank());
        Ok(deliveries)
    }

    /// Starts entries this worker already took (by a blocking read or a takeover), no more
    /// than `permits`, with one script call per queue, and runs those that may run; returns
    /// how many. On a Redis error the entries are let go: they stay pending and are taken
    /// over once idle.
    pub(super) async fn start_taken(
        self: &Arc<Self>,
        taken: Vec<Delivery>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> anyhow::Result<usize> {
        let mut by_queue: HashMap<String, Vec<Delivery>> = HashMap::new();
        for delivery in taken {
            by_queue
                .entry(delivery.queue.clone())
                .or_default()
                .push(delivery);
        }
        let mut started = 0;
        let mut failed = None;
        for (queue, deliveries) in by_queue {
            match self.start_batch(&queue, 0, &deliveries).await {
                Ok(taken) => started += self.launch(taken, permits),
                Err(err) => {
                    deliveries.iter().for_each(|delivery| self.unhold(delivery));
                    failed = Some(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err.context("starting jobs failed, they will run again")),
            None => Ok(started),
        }
    }

    /// Starts jobs with one script call: `read` new entries read by the script itself, then
    /// the `given` ones. Returns each entry with what its job needs to run, or `None` when it
    /// must not run (the script has dealt with it).
    pub(super) async fn start_batch(
        &self,
        queue: &str,
        read: usize,
        given: &[Delivery],
    ) -> anyhow::Result<Vec<(Delivery, Option<Started>)>> {
        let keys = self.queue.keys(queue);
        let [high, normal, low] = keys.streams();
        let mut invocation = self.queue.scripts_start_batch().key(keys.dead());
        invocation
            .key(high)
            .key(normal)
            .key(low)
            .arg(&self.config.id)
            .arg(GROUP)
            .arg(self.queue.retention().as_secs())
            .arg(keys.job_prefix())
            .arg(keys.done_channel())
            .arg(read);
        for delivery in given {
            invocation
                .arg(&delivery.entry)
                .arg(&delivery.job)
                .arg(1 + delivery.priority.rank());
        }
        let replies: Vec<(String, usize, String, redis::Value)> = invocation
            .invoke_async(&mut self.queue.connection())
            .await?;
        replies
            .into_iter()
            .map(|(entry, stream, job, start)| {
                let delivery = Delivery {
                    queue: queue.to_owned(),
                    priority: Priority::ALL[stream.clamp(1, 3) - 1],
                    entry,
                    job,
                };
                let started = match start {
                    redis::Value::Int(0) => None,
                    start => Some(redis::from_redis_value(start)?),
                };
                Ok((delivery, started))
            })
            .collect()
    }
}

/// The free slots, no more than [`MAX_BATCH`]; waits until there is one at least.
pub(super) async fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    let first = Arc::clone(slots).acquire_owned().await;
    let mut permits = vec![first.expect("the slots are never closed")];
    while permits.len() < MAX_BATCH {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// Whether Redis refused a read because a consumer group is gone: it lost its data, or a
/// stream was deleted. Reads fail so until the groups are made again.
pub(super) fn lost_group(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|err| err.code() == Some("NOGROUP"))
    })
}
