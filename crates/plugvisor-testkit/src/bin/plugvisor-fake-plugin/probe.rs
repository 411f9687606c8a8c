//! Tries what a sandbox should refuse, and reports each outcome: a line
//! `read PATH: ok` or `read PATH: <the OS error>` per attempt.
//!
//! Paths may name `{data}`, `{tmp}` and `{sockets}`: the plugin's data
//! directory, TMPDIR and socket directory from its environment.

use std::io::Write;

use crate::Flags;

fn expand(path: &str) -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    path.replace("{data}", &var("PLUGVISOR_DATA_DIR"))
        .replace("{tmp}", &std::env::temp_dir().to_string_lossy())
        .replace("{sockets}", &var("PLUGIN_UNIX_SOCKET_DIR"))
}

fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// Runs every attempt the flags ask for; writes the report to
/// `--probe-report` (expanded), or nowhere when no attempt was asked for.
pub fn run(flags: &Flags) {
    let mut lines = Vec::new();
    for path in flags.try_read.iter().map(|p| expand(p)) {
        let result = std::fs::read(&path).map(drop);
        lines.push(format!("read {path}: {}", outcome(result)));
    }
    for path in flags.try_list.iter().map(|p| expand(p)) {
        let result = std::fs::read_dir(&path).map(drop);
        lines.push(format!("list {path}: {}", outcome(result)));
    }
    for path in flags.try_write.iter().map(|p| expand(p)) {
        let result = std::fs::write(&path, b"written by a plugin\n");
        lines.push(format!("write {path}: {}", outcome(result)));
    }
    for address in &flags.try_connect {
        let result = std::net::TcpStream::connect(address).map(drop);
        lines.push(format!("connect {address}: {}", outcome(result)));
    }
    for port in &flags.try_bind {
        let result = std::net::TcpListener::bind(("127.0.0.1", *port)).map(drop);
        lines.push(format!("bind {port}: {}", outcome(result)));
    }
    if flags.try_signal_parent {
        let parent = nix::unistd::getppid();
        let result = nix::sys::signal::kill(parent, None).map_err(std::io::Error::from);
        lines.push(format!("signal parent: {}", outcome(result)));
    }
    let Some(report) = &flags.probe_report else {
        return;
    };
    let mut file = std::fs::File::create(expand(report)).expect("create the probe report");
    for line in lines {
        writeln!(file, "{line}").expect("write the probe report");
    }
}
