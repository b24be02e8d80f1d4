//! What taskbox keeps in Redis. [`keys`] names every key and pub/sub channel of every area
//! (queues, registry, cron, events, tokens, workers), so that one file answers "which keys
//! does taskbox write?" and no other file spells a key.

pub(crate) mod keys;
