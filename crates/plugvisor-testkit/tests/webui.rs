//! The status page at `/` of `plugvisor run --http`, in a real browser
//! (headless Chromium, `plugvisor_testkit::browser`) against real plugin
//! processes; and its security with plain HTTP requests, so that a header
//! no browser would send can be sent.

use std::io::{Read, Write};
use std::path::Path;

use plugvisor_testkit::browser::Browser;
use plugvisor_testkit::*;

/// A `plugvisor run --http` of its own, with its log.
struct Host(HttpRun);

impl std::ops::Deref for Host {
    type Target = HttpRun;
    fn deref(&self) -> &HttpRun {
        &self.0
    }
}

impl Host {
    fn start(plugins: &Path, http: &str, extra: &[&str]) -> Host {
        let mut flags = vec!["--no-watch"];
        flags.extend(extra);
        Host(HttpRun::start(plugins, http, &flags))
    }

    /// One HTTP/1.1 request, exactly as given (`headers` may name any Host).
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {}\r\n", self.address));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .nth(1)
            .unwrap_or("0");
        Answer {
            status: status.parse().unwrap(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
            body: body.to_string(),
        }
    }

    /// The token the page embeds (read as the page's own origin can).
    fn token(&self) -> String {
        let page = self.raw("GET", "/", &[], "");
        assert_eq!(page.status, 200, "{}", page.body);
        let start = page
            .body
            .find("name=\"plugvisor-token\" content=\"")
            .unwrap()
            + 32;
        page.body[start..start + 64].to_string()
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The settings_schema of the `settable` plugin: every type the form makes.
fn every_setting_type() -> serde_json::Value {
    serde_json::json!({"settings": [
        {"key": "greeting", "display_name": "Greeting", "type": "text", "default": "Hello",
         "help_text": "What the plugin says."},
        {"key": "motd", "display_name": "Message of the day", "type": "longtext", "default": "line one\nline two"},
        {"key": "limit", "display_name": "Limit", "type": "number", "default": 5},
        {"key": "loud", "display_name": "Loud", "type": "bool", "default": false},
        {"key": "colour", "display_name": "Colour", "type": "dropdown", "default": "red",
         "options": [{"display_name": "Red", "value": "red"}, {"display_name": "Blue", "value": "blue"}]},
        {"key": "size", "display_name": "Size", "type": "radio", "default": "s",
         "options": [{"display_name": "Small", "value": "s"}, {"display_name": "Large", "value": "l"}]},
        {"key": "refuse", "display_name": "Refuse changes", "type": "bool", "default": false,
         "help_text": "The plugin refuses a configuration with this on."}
    ]})
}

/// Two fake plugins: `plain`, and `settable`, which logs each hook call
/// (with the configuration it got) and refuses `refuse=true`.
fn plugins(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = root.join("hooks.log");
    let plugins = root.join("plugins");
    native_fake_bundle(&plugins, "plain", "--controller");
    let flags = format!(
        "--controller --hooks OnActivate,OnConfigurationChange --refuse-config-key refuse --hook-log {}",
        log.display()
    );
    let settable = native_fake_bundle(&plugins, "settable", &flags);
    set_manifest_field(&settable, "settings_schema", every_setting_type());
    (plugins, log)
}

fn state_of(browser: &mut Browser, id: &str) -> String {
    browser.text(&format!("tr[data-id=\"{id}\"] td[data-col=\"state\"]"))
}

fn cell(browser: &mut Browser, id: &str, column: &str) -> String {
    browser.text(&format!("tr[data-id=\"{id}\"] td[data-col=\"{column}\"]"))
}

#[test]
fn the_table_fills_in_follows_a_crash_and_restarts_without_a_reload() {
    let root = tempfile::tempdir().unwrap();
    let (plugins, _) = plugins(root.path());
    let host = Host::start(&plugins, "127.0.0.1:0", &[]);
    let mut browser = Browser::launch();
    browser.open(&host.url("/"));
    browser.wait_for(
        "both rows Running",
        r#"[...document.querySelectorAll('tbody tr')].length === 2 &&
           [...document.querySelectorAll('td[data-col="state"]')].every(td => td.textContent === 'Running')"#,
    );
    // Every field of the status has its column.
    let headers = browser
        .eval("[...document.querySelectorAll('thead th[data-col]')].map(th => th.dataset.col)");
    assert_eq!(
        headers,
        serde_json::json!([
            "id",
            "version",
            "runtime",
            "state",
            "pid",
            "uptime",
            "restarts",
            "last_error",
            "note",
            // Shown once a status has it: a Running plugin's transport.
            "transport"
        ])
    );
    // A page opened after the plugins started still lists how they did.
    browser.open(&host.url("/"));
    browser.wait_for(
        "the recent events",
        r#"document.querySelector('#events').textContent.includes('plain: Running (pid')"#,
    );
    assert_eq!(cell(&mut browser, "plain", "version"), "1.0.0");
    assert_eq!(cell(&mut browser, "plain", "runtime"), "native");
    assert_eq!(cell(&mut browser, "plain", "restarts"), "0");
    browser.wait_for(
        "an uptime",
        r#"/^\d+s$/.test(document.querySelector('tr[data-id="plain"] td[data-col="uptime"]').textContent)"#,
    );
    let pid: i32 = cell(&mut browser, "plain", "pid").parse().unwrap();

    // What the page does from here on, recorded as it happens; and a mark
    // that a reload would wipe.
    browser.eval(
        r#"window.unreloaded = true; window.states = [];
           new MutationObserver(() => window.states.push(document.querySelector('tr[data-id="plain"] td[data-col="state"]').textContent))
             .observe(document.querySelector('#plugins'), {subtree: true, childList: true, characterData: true});"#,
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    browser.wait_for(
        "the new process Running, restarts 1",
        &format!(
            r#"(() => {{ const row = document.querySelector('tr[data-id="plain"]');
                 const pid = row.querySelector('td[data-col="pid"]').textContent;
                 return row.dataset.state === 'Running' && pid !== '' && pid !== '{pid}'
                   && row.querySelector('td[data-col="restarts"]').textContent === '1'; }})()"#
        ),
    );
    let states = browser.eval("window.states");
    assert!(
        states.as_array().unwrap().iter().any(|s| s == "Starting"),
        "the row never showed the restart: {states}"
    );
    assert!(
        cell(&mut browser, "plain", "last_error").contains("killed by signal 9 (SIGKILL)"),
        "{}",
        cell(&mut browser, "plain", "last_error")
    );
    let events = browser.text("#events");
    assert!(
        events.contains("plain: crashed (killed by signal 9 (SIGKILL))"),
        "{events}"
    );
    assert_eq!(browser.eval("window.unreloaded"), serde_json::json!(true));

