//! `taskbox module ...`: uploading, listing, showing and deleting task modules, and reading
//! a module from disk (shared with `dev` and `bench`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::api::{ModuleDetail, ModuleList, SettingsView};
use crate::cli::client::{Client, ClientArgs, Output, print, table_rows};
use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::IgnoredAny;
use taskbox_core::model::manifest::{MANIFEST_FILE, Manifest};
use taskbox_core::model::module::{ModuleSettings, ModuleVersion};

/// Upload, list, show and delete task modules.
#[derive(Debug, clap::Args)]
pub(crate) struct ModuleArgs {
    #[command(subcommand)]
    command: ModuleCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Upload a module: a directory with a `taskbox.toml`, or a `.wasm` with --manifest (or
    /// a `taskbox.toml` beside it).
    Push {
        /// The directory or the component.
        path: PathBuf,
        /// The manifest, when PATH is a component.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// List modules.
    Ls,
    /// Show a module's versions.
    Show {
        /// The module's name.
        name: String,
    },
    /// Show a module's settings, or replace them all with --set and --secret (admin).
    Settings {
        /// The module's name.
        name: String,
        /// A plain value, `KEY=VALUE` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        values: Vec<String>,
        /// A secret value, `KEY=VALUE` (repeatable); never shown again.
        #[arg(long = "secret", value_name = "KEY=VALUE")]
        secrets: Vec<String>,
        /// Remove every setting.
        #[arg(long, conflicts_with_all = ["values", "secrets"])]
        clear: bool,
    },
    /// Delete a version: `NAME@VERSION`.
    Rm {
        /// `NAME@VERSION`.
        target: String,
        /// Delete even while jobs for it are queued.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn module(args: ModuleArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let output = args.client.output;
    match args.command {
        ModuleCommand::Push { path, manifest } => {
            let (_, text, bytes) = read_module(&path, manifest.as_deref())?;
            let module = upload(&client, text, bytes).await?;
            match output {
                Output::Json => print(output, &module, &[], &[]),
                Output::Table => println!("{}@{} {}", module.name, module.version, module.digest),
            }
        }
        ModuleCommand::Ls => {
            let reply: ModuleList = client.get("/v1/modules").await?;
            let rows = table_rows(&reply.modules)?;
            print(
                output,
                &reply,
                &rows,
                &["name", "latest", "tasks", "versions"],
            );
        }
        ModuleCommand::Settings {
            name,
            values,
            secrets,
            clear,
        } => {
            let path = format!("/v1/modules/{name}/settings");
            let reply: SettingsView = match (values.is_empty() && secrets.is_empty(), clear) {
                (true, false) => client.get(&path).await?,
                _ => {
                    let body = ModuleSettings {
                        config: key_values(&values)?,
                        secrets: key_values(&secrets)?,
                    };
                    let request = client.request(reqwest::Method::PUT, &path).json(&body);
                    client.send(request).await?
                }
            };
            match output {
                Output::Json => print(output, &reply, &[], &[]),
                Output::Table => {
                    for (key, value) in &reply.config {
                        println!("{key} = {value}");
                    }
                    for key in &reply.secrets {
                        println!("{key} = [secret]");
                    }
                }
            }
        }
        ModuleCommand::Show { name } => {
            let reply: ModuleDetail = client.get(&format!("/v1/modules/{name}")).await?;
            let rows = table_rows(&reply.versions)?;
            print(
                output,
                &reply,
                &rows,
                &["version", "digest", "size", "imports"],
            );
        }
        ModuleCommand::Rm { target, force } => {
            let (name, version) = target
                .split_once('@')
                .with_context(|| format!("`{target}` is not NAME@VERSION"))?;
            let _: IgnoredAny = client
                .delete(&format!("/v1/modules/{name}/{version}?force={force}"))
                .await?;
            println!("deleted {name}@{version}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the manifest and component as a multipart upload, with a progress bar for big
/// components.
async fn upload(
    client: &Client,
    manifest: String,
    bytes: Vec<u8>,
) -> anyhow::Result<ModuleVersion> {
    const CHUNK: usize = 256 << 10;
    let total = bytes.len() as u64;
    let bar = match total > 4 * CHUNK as u64 {
        true => ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
        )?),
        false => ProgressBar::hidden(),
    };
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let progress = bar.clone();
    let body = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        progress.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    let component =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), total)
            .file_name("component.wasm")
            .mime_str("application/wasm")?;
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest)
        .part("component", component);
    let reply = client
        .send(
            client
                .request(reqwest::Method::POST, "/v1/modules")
                .multipart(form),
        )
        .await;
    bar.finish_and_clear();
    reply
}

/// Reads a module from disk: a directory with a `taskbox.toml` (its `component`, or the only
/// `.wasm` in it), or a component with `manifest` or a `taskbox.toml` beside it. Returns the
/// manifest parsed and as written, and the component.
pub(crate) fn read_module(
    path: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<(Manifest, String, Vec<u8>)> {
    let (manifest_path, component) = match (path.is_dir(), manifest) {
        (true, _) => (path.join(MANIFEST_FILE), None),
        (false, Some(manifest)) => (manifest.to_owned(), Some(path.to_owned())),
        (false, None) => (
            path.parent().unwrap_or(Path::new(".")).join(MANIFEST_FILE),
            Some(path.to_owned()),
        ),
    };
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading the manifest {}", manifest_path.display()))?;
    let parsed = Manifest::parse(&manifest_path.display().to_string(), &text)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let component = match (component, &parsed.component) {
        (Some(component), _) => component,
        (None, Some(relative)) => dir.join(relative),
        (None, None) => only_wasm_in(dir)?,
    };
    let bytes = std::fs::read(&component)
        .with_context(|| format!("reading the component {}", component.display()))?;
    Ok((parsed, text, bytes))
}

fn only_wasm_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let wasm: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} has no .wasm file: name the component in the manifest (`component = \"...\"`)",
            dir.display()
        ),
        _ => bail!(
            "{} has several .wasm files: name the component in the manifest (`component = \"...\"`)",
            dir.display()
        ),
    }
}

/// `KEY=VALUE` arguments as a map; the error names the argument without `=`.
fn key_values(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .enumerate()
        .map(|(index, pair)| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            // Not echoed: it may be a secret typed without its key.
            _ => bail!("setting {} is not KEY=VALUE", index + 1),
        })
        .collect()
}
