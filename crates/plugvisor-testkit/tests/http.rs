//! HTTP under /plugins/{id}/ and the operator's endpoints, through the real
//! `plugvisor run --http` with a real HTTP client (reqwest), to real plugins:
//! the Go SDK's test plugin (net/http), Flask and FastAPI apps on the Python
//! SDK, and the fake plugin's bad answers. After each case the host holds no
//! more file descriptors than before it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use plugvisor_testkit::*;
use sha2_free::sha256_hex;

/// A `plugvisor run --http 127.0.0.1:0` of its own, so that its file
/// descriptors and log are the host's alone.
struct Host(HttpRun);

impl std::ops::Deref for Host {
    type Target = HttpRun;
    fn deref(&self) -> &HttpRun {
        &self.0
    }
}

impl Host {
    fn start(plugins: &Path, extra: &[&str]) -> Host {
        let host = Host(HttpRun::start(plugins, "127.0.0.1:0", extra));
        host.wait_running();
        host
    }

    fn statuses(&self) -> Vec<serde_json::Value> {
        let output = Command::new(plugvisor_bin())
            .args(["status", "--json", "--control-socket"])
            .arg(&self.socket)
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    fn wait_running(&self) {
        let ok = eventually(Duration::from_secs(20), || {
            let statuses = self.statuses();
            !statuses.is_empty() && statuses.iter().all(|s| s["state"] == "Running")
        });
        assert!(
            ok,
            "not all Running: {:?}\n{:?}",
            self.statuses(),
            self.log.lock().unwrap()
        );
    }

    fn ctl(&self, args: &[&str]) {
        let output = Command::new(plugvisor_bin())
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// What the host's file descriptors point to.
    fn fds(&self) -> Vec<String> {
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| {
                // Sockets and pipes differ by inode; count them by kind.
                let target = target.display().to_string();
                target.split(':').next().unwrap_or_default().to_string()
            })
            .collect();
        fds.sort();
        fds
    }

    /// The host holds no more descriptors than `before` once connections close.
    fn assert_no_leak(&self, before: Vec<String>) {
        let ok = eventually(Duration::from_secs(5), || self.fds().len() <= before.len());
        assert!(ok, "the host holds {:?}, before {before:?}", self.fds());
    }
}

/// The Go SDK's test plugin (net/http handlers), as bundle `go-http`.
fn go_bundle(plugins: &Path) {
    let dir = plugins.join("go-http");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"id":"go-http","version":"1.0.0","server":{"executable":"plugin"}}"#,
    )
    .unwrap();
    std::fs::copy(built_artifact("target/go/sdkplugin"), dir.join("plugin")).unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

