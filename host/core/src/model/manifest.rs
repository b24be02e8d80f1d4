//! The module manifest, `taskbox.toml`: what a module is called, its tasks and their retry
//! settings, the limits it runs under, and the capabilities it asks for.
//!
//! ```toml
//! name = "thumbnails"
//! version = "1.2.0"
//! [tasks.resize]
//! timeout = "30s"
//! max_retries = 5
//! backoff = { base = "2s", max = "5m", jitter = true }
//! [limits]
//! fuel = 5_000_000_000
//! memory = "128MiB"
//! [capabilities]
//! allowed_outbound_hosts = ["https://api.example.com"]
//! ```
//!
//! Unknown fields are errors, and every error names the file, the line and the field. What a
//! manifest asks for is only a request: [`Policy`] is the operator's cap on it, checked when
//! the module is uploaded.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize};

use taskbox_runtime::{Abi, Limits};

use crate::model::capabilities::RequestedCapabilities;
use crate::model::job::{Backoff, Priority};
use crate::model::names::is_plain_name;

/// The manifest's usual file name.
pub const MANIFEST_FILE: &str = "taskbox.toml";

/// A parsed, well-formed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The module's name: 1 to 64 letters, digits, `-`, `_` or `.`.
    #[serde(deserialize_with = "module_name")]
    pub name: String,
    /// Its version (semver). `name@version` is immutable once uploaded.
    #[serde(deserialize_with = "semver_version")]
    pub version: semver::Version,
    /// What the module does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The component file, relative to the manifest (default: the only `.wasm` beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// How the host calls it: `task` (the taskbox:task world, the default) or `command` (a
    /// WASI program: input on stdin, output from stdout, the task name as its argument).
    #[serde(default, skip_serializing_if = "is_task_abi")]
    pub abi: Abi,
    /// The tasks the module exports, by name. Jobs may only name these.
    pub tasks: BTreeMap<String, TaskSettings>,
    /// Limits of every job of the module.
    #[serde(default)]
    pub limits: ManifestLimits,
    /// The capabilities the module asks for; none by default.
    #[serde(default)]
    pub capabilities: RequestedCapabilities,
    /// Cron schedules that enqueue jobs of the module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ManifestSchedule>,
}

/// How one task's jobs run unless the enqueue says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Wall-clock limit of each attempt.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// The delay between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSettings>,
    /// The queue the task's jobs go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The task's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// Retry backoff as written in a manifest: `jitter` is `true` (25%), `false`, or a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffSettings {
    /// The delay before the first retry.
    #[serde(with = "duration")]
    pub base: Duration,
    /// The longest delay.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Random extra delay.
    #[serde(default = "default_jitter")]
    pub jitter: Jitter,
}

/// `true`, `false` or a fraction from 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Jitter {
    /// On (25% of the delay) or off.
    Enabled(bool),
    /// This fraction of the delay at most.
    Fraction(f64),
}

fn default_jitter() -> Jitter {
    Jitter::Enabled(true)
}

fn is_task_abi(abi: &Abi) -> bool {
    *abi == Abi::Task
}

impl From<BackoffSettings> for Backoff {
    fn from(settings: BackoffSettings) -> Self {
        let jitter = match settings.jitter {
            Jitter::Enabled(true) => Backoff::default().jitter,
            Jitter::Enabled(false) => 0.0,
            Jitter::Fraction(fraction) => fraction.clamp(0.0, 1.0),
        };
        Backoff {
            base: settings.base,
            max: settings.max,
            jitter,
        }
    }
}

/// Limits of each job; the host's defaults where absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Fuel (roughly, WebAssembly instructions) per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory, all linear memories together (`"128MiB"`).
    #[serde(default, with = "opt_size", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// The wall-clock limit of tasks that name none.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The most heap the host may hold for one job (`"16MiB"`), at most the host's.
    #[serde(default, with = "opt_size", skip_serializing_if = "Option::is_none")]
    pub host_memory: Option<u64>,
    /// The most of a task error's message kept, at most the host's.
    #[serde(default, with = "opt_size", skip_serializing_if = "Option::is_none")]
    pub max_error_size: Option<u64>,
    /// The most of a progress message kept, at most the host's.
    #[serde(default, with = "opt_size", skip_serializing_if = "Option::is_none")]
    pub max_progress_message: Option<u64>,
}

