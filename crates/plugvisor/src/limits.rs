//! Resource limits of one plugin process: memory, open files, processes and
//! CPU time, as `server.limits` in plugin.json and the operator's override
//! write them; how each is enforced; and how an exit is told to be a limit's
//! doing. Pure: no process is touched here (`process/spawn.rs` applies the
//! setrlimit values in the child, `cgroup.rs` says whether a cgroup could).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A plugin's resource limits. Each one is optional; none is the default.
/// Written in plugin.json as `server.limits`:
///
/// ```json
/// {"server": {"executable": "plugin",
///             "limits": {"memory": "256MiB", "open_files": 1024,
///                        "processes": 64, "cpu_seconds": 600}}}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceLimits {
    /// Bytes of memory. Under setrlimit this is RLIMIT_AS: the process's
    /// address space (virtual memory, not RSS), which a runtime's reserved
    /// but unused mappings count towards. In a cgroup of the plugin's own
    /// ([`crate::cgroup_support`]) it is memory.max: resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Open file descriptors (RLIMIT_NOFILE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Processes and threads (RLIMIT_NPROC). The kernel counts every process
    /// of the plugin's user, not the plugin's own; for root it is not
    /// enforced at all. In a cgroup of the plugin's own it is pids.max: the
    /// plugin's processes and threads only, root or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// Seconds of CPU time (RLIMIT_CPU): SIGXCPU at the limit, SIGKILL one
    /// second of CPU time later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<u64>,
}

/// One kind of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// [`ResourceLimits::memory`].
    Memory,
    /// [`ResourceLimits::open_files`].
    OpenFiles,
    /// [`ResourceLimits::processes`].
    Processes,
    /// [`ResourceLimits::cpu_seconds`].
    CpuSeconds,
}

/// The field names, in the order they are shown.
const FIELDS: [(&str, LimitKind); 4] = [
    ("memory", LimitKind::Memory),
    ("open_files", LimitKind::OpenFiles),
    ("processes", LimitKind::Processes),
    ("cpu_seconds", LimitKind::CpuSeconds),
];

impl LimitKind {
    /// Its field name in `server.limits`.
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::OpenFiles => "open_files",
            LimitKind::Processes => "processes",
            LimitKind::CpuSeconds => "cpu_seconds",
        }
    }

    /// The setrlimit resource that enforces it.
    pub fn rlimit_name(self) -> &'static str {
        match self {
            LimitKind::Memory => "RLIMIT_AS",
            LimitKind::OpenFiles => "RLIMIT_NOFILE",
            LimitKind::Processes => "RLIMIT_NPROC",
            LimitKind::CpuSeconds => "RLIMIT_CPU",
        }
    }

    /// A value of this kind for people: `256 MiB`, `1024`, `600 s`.
    pub fn show(self, value: u64) -> String {
        match self {
            LimitKind::Memory => show_bytes(value),
            LimitKind::CpuSeconds => format!("{value} s"),
            LimitKind::OpenFiles | LimitKind::Processes => value.to_string(),
        }
    }
}

/// What is wrong with a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`limits{}`: {problem}", self.dotted_field())]
#[non_exhaustive]
pub struct LimitsError {
    /// The field at fault (`memory`, `open_files`, the unknown one), or
    /// empty when the limits are not an object at all.
    pub field: String,
    /// What is wrong and what would work.
    pub problem: String,
}

impl LimitsError {
    /// `.memory`, or nothing when the whole value is at fault.
    pub fn dotted_field(&self) -> String {
        match self.field.is_empty() {
            true => String::new(),
            false => format!(".{}", self.field),
        }
    }
}

