/*!
The TCP connection under a socket, so that a socket that cannot keep up can
be cut at once.

socketioxide drops what does not fit in a socket's outgoing queue and says
how many sockets a broadcast missed, not which; and it cannot close a
socket whose queue is full (its disconnect needs a place in that queue,
and a namespace disconnect would keep sails.io.js from reconnecting). So
after a broadcast that missed sockets, the local members it was for are
probed with an event no client listens to (`topsail:probe`, a few bytes,
only on that path): socketioxide refuses it at once, sending nothing, to a
socket whose queue is full. Those sockets' connections are shut down: the
session ends, and the client reconnects and fetches again, rather than
going on with a gap. That needs the connection, which an app hands over by
serving with [`Connection`] as its connect info.
*/

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use std::time::Duration;

use axum::serve::{IncomingStream, Listener};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};

/// The connection a request came over, as the app's connect info: serve
/// a [`TunedListener`] with
/// `router.into_make_service_with_connect_info::<Connection>()`, and a
/// socket whose outgoing queue overflows is cut at once (its client
/// reconnects and fetches again) instead of at the next heartbeat.
///
/// ```no_run
/// use topsail_socket::{Connection, DEFAULT_STALLED_AFTER, TunedListener};
/// # async fn run(router: axum::Router) {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:1337").await.unwrap();
/// let listener = TunedListener::new(listener, DEFAULT_STALLED_AFTER);
/// let app = router.into_make_service_with_connect_info::<Connection>();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    /// A second handle on the connection's socket, to shut it down. (It
    /// lives as long as the socket.io session that holds the request.)
    fd: Option<Arc<OwnedFd>>,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Connection::of(stream.io())
    }
}

impl Connected<IncomingStream<'_, TunedListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TunedListener>) -> Self {
        Connection::of(stream.io())
    }
}

/// A TCP listener whose connections are tuned for sockets as they are
/// accepted ([`crate::tune_tcp`]). (axum's `tap_io` does the same, but a
/// connect info cannot be implemented for its type outside axum.)
#[derive(Debug)]
pub struct TunedListener {
    listener: tokio::net::TcpListener,
    stalled_after: Duration,
}

impl TunedListener {
    /// Tunes the connections `listener` accepts, with `stalled_after` (see
    /// [`crate::tune_tcp`]; [`crate::DEFAULT_STALLED_AFTER`] is a good
    /// figure).
    pub fn new(listener: tokio::net::TcpListener, stalled_after: Duration) -> Self {
        TunedListener {
            listener,
            stalled_after,
        }
    }
}

impl Listener for TunedListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.listener).await;
        crate::tune_tcp(&tcp, self.stalled_after);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl Connection {
    fn of(tcp: &tokio::net::TcpStream) -> Self {
        let fd = match tcp.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "could not keep a handle on a connection");
                None
            }
        };
        Connection { fd }
    }

    /// Shuts the connection down both ways; false when it cannot.
    fn shut_down(&self) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        socket2::SockRef::from(fd.as_ref())
            .shutdown(std::net::Shutdown::Both)
            .is_ok()
    }
}

/// The event of a probe: no client listens to it.
const PROBE: &str = "topsail:probe";

/// Probes the local sockets `op` selects and cuts the connection of each
/// whose outgoing queue is full, calling `cutting` with its id first. Run
/// after a broadcast that missed sockets for that reason.
pub(crate) fn cut_full<A: Adapter>(op: BroadcastOperators<A>, mut cutting: impl FnMut(Sid)) {
    for socket in op.sockets() {
        let full = matches!(
            socket.emit(PROBE, &()),
            Err(SendError::Socket(SocketError::InternalChannelFull))
        );
        if full {
            cut(&socket, &mut cutting);
        }
    }
}

fn cut<A: Adapter>(socket: &SocketRef<A>, cutting: &mut impl FnMut(Sid)) {
    let info = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<Connection>>();
    let Some(ConnectInfo(connection)) = info else {
        tracing::debug!(sid = %socket.id, "a socket's queue is full; without its connection (serve with `Connection` as connect info) the heartbeat disconnects it");
        return;
    };
    // Known as cut before its disconnect can be seen.
    cutting(socket.id);
    if connection.shut_down() {
        tracing::warn!(sid = %socket.id, "socket cut: its outgoing queue is full (it is not reading fast enough); its client reconnects and fetches again");
    }
}
