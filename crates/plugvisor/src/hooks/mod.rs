//! Hooks and the host API: what a running plugin and its host say to each
//! other beyond health. Host → plugin: the lifecycle hooks. Plugin → host:
//! the host API (key-value store, log, configuration, the embedder's own
//! services), reached through go-plugin's broker.

pub(crate) mod broker;
pub(crate) mod host_api;
pub(crate) mod lifecycle;
mod timeouts;

pub use host_api::CallerPlugin;
pub use lifecycle::HookError;
pub use timeouts::{HookTimeouts, HookTimeoutsBuilder};