fn error(field: &str, problem: impl Into<String>) -> LimitsError {
    LimitsError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

impl ResourceLimits {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The limits that are set, in the order memory, open files, processes, CPU.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        FIELDS
            .iter()
            .filter_map(|&(_, kind)| self.get(kind).map(|value| (kind, value)))
    }

    /// One limit.
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::Memory => self.memory,
            LimitKind::OpenFiles => self.open_files,
            LimitKind::Processes => self.processes,
            LimitKind::CpuSeconds => self.cpu_seconds,
        }
    }

    /// Sets one limit.
    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        match kind {
            LimitKind::Memory => self.memory = value,
            LimitKind::OpenFiles => self.open_files = value,
            LimitKind::Processes => self.processes = value,
            LimitKind::CpuSeconds => self.cpu_seconds = value,
        }
    }

    /// These limits, with each one that `over` sets taking its place.
    pub fn overridden_by(mut self, over: &ResourceLimits) -> ResourceLimits {
        for (kind, value) in over.iter() {
            self.set(kind, Some(value));
        }
        self
    }

    /// Parses the JSON object of `server.limits` (or of the operator's
    /// override): `memory` is a number of bytes or a size such as `"256MiB"`,
    /// the others are whole numbers, every one more than 0. An unknown field
    /// is an error, since a misspelt limit would silently not apply.
    pub fn from_json(value: &Value) -> Result<ResourceLimits, LimitsError> {
        let Value::Object(fields) = value else {
            return Err(error(
                "",
                format!(
                    "expected an object such as {{\"memory\": \"256MiB\", \"open_files\": 1024}}, got {value}"
                ),
            ));
        };
        let mut limits = ResourceLimits::default();
        for (name, value) in fields {
            let Some(&(_, kind)) = FIELDS.iter().find(|(field, _)| field == name) else {
                let known: Vec<&str> = FIELDS.iter().map(|(field, _)| *field).collect();
                let hint = strsim_hint(name, &known);
                return Err(error(
                    name,
                    format!("unknown limit{hint}; the limits are {}", known.join(", ")),
                ));
            };
            let parsed = match (kind, value) {
                (LimitKind::Memory, Value::String(text)) => parse_size(text),
                (_, Value::Number(n)) => n
                    .as_u64()
                    .ok_or_else(|| format!("{n} is not a whole number of at least 1")),
                (LimitKind::Memory, other) => Err(format!(
                    "{other} is not a size; write bytes (268435456) or a size such as \"256MiB\""
                )),
                (_, other) => Err(format!("{other} is not a whole number")),
            }
            .map_err(|problem| error(name, problem))?;
            if parsed == 0 {
                return Err(error(name, "must be more than 0 (omit it for no limit)"));
            }
            limits.set(kind, Some(parsed));
        }
        Ok(limits)
    }
}

fn strsim_hint(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .find(|k| strsim::levenshtein(name, k) <= 2)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Binary and decimal units, upper-cased, and their sizes.
const UNITS: [(&str, u64); 14] = [
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KIB", 1 << 10),
    ("KB", 1000),
    ("M", 1 << 20),
    ("MIB", 1 << 20),
    ("MB", 1000 * 1000),
    ("G", 1 << 30),
    ("GIB", 1 << 30),
    ("GB", 1000 * 1000 * 1000),
    ("T", 1 << 40),
    ("TIB", 1 << 40),
    ("TB", 1_000_000_000_000),
];

/// A size: `268435456`, `256MiB`, `256M` (binary, as systemd), `1.5GiB`,
/// `500MB` (decimal). Case does not matter; a space before the unit is fine.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size; write bytes or a number with a unit: K, M, G, T or KiB, MiB, GiB, TiB (1024s), KB, MB, GB, TB (1000s), e.g. \"256MiB\""
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let factor = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor)
        .ok_or_else(bad)?;
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(factor)
            .ok_or_else(|| format!("{text:?} is more than {} bytes", u64::MAX));
    }
    let fraction: f64 = number.parse().map_err(|_| bad())?;
    let bytes = fraction * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is more than {} bytes", u64::MAX));
    }
    Ok(bytes as u64)
}

/// `256 MiB`, `1.5 GiB`, `1000 bytes`.
pub(crate) fn show_bytes(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift {
            let value = bytes as f64 / (1u64 << shift) as f64;
            return match bytes % (1 << shift) {
                0 => format!("{} {unit}", bytes >> shift),
                _ => format!("{value:.1} {unit}"),
            };
        }
    }
    format!("{bytes} bytes")
}