    // The restart button: a new process, the old one gone, no reload.
    let before: i32 = cell(&mut browser, "plain", "pid").parse().unwrap();
    browser.eval("window.states = []");
    browser.click(r#"tr[data-id="plain"] button[data-action="restart"]"#);
    browser.wait_for(
        "a new pid after the restart",
        &format!(
            r#"(() => {{ const row = document.querySelector('tr[data-id="plain"]');
                 const pid = row.querySelector('td[data-col="pid"]').textContent;
                 return row.dataset.state === 'Running' && pid !== '' && pid !== '{before}'
                   && !row.dataset.busy; }})()"#
        ),
    );
    let states = browser.eval("window.states");
    assert!(
        states.as_array().unwrap().iter().any(|s| s == "Stopping"),
        "{states}"
    );
    assert!(
        !exists(before as u32),
        "the restarted process is still there"
    );
    assert!(browser.text("#events").contains("plain: stopping"));
    assert_eq!(browser.eval("window.unreloaded"), serde_json::json!(true));

    // Stop hides Stop and shows Start; Start brings it back.
    browser.click(r#"tr[data-id="plain"] button[data-action="stop"]"#);
    browser.wait_for(
        "NotRunning",
        r#"document.querySelector('tr[data-id="plain"]').dataset.state === 'NotRunning'"#,
    );
    browser.wait_for(
        "the start button",
        r#"!document.querySelector('tr[data-id="plain"] button[data-action="start"]').hidden"#,
    );
    browser.click(r#"tr[data-id="plain"] button[data-action="start"]"#);
    browser.wait_for(
        "Running again",
        r#"document.querySelector('tr[data-id="plain"]').dataset.state === 'Running'"#,
    );
    assert_eq!(state_of(&mut browser, "settable"), "Running");
    assert!(browser.errors().is_empty(), "{:?}", browser.errors());
}

/// A bundle whose plugin exits at once: a row without a process,
/// FailedToStart (and not restarted).
fn unstartable_bundle(plugins: &Path, id: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugins.join(id);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let executable = dir.join("bin/plugin");
    std::fs::write(&executable, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Written last: the watcher takes the bundle whole.
    std::fs::write(
        dir.join("plugin.json"),
        format!(r#"{{"id":"{id}","version":"1.0.0","server":{{"executable":"bin/plugin"}}}}"#),
    )
    .unwrap();
}

/// Whether the table has the host's rows (`/api/v1/plugins`), in its
/// order, each in its state.
fn table_matches_host(browser: &mut Browser) -> bool {
    browser.eval(
        "(async () => {
           const host = (await (await fetch('/api/v1/plugins')).json()).map(s => `${s.id} ${s.state}`);
           const shown = [...document.querySelectorAll('tbody tr')].map(r => `${r.dataset.id} ${r.dataset.state}`);
           return JSON.stringify(host) === JSON.stringify(shown); })()",
    ) == serde_json::json!(true)
}

/// A page expression: the table has `n` rows, plain's Running and every
/// other FailedToStart.
fn settled(n: usize) -> String {
    format!(
        r#"(() => {{ const rows = [...document.querySelectorAll('tbody tr')];
             return rows.length === {n} && rows.every(r => r.dataset.state === (r.dataset.id === 'plain' ? 'Running' : 'FailedToStart')); }})()"#
    )
}

