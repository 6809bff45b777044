//! The realtime layer of [topsail](https://docs.rs/topsail), wire-compatible
//! with the stock `sails.io.js` client (socket.io-client 2.x, Engine.IO 3;
//! EIO4 clients connect too):
//!
//! - virtual requests: `io.socket.get('/pet')` runs through the app's own
//!   axum Router (same routes, same policies) and is answered with the JWR
//!   ack (`bridge`);
//! - resourceful pub-sub: the engine's [`Effect`](topsail_core::Effect)s
//!   become room joins and broadcasts, in order ([`Sockets::publisher`]);
//! - the sockets API ([`Sockets`]) and the [`SocketRequest`] extractor.

mod backend;
mod backlog;
mod bridge;
mod cluster;
mod connection;
mod error;
mod extract;
mod guarded;
mod handshake;
mod introductions;
mod jar;
mod lanes;
mod relay;
mod replay;
mod resume;
mod room_cap;
mod sockets;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};

pub use backend::Census;
pub use backlog::SlowReaders;
pub use cluster::DEFAULT_REDIS_PREFIX;
pub use connection::{Connection, TunedListener, TunedStream};
pub use extract::{NotASocketRequest, SocketRequest};
pub use handshake::{BeforeConnect, ConnectRequest};
pub use introductions::{Introductions, MAX_NOTED};
pub use lanes::{INLINE_MAX, default_lanes};
pub use replay::{ReplayConfig, now_us};
pub use resume::{
    FULL_SNAPSHOT_EVERY, RESUME_COOKIE, RESUMES_AT_ONCE, RESYNC_EVENT, SHARED_GRACE, SNAPSHOT_EVERY,
};
pub use sockets::{
    AdapterFailure, CLUSTER_REPLAY_MARGIN, DEFAULT_EVENT, DEFAULT_MAX_ROOMS_PER_SOCKET,
    DEFAULT_PUBLISHER_QUEUE, RECIPIENTS_SAMPLED_EVERY, SocketPublisher, Sockets, SocketsError,
};

/// How long a connection may hold data its peer does not take before the
/// kernel closes it, with [`tune_tcp`]: longer than the default heartbeat
/// (a 25 s interval and a 60 s timeout), so the heartbeat is what
/// disconnects a socket that stopped reading (and counts it), and the
/// kernel then ends its connection.
pub const DEFAULT_STALLED_AFTER: Duration = Duration::from_secs(90);

/// Tunes a TCP connection the app accepted, for its sockets (call it from
/// `axum::serve::ListenerExt::tap_io`): no Nagle delay (a small write
/// after another waited ~40 ms), and on Linux `TCP_USER_TIMEOUT`, so a
/// connection whose peer stopped reading for `stalled_after` (its window
/// closed, data waiting) is closed by the kernel. Without it, a client that
/// stops reading holds its socket, its rooms and its queue for ever: the
/// heartbeat gives up on it, but the session cannot end while its writer
/// waits on the full connection.
///
/// ```no_run
/// use axum::serve::ListenerExt;
/// # async fn run(router: axum::Router) {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:1337").await.unwrap();
/// let listener = listener.tap_io(|tcp| {
///     topsail_socket::tune_tcp(tcp, topsail_socket::DEFAULT_STALLED_AFTER)
/// });
/// axum::serve(listener, router).await.unwrap();
/// # }
/// ```
pub fn tune_tcp(tcp: &tokio::net::TcpStream, stalled_after: Duration) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(stalled_after)) {
        tracing::debug!(error = %e, "could not set TCP_USER_TIMEOUT");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stalled_after;
}

