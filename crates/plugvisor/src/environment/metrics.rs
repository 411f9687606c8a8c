//! What the environment measures, in Prometheus' text format
//! ([`crate::Environment::metrics`], `/metrics`): per plugin its state,
//! restarts, crashes, start times, health check and hook latencies, and HTTP
//! requests by status.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::status::{EventKind, PluginState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Plugin {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginAndState {
    plugin: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginHook {
    plugin: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStatus {
    plugin: String,
    status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 33 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

const STATES: [PluginState; 6] = [
    PluginState::NotRunning,
    PluginState::Starting,
    PluginState::Running,
    PluginState::FailedToStart,
    PluginState::FailedToStayRunning,
    PluginState::Stopping,
];

pub(crate) struct Metrics {
    registry: Registry,
    state: Family<PluginAndState, Gauge>,
    restarts: Family<Plugin, Counter>,
    crashes: Family<Plugin, Counter>,
    start: Histograms<Plugin>,
    health_check: Histograms<Plugin>,
    hook: Histograms<PluginHook>,
    http: Family<PluginStatus, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("plugvisor");
        let state = Family::<PluginAndState, Gauge>::default();
        let restarts = Family::<Plugin, Counter>::default();
        let crashes = Family::<Plugin, Counter>::default();
        let start = Histograms::new_with_constructor(latency as fn() -> Histogram);
        let health_check = Histograms::new_with_constructor(latency as fn() -> Histogram);
        let hook = Histograms::new_with_constructor(latency as fn() -> Histogram);
        let http = Family::<PluginStatus, Counter>::default();
        registry.register(
            "plugin_state",
            "1 for the state each plugin is in, 0 for the others",
            state.clone(),
        );
        registry.register(
            "plugin_restarts",
            "Restarts after a failure",
            restarts.clone(),
        );
        registry.register(
            "plugin_crashes",
            "Exits of running plugin processes",
            crashes.clone(),
        );
        registry.register(
            "plugin_start_seconds",
            "From a plugin's spawn to Running (activation included)",
            start.clone(),
        );
        registry.register(
            "plugin_health_check_seconds",
            "Periodic health checks of running plugins",
            health_check.clone(),
        );
        registry.register("plugin_hook_seconds", "Lifecycle hook calls", hook.clone());
        registry.register(
            "plugin_http_requests",
            "Requests under /plugins/{id}/ by response status (aborted: the response broke off)",
            http.clone(),
        );
        Metrics {
            registry,
            state,
            restarts,
            crashes,
            start,
            health_check,
            hook,
            http,
        }
    }

    /// A plugin known to the environment starts at NotRunning.
    pub(crate) fn plugin_added(&self, plugin: &str) {
        self.state_is(plugin, PluginState::NotRunning);
    }

    /// A plugin no longer known (its bundle was removed) is no longer measured.
    pub(crate) fn plugin_removed(&self, plugin: &str) {
        for state in STATES {
            self.state.remove(&PluginAndState {
                plugin: plugin.to_string(),
                state: state.to_string(),
            });
        }
        let labels = Plugin {
            plugin: plugin.to_string(),
        };
        self.restarts.remove(&labels);
        self.crashes.remove(&labels);
        self.start.remove(&labels);
        self.health_check.remove(&labels);
    }

    fn state_is(&self, plugin: &str, now: PluginState) {
        for state in STATES {
            let labels = PluginAndState {
                plugin: plugin.to_string(),
                state: state.to_string(),
            };
            self.state
                .get_or_create(&labels)
                .set(i64::from(state == now));
        }
    }

    /// What an event says, counted.
    pub(crate) fn event(&self, plugin: &str, kind: &EventKind, state: PluginState) {
        self.state_is(plugin, state);
        let labels = Plugin {
            plugin: plugin.to_string(),
        };
        match kind {
            EventKind::Crashed { .. } => {
                self.crashes.get_or_create(&labels).inc();
            }
            EventKind::RestartScheduled { .. } => {
                self.restarts.get_or_create(&labels).inc();
            }
            EventKind::Running { startup_ms } => self
                .start
                .get_or_create(&labels)
                .observe(*startup_ms as f64 / 1000.0),
            _ => {}
        }
    }

    /// A plugin's health-check latency histogram, for the watch to keep:
    /// a check then records without a lookup (histograms share their data).
    pub(crate) fn health_checks(&self, plugin: &str) -> Histogram {
        let labels = Plugin {
            plugin: plugin.to_string(),
        };
        self.health_check.get_or_create(&labels).clone()
    }

    pub(crate) fn hook(&self, plugin: &str, hook: &str, took: Duration) {
        let labels = PluginHook {
            plugin: plugin.to_string(),
            hook: hook.to_string(),
        };
        self.hook.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// `status` is the HTTP status code, or "aborted".
    pub(crate) fn http_request(&self, plugin: &str, status: &str) {
        let labels = PluginStatus {
            plugin: plugin.to_string(),
            status: status.to_string(),
        };
        self.http.get_or_create(&labels).inc();
    }

    /// The text exposition format (OpenMetrics).
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_counters_and_states() {
        let metrics = Metrics::new();
        metrics.plugin_added("hello");
        metrics.event(
            "hello",
            &EventKind::Running { startup_ms: 12 },
            PluginState::Running,
        );
        metrics.event(
            "hello",
            &EventKind::Crashed {
                exit: "exit status 3".into(),
            },
            PluginState::Running,
        );
        metrics.event(
            "hello",
            &EventKind::RestartScheduled {
                delay_ms: 0,
                attempt: 1,
            },
            PluginState::Starting,
        );
        metrics.http_request("hello", "200");
        metrics.hook("hello", "OnActivate", Duration::from_millis(3));
        let text = metrics.text();
        assert!(
            text.contains(r#"plugvisor_plugin_state{plugin="hello",state="Starting"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plugvisor_plugin_state{plugin="hello",state="Running"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plugvisor_plugin_crashes_total{plugin="hello"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plugvisor_plugin_restarts_total{plugin="hello"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plugvisor_plugin_start_seconds_count{plugin="hello"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"plugvisor_plugin_http_requests_total{plugin="hello",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"plugvisor_plugin_hook_seconds_count{plugin="hello",hook="OnActivate"} 1"#
            ),
            "{text}"
        );
    }
}
