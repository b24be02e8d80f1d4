//! `taskbox cron ...`: schedules, through the HTTP API; `cron next` previews fire times
//! locally.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::api::{NewSchedule, ScheduleList};
use crate::cli::client::{ClientArgs, Output, print, table_rows};
use crate::cli::job::parse_json;
use taskbox_core::model::cron::{CatchUp, CronExpr, parse_zone};
use taskbox_core::scheduler::ScheduleStatus;

/// Cron schedules: jobs of a task at the times a cron expression names.
#[derive(Debug, clap::Args)]
pub(crate) struct CronArgs {
    #[command(subcommand)]
    command: CronCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum CronCommand {
    /// Add a schedule that enqueues MODULE/TASK at the times EXPR names.
    Add {
        /// The schedule's name.
        name: String,
        /// The cron expression: `MIN HOUR DAY MONTH WEEKDAY` (Sunday = 0), six fields with
        /// seconds first, or @yearly, @monthly, @weekly, @daily, @hourly.
        expr: String,
        /// `MODULE/TASK`; each fire runs the module's highest version.
        target: String,
        /// The input of every job, as JSON.
        #[arg(long, default_value = "null", value_parser = parse_json)]
        input: Value,
        /// The IANA time zone EXPR is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// The queue (default: the task's, else `default`).
        #[arg(long)]
        queue: Option<String>,
        /// After downtime: `latest` runs the latest missed fire once, `skip` drops them.
        #[arg(long, default_value = "latest")]
        catch_up: CatchUp,
    },
    /// List the schedules with their last and next fires.
    Ls,
    /// Show one schedule, with its last job and that job's status.
    Show {
        /// The schedule's name (`module:name` for a manifest's).
        name: String,
    },
    /// Delete a schedule made with `cron add`.
    Rm {
        /// The schedule's name.
        name: String,
    },
    /// Stop a schedule from firing.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Let a paused schedule fire again, from its next fire.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Print the next fire times of EXPR (no server needed).
    Next {
        /// The cron expression.
        expr: String,
        /// The IANA time zone EXPR is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// How many fire times.
        #[arg(short = 'n', default_value_t = 5)]
        count: usize,
    },
}

const COLUMNS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "module",
    "task",
    "paused",
    "next_fire",
    "last_fire",
    "last_job_status",
];

pub(crate) async fn cron(args: CronArgs) -> anyhow::Result<ExitCode> {
    let output = args.client.output;
    let client = || args.client.client();
    let path = |name: &str, action: &str| format!("/v1/schedules/{name}{action}");
    let shown: ScheduleStatus = match args.command {
        CronCommand::Add {
            name,
            expr,
            target,
            input,
            tz,
            queue,
            catch_up,
        } => {
            let (module, task) = target
                .split_once('/')
                .with_context(|| format!("`{target}` is not MODULE/TASK"))?;
            let body = NewSchedule {
                name,
                cron: expr,
                timezone: Some(tz),
                module: module.to_owned(),
                task: task.to_owned(),
                input,
                queue,
                catch_up: Some(catch_up),
            };
            client()?.post("/v1/schedules", &body).await?
        }
        CronCommand::Ls => {
            let reply: ScheduleList = client()?.get("/v1/schedules").await?;
            let rows = table_rows(&reply.schedules)?;
            print(output, &reply, &rows, COLUMNS);
            return Ok(ExitCode::SUCCESS);
        }
        CronCommand::Show { name } => client()?.get(&path(&name, "")).await?,
        CronCommand::Rm { name } => {
            let _: IgnoredAny = client()?.delete(&path(&name, "")).await?;
            return Ok(ExitCode::SUCCESS);
        }
        CronCommand::Pause { name } => client()?.post(&path(&name, "/pause"), &()).await?,
        CronCommand::Resume { name } => client()?.post(&path(&name, "/resume"), &()).await?,
        CronCommand::Next { expr, tz, count } => {
            let parsed =
                CronExpr::parse(&expr).map_err(|err| anyhow::anyhow!("`{expr}`: {err}"))?;
            let zone = parse_zone(&tz)?;
            let fires: Vec<String> = parsed
                .fires_after(zone, Utc::now())
                .take(count)
                .map(|at| {
                    at.with_timezone(&zone)
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                })
                .collect();
            match output {
                Output::Json => print(output, &json!({ "fires": fires }), &[], &[]),
                Output::Table => fires.iter().for_each(|fire| println!("{fire}")),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match output {
        Output::Json => print(output, &shown, &[], &[]),
        Output::Table => {
            let shown = serde_json::to_value(&shown)?;
            for column in COLUMNS
                .iter()
                .chain(&["last_job", "last_error", "catch_up", "queue"])
            {
                let value = match &shown[*column] {
                    Value::Null => "-".to_owned(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                println!("{column:<16}{value}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
