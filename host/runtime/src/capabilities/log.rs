//! The job log: guest stdout, stderr and `taskbox:task/log` lines in one bounded buffer.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::taskbox::task::log::{self, Level};
use crate::job::JobState;

/// A job's log. Clones share one buffer, so the guest's stdout and stderr streams and the
/// `log` interface all append to the same place, in order.
///
/// Past its limit the log keeps nothing more and counts what it dropped; the finished log
/// ends with a marker saying how much. A command module's stdout is one too, separate from
/// its log, with the output limit as its limit.
#[derive(Debug, Clone)]
pub(crate) struct JobLog(Arc<Mutex<LogBuffer>>);

#[derive(Debug)]
struct LogBuffer {
    bytes: Vec<u8>,
    limit: usize,
    dropped: usize,
}

impl JobLog {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(LogBuffer {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        })))
    }

    fn buffer(&self) -> MutexGuard<'_, LogBuffer> {
        // A poisoned lock only means a writer panicked mid-append; the bytes are still valid.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer();
        let room = buffer.limit.saturating_sub(buffer.bytes.len());
        let kept = bytes.len().min(room);
        buffer.bytes.extend_from_slice(&bytes[..kept]);
        buffer.dropped += bytes.len() - kept;
    }

    /// The bytes kept, and how many were written in all.
    pub(crate) fn contents(&self) -> (Vec<u8>, usize) {
        let buffer = self.buffer();
        (buffer.bytes.clone(), buffer.bytes.len() + buffer.dropped)
    }

    /// The log as text (invalid UTF-8 replaced), with a truncation marker if bytes were
    /// dropped.
    pub(crate) fn finish(&self) -> String {
        let buffer = self.buffer();
        let mut text = String::from_utf8_lossy(&buffer.bytes).into_owned();
        if buffer.dropped > 0 {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "[taskbox: log truncated at {} bytes, {} more bytes dropped]\n",
                buffer.limit, buffer.dropped
            ));
        }
        text
    }
}

impl log::Host for JobLog {
    fn write(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        self.append(format!("[{level}] {message}\n").as_bytes());
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    log::add_to_linker::<JobState, HasSelf<JobLog>>(linker, |state| &mut state.log)
}

impl IsTerminal for JobLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

/// Guest stdout and stderr: WASI streams that append to the log. The default adapter would
/// spawn a background task per stream; appending in place is cheaper and keeps order.
impl StdoutStream for JobLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for JobLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: what does not fit is counted as dropped, never blocks the guest.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for JobLog {
    async fn ready(&mut self) {}
}

impl AsyncWrite for JobLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_says_how_many_were_dropped() {
        let log = JobLog::new(10);
        log.append(b"hello ");
        log.append(b"world, again");
        assert_eq!(
            log.finish(),
            "hello worl\n[taskbox: log truncated at 10 bytes, 8 more bytes dropped]\n"
        );
    }
}
