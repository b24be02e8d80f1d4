//! Separate hosts on one machine: network namespaces (`ip netns`), each joined by a veth
//! pair to a bridge on this host, whose address the hosts reach this host's servers at.
//! A host can be cut off from the network and joined again. Needs root; removed on drop.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The bridge and the hosts on it.
#[derive(Debug)]
pub struct Network {
    /// Distinguishes this network's names and addresses from another test's.
    tag: String,
    subnet: String,
    hosts: usize,
}

impl Network {
    /// Whether this process may make namespaces (it runs as root).
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Makes the bridge and `hosts` namespaces attached to it.
    pub fn create(hosts: usize) -> anyhow::Result<Self> {
        let tag = format!("{:04x}", rand::random::<u16>());
        let subnet = format!(
            "10.{}.{}",
            100 + rand::random_range(0..100),
            rand::random::<u8>()
        );
        let mut network = Self {
            tag,
            subnet,
            hosts: 0,
        };
        let bridge = network.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.address()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in 0..hosts {
            let (namespace, outside, inside) = network.names(host);
            ip(&["netns", "add", &namespace])?;
            network.hosts = host + 1;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &namespace])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let address = format!("{}.{}/24", network.subnet, 10 + host);
            ip(&["-n", &namespace, "addr", "add", &address, "dev", &inside])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// This host's address on the bridge.
    pub fn address(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// `program` to run on `host`.
    pub fn command(&self, host: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.names(host).0, program]);
        command
    }

    /// Cuts `host` off the network (`connected` false) or joins it again.
    pub fn connect(&self, host: usize, connected: bool) -> anyhow::Result<()> {
        let state = if connected { "up" } else { "down" };
        ip(&["link", "set", &self.names(host).1, state])
    }

    fn bridge(&self) -> String {
        format!("tbbr{}", self.tag)
    }

    /// The namespace of `host`, its veth end on the bridge and its end inside.
    fn names(&self, host: usize) -> (String, String, String) {
        (
            format!("tb{}-{host}", self.tag),
            format!("tbo{}{host}", self.tag),
            format!("tbi{}{host}", self.tag),
        )
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in 0..self.hosts {
            // Deleting the namespace deletes its veth pair too.
            let _ = ip(&["netns", "del", &self.names(host).0]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
