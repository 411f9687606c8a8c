//! Where log lines go: stderr, or a ring of recent lines shown under the live table.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

const RING_LINES: usize = 200;

/// The latest log lines, for the live table.
#[derive(Clone, Default)]
pub struct LogRing(Arc<Mutex<VecDeque<String>>>);

impl LogRing {
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

impl std::io::Write for LogRing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for line in String::from_utf8_lossy(buf)
            .lines()
            .filter(|l| !l.is_empty())
        {
            if lines.len() == RING_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogRing {
    type Writer = LogRing;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber. `level` is a tracing filter such as `info`
/// or `plugvisor=debug,plugin=warn`.
pub fn init(level: &str, ring: Option<LogRing>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match ring {
        // The table shows times next to events; keep log lines short.
        Some(ring) => builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(ring)
            .init(),
        // The span names the plugin (`plugin{id=..}`); targets add nothing for people.
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}
