//! How accepted connections are set up: `TCP_NODELAY` on every one
//! (issue 13).
//!
//! With Nagle's algorithm on, an answer larger than one segment sends its
//! first segment and holds the rest until the peer ACKs it, and a peer that
//! delays its ACK (Linux: up to 40 ms) stalls every such answer by that
//! much: `agents.list` with 32 agents had a p50 of 44 ms. tonic's
//! `Server::tcp_nodelay` only reaches sockets tonic binds itself, not a
//! listener handed to `serve_with_incoming_shutdown`, and axum never sets
//! it, so both listeners are wrapped here.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

/// The gRPC server's connections from `listener`, each with `TCP_NODELAY`.
/// TLS runs on top of these sockets, so TLS connections get it too.
pub(crate) fn grpc_incoming(listener: TcpListener) -> TcpIncoming {
    // A socket that refuses the option is logged by tonic and served anyway:
    // slow is better than refused.
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The metrics endpoint's listener, setting `TCP_NODELAY` on each
/// connection it accepts. Its type is spelled out, not `impl Listener`:
/// axum hands the peer's address to handlers (`ConnectInfo`, which the
/// console's login throttle keys on) only through a `TapIo` it can see.
pub(crate) fn metrics_listener(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_nodelay)
}

/// `TCP_NODELAY` on one accepted metrics connection.
fn set_nodelay(stream: &mut TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY on a metrics connection: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use std::net::SocketAddr;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        (listener, address)
    }

    /// The control: without the wrapping, an accepted socket has Nagle on,
    /// so the checks below can fail.
    #[tokio::test]
    async fn a_plain_accepted_socket_keeps_nagle_on() {
        let (listener, address) = bound().await;
        let _client = TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("getsockopt TCP_NODELAY"));
    }

    #[tokio::test]
    async fn grpc_connections_have_nodelay() {
        let (listener, address) = bound().await;
        let mut incoming = grpc_incoming(listener);
        for _ in 0..2 {
            let _client = TcpStream::connect(address).await.expect("connect");
            let accepted = incoming
                .next()
                .await
                .expect("a connection")
                .expect("accepted");
            assert!(accepted.nodelay().expect("getsockopt TCP_NODELAY"));
        }
    }

    #[tokio::test]
    async fn metrics_connections_have_nodelay() {
        let (listener, address) = bound().await;
        let mut listener = metrics_listener(listener);
        for _ in 0..2 {
            let _client = TcpStream::connect(address).await.expect("connect");
            let (accepted, _) = listener.accept().await;
            assert!(accepted.nodelay().expect("getsockopt TCP_NODELAY"));
        }
    }
}
