//! The status table, as lines of text that fit a given width.

use std::time::{Duration, SystemTime};

use plugvisor::{PluginState, PluginStatus};

const HEADERS: [&str; 11] = [
    "ID",
    "VERSION",
    "RUNTIME",
    "STATE",
    "PID",
    "TRANSPORT",
    "SANDBOX",
    "UPTIME",
    "RESTARTS",
    "LIMITS",
    "LAST ERROR",
];

pub fn render_table(statuses: &[PluginStatus], now: SystemTime, width: usize) -> Vec<String> {
    let rows: Vec<[String; 11]> = statuses.iter().map(|s| row(s, now)).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let format_row = |cells: [&str; 11]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        fit(line.trim_end(), width)
    };
    let mut lines = vec![format_row(HEADERS)];
    for row in &rows {
        lines.push(format_row(row.each_ref().map(String::as_str)));
    }
    lines
}

fn row(status: &PluginStatus, now: SystemTime) -> [String; 11] {
    let uptime = match status.state {
        PluginState::Running => {
            human_duration(now.duration_since(status.since).unwrap_or_default())
        }
        _ => "-".into(),
    };
    // A plugin waiting for its turn says so where an error would be.
    let error = status
        .last_error
        .as_deref()
        .or(status.note.as_deref())
        .and_then(|e| e.lines().next())
        .unwrap_or("")
        .to_string();
    [
        status.id.clone(),
        status.version.clone(),
        status.runtime.map_or("-".into(), |r| r.to_string()),
        {
            let mut state = status.state.to_string();
            if status.attached.is_some() {
                state.push_str(" (attached)");
            }
            if status.debug {
                state.push_str(" (debug)");
            }
            state
        },
        status.pid.map_or("-".into(), |p| p.to_string()),
        status.transport.map_or("-".into(), |t| t.to_string()),
        status
            .sandbox
            .map_or("-".into(), |s| format!("landlock v{}", s.abi)),
        uptime,
        status.restarts.to_string(),
        limits(&status.limits),
        error,
    ]
}

/// `mem 256 MiB, files 1024 (setrlimit)`: short, with the mechanism once
/// per kind of enforcement.
fn limits(limits: &[plugvisor::EnforcedLimit]) -> String {
    if limits.is_empty() {
        return "-".into();
    }
    let mut parts = Vec::new();
    for by in [
        plugvisor::Enforcement::Setrlimit,
        plugvisor::Enforcement::Cgroup,
    ] {
        let these: Vec<String> = limits
            .iter()
            .filter(|l| l.by == by)
            .map(|l| {
                let name = match l.limit {
                    plugvisor::LimitKind::Memory => "mem",
                    plugvisor::LimitKind::OpenFiles => "files",
                    plugvisor::LimitKind::Processes => "procs",
                    plugvisor::LimitKind::CpuSeconds => "cpu",
                    _ => "?",
                };
                format!("{name} {}", l.limit.show(l.value))
            })
            .collect();
        if !these.is_empty() {
            let how = match by {
                plugvisor::Enforcement::Cgroup => "cgroup",
                _ => "setrlimit",
            };
            parts.push(format!("{} ({how})", these.join(", ")));
        }
    }
    parts.join("; ")
}

/// `4s`, `3m12s`, `2h05m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Cuts a line to `width` characters, marking the cut.
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = line.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as `plugvisor status --json` carries it.
    fn status(state: PluginState, error: Option<&str>) -> PluginStatus {
        serde_json::from_value(serde_json::json!({
            "id": "hello-python",
            "version": "0.1.0",
            "runtime": "python",
            "state": state,
            "pid": 4242,
            "since_unix_ms": 0,
            "restarts": 1,
            "last_error": error,
            "transport": "unix+mtls",
        }))
        .unwrap()
    }

    #[test]
    fn renders_columns() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(75);
        let lines = render_table(
            &[status(
                PluginState::Running,
                Some("plugin crashed (exit status 3)\n  more"),
            )],
            now,
            200,
        );
        assert!(lines[0].starts_with("ID            VERSION  RUNTIME  STATE"));
        assert!(lines[1].contains("Running"));
        assert!(lines[1].contains("1m15s"));
        assert!(lines[1].contains("4242  unix+mtls"), "{}", lines[1]);
        assert!(lines[1].ends_with("plugin crashed (exit status 3)"));
    }

    #[test]
    fn limits_show_in_their_column() {
        let mut with_limits = status(PluginState::Running, None);
        with_limits.limits = serde_json::from_value(serde_json::json!([
            {"limit": "memory", "value": 268435456, "by": "setrlimit"},
            {"limit": "open_files", "value": 64, "by": "setrlimit"},
        ]))
        .unwrap();
        let now = SystemTime::UNIX_EPOCH;
        let lines = render_table(
            &[with_limits, status(PluginState::NotRunning, None)],
            now,
            200,
        );
        assert!(lines[0].contains("RESTARTS  LIMITS"), "{}", lines[0]);
        assert!(
            lines[1].contains("mem 256 MiB, files 64 (setrlimit)"),
            "{}",
            lines[1]
        );
        assert!(lines[2].trim_end().ends_with('-'), "{}", lines[2]);
    }

    #[test]
    fn debug_mode_shows_in_the_state_column() {
        let mut debugged = status(PluginState::Running, None);
        debugged.debug = true;
        let lines = render_table(&[debugged], SystemTime::now(), 200);
        assert!(lines[1].contains("Running (debug)"), "{}", lines[1]);
    }

    #[test]
    fn narrow_terminals_cut_lines_without_panicking() {
        let statuses = [status(
            PluginState::FailedToStart,
            Some("é".repeat(300).as_str()),
        )];
        for width in [0, 1, 5, 20, 79] {
            for line in render_table(&statuses, SystemTime::now(), width) {
                assert!(line.chars().count() <= width, "{line:?} > {width}");
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(4)), "4s");
        assert_eq!(human_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h05m");
    }
}
