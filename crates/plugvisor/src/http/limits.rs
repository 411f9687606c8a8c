//! Bounds on one HTTP request to a plugin.

use std::time::Duration;

use crate::invalid_config::{InvalidConfig, positive};

/// What one request under `/plugins/{id}/` may be. Build with
/// [`HttpLimits::builder`]; [`Default`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    pub(crate) max_body_bytes: u64,
    pub(crate) max_header_bytes: usize,
    pub(crate) request_timeout: Duration,
}

impl HttpLimits {
    /// Largest request body; a larger one is answered 413: 100 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 << 20;
    /// Largest sum of header names and values; more is answered 431: 64 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;
    /// Time the plugin has to send its response head; past it the client
    /// gets 504. The body may then stream for as long as it lasts: 30 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts from the defaults.
    pub fn builder() -> HttpLimitsBuilder {
        HttpLimitsBuilder(HttpLimits::default())
    }

    /// See [`HttpLimits::DEFAULT_MAX_BODY_BYTES`].
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// See [`HttpLimits::DEFAULT_MAX_HEADER_BYTES`].
    pub fn max_header_bytes(&self) -> usize {
        self.max_header_bytes
    }

    /// See [`HttpLimits::DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Builds [`HttpLimits`]; [`HttpLimitsBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct HttpLimitsBuilder(HttpLimits);

impl HttpLimitsBuilder {
    /// See [`HttpLimits::max_body_bytes`].
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.0.max_body_bytes = bytes;
        self
    }

    /// See [`HttpLimits::max_header_bytes`]; at least 1 KiB.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.0.max_header_bytes = bytes;
        self
    }

    /// See [`HttpLimits::request_timeout`]; more than zero.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.0.request_timeout = timeout;
        self
    }

    /// The limits, or the first one that cannot work.
    pub fn build(self) -> Result<HttpLimits, InvalidConfig> {
        let limits = self.0;
        positive("http-timeout", limits.request_timeout)?;
        if limits.max_header_bytes < 1024 {
            return Err(InvalidConfig::new(
                "http-max-header-bytes",
                "must be at least 1024",
            ));
        }
        Ok(limits)
    }
}
