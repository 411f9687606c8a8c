//! One plugin id in an environment: its bundle, and one lifecycle value that
//! its status is derived from, so the two can never disagree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::instance::Instance;
use super::reload::Fingerprint;
use super::status::{Event, EventKind, PluginState, PluginStatus};
use crate::bundle::Bundle;
use crate::hooks::HookTimeouts;
use crate::launch::{LaunchOptions, RuntimeKind};
use crate::settings_schema::SettingsSchema;
use crate::supervisor::AttachTarget;

pub(crate) struct Slot {
    id: String,
    /// Replaced by a reload that finds a new version, under the op lock.
    version: Mutex<Arc<Version>>,
    /// Serialises activate and deactivate of this id.
    pub(crate) op: tokio::sync::Mutex<()>,
    /// Serialises configuration changes of this id.
    pub(crate) configuring: tokio::sync::Mutex<()>,
    /// Whether "activated without lifecycle hooks" was logged: once is news.
    pub(crate) said_no_hooks: AtomicBool,
    /// Activated and not deactivated since: it should be Running.
    pub(crate) wanted: AtomicBool,
    /// Debug mode: a developer may pause it in a debugger, so nothing the
    /// keeper sees (failed checks, an exit, a slow start) makes it kill or
    /// restart the plugin.
    debugging: AtomicBool,
    /// Where its starts attach to a plugin someone else started, instead of
    /// spawning the bundle's executable.
    attach: Mutex<Option<AttachTarget>>,
    /// Its bundle is gone: it is no longer activated (set under the op lock).
    pub(crate) removed: AtomicBool,
    /// Why a reload last refused its new version, while that version is
    /// on disk: a warning and an event once, not at every reload.
    pub(crate) refused: Mutex<Option<String>>,
    state: Mutex<SlotState>,
}

/// One version of a plugin's bundle, as a reload compares them.
pub(crate) struct Version {
    pub(crate) bundle: Bundle,
    pub(crate) settings: SettingsSchema,
    pub(crate) fingerprint: Fingerprint,
}

pub(crate) struct SlotState {
    pub(crate) life: Life,
    runtime: Option<RuntimeKind>,
    since: SystemTime,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) note: Option<String>,
}

/// Where a plugin is in its lifecycle.
pub(crate) enum Life {
    /// No keeper runs: NotRunning, FailedToStart or FailedToStayRunning.
    Idle(PluginState),
    /// A keeper task owns the plugin until it ends.
    Kept(Keeper, Phase),
}

/// The keeper task of an active plugin.
pub(crate) struct Keeper {
    /// Asks the keeper to stop the plugin and end.
    pub(crate) stop: CancellationToken,
    /// Taken by the deactivation that waits for the keeper's end.
    pub(crate) task: Option<JoinHandle<()>>,
}

pub(crate) enum Phase {
    Starting,
    Running(Arc<Instance>),
    /// Being stopped; kept so that a kill can still reach it.
    Stopping(Arc<Instance>),
}

