//! The listening sockets of the MI's HTTP side: its own listener and `metrics_listen`.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A listening socket on `addr` with `SO_REUSEADDR` (no `SO_REUSEPORT`: an address another
/// process holds is an error).
pub(crate) fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
