//! Compiled task modules: content-addressed, compiled once, pre-linked once.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::bindings::TaskPre;
use crate::job::JobState;
use crate::outcome::JobError;

/// The SHA-256 of a module's bytes: its identity everywhere in taskbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest([u8; 32]);

impl ModuleDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

/// A digest that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a module digest is 64 hex digits (a SHA-256)")]
pub struct InvalidDigest;

impl std::str::FromStr for ModuleDigest {
    type Err = InvalidDigest;

    fn from_str(hex: &str) -> Result<Self, Self::Err> {
        let mut digest = [0; 32];
        hex::decode_to_slice(hex, &mut digest).map_err(|_| InvalidDigest)?;
        Ok(Self(digest))
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// How the host calls a module; a manifest's `abi` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Abi {
    /// It exports the `taskbox:task` world's `run`: task name, input and job info in, output
    /// or a typed task error out.
    #[default]
    Task,
    /// A WASI command (`wasi:cli/run`): the input on stdin, the output from stdout, the task
    /// name as its first argument; a non-zero exit fails the job.
    Command,
}

/// The instantiable form of a module, by ABI.
pub(crate) enum Entry {
    Task(TaskPre<JobState>),
    Command(CommandPre<JobState>),
}

/// A module ready to run: compiled, its imports resolved against the host, instantiable
/// many times.
pub struct TaskModule {
    digest: ModuleDigest,
    engine: Engine,
    entry: Entry,
    imports: Vec<String>,
    compiled_size: u64,
}

impl fmt::Debug for TaskModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskModule")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl TaskModule {
    /// The module's digest.
    pub fn digest(&self) -> ModuleDigest {
        self.digest
    }

    /// The size of its compiled code and data in memory, in bytes: what keeping it loaded
    /// costs.
    pub fn compiled_size(&self) -> u64 {
        self.compiled_size
    }

    /// The names of the interfaces the component imports (`taskbox:task/log@0.1.0`, ...).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    /// How the host calls it.
    pub fn abi(&self) -> Abi {
        match self.entry {
            Entry::Task(_) => Abi::Task,
            Entry::Command(_) => Abi::Command,
        }
    }

    /// Links `component` against the host: a component that exports `wasi:cli/run` is a
    /// command and links with `command_linker`, any other must export the task world's
    /// `run`. A missing import fails here, naming it, so that no job of a module that
    /// cannot run is ever started.
    pub(crate) fn link(
        digest: ModuleDigest,
        component: &Component,
        task_linker: &Linker<JobState>,
        command_linker: &Linker<JobState>,
    ) -> Result<Self, JobError> {
        let engine = component.engine();
        let is_command = component
            .component_type()
            .exports(engine)
            .any(|(name, _)| name.starts_with("wasi:cli/run@"));
        let linker = match is_command {
            true => command_linker,
            false => task_linker,
        };
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|err| missing_import(&err))?;
        let entry = match is_command {
            true => CommandPre::new(instance_pre).map(Entry::Command),
            false => TaskPre::new(instance_pre).map(Entry::Task),
        }
        .map_err(|err| JobError::InvalidModule {
            message: format!(
                "it exports neither the taskbox:task world's `run` nor `wasi:cli/run`: {err:#}"
            ),
        })?;
        let imports = component
            .component_type()
            .imports(component.engine())
            .map(|(name, _)| name.to_owned())
            .collect();
        Ok(Self {
            digest,
            engine: engine.clone(),
            entry,
            imports,
            compiled_size: image_size(component),
        })
    }
}

/// The bytes of a compiled component's image: its machine code, data segments and metadata,
/// about what its precompiled file takes on disk.
fn image_size(component: &Component) -> u64 {
    let image = component.image_range();
    (image.end.addr() - image.start.addr()) as u64
}

/// Turns the linker's refusal into `missing_import`. The linker says
/// "component imports instance `NAME`, but a matching implementation was not found in the
/// linker": the import's name is the first backquoted word.
fn missing_import(err: &wasmtime::Error) -> JobError {
    match err.to_string().split('`').nth(1) {
        Some(name) => JobError::MissingImport {
            name: name.to_owned(),
        },
        None => JobError::InvalidModule {
            message: format!("{err:#}"),
        },
    }
}

