//! The job hash's fields as the scripts and the Rust code name them, read from their sources,
//! so that a field added on one side only is caught.

use std::collections::BTreeSet;

use super::attempts::STARTED_FIELDS;

/// The queue's scripts, and the progress script, which writes job hashes too.
const SCRIPTS: [&str; 9] = [
    include_str!("lua/enqueue.lua"),
    include_str!("lua/start_batch.lua"),
    include_str!("lua/finish_batch.lua"),
    include_str!("lua/promote.lua"),
    include_str!("lua/cancel.lua"),
    include_str!("lua/retry_dead.lua"),
    include_str!("lua/drop_results.lua"),
    include_str!("lua/forget.lua"),
    include_str!("../progress/lua/store_progress.lua"),
];

/// Fields only the scripts read: they fence and steer the scripts' own writes.
const SCRIPT_ONLY: [&str; 3] = [
    // The stream entry of the running attempt, which fences its outcome.
    "entry",
    // Turns a failed or handed-back attempt into a cancelled job.
    "cancel_requested",
    // Kept beside `error` (which the record reads) so a completion can drop both.
    "error_kind",
];

/// The arguments of each `redis.call('COMMAND', ...)` in `lua`, split at top-level commas.
fn calls<'a>(lua: &'a str, command: &str) -> Vec<Vec<&'a str>> {
    let opening = format!("redis.call('{command}',");
    lua.match_indices(&opening)
        .map(|(at, _)| {
            let rest = &lua[at + "redis.call(".len()..];
            let (mut depth, mut quoted, mut start, mut args) = (0, false, 0, Vec::new());
            for (i, c) in rest.char_indices() {
                match c {
                    '\'' => quoted = !quoted,
                    '(' | '{' if !quoted => depth += 1,
                    ')' | '}' if !quoted && depth > 0 => depth -= 1,
                    ',' | ')' if !quoted && depth == 0 => {
                        args.push(rest[start..i].trim());
                        start = i + 1;
                        if c == ')' {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            args
        })
        .collect()
}

/// The quoted names among `args`.
fn literals<'a>(args: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    args.into_iter()
        .filter_map(|arg| arg.strip_prefix('\'')?.strip_suffix('\''))
        .map(str::to_owned)
        .collect()
}

/// The fields the scripts read from job hashes (HGET, HMGET).
fn read_by_scripts() -> BTreeSet<String> {
    SCRIPTS
        .iter()
        .flat_map(|lua| [calls(lua, "HGET"), calls(lua, "HMGET")].concat())
        .flat_map(|args| literals(args.into_iter().skip(2)))
        .collect()
}

/// The fields written to job hashes: by the scripts (HSET, HINCRBY) and by `enqueue`,
/// whose field names are the string literals it passes.
fn written() -> BTreeSet<String> {
    let mut written: BTreeSet<String> = SCRIPTS
        .iter()
        .flat_map(|lua| {
            let set = calls(lua, "HSET")
                .into_iter()
                .flat_map(|args| literals(args.into_iter().skip(2).step_by(2)));
            let incremented = calls(lua, "HINCRBY")
                .into_iter()
                .flat_map(|args| literals(args.into_iter().skip(2).take(1)));
            set.chain(incremented).collect::<Vec<_>>()
        })
        .collect();
    let source = include_str!("mod.rs");
    let enqueue = &source[source.find("let mut fields: Vec<(&str, Vec<u8>)>").unwrap()
        ..source.find("let idempotency_key = match").unwrap()];
    written.extend(quoted_in(enqueue, "(\""));
    written
}

/// The string literals that follow `opening` in Rust `source`.
fn quoted_in(source: &str, opening: &str) -> BTreeSet<String> {
    source
        .split(opening)
        .skip(1)
        .filter_map(|rest| Some(rest.split_once('"')?.0.to_owned()))
        .collect()
}

/// The fields the Rust side reads: the job record's and the started job's.
fn known_to_rust() -> BTreeSet<String> {
    let source = include_str!("../model/job.rs");
    let from_hash = &source[source.find("fn from_hash").unwrap()..];
    let mut known = quoted_in(from_hash, "text(\"");
    known.extend(quoted_in(from_hash, "hash.remove(\""));
    known.extend(STARTED_FIELDS.map(str::to_owned));
    known
}

#[test]
fn the_scripts_and_the_rust_record_know_the_same_fields() {
    let script_only: BTreeSet<String> = SCRIPT_ONLY.map(str::to_owned).into();
    let known = &known_to_rust() | &script_only;
    let written = written();
    let read = read_by_scripts();
    assert_eq!(
        written, known,
        "the fields written to a job hash are not those Rust reads plus the scripts' own"
    );
    assert!(
        read.is_subset(&known),
        "scripts read fields Rust does not know: {:?}",
        read.difference(&known).collect::<Vec<_>>()
    );
    assert!(
        script_only.is_subset(&read),
        "a script-only field no script reads: {:?}",
        script_only.difference(&read).collect::<Vec<_>>()
    );
}

#[test]
fn start_batch_replies_the_fields_started_job_reads_in_its_order() {
    let lua = include_str!("lua/start_batch.lua");
    let read = calls(lua, "HMGET").remove(0);
    let read: Vec<&str> = read[2..].iter().map(|arg| arg.trim_matches('\'')).collect();
    let reply = lua
        .split("reply = {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    let replied: Vec<&str> = reply
        .split(',')
        .map(|value| {
            let value = value.trim().trim_end_matches(" or ''");
            match value.strip_prefix("job[") {
                Some(index) => read[index.trim_end_matches(']').parse::<usize>().unwrap() - 1],
                None => value,
            }
        })
        .collect();
    assert_eq!(replied, STARTED_FIELDS);
}
