/*!
Scale-out through Redis: the engine's effects travel between processes
through a stream of their own (see `crate::relay` and [`Keys::effects`]);
socketioxide-redis carries what app code does through the sockets API
(room changes by socket id, socket queries).

The stock driver of socketioxide-redis holds one multiplexed connection that
stays broken after Redis goes away. [`ResilientDriver`] is the same driver on
redis-rs' `ConnectionManager`, which reconnects with backoff and subscribes
again to every channel, so a node survives a Redis outage (delivering to its
own sockets meanwhile, see `Sockets`) and rejoins the cluster when Redis
returns.
*/

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A socketioxide-redis driver that survives Redis restarts.
#[derive(Clone)]
pub(crate) struct ResilientDriver {
    conn: ConnectionManager,
    handlers: Handlers,
}

/// A Redis error, as the adapter needs it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct RedisError(#[from] redis::RedisError);

fn route(msg: PushInfo, handlers: &Handlers) {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut it = msg.data.into_iter();
    let (Some(chan), Some(payload)) = (it.next(), it.next()) else {
        return;
    };
    let (Ok(chan), Ok(payload)) = (
        String::from_redis_value(chan),
        Vec::<u8>::from_redis_value(payload),
    ) else {
        tracing::warn!("unreadable message from redis");
        return;
    };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = handlers.get(&chan)
        && let Err(e) = tx.try_send((chan, payload))
    {
        tracing::warn!(error = %e, "redis pub/sub channel full");
    }
}

impl ResilientDriver {
    /// Connects; fails when Redis cannot be reached at start.
    pub(crate) async fn connect(client: redis::Client) -> Result<Self, redis::RedisError> {
        let handlers: Handlers = Arc::new(RwLock::new(HashMap::new()));
        let h = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |msg: PushInfo| {
                route(msg, &h);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            // Fail fast; the sockets layer decides when to try again.
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        // The manager reconnects (and resubscribes) when a command fails; a
        // node that only listens sends none, so a heartbeat makes it notice
        // a restarted Redis.
        let mut beat = conn.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut down = false;
            loop {
                tick.tick().await;
                match redis::cmd("PING").query_async::<String>(&mut beat).await {
                    Ok(_) if down => {
                        tracing::info!("redis is back; the node rejoins the cluster");
                        down = false;
                    }
                    Ok(_) => {}
                    Err(e) if !down => {
                        tracing::error!(error = %e, "redis is unreachable; this node delivers to its own sockets only");
                        down = true;
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(ResilientDriver { conn, handlers })
    }
}

impl Driver for ResilientDriver {
    type Error = RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.conn
            .clone()
            .publish::<_, _, redis::Value>(chan, val)
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        self.conn.clone().subscribe(chan.as_str()).await?;
        let (tx, rx) = mpsc::channel(size);
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan, tx);
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chan);
        self.conn.clone().unsubscribe(chan).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}

/// socketioxide-redis speaks RESP3: add `protocol=resp3` when the URL has
/// no protocol.
pub(crate) fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// The names of one cluster's keys in Redis, all under its prefix
/// ([`RealtimeConfig::redis_prefix`](crate::RealtimeConfig::redis_prefix)),
/// so two apps can share a Redis database without hearing each other.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

/// The prefix of a cluster's keys unless configured.
pub const DEFAULT_REDIS_PREFIX: &str = "topsail";

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The Redis stream the engine's effects travel through between
    /// nodes (`<prefix>:effects`): an entry per batch (one action), with
    /// the node that wrote it (`o`) and the batch (`d`, see
    /// `crate::relay::Relayed`). Every node reads all of it; it keeps the
    /// replay window, so a node that starts reads the window back into its
    /// log ([`recall`]).
    pub(crate) fn effects(&self) -> String {
        format!("{}:effects", self.prefix)
    }

    /// The parked sockets of a resume key (see [`RedisParking`]).
    fn parked(&self, key: &str) -> String {
        format!("{}:parked:{key}", self.prefix)
    }

    /// Where a node says it is alive: the time of its last snapshot, in ms.
    fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The prefix of socketioxide-redis's channels (room changes and the
    /// sockets API between nodes). With the default prefix it keeps the
    /// adapter's own default, `socket.io`, so nodes of an earlier release
    /// still hear the new ones during a rolling upgrade.
    pub(crate) fn adapter_channels(&self) -> String {
        if &*self.prefix == DEFAULT_REDIS_PREFIX {
            "socket.io".to_owned()
        } else {
            format!("{}:socket.io", self.prefix)
        }
    }
}

/// How the stream is bounded: entries older than the replay window go
/// (trimmed at most once a second), and it never holds more than `max_len`
/// entries (Redis trims whole blocks of entries, so about that many).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamBounds {
    pub(crate) window: Duration,
    pub(crate) max_len: usize,
}

