//! bench/ui-page: the status page with many plugins (not a test). Starts
//! `plugvisor run --http` on N fake plugins (default 1000), loads the page
//! in headless Chromium, and measures
//!
//! - the render: from the navigation's start to the frame after the table
//!   has all N rows (median of several loads), and on the way when the
//!   host's snapshot arrived and when the rows were in the document;
//! - a restart of all of them at once (N concurrent POSTs, as many pages or
//!   scripts could send): how many events reach the page, whether it had to
//!   resync, how far behind the host each event arrived, and when the page
//!   shows every plugin Running with its new pid.
//!
//! `cargo run -p plugvisor-testkit --example ui_many -- [N] [LOADS] [render]`
//! after `cargo build --workspace --bins` (`render`: the loads only); prints
//! one JSON object.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plugvisor_testkit::browser::Browser;
use plugvisor_testkit::*;
use serde_json::{Value, json};

fn request(address: &str, method: &str, path: &str, token: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nX-Plugvisor-Token: {token}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: the JSON is the middle line.
    let body = match body
        .lines()
        .find(|l| l.starts_with('[') || l.starts_with('{'))
    {
        Some(line) => line.to_string(),
        None => body.to_string(),
    };
    (status, body)
}

fn statuses(address: &str) -> Vec<Value> {
    let (_, body) = request(address, "GET", "/api/v1/plugins", "");
    serde_json::from_str(&body).unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Counts what the page receives, and when its table is whole.
const INSTRUMENTS: &str = r#"
window.bench = {events: 0, resyncs: 0, lags: [], snapshotAt: null, rowsAt: null, paintedAt: null, frames: []};
// Where the long frames' time goes: script, then style and layout, then paint.
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) bench.frames.push({
    start: Math.round(e.startTime), ms: Math.round(e.duration),
    script_ms: Math.round((e.renderStart || e.startTime + e.duration) - e.startTime),
    style_layout_ms: e.styleAndLayoutStart ? Math.round(e.startTime + e.duration - e.styleAndLayoutStart) : 0,
  });
}).observe({type: "long-animation-frame", buffered: true});
const Original = window.EventSource;
window.EventSource = function (url) {
  const source = new Original(url);
  // Before the page's own listener: when the host's snapshot arrived.
  source.addEventListener("snapshot", () => { bench.snapshotAt ??= performance.now(); });
  source.addEventListener("plugin", (m) => {
    bench.events++;
    bench.lags.push(Date.now() - JSON.parse(m.data).status.since_unix_ms);
  });
  // A page that fell behind gets a new snapshot that says how many it missed.
  source.addEventListener("snapshot", (m) => { if (!m.data.startsWith('{"missed":0,')) bench.resyncs++; });
  return source;
};
// The rows are in groups, one <tbody> each, which the page replaces.
document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table");
  const whole = new MutationObserver(() => {
    if (table.querySelectorAll("tbody tr").length === WANTED) {
      bench.rowsAt = performance.now();
      whole.disconnect();
      requestAnimationFrame(() => setTimeout(() => { bench.paintedAt = performance.now(); }));
    }
  });
  whole.observe(table, {childList: true, subtree: true});
});
"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(1000);
    let loads: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(5);
    // `render`: only the page loads, no restart of all.
    let render_only = args.next().as_deref() == Some("render");
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    for i in 0..n {
        native_fake_bundle(&plugins, &format!("p{i:04}"), "--controller");
    }
    let mut host = Command::new(plugvisor_bin())
        .args(["run", "--json", "--no-watch", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg("--control-socket")
        .arg(root.path().join("control.sock"))
        .arg(&plugins)
        .env("PLUGVISOR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = host.stderr.take().unwrap();
    let (found, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !sent && let Some(rest) = line.split("HTTP on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = found.send(digits);
                sent = true;
            }
        }
    });
    let address = format!(
        "127.0.0.1:{}",
        port.recv_timeout(Duration::from_secs(30)).unwrap()
    );
    let started = Instant::now();
    let all_running = eventually(Duration::from_secs(600), || {
        let s = statuses(&address);
        s.len() == n && s.iter().all(|s| s["state"] == "Running")
    });
    assert!(all_running, "not all {n} plugins Running");
    let startup_s = started.elapsed().as_secs_f64();

    let mut browser = Browser::launch();
    browser.new_page();
    browser.before_each_document(&INSTRUMENTS.replace("WANTED", &n.to_string()));
    let mut renders = Vec::new();
    let mut rows_at = Vec::new();
    let mut snapshot_at = Vec::new();
    for _ in 0..loads {
        browser.navigate(&format!("http://{address}/"));
        let painted = browser.wait_for("the whole table", "bench.paintedAt");
        renders.push(painted.as_f64().unwrap());
        rows_at.push(browser.eval("bench.rowsAt").as_f64().unwrap());
        snapshot_at.push(browser.eval("bench.snapshotAt").as_f64().unwrap());
    }
    // Measurements of one's own, for working on the page: UI_MANY_EVAL=js.
    if let Ok(expression) = std::env::var("UI_MANY_EVAL") {
        eprintln!("UI_MANY_EVAL: {}", browser.eval(&expression));
    }
    if render_only {
        println!(
            "{}",
            json!({"plugins": n, "startup_s": startup_s, "render_ms_median": median(renders.clone()),
                   "render_ms_all": renders, "snapshot_received_ms_median": median(snapshot_at.clone()),
                   "rows_in_dom_ms_median": median(rows_at),
                   "relayout_ms": browser.eval("(() => { const b = document.querySelector('table'); b.style.display = 'none'; document.body.offsetHeight; b.style.display = ''; const t = performance.now(); document.body.offsetHeight; return performance.now() - t; })()"),
                   "last_load_long_frames": browser.eval("bench.frames")})
        );
        drop(browser);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(host.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = host.wait();
        return;
    }
    browser.wait_for(
        "the event stream",
        "document.querySelector('#connection').dataset.state === 'live'",
    );
    let token = browser.eval("TOKEN").as_str().unwrap().to_string();
    let before: Vec<(String, u64)> = statuses(&address)
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    browser.eval("bench.events = 0; bench.resyncs = 0; bench.lags = [];");

    // Every plugin restarted at once.
    let restart = Instant::now();
    let senders: Vec<_> = before
        .iter()
        .map(|(id, _)| {
            let (address, token, id) = (address.clone(), token.clone(), id.clone());
            std::thread::spawn(move || {
                request(
                    &address,
                    "POST",
                    &format!("/api/v1/ui/plugins/{id}/restart"),
                    &token,
                )
            })
        })
        .collect();
    let old_pids: Value = json!(
        before
            .iter()
            .map(|(_, pid)| pid.to_string())
            .collect::<Vec<_>>()
    );
    let page_caught_up = format!(
        r#"(() => {{ const old = new Set({old_pids});
             const rows = [...document.querySelectorAll('tbody tr')];
             return rows.length === {n} && rows.every(r => r.dataset.state === 'Running'
               && !old.has(r.querySelector('td[data-col="pid"]').textContent)); }})()"#
    );
    let mut page_s = None;
    while restart.elapsed() < Duration::from_secs(600) {
        if browser.eval(&page_caught_up) == json!(true) {
            page_s = Some(restart.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let answers: Vec<(u16, String)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let host_s = restart.elapsed().as_secs_f64();
    let failed = answers.iter().filter(|(s, _)| *s != 200).count();
    let mut failures: Vec<String> = answers
        .iter()
        .filter(|(s, _)| *s != 200)
        .map(|(s, body)| format!("{s} {}", body.chars().take(200).collect::<String>()))
        .collect();
    failures.sort();
    failures.dedup();
    failures.truncate(5);
    let page = browser.eval(
        "(() => { const l = bench.lags.slice().sort((a, b) => a - b);
                  return {events: bench.events, resyncs: bench.resyncs,
                          lag_p50_ms: l[Math.floor(l.length / 2)] ?? null,
                          lag_p99_ms: l[Math.floor(l.length * 0.99)] ?? null,
                          lag_max_ms: l[l.length - 1] ?? null}; })()",
    );
    let table_matches = {
        let host: Vec<String> = statuses(&address)
            .iter()
            .map(|s| format!("{} {} {}", s["id"], s["state"].as_str().unwrap(), s["pid"]))
            .collect();
        let shown = browser.eval(
            r#"[...document.querySelectorAll('tbody tr')].map(r => `"${r.dataset.id}" ${r.dataset.state} ${r.querySelector('td[data-col="pid"]').textContent}`)"#,
        );
        json!(host) == shown
    };
    let result = json!({
        "plugins": n,
        "startup_s": startup_s,
        "render_ms_median": median(renders.clone()),
        "render_ms_all": renders,
        "snapshot_received_ms_median": median(snapshot_at),
        "rows_in_dom_ms_median": median(rows_at),
        "restart_all": {
            "failed_requests": failed,
            "failures": failures,
            "page_all_running_new_pids_s": page_s,
            "last_answer_s": host_s,
            "page": page,
            "page_table_equals_host": table_matches,
        },
        "page_errors": browser.errors(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    drop(browser);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = host.wait();
}