impl ManifestLimits {
    /// `limits` with the caps this manifest asks to lower lowered; it can never raise one.
    pub fn narrow(&self, limits: Limits) -> Limits {
        let bytes = |asked: Option<u64>, host: usize| {
            asked.map_or(host, |asked| {
                host.min(usize::try_from(asked).unwrap_or(usize::MAX))
            })
        };
        Limits {
            host_memory: self
                .host_memory
                .map_or(limits.host_memory, |asked| asked.min(limits.host_memory)),
            error_bytes: bytes(self.max_error_size, limits.error_bytes),
            progress_bytes: bytes(self.max_progress_message, limits.progress_bytes),
            ..limits
        }
    }
}

/// A cron schedule of one of the module's tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSchedule {
    /// The schedule's name, unique in the module.
    pub name: String,
    /// A crontab expression (`0 3 * * *`).
    pub cron: String,
    /// The task to enqueue.
    pub task: String,
    /// The job input (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The time zone of `cron` (IANA name; UTC when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The queue (the task's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// What happens to fires missed while no scheduler ran (`latest` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<crate::model::cron::CatchUp>,
}

/// A manifest that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct ManifestError {
    /// The file it came from.
    pub file: String,
    /// The line, when the error has one.
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Manifest {
    /// Parses the text of `file`: every error names the file, the line and the field.
    pub fn parse(file: &str, text: &str) -> Result<Self, ManifestError> {
        let manifest: Self = toml::from_str(text).map_err(|err| {
            let (line, key) = match err.span() {
                Some(span) => locate(text, span.start),
                None => (None, None),
            };
            let message = err.message().trim_end().to_owned();
            let message = match key {
                Some(key) if !message.contains(&format!("`{key}`")) => {
                    format!("field `{key}`: {message}")
                }
                _ => message,
            };
            ManifestError {
                file: file.to_owned(),
                line,
                message,
            }
        })?;
        manifest.check().map_err(|(field, message)| ManifestError {
            file: file.to_owned(),
            line: line_of_field(text, &field),
            message: format!("field `{field}`: {message}"),
        })?;
        Ok(manifest)
    }

    /// Rules that span fields: tasks exist and are named well, schedules name tasks.
    fn check(&self) -> Result<(), (String, String)> {
        if self.tasks.is_empty() {
            return Err((
                "tasks".into(),
                "the module must declare at least one task ([tasks.NAME])".into(),
            ));
        }
        for (name, task) in &self.tasks {
            if !is_plain_name(name) {
                return Err((
                    format!("tasks.{name}"),
                    "task names are 1 to 64 letters, digits, `-`, `_` or `.`".into(),
                ));
            }
            if let Some(queue) = &task.queue
                && !is_plain_name(queue)
            {
                return Err((
                    format!("tasks.{name}.queue"),
                    format!("invalid queue name `{queue}`"),
                ));
            }
            if let Some(backoff) = &task.backoff {
                if backoff.base > backoff.max {
                    return Err((
                        format!("tasks.{name}.backoff"),
                        "`base` is longer than `max`".into(),
                    ));
                }
                if let Jitter::Fraction(fraction) = backoff.jitter
                    && !(0.0..=1.0).contains(&fraction)
                {
                    return Err((
                        format!("tasks.{name}.backoff.jitter"),
                        format!("{fraction} is not between 0.0 and 1.0"),
                    ));
                }
            }
        }
        self.capabilities.check()?;
        self.check_schedules()
    }

    /// Checks `[[schedules]]`: names, tasks, expressions, zones and queues.
    fn check_schedules(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (index, schedule) in self.schedules.iter().enumerate() {
            let field = |name: &str| format!("schedules[{index}].{name}");
            if !is_plain_name(&schedule.name) {
                return Err((
                    field("name"),
                    "use 1 to 64 letters, digits, `-`, `_` or `.`".into(),
                ));
            }
            if !names.insert(&schedule.name) {
                return Err((
                    field("name"),
                    format!("another schedule is named `{}`", schedule.name),
                ));
            }
            if !self.tasks.contains_key(&schedule.task) {
                return Err((
                    field("task"),
                    format!("there is no task `{}` in [tasks]", schedule.task),
                ));
            }
            crate::model::cron::CronExpr::parse(&schedule.cron)
                .map_err(|err| (field("cron"), format!("`{}`: {err}", schedule.cron)))?;
            if let Some(zone) = &schedule.timezone {
                crate::model::cron::parse_zone(zone)
                    .map_err(|err| (field("timezone"), err.to_string()))?;
            }
            if let Some(queue) = &schedule.queue
                && !is_plain_name(queue)
            {
                return Err((
                    field("queue"),
                    format!("`{queue}` is not a name: use letters, digits, `-`, `_` or `.`"),
                ));
            }
        }
        Ok(())
    }

    /// The task's settings, or an error listing the tasks there are.
    pub fn task(&self, task: &str) -> Result<&TaskSettings, UnknownTask> {
        self.tasks.get(task).ok_or_else(|| UnknownTask {
            module: format!("{}@{}", self.name, self.version),
            task: task.to_owned(),
            known: self.tasks.keys().cloned().collect(),
        })
    }
}

