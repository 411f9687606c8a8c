//! One started plugin process as the environment sees it: the supervisor
//! that owns the process, and what was agreed with the plugin at its start.

use std::process::ExitStatus;

use tonic::transport::Channel;

use super::Shared;
use super::error::EnvironmentError;
use super::slot::Slot;
use crate::launch::plan_launch;
use crate::supervisor::{PingError, StopReport, Supervisor};

pub(crate) struct Instance {
    supervisor: Supervisor,
}

impl Instance {
    /// The one start path, for a first activation and for every restart:
    /// the launch plan, then the supervisor's spawn → handshake → healthy
    /// within the plan's start timeout.
    pub(crate) async fn start(slot: &Slot, shared: &Shared) -> Result<Instance, EnvironmentError> {
        let id = slot.id();
        let config = &shared.config;
        let plan = plan_launch(&slot.bundle, &config.launch).map_err(|source| {
            EnvironmentError::Launch {
                id: id.to_string(),
                source,
            }
        })?;
        let supervisor = Supervisor::start(id, &plan, &config.supervisor)
            .await
            .map_err(|source| EnvironmentError::Start {
                id: id.to_string(),
                source,
            })?;
        tracing::info!(plugin = id, "plugin {id} activated without lifecycle hooks");
        Ok(Instance { supervisor })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.supervisor.pid()
    }

    pub(crate) fn channel(&self) -> Channel {
        self.supervisor.channel()
    }

    pub(crate) fn stderr_tail(&self) -> crate::stdio::StderrLines {
        self.supervisor.stderr_tail()
    }

    pub(crate) async fn ping(&self) -> Result<(), PingError> {
        self.supervisor.ping().await
    }

    pub(crate) async fn exited(&self) -> ExitStatus {
        self.supervisor.exited().await
    }

    /// The stop sequence; after a crash it only reaps and cleans up.
    pub(crate) async fn stop(&self) -> StopReport {
        self.supervisor.stop().await
    }

    /// SIGKILLs the process group now; a stop under way then ends at once.
    pub(crate) fn kill_now(&self) {
        self.supervisor.kill_now();
    }
}
