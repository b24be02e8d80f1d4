//! The `taskbox` command line. Doc comments here are the `--help` text.

mod bench;
mod client;
mod cron;
mod dead;
mod dev;
mod events;
mod job;
mod module;
mod queues;
pub(crate) mod redis_url;
mod roles;
mod run;
mod serve;
mod token;
mod workers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Environment variable that sets the log filter (`info`, `taskbox=debug`, ...).
pub const ENV_LOG: &str = "TASKBOX_LOG";

/// Environment variable that sets the log format (`text` or `json`).
pub const ENV_LOG_FORMAT: &str = "TASKBOX_LOG_FORMAT";

/// Run untrusted background jobs as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "taskbox", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the host's own log lines are written to stderr.
    #[arg(long, global = true, value_enum, env = ENV_LOG_FORMAT, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line for people; coloured only when stderr is a terminal.
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunArgs),
    Dev(dev::DevArgs),
    Serve(serve::ServeArgs),
    Module(module::ModuleArgs),
    Job(job::JobArgs),
    Dead(dead::DeadArgs),
    Queues(queues::QueuesArgs),
    Workers(workers::WorkersArgs),
    Token(token::TokenArgs),
    Events(events::EventsArgs),
    Cron(cron::CronArgs),
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the chosen command; the exit code says whether it succeeded.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        };
        match self.command {
            Command::Run(args) => run::run(args),
            Command::Dev(args) => runtime()?.block_on(dev::dev(args)),
            Command::Serve(args) => runtime()?.block_on(serve::serve(args)),
            Command::Module(args) => runtime()?.block_on(module::module(args)),
            Command::Job(args) => runtime()?.block_on(job::job(args)),
            Command::Dead(args) => runtime()?.block_on(dead::dead(args)),
            Command::Queues(args) => runtime()?.block_on(queues::queues(args)),
            Command::Workers(args) => runtime()?.block_on(workers::workers(args)),
            Command::Token(args) => runtime()?.block_on(token::token(args)),
            Command::Events(args) => runtime()?.block_on(events::events(args)),
            Command::Cron(args) => runtime()?.block_on(cron::cron(args)),
            Command::Bench(args) => runtime()?.block_on(bench::bench(args)),
        }
    }
}

impl Cli {
    /// Sends the host's own logs to stderr in the chosen format, filtered by `TASKBOX_LOG`
    /// (default `warn`), and its spans over OTLP when the `OTEL_*` environment asks for it.
    pub fn init_tracing(&self) -> anyhow::Result<crate::traces::Traces> {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter = tracing_subscriber::EnvFilter::try_from_env(ENV_LOG)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = match self.log_format {
            // Colour codes only where someone reads them: a file or a pipe gets plain text.
            LogFormat::Text => logs
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
        };
        let (spans, traces) = crate::traces::otlp_layer()?;
        tracing_subscriber::registry().with(logs).with(spans).init();
        Ok(traces)
    }
}