/// Socket server settings.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// Accept only the websocket transport, as Sails does by default (no
    /// sticky sessions needed behind a load balancer). `false` also allows
    /// long polling.
    pub websocket_only: bool,
    /// The largest message a client may send, in bytes: a longer
    /// websocket message (or frame), or polling payload, closes the
    /// connection before it is parsed.
    pub max_payload: u64,
    /// Engine.IO ping interval (Sails: 25 s).
    pub ping_interval: Duration,
    /// Engine.IO ping timeout (Sails: 60 s).
    pub ping_timeout: Duration,
    /// Bytes each websocket reserves for reading client frames. Requests
    /// are small; a larger frame grows the buffer as it arrives. This is
    /// most of an idle socket's memory, so servers holding many sockets
    /// want it small.
    pub read_buffer: usize,
    /// The most virtual requests one socket may have in flight at once; one
    /// more is answered 429 `Too Many Requests` at once. (sails.io.js sends
    /// each call as it is made, so a page that fires many at once needs a
    /// higher figure.)
    pub max_in_flight: usize,
    /// How long a virtual request may run before the socket is answered
    /// 504 `Gateway Timeout`. The request itself is not cut short: a write
    /// still commits and publishes, and it keeps its place in
    /// `max_in_flight` until it ends.
    pub request_timeout: Duration,
    /// The most rooms one socket joins through pub-sub (one per record it
    /// is subscribed to, by its reads or because it watched the record's
    /// model when it was created); past it, reads still answer but
    /// subscribe it to nothing more. See [`Sockets::max_rooms_per_socket`].
    pub max_rooms_per_socket: usize,
    /// How many packets may wait to be written to one socket. A pub-sub
    /// message that finds the queue full waits for room as
    /// `slow_readers` says, and the messages after it for that socket
    /// wait behind it (the other sockets do not wait). A socket served
    /// without [`Connection`] as connect info cannot be cut: the heartbeat
    /// disconnects it, at the first ping that finds its queue full, or
    /// when it has not answered a ping within `ping_timeout`. Its client
    /// then reconnects and takes back what it missed (see `replay`).
    /// Those disconnects are counted ([`Sockets::stalled_disconnects`])
    /// and logged.
    pub send_queue: usize,
    /// How long, and for how many messages, a socket whose outgoing queue
    /// is full is waited for before its connection is cut: a burst does
    /// not cut a client that reads, and a client that stopped reading
    /// holds a bounded backlog for a bounded time. With `lanes: 0` a
    /// socket whose queue is full is cut at once.
    pub slow_readers: SlowReaders,
    /// When each new record's introduction to its model's watchers (they
    /// join its room, as in Sails) is carried out: by default once the
    /// node has caught up with what it delivers, so a burst of creates
    /// reaches the watchers first. Until then anything that looks at or
    /// changes those rooms on this node sees them carried out. See
    /// [`Introductions`].
    pub introductions: Introductions,
    /// How many actions' effects may wait to be delivered; a write that
    /// finds the queue full waits (after its commit) for room. See
    /// [`Sockets::publisher_queue`].
    pub publisher_queue: usize,
    /// Worker tasks that hand the pub-sub messages to the sockets, each
    /// for its share of them, so a broadcast to many sockets uses every
    /// core; by default one per core ([`default_lanes`]); 0 hands every
    /// message out on the one publisher task. Each socket still receives
    /// every message in publish order. See [`Sockets::lanes`].
    pub lanes: usize,
    /// Origins besides the server's own whose pages may open a socket
    /// (Sails' `onlyAllowOrigins`), as `https://app.example.com`; `*` allows
    /// any. A handshake from another origin is refused with 403. By default
    /// only pages of the server's own origin (the `Origin`'s host is the
    /// `Host` of the request) may; a client that sends no `Origin` (Node, a
    /// native app) always may. Behind a proxy that rewrites `Host`, list the
    /// public origin here.
    pub allowed_origins: Vec<String>,
    /// The app's check of each new socket (Sails' `beforeConnect`), after
    /// the origin check.
    pub before_connect: Option<BeforeConnect>,
    /// Sequence numbers, the replay log, and taking back sockets that
    /// dropped (see [`ReplayConfig`]).
    pub replay: ReplayConfig,
    /// In a cluster, the prefix of every key and channel the nodes share
    /// in Redis (`<prefix>:effects`, `<prefix>:parked:*`,
    /// `<prefix>:node:*`, and socketioxide-redis's channels). Two apps
    /// sharing a Redis database need different prefixes, or each hears
    /// the other's messages; every node of one app needs the same.
    /// Default [`DEFAULT_REDIS_PREFIX`], whose adapter channels keep
    /// socketioxide-redis's own default name (`socket.io`).
    pub redis_prefix: String,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            websocket_only: true,
            max_payload: 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(60),
            read_buffer: 1024,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(30),
            send_queue: 128,
            slow_readers: SlowReaders::default(),
            introductions: Introductions::default(),
            max_rooms_per_socket: DEFAULT_MAX_ROOMS_PER_SOCKET,
            publisher_queue: DEFAULT_PUBLISHER_QUEUE,
            lanes: default_lanes(),
            allowed_origins: Vec::new(),
            before_connect: None,
            replay: ReplayConfig::default(),
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
        }
    }
}

