//! A plugin's output: its stderr and post-handshake stdout lines, and the
//! `plugin.GRPCStdio` stream, relayed into `tracing`. hclog JSON lines keep
//! their level and fields. Every buffer is bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest line kept; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many stderr lines an error carries.
pub const STDERR_TAIL_LINES: usize = 20;

/// One line read by [`read_bounded_line`].
#[derive(Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Line {
    Complete(Vec<u8>),
    /// The line was longer than the limit; this is its start.
    Truncated(Vec<u8>),
}

impl Line {
    /// The line as text, without its line ending.
    pub fn text(&self) -> String {
        let bytes = match self {
            Line::Complete(b) | Line::Truncated(b) => b,
        };
        String::from_utf8_lossy(bytes)
            .trim_end_matches(['\n', '\r'])
            .to_string()
    }
}

/// Reads one line, keeping at most `max` bytes of it and draining the rest, so a
/// plugin that writes a huge line without a newline cannot grow our memory.
/// Returns `None` at EOF.
pub async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut truncated = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (line.is_empty(), truncated) {
                (true, false) => None,
                (_, true) => Some(Line::Truncated(line)),
                (false, false) => Some(Line::Complete(line)),
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.map_or(available.len(), |i| i + 1);
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        if take > room {
            truncated = true;
        }
        reader.consume(take);
        if newline.is_some() {
            return Ok(Some(if truncated {
                Line::Truncated(line)
            } else {
                Line::Complete(line)
            }));
        }
    }
}

/// The last lines a plugin wrote to stderr, for error messages, and the
/// last line that said it ran out of memory, which a Go stack trace after it
/// would push out of the tail.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<Tail>>);

#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    /// Lines seen so far.
    count: u64,
    /// The last out-of-memory line, and its number.
    out_of_memory: Option<(u64, String)>,
}

/// An out-of-memory line counts as the reason of an exit this many lines
/// later at most: the Go runtime's stack traces follow it (a few hundred
/// lines for a plugin with a handful of goroutines).
const OUT_OF_MEMORY_RECENT: u64 = 5000;

impl StderrTail {
    pub fn push(&self, line: String) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.count += 1;
        if crate::limits::says_out_of_memory(&line) {
            tail.out_of_memory = Some((tail.count, line.clone()));
        }
        if tail.lines.len() == STDERR_TAIL_LINES {
            tail.lines.pop_front();
        }
        tail.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.lines.iter().cloned().collect()
    }

    /// The last line that said the plugin ran out of memory, if it is
    /// among its last stderr lines.
    pub fn out_of_memory(&self) -> Option<String> {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &tail.out_of_memory {
            Some((at, line)) if tail.count - at < OUT_OF_MEMORY_RECENT => Some(line.clone()),
            _ => None,
        }
    }
}

/// The last lines a plugin wrote to stderr, attached to start errors; shown
/// as an indented block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrLines(pub Vec<String>);

impl std::fmt::Display for StderrLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("\n  (the plugin wrote nothing to stderr)");
        }
        write!(f, "\n  last stderr lines:")?;
        for line in &self.0 {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

/// Log levels as hclog names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A line a plugin logged with hclog's JSON format.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct HclogLine {
    pub level: LogLevel,
    pub message: String,
    /// Other fields as `key=value`, in JSON key order (`@`-prefixed keys first), with `@` dropped.
    pub fields: Vec<(String, String)>,
}

/// Parses `{"@level":..,"@message":..}`; `None` for anything else.
pub fn parse_hclog_line(line: &str) -> Option<HclogLine> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let Value::Object(object) = serde_json::from_str::<Value>(trimmed).ok()? else {
        return None;
    };
    let level = match object.get("@level")?.as_str()? {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    };
    let message = object
        .get("@message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let fields = object
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "@level" | "@message" | "@timestamp"))
        .map(|(key, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key.trim_start_matches('@').to_string(), value)
        })
        .collect();
    Some(HclogLine {
        level,
        message,
        fields,
    })
}

/// Which of the plugin's streams a line came from: a pipe, or the
/// `plugin.GRPCStdio` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
    GrpcStdout,
    GrpcStderr,
}

/// The span that names a plugin in the log (`plugin{id=...}`): the current
/// one when the caller already runs in it (the keeper task does), so that a
/// line never says the id twice.
pub(crate) fn plugin_span(id: &str) -> tracing::Span {
    let current = tracing::Span::current();
    match current.metadata() {
        Some(metadata) if metadata.name() == "plugin" => current,
        _ => tracing::info_span!("plugin", id = %id),
    }
}

