//! A private PostgreSQL cluster for tests: `initdb` in a temporary directory, started with
//! `pg_ctl` on a free port, stopped and deleted on drop. With `TASKBOX_TEST_PG_URL` set, that
//! server is used instead. As root, the cluster runs as the `postgres` user (PostgreSQL
//! refuses to run as root).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::free_port;

/// A PostgreSQL server for one test binary.
pub struct Postgres {
    url: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<String>,
}

impl Postgres {
    /// Starts a private cluster (or connects to `TASKBOX_TEST_PG_URL`).
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("TASKBOX_TEST_PG_URL") {
            return Self { url, cluster: None };
        }
        let bin = find_bin().expect(
            "no initdb in PATH or /usr/lib/postgresql/*/bin: install postgresql, or set TASKBOX_TEST_PG_URL",
        );
        let user = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("taskbox-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if let Some(user) = &user {
            run(
                Command::new("chown").args(["-R", user]).arg(dir.path()),
                "chown",
            );
        }
        let port = free_port();
        let cluster = Cluster { dir, bin, user };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "taskbox",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            path(cluster.dir.path())
        );
        let log = cluster.dir.path().join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        Self {
            url: format!("postgres://taskbox@127.0.0.1:{port}/postgres"),
            cluster: Some(cluster),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Cluster {
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(args).current_dir(self.dir.path());
        run(&mut command, &program.display().to_string());
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            let data = cluster.dir.path().join("data");
            let mut command = match &cluster.user {
                Some(user) => {
                    let mut command = Command::new("runuser");
                    command
                        .args(["-u", user, "--"])
                        .arg(cluster.bin.join("pg_ctl"));
                    command
                }
                None => Command::new(cluster.bin.join("pg_ctl")),
            };
            let _ = command
                .args(["-D", path(&data), "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("running {what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// The directory with `initdb` and `pg_ctl`: the PATH's, or Debian's newest version.
fn find_bin() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    debian.sort();
    debian.reverse();
    debian
        .into_iter()
        .chain(in_path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