impl RealtimeConfig {
    /// The same settings, allowing the origins of a comma-separated list
    /// (an `ALLOWED_ORIGINS` variable); blanks and empty items are skipped.
    ///
    /// ```
    /// let cfg = topsail_socket::RealtimeConfig::default()
    ///     .allowed_origins_from(" https://app.example.com, ,http://localhost:5173");
    /// assert_eq!(cfg.allowed_origins, ["https://app.example.com", "http://localhost:5173"]);
    /// ```
    pub fn allowed_origins_from(mut self, list: &str) -> Self {
        self.allowed_origins = list
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        self
    }
}

fn limits(cfg: &RealtimeConfig) -> Limits {
    Limits {
        in_flight: cfg.max_in_flight.max(1),
        timeout: cfg.request_timeout,
        close_doubt: cfg.replay.close_doubt,
        // Engine.IO 3 clients ping: the last ping proves the client had the
        // pong before it, one interval earlier; a timeout is noticed an
        // interval and a timeout after that ping.
        timeout_doubt: cfg.ping_interval * 2 + cfg.ping_timeout,
    }
}

fn configure<A: Adapter>(b: SocketIoBuilder<A>, cfg: &RealtimeConfig) -> SocketIoBuilder<A> {
    let b = b
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_timeout)
        .max_payload(cfg.max_payload)
        .max_buffer_size(cfg.send_queue.max(1))
        // The websocket transport has limits of its own (64 MiB messages by
        // default): they follow `max_payload` too.
        .ws_max_message_size(usize::try_from(cfg.max_payload).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(cfg.max_payload).unwrap_or(usize::MAX))
        .ws_read_buffer_size(cfg.read_buffer);
    if cfg.websocket_only {
        b.transports([TransportType::Websocket])
    } else {
        b
    }
}

/// Whether the client asked for an ack (sails.io.js always does; a raw
/// client may not, and then parse errors go out as `sails:parseError`).
struct AckRequested(bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(AckRequested(ack.is_some()))
    }
}

/// What a server of either adapter starts with: the router the bridge
/// will dispatch into (set by `serve`), the count of its requests, and its
/// sockets API with the configured bounds.
fn shared_parts<A: Adapter>(
    io: &SocketIo<A>,
    config: &RealtimeConfig,
) -> (Arc<OnceLock<Router>>, Requests, Sockets) {
    let sockets = Sockets::new(io.clone())
        .max_rooms_per_socket(config.max_rooms_per_socket)
        .publisher_queue(config.publisher_queue)
        .lanes(config.lanes)
        .slow_readers(config.slow_readers)
        .introductions(config.introductions)
        .replay(config.replay.clone())
        .late_window(config.ping_interval + config.ping_timeout + Duration::from_secs(5));
    (Arc::new(OnceLock::new()), Requests::new(), sockets)
}

/// What bounds one socket's virtual requests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    in_flight: usize,
    timeout: Duration,
    /// How far before a disconnect its messages are replayed (see
    /// [`ReplayConfig::close_doubt`]): after a closed connection, and
    /// after a heartbeat timeout.
    close_doubt: Duration,
    timeout_doubt: Duration,
}

/// Every socket's requests on this node, counted for a graceful shutdown.
type Requests = topsail_core::Inflight;

/// The connect handler for the root namespace, generic over the adapter
/// (`ns` itself can only be called on a concrete adapter).
/// Sets a socket up as it connects: as a connect middleware, which
/// socketioxide runs before it sends the client the namespace's connect
/// packet. A connect handler runs after it, so a client that sends its
/// first request as soon as it is connected (sails.io.js does, with what
/// it queued meanwhile) could be read before the handler had registered
/// the request handler, and the request was dropped unanswered.
fn connect_middleware<A: Adapter>(
    router: Arc<OnceLock<Router>>,
    sockets: Sockets,
    limits: Limits,
    requests: Requests,
) -> impl Fn(SocketRef<A>) -> std::future::Ready<Result<(), Infallible>> + Clone + Send + Sync + 'static
{
    move |socket: SocketRef<A>| {
        on_connect(
            socket,
            router.clone(),
            sockets.clone(),
            limits,
            requests.clone(),
        );
        std::future::ready(Ok(()))
    }
}

