//! The errors of the cluster transport.

/// What went wrong on a connection, or setting one up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The socket failed (reset, refused, unreachable).
    #[error("network I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol: a bad frame, an invalid message, a frame
    /// over the limit. The connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer refused this connection and said why (a wrong secret, a
    /// different protocol version or registry fingerprint).
    #[error("refused by {peer}: {reason}")]
    Refused {
        /// Who refused.
        peer: String,
        /// The peer's reason, as it sent it.
        reason: String,
    },
    /// The peer closed the connection, or went silent for too long.
    #[error("the connection to {peer} was lost: {reason}")]
    Lost {
        /// The peer.
        peer: String,
        /// How it was noticed.
        reason: String,
    },
    /// TLS failed with this peer: a handshake, a certificate, or TLS on
    /// one side only. The reason says which and what to do.
    #[error("TLS with {peer} failed: {reason}")]
    Tls {
        /// The peer.
        peer: String,
        /// What failed, and what to do about it.
        reason: String,
    },
    /// A step did not finish in time.
    #[error("timed out after {after:?} {what}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// How long it was waited for.
        after: std::time::Duration,
    },
    /// An address, URL or option is not usable; the message says which and
    /// what to write instead.
    #[error("{0}")]
    Config(String),
    /// A received object could not be kept in shared memory (a memory
    /// file could not be made, mapped or sealed: the machine is short of
    /// memory or descriptors).
    #[error("could not keep a received object in shared memory: {0} (free memory, or raise the descriptor limit)")]
    Memory(String),
}

impl NetError {
    pub(crate) fn protocol(message: impl Into<String>) -> NetError {
        NetError::Protocol(message.into())
    }
}

/// `Result` with [`NetError`].
pub type Result<T, E = NetError> = std::result::Result<T, E>;
