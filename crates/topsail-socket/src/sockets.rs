/*!
The sockets API (Sails' `sails.sockets`, spec 5) over any socketioxide
adapter, and the [`Publisher`] that carries out the engine's pub-sub plan.

Every socket sits in a room named after its own id, so "a socket" and "a
room" are addressed the same way, and every operation works on sockets
connected to other processes too when the Redis adapter is in use.
*/

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::mpsc;
use topsail_core::pubsub::{Effect, Publisher};

/// The event name Sails uses when none is given.
pub const DEFAULT_EVENT: &str = "message";

/// A sockets operation failed (the adapter could not reach other nodes).
#[derive(Debug, thiserror::Error)]
#[error("sockets operation failed: {0}")]
pub struct SocketsError(pub String);

/// The operations topsail needs from a socket.io server, object-safe so
/// one handle serves every adapter.
#[async_trait]
trait Backend: Send + Sync + 'static {
    async fn join(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError>;
    async fn leave(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError>;
    async fn emit(
        &self,
        rooms: Vec<String>,
        except: Option<&str>,
        event: &str,
        data: &Value,
    ) -> Result<(), SocketsError>;
    async fn leave_all(&self, room: &str) -> Result<(), SocketsError>;
    async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError>;
}

struct Io<A: Adapter>(SocketIo<A>);

fn err(e: impl std::fmt::Display) -> SocketsError {
    SocketsError(e.to_string())
}

#[async_trait]
impl<A: Adapter> Backend for Io<A> {
    async fn join(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError> {
        self.0
            .within(target.to_owned())
            .join(rooms)
            .await
            .map_err(err)
    }

    async fn leave(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError> {
        self.0
            .within(target.to_owned())
            .leave(rooms)
            .await
            .map_err(err)
    }

    async fn emit(
        &self,
        rooms: Vec<String>,
        except: Option<&str>,
        event: &str,
        data: &Value,
    ) -> Result<(), SocketsError> {
        let mut op = if rooms.is_empty() {
            self.0.broadcast()
        } else {
            self.0.to(rooms.clone())
        };
        if let Some(e) = except {
            op = op.except(e.to_owned());
        }
        match op.emit(event, data).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The cluster may be unreachable: still reach this node's
                // sockets, then report the failure.
                tracing::warn!(error = %e, event, "broadcast failed; delivering to local sockets only");
                let mut local = if rooms.is_empty() {
                    self.0.local()
                } else {
                    self.0.to(rooms).local()
                };
                if let Some(e) = except {
                    local = local.except(e.to_owned());
                }
                let _ = local.emit(event, data).await;
                Err(err(e))
            }
        }
    }

    async fn leave_all(&self, room: &str) -> Result<(), SocketsError> {
        let members = self
            .0
            .within(room.to_owned())
            .fetch_sockets()
            .await
            .map_err(err)?;
        for s in members {
            let own = s.data().id.to_string();
            let rooms: Vec<String> = s
                .rooms()
                .await
                .map_err(err)?
                .into_iter()
                .map(|r| r.to_string())
                .filter(|r| *r != own)
                .collect();
            if !rooms.is_empty() {
                s.leave(rooms).await.map_err(err)?;
            }
        }
        Ok(())
    }

    async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError> {
        let found = self
            .0
            .within(socket.to_owned())
            .fetch_sockets()
            .await
            .map_err(err)?;
        let Some(s) = found.into_iter().next() else {
            return Ok(Vec::new());
        };
        Ok(s.rooms()
            .await
            .map_err(err)?
            .into_iter()
            .map(|r| r.to_string())
            .collect())
    }
}

/// The sockets API of an app: rooms and broadcasts, by socket id or room
/// name, across every process of a cluster.
#[derive(Clone)]
pub struct Sockets {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets").finish_non_exhaustive()
    }
}

fn to_value<T: Serialize + ?Sized>(data: &T) -> Result<Value, SocketsError> {
    serde_json::to_value(data).map_err(err)
}

impl Sockets {
    /// The sockets API of `io`.
    pub fn new<A: Adapter>(io: SocketIo<A>) -> Self {
        Sockets {
            backend: Arc::new(Io(io)),
        }
    }

