/*!
Sails' `req.isSocket` / `req.socket` for app routes: `Option<SocketRequest>`
is `Some` only for virtual requests from a socket.
*/

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use topsail_core::Actor;

use crate::sockets::{Sockets, SocketsError};

/// Put in the request extensions by the bridge.
#[derive(Clone, Debug)]
pub(crate) struct SocketContext {
    pub(crate) id: Arc<str>,
    pub(crate) sockets: Sockets,
    pub(crate) handshake: Arc<crate::ConnectRequest>,
    pub(crate) principal: topsail_core::PrincipalSlot,
}

/// The socket a request came from.
///
/// ```
/// use topsail_socket::SocketRequest;
///
/// async fn join_lobby(socket: Option<SocketRequest>) -> &'static str {
///     match socket {
///         Some(s) if s.join("lobby").await.is_ok() => "joined",
///         Some(_) => "could not join",
///         None => "only sockets can join",
///     }
/// }
/// # let _: axum::Router = axum::Router::new().route("/lobby", axum::routing::post(join_lobby));
/// ```
#[derive(Clone, Debug)]
pub struct SocketRequest {
    ctx: SocketContext,
}

impl SocketRequest {
    /// The socket id.
    pub fn id(&self) -> &str {
        &self.ctx.id
    }

    /// The actor to pass to engine calls made for this socket, with the
    /// principal it was last identified as.
    pub fn actor(&self) -> Actor {
        Actor::Socket(self.ctx.id.clone(), self.ctx.principal.get())
    }

    /// The sockets API.
    pub fn sockets(&self) -> &Sockets {
        &self.ctx.sockets
    }

    /// The socket's handshake: the headers and the URI (with its query)
    /// it connected with (Sails' `req.socket.handshake`). A browser cannot
    /// set headers on a websocket, so a page passes a token in the query:
    /// `io.sails.query = 'token=...'`.
    pub fn handshake(&self) -> &crate::ConnectRequest {
        &self.ctx.handshake
    }

    /// This socket joins `room`.
    pub async fn join(&self, room: impl Into<String>) -> Result<(), SocketsError> {
        self.ctx.sockets.join(&self.ctx.id, room).await
    }

    /// This socket leaves `room`.
    pub async fn leave(&self, room: impl Into<String>) -> Result<(), SocketsError> {
        self.ctx.sockets.leave(&self.ctx.id, room).await
    }
}

/// Rejection of [`SocketRequest`] for a request that did not come from a
/// socket: 400 `This route only answers socket requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotASocketRequest;

impl NotASocketRequest {
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// The body it is answered with.
    pub fn body_text(&self) -> &'static str {
        "This route only answers socket requests"
    }
}

impl std::fmt::Display for NotASocketRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for NotASocketRequest {}

impl IntoResponse for NotASocketRequest {
    fn into_response(self) -> Response {
        (self.status(), self.body_text()).into_response()
    }
}

impl SocketRequest {
    /// The socket a request came from, read from its parts (in an
    /// `Identify`, a policy, or any code that holds the parts).
    pub fn from_parts(parts: &Parts) -> Option<Self> {
        parts
            .extensions
            .get::<SocketContext>()
            .cloned()
            .map(|ctx| SocketRequest { ctx })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SocketRequest {
    type Rejection = NotASocketRequest;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SocketContext>()
            .cloned()
            .map(|ctx| SocketRequest { ctx })
            .ok_or(NotASocketRequest)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for SocketRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<SocketContext>()
            .cloned()
            .map(|ctx| SocketRequest { ctx }))
    }
}
