//! One connection type for one Redis server and for a Redis Cluster, so that no area of
//! taskbox knows which it talks to. Commands go through [`redis::aio::ConnectionLike`] either
//! way; what differs (how to connect, how to subscribe, how a script publishes) is decided
//! here and in [`super::Store`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where the data is: a URL of one server, or `redis+cluster://` and the cluster's nodes.
#[derive(Clone)]
pub(crate) enum Server {
    Single(redis::Client),
    Cluster(Cluster),
}

/// A Redis Cluster: the nodes to learn its topology from.
#[derive(Clone)]
pub(crate) struct Cluster {
    nodes: Vec<String>,
}

/// The scheme that names a cluster, and its TLS form.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

impl Server {
    /// `url` read as one server (`redis://`, `rediss://`, `unix://`) or as a cluster
    /// (`redis+cluster://host:port[,host:port...][/?params]`): each node becomes a URL of the
    /// plain scheme with the same credentials and parameters.
    pub(crate) fn parse(url: &str) -> redis::RedisResult<Self> {
        let Some((rest, scheme)) = CLUSTER_SCHEMES
            .iter()
            .find_map(|(cluster, plain)| Some((url.strip_prefix(cluster)?, *plain)))
        else {
            return Ok(Self::Single(redis::Client::open(url)?));
        };
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{scheme}{credentials}{host}{tail}"))
            .collect();
        let cluster = Cluster { nodes };
        // Checks the nodes' URLs now, so that a bad one is refused before any connection.
        cluster.builder().build()?;
        Ok(Self::Cluster(cluster))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection of its own, made now, whose replies may take up to `response_timeout`.
    /// On one server it reconnects by itself after Redis restarts; on a cluster it follows
    /// MOVED and ASK, refreshes the topology and reconnects to the nodes that replaced a
    /// failed one.
    pub(crate) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        match self {
            Self::Single(client) => {
                let config = manager_config(response_timeout);
                let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Connection(Inner::Single(conn)))
            }
            Self::Cluster(cluster) => {
                let conn = cluster.connect_lazy(response_timeout)?;
                conn.get().await?;
                Ok(Connection(Inner::Cluster(conn)))
            }
        }
    }

    /// The same as [`Self::connect`], but made at its first command.
    pub(crate) fn connect_lazy(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        match self {
            Self::Single(client) => {
                let config = manager_config(response_timeout);
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok(Connection(Inner::Single(conn)))
            }
            Self::Cluster(cluster) => Ok(Connection(Inner::Cluster(
                cluster.connect_lazy(response_timeout)?,
            ))),
        }
    }

    /// A subscription of its own to `channels`: the payloads published on them, until the
    /// connection ends. On a cluster the channels are sharded (`SSUBSCRIBE`), each served by
    /// the node of its slot; the cluster connection subscribes again by itself after a
    /// failover.
    pub(crate) async fn subscribe(
        &self,
        channels: &[String],
    ) -> redis::RedisResult<futures_util::stream::BoxStream<'static, Vec<u8>>> {
        match self {
            Self::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                for channel in channels {
                    pubsub.subscribe(channel).await?;
                }
                Ok(pubsub
                    .into_on_message()
                    .map(|message| message.get_payload_bytes().to_vec())
                    .boxed())
            }
            Self::Cluster(cluster) => {
                let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster
                    .builder()
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?;
                let mut conn = client.get_async_connection().await?;
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                // The connection lives as long as the stream: dropping it unsubscribes.
                Ok(futures_util::stream::unfold(
                    (conn, receiver),
                    |(conn, mut receiver)| async move {
                        loop {
                            let push = receiver.recv().await?;
                            if push.kind != redis::PushKind::SMessage {
                                continue;
                            }
                            if let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1) {
                                return Some((payload, (conn, receiver)));
                            }
                        }
                    },
                )
                .boxed())
            }
        }
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new().set_response_timeout(Some(response_timeout))
}

impl Cluster {
    fn connect_lazy(&self, response_timeout: Duration) -> redis::RedisResult<Arc<LazyCluster>> {
        Ok(Arc::new(LazyCluster {
            client: self.builder().response_timeout(response_timeout).build()?,
            conn: OnceCell::new(),
        }))
    }

    fn builder(&self) -> ClusterClientBuilder {
        // A failover takes a few seconds (the nodes' timeout, then an election): retries with
        // backoff span it, so callers see a slow reply, not an error.
        ClusterClientBuilder::new(self.nodes.clone())
            .retries(8)
            .connection_timeout(Duration::from_secs(2))
    }
}

/// A connection to one Redis or to a cluster; cheap to clone, clones share it.
#[derive(Clone)]
pub struct Connection(Inner);

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Inner::Single(_) => "one server",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_tuple("Connection").field(&kind).finish()
    }
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection made at its first command, shared by the clones of a [`Connection`].
struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let conn = self
            .conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await?;
        Ok(conn.clone())
    }
}

impl Connection {
    /// `cmd`'s reply from every primary (one server is its own primary), by address.
    pub(crate) async fn on_each_primary<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<Vec<(String, T)>> {
        match &mut self.0 {
            Inner::Single(conn) => Ok(vec![(String::new(), cmd.query_async(conn).await?)]),
            Inner::Cluster(lazy) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let replies = lazy
                    .get()
                    .await?
                    .route_command(cmd.clone(), routing)
                    .await?;
                Ok(redis::from_redis_value(replies)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        #[cfg(debug_assertions)]
        super::slots::assert_one_slot(std::iter::once(cmd));
        match &mut self.0 {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        #[cfg(debug_assertions)]
        super::slots::assert_one_slot(pipeline.cmd_iter());
        match &mut self.0 {
            Inner::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(conn) => conn.get_db(),
            Inner::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_node_with_the_plain_scheme() {
        let Server::Cluster(cluster) =
            Server::parse("redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7001/?protocol=2")
                .unwrap()
        else {
            panic!("not read as a cluster");
        };
        assert_eq!(
            cluster.nodes,
            [
                "redis://:secret@10.0.0.1:7000/?protocol=2",
                "redis://:secret@10.0.0.2:7001/?protocol=2"
            ]
        );
        assert!(
            !Server::parse("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
        assert!(Server::parse("redis+cluster://").is_err());
    }
}