    /// The socket `socket` (an id, local or on another node) joins `room`.
    pub async fn join(&self, socket: &str, room: impl Into<String>) -> Result<(), SocketsError> {
        self.backend.join(socket, vec![room.into()]).await
    }

    /// The socket `socket` leaves `room`.
    pub async fn leave(&self, socket: &str, room: impl Into<String>) -> Result<(), SocketsError> {
        self.backend.leave(socket, vec![room.into()]).await
    }

    /// Emits `event` (default `message`) with `data` to every socket in any
    /// of `rooms`, once each, leaving out the socket `omit`.
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        rooms: &[&str],
        event: Option<&str>,
        data: &T,
        omit: Option<&str>,
    ) -> Result<(), SocketsError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let rooms = rooms.iter().map(|r| (*r).to_owned()).collect();
        self.backend
            .emit(
                rooms,
                omit,
                event.unwrap_or(DEFAULT_EVENT),
                &to_value(data)?,
            )
            .await
    }

    /// Emits `event` (default `message`) to every connected socket but
    /// `omit`.
    pub async fn blast<T: Serialize + ?Sized>(
        &self,
        event: Option<&str>,
        data: &T,
        omit: Option<&str>,
    ) -> Result<(), SocketsError> {
        self.backend
            .emit(
                Vec::new(),
                omit,
                event.unwrap_or(DEFAULT_EVENT),
                &to_value(data)?,
            )
            .await
    }

    /// Every member of `room` leaves all its rooms (`room` included, its own
    /// id room not).
    pub async fn leave_all(&self, room: &str) -> Result<(), SocketsError> {
        self.backend.leave_all(room).await
    }

    /// Every member of `source` joins each of `dests`.
    pub async fn add_room_members_to_rooms(
        &self,
        source: &str,
        dests: &[&str],
    ) -> Result<(), SocketsError> {
        self.backend
            .join(source, dests.iter().map(|d| (*d).to_owned()).collect())
            .await
    }

    /// Every member of `source` leaves each of `dests`.
    pub async fn remove_room_members_from_rooms(
        &self,
        source: &str,
        dests: &[&str],
    ) -> Result<(), SocketsError> {
        self.backend
            .leave(source, dests.iter().map(|d| (*d).to_owned()).collect())
            .await
    }

    /// The rooms a socket is in (its own id room included), wherever it is
    /// connected.
    pub async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError> {
        self.backend.rooms_of(socket).await
    }

    async fn apply(&self, effect: Effect) -> Result<(), SocketsError> {
        match effect {
            Effect::Join { socket, rooms } => self.backend.join(&socket, rooms).await,
            Effect::Leave { socket, rooms } => self.backend.leave(&socket, rooms).await,
            Effect::AddMembers { source, dest } => self.backend.join(&source, vec![dest]).await,
            Effect::RemoveMembers { source, dest } => self.backend.leave(&source, vec![dest]).await,
            Effect::Broadcast {
                room,
                event,
                payload,
                omit,
            } => {
                self.backend
                    .emit(vec![room], omit.as_deref(), event, &payload)
                    .await
            }
        }
    }

    /// A publisher that carries out effects through these sockets, in the
    /// order they were published, without holding up the request that
    /// caused them.
    pub fn publisher(&self) -> SocketPublisher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Effect>>();
        let sockets = self.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                for effect in batch {
                    if let Err(e) = sockets.apply(effect).await {
                        tracing::error!(error = %e, "could not deliver a pub-sub effect");
                    }
                }
            }
        });
        SocketPublisher { tx }
    }
}

/// Delivers the engine's effects over socket.io (see [`Sockets::publisher`]).
#[derive(Debug, Clone)]
pub struct SocketPublisher {
    tx: mpsc::UnboundedSender<Vec<Effect>>,
}

#[async_trait]
impl Publisher for SocketPublisher {
    async fn publish(&self, effects: Vec<Effect>) {
        if self.tx.send(effects).is_err() {
            tracing::error!("the pub-sub task has stopped; effects dropped");
        }
    }
}
