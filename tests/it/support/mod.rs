//! What the tests share: real parts started on free ports and stopped on drop.

pub mod browser;
pub mod cluster;
pub mod guests;
pub mod host;
pub mod http_server;
pub mod netns;
pub mod postgres;
pub mod private_redis;
pub mod sandbox;
pub mod wait;

/// A loopback port free a moment ago, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
