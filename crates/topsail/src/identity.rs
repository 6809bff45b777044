/*!
Identity: one app-supplied, async way to say who is asking, run for every
request, HTTP or socket, as a layer on the routes given to
[`Topsail::serve`](crate::Topsail::serve).

The app implements [`Identify`] over the request parts: a cookie session
(tower-sessions' `Session` is in the extensions when its layer runs
first), an `Authorization` header, or for a socket its handshake
(`SocketRequest::handshake`). The [`Principal`] it returns goes into the
request extensions, where the [`Actor`] and [`Principal`] extractors find
it, so policies, read rules and handlers all see the same one.

For a socket, the principal is also kept between requests: the delivery of
messages under read rules reads it per recipient. When it changes (a
sign-in or sign-out over the socket, a session that expired), the socket
leaves the rooms of every model with a read rule that it joined under the
old principal. A socket's identity is found again after an answer that set
a cookie on it, and on [`Topsail::reidentify`](crate::Topsail::reidentify)
(a sign-out or role change made over another connection).
*/

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use topsail_core::access::{IdentifyOnly, Principal, PrincipalSlot};
use topsail_core::pubsub::{Actor, Effect, Publisher};

/// Finds who is asking, from the parts of a request.
///
/// ```
/// use axum::http::request::Parts;
/// use topsail::{Identify, Principal};
///
/// /// A bearer token naming an account (a real app checks a signature).
/// struct Bearer;
///
/// #[topsail::async_trait]
/// impl Identify for Bearer {
///     async fn identify(&self, parts: &mut Parts) -> Principal {
///         let token = parts
///             .headers
///             .get("authorization")
///             .and_then(|v| v.to_str().ok())
///             .and_then(|v| v.strip_prefix("Bearer "));
///         match token.and_then(|t| t.parse::<i64>().ok()) {
///             Some(account) => Principal::new(account),
///             None => Principal::anonymous(),
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Identify: Send + Sync + 'static {
    /// The principal of the request `parts` belong to; anonymous when
    /// nobody is signed in. Runs once per request, so keep it to one
    /// lookup (a session read, a signature check).
    async fn identify(&self, parts: &mut Parts) -> Principal;
}

/// The identity layer (see the [module](self)); made by
/// [`Topsail::identity`](crate::Topsail::identity).
#[derive(Clone)]
pub struct IdentityLayer {
    identify: Arc<dyn Identify>,
    publisher: Arc<dyn Publisher>,
}

impl std::fmt::Debug for IdentityLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityLayer").finish_non_exhaustive()
    }
}

impl IdentityLayer {
    pub(crate) fn new(identify: Arc<dyn Identify>, publisher: Arc<dyn Publisher>) -> Self {
        IdentityLayer {
            identify,
            publisher,
        }
    }

    /// Identifies the request, remembers a socket's principal, and says
    /// whether the request only asked to be identified.
    async fn identify(&self, parts: &mut Parts) -> bool {
        let principal = self.identify.identify(parts).await;
        if let Some(slot) = parts.extensions.get::<PrincipalSlot>()
            && slot.set(principal.clone())
            && let Some(socket) = parts.extensions.get::<Actor>().and_then(Actor::socket_id)
        {
            tracing::debug!(sid = %socket, "a socket's principal changed; it leaves the guarded rooms");
            // Through the publisher, so it comes after what the socket
            // joined before and before what this request joins.
            let forget = Effect::Forget {
                socket: socket.clone(),
            };
            self.publisher.publish(vec![forget]).await;
        }
        parts.extensions.insert(principal);
        parts.extensions.get::<IdentifyOnly>().is_some()
    }
}

impl<S> tower::Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`IdentityLayer`].
#[derive(Clone, Debug)]
pub struct IdentityService<S> {
    inner: S,
    layer: IdentityLayer,
}

impl<S> tower::Service<Request> for IdentityService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if layer.identify(&mut parts).await {
                return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
            }
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}
