//! Calling a plugin's lifecycle hooks (`plugvisor.v1.Lifecycle`), each under
//! its own timeout. A refusal is the plugin's answer; a timeout or a
//! transport failure is the host's finding.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::proto::plugvisor::v1::lifecycle_client::LifecycleClient;
use crate::proto::plugvisor::v1::{
    ImplementedRequest, OnActivateRequest, OnConfigurationChangeRequest, OnDeactivateRequest,
    Refusal,
};
use crate::transport::PluginChannel;

/// The lifecycle hooks plugvisor knows.
pub(crate) const ON_ACTIVATE: &str = "OnActivate";
pub(crate) const ON_DEACTIVATE: &str = "OnDeactivate";
pub(crate) const ON_CONFIGURATION_CHANGE: &str = "OnConfigurationChange";
pub(crate) const SERVE_HTTP: &str = "ServeHTTP";
const KNOWN_HOOKS: [&str; 4] = [
    ON_ACTIVATE,
    ON_DEACTIVATE,
    ON_CONFIGURATION_CHANGE,
    SERVE_HTTP,
];
/// go-plugin's broker, which the host API needs.
pub(crate) const BROKER_SERVICE: &str = "plugin.GRPCBroker";

/// What a plugin said it implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Implemented {
    /// Whether the plugin serves the lifecycle service at all.
    pub lifecycle: bool,
    pub hooks: BTreeSet<String>,
    pub services: BTreeSet<String>,
}

impl Implemented {
    pub(crate) fn hook(&self, name: &str) -> bool {
        self.hooks.contains(name)
    }

    pub(crate) fn service(&self, name: &str) -> bool {
        self.services.contains(name)
    }
}

/// Why a hook call did not end in the plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// No answer in time.
    #[error("{hook} did not answer within {after:?}")]
    Timeout {
        /// The hook.
        hook: &'static str,
        /// Its timeout.
        after: Duration,
    },
    /// The call failed (the plugin claims a hook it does not serve, sent
    /// garbage, or the connection broke).
    #[error("{hook} failed: {code:?}: {message}")]
    Rpc {
        /// The hook.
        hook: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

impl HookError {
    /// The hook's name.
    pub(crate) fn hook(&self) -> &'static str {
        match self {
            HookError::Timeout { hook, .. } | HookError::Rpc { hook, .. } => hook,
        }
    }

    /// A timeout, or a hook the plugin reported but does not serve (or
    /// answered with garbage): the plugin's own doing, which a restart does
    /// not change. A broken connection may be a crash, which one may.
    pub(crate) fn is_final(&self) -> bool {
        match self {
            HookError::Timeout { .. } => true,
            HookError::Rpc { code, .. } => !matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ),
        }
    }

    fn from_status(hook: &'static str, status: tonic::Status) -> HookError {
        HookError::Rpc {
            hook,
            code: status.code(),
            message: status.message().chars().take(500).collect(),
        }
    }
}

async fn within<T>(
    hook: &'static str,
    after: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, HookError> {
    match tokio::time::timeout(after, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(HookError::from_status(hook, status)),
        Err(_) => Err(HookError::Timeout { hook, after }),
    }
}

/// `Implemented`; a plugin that does not serve the lifecycle service has
/// none of it. Unknown hook names are dropped with a warning.
pub(crate) async fn implemented(
    channel: &PluginChannel,
    after: Duration,
) -> Result<Implemented, HookError> {
    let mut client = LifecycleClient::new(channel.clone());
    let answer = match within(
        "Implemented",
        after,
        client.implemented(ImplementedRequest {}),
    )
    .await
    {
        Ok(answer) => answer,
        Err(HookError::Rpc {
            code: tonic::Code::Unimplemented,
            ..
        }) => return Ok(Implemented::default()),
        Err(error) => return Err(error),
    };
    let mut hooks = BTreeSet::new();
    for hook in answer.hooks {
        match KNOWN_HOOKS.contains(&hook.as_str()) {
            true => {
                hooks.insert(hook);
            }
            false => {
                tracing::warn!(hook = %hook.chars().take(100).collect::<String>(), "the plugin reports a hook plugvisor does not know; ignored")
            }
        }
    }
    Ok(Implemented {
        lifecycle: true,
        hooks,
        services: answer.services.into_iter().take(1000).collect(),
    })
}

/// A refusal's message, cut to what an operator can read.
fn refusal(refused: Option<Refusal>) -> Option<String> {
    refused.map(|r| match r.message.trim() {
        "" => "the plugin refused without saying why".to_string(),
        message => message.chars().take(2000).collect(),
    })
}

/// `OnActivate`: `Ok(None)` when the plugin accepts, `Ok(Some(message))` when it refuses.
pub(crate) async fn on_activate(
    channel: &PluginChannel,
    after: Duration,
    request: OnActivateRequest,
) -> Result<Option<String>, HookError> {
    let mut client = LifecycleClient::new(channel.clone());
    let answer = within(ON_ACTIVATE, after, client.on_activate(request)).await?;
    Ok(refusal(answer.refused))
}

/// `OnConfigurationChange`: the same shape as [`on_activate`].
pub(crate) async fn on_configuration_change(
    channel: &PluginChannel,
    after: Duration,
    configuration_json: String,
) -> Result<Option<String>, HookError> {
    let mut client = LifecycleClient::new(channel.clone());
    let request = OnConfigurationChangeRequest { configuration_json };
    let answer = within(
        ON_CONFIGURATION_CHANGE,
        after,
        client.on_configuration_change(request),
    )
    .await?;
    Ok(refusal(answer.refused))
}

/// `OnDeactivate`; its failure is logged, never blocks the stop.
pub(crate) async fn on_deactivate(
    channel: &PluginChannel,
    after: Duration,
) -> Result<(), HookError> {
    let mut client = LifecycleClient::new(channel.clone());
    within(
        ON_DEACTIVATE,
        after,
        client.on_deactivate(OnDeactivateRequest {}),
    )
    .await
    .map(drop)
}
