//! How much a plugin may keep in its key-value namespace.

use crate::invalid_config::InvalidConfig;

/// Size limits of each plugin's key-value store. Build with
/// [`KvLimits::builder`]; [`Default`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvLimits {
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_plugin_bytes: u64,
}

impl KvLimits {
    /// Longest key: 512 bytes of UTF-8.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 512;
    /// Largest value: 1 MiB.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
    /// All of one plugin's keys and values together: 64 MiB.
    pub const DEFAULT_MAX_PLUGIN_BYTES: u64 = 64 << 20;

    /// Starts from the defaults.
    pub fn builder() -> KvLimitsBuilder {
        KvLimitsBuilder(KvLimits::default())
    }

    /// See [`KvLimits::DEFAULT_MAX_KEY_BYTES`].
    pub fn max_key_bytes(&self) -> usize {
        self.max_key_bytes
    }

    /// See [`KvLimits::DEFAULT_MAX_VALUE_BYTES`].
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// See [`KvLimits::DEFAULT_MAX_PLUGIN_BYTES`]; keys count with their values.
    pub fn max_plugin_bytes(&self) -> u64 {
        self.max_plugin_bytes
    }
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            max_plugin_bytes: Self::DEFAULT_MAX_PLUGIN_BYTES,
        }
    }
}

/// Builds [`KvLimits`]; [`KvLimitsBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct KvLimitsBuilder(KvLimits);

impl KvLimitsBuilder {
    /// See [`KvLimits::max_key_bytes`]; at least 1.
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.0.max_key_bytes = bytes;
        self
    }

    /// See [`KvLimits::max_value_bytes`]; under 16 MiB, so that a value fits
    /// in one gRPC message.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.0.max_value_bytes = bytes;
        self
    }

    /// See [`KvLimits::max_plugin_bytes`]; at least one key and value.
    pub fn max_plugin_bytes(mut self, bytes: u64) -> Self {
        self.0.max_plugin_bytes = bytes;
        self
    }

    /// The limits, or the first one that cannot work.
    pub fn build(self) -> Result<KvLimits, InvalidConfig> {
        let limits = self.0;
        if limits.max_key_bytes == 0 {
            return Err(InvalidConfig::new("kv-max-key-bytes", "must be at least 1"));
        }
        if limits.max_value_bytes >= 16 << 20 {
            return Err(InvalidConfig::new(
                "kv-max-value-bytes",
                "must be under 16 MiB (one gRPC message)",
            ));
        }
        if limits.max_plugin_bytes < (limits.max_key_bytes + limits.max_value_bytes) as u64 {
            return Err(InvalidConfig::new(
                "kv-max-plugin-bytes",
                "must hold at least one key with its largest value",
            ));
        }
        Ok(limits)
    }
}
