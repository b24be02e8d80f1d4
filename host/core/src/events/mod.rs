//! Events: what tasks (and the host, for progress) broadcast to whoever listens.
//!
//! An event goes to Redis PUBLISH for live delivery and to a capped stream per channel for
//! replay, in one script call, under one id: the stream entry's. Channels belong to a
//! tenant: the same channel name in two tenants is two channels. Listeners subscribe first
//! and then replay what they missed (`after` an id), so nothing falls between the two.
//!
//! The listeners of one channel in one process share one Redis subscription
//! ([`Subscriptions`]): a thousand browsers watching a job's progress are one subscriber to
//! Redis, not a thousand connections.

mod jobs;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _, stream};
use redis::Script;
use taskbox_runtime::events::{invalid_channel, invalid_event};
use tokio::sync::OnceCell;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::AbortHandle;

use crate::store::Store;
use crate::store::TimedInvoke as _;
use crate::store::keys;

pub(crate) use jobs::shown;
pub use jobs::{ERROR_SHOWN, JOBS_CHANNEL, JobEvent, JobEventKind};

/// How many events each channel keeps for replay (about: Redis trims in whole nodes).
pub const REPLAY_LENGTH: usize = 1000;
/// How long a channel nobody publishes on keeps its events.
pub const REPLAY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How many events a channel's listeners in one process may be behind the newest. A listener
/// further behind is dropped (its SSE client reconnects with `Last-Event-ID` and replays what
/// it missed) rather than making the others wait or the process buffer without end.
pub const FAN_OUT_BUFFER: usize = 256;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Its id in the channel's replay stream; ids grow.
    pub id: String,
    /// Its name.
    pub event: String,
    /// Its data (JSON by convention).
    pub data: String,
}

/// Publishes and reads the events of one Redis.
#[derive(Debug, Clone)]
pub struct Events {
    store: Store,
    publish: Script,
}

impl Events {
    /// Events kept in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            publish: store.publishing_script(include_str!("lua/publish.lua")),
            store,
        }
    }

    /// The key of a channel's replay stream, which is also its pub/sub channel.
    fn key(&self, tenant: &str, channel: &str) -> String {
        keys::events(self.store.prefix(), tenant, channel)
    }

    /// Publishes `data` as `event` on `channel` of `tenant`; returns the event's id.
    pub async fn publish(
        &self,
        tenant: &str,
        channel: &str,
        event: &str,
        data: &str,
    ) -> anyhow::Result<String> {
        if let Some(reason) = invalid_channel(channel).or_else(|| invalid_event(event)) {
            anyhow::bail!("{reason}");
        }
        let id = self
            .publish
            .key(self.key(tenant, channel))
            .arg(REPLAY_LENGTH)
            .arg(REPLAY_RETENTION.as_secs())
            .arg(event)
            .arg(data)
            .invoke_timed("publish", &mut self.store.connection())
            .await?;
        Ok(id)
    }

    /// The events of `channel` after the one with id `after`, oldest first.
    pub async fn replay(
        &self,
        tenant: &str,
        channel: &str,
        after: &str,
    ) -> anyhow::Result<Vec<Event>> {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key(tenant, channel))
            .arg(format!("({after}"))
            .arg("+")
            .query_async(&mut self.store.connection())
            .await?;
        Ok(entries
            .ids
            .into_iter()
            .map(|entry| Event {
                event: entry.get("event").unwrap_or_default(),
                data: entry.get("data").unwrap_or_default(),
                id: entry.id,
            })
            .collect())
    }
}

/// Live events, with one Redis subscription per channel however many listen to it in this
/// process. A channel's subscription is made for its first listener and closed with its last.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    events: Events,
    channels: Arc<Mutex<Channels>>,
}

/// The channels listened to, by key; an entry outlives its channel only until the channel's
/// drop removes it.
type Channels = HashMap<String, Weak<Channel>>;

/// One channel's fan-out: its subscription's events go to every listener's receiver.
struct Channel {
    key: String,
    channels: Weak<Mutex<Channels>>,
    /// Taken when the subscription ends, which closes every listener's receiver.
    sender: Mutex<Option<broadcast::Sender<Arc<Event>>>>,
    /// The task reading the subscription, once it is made.
    subscription: OnceCell<AbortHandle>,
}

/// A live stream of events.
pub type Live = Pin<Box<dyn Stream<Item = Event> + Send>>;

impl Subscriptions {
    /// Live events on the Redis of `events`.
    pub fn new(events: Events) -> Self {
        Self {
            events,
            channels: Arc::default(),
        }
    }

    /// The live events of `channel` from now on: once this returns, Redis sends this process
    /// every event published on it. The stream ends when the subscription breaks, or when
    /// this listener falls [`FAN_OUT_BUFFER`] events behind.
    pub async fn subscribe(&self, tenant: &str, channel: &str) -> anyhow::Result<Live> {
        let key = self.events.key(tenant, channel);
        // A channel found with its subscription just ended is forgotten, and a new one made.
        for _ in 0..2 {
            let shared = self.channel(&key);
            let receiver = shared
                .sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(broadcast::Sender::subscribe);
            let Some(receiver) = receiver else {
                self.forget(&shared);
                continue;
            };
            // The receiver exists before the subscription, so the first listener misses
            // nothing that Redis sends.
            shared
                .subscription
                .get_or_try_init(|| self.open(&shared))
                .await?;
            return Ok(listen(shared, receiver));
        }
        anyhow::bail!("the subscription to the channel ended as it was made")
    }