/// A task a module does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("module {module} has no task `{task}` (its tasks: {})", known.join(", "))]
pub struct UnknownTask {
    /// The module, `name@version`.
    pub module: String,
    /// The task asked for.
    pub task: String,
    /// The tasks it has.
    pub known: Vec<String>,
}

/// The operator's cap on what manifests may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The most fuel a module may ask for.
    pub max_fuel: u64,
    /// The most memory a module may ask for.
    #[serde(with = "size")]
    pub max_memory: u64,
    /// The longest timeout a task may ask for.
    #[serde(with = "duration")]
    pub max_timeout: Duration,
    /// The most retries a task may ask for.
    pub max_retries: u32,
    /// Hosts modules may ask to reach: `*` allows any; otherwise each of a module's entries
    /// must equal one of these or be a subdomain of a `*.` entry with the same scheme and port.
    pub allowed_outbound_hosts: Vec<String>,
    /// Whether modules may have a private SQLite database (`self`).
    pub sql_self: bool,
    /// The databases modules may ask for by name: those of the host config's `[sql]`.
    #[serde(skip)]
    pub sql_databases: Vec<String>,
    /// The host's caps on what a job hands it (the host config's `[limits]`), which a
    /// manifest may only lower.
    #[serde(skip)]
    pub job_caps: Limits,
}

impl Default for Policy {
    /// Up to 10× the default fuel, 1 GiB, 15 minutes, 25 retries, any public host, the
    /// private SQLite database, and no shared database.
    fn default() -> Self {
        Self {
            max_fuel: 500_000_000_000,
            max_memory: 1 << 30,
            max_timeout: Duration::from_secs(15 * 60),
            max_retries: 25,
            allowed_outbound_hosts: vec!["*".into()],
            sql_self: true,
            sql_databases: Vec::new(),
            job_caps: Limits::default(),
        }
    }
}

/// A manifest field asking for more than the policy allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` exceeds the host's policy: {message}")]
pub struct PolicyViolation {
    /// The manifest field (`limits.memory`, `tasks.resize.timeout`, ...).
    pub field: String,
    /// What the policy allows.
    pub message: String,
}

impl Policy {
    /// Checks every request of `manifest` against the policy.
    pub fn check(&self, manifest: &Manifest) -> Result<(), PolicyViolation> {
        let violation = |field: String, message: String| Err(PolicyViolation { field, message });
        let limits = &manifest.limits;
        if let Some(fuel) = limits.fuel
            && fuel > self.max_fuel
        {
            return violation(
                "limits.fuel".into(),
                format!("{fuel} asked, at most {} allowed", self.max_fuel),
            );
        }
        if let Some(memory) = limits.memory
            && memory > self.max_memory
        {
            return violation(
                "limits.memory".into(),
                format!(
                    "{} asked, at most {} allowed",
                    ByteSize(memory).display().iec(),
                    ByteSize(self.max_memory).display().iec()
                ),
            );
        }
        let caps = [
            (
                "limits.host_memory",
                limits.host_memory,
                self.job_caps.host_memory,
            ),
            (
                "limits.max_error_size",
                limits.max_error_size,
                self.job_caps.error_bytes as u64,
            ),
            (
                "limits.max_progress_message",
                limits.max_progress_message,
                self.job_caps.progress_bytes as u64,
            ),
        ];
        for (field, asked, host) in caps {
            if let Some(asked) = asked
                && asked > host
            {
                return violation(
                    field.into(),
                    format!(
                        "{} asked, at most {} allowed (the host's [limits])",
                        ByteSize(asked).display().iec(),
                        ByteSize(host).display().iec()
                    ),
                );
            }
        }
        let timeouts = std::iter::once(("limits.timeout".to_owned(), limits.timeout)).chain(
            manifest
                .tasks
                .iter()
                .map(|(name, task)| (format!("tasks.{name}.timeout"), task.timeout)),
        );
        for (field, timeout) in timeouts {
            if let Some(timeout) = timeout
                && timeout > self.max_timeout
            {
                return violation(
                    field,
                    format!(
                        "{} asked, at most {} allowed",
                        humantime::format_duration(timeout),
                        humantime::format_duration(self.max_timeout)
                    ),
                );
            }
        }
        for (name, task) in &manifest.tasks {
            if let Some(retries) = task.max_retries
                && retries > self.max_retries
            {
                return violation(
                    format!("tasks.{name}.max_retries"),
                    format!("{retries} asked, at most {} allowed", self.max_retries),
                );
            }
        }
        manifest
            .capabilities
            .check_policy(self)
            .map_err(|(field, message)| PolicyViolation { field, message })
    }
}

