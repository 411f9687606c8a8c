//! A real browser for the tests: the distribution's headless Chromium,
//! driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! NUL-separated JSON on its fds 3 and 4), so no port, no WebSocket and no
//! driver download. Clicks and typing are the browser's own input events.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// Where `scripts/setup` installs Debian's `chromium`.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one DevTools call, or one wait for the page, may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// One headless Chromium with one page, and its own profile in a temporary
/// directory; dropping it closes the browser, kills what is left of its
/// process group and removes the profile.
pub struct Browser {
    child: Child,
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Uncaught exceptions and console errors of the page, for failure messages.
    errors: Vec<String>,
    loaded: bool,
    profile: Option<tempfile::TempDir>,
}

impl Browser {
    /// Starts Chromium. Panics, saying what to run, when it is not installed.
    pub fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run ./scripts/setup (it installs Debian's chromium)"
        );
        let profile = tempfile::tempdir().unwrap();
        let (chrome_reads, we_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (we_read, chrome_writes) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // Above 4 first: dup2 onto itself would keep close-on-exec, and one
        // end at 3 or 4 would be overwritten by the other's dup2.
        let high = |fd: &OwnedFd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).unwrap()
        };
        let (input, output) = (high(&chrome_reads), high(&chrome_writes));
        drop((chrome_reads, chrome_writes));
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Its own temporary files go with the profile.
            .env("TMPDIR", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if nix::libc::dup2(input, 3) < 0 || nix::libc::dup2(output, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // SAFETY: both were made above and are closed once, here.
        unsafe {
            nix::libc::close(input);
            nix::libc::close(output);
        }
        let (sender, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || read_messages(we_read, sender));
        let mut browser = Browser {
            child,
            commands: File::from(we_write),
            messages,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            loaded: false,
            profile: Some(profile),
        };
        browser.call_browser("Browser.getVersion", json!({}));
        browser
    }

    /// Opens `url` in a new page and waits for its load event.
    pub fn open(&mut self, url: &str) {
        self.new_page();
        self.navigate(url);
    }

    /// Opens a blank page, which the calls from here on act on.
    pub fn new_page(&mut self) {
        let target = self.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        self.call("Page.enable", json!({}));
        self.call("Runtime.enable", json!({}));
        // A page behind another tab gets its frames and timers throttled.
        self.call("Page.bringToFront", json!({}));
    }

    /// Runs `script` in every document the page loads from now on, before
    /// the document's own scripts (for a measurement's instruments).
    pub fn before_each_document(&mut self, script: &str) {
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": script}),
        );
    }

    /// Loads `url` in the page and waits for its load event.
    pub fn navigate(&mut self, url: &str) {
        self.loaded = false;
        let answer = self.call("Page.navigate", json!({"url": url}));
        assert!(answer.get("errorText").is_none(), "{url}: {answer}");
        let deadline = Instant::now() + PATIENCE;
        while !self.loaded {
            assert!(Instant::now() < deadline, "{url} did not load");
            self.pump(Duration::from_millis(100));
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy (or a non-empty string or array)
    /// and returns it; panics after 30 s saying `what`, with the page's errors.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(expression);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Object(_) => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({expression}); page errors: {:?}; last value: {value}",
                self.errors
            );
            self.pump(Duration::from_millis(20));
        }
    }

    /// The text of the first element matching `selector` ("" when none).
    pub fn text(&mut self, selector: &str) -> String {
        let expression = format!(
            "document.querySelector({})?.textContent ?? ''",
            js_string(selector)
        );
        self.eval(&expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks the middle of the element matching `selector` with the mouse.
    pub fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            js_string(selector)
        );
        let point = self.eval(&expression);
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            panic!("nothing to click matches {selector}");
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Replaces the text of the input matching `selector` by typing `text`.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); e.select(); return true; }})()",
            js_string(selector)
        );
        assert_eq!(self.eval(&expression), Value::Bool(true), "no {selector}");
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A PNG of the page at `width` × `height` CSS pixels, written to `path`.
    pub fn screenshot(&mut self, path: &Path, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The page's uncaught exceptions and console errors so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, session)
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => panic!("Chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("Chromium exited during {method}"),
            };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    /// Reads the events that arrive within `wait`.
    fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Ok(message) = self
            .messages
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.note(&message);
        }
    }

    fn note(&mut self, message: &Value) {
        match message["method"].as_str() {
            Some("Page.loadEventFired") => self.loaded = true,
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(message["params"]["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if message["params"]["type"] == "error" => {
                self.errors.push(message["params"]["args"].to_string())
            }
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let mut closed =
            serde_json::to_vec(&json!({"id": 0, "method": "Browser.close", "params": {}})).unwrap();
        closed.push(0);
        let _ = self.commands.write_all(&closed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of it: renderers, the zygote.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(profile) = self.profile.take() {
            let _ = profile.close();
        }
    }
}

/// `text` as a JavaScript string literal.
pub fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn read_messages(fd: OwnedFd, sender: std::sync::mpsc::Sender<Value>) {
    let mut pipe = File::from(fd);
    let mut pending = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        let n = match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buffer[..n]);
        while let Some(end) = pending.iter().position(|&b| b == 0) {
            let message: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&message[..end])
                && sender.send(value).is_err()
            {
                return;
            }
        }
    }
}