/// The connect handler: everything is set up by [`connect_middleware`].
async fn connected<A: Adapter>(_: SocketRef<A>) {}

/// What a socket's request handler needs, shared by all its requests.
struct Bridge {
    hs: bridge::Handshake,
    router: Arc<OnceLock<Router>>,
    sockets: Sockets,
    /// One permit per request in flight on this socket.
    in_flight: tokio::sync::Semaphore,
    timeout: Duration,
    /// The node's requests: counted, and refused once it shuts down.
    requests: Requests,
    /// True once the socket has been given back what it had (see
    /// [`resume`]): its requests wait until then.
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Bridge {
    /// Answers a virtual request: 429 when the socket has too many in
    /// flight; 504 when it runs past the time limit, in which case the
    /// request still runs to its end (a write that commits publishes)
    /// before its place is freed, and its own answer is dropped.
    async fn answer(&self, verb: &str, payload: Value, send: impl FnOnce(bridge::Reply)) {
        if self.requests.is_closing() {
            return send(bridge::Reply::Jwr(bridge::Jwr::plain(
                503,
                "Service Unavailable",
            )));
        }
        let _counted = self.requests.enter();
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return send(bridge::Reply::Jwr(bridge::Jwr::plain(
                429,
                "Too Many Requests",
            )));
        };
        if !*self.ready.borrow() {
            // Its messages first, then its answers (a resume takes
            // milliseconds; a reader that does not take its replay is given
            // up on, and this waits no longer than a request may take).
            let mut ready = self.ready.clone();
            let _ = tokio::time::timeout(self.timeout, ready.wait_for(|r| *r)).await;
        }
        let mut request = std::pin::pin!(bridge::dispatch(
            verb,
            &self.hs,
            payload,
            &self.router,
            &self.sockets
        ));
        match tokio::time::timeout(self.timeout, &mut request).await {
            Ok(reply) => send(reply),
            Err(_) => {
                tracing::info!(sid = %self.hs.sid, verb, "virtual request timed out; answered 504");
                send(bridge::Reply::Jwr(bridge::Jwr::plain(
                    504,
                    "Gateway Timeout",
                )));
                let _ = request.await;
            }
        }
    }
}

fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    router: Arc<OnceLock<Router>>,
    sockets: Sockets,
    limits: Limits,
    requests: Requests,
) {
    let parts = socket.req_parts();
    let sid: Arc<str> = Arc::from(socket.id.to_string());
    let hs = bridge::Handshake {
        sid: sid.clone(),
        sdk: bridge::check_sdk(&parts.headers, parts.uri.query()),
        cookies: jar::Jar::from_header(parts.headers.get(header::COOKIE)),
        origin: parts.headers.get(header::ORIGIN).cloned(),
        request: Arc::new(ConnectRequest {
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
        }),
        principal: sockets.principal_slot(socket.id),
    };
    // Every socket sits in a room named after its id: that is how a socket
    // on another node is addressed (join by id, sender exclusion).
    socket.join(sid.to_string());
    tracing::info!(sid = %sid, "socket connected");
    // What the disconnect handler updates: the room counts, the stalled
    // count, the parked sockets.
    let on_gone = sockets.clone();
    let claim = sockets
        .replays()
        .then(|| resume::Claim::of(hs.cookies.get(RESUME_COOKIE).as_deref(), parts.uri.query()))
        .flatten();
    let (ready_tx, ready) = tokio::sync::watch::channel(claim.is_none());
    // One handler for every event: the seven verbs are told apart by name,
    // so a socket carries one boxed closure instead of seven.
    let ctx = Arc::new(Bridge {
        hs,
        router,
        sockets,
        in_flight: tokio::sync::Semaphore::new(limits.in_flight),
        timeout: limits.timeout,
        requests,
        ready,
    });
    // Nothing published before it connected was for it (lowered when it
    // is given back what another socket had).
    let floor = Arc::new(std::sync::atomic::AtomicU64::new(now_us()));
    if let Some(claim) = claim.clone() {
        let (ctx, floor) = (ctx.clone(), floor.clone());
        let id = socket.id;
        let joining = socket.clone();
        tokio::spawn(async move {
            // Set up before socketioxide adds it to the namespace (see
            // `connect_middleware`); its replay is sent once it is in.
            for _ in 0..1_000 {
                if joining.connected() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let identify = async {
                if let Some(router) = ctx.router.get() {
                    bridge::identify_again(&ctx.hs, router, &ctx.sockets).await;
                }
            };
            let slot = ctx.hs.principal.clone();
            ctx.sockets.resume(id, claim, identify, slot, &floor).await;
            let _ = ready_tx.send(true);
        });
    }
    if let Some(c) = &claim {
        let resumable = resume::Resumable {
            key: c.key.clone(),
            floor: floor.clone(),
            slot: ctx.hs.principal.clone(),
        };
        ctx.sockets.resumable(socket.id, resumable);
    }
    let parked_as = claim.map(|c| (c.key, ctx.hs.principal.clone(), floor));
    let weak = Arc::downgrade(&ctx);
    on_gone.on_reidentify(
        socket.id,
        Arc::new(move || {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(ctx) = weak.upgrade()
                    && let Some(router) = ctx.router.get()
                {
                    bridge::identify_again(&ctx.hs, router, &ctx.sockets).await;
                }
            })
        }),
    );
    socket.on_fallback(
        move |s: SocketRef<A>,
              Event(event): Event,
              TryData(payload): TryData<Value>,
              ack: AckSender<A>,
              AckRequested(wants_ack): AckRequested| {
            let ctx = ctx.clone();
            async move {
                // Other events are the app's business, as in Sails.
                let Some(verb) = bridge::VERBS.iter().find(|v| **v == event) else {
                    return;
                };
                let send = |reply: bridge::Reply| {
                    let sent = match (&reply, wants_ack) {
                        (bridge::Reply::Jwr(jwr), true) => ack.send(jwr),
                        (bridge::Reply::ParseError(err), true) => ack.send(err),
                        (bridge::Reply::ParseError(err), false) => {
                            s.emit("sails:parseError", err)
                        }
                        (bridge::Reply::Jwr(_), false) => Ok(()),
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "could not answer a virtual request (socket gone?)");
                    }
                };
                match payload {
                    Ok(p) => ctx.answer(verb, p, send).await,
                    Err(e) => send(bridge::Reply::ParseError(bridge::parse_error(format!(
                        "The request could not be decoded: {e}"
                    )))),
                }
            }
        },
    );
    socket.on_disconnect(move |s: SocketRef<A>, reason: DisconnectReason| {
        let sockets = on_gone.clone();
        if let Some((key, principal, floor)) = &parked_as {
            let floor = floor.load(std::sync::atomic::Ordering::Acquire);
            park(&sockets, &s, reason, key, (principal.get(), floor), limits);
        }
        async move {
            sockets.forget(&s.id.to_string());
            let cut = sockets.was_cut(s.id);
            if reason == DisconnectReason::HeartbeatTimeout || cut {
                // Its outgoing queue was full at a heartbeat, or it stopped
                // answering pings: either way it was not reading.
                let n = sockets.note_stalled();
                tracing::warn!(sid = %s.id, stalled_disconnects = n, "socket disconnected: it stopped reading (queue full or no pong)");
            } else {
                tracing::info!(sid = %s.id, ?reason, "socket disconnected");
            }
        }
    });
}