impl StreamBounds {
    pub(crate) fn of(replay: &crate::ReplayConfig) -> Self {
        StreamBounds {
            // Without a replay log the stream only bridges a reader's
            // reconnect.
            window: if replay.enabled {
                replay.window
            } else {
                Duration::from_secs(10)
            },
            max_len: if replay.enabled {
                replay.max_messages.max(1_000)
            } else {
                10_000
            },
        }
    }

    /// The id from which entries are within the window.
    fn window_start(&self) -> u64 {
        crate::backend::now_ms().saturating_sub(self.window.as_millis() as u64)
    }
}

/// Relays the engine's effects through the effects stream
/// ([`Keys::effects`], see `crate::relay`).
pub(crate) struct RedisRelay {
    pub(crate) driver: ResilientDriver,
    /// The stream's name, written once.
    pub(crate) stream: String,
    pub(crate) node: Arc<str>,
    pub(crate) bounds: StreamBounds,
    /// When the stream was last trimmed to the window, in ms.
    pub(crate) trimmed_at: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl crate::backend::Relay for RedisRelay {
    async fn send(&self, batches: &[Vec<u8>]) -> Result<(), crate::error::SocketsError> {
        use std::sync::atomic::Ordering;
        let mut pipe = redis::pipe();
        for bytes in batches {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.bounds.max_len)
                .arg("*")
                .arg("o")
                .arg(&*self.node)
                .arg("d")
                .arg(bytes.as_slice())
                .ignore();
        }
        let now = crate::backend::now_ms();
        if now.saturating_sub(self.trimmed_at.load(Ordering::Relaxed)) >= 1_000 {
            self.trimmed_at.store(now, Ordering::Relaxed);
            pipe.cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg("~")
                .arg(self.bounds.window_start())
                .ignore();
        }
        let mut conn = self.driver.conn.clone();
        let sent =
            tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(&mut conn)).await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(crate::error::SocketsError::Adapter(
                crate::error::AdapterFailure::capture(&e),
            )),
            Err(_) => Err(crate::error::SocketsError::ClusterTimeout),
        }
    }
}

/// What a node needs to join the cluster's stream (see
/// `Realtime::join_cluster`).
pub(crate) struct Joining {
    pub(crate) driver: ResilientDriver,
    pub(crate) client: redis::Client,
    pub(crate) bounds: StreamBounds,
    pub(crate) node: Arc<str>,
    pub(crate) keys: Keys,
}

/// The most entries asked of Redis at once, reading the stream.
const READ_AT_ONCE: usize = 512;

/// How long one read of the stream waits for a new entry (then it asks
/// again: a dead link shows within this and the response deadline).
const READ_BLOCK: Duration = Duration::from_secs(2);

/// An entry of the stream: its id, and its batch unless this node wrote it.
fn entry(found: redis::streams::StreamId, node: &str) -> (String, Option<Vec<u8>>) {
    let own = found.get::<String>("o").is_some_and(|o| o == node);
    let batch = if own { None } else { found.get::<Vec<u8>>("d") };
    (found.id, batch)
}

/// Reads the replay window of the effects stream into this node's log, as
/// relayed batches on the publisher task (before any socket is connected:
/// nothing is delivered), and waits until they are in. Returns the id to
/// read on from, and how many entries were read.
pub(crate) async fn recall(
    driver: &ResilientDriver,
    (bounds, keys): (StreamBounds, &Keys),
    node: &str,
    publisher: &crate::sockets::SocketPublisher,
) -> redis::RedisResult<(String, usize)> {
    let mut conn = driver.conn.clone();
    let stream = keys.effects();
    let mut from = bounds.window_start().to_string();
    // Entries after the window's start: read or, once the range is
    // empty, to be read by `spawn_reader` (it reads after this id).
    let mut last = format!("{from}-0");
    let mut count = 0;
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(READ_AT_ONCE)
            .query_async(&mut conn)
            .await?;
        let got = page.ids.len();
        for found in page.ids {
            let (id, batch) = entry(found, node);
            if let Some(bytes) = batch {
                publisher
                    .relayed(bytes, crate::relay::Arrival::Recalled)
                    .await;
            }
            from = format!("({id}");
            last = id;
            count += 1;
        }
        if got < READ_AT_ONCE {
            break;
        }
    }
    publisher.flush(Duration::from_secs(60)).await;
    Ok((last, count))
}