/// The 1-based line of byte `offset`, and the key written on that line, if any.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .filter(|key| !key.is_empty() && !key.starts_with('['));
    (Some(line), key)
}

/// The line where a dotted `field` is written, best effort: its last part as a key, or its
/// table header.
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let last = field.rsplit('.').next()?;
    let last = last.split('[').next()?;
    // `schedules[2].cron` is looked for after the third `[[schedules]]`.
    let mut from = 0;
    if let Some((table, rest)) = field.split_once('[')
        && let Some(Ok(index)) = rest
            .split_once(']')
            .map(|(index, _)| index.parse::<usize>())
    {
        from = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.trim_start().starts_with(&format!("[[{table}]]")))
            .nth(index)?
            .0;
    }
    text.lines()
        .skip(from)
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(&format!("{last} "))
                || line.starts_with(&format!("{last}="))
                || line.starts_with(&format!("[{field}]"))
                || line.starts_with(&format!("[[{last}]]"))
        })
        .map(|index| from + index + 1)
}

fn module_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if !is_plain_name(&name) {
        return Err(serde::de::Error::custom(format!(
            "invalid module name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(name)
}

fn semver_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<semver::Version, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a semantic version like 1.2.0 ({err})"
        ))
    })
}

/// Durations written for people: `"30s"`, `"5m"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|err| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"30s\" or \"5m\" ({err})"
            ))
        })
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Sizes written for people: `"128MiB"`, `"64 MB"`, or a number of bytes.
pub mod size {
    use bytesize::ByteSize;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ByteSize(*value).display().iec().to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(bytes) => Ok(bytes),
            Written::Text(text) => text.parse::<ByteSize>().map(|size| size.0).map_err(|err| {
                serde::de::Error::custom(format!("`{text}` is not a size like \"128MiB\" ({err})"))
            }),
        }
    }
}

mod opt_size {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::size::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::size::deserialize(d).map(Some)
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "thumbnails"
version = "1.2.0"
[tasks.resize]
timeout = "30s"
max_retries = 5
backoff = { base = "2s", max = "5m", jitter = true }
[tasks.cleanup]
[limits]
fuel = 5_000_000_000
memory = "128MiB"
[capabilities]
allowed_outbound_hosts = ["https://api.example.com", "https://*.cdn.example.com:443"]
sql = ["self"]
event_channels = ["upload:*"]
enqueue = ["thumbnails/*"]
[[schedules]]
name = "nightly"
cron = "0 3 * * *"
task = "cleanup"
"#;

    fn error(text: &str) -> ManifestError {
        Manifest::parse("taskbox.toml", text).unwrap_err()
    }

    #[test]
    fn the_design_example_parses_with_human_units() {
        let manifest = Manifest::parse("taskbox.toml", GOOD).unwrap();
        assert_eq!(manifest.to_string(), "thumbnails@1.2.0");
        let resize = manifest.task("resize").unwrap();
        assert_eq!(resize.timeout, Some(Duration::from_secs(30)));
        let backoff = Backoff::from(resize.backoff.unwrap());
        assert_eq!(backoff.max, Duration::from_secs(300));
        assert_eq!(backoff.jitter, Backoff::default().jitter);
        assert_eq!(manifest.limits.memory, Some(128 << 20));
        assert!(
            manifest
                .task("nope")
                .unwrap_err()
                .to_string()
                .contains("cleanup, resize")
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let err = error("name = \"a\"\nversion = \"1.0.0\"\n[tasks.x]\ntimout = \"3s\"\n");
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("unknown field `timout`"), "{err}");
        assert!(err.to_string().starts_with("taskbox.toml:4: "), "{err}");
    }

