//! `taskbox events CHANNEL`: tails a channel's events from the API's SSE stream.

use std::io::Write as _;
use std::process::ExitCode;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::json;

use crate::cli::client::{ClientArgs, Output};

/// Print a channel's events as they are published (jobs report progress on `job:ID`).
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    /// The channel.
    channel: String,
    /// First replay the events after this id (from the channel's last 1000).
    #[arg(long)]
    after: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,
    #[command(flatten)]
    client: ClientArgs,
}

/// One event as read from the stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct SseEvent {
    id: String,
    event: String,
    data: Vec<String>,
}

pub(crate) async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client()?;
    let mut path = format!("/v1/events/{}", urlencoding(&args.channel));
    if let Some(after) = &args.after {
        path.push_str(&format!("?after={}", urlencoding(after)));
    }
    let response = client.answer(client.request(Method::GET, &path)).await?;
    let mut body = response.bytes_stream();
    let mut pending = Vec::new();
    let mut event = SseEvent::default();
    let mut printed = 0;
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk?);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.is_empty() {
                read_field(&mut event, line);
                continue;
            }
            let done = std::mem::take(&mut event);
            if done.data.is_empty() {
                continue; // a keep-alive comment
            }
            show(args.client.output, &done)?;
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    eprintln!("the server closed the stream");
    Ok(ExitCode::FAILURE)
}

/// Adds one `field: value` line to `event`; comments and unknown fields are ignored.
fn read_field(event: &mut SseEvent, line: &str) {
    let (field, value) = line.split_once(':').unwrap_or((line, ""));
    let value = value.strip_prefix(' ').unwrap_or(value);
    match field {
        "id" => event.id = value.to_owned(),
        "event" => event.event = value.to_owned(),
        "data" => event.data.push(value.to_owned()),
        _ => {}
    }
}

fn show(output: Output, event: &SseEvent) -> anyhow::Result<()> {
    let data = event.data.join("\n");
    let name = match event.event.as_str() {
        "" => "message",
        name => name,
    };
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => {
            let line = json!({"id": event.id, "event": name, "data": data});
            writeln!(stdout, "{line}")?;
        }
        Output::Table => writeln!(stdout, "{}  {name}  {data}", event.id)?,
    }
    stdout.flush()?;
    Ok(())
}

/// Percent-encodes what may not stand in a URL path segment or query value.
fn urlencoding(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                encoded.push(byte as char);
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_build_an_event_and_data_lines_join() {
        let mut event = SseEvent::default();
        for line in [
            "id: 1-0",
            "event: progress",
            "data: {\"a\":",
            "data: 1}",
            ": ping",
        ] {
            read_field(&mut event, line);
        }
        assert_eq!(
            event,
            SseEvent {
                id: "1-0".into(),
                event: "progress".into(),
                data: vec!["{\"a\":".into(), "1}".into()],
            }
        );
        assert_eq!(urlencoding("job:a b/c"), "job:a%20b%2Fc");
    }
}