const MAGIC: &[u8] = b"\0asm";
const COMPONENT_LAYER: [u8; 2] = [1, 0];

/// Whether `bytes` are a core WebAssembly module (not a component).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == MAGIC && bytes[6..8] == [0, 0]
}

/// Wraps a WASI preview 1 command (a core module exporting `_start`, as `wasm32-wasip1`
/// toolchains build) into a `wasi:cli/run` component with wasmtime's preview 1 adapter.
pub fn componentize_command(core: &[u8]) -> Result<Vec<u8>, JobError> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|encoder| {
            encoder.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|err| JobError::InvalidModule {
            message: format!("wrapping the WASI preview 1 module as a command: {err:#}"),
        })
}

/// Checks the header: a component, not a core module or something else.
pub(crate) fn check_is_component(bytes: &[u8]) -> Result<(), JobError> {
    let invalid = |message: &str| {
        Err(JobError::InvalidModule {
            message: message.to_owned(),
        })
    };
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return invalid("not a WebAssembly binary (no `\\0asm` header)");
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return invalid(
            "a core WebAssembly module, not a component: build for wasm32-wasip2, or wrap it \
             with `wasm-tools component new` (a WASI preview 1 program can run as a command \
             module: `abi = \"command\"` in its manifest)",
        );
    }
    Ok(())
}

/// Precompiled components on disk, keyed by module digest and engine compatibility, so that
/// a restarted host does not compile again.
///
/// Deserializing precompiled code is unsafe: wasmtime trusts it as native code. So this cache
/// only ever reads files it wrote itself: each file carries the SHA-256 of its body, written
/// by [`ArtifactCache::store`] after compiling, and a file whose checksum does not match is
/// deleted and recompiled. Bytes a user sends are always compiled, never deserialized.
#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

const ARTIFACT_MAGIC: &[u8; 8] = b"TBXCWASM";

impl ArtifactCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest: ModuleDigest) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of `digest`, if there is an intact one.
    pub(crate) fn load(&self, engine: &Engine, digest: ModuleDigest) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        let body = verified_body(&bytes);
        // SAFETY: `body` is exactly what `store` wrote from `Component::serialize` on an engine
        // with the same compatibility hash (it is in the file name), as its checksum proves.
        let component = body.and_then(|body| unsafe { Component::deserialize(engine, body) }.ok());
        if component.is_none() {
            tracing::warn!(path = %path.display(), "discarding a damaged or stale precompiled module");
            let _ = std::fs::remove_file(&path);
        }
        component
    }

    /// Writes the compilation of `digest` atomically (a temporary file, then a rename).
    pub(crate) fn store(&self, digest: ModuleDigest, component: &Component) -> anyhow::Result<()> {
        let body = component.serialize()?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(ARTIFACT_MAGIC)?;
        file.write_all(&Sha256::digest(&body))?;
        file.write_all(&body)?;
        file.persist(self.path(digest))?;
        Ok(())
    }
}

fn verified_body(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(ARTIFACT_MAGIC.as_slice())?;
    let (checksum, body) = rest.split_at_checked(32)?;
    (Sha256::digest(body).as_slice() == checksum).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_core_modules_and_non_wasm() {
        let core = b"\0asm\x01\0\0\0";
        let err = check_is_component(core).unwrap_err();
        assert!(err.to_string().contains("core WebAssembly module"), "{err}");
        let err = check_is_component(b"hello world").unwrap_err();
        assert!(
            err.to_string().contains("not a WebAssembly binary"),
            "{err}"
        );
        assert!(check_is_component(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn a_tampered_artifact_is_not_trusted() {
        let mut file = ARTIFACT_MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(b"body"));
        file.extend_from_slice(b"body");
        assert_eq!(verified_body(&file), Some(&b"body"[..]));
        *file.last_mut().unwrap() = b'x';
        assert_eq!(verified_body(&file), None);
    }
}