#[test]
fn rows_added_and_removed_while_the_page_is_open_keep_the_hosts_order() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    native_fake_bundle(&plugins, "plain", "--controller");
    // More rows than one group of the page's (25) holds.
    for i in 0..40 {
        unstartable_bundle(&plugins, &format!("m{i:03}"));
    }
    // Watching the directory: bundles come and go while the page is open.
    let host = HttpRun::start(&plugins, "127.0.0.1:0", &[]);
    let mut browser = Browser::launch();
    browser.open(&host.url("/"));
    browser.wait_for("41 rows, settled", &settled(41));
    assert!(table_matches_host(&mut browser));
    browser.eval("window.unreloaded = true");

    // New ones before, among and after the rows there are.
    for id in (0..40)
        .map(|i| format!("a{i:03}"))
        .chain((0..40).map(|i| format!("m{i:03}x")))
        .chain(["zzz".into()])
    {
        unstartable_bundle(&plugins, &id);
    }
    browser.wait_for("122 rows, settled", &settled(122));
    assert!(table_matches_host(&mut browser));
    assert!(
        cell(&mut browser, "m020x", "last_error").contains("exited before its handshake"),
        "{}",
        cell(&mut browser, "m020x", "last_error")
    );
    // Each group stays small, so one off screen is skipped cheaply.
    let largest = browser
        .eval("Math.max(...[...document.querySelectorAll('tbody')].map(g => g.rows.length))");
    assert!(largest.as_u64().unwrap() < 50, "a group of {largest} rows");
    // A row far down is skipped by the browser (what keeps a thousand rows
    // cheap), and drawn once it is scrolled to.
    let drawn = "document.querySelector('tr[data-id=\"zzz\"] td[data-col=\"state\"]').checkVisibility({contentVisibilityAuto: true})";
    assert_eq!(browser.eval(drawn), serde_json::json!(false));
    browser.eval("document.querySelector('tr[data-id=\"zzz\"]').scrollIntoView()");
    browser.wait_for("the last row drawn", drawn);

    // And gone again: every row but plain's.
    for entry in std::fs::read_dir(&plugins).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("plain") {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    browser.wait_for(
        "one row",
        "document.querySelectorAll('tbody tr').length === 1",
    );
    assert!(table_matches_host(&mut browser));
    assert_eq!(
        browser.eval("document.querySelectorAll('tbody').length"),
        serde_json::json!(1)
    );
    assert_eq!(browser.eval("window.unreloaded"), serde_json::json!(true));
    assert!(browser.errors().is_empty(), "{:?}", browser.errors());
}