/// How a limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Enforcement {
    /// setrlimit in the plugin process, before its exec.
    Setrlimit,
    /// A cgroup v2 of the plugin's own.
    Cgroup,
}

/// One limit in force on a plugin process, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnforcedLimit {
    /// Which limit.
    pub limit: LimitKind,
    /// Its value: bytes, descriptors, processes or seconds.
    pub value: u64,
    /// setrlimit or cgroup.
    pub by: Enforcement,
}

impl std::fmt::Display for EnforcedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match (self.by, self.limit) {
            (Enforcement::Setrlimit, kind) => kind.rlimit_name(),
            (Enforcement::Cgroup, LimitKind::Memory) => "cgroup memory.max",
            (Enforcement::Cgroup, LimitKind::Processes) => "cgroup pids.max",
            (Enforcement::Cgroup, _) => "cgroup",
        };
        write!(
            f,
            "{} {} ({how})",
            self.limit.field().replace('_', " "),
            self.limit.show(self.value)
        )
    }
}

/// Whether a cgroup of the plugin's own takes this limit (memory.max,
/// pids.max) when there is one; the others are always setrlimit.
fn cgroup_takes(kind: LimitKind) -> bool {
    matches!(kind, LimitKind::Memory | LimitKind::Processes)
}

/// The limits in force, as the status and `check` list them, with or
/// without a cgroup of the plugin's own.
pub(crate) fn enforced(limits: &ResourceLimits, in_cgroup: bool) -> Vec<EnforcedLimit> {
    limits
        .iter()
        .map(|(limit, value)| EnforcedLimit {
            limit,
            value,
            by: match in_cgroup && cgroup_takes(limit) {
                true => Enforcement::Cgroup,
                false => Enforcement::Setrlimit,
            },
        })
        .collect()
}

/// The setrlimit values a spawn applies: (resource, soft, hard); without
/// those a cgroup of the plugin's own takes. The CPU limit's hard value is
/// one second above its soft one, so the plugin gets SIGXCPU (which a Python
/// plugin dies of) and then SIGKILL (for a Go plugin, whose runtime ignores
/// SIGXCPU).
pub(crate) fn rlimits(limits: &ResourceLimits, in_cgroup: bool) -> Vec<(LimitKind, u64, u64)> {
    limits
        .iter()
        .filter(|(kind, _)| !(in_cgroup && cgroup_takes(*kind)))
        .map(|(kind, value)| match kind {
            LimitKind::CpuSeconds => (kind, value, value.saturating_add(1)),
            _ => (kind, value, value),
        })
        .collect()
}

/// What is known of a process that ended, to tell whether a limit did it.
#[derive(Debug, Default)]
pub(crate) struct Evidence<'a> {
    /// The signal that killed it.
    pub(crate) signal: Option<i32>,
    /// The CPU time it had used (the reaped process's rusage).
    pub(crate) cpu: Option<Duration>,
    /// Its last out-of-memory line on stderr.
    pub(crate) out_of_memory: Option<&'a str>,
    /// Kills at memory.max, when it had a cgroup: `None` without one.
    pub(crate) oom_kills: Option<u64>,
}

/// Lines in a plugin's stderr that mean it ran out of memory: the Go
/// runtime's fatal errors (`fatal error: out of memory` since Go 1.2x,
/// `fatal error: runtime: out of memory` before, and the one at start-up when
/// the limit leaves no room for its heap's reservations), each at the start
/// of its line, and Python's MemoryError (its traceback's last line, which
/// starts with it).
const GO_OUT_OF_MEMORY: [&str; 3] = [
    "fatal error: out of memory",
    "fatal error: runtime: out of memory",
    "fatal error: failed to reserve page summary memory",
];

/// Whether a stderr line is a runtime saying it ran out of memory. Every
/// stderr line passes here: a prefix check first keeps it cheap.
pub(crate) fn says_out_of_memory(line: &str) -> bool {
    (line.starts_with("fatal error: ") && GO_OUT_OF_MEMORY.iter().any(|m| line.starts_with(m)))
        || line.starts_with("MemoryError")
}