mod sha2_free {
    /// SHA-256 through the system's sha256sum, to avoid a hashing crate for one test.
    pub fn sha256_hex(bytes: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_plugin_gets_the_request_as_net_http_would_see_it() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(root.path());
    let host = Host::start(root.path(), &[]);
    let before = host.fds();
    let answer = client()
        .get(host.url("/plugins/go-http/request/a%2Fb?a=1&a=2"))
        .header("X-Custom", "yes")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "dropped")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/request/a/b");
    assert_eq!(seen["raw_path"], "/request/a%2Fb");
    assert_eq!(seen["query_a"], serde_json::json!(["1", "2"]));
    assert_eq!(seen["mount_path"], "/plugins/go-http");
    assert_eq!(seen["header"]["X-Custom"], serde_json::json!(["yes"]));
    assert!(
        seen["header"].get("X-Hop").is_none(),
        "hop-by-hop header forwarded: {seen}"
    );
    assert!(seen["header"].get("Connection").is_none(), "{seen}");
    assert!(
        seen["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{seen}"
    );

    // A large upload streams through and arrives whole.
    let body: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = sha256_hex(&body);
    let answer = client()
        .post(host.url("/plugins/go-http/sha256"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let digest: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(digest["bytes"], 50 * 1024 * 1024);
    assert_eq!(digest["sha256"], expected);
    host.assert_no_leak(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_at_once() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(root.path());
    let host = Host::start(root.path(), &[]);
    let before = host.fds();
    // /echo writes back each chunk as it reads it: each echo must arrive
    // before the next chunk is sent, so nothing waits for a whole body.
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let request =
        client()
            .post(host.url("/plugins/go-http/echo"))
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(body),
            ));
    chunks.send(Ok(b"ping 0".to_vec())).await.unwrap();
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut echoes = answer.bytes_stream();
    for i in 0..5 {
        let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
            .await
            .expect("the echo came before the body ended")
            .unwrap()
            .unwrap();
        assert_eq!(echo, format!("ping {i}").as_bytes());
        chunks
            .send(Ok(format!("ping {}", i + 1).into_bytes()))
            .await
            .unwrap();
    }
    drop(chunks);
    assert_eq!(echoes.next().await.unwrap().unwrap(), b"ping 5".as_slice());
    assert!(
        echoes.next().await.is_none(),
        "the response ends with the request"
    );

    // Server-sent events arrive as written.
    let events = client()
        .get(host.url("/plugins/go-http/stream?n=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let text = events.text().await.unwrap();
    assert_eq!(text, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
    host.assert_no_leak(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_handler() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(root.path());
    let host = Host::start(root.path(), &[]);
    let before = host.fds();
    let answer = client()
        .get(host.url("/plugins/go-http/wait"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    drop(answer);
    assert!(
        host.logged("request context ended").is_some(),
        "the handler did not see the client go: {:?}",
        host.log.lock().unwrap()
    );
    assert!(host.logged("context canceled").is_some());
    host.assert_no_leak(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_fails_mid_response_breaks_the_connection() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(root.path());
    let host = Host::start(root.path(), &[]);
    let before = host.fds();
    // The head may reach the client before the break, or not: either way
    // the client must see a broken response, never a complete one.
    let answer = client()
        .get(host.url("/plugins/go-http/panic?after_head=1"))
        .send()
        .await;
    if let Ok(answer) = answer {
        assert_eq!(answer.status(), 200, "the head was sent before the panic");
        let body = answer.bytes().await;
        assert!(
            body.is_err(),
            "a truncated body ended as if it were whole: {body:?}"
        );
    }
    // Before the head: a clean 502.
    let answer = client()
        .get(host.url("/plugins/go-http/panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    assert!(answer.text().await.unwrap().contains("Internal"));
    let metrics = client()
        .get(host.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"plugvisor_plugin_http_requests_total{plugin="go-http",status="aborted"} 1"#
        ),
        "{metrics}"
    );
    host.assert_no_leak(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stopped_and_oversized_requests_get_their_status() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(root.path());
    native_fake_bundle(root.path(), "no-http", "--hooks OnActivate");
    let host = Host::start(
        root.path(),
        &[
            "--http-max-body-bytes",
            "1000",
            "--http-max-header-bytes",
            "2048",
        ],
    );
    // A first restart opens what the host keeps open from then on (the store's journal).
    host.ctl(&["restart", "go-http"]);
    let before = host.fds();
    let get = |path: &str| client().get(host.url(path)).send();
    assert_eq!(get("/plugins/nobody/").await.unwrap().status(), 404);
    assert_eq!(get("/plugins/no-http/").await.unwrap().status(), 404);
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = redirect
        .get(host.url("/plugins/go-http?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/plugins/go-http/?x=1");
    drop((moved, redirect)); // its keep-alive connection is the test's, not a leak
    // Over the limits.
    let big = client()
        .post(host.url("/plugins/go-http/sha256"))
        .body(vec![0u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let chunked = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![0u8; 100])));
    let big = client()
        .post(host.url("/plugins/go-http/sha256"))
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413, "a chunked body is counted too");
    let huge = client()
        .get(host.url("/plugins/go-http/request"))
        .header("X-Big", "x".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 431);
    // A stopped plugin: 503, come back soon.
    host.ctl(&["stop", "go-http"]);
    let stopped = get("/plugins/go-http/request").await.unwrap();
    assert_eq!(stopped.status(), 503);
    assert_eq!(stopped.headers()["retry-after"], "1");
    let ready = get("/readyz").await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a stopped plugin is not expected to run"
    );
    host.ctl(&["start", "go-http"]);
    assert_eq!(get("/plugins/go-http/request").await.unwrap().status(), 200);
    host.assert_no_leak(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_never_hold_up_other_plugins_or_the_host() {
    let root = tempfile::tempdir().unwrap();
    for mode in ["hang", "bad-status", "body-first", "forever"] {
        native_fake_bundle(
            root.path(),
            &format!("http-{mode}"),
            &format!("--http {mode}"),
        );
    }
    go_bundle(root.path());
    let host = Host::start(root.path(), &["--http-timeout", "1s"]);
    let before = host.fds();
    let get = |path: &str| client().get(host.url(path)).send();
    // One answer that never ends, read slowly, in the background.
    let forever = get("/plugins/http-forever/").await.unwrap();
    assert_eq!(forever.status(), 200);
    let mut forever = forever.bytes_stream();
    assert!(
        forever
            .next()
            .await
            .unwrap()
            .unwrap()
            .starts_with(b"part 0")
    );
    // Meanwhile everything else answers.
    let hang = get("/plugins/http-hang/").await.unwrap();
    assert_eq!(hang.status(), 504);
    assert!(
        hang.text()
            .await
            .unwrap()
            .contains("did not answer within 1s")
    );
    let status = get("/plugins/http-bad-status/").await.unwrap();
    assert_eq!(status.status(), 502);
    assert!(status.text().await.unwrap().contains("status 42"));
    let body_first = get("/plugins/http-body-first/").await.unwrap();
    assert_eq!(body_first.status(), 502);
    assert_eq!(get("/plugins/go-http/request").await.unwrap().status(), 200);
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let plugins: Vec<serde_json::Value> =
        get("/api/v1/plugins").await.unwrap().json().await.unwrap();
    assert_eq!(plugins.len(), 5);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    drop(forever);
    host.assert_no_leak(before);
}

/// The Python SDK's HTTP test plugin (a Flask or a FastAPI app, by
/// PVTEST_FRAMEWORK), as bundle `py-http`, under the test venv's python.
fn python_host(framework: &str, marker: &Path) -> (Host, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("py-http");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"id":"py-http","version":"1.0.0","server":{"executable":"plugin.py"}}"#,
    )
    .unwrap();
    let app = repo_root().join("sdk/python/tests/plugins/http_plugin.py");
    let script = format!(
        "import os\nos.environ['PVTEST_FRAMEWORK'] = {framework:?}\nos.environ['PVTEST_MARKER'] = {:?}\nexec(compile(open({:?}).read(), 'http_plugin.py', 'exec'))\n",
        marker.display().to_string(),
        app.display().to_string()
    );
    std::fs::write(dir.join("plugin.py"), script).unwrap();
    let python = test_python();
    let host = Host::start(root.path(), &["--interpreter", python.to_str().unwrap()]);
    (host, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_and_fastapi_apps_stream_both_ways() {
    for framework in ["flask", "fastapi"] {
        let marks = tempfile::tempdir().unwrap();
        let marker = marks.path().join("marker");
        let (host, _root) = python_host(framework, &marker);
        let before = host.fds();
        let seen = client()
            .get(host.url("/plugins/py-http/where?x=1"))
            .header("X-Test", "hello")
            .send()
            .await
            .unwrap();
        assert_eq!(seen.status(), 200, "{framework}");
        assert_eq!(seen.headers()["x-echo"], "hello");
        let cookies: Vec<_> = seen.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 2, "{framework}: both cookies");
        let seen: serde_json::Value = seen.json().await.unwrap();
        if framework == "flask" {
            assert_eq!(seen["SCRIPT_NAME"], "/plugins/py-http", "{seen}");
            assert_eq!(seen["PATH_INFO"], "/where", "{seen}");
            assert_eq!(seen["QUERY_STRING"], "x=1", "{seen}");
        }
        // A 20 MB upload, read by the app in chunks.
        let body: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let expected = sha256_hex(&body);
        let digest: serde_json::Value = client()
            .post(host.url("/plugins/py-http/upload"))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(digest["sha256"], expected, "{framework}");
        // A generator's chunks arrive one by one.
        let text = client()
            .get(host.url("/plugins/py-http/stream?n=4"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n", "{framework}");
        // A client that goes away stops the app's endless stream.
        let forever = client()
            .get(host.url("/plugins/py-http/forever"))
            .send()
            .await
            .unwrap();
        let mut ticks = forever.bytes_stream();
        assert!(ticks.next().await.unwrap().unwrap().starts_with(b"tick 0"));
        drop(ticks);
        assert!(
            eventually(Duration::from_secs(10), || std::fs::read_to_string(&marker)
                .unwrap_or_default()
                .contains("stream closed")),
            "{framework}: the app did not see the client go"
        );
        // Failures before the head are a 500; after it, a broken response.
        let before_head = client()
            .get(host.url("/plugins/py-http/fail-before"))
            .send()
            .await
            .unwrap();
        assert_eq!(before_head.status(), 500, "{framework}");
        let after_head = client()
            .get(host.url("/plugins/py-http/fail-after"))
            .send()
            .await
            .unwrap();
        assert_eq!(after_head.status(), 200);
        assert!(
            after_head.bytes().await.is_err(),
            "{framework}: a truncated body looked whole"
        );
        host.assert_no_leak(before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_crashes_mid_stream_aborts_the_response_and_comes_back() {
    let marks = tempfile::tempdir().unwrap();
    let (host, _root) = python_host("flask", &marks.path().join("marker"));
    let pid = host.statuses()[0]["pid"].as_u64().unwrap() as i32;
    let forever = client()
        .get(host.url("/plugins/py-http/forever"))
        .send()
        .await
        .unwrap();
    let mut ticks = forever.bytes_stream();
    assert!(ticks.next().await.unwrap().is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let broke = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ticks.next().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await
    .expect("the response neither broke nor ended");
    assert!(
        broke,
        "a crashed plugin's response ended as if it were whole"
    );
    // Restarted at once, and serving again.
    assert!(eventually(Duration::from_secs(10), || {
        let status = &host.statuses()[0];
        status["restarts"] == 1 && status["state"] == "Running"
    }));
    let back = client()
        .get(host.url("/plugins/py-http/stream?n=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.text().await.unwrap(), "chunk 0\n");
}