/// Remembers a socket that dropped, to give back to its client (see
/// [`resume`]); forgets one its client closed. One the server closed (a
/// node shutting down) is left as its last snapshot says: in a cluster,
/// the other nodes give it back once this node is gone.
fn park<A: Adapter>(
    sockets: &Sockets,
    s: &SocketRef<A>,
    reason: DisconnectReason,
    key: &str,
    (principal, floor): (topsail_core::Principal, u64),
    limits: Limits,
) {
    let doubt = match reason {
        DisconnectReason::HeartbeatTimeout => limits.timeout_doubt,
        DisconnectReason::TransportClose
        | DisconnectReason::TransportError
        | DisconnectReason::MultipleHttpPollingError
        | DisconnectReason::PacketParsingError => limits.close_doubt,
        DisconnectReason::ClientNSDisconnect => return sockets.left(s.id, key, None),
        DisconnectReason::ServerNSDisconnect | DisconnectReason::ClosingServer => {
            return sockets.forget_resumable(s.id);
        }
    };
    let own = s.id.to_string();
    let rooms = s.rooms().into_iter().map(|r| r.to_string()).collect();
    let rooms = resume::rooms_to_give_back(&own, sockets.backend.with_noted(rooms));
    let doubt = u64::try_from(doubt.as_micros()).unwrap_or(u64::MAX);
    // A socket cut because it stopped reading may have left unread what
    // was sent to it long before the cut: from the doubt before the first
    // message it was known to miss.
    let broke_at = sockets.cut_missed_from(s.id).unwrap_or(u64::MAX);
    let since = now_us().min(broke_at).saturating_sub(doubt);
    let parked = resume::Parked::new(Arc::from(own), rooms, since, floor, principal);
    sockets.left(s.id, key, Some(parked));
}