/// Why an exit was a limit's doing, or `None`. Only a limit that is set can
/// be the reason:
/// - memory, in a cgroup: memory.events counts an `oom_kill`;
/// - memory, under setrlimit: the plugin's stderr said it ran out of memory
///   (`out_of_memory`: the last such line; RLIMIT_AS makes allocations fail
///   and the runtime then exits on its own, with `fatal error: out of
///   memory` from Go or a `MemoryError` from Python);
/// - CPU time: it was killed by SIGXCPU or SIGKILL and had used at least its
///   CPU seconds (from the kernel's accounting of the reaped process).
pub(crate) fn exit_reason(limits: &ResourceLimits, evidence: &Evidence) -> Option<String> {
    if let Some(seconds) = limits.cpu_seconds
        && matches!(
            evidence.signal,
            Some(nix::libc::SIGXCPU | nix::libc::SIGKILL)
        )
        && evidence
            .cpu
            .is_some_and(|used| used >= Duration::from_secs(seconds))
    {
        let used = evidence.cpu.unwrap_or_default();
        return Some(format!(
            "at its CPU time limit ({seconds} s, RLIMIT_CPU: it had used {:.1} s of CPU)",
            used.as_secs_f64()
        ));
    }
    let bytes = limits.memory?;
    if let Some(kills) = evidence.oom_kills.filter(|&kills| kills > 0) {
        return Some(format!(
            "at its memory limit ({}, cgroup memory.max: the kernel's OOM killer ended it, memory.events says oom_kill {kills})",
            show_bytes(bytes)
        ));
    }
    let line = evidence.out_of_memory?;
    let line: String = line.chars().take(200).collect();
    Some(format!(
        "at its memory limit ({}, RLIMIT_AS: its stderr says {line:?})",
        show_bytes(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_in_bytes_binary_and_decimal_units() {
        assert_eq!(parse_size("268435456"), Ok(268435456));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256 mib"), Ok(256 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "MiB", "256 megs", "-1M", "1.2.3G", "twelve"] {
            let error = parse_size(bad).unwrap_err();
            assert!(error.contains("is not a size"), "{bad:?}: {error}");
            assert!(error.contains("256MiB"), "{bad:?}: {error}");
        }
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn bytes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(show_bytes(256 << 20), "256 MiB");
        assert_eq!(show_bytes(3 << 29), "1.5 GiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }

    #[test]
    fn limits_from_json_and_their_errors() {
        let limits = ResourceLimits::from_json(&json!({
            "memory": "256MiB", "open_files": 1024, "processes": 64, "cpu_seconds": 600
        }))
        .unwrap();
        assert_eq!(
            limits.iter().collect::<Vec<_>>(),
            [
                (LimitKind::Memory, 256 << 20),
                (LimitKind::OpenFiles, 1024),
                (LimitKind::Processes, 64),
                (LimitKind::CpuSeconds, 600)
            ]
        );
        let bytes = ResourceLimits::from_json(&json!({"memory": 1048576})).unwrap();
        assert_eq!(bytes.memory, Some(1 << 20));
        let error = |value| ResourceLimits::from_json(&value).unwrap_err().to_string();
        assert_eq!(
            error(json!({"open_files": 0})),
            "`limits.open_files`: must be more than 0 (omit it for no limit)"
        );
        assert!(error(json!({"open_files": -3})).contains("not a whole number"));
        assert!(error(json!({"open_files": "many"})).contains("not a whole number"));
        assert!(error(json!({"memory": "lots"})).contains("\"lots\" is not a size"));
        assert!(error(json!({"memory": true})).contains("is not a size"));
        let typo = error(json!({"open_file": 10}));
        assert!(
            typo.contains("unknown limit (did you mean `open_files`?)"),
            "{typo}"
        );
        assert!(error(json!([1])).contains("expected an object"));
    }

    #[test]
    fn an_override_replaces_only_what_it_sets() {
        let manifest = ResourceLimits {
            memory: Some(1 << 30),
            open_files: Some(100),
            ..ResourceLimits::default()
        };
        let over = ResourceLimits {
            open_files: Some(50),
            cpu_seconds: Some(5),
            ..ResourceLimits::default()
        };
        let merged = manifest.overridden_by(&over);
        assert_eq!(merged.memory, Some(1 << 30));
        assert_eq!(merged.open_files, Some(50));
        assert_eq!(merged.cpu_seconds, Some(5));
        assert!(ResourceLimits::default().is_empty());
    }

    #[test]
    fn the_cpu_limit_kills_one_second_after_its_warning() {
        let limits = ResourceLimits {
            cpu_seconds: Some(2),
            open_files: Some(64),
            ..ResourceLimits::default()
        };
        assert_eq!(
            rlimits(&limits, false),
            [
                (LimitKind::OpenFiles, 64, 64),
                (LimitKind::CpuSeconds, 2, 3)
            ]
        );
    }

    #[test]
    fn a_cgroup_takes_memory_and_processes_only() {
        let limits = ResourceLimits::from_json(&json!({
            "memory": 1024, "open_files": 8, "processes": 4, "cpu_seconds": 9
        }))
        .unwrap();
        let by: Vec<Enforcement> = enforced(&limits, true).iter().map(|l| l.by).collect();
        use Enforcement::{Cgroup, Setrlimit};
        assert_eq!(by, [Cgroup, Setrlimit, Cgroup, Setrlimit]);
        let kinds: Vec<LimitKind> = rlimits(&limits, true).iter().map(|l| l.0).collect();
        assert_eq!(kinds, [LimitKind::OpenFiles, LimitKind::CpuSeconds]);
        assert_eq!(rlimits(&limits, false).len(), 4);
    }

    #[test]
    fn an_exit_is_a_limit_only_when_that_limit_is_set_and_the_evidence_says_so() {
        let go_oom = Evidence {
            out_of_memory: Some("fatal error: out of memory"),
            ..Evidence::default()
        };
        assert!(says_out_of_memory("fatal error: runtime: out of memory"));
        assert!(says_out_of_memory("fatal error: out of memory"));
        assert!(says_out_of_memory("MemoryError"));
        assert!(says_out_of_memory("MemoryError: cannot allocate"));
        assert!(!says_out_of_memory("goroutine 1 [running]:"));
        assert!(!says_out_of_memory(
            "fatal error: all goroutines are asleep"
        ));
        let memory = ResourceLimits {
            memory: Some(64 << 20),
            ..ResourceLimits::default()
        };
        let reason = exit_reason(&memory, &go_oom).unwrap();
        assert!(
            reason.starts_with("at its memory limit (64 MiB, RLIMIT_AS"),
            "{reason}"
        );
        assert_eq!(exit_reason(&ResourceLimits::default(), &go_oom), None);
        assert_eq!(exit_reason(&memory, &Evidence::default()), None);
        let killed = Evidence {
            signal: Some(nix::libc::SIGKILL),
            oom_kills: Some(1),
            ..Evidence::default()
        };
        let reason = exit_reason(&memory, &killed).unwrap();
        assert!(reason.contains("cgroup memory.max"), "{reason}");
        let not_killed = Evidence {
            oom_kills: Some(0),
            ..Evidence::default()
        };
        assert_eq!(exit_reason(&memory, &not_killed), None);

        let cpu = ResourceLimits {
            cpu_seconds: Some(1),
            ..ResourceLimits::default()
        };
        let spent = |signal, millis| Evidence {
            signal,
            cpu: Some(Duration::from_millis(millis)),
            ..Evidence::default()
        };
        let kill = Some(nix::libc::SIGKILL);
        let reason = exit_reason(&cpu, &spent(kill, 1900)).unwrap();
        assert!(reason.contains("CPU time limit (1 s"), "{reason}");
        // A SIGKILL well before the limit is someone else's.
        assert_eq!(exit_reason(&cpu, &spent(kill, 10)), None);
        assert_eq!(exit_reason(&cpu, &spent(None, 1900)), None);
    }
}
