//! Addresses on 127.0.0.1, and a receiver listening on one.

use std::net::SocketAddr;
use std::time::Duration;

use mxc_relay::receiver::{Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;

/// 127.0.0.1, port 0: whatever port is free when a server binds it.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// An address on 127.0.0.1 that nothing listened on a moment ago (bound, then released), for
/// a process that must be told its address before it starts (another may take it meanwhile).
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind(any_port())
        .expect("a free port")
        .local_addr()
        .expect("its address")
}

/// A verifying webhook receiver on 127.0.0.1 that keeps every delivery.
pub async fn keeping_receiver(secret: &WebhookSecret) -> Receiver {
    Receiver::start(
        any_port(),
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(300),
            keep: true,
            on_delivery: None,
        },
    )
    .await
    .expect("the receiver starts")
}
