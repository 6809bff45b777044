//! What a sockets operation answers when it fails.

/// A sockets operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketsError {
    /// The socket adapter failed (with the Redis adapter: Redis could not
    /// be reached).
    #[error(transparent)]
    Adapter(AdapterFailure),
    /// The other nodes did not answer within the cluster deadline.
    #[error("the other nodes did not answer in time")]
    ClusterTimeout,
    /// The cluster could not be reached: the message went to this node's
    /// sockets only.
    #[error("the cluster is unreachable; delivered to this node's sockets only")]
    DeliveredLocally,
    /// The data to send could not be serialized.
    #[error("the data to send could not be serialized")]
    Serialize(#[source] serde_json::Error),
}

/// An error of the socket adapter, with its causes.
///
/// socketioxide's adapter errors are `Send` but not `Sync`, and an error
/// that is not `Sync` cannot go into `Box<dyn Error + Send + Sync>` (or
/// `anyhow`) with `?`. So each cause's message is captured, in order, and
/// [`source`](std::error::Error::source) walks them as the original did.
#[derive(Debug)]
pub struct AdapterFailure {
    message: String,
    cause: Option<Box<AdapterFailure>>,
}

impl AdapterFailure {
    pub(crate) fn capture(e: &(dyn std::error::Error + 'static)) -> Self {
        AdapterFailure {
            message: e.to_string(),
            cause: e.source().map(|c| Box::new(AdapterFailure::capture(c))),
        }
    }
}

impl std::fmt::Display for AdapterFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdapterFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}
