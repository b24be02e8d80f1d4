//! A private `redis-server` child process on a free loopback port, for `taskbox dev` and the
//! tests. It is killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How a private Redis keeps its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Keep an append-only file, so that a restart loses nothing.
    pub appendonly: bool,
    /// The data directory; a fresh temporary one when none.
    pub dir: Option<PathBuf>,
    /// The port; a free one when none.
    pub port: Option<u16>,
    /// The most bytes Redis may use; past them it refuses writes (`noeviction`). None for no
    /// cap.
    pub maxmemory: Option<u64>,
    /// An address to listen on besides 127.0.0.1 (a cluster node announces it to the
    /// others when the cluster is made with it).
    pub also_bind: Option<String>,
    /// Start as a node of a Redis Cluster (`--cluster-enabled yes`), its cluster bus on a
    /// free port of its own; `redis-cli --cluster create` makes the nodes one cluster.
    pub cluster_node: bool,
}

/// A running private Redis.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    options: RedisOptions,
    _temp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers.
    pub fn start(options: RedisOptions) -> anyhow::Result<Self> {
        let (dir, temp) = match &options.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("taskbox-redis-")
                    .tempdir()?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let child = spawn(port, &dir, &options)?;
        let mut server = Self {
            child,
            port,
            dir,
            options: RedisOptions {
                port: Some(port),
                ..options
            },
            _temp: temp,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.dir, &self.options)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "redis-server exited at start ({status}); its log is in {}",
                    self.dir.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server did not answer on port {} within 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16, dir: &Path, options: &RedisOptions) -> anyhow::Result<Child> {
    let mut command = Command::new("redis-server");
    if let Some(bytes) = options.maxmemory {
        command
            .args(["--maxmemory", &bytes.to_string()])
            .args(["--maxmemory-policy", "noeviction"]);
    }
    if options.cluster_node {
        command
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-port", &free_port()?.to_string()]);
    }
    command
        .args(["--port", &port.to_string(), "--save", ""])
        .arg("--bind")
        .arg("127.0.0.1")
        .args(options.also_bind.as_deref());
    if options.also_bind.is_some() {
        // The extra address is a private test network's; without a password, protected
        // mode would refuse every client on it.
        command.args(["--protected-mode", "no"]);
    }
    command
        .args([
            "--appendonly",
            if options.appendonly { "yes" } else { "no" },
        ])
        .args(["--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", "redis.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(
            "could not start redis-server: install it (Debian/Ubuntu: `apt-get install \
             redis-server`, macOS: `brew install redis`) or point --redis / TASKBOX_REDIS_URL at a Redis",
        )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
