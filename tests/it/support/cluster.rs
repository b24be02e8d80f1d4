//! A real local Redis Cluster for a test: `redis-server` processes with `--cluster-enabled
//! yes` on free loopback ports, joined by `redis-cli --cluster create`, all killed on drop.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use taskbox_core::redis_server::{RedisOptions, RedisServer};

use super::wait;

/// A running cluster: `primaries` primaries with `replicas` replicas each.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The address the nodes know each other by, and clients reach them at.
    address: String,
}

impl RedisCluster {
    /// Starts the nodes, makes them one cluster and waits until every node reports
    /// `cluster_state:ok` and every primary has its replicas attached.
    pub fn start(primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        Self::start_on(primaries, replicas, "127.0.0.1")
    }

    /// [`RedisCluster::start`], the nodes knowing each other (and announcing themselves to
    /// clients) by `address`, which they listen on besides 127.0.0.1.
    pub fn start_on(primaries: usize, replicas: usize, address: &str) -> anyhow::Result<Self> {
        let also_bind = (address != "127.0.0.1").then(|| address.to_owned());
        let nodes = (0..primaries * (1 + replicas))
            .map(|_| {
                RedisServer::start(RedisOptions {
                    cluster_node: true,
                    also_bind: also_bind.clone(),
                    ..RedisOptions::default()
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cluster = Self {
            nodes,
            address: address.to_owned(),
        };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.addresses())
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            );
        }
        wait::until_blocking("the cluster is ready", Duration::from_secs(30), || {
            let ready = cluster.nodes.iter().all(|node| {
                let info = cli(node.port(), &["CLUSTER", "INFO"]);
                let replication = cli(node.port(), &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (replication.contains("role:slave")
                        && replication.contains("master_link_status:up")
                        || replication.contains(&format!("connected_slaves:{replicas}")))
            });
            ready.then_some(())
        });
        Ok(cluster)
    }

    /// `redis+cluster://` and every node.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.addresses().join(","))
    }

    /// Kills (SIGKILL, as a crash would) the primary that holds `key`'s slot, and waits
    /// until its replica has taken over; returns the killed node's index.
    pub fn kill_primary_of(&mut self, key: &str) -> usize {
        let index = self
            .nodes
            .iter()
            .position(|node| {
                let port = node.port();
                cli(port, &["INFO", "replication"]).contains("role:master")
                    && !cli(port, &["EXISTS", key]).contains("MOVED")
            })
            .expect("a primary holds the key's slot");
        let port = self.nodes[index].port();
        let replica = self
            .nodes
            .iter()
            .map(RedisServer::port)
            .find(|replica| {
                cli(*replica, &["INFO", "replication"]).contains(&format!("master_port:{port}"))
            })
            .expect("the primary has a replica");
        self.nodes[index].kill();
        wait::until_blocking("the replica took over", Duration::from_secs(60), || {
            cli(replica, &["INFO", "replication"])
                .contains("role:master")
                .then_some(())
        });
        index
    }

    /// Starts node `index` again on its port and data: it rejoins the cluster as a replica
    /// of the node that took its place. Waits until it has caught up.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].restart()?;
        let port = self.nodes[index].port();
        wait::until_blocking(
            "the restarted node is a replica",
            Duration::from_secs(60),
            || {
                let replication = cli(port, &["INFO", "replication"]);
                (replication.contains("role:slave")
                    && replication.contains("master_link_status:up"))
                .then_some(())
            },
        );
        Ok(())
    }

    /// What `redis-cli` prints for `args` sent to node `index`.
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        cli(self.nodes[index].port(), args)
    }

    fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("{}:{}", self.address, node.port()))
            .collect()
    }
}

/// What `redis-cli -p port args...` prints, empty when it fails.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}
