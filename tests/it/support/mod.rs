//! What the tests share: real parts started on free ports and stopped on drop.

pub mod cluster;
pub mod guests;
pub mod host;
pub mod http_server;
pub mod netns;
pub mod postgres;
pub mod private_redis;
pub mod sandbox;
pub mod wait;