#[test]
fn the_settings_form_saves_through_the_plugin_and_shows_its_refusal() {
    let root = tempfile::tempdir().unwrap();
    let (plugins, log) = plugins(root.path());
    let host = Host::start(&plugins, "127.0.0.1:0", &[]);
    let mut browser = Browser::launch();
    browser.open(&host.url("/"));
    browser.wait_for(
        "settable Running",
        r#"document.querySelector('tr[data-id="settable"]')?.dataset.state === 'Running'"#,
    );
    browser.click(r#"tr[data-id="settable"] button[data-action="settings"]"#);
    browser.wait_for(
        "the form",
        "!document.querySelector('#settings').hidden && document.querySelectorAll('#settings .field').length === 7",
    );
    assert_eq!(browser.text("#settings h2"), "Settings of settable");
    // Each type is its own control, with the schema's label, help and default.
    let form = browser.eval(
        r#"[...document.querySelectorAll('#settings .field')].map(f => {
             const c = f.querySelector('input, textarea, select');
             return [f.dataset.key, f.querySelector('.label').firstChild.textContent, c.tagName.toLowerCase(), c.type || '',
                     c.type === 'checkbox' || c.type === 'radio' ? String(f.querySelector('input:checked')?.value ?? 'off') : c.value,
                     f.querySelector('.help')?.textContent ?? ''];
           })"#,
    );
    assert_eq!(
        form,
        serde_json::json!([
            [
                "greeting",
                "Greeting",
                "input",
                "text",
                "Hello",
                "What the plugin says."
            ],
            [
                "motd",
                "Message of the day",
                "textarea",
                "textarea",
                "line one\nline two",
                ""
            ],
            ["limit", "Limit", "input", "number", "5", ""],
            ["loud", "Loud", "input", "checkbox", "off", ""],
            ["colour", "Colour", "select", "select-one", "red", ""],
            ["size", "Size", "input", "radio", "s", ""],
            [
                "refuse",
                "Refuse changes",
                "input",
                "checkbox",
                "off",
                "The plugin refuses a configuration with this on."
            ]
        ])
    );
    let options = browser.eval(
        "[...document.querySelectorAll('#settings select[name=colour] option')].map(o => o.textContent)",
    );
    assert_eq!(options, serde_json::json!(["Red", "Blue"]));

    // A change the plugin accepts reaches it (OnConfigurationChange).
    browser.type_into("#settings input[name=greeting]", "Bonjour");
    browser.type_into("#settings input[name=limit]", "42");
    browser.click("#settings input[name=loud]");
    browser.eval("document.querySelector('#settings select[name=colour]').value = 'blue'");
    browser.click(r#"#settings input[name=size][value="l"]"#);
    browser.click("#settings button[type=submit]");
    browser.wait_for(
        "the save",
        "document.querySelector('#settings .result')?.textContent === 'Saved: the running plugin accepted it.'",
    );
    let change = wait_for_line(&log, "OnConfigurationChange ");
    for part in [
        r#""greeting":"Bonjour""#,
        r#""limit":42"#,
        r#""loud":true"#,
        r#""colour":"blue""#,
        r#""size":"l""#,
        r#""motd":"line one\nline two""#,
    ] {
        assert!(change.contains(part), "{part} not in {change}");
    }
    let source = browser.text(r#"#settings .field[data-key="greeting"] .source"#);
    assert!(source.starts_with("set"), "{source}");

    // A refusal: shown beside the field, and nothing changes.
    browser.click("#settings input[name=refuse]");
    browser.click("#settings button[type=submit]");
    let shown = browser.wait_for(
        "the refusal beside the field",
        r#"document.querySelector('#settings .error[data-for="refuse"]').textContent"#,
    );
    assert_eq!(shown, "refuse must not be true");
    assert!(
        browser
            .text("#settings .result")
            .contains("the plugin refused: refuse must not be true")
    );
    let answer = host.raw("GET", "/api/v1/ui/plugins/settable/settings", &[], "");
    let values: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let refuse = values["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "refuse")
        .unwrap();
    assert_eq!(refuse["value"], false, "the refused value was kept");

    // A value the schema refuses is shown beside its field too.
    browser.click("#settings input[name=refuse]");
    browser.eval("document.querySelector('#settings input[name=limit]').type = 'text'");
    browser.type_into("#settings input[name=limit]", "many");
    browser.click("#settings button[type=submit]");
    let shown = browser.wait_for(
        "the schema's refusal",
        r#"document.querySelector('#settings .error[data-for="limit"]').textContent"#,
    );
    assert_eq!(shown, r#"expected a number, not "many""#);
    assert_eq!(
        browser
            .eval(r#"document.querySelector('#settings .error[data-for="refuse"]').textContent"#),
        serde_json::json!("")
    );
    assert!(browser.errors().is_empty(), "{:?}", browser.errors());
}

#[test]
fn other_origins_wrong_hosts_and_missing_tokens_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (plugins, _) = plugins(root.path());
    let host = Host::start(&plugins, "127.0.0.1:0", &[]);
    let token = host.token();
    let port = host.address.rsplit(':').next().unwrap().to_string();
    let restart = "/api/v1/ui/plugins/plain/restart";

    // The page, with the token, to its own names only.
    for name in ["127.0.0.1", "localhost", "[::1]"] {
        let page = host.raw("GET", "/", &[("Host", &format!("{name}:{port}"))], "");
        assert_eq!(page.status, 200, "{name}");
        assert!(page.body.contains(&token));
        assert!(
            page.header("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
    }
    // DNS rebinding: another name for 127.0.0.1 gets nothing, not the token.
    for path in ["/", "/api/v1/ui/plugins", "/api/v1/ui/events", "/ui/app.js"] {
        let rebound = host.raw(
            "GET",
            path,
            &[("Host", &format!("attacker.example:{port}"))],
            "",
        );
        assert_eq!(rebound.status, 421, "{path}");
        assert!(!rebound.body.contains(&token));
    }
    let rebound = host.raw(
        "POST",
        restart,
        &[
            ("Host", &format!("attacker.example:{port}")),
            ("X-Plugvisor-Token", &token),
        ],
        "",
    );
    assert_eq!(rebound.status, 421);
    let wrong_port = host.raw("GET", "/", &[("Host", "127.0.0.1:1")], "");
    assert_eq!(wrong_port.status, 421);

    // A change without the token, with a wrong one, or from another origin.
    let no_token = host.raw("POST", restart, &[], "");
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = host.raw(
        "POST",
        restart,
        &[("X-Plugvisor-Token", &"0".repeat(64))],
        "",
    );
    assert_eq!(wrong.status, 403);
    let cross = host.raw(
        "POST",
        restart,
        &[
            ("X-Plugvisor-Token", &token),
            ("Origin", "http://attacker.example"),
        ],
        "",
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let cross_site = host.raw(
        "POST",
        restart,
        &[
            ("X-Plugvisor-Token", &token),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        "",
    );
    assert_eq!(cross_site.status, 403);
    let form_post = host.raw(
        "POST",
        "/api/v1/ui/plugins/settable/settings",
        &[("Content-Type", "text/plain"), ("Origin", "null")],
        r#"{"values": {"greeting": "pwned"}}"#,
    );
    assert_eq!(form_post.status, 403);
    // No CORS, so a browser never lets another origin send the header.
    let preflight = host.raw(
        "OPTIONS",
        restart,
        &[
            (
                "Origin",
                &format!("http://localhost:{}", port.parse::<u16>().unwrap() + 1),
            ),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "x-plugvisor-token"),
        ],
        "",
    );
    assert_eq!(preflight.status, 403);
    assert!(
        preflight
            .headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-"))
    );

    // With the token, from the page's own origin, it is done.
    let done = host.raw(
        "POST",
        restart,
        &[
            ("X-Plugvisor-Token", &token),
            ("Origin", &format!("http://127.0.0.1:{port}")),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        "",
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("\"state\":\"Running\""), "{}", done.body);
    assert!(
        done.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-"))
    );

    // The probes, metrics and the plugins' own routes are not the page's:
    // they answer whatever the Host (Kubernetes' probes name the pod's IP).
    let probe = host.raw("GET", "/healthz", &[("Host", "10.1.2.3:8065")], "");
    assert_eq!(probe.status, 200);
    let elsewhere = host.raw("GET", "/no-such-path", &[("Host", "10.1.2.3:8065")], "");
    assert_eq!(elsewhere.status, 404);
}

#[test]
fn off_loopback_reading_needs_the_token_too() {
    let root = tempfile::tempdir().unwrap();
    let (plugins, _) = plugins(root.path());
    let token_file = root.path().join("token");
    let token = "a-token-the-operator-chose-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // Every interface; the test talks to it on 127.0.0.1 only.
    let host = Host::start(
        &plugins,
        "0.0.0.0:0",
        &[
            "--http-token-file",
            token_file.to_str().unwrap(),
            "--http-host",
            "plugins.internal",
        ],
    );
    let port = host.address.rsplit(':').next().unwrap().to_string();
    let said = host.logged("the status page needs the token").unwrap();
    assert!(
        !said.contains(token),
        "the configured token is not logged: {said}"
    );

    for path in ["/", "/api/v1/ui/plugins", "/api/v1/ui/events", "/ui/app.js"] {
        let anonymous = host.raw("GET", path, &[], "");
        assert_eq!(anonymous.status, 401, "{path}");
        assert!(!anonymous.body.contains(token));
    }
    let header = host.raw(
        "GET",
        "/api/v1/ui/plugins",
        &[("X-Plugvisor-Token", token)],
        "",
    );
    assert_eq!(header.status, 200);
    let named = host.raw(
        "GET",
        "/api/v1/ui/plugins",
        &[
            ("Host", &format!("plugins.internal:{port}")),
            ("X-Plugvisor-Token", token),
        ],
        "",
    );
    assert_eq!(named.status, 200);
    let unnamed = host.raw(
        "GET",
        "/api/v1/ui/plugins",
        &[
            ("Host", &format!("rebind.example:{port}")),
            ("X-Plugvisor-Token", token),
        ],
        "",
    );
    assert_eq!(unnamed.status, 421);

    // The login URL sets a strict cookie and takes the token out of the address.
    let login = host.raw("GET", &format!("/?token={token}"), &[], "");
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/"));
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let page = host.raw("GET", "/", &[("Cookie", pair)], "");
    assert_eq!(page.status, 200);
    // The cookie reads, but never changes anything.
    let cookie_only = host.raw(
        "POST",
        "/api/v1/ui/plugins/plain/stop",
        &[("Cookie", pair)],
        "",
    );
    assert_eq!(cookie_only.status, 403);
    let wrong_login = host.raw("GET", "/?token=not-the-token-at-all-0000", &[], "");
    assert_eq!(wrong_login.status, 401);

    // In a browser: the login URL, then the live page.
    let mut browser = Browser::launch();
    browser.open(&host.url(&format!("/?token={token}")));
    browser.wait_for(
        "the table through the cookie",
        r#"document.querySelectorAll('tbody tr[data-state="Running"]').length === 2"#,
    );
    assert_eq!(browser.eval("location.pathname"), serde_json::json!("/"));
    browser.wait_for(
        "the event stream",
        "document.querySelector('#connection').dataset.state === 'live'",
    );
    browser.click(r#"tr[data-id="plain"] button[data-action="stop"]"#);
    browser.wait_for(
        "plain stopped from the page",
        r#"document.querySelector('tr[data-id="plain"]').dataset.state === 'NotRunning'"#,
    );
}

/// `scripts/screenshot-page`: the README's picture of the page, against the
/// examples (needs `./scripts/setup`). Not part of the tests.
#[test]
#[ignore = "writes docs/status-page.png; run by scripts/screenshot-page"]
fn screenshot_of_the_examples() {
    let host = Host::start(&repo_root().join("examples/plugins"), "127.0.0.1:0", &[]);
    let mut browser = Browser::launch();
    browser.open(&host.url("/"));
    browser.wait_for(
        "both examples Running",
        r#"document.querySelectorAll('tbody tr[data-state="Running"]').length === 2"#,
    );
    // Some events to show: hello-go restarted from the page.
    let pid = cell(&mut browser, "hello-go", "pid");
    browser.click(r#"tr[data-id="hello-go"] button[data-action="restart"]"#);
    browser.wait_for(
        "hello-go restarted",
        &format!(
            r#"(() => {{ const r = document.querySelector('tr[data-id="hello-go"]');
                 return r.dataset.state === 'Running' && r.querySelector('td[data-col="pid"]').textContent !== '{pid}'; }})()"#
        ),
    );
    browser.click(r#"tr[data-id="hello-python"] button[data-action="settings"]"#);
    browser.wait_for(
        "the form",
        "document.querySelectorAll('#settings .field').length === 2",
    );
    browser.eval("document.querySelector('#settings input[name=greeting]').value = ''");
    browser.click("#settings button[type=submit]");
    browser.wait_for(
        "the refusal",
        r#"document.querySelector('#settings .error[data-for="greeting"]').textContent"#,
    );
    browser.screenshot(&repo_root().join("docs/status-page.png"), 1280, 600);
}