    #[test]
    fn bad_values_name_the_field_and_line() {
        let err = error("name = \"a\"\nversion = \"1.0\"\n[tasks.x]\n");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("field `version`"), "{err}");
        assert!(err.message.contains("semantic version"), "{err}");

        let err = error("name = \"a\"\nversion = \"1.0.0\"\n[tasks.x]\ntimeout = \"soon\"\n");
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("field `timeout`"), "{err}");

        let err = error("name = \"../x\"\nversion = \"1.0.0\"\n[tasks.x]\n");
        assert!(err.message.contains("invalid module name"), "{err}");

        let err =
            error("name = \"a\"\nversion = \"1.0.0\"\n[tasks.x]\n[limits]\nmemory = \"lots\"\n");
        assert_eq!(err.line, Some(5));
        assert!(err.message.contains("field `memory`"), "{err}");
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let err = error("name = \"a\"\nversion = \"1.0.0\"\n");
        assert!(err.message.contains("tasks"), "{err}");
        let err = error(
            "name = \"a\"\nversion = \"1.0.0\"\n[tasks.x]\n[[schedules]]\nname = \"n\"\ncron = \"* * * * *\"\ntask = \"y\"\n",
        );
        assert!(err.message.contains("schedules[0].task"), "{err}");
        assert_eq!(err.line, Some(7));

        let two = "name = \"a\"\nversion = \"1.0.0\"\n[tasks.x]\n\
                   [[schedules]]\nname = \"n\"\ncron = \"@daily\"\ntask = \"x\"\n\
                   [[schedules]]\nname = \"m\"\ntask = \"x\"\ncron = \"0 24 * * *\"\n";
        let err = error(two);
        assert_eq!(err.line, Some(11));
        assert!(
            err.message.contains(
                "field `schedules[1].cron`: `0 24 * * *`: column 3 (hour): 24 is out of range 0-23"
            ),
            "{err}"
        );
        let err = error(&two.replace("0 24 * * *", "0 9 * * *\"\ntimezone = \"Mars/Base"));
        assert_eq!(err.line, Some(12));
        assert!(
            err.message.contains("unknown time zone `Mars/Base`"),
            "{err}"
        );
        let err = error(&two.replace("\"m\"", "\"n\""));
        assert!(
            err.message.contains("another schedule is named `n`"),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_lowers_the_hosts_caps_and_never_raises_them() {
        let asked = ManifestLimits {
            host_memory: Some(16 << 20),
            max_error_size: Some(1 << 30),
            ..ManifestLimits::default()
        };
        let host = Limits::default();
        let narrowed = asked.narrow(host);
        assert_eq!(narrowed.host_memory, 16 << 20);
        assert_eq!(
            narrowed.error_bytes, host.error_bytes,
            "asking more gets the host's"
        );
        assert_eq!(narrowed.progress_bytes, host.progress_bytes);
        assert_eq!(ManifestLimits::default().narrow(host), host);
    }

    #[test]
    fn the_policy_refuses_requests_beyond_it_naming_the_field() {
        let manifest = Manifest::parse("taskbox.toml", GOOD).unwrap();
        assert_eq!(Policy::default().check(&manifest), Ok(()));

        let small = Policy {
            max_memory: 64 << 20,
            ..Policy::default()
        };
        assert_eq!(small.check(&manifest).unwrap_err().field, "limits.memory");

        let asks_more = Manifest::parse(
            "taskbox.toml",
            &GOOD.replace("[limits]\n", "[limits]\nhost_memory = \"1GiB\"\n"),
        )
        .unwrap();
        assert_eq!(
            Policy::default().check(&asks_more).unwrap_err().field,
            "limits.host_memory"
        );

        let strict = Policy {
            max_retries: 2,
            ..Policy::default()
        };
        assert_eq!(
            strict.check(&manifest).unwrap_err().field,
            "tasks.resize.max_retries"
        );

        let hosts = Policy {
            allowed_outbound_hosts: vec!["https://*.example.com".into()],
            ..Policy::default()
        };
        assert_eq!(hosts.check(&manifest), Ok(()));
        let other = Policy {
            allowed_outbound_hosts: vec!["https://*.example.org".into()],
            ..Policy::default()
        };
        assert_eq!(
            other.check(&manifest).unwrap_err().field,
            "capabilities.allowed_outbound_hosts"
        );

        let no_sql = Policy {
            sql_self: false,
            ..Policy::default()
        };
        assert_eq!(
            no_sql.check(&manifest).unwrap_err().field,
            "capabilities.sql"
        );
    }
}
