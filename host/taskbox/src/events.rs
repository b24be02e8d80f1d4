//! Events: what tasks (and the host, for progress) broadcast to whoever listens.
//!
//! An event goes to Redis PUBLISH for live delivery and to a capped stream per channel for
//! replay, in one script call, under one id: the stream entry's. Channels belong to a
//! tenant: the same channel name in two tenants is two channels. Listeners subscribe first
//! and then replay what they missed (`after` an id), so nothing falls between the two.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use redis::Script;
use taskbox_runtime::events::{invalid_channel, invalid_event};

use crate::queue::Queue;

/// How many events each channel keeps for replay (about: Redis trims in whole nodes).
pub const REPLAY_LENGTH: usize = 1000;
/// How long a channel nobody publishes on keeps its events.
pub const REPLAY_RETENTION: Duration = Duration::from_secs(24 * 3600);

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
    queue: Queue,
    publish: Script,
}

impl Events {
    /// Events on the Redis of `queue`.
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            publish: Script::new(PUBLISH),
        }
    }

    /// The key of a channel's replay stream, which is also its pub/sub channel.
    fn key(&self, tenant: &str, channel: &str) -> String {
        format!("{}events:{tenant}:{channel}", self.queue.prefix())
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
            .invoke_async(&mut self.queue.connection())
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
            .query_async(&mut self.queue.connection())
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

    /// Live events of `channel` from now on, on a connection of their own.
    pub async fn subscribe(
        &self,
        tenant: &str,
        channel: &str,
    ) -> anyhow::Result<Pin<Box<dyn Stream<Item = Event> + Send>>> {
        let mut pubsub = self.queue.client().get_async_pubsub().await?;
        pubsub.subscribe(self.key(tenant, channel)).await?;
        Ok(Box::pin(pubsub.into_on_message().filter_map(
            |message| async move { parse_message(message.get_payload_bytes()) },
        )))
    }
}

/// Adds the event to the replay stream (capped, expiring) and publishes it with its id.
/// KEYS[1] the channel's stream and pub/sub channel; ARGV[1] the stream's length; ARGV[2] its
/// lifetime in seconds; ARGV[3] the event name; ARGV[4] its data. Returns the id.
const PUBLISH: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[3], 'data', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[1], id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return id
";

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
}