    /// The channel of `key`, made if nobody listens to it.
    fn channel(&self, key: &str) -> Arc<Channel> {
        let mut channels = self.channels();
        if let Some(channel) = channels.get(key).and_then(Weak::upgrade) {
            return channel;
        }
        let channel = Arc::new(Channel {
            key: key.to_owned(),
            channels: Arc::downgrade(&self.channels),
            sender: Mutex::new(Some(broadcast::channel(FAN_OUT_BUFFER).0)),
            subscription: OnceCell::new(),
        });
        channels.insert(key.to_owned(), Arc::downgrade(&channel));
        channel
    }

    fn forget(&self, channel: &Arc<Channel>) {
        let mut channels = self.channels();
        if channels
            .get(&channel.key)
            .is_some_and(|entry| entry.as_ptr() == Arc::as_ptr(channel))
        {
            channels.remove(&channel.key);
        }
    }

    /// Subscribes to the channel on a connection of its own, and starts the task that hands
    /// what arrives to its listeners.
    async fn open(&self, channel: &Arc<Channel>) -> anyhow::Result<AbortHandle> {
        let mut messages = self
            .events
            .store
            .subscribe(std::slice::from_ref(&channel.key))
            .await?;
        let weak = Arc::downgrade(channel);
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some(event) = parse_message(&message) else {
                    continue;
                };
                let Some(channel) = weak.upgrade() else {
                    return;
                };
                if let Some(sender) = channel.sender().as_ref() {
                    // Fails only when no listener is left, and then the channel is going.
                    let _ = sender.send(Arc::new(event));
                }
            }
            tracing::warn!(
                "a subscription to an event channel ended; its listeners are disconnected"
            );
            if let Some(channel) = weak.upgrade() {
                channel.sender().take();
            }
        });
        Ok(task.abort_handle())
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Channel {
    fn sender(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Arc<Event>>>> {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Channel {
    /// The last listener is gone: unsubscribe (by closing the connection) and forget the
    /// channel, unless a new one of the same key has taken its place.
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.get() {
            subscription.abort();
        }
        if let Some(channels) = self.channels.upgrade() {
            let mut channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
            if channels
                .get(&self.key)
                .is_some_and(|entry| entry.strong_count() == 0)
            {
                channels.remove(&self.key);
            }
        }
    }
}

/// The events of `receiver`, until it is closed or its listener lags.
fn listen(channel: Arc<Channel>, receiver: broadcast::Receiver<Arc<Event>>) -> Live {
    Box::pin(stream::unfold(
        (channel, receiver),
        |(channel, mut receiver)| async move {
            match receiver.recv().await {
                Ok(event) => Some((Event::clone(&event), (channel, receiver))),
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(
                        "an event listener fell {missed} events behind, so it is disconnected \
                         (an SSE client resumes with Last-Event-ID)"
                    );
                    None
                }
                Err(RecvError::Closed) => None,
            }
        },
    ))
}

/// A published message: id, event name and data, separated by the first two newlines
/// (neither ids nor event names have newlines).
fn parse_message(payload: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(payload);
    let mut parts = text.splitn(3, '\n');
    Some(Event {
        id: parts.next()?.to_owned(),
        event: parts.next()?.to_owned(),
        data: parts.next()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_at_its_first_two_newlines_only() {
        let event = parse_message(b"1-0\nprogress\n{\"a\":\n1}").unwrap();
        assert_eq!(
            (event.id.as_str(), event.event.as_str(), event.data.as_str()),
            ("1-0", "progress", "{\"a\":\n1}")
        );
        assert_eq!(parse_message(b"1-0 only"), None);
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_dropped_and_the_others_get_every_event() {
        let (sender, slow) = broadcast::channel(FAN_OUT_BUFFER);
        let channel = Arc::new(Channel {
            key: keys::events("tb:", "default", "room"),
            channels: Weak::new(),
            sender: Mutex::new(Some(sender.clone())),
            subscription: OnceCell::new(),
        });
        let mut fast = listen(Arc::clone(&channel), sender.subscribe());
        let mut slow = listen(channel, slow);
        let event = |n: usize| Event {
            id: format!("{n}-0"),
            event: "tick".into(),
            data: n.to_string(),
        };
        for n in 0..=FAN_OUT_BUFFER {
            sender.send(Arc::new(event(n))).unwrap();
            assert_eq!(fast.next().await, Some(event(n)));
        }
        assert_eq!(slow.next().await, None, "the slow listener is dropped");
        sender.send(Arc::new(event(FAN_OUT_BUFFER + 1))).unwrap();
        assert_eq!(fast.next().await, Some(event(FAN_OUT_BUFFER + 1)));
    }
}