/// A new resume key: 128 random bits, hex.
fn new_resume_key() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `Set-Cookie` of a new resume key (no `Max-Age`: a browser keeps it
/// for its session, which is longer than any replay window).
fn resume_cookie(key: &str) -> Option<axum::http::HeaderValue> {
    format!("{RESUME_COOKIE}={key}; Path=/; HttpOnly; SameSite=Lax")
        .parse()
        .ok()
}

/// `GET /__getcookie`: lets a cross-origin page connect with the
/// stock client, which loads it as a script before it connects.
async fn get_cookie(headers: HeaderMap) -> Response {
    let mut res = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/javascript")],
        "_sailsIoJSConnect();",
    )
        .into_response();
    let jar = jar::Jar::from_header(headers.get(header::COOKIE));
    if jar.get("sails.sid").is_none() {
        // An opaque per-browser id; topsail keeps no session behind it.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let cookie = format!("sails.sid={:016x}; Path=/; HttpOnly", h.finish());
        if let Ok(v) = cookie.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    // The key a reconnecting socket is taken back by (see `resume`).
    let has_key = jar.get(RESUME_COOKIE).is_some();
    if !has_key && let Some(v) = new_resume_key().as_deref().and_then(resume_cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Where [`Realtime::serve`] serves the opt-in client of exactly-once
/// resume (see `resume`): a page includes it after `sails.io.js`.
pub const RESUME_SCRIPT_PATH: &str = "/__topsail/resume.js";

/// The opt-in client, as served at [`RESUME_SCRIPT_PATH`] (also usable
/// from Node: it exports its function).
pub const RESUME_SCRIPT: &str = include_str!("../assets/topsail-resume.js");

async fn resume_script() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        RESUME_SCRIPT,
    )
        .into_response()
}

/// The socket server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealtimeError {
    /// Redis could not be reached, or the URL is wrong.
    #[error("cannot use Redis for the socket cluster")]
    Redis(#[source] redis::RedisError),
    /// The socket server's namespace could not be set up on the cluster.
    #[error("cannot set up the socket namespace on the cluster")]
    Namespace(#[source] sockets::AdapterFailure),
}

/// A socket.io server wired to a topsail app.
#[derive(Clone)]
pub struct Realtime {
    sockets: Sockets,
    publisher: SocketPublisher,
    router: Arc<OnceLock<Router>>,
    layer: Arc<dyn Fn(Router) -> Router + Send + Sync>,
    close: Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
    requests: Requests,
    handshakes: Arc<handshake::Policy>,
    /// What [`Realtime::read_back`] reads, until it does.
    read_back: Arc<std::sync::Mutex<Option<ReadBack>>>,
}

/// What earlier processes left for a starting one.
enum ReadBack {
    /// A cluster node: the cluster's stream.
    Cluster(Box<cluster::Joining>),
    /// A single process: what its predecessors journaled.
    Journal(Box<resume::journal::Found>),
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("serving", &self.router.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Realtime {
    fn assemble<A: Adapter>(
        io: SocketIo<A>,
        layer: socketioxide::layer::SocketIoLayer<A>,
        router: Arc<OnceLock<Router>>,
        sockets: Sockets,
        requests: Requests,
        config: &RealtimeConfig,
    ) -> Self {
        let publisher = sockets.publisher();
        Realtime {
            handshakes: Arc::new(
                handshake::Policy::new(&config.allowed_origins, config.before_connect.clone())
                    .minting_resume_keys(config.replay.enabled),
            ),
            requests,
            sockets,
            publisher,
            router,
            layer: Arc::new(move |r: Router| r.layer(layer.clone())),
            close: Arc::new(move || {
                let io = io.clone();
                Box::pin(async move { io.close().await })
            }),
            read_back: Arc::default(),
        }
    }

    /// Disconnects every socket of this node (at shutdown): clients see a
    /// clean disconnect, not a dropped connection.
    pub async fn close(&self) {
        (self.close)().await;
    }

    /// The virtual requests in flight on this node. After
    /// [`Inflight::close`](topsail_core::Inflight::close) every new one is
    /// answered 503 at once (a client retries on another node), while
    /// those in flight run to their end.
    pub fn requests(&self) -> &topsail_core::Inflight {
        &self.requests
    }

    /// A single-process socket server (the in-memory adapter).
    pub fn local(config: &RealtimeConfig) -> Self {
        let (layer, io) = configure(SocketIo::builder(), config).build_layer();
        let (router, requests, mut sockets) = shared_parts(&io, config);
        let mut journaled = None;
        if let Some(path) = config.replay.restart_file.as_deref() {
            sockets = sockets.keep_across_restarts(path);
            if sockets.replays() {
                let dir = resume::journal::dir_of(path);
                let (journal, found) = resume::journal::Journal::open(&dir, &config.replay);
                if let Some(journal) = journal {
                    sockets = sockets.journal_to(journal);
                }
                journaled = Some(found);
            }
        }
        io.ns(
            "/",
            connected.with(connect_middleware(
                router.clone(),
                sockets.clone(),
                limits(config),
                requests.clone(),
            )),
        );
        if sockets.replays() {
            sockets.snapshot_periodically();
        }
        let realtime = Self::assemble(io, layer, router, sockets, requests, config);
        if let Some(found) = journaled {
            *realtime.read_back.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(ReadBack::Journal(Box::new(found)));
        }
        realtime
    }

    /// A socket server that is one node of a cluster sharing `redis_url`
    /// (`redis://127.0.0.1:6379/`): broadcasts, pub-sub, sender exclusion,
    /// room changes by socket id and room-to-room moves reach every node.
    /// It takes the other nodes' messages once [`Realtime::read_back`]
    /// ran, to be called after the read rules are set
    /// ([`Sockets::guard_with`]); `topsail::Builder::build` does both.
    pub async fn redis(redis_url: &str, config: &RealtimeConfig) -> Result<Self, RealtimeError> {
        use socketioxide_redis::{CustomRedisAdapter, RedisAdapterCtr};
        let client =
            redis::Client::open(cluster::resp3_url(redis_url)).map_err(RealtimeError::Redis)?;
        let driver = cluster::ResilientDriver::connect(client.clone())
            .await
            .map_err(RealtimeError::Redis)?;
        let relay = driver.clone();
        let keys = cluster::Keys::new(&config.redis_prefix);
        let channels =
            socketioxide_redis::RedisAdapterConfig::new().with_prefix(keys.adapter_channels());
        let ctr = RedisAdapterCtr::new_with_driver(driver, channels);
        let (layer, io) = configure(
            SocketIo::builder()
                .with_adapter::<CustomRedisAdapter<_, cluster::ResilientDriver>>(ctr),
            config,
        )
        .build_layer();
        let (router, requests, sockets) = shared_parts(&io, config);
        let bounds = cluster::StreamBounds::of(&config.replay);
        let node = sockets.node.clone();
        let sockets = sockets.with_relay(
            Arc::new(cluster::RedisRelay {
                driver: relay.clone(),
                stream: keys.effects(),
                node: node.clone(),
                bounds,
                trimmed_at: Default::default(),
            }),
            Arc::new(cluster::RedisParking {
                driver: relay.clone(),
                keys: keys.clone(),
                close_doubt: config.replay.close_doubt,
            }),
        );
        io.ns(
            "/",
            connected.with(connect_middleware(
                router.clone(),
                sockets.clone(),
                limits(config),
                requests.clone(),
            )),
        )
        .await
        .map_err(|e| RealtimeError::Namespace(sockets::AdapterFailure::capture(&e)))?;
        sockets.snapshot_periodically();
        let realtime = Self::assemble(io, layer, router, sockets, requests, config);
        *realtime.read_back.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(ReadBack::Cluster(Box::new(cluster::Joining {
                driver: relay,
                client,
                bounds,
                node,
                keys,
            })));
        // A node built by hand that never reads back never hears the other
        // nodes either: say so rather than fail silently.
        let pending = Arc::downgrade(&realtime.read_back);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            if let Some(pending) = pending.upgrade()
                && pending.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            {
                tracing::error!(
                    "Realtime::read_back was not called: this node takes no messages from the other nodes"
                );
            }
        });
        Ok(realtime)
    }

    /// Reads back into the replay log, before serving (nothing is
    /// delivered), what earlier processes left: a cluster node the
    /// cluster's stream, after which it takes the other nodes' messages; a
    /// single process with a restart file what its predecessors journaled
    /// (the last one's whole window, after a deploy or a crash). Call it
    /// once, after the
    /// read rules are set ([`Sockets::guard_with`]): messages of a model
    /// with a read rule are read back with their guards. Does nothing the
    /// second time.
    pub async fn read_back(&self) -> Result<(), RealtimeError> {
        let found = self
            .read_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match found {
            None => Ok(()),
            Some(ReadBack::Journal(found)) => {
                let started = std::time::Instant::now();
                let read = self.sockets.read_journal(*found);
                if read > 0 {
                    tracing::info!(
                        entries = read,
                        took = ?started.elapsed(),
                        "read back the replay log the previous process journaled"
                    );
                }
                Ok(())
            }
            Some(ReadBack::Cluster(joining)) => self.join_cluster(*joining).await,
        }
    }

    /// Closes this process's replay journal (beside its restart file):
    /// syncs it to disk and lets go of it, for the next process to read
    /// back (see [`Realtime::read_back`]); nothing without a restart file
    /// or in a cluster (the stream keeps the log). Call it last at a
    /// graceful shutdown, once nothing more is published
    /// (`topsail::Topsail::shutdown` does): what is published after it is
    /// not journaled, and is said so in the log. A process that crashes
    /// without it loses nothing it delivered: each entry is journaled
    /// before it is sent.
    pub fn close_journal(&self) {
        if let Some(journal) = &self.sockets.journal {
            journal.close();
        }
    }

    async fn join_cluster(&self, joining: cluster::Joining) -> Result<(), RealtimeError> {
        let cluster::Joining {
            driver,
            client,
            bounds,
            node,
            keys,
        } = joining;
        let publisher = self.publisher();
        let started = std::time::Instant::now();
        let (last, recalled) = cluster::recall(&driver, (bounds, &keys), &node, &publisher)
            .await
            .map_err(RealtimeError::Redis)?;
        // The log holds what the cluster published since the first entry
        // read back, although this node started after it.
        if let Some(first) = self.sockets.log.first_seq() {
            self.sockets.log.known_after(first.saturating_sub(1));
        }
        tracing::info!(
            entries = recalled,
            took = ?started.elapsed(),
            "read the cluster's replay window back from Redis"
        );
        cluster::spawn_reader((client, &keys), node, last, publisher);
        Ok(())
    }

    /// The sockets API.
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// The publisher to give the engine.
    pub fn publisher(&self) -> SocketPublisher {
        self.publisher.clone()
    }

    /// Serves `routes` over HTTP and over sockets: virtual requests are
    /// dispatched through `routes` (plus `GET /__getcookie`), and the
    /// returned router also answers the socket.io handshake at
    /// `/socket.io/`. Call it once, with the app's whole router.
    pub fn serve(&self, routes: Router) -> Router {
        let routes = Router::new()
            .route("/__getcookie", axum::routing::get(get_cookie))
            .route(RESUME_SCRIPT_PATH, axum::routing::get(resume_script))
            .merge(routes);
        if self.router.set(routes.clone()).is_err() {
            tracing::warn!(
                "Realtime::serve called twice; socket requests keep going to the first router"
            );
        }
        (self.layer)(routes).layer(axum::middleware::from_fn_with_state(
            self.handshakes.clone(),
            handshake::guard,
        ))
    }
}