/// Reads the effects stream after entry `last`, for as long as the process
/// runs, and hands the other nodes' batches to the publisher task. It
/// reads on its own connection (a blocking read would hold up the others'
/// commands on a shared one); when the link fails it connects again and
/// goes on after the last entry it read, so what was written meanwhile
/// still comes.
pub(crate) fn spawn_reader(
    (client, keys): (redis::Client, &Keys),
    node: Arc<str>,
    mut last: String,
    publisher: crate::sockets::SocketPublisher,
) {
    let stream = keys.effects();
    tokio::spawn(async move {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(READ_BLOCK + Duration::from_secs(1)));
        let mut conn = None;
        let mut down = false;
        loop {
            let link = match conn.as_mut() {
                Some(link) => link,
                None => match client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(link) => conn.insert(link),
                    Err(e) => {
                        if !std::mem::replace(&mut down, true) {
                            tracing::warn!(error = %e, "cannot read the other nodes' messages; trying again");
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
            };
            let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_AT_ONCE)
                    .arg("BLOCK")
                    .arg(READ_BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&last)
                    .query_async(link)
                    .await;
            match read {
                Ok(reply) => {
                    if std::mem::replace(&mut down, false) {
                        tracing::info!("reading the other nodes' messages again");
                    }
                    for found in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        let (id, batch) = entry(found, &node);
                        if let Some(bytes) = batch {
                            publisher.relayed(bytes, crate::relay::Arrival::Live).await;
                        }
                        last = id;
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut down, true) {
                        tracing::warn!(error = %e, "cannot read the other nodes' messages; trying again");
                    }
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    });
}

/// The parked sockets of every node, in Redis: a hash per resume key
/// (`<prefix>:parked:<key>`), a field per parked socket, expiring with the
/// last one parked (see `crate::resume`).
pub(crate) struct RedisParking {
    pub(crate) driver: ResilientDriver,
    pub(crate) keys: Keys,
    /// See [`ReplayConfig::close_doubt`](crate::ReplayConfig::close_doubt).
    pub(crate) close_doubt: Duration,
}

/// What became of a node whose sockets a resume looks at.
enum NodeState {
    Alive,
    /// Gone (killed: it parked nothing), with the last time it recorded
    /// its sockets, in ms, if Redis still has it.
    Gone {
        last_seen_ms: Option<u64>,
    },
}

/// A parked socket as Redis keeps it: when another socket took it back,
/// and, for a live socket's snapshot, its node.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    parked: crate::resume::WireParked,
    taken_ms: Option<u64>,
    #[serde(default)]
    live: Option<String>,
}

/// A node that has not recorded a snapshot for this long is gone (its
/// sockets count as parked): a live node records one every
/// [`SNAPSHOT_EVERY`](crate::resume::SNAPSHOT_EVERY).
const NODE_GONE: Duration = Duration::from_millis(2500);

impl RedisParking {
    /// Whether node `node` is gone: it has not recorded a snapshot for
    /// [`NODE_GONE`]. A recent one proves nothing (the node may have died
    /// just after), so this waits, at most that long, for the next one.
    async fn node_state(
        &self,
        conn: &mut ConnectionManager,
        node: &str,
    ) -> redis::RedisResult<NodeState> {
        let first: Option<u64> = conn.get(self.keys.node(node)).await?;
        let Some(first) = first else {
            return Ok(NodeState::Gone { last_seen_ms: None });
        };
        let gone = NodeState::Gone {
            last_seen_ms: Some(first),
        };
        let gone_at = first + NODE_GONE.as_millis() as u64;
        loop {
            let now = crate::backend::now_ms();
            if now >= gone_at {
                return Ok(gone);
            }
            tokio::time::sleep(
                Duration::from_millis(200).min(Duration::from_millis(gone_at - now)),
            )
            .await;
            let beat: Option<u64> = conn.get(self.keys.node(node)).await?;
            match beat {
                Some(b) if b > first => return Ok(NodeState::Alive),
                Some(_) => {}
                None => return Ok(gone),
            }
        }
    }

    /// The record of a live socket of a node that may be gone: `None`
    /// while the node lives; else the record, replayed from its node's
    /// last snapshot less `close_doubt` (a record is rewritten only when
    /// its rooms change, so its own point may be older: the node went on
    /// delivering to the socket until it was last seen).
    async fn of_gone_node(
        &self,
        conn: &mut ConnectionManager,
        node: &str,
        mut parked: crate::resume::WireParked,
    ) -> redis::RedisResult<Option<crate::resume::WireParked>> {
        let NodeState::Gone { last_seen_ms } = self.node_state(conn, node).await? else {
            return Ok(None);
        };
        if let Some(ms) = last_seen_ms {
            let doubt = u64::try_from(self.close_doubt.as_micros()).unwrap_or(u64::MAX);
            parked.since = parked.since.max((ms * 1000).saturating_sub(doubt));
        }
        Ok(Some(parked))
    }

    async fn try_take(
        &self,
        key: &str,
        sid: Option<&str>,
    ) -> redis::RedisResult<Vec<crate::resume::WireParked>> {
        let (mut conn, hash) = (self.driver.conn.clone(), self.keys.parked(key));
        if let Some(sid) = sid {
            let found: Option<String> = conn.hget(&hash, sid).await?;
            let Some(stored) = found.and_then(|v| serde_json::from_str::<Stored>(&v).ok()) else {
                return Ok(Vec::new());
            };
            let parked = match &stored.live {
                Some(node) => match self.of_gone_node(&mut conn, node, stored.parked).await? {
                    Some(parked) => parked,
                    None => return Ok(Vec::new()),
                },
                None => stored.parked,
            };
            let _: () = conn.hdel(&hash, sid).await?;
            return Ok(vec![parked]);
        }
        let all: HashMap<String, String> = conn.hgetall(&hash).await?;
        let now = crate::backend::now_ms();
        let grace = crate::resume::SHARED_GRACE.as_millis() as u64;
        let mut out = Vec::new();
        for (field, value) in all {
            let Ok(mut stored) = serde_json::from_str::<Stored>(&value) else {
                let _: () = conn.hdel(&hash, &field).await?;
                continue;
            };
            // A live socket of a node that is alive: another tab, not this
            // one's past.
            if let Some(node) = stored.live.clone() {
                match self.of_gone_node(&mut conn, &node, stored.parked).await? {
                    Some(parked) => stored.parked = parked,
                    None => continue,
                }
            }
            match stored.taken_ms {
                Some(t) if now.saturating_sub(t) > grace => {
                    let _: () = conn.hdel(&hash, &field).await?;
                }
                Some(_) => out.push(stored.parked),
                None => {
                    stored.taken_ms = Some(now);
                    if let Ok(v) = serde_json::to_string(&stored) {
                        let _: () = conn.hset(&hash, &field, v).await?;
                    }
                    out.push(stored.parked);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl crate::resume::SharedParking for RedisParking {
    async fn park(&self, key: &str, parked: crate::resume::WireParked, remember: Duration) {
        let (mut conn, hash) = (self.driver.conn.clone(), self.keys.parked(key));
        let field = parked.sid.clone();
        let Ok(value) = serde_json::to_string(&Stored {
            parked,
            taken_ms: None,
            live: None,
        }) else {
            return;
        };
        let done: redis::RedisResult<()> = redis::pipe()
            .hset(&hash, field, value)
            .ignore()
            .expire(&hash, remember.as_secs().max(1) as i64)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not park a socket for the other nodes");
        }
    }

    async fn snapshot(
        &self,
        node: &str,
        live: Vec<(String, crate::resume::WireParked)>,
        remember: Duration,
    ) -> bool {
        let mut pipe = redis::pipe();
        pipe.set_ex(self.keys.node(node), crate::backend::now_ms(), 30)
            .ignore();
        for (key, parked) in live {
            let hash = self.keys.parked(&key);
            let field = parked.sid.clone();
            let stored = Stored {
                parked,
                taken_ms: None,
                live: Some(node.to_owned()),
            };
            let Ok(value) = serde_json::to_string(&stored) else {
                continue;
            };
            pipe.hset(&hash, field, value)
                .ignore()
                .expire(&hash, remember.as_secs().max(1) as i64)
                .ignore();
        }
        let done: redis::RedisResult<()> = pipe.query_async(&mut self.driver.conn.clone()).await;
        if let Err(e) = &done {
            tracing::debug!(error = %e, "could not record this node's sockets");
        }
        done.is_ok()
    }

    async fn forget(&self, key: &str, sid: &str) {
        let done: redis::RedisResult<()> = self
            .driver
            .conn
            .clone()
            .hdel(self.keys.parked(key), sid)
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "could not forget a socket that left");
        }
    }

    async fn take(&self, key: &str, sid: Option<&str>) -> Vec<crate::resume::WireParked> {
        match self.try_take(key, sid).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the other nodes for a parked socket");
                Vec::new()
            }
        }
    }
}