impl Slot {
    pub(crate) fn new(version: Version, runtime: Option<RuntimeKind>) -> Slot {
        Slot {
            id: version.bundle.id().to_string(),
            version: Mutex::new(Arc::new(version)),
            op: tokio::sync::Mutex::new(()),
            configuring: tokio::sync::Mutex::new(()),
            said_no_hooks: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            debugging: AtomicBool::new(false),
            attach: Mutex::new(None),
            removed: AtomicBool::new(false),
            refused: Mutex::new(None),
            state: Mutex::new(SlotState {
                life: Life::Idle(PluginState::NotRunning),
                runtime,
                since: SystemTime::now(),
                restarts: 0,
                last_error: None,
                note: None,
            }),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The version its next start launches.
    pub(crate) fn version(&self) -> Arc<Version> {
        self.version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a new version (the caller holds the op lock, nothing runs).
    pub(crate) fn replace_version(&self, version: Version, runtime: Option<RuntimeKind>) {
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(version);
        self.lock().runtime = runtime;
    }

    /// How long a start of this plugin may take.
    pub(crate) fn start_timeout(&self, launch: &LaunchOptions) -> Duration {
        if self.debugging() {
            return LaunchOptions::DEBUG_START_TIMEOUT;
        }
        match self.lock().runtime {
            Some(RuntimeKind::Python) => launch.python_start_timeout(),
            _ => launch.native_start_timeout(),
        }
    }

    /// The timeouts of the hooks of a start: in debug mode, a breakpoint in
    /// Implemented or OnActivate must not fail the start either.
    pub(crate) fn start_hook_timeouts(&self, hooks: HookTimeouts) -> HookTimeouts {
        match self.debugging() {
            true => HookTimeouts {
                implemented: LaunchOptions::DEBUG_START_TIMEOUT,
                on_activate: LaunchOptions::DEBUG_START_TIMEOUT,
                ..hooks
            },
            false => hooks,
        }
    }

    /// Whether the plugin is in debug mode.
    pub(crate) fn debugging(&self) -> bool {
        self.debugging.load(Ordering::Relaxed)
    }

    /// Enters or leaves debug mode; true when that changed it.
    pub(crate) fn set_debugging(&self, on: bool) -> bool {
        self.debugging.swap(on, Ordering::Relaxed) != on
    }

    /// Where its starts attach to, if they do.
    pub(crate) fn attach_target(&self) -> Option<AttachTarget> {
        self.attach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets or clears where its starts attach to (under the op lock, with
    /// nothing running).
    pub(crate) fn set_attach_target(&self, target: Option<AttachTarget>) {
        *self.attach.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// The plugin's settings_schema.
    pub(crate) fn settings(&self) -> SettingsSchema {
        self.version().settings.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self) -> PluginStatus {
        self.lock().status(self)
    }

    /// The running instance, if the plugin is Running.
    pub(crate) fn running(&self) -> Option<Arc<Instance>> {
        match &self.lock().life {
            Life::Kept(_, Phase::Running(instance)) => Some(instance.clone()),
            _ => None,
        }
    }

    /// Changes the slot's state, announces it and counts it.
    pub(crate) fn update(
        &self,
        shared: &Shared,
        kind: EventKind,
        change: impl FnOnce(&mut SlotState),
    ) -> PluginStatus {
        let status = {
            let mut state = self.lock();
            let before = state.life.state();
            change(&mut state);
            if state.life.state() != before {
                state.since = SystemTime::now();
            }
            state.status(self)
        };
        shared.metrics.event(self.id(), &kind, status.state);
        shared.publish(Event {
            kind,
            status: status.clone(),
        });
        status
    }

    /// Sets the phase, if a keeper still owns the plugin.
    pub(crate) fn set_phase(state: &mut SlotState, phase: Phase) {
        if let Life::Kept(_, current) = &mut state.life {
            *current = phase;
        }
    }
}

impl SlotState {
    fn status(&self, slot: &Slot) -> PluginStatus {
        let (pid, transport, sandbox) = match &self.life {
            Life::Kept(_, Phase::Running(instance)) => (
                instance.pid(),
                Some(instance.transport()),
                instance.sandbox(),
            ),
            _ => (None, None, None),
        };
        let limits = match &self.life {
            Life::Kept(_, Phase::Running(instance) | Phase::Stopping(instance)) => {
                instance.limits()
            }
            _ => Vec::new(),
        };
        PluginStatus {
            id: slot.id().to_string(),
            version: slot.version().bundle.manifest.display_version().to_string(),
            runtime: self.runtime,
            state: self.life.state(),
            pid,
            since: self.since,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            note: self.note.clone(),
            debug: slot.debugging(),
            transport,
            sandbox,
            limits,
            attached: slot.attach_target().map(|t| t.to_string()),
        }
    }
}

impl Life {
    pub(crate) fn state(&self) -> PluginState {
        match self {
            Life::Idle(state) => *state,
            Life::Kept(_, Phase::Starting) => PluginState::Starting,
            Life::Kept(_, Phase::Running(_)) => PluginState::Running,
            Life::Kept(_, Phase::Stopping(_)) => PluginState::Stopping,
        }
    }

    pub(crate) fn keeper(&mut self) -> Option<&mut Keeper> {
        match self {
            Life::Kept(keeper, _) => Some(keeper),
            Life::Idle(_) => None,
        }
    }
}