/// Logs one plugin line under the target `plugin::<stream>` (so that
/// `--log-level plugin::stdout=off` silences one stream), with hclog levels
/// and fields kept. The caller's span carries the plugin id. Fields go on the
/// message's first line, never after the last line of a traceback.
pub(crate) fn log_plugin_line(stream: Stream, line: &str) {
    let Some(hclog) = parse_hclog_line(line) else {
        // Without levels of its own, stderr is a warning and stdout is news.
        let level = match stream {
            Stream::Stderr | Stream::GrpcStderr => LogLevel::Warn,
            Stream::Stdout | Stream::GrpcStdout => LogLevel::Info,
        };
        emit(stream, level, line);
        return;
    };
    let fields: String = hclog
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    let message = match hclog.message.split_once('\n') {
        Some((first, rest)) => format!("{first}{fields}\n{rest}"),
        None => format!("{}{fields}", hclog.message),
    };
    emit(stream, hclog.level, &message);
}

fn emit(stream: Stream, level: LogLevel, message: &str) {
    // tracing needs the target and level as constants at each call site.
    macro_rules! at {
        ($target:literal) => {
            match level {
                LogLevel::Trace => tracing::trace!(target: $target, "{message}"),
                LogLevel::Debug => tracing::debug!(target: $target, "{message}"),
                LogLevel::Info => tracing::info!(target: $target, "{message}"),
                LogLevel::Warn => tracing::warn!(target: $target, "{message}"),
                LogLevel::Error => tracing::error!(target: $target, "{message}"),
            }
        };
    }
    match stream {
        Stream::Stdout => at!("plugin::stdout"),
        Stream::Stderr => at!("plugin::stderr"),
        Stream::GrpcStdout => at!("plugin::grpc_stdout"),
        Stream::GrpcStderr => at!("plugin::grpc_stderr"),
    }
}

/// Relays lines from a pipe until EOF, keeping stderr lines in `tail`.
pub(crate) async fn relay_lines<R: AsyncBufRead + Unpin>(
    mut reader: R,
    stream: Stream,
    tail: Option<StderrTail>,
) {
    loop {
        match read_bounded_line(&mut reader, MAX_LINE_BYTES).await {
            Ok(Some(line)) => {
                let text = line.text();
                log_plugin_line(stream, &text);
                if let Some(tail) = &tail {
                    tail.push(text);
                }
            }
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, ?stream, "plugin pipe read failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_memory_line_outlives_the_tail_but_not_much_more() {
        let tail = StderrTail::default();
        tail.push("fatal error: out of memory".into());
        for n in 0..300 {
            tail.push(format!("goroutine trace line {n}"));
        }
        assert_eq!(
            tail.out_of_memory().as_deref(),
            Some("fatal error: out of memory")
        );
        assert_eq!(tail.lines().len(), STDERR_TAIL_LINES);
        for n in 0..OUT_OF_MEMORY_RECENT {
            tail.push(format!("later line {n}"));
        }
        assert_eq!(tail.out_of_memory(), None);
    }

    #[tokio::test]
    async fn bounded_lines_truncate_and_resync() {
        let mut input = Vec::new();
        input.extend_from_slice(b"short\n");
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\nnext\npartial");
        let mut reader = tokio::io::BufReader::with_capacity(7, &input[..]);
        let first = read_bounded_line(&mut reader, 10).await.unwrap().unwrap();
        assert_eq!(first, Line::Complete(b"short\n".to_vec()));
        let long = read_bounded_line(&mut reader, 10).await.unwrap().unwrap();
        assert_eq!(long, Line::Truncated(vec![b'x'; 10]));
        let next = read_bounded_line(&mut reader, 10).await.unwrap().unwrap();
        assert_eq!(next.text(), "next");
        let partial = read_bounded_line(&mut reader, 10).await.unwrap().unwrap();
        assert_eq!(partial, Line::Complete(b"partial".to_vec()));
        assert_eq!(read_bounded_line(&mut reader, 10).await.unwrap(), None);
    }

    #[test]
    fn hclog_lines_keep_level_and_fields() {
        let line = r#"{"@level":"warn","@message":"disk low","@module":"plugin.demo","@timestamp":"2026-01-01T00:00:00Z","free":12,"path":"/x"}"#;
        let parsed = parse_hclog_line(line).unwrap();
        assert_eq!(parsed.level, LogLevel::Warn);
        assert_eq!(parsed.message, "disk low");
        assert_eq!(
            parsed.fields,
            vec![
                ("module".to_string(), "plugin.demo".to_string()),
                ("free".to_string(), "12".to_string()),
                ("path".to_string(), "/x".to_string()),
            ]
        );
    }

    #[test]
    fn non_hclog_lines_are_not_parsed() {
        assert_eq!(parse_hclog_line("plain text"), None);
        assert_eq!(parse_hclog_line("{not json"), None);
        assert_eq!(parse_hclog_line(r#"{"msg":"no level"}"#), None);
        assert_eq!(parse_hclog_line("[1,2]"), None);
        assert_eq!(parse_hclog_line(r#"{"@level":3}"#), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for i in 0..50 {
            tail.push(format!("line {i}"));
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 30");
        assert_eq!(lines.last().unwrap(), "line 49");
    }
}
