//! The check that keeps taskbox runnable on a Redis Cluster while it is tested on one server:
//! a cluster refuses a script, a transaction or a pipeline whose keys lie in different hash
//! slots, and one server does not. Debug builds assert, before every call, that its keys
//! share one slot, so a cross-slot call fails the ordinary tests too.

use redis::Cmd;
use redis::cluster_routing::Slot;

/// Panics when the keys of `commands` (sent together) do not all hash to one slot.
pub(crate) fn assert_one_slot<'a>(commands: impl Iterator<Item = &'a Cmd>) {
    let mut first: Option<(Vec<u8>, Slot)> = None;
    for cmd in commands {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect();
        for key in command_keys(&args) {
            let slot = Slot::for_key(key);
            match &first {
                None => first = Some((key.to_vec(), slot)),
                Some((first_key, first_slot)) => assert!(
                    *first_slot == slot,
                    "keys `{}` and `{}` are sent together but lie in different cluster slots",
                    String::from_utf8_lossy(first_key),
                    String::from_utf8_lossy(key),
                ),
            }
        }
    }
}

/// The keys among the arguments of one command (its name first), for the commands taskbox
/// sends.
fn command_keys<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let Some(name) = args.first() else {
        return Vec::new();
    };
    let rest = &args[1..];
    match name.to_ascii_uppercase().as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" => {
            let count = rest
                .get(1)
                .and_then(|count| std::str::from_utf8(count).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            rest.iter().skip(2).take(count).copied().collect()
        }
        b"XREAD" | b"XREADGROUP" => {
            let Some(start) = rest
                .iter()
                .position(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))
            else {
                return Vec::new();
            };
            let streams = &rest[start + 1..];
            streams[..streams.len() / 2].to_vec()
        }
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"MGET" | b"WATCH" => rest.to_vec(),
        b"MSET" => rest.iter().step_by(2).copied().collect(),
        // A subcommand, then the key.
        b"XINFO" | b"XGROUP" | b"OBJECT" | b"MEMORY" => rest.get(1).copied().into_iter().collect(),
        b"PING" | b"INFO" | b"CONFIG" | b"CLUSTER" | b"SCRIPT" | b"PUBLISH" | b"SPUBLISH"
        | b"PUBSUB" | b"WAIT" | b"MULTI" | b"EXEC" | b"DISCARD" | b"CLIENT" | b"TIME"
        | b"HELLO" | b"SELECT" | b"DBSIZE" | b"FLUSHALL" | b"FLUSHDB" | b"SUBSCRIBE"
        | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"SUNSUBSCRIBE" | b"READONLY" => Vec::new(),
        _ => rest.first().copied().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_tag_pass_and_keys_of_two_fail() {
        let mut same = redis::pipe();
        same.hset("tb:{q}:job:1", "a", 1)
            .xadd("tb:{q}:s:high", "*", &[("id", "1")]);
        assert_one_slot(same.cmd_iter());

        let mut script = redis::cmd("EVALSHA");
        script
            .arg("abc")
            .arg(2)
            .arg("tb:{q}:a")
            .arg("tb:{q}:b")
            .arg("not-a-key");
        assert_one_slot(std::iter::once(&script));

        let mut crossed = redis::pipe();
        crossed.hset("tb:{q}:job:1", "a", 1).sadd("tb:queues", "q");
        let crossed = std::panic::catch_unwind(|| assert_one_slot(crossed.cmd_iter()));
        assert!(crossed.is_err(), "a pipeline over two slots passed");

        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg("g").arg("c").arg("STREAMS");
        read.arg("tb:{a}:s:high")
            .arg("tb:{b}:s:high")
            .arg(">")
            .arg(">");
        let read = std::panic::catch_unwind(|| assert_one_slot(std::iter::once(&read)));
        assert!(read.is_err(), "a read of two queues' streams passed");
    }
}
