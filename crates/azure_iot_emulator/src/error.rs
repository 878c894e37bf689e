//! Errors that stop the emulator from starting or running (as opposed to the IoT Hub errors it
//! answers clients with, which live in `http::error`).
//!
//! These reach the embedding test or the CLI, never a device or service client: a request
//! that meets one mid-flight (a storage failure, the state thread gone) is answered with a
//! 500 IoT Hub error body by the front-end instead.

/// Why the emulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// A file or socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Binding a listening port failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// Certificates or keys could not be made or loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The hub refused an operation (unknown device, full queue ...); the text says why.
    #[error("the hub refused the operation: {0}")]
    Refused(String),
    /// The hub's state owner has stopped (the emulator is shutting down).
    #[error("the emulator is shutting down")]
    ShuttingDown,
}

impl From<rusqlite::Error> for EmulatorError {
    fn from(e: rusqlite::Error) -> Self {
        EmulatorError::Storage(e.to_string())
    }
}
