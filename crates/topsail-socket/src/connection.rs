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
socket whose queue is full. The delivery lanes keep what such a socket
missed for it and cut its connection only once it stops taking messages
(see `crate::backlog`); without lanes it is cut at once. Cut, the session
ends, and the client reconnects and takes back what it missed, rather than
going on with a gap. That needs the connection, which an app hands over by
serving a [`TunedListener`] with [`Connection`] as its connect info.
*/

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use futures_util::task::AtomicWaker;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use axum::serve::{IncomingStream, Listener};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};

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
    cut: Arc<Cut>,
}

impl Connected<IncomingStream<'_, TunedListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TunedListener>) -> Self {
        Connection {
            cut: stream.io().cut.clone(),
        }
    }
}

/// A TCP listener whose connections are tuned for sockets as they are
/// accepted ([`crate::tune_tcp`]), and can be cut (see [`Connection`]).
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
    type Io = TunedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.listener).await;
        crate::tune_tcp(&tcp, self.stalled_after);
        let cut = Arc::new(Cut::default());
        (TunedStream { tcp, cut }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection [`TunedListener`] accepted: a TCP stream that can be cut
/// from elsewhere.
///
/// Why not a second file descriptor on the socket, shut down when needed:
/// holding one per connection made every write to the sockets cost more
/// (measured: the cluster fan-out benchmark lost a quarter of its
/// events/s). A flag checked as the stream is polled costs nothing that
/// shows.
#[derive(Debug)]
pub struct TunedStream {
    tcp: tokio::net::TcpStream,
    cut: Arc<Cut>,
}

/// The order to cut a connection, and the tasks to wake when it is given.
#[derive(Debug, Default)]
struct Cut {
    given: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Cut {
    fn give(&self) {
        self.given.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }
}

impl TunedStream {
    /// Registers the polling task (`waker` is the reader's or the writer's
    /// slot) to be woken by a cut; once cut, shuts the connection down: the
    /// peer sees it end, and the task polling it an error.
    fn cut_off(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Option<std::io::Error> {
        waker.register(cx.waker());
        if !self.cut.given.load(Ordering::Acquire) {
            return None;
        }
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Both);
        Some(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the socket's outgoing queue was full: its connection was cut",
        ))
    }
}

impl AsyncRead for TunedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.cut_off(&this.cut.reader, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.cut_off(&this.cut.writer, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.cut_off(&this.cut.writer, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The event of a probe: no client listens to it.
const PROBE: &str = "topsail:probe";

/// Probes the local sockets `op` selects and cuts the connection of each
/// whose outgoing queue is full, calling `cutting` with its id first. Run
/// after a broadcast that missed sockets for that reason.
pub(crate) fn cut_full<A: Adapter>(op: BroadcastOperators<A>, mut cutting: impl FnMut(Sid)) {
    for socket in op.sockets() {
        if is_full(&socket) {
            cut(&socket, &mut cutting);
        }
    }
}

/// Which of `sockets` (ids of local sockets) have a full outgoing queue,
/// found by probing each (a probe that finds room is sent).
pub(crate) fn full_among<A: Adapter>(io: &SocketIo<A>, sockets: &[Sid]) -> Vec<Sid> {
    sockets
        .iter()
        .copied()
        .filter(|&sid| io.get_socket(sid).is_some_and(|s| is_full(&s)))
        .collect()
}

fn is_full<A: Adapter>(socket: &SocketRef<A>) -> bool {
    matches!(
        socket.emit(PROBE, &()),
        Err(SendError::Socket(SocketError::InternalChannelFull))
    )
}

/// Cuts `socket`'s connection (when the app serves with [`Connection`] as
/// connect info; otherwise the heartbeat ends it), calling `cutting` with
/// its id first.
pub(crate) fn cut<A: Adapter>(socket: &SocketRef<A>, cutting: &mut impl FnMut(Sid)) {
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
    connection.cut.give();
    tracing::warn!(sid = %socket.id, "socket cut: its outgoing queue is full (it is not reading fast enough); its client reconnects and fetches again");
}
